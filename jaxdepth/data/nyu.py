"""NYU Depth V2 in the FastDepth HDF5 layout.

On disk (the ``nyudepthv2`` folder of FastDepth's ``nyudepthv2.tar.gz``)::

    <root>/val/official/00001.h5 ... (654 files)       test set
    <root>/train/<scene>/00001.h5 ...                   training set

each with datasets ``rgb`` uint8 ``[3, 480, 640]`` and ``depth`` float32 ``[480, 640]``
(metres). ``root`` may also be the folder that contains ``nyudepthv2/``.

Evaluation transform (docs/protocols.md): image and depth resized ×0.5 with PIL NEAREST to
240×320 (PIL's nearest keeps source pixel 2i+1, as FastDepth's ``scipy.misc.imresize``
did), centre crop 224×288 (rows 8:232, cols 16:304); mask 1e-3 < gt < 10.

Training augmentation (:func:`train_transform`, deterministic given an
``np.random.Generator``): resize to 240×320, rotation ±5°, scale s ∈ [1, 1.5] (depth
divided by s), centre crop 224×288, horizontal flip p = 0.5, colour jitter 0.4
(brightness, contrast, saturation). RGB is interpolated bilinearly, depth with nearest
(never mixing depths across edges); pixels rotated in from outside are 0 (masked).
"""
from __future__ import annotations

import glob
import os
import warnings

import numpy as np
from PIL import Image

from .pipeline import color_jitter

__all__ = ["NYU_SHAPE", "EVAL_SIZE", "CROP_SIZE", "MIN_DEPTH", "MAX_DEPTH", "NyuV2",
           "read_nyu_h5", "nyu_files", "eval_transform", "train_transform", "nyu_mask"]

NYU_SHAPE = (480, 640)     #: native (h, w)
EVAL_SIZE = (240, 320)     #: after the ×0.5 resize
CROP_SIZE = (224, 288)     #: centre crop fed to the network and evaluated
MIN_DEPTH, MAX_DEPTH = 1e-3, 10.0
NYU_TEST_COUNT = 654


