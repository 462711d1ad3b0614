"""DrivingStereo (half-resolution release) loader: left/right JPEG pairs and uint16 maps.

On-disk layout (the official zips, extracted; folder ``<split>-<kind>`` per data type)::

    <root>/train-left-image/<seq>/<seq>_<YYYY-MM-DD-HH-MM-SS-mmm>.jpg    left image
    <root>/train-right-image/<seq>/<same name>.jpg                        right image
    <root>/train-depth-map/<seq>/<same name>.png                          depth, uint16
    <root>/train-disparity-map/<seq>/<same name>.png                      disparity, uint16
    <root>/test-left-image/left-image-half-size/<name>.jpg                test split: the
    <root>/test-right-image/right-image-half-size/<name>.jpg              "sequence" folder
    <root>/test-depth-map/depth-map-half-size/<name>.png                  names its kind
    <root>/test-disparity-map/disparity-map-half-size/<name>.png

The left, right and map files of a frame share their basename. For a sequence folder whose
name contains ``left-image`` (the test split's ``left-image-half-size``) the counterpart
folders replace it by ``right-image`` / ``depth-map`` / ``disparity-map``; otherwise (the
train sequences) they have the same name.

Formats (the dataset's page): images are JPEG, the released images and maps half
resolution (about 881×400, the size varies a little per sequence); depth and disparity
maps are uint16 PNG, value / 256 = depth in metres or disparity in pixels, 0 = invalid.
The full-size test / weather maps (``*-full-size``, 1762×800) store disparity as
value / 128; their depth is read as / 256 (as public loaders do). Depth from disparity
needs focal × baseline (about 2063 px × 0.545 m at full size, half that focal at half size)
from the per-sequence calibration; :func:`disparity_to_depth` takes it as a number.

Samples (``__getitem__``): the requested ``keys`` of
  - ``image`` / ``image_right`` [H, W, 3] float32 in [0, 1] (PIL ``convert("RGB")``,
    BILINEAR resize to ``height×width`` when given),
  - ``depth`` [H, W, 1] float32 metres, 0 = invalid (resized without averaging:
    :func:`~jaxdepth.data.kitti.resize_sparse_depth`, the nearest valid depth per output pixel),
  - ``disparity`` [H, W, 1] float32 pixels at the sample's width (resize keeps the largest
    valid disparity per output pixel and multiplies by ``W / w``), 0 = invalid,
  - ``mask`` [H, W, 1] bool, depth > 0 (or disparity > 0 without ``depth``),
and ``meta``: ``sequence``, ``name`` (str), ``index`` int64, ``native_size`` int32 [2]
(h, w), ``crop`` int32 [2] (top, left of the crop window; 0, 0 without crop).

Random crop (NeWCRFs ``random_crop``): ``crop=(ch, cw)`` takes one window, top-left
uniform over every position (``rng.integers(0, h - ch + 1)``), the same on every array of
the sample, after the resize. ``__getitem__`` draws from the loader's own generator
(``rng``); for reproducible batches pass ``crop=None`` and give the Loader
``transform=functools.partial(random_crop, size=(ch, cw))``, which draws from the Loader's
per-sample generator.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .kitti import resize_sparse_depth

__all__ = ["DS_SPLITS", "DS_KEYS", "DEPTH_SCALE", "DISPARITY_SCALE_HALF",
           "DISPARITY_SCALE_FULL", "HALF_SIZE", "DrivingStereo", "DrivingStereoFileError",
           "DSFrame", "read_ds_png", "random_crop", "disparity_to_depth", "resize_disparity",
           "counterpart_dir"]

DS_SPLITS = ("train", "test")
DS_KEYS = ("image", "image_right", "depth", "disparity", "mask")
DEPTH_SCALE = 256.0               #: uint16 / 256 = metres (half and full size)
DISPARITY_SCALE_HALF = 256.0      #: uint16 / 256 = pixels (half-size maps)
DISPARITY_SCALE_FULL = 128.0      #: uint16 / 128 = pixels (``*-full-size`` maps)
HALF_SIZE = (400, 881)            #: typical (h, w) of the half-resolution release
_KIND = {"image": "left-image", "image_right": "right-image", "depth": "depth-map",
         "disparity": "disparity-map"}
_EXT = {"image": None, "image_right": None, "depth": ".png", "disparity": ".png"}


class DrivingStereoFileError(FileNotFoundError, ValueError):
    """A missing DrivingStereo folder or file (both a FileNotFoundError and a ValueError)."""


@dataclass(frozen=True)
class DSFrame:
    """One frame: its sequence folder (under ``<split>-left-image``) and basename (no ext)."""

    sequence: str
    name: str


def counterpart_dir(sequence: str, kind: str) -> str:
    """Sequence folder of ``kind`` (``right-image``, ``depth-map``, ...) for a left-image
    sequence folder: ``left-image`` in the name is replaced, else the name is kept."""
    return sequence.replace("left-image", kind) if "left-image" in sequence else sequence


def read_ds_png(path: str, scale: float = DEPTH_SCALE, what: str = "depth map") -> np.ndarray:
    """[h, w] float32 ``value / scale`` of a single-channel uint16 PNG (0 stays 0 = invalid).

    Missing -> :class:`DrivingStereoFileError`; 8-bit, RGB or non-PNG -> ValueError."""
    if not os.path.isfile(path):
        raise DrivingStereoFileError(f"expected DrivingStereo {what} {path} (uint16 PNG)")
    with Image.open(path) as im:
        fmt, mode = im.format, im.mode
        a = np.asarray(im)
    if fmt != "PNG" or a.ndim != 2 or a.dtype not in (np.uint16, np.int32) \
            or a.min(initial=0) < 0 or a.max(initial=0) > 65535:
        raise ValueError(f"{path}: expected a single-channel uint16 PNG {what} "
                         f"(value / {scale:g}), got {fmt} mode {mode} {a.dtype} {a.shape}")
    return a.astype(np.float32) / np.float32(scale)


def disparity_to_depth(disparity: np.ndarray, focal_baseline: float) -> np.ndarray:
    """Depth (m) = ``focal_baseline`` (px · m, at the disparity's resolution) / disparity;
    0 where the disparity is 0 (invalid)."""
    d = np.asarray(disparity, np.float32)
    with np.errstate(divide="ignore"):
        return np.where(d > 0, np.float32(focal_baseline) / d, 0.0).astype(np.float32)


def resize_disparity(disp: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sparse-aware disparity resize: the largest valid disparity (nearest surface) of the
    native pixels per output pixel, times ``width / w`` (disparity is in pixels)."""
    d = np.asarray(disp, np.float64)
    h, w = d.shape[:2]
    if (h, w) == (height, width):
        return np.where(d > 0, d, 0.0).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = resize_sparse_depth(np.where(d > 0, 1.0 / d, 0.0), height, width)
    with np.errstate(divide="ignore"):
        out = np.where(inv > 0, 1.0 / inv.astype(np.float64), 0.0) * (width / w)
    return out.astype(np.float32)


def random_crop(sample: dict, rng: np.random.Generator, size) -> dict:
    """NeWCRFs-style random crop: one ``size = (ch, cw)`` window, top-left uniform over all
    positions, applied to every ``[H, W, ...]`` array of the sample (image, image_right,
    depth, disparity, mask); ``meta["crop"]`` gets (top, left) added to any earlier offset.
    Usable as a Loader ``transform`` via ``functools.partial(random_crop, size=...)``."""
    ch, cw = (int(x) for x in size)
    arrays = [k for k in DS_KEYS if k in sample]
    if not arrays:
        raise ValueError(f"random_crop: sample has none of {DS_KEYS}")
    h, w = np.asarray(sample[arrays[0]]).shape[:2]
    if ch > h or cw > w or ch <= 0 or cw <= 0:
        raise ValueError(f"crop {ch}x{cw} does not fit the {h}x{w} sample")
    top = int(rng.integers(0, h - ch + 1))
    left = int(rng.integers(0, w - cw + 1))
    out = dict(sample)
    for k in arrays:
        a = np.asarray(sample[k])
        if a.shape[:2] != (h, w):
            raise ValueError(f"random_crop: {k} is {a.shape[:2]}, {arrays[0]} is {(h, w)}")
        out[k] = np.ascontiguousarray(a[top:top + ch, left:left + cw])
    if "meta" in sample:
        meta = dict(sample["meta"])
        prev = np.asarray(meta.get("crop", (0, 0)), np.int32)
        meta["crop"] = prev + np.array([top, left], np.int32)
        out["meta"] = meta
    return out


def _load_rgb(path: str, what: str) -> Image.Image:
    if not os.path.isfile(path):
        raise DrivingStereoFileError(f"expected DrivingStereo {what} {path}")
    with Image.open(path) as im:
        return im.convert("RGB")


def _to_float(im: Image.Image, height, width) -> np.ndarray:
    if height is not None and (im.height, im.width) != (height, width):
        im = im.resize((width, height), Image.BILINEAR)
    return np.asarray(im, np.float32) / 255.0


class DrivingStereo:
    """DrivingStereo half-resolution frames found by walking the extracted tree.

    ``root``: the folder holding ``<split>-left-image/`` etc. (module docstring);
    ``split``: ``"train"`` or ``"test"``; ``height``/``width``: resize every sample to that
    size (None: native, ~400×881, which varies a little across sequences — batch with
    ``batch_size=1`` or give a size); ``crop=(ch, cw)``: random crop after the resize,
    drawn from ``rng`` (a Generator or a seed); ``keys``: any of :data:`DS_KEYS`.
    ``size``: ``"half"`` (default) keeps only sequence folders named ``*-half-size`` where
    such names are used (the test split), ``"full"`` only ``*-full-size`` ones (their
    disparity is / 128), None keeps all. ``sequences``: only these sequence folders.
    ``image_ext``: extension of the image files (``.jpg``).

    Discovery lists ``<split>-left-image/<sequence>/*<image_ext>`` (sorted by sequence,
    then name) and checks that each frame has the file of every requested key
    (``<split>-right-image/…/<name><image_ext>``, ``<split>-depth-map/…/<name>.png``,
    ``<split>-disparity-map/…/<name>.png``). ``missing="error"`` (default) raises a
    :class:`DrivingStereoFileError` naming the frame and the expected path (and how many
    frames lack a file); ``missing="skip"`` drops those frames with a warning
    (``self.skipped`` lists them).

    Errors (all ValueError subclasses): missing root / split folder, a split folder without
    sequences or frames, an unknown key / split, a map that is not a uint16 PNG, left/right
    or left/map sizes that differ (checked when a sample is loaded)."""

    def __init__(self, root, split: str = "train", height: int | None = None,
                 width: int | None = None, crop=None,
                 keys=("image", "image_right", "depth"), *, missing: str = "error",
                 rng=None, size: str | None = "half", sequences=None,
                 image_ext: str = ".jpg"):
        if split not in DS_SPLITS:
            raise ValueError(f"DrivingStereo split must be one of {DS_SPLITS}, got {split!r}")
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        bad = [k for k in keys if k not in DS_KEYS]
        if bad or not keys:
            raise ValueError(f"unknown DrivingStereo keys {bad or keys}; expected some of "
                             f"{DS_KEYS}")
        if missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
        if size not in ("half", "full", None):
            raise ValueError(f"size must be 'half', 'full' or None, got {size!r}")
        if (height is None) != (width is None):
            raise ValueError(f"give both height and width or neither, got {height}x{width}")
        if height is not None and (int(height) <= 0 or int(width) <= 0):
            raise ValueError(f"height and width must be positive, got {height}x{width}")
        self.height = None if height is None else int(height)
        self.width = None if width is None else int(width)
        self.crop = None if crop is None else tuple(int(x) for x in crop)
        if self.crop is not None and (len(self.crop) != 2 or min(self.crop) <= 0):
            raise ValueError(f"crop must be (height, width) > 0, got {crop!r}")
        if self.crop is not None and self.height is not None and (
                self.crop[0] > self.height or self.crop[1] > self.width):
            raise ValueError(f"crop {self.crop} is larger than the resize "
                             f"{self.height}x{self.width}")
        self.root, self.split, self.keys = os.fspath(root), split, keys
        self.image_ext, self.size, self.missing = image_ext, size, missing
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        if not os.path.isdir(self.root):
            raise DrivingStereoFileError(
                f"DrivingStereo root {self.root} does not exist (expected "
                f"<root>/{split}-left-image/<sequence>/*{image_ext}, {split}-right-image/, "
                f"{split}-depth-map/)")
        left = os.path.join(self.root, f"{split}-left-image")
        if not os.path.isdir(left):
            found = sorted(d for d in os.listdir(self.root)
                           if os.path.isdir(os.path.join(self.root, d)))
            raise DrivingStereoFileError(
                f"expected the DrivingStereo {split} folder {left} "
                f"(<sequence>/*{image_ext} inside); {self.root} holds {found[:8]}")
        seqs = sorted(d for d in os.listdir(left) if os.path.isdir(os.path.join(left, d)))
        if size is not None:
            other = "full" if size == "half" else "half"
            sized = [s for s in seqs if s.endswith(("-half-size", "-full-size"))]
            if sized:
                seqs = [s for s in seqs if not s.endswith(f"-{other}-size")]
        if sequences is not None:
            want = [str(s) for s in sequences]
            absent = [s for s in want if s not in seqs]
            if absent:
                raise DrivingStereoFileError(f"DrivingStereo sequences {absent} not found in "
                                             f"{left} (it holds {seqs[:8]})")
            seqs = want
        if not seqs:
            raise ValueError(f"no sequence folders in {left} (expected <sequence>/*"
                             f"{image_ext}" + (f" with size={size!r}" if size else "") + ")")
        frames = [DSFrame(s, f[:-len(image_ext)]) for s in seqs
                  for f in sorted(os.listdir(os.path.join(left, s)))
                  if f.endswith(image_ext) and os.path.isfile(os.path.join(left, s, f))]
        if not frames:
            raise ValueError(f"DrivingStereo {split} tree under {self.root} is empty: no "
                             f"*{image_ext} in {left}/<sequence>/ ({len(seqs)} sequence "
                             f"folders: {seqs[:4]})")
        need = [k for k in ("image_right", "depth", "disparity") if k in keys]
        if "mask" in keys and "depth" not in keys and "disparity" not in keys:
            need.append("depth")
        self.map_keys = tuple(need)
        bad_frames = [(f, k) for f in frames for k in need if not os.path.isfile(self.path(f, k))]
        self.skipped: list[DSFrame] = []
        if bad_frames:
            f, k = bad_frames[0]
            n_bad = len({b for b, _ in bad_frames})
            if missing == "error":
                raise DrivingStereoFileError(
                    f"{n_bad} of {len(frames)} DrivingStereo {split} frames lack a file for "
                    f"the requested keys; first: {self.path(f, 'image')} has no {k} at "
                    f"{self.path(f, k)}; pass missing='skip' to drop such frames")
            dropped = {b for b, _ in bad_frames}
            self.skipped = [fr for fr in frames if fr in dropped]
            frames = [fr for fr in frames if fr not in dropped]
            warnings.warn(f"DrivingStereo {split}: skipped {n_bad} frames without "
                          f"{'/'.join(sorted({k for _, k in bad_frames}))} (first: "
                          f"{self.path(f, k)})")
            if not frames:
                raise ValueError(f"every DrivingStereo {split} frame under {self.root} lacks a "
                                 f"requested file ({need}); nothing to load")
        self.frames: list[DSFrame] = frames
        self.sequences = tuple(sorted({f.sequence for f in frames}))

    # ------------------------------------------------------------------ paths
    def path(self, frame: DSFrame, key: str) -> str:
        """File of ``key`` (``image``, ``image_right``, ``depth``, ``disparity``) of a frame."""
        kind = _KIND[key]
        ext = _EXT[key] or self.image_ext
        return os.path.join(self.root, f"{self.split}-{kind}",
                            counterpart_dir(frame.sequence, kind), frame.name + ext)

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        return (f"DrivingStereo({self.root!r}, split={self.split!r}, {len(self)} frames in "
                f"{len(self.sequences)} sequences, keys={list(self.keys)})")

    # ------------------------------------------------------------------ loading
    def _map(self, frame: DSFrame, key: str, native: tuple[int, int]) -> np.ndarray:
        p = self.path(frame, key)
        if key == "depth":
            a = read_ds_png(p, DEPTH_SCALE, "depth map")
        else:
            full = frame.sequence.endswith("-full-size")
            a = read_ds_png(p, DISPARITY_SCALE_FULL if full else DISPARITY_SCALE_HALF,
                            "disparity map")
        if a.shape != native:
            raise ValueError(f"{p}: {key} map is {a.shape[0]}x{a.shape[1]} but the left image "
                             f"{self.path(frame, 'image')} is {native[0]}x{native[1]}")
        if self.height is not None and a.shape != (self.height, self.width):
            a = (resize_sparse_depth(a, self.height, self.width) if key == "depth"
                 else resize_disparity(a, self.height, self.width))
        return a[..., None]

    def load(self, i: int) -> dict:
        """Sample ``i`` without the random crop."""
        n = len(self.frames)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} DrivingStereo frames")
        i = int(i) % n
        f = self.frames[i]
        left = _load_rgb(self.path(f, "image"), "left image")
        native = (left.height, left.width)
        out: dict = {}
        if "image" in self.keys:
            out["image"] = _to_float(left, self.height, self.width)
        if "image_right" in self.keys:
            rp = self.path(f, "image_right")
            right = _load_rgb(rp, "right image")
            if (right.height, right.width) != native:
                raise ValueError(f"DrivingStereo left/right sizes differ: "
                                 f"{self.path(f, 'image')} is {native[0]}x{native[1]}, {rp} "
                                 f"is {right.height}x{right.width}")
            out["image_right"] = _to_float(right, self.height, self.width)
        maps = {k: self._map(f, k, native) for k in ("depth", "disparity")
                if k in self.keys or (k == "depth" and k in self.map_keys)}
        for k in ("depth", "disparity"):
            if k in self.keys:
                out[k] = maps[k]
        if "mask" in self.keys:
            src = maps["depth"] if "depth" in maps else maps["disparity"]
            out["mask"] = src > 0
        out["meta"] = {"sequence": np.asarray(f.sequence, np.str_),
                       "name": np.asarray(f.name, np.str_), "index": np.int64(i),
                       "native_size": np.array(native, np.int32),
                       "crop": np.zeros(2, np.int32)}
        return out

    def sample(self, i: int, rng: np.random.Generator | None = None) -> dict:
        """Sample ``i``, randomly cropped (if ``crop``) with ``rng`` (default ``self.rng``)."""
        s = self.load(i)
        if self.crop is not None:
            s = random_crop(s, self.rng if rng is None else rng, self.crop)
        return s

    def __getitem__(self, i: int) -> dict:
        return self.sample(i)

    def get_batch(self, indices, rng: np.random.Generator | None = None) -> dict:
        """Stacked samples ``[B, ...]`` (every sample must have the same size: give
        ``height``/``width`` or ``crop`` when sequences differ in native size)."""
        from .pipeline import stack_samples

        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer) or idx.size == 0:
            raise ValueError(f"indices must be a non-empty 1-D integer array, got {indices!r}")
        return stack_samples([self.sample(int(i), rng) for i in idx])