def read_nyu_h5(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 [480, 640, 3], depth float32 [480, 640] metres) from a FastDepth ``.h5``."""
    import h5py

    if not os.path.isfile(path):
        raise FileNotFoundError(f"expected NYU FastDepth HDF5 file {path} "
                                "(datasets rgb uint8 [3,480,640], depth float32 [480,640])")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from None
    with f:
        out = []
        for key, shape, want in (("rgb", (3, *NYU_SHAPE), "uint8"),
                                 ("depth", NYU_SHAPE, "float32")):
            if key not in f:
                raise ValueError(f"{path}: missing dataset {key!r} (expected {want} "
                                 f"{list(shape)}); found {sorted(f.keys())}")
            ds = f[key]
            if not isinstance(ds, h5py.Dataset):  # e.g. a group named rgb
                raise ValueError(f"{path}: {key!r} must be a dataset ({want} {list(shape)}), "
                                 f"got a {type(ds).__name__}")
            ok_dtype = (ds.dtype == np.uint8 if key == "rgb"
                        else np.issubdtype(ds.dtype, np.floating))
            if tuple(ds.shape) != shape or not ok_dtype:
                raise ValueError(f"{path}: dataset {key!r} must be {want} {list(shape)}, got "
                                 f"{ds.dtype} {list(ds.shape)}")
            try:
                out.append(ds[()])
            except OSError as err:  # corrupt chunk: a filter (gzip) fails while reading
                raise ValueError(f"{path}: dataset {key!r} could not be read, the file is "
                                 f"corrupt ({err})") from None
    rgb, depth = out
    return np.ascontiguousarray(rgb.transpose(1, 2, 0)), depth.astype(np.float32)


def _resolve_root(root: str) -> str:
    for cand in (root, os.path.join(root, "nyudepthv2")):
        if os.path.isdir(os.path.join(cand, "val")) or os.path.isdir(os.path.join(cand, "train")):
            return cand
    raise FileNotFoundError(f"expected the NYU FastDepth folder at {root} (with val/official/"
                            "*.h5 and train/<scene>/*.h5, or a nyudepthv2/ subfolder)")


def nyu_files(root: str, subset: str = "val") -> list[str]:
    """Sorted ``.h5`` paths of a subset (``val`` -> ``val/*/*.h5``, ``train`` ->
    ``train/*/*.h5``). Empty -> FileNotFoundError."""
    if subset not in ("val", "train"):
        raise ValueError(f"NYU subset must be 'val' or 'train', got {subset!r}")
    base = _resolve_root(os.fspath(root))
    files = sorted(glob.glob(os.path.join(base, subset, "*", "*.h5")))
    if not files:
        where = "val/official/*.h5" if subset == "val" else "train/<scene>/*.h5"
        raise FileNotFoundError(f"no NYU {subset} files under {base}: expected {where}")
    return files


def nyu_mask(depth: np.ndarray) -> np.ndarray:
    """bool mask 1e-3 < gt < 10 (same shape as ``depth``)."""
    return (depth > MIN_DEPTH) & (depth < MAX_DEPTH)


def _center_box(h, w, th, tw):
    i, j = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return (j, i, j + tw, i + th)  # PIL box (left, upper, right, lower)


def _finish(rgb_u8_or_f: np.ndarray, depth: np.ndarray) -> dict:
    img = np.asarray(rgb_u8_or_f, np.float32)
    img = img / 255.0 if np.asarray(rgb_u8_or_f).dtype == np.uint8 else img
    d = np.asarray(depth, np.float32)[..., None]
    return {"image": img.astype(np.float32), "depth": d, "mask": nyu_mask(d)}


def eval_transform(rgb: np.ndarray, depth: np.ndarray) -> dict:
    """docs/protocols.md evaluation transform of native arrays (rgb uint8 [480,640,3], depth
    [480,640]) -> ``image`` [224,288,3] float32 [0,1], ``depth`` [224,288,1] float32 m,
    ``mask`` [224,288,1] bool."""
    (h, w), (th, tw) = EVAL_SIZE, CROP_SIZE
    box = _center_box(h, w, th, tw)
    im = Image.fromarray(np.asarray(rgb, np.uint8)).resize((w, h), Image.NEAREST).crop(box)
    dp = Image.fromarray(np.asarray(depth, np.float32)).resize((w, h), Image.NEAREST).crop(box)
    return _finish(np.asarray(im), np.asarray(dp))


def train_transform(sample: dict, rng: np.random.Generator) -> dict:
    """Training augmentation (docs/training.md §2, NYU recipe) of a raw sample (``NyuV2(mode="raw")``:
    ``image`` uint8 [480,640,3], ``depth`` [480,640,1]) -> the evaluation layout
    (``image`` [224,288,3], ``depth`` / ``mask`` [224,288,1]); other keys pass through.
    Random draws, in order: scale, angle, flip, jitter factors."""
    s = float(rng.uniform(1.0, 1.5))
    angle = float(rng.uniform(-5.0, 5.0))
    flip = bool(rng.random() < 0.5)
    b, c, sat = rng.uniform(0.6, 1.4, size=3)
    (h, w), (th, tw) = EVAL_SIZE, CROP_SIZE
    sh, sw = int(round(h * s)), int(round(w * s))
    box = _center_box(sh, sw, th, tw)
    im = Image.fromarray(np.asarray(sample["image"], np.uint8))
    im = im.resize((w, h), Image.BILINEAR).rotate(angle, Image.BILINEAR)
    im = im.resize((sw, sh), Image.BILINEAR).crop(box)
    dp = Image.fromarray(np.asarray(sample["depth"], np.float32).reshape(NYU_SHAPE))
    dp = dp.resize((w, h), Image.NEAREST).rotate(angle, Image.NEAREST)
    dp = dp.resize((sw, sh), Image.NEAREST).crop(box)
    img = np.asarray(im, np.float32) / 255.0
    depth = np.asarray(dp, np.float32) / s
    if flip:
        img, depth = img[:, ::-1], depth[:, ::-1]
    img = color_jitter(np.ascontiguousarray(img), b, c, sat)
    out = {k: v for k, v in sample.items() if k not in ("image", "depth", "mask")}
    out.update(_finish(img, np.ascontiguousarray(depth)))
    return out


class NyuV2:
    """NYU Depth V2 source over FastDepth ``.h5`` files (see the module docstring).

    ``mode="eval"`` (default): ``image`` [224,288,3] float32, ``depth`` [224,288,1] float32 m,
    ``mask`` [224,288,1] bool, ``meta`` {``index`` int64, ``name`` str (path relative to
    the root)}. ``mode="raw"``: ``image`` uint8 [480,640,3], ``depth`` [480,640,1] float32,
    ``meta`` — feed it to :func:`train_transform` (e.g. ``Loader(..., transform=
    nyu.train_transform)``).

    ``expected_count``: warn when the subset does not have this many files (default 654 for
    ``val``, None for ``train``)."""

    def __init__(self, root, subset: str = "val", *, mode: str = "eval", files=None,
                 expected_count: int | None | str = "default"):
        if mode not in ("eval", "raw"):
            raise ValueError(f"mode must be 'eval' or 'raw', got {mode!r}")
        self.mode, self.subset = mode, subset
        self.root = os.fspath(root)
        self.files = list(files) if files is not None else nyu_files(self.root, subset)
        if not self.files:
            raise ValueError(f"NYU {subset}: empty file list, nothing to load")
        if expected_count == "default":
            expected_count = NYU_TEST_COUNT if subset == "val" else None
        if expected_count is not None and len(self.files) != expected_count:
            warnings.warn(f"NYU {subset} under {self.root} has {len(self.files)} files, "
                          f"expected {expected_count}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        n = len(self.files)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        path = self.files[i]
        rgb, depth = read_nyu_h5(path)
        meta = {"index": np.int64(i % n),
                "name": np.asarray(os.path.relpath(path, self.root), np.str_)}
        if self.mode == "raw":
            return {"image": rgb, "depth": depth[..., None], "meta": meta}
        out = eval_transform(rgb, depth)
        out["meta"] = meta
        return out
