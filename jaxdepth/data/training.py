"""Training data for the recipes: one call gives the source a trainer's step consumes.

    td = training_data("kitti", needs="M", height=192, width=640, root="/data/kitti_raw")
    loader = Loader(td.source, 12, seed=0, transform=td.transform)
    batch = next(loader)        # float32 arrays only: straight into the train step
    print(td.description)       # KITTI raw eigen_zhou/train: 39810 triplets at 192x640

``needs`` and the keys every sample carries (exactly these, all float32; ``H×W`` = the
requested ``height×width``, multiples of 32):

- ``"depth"`` (supervised step): ``image`` [H,W,3] in [0, 1], ``depth`` [H,W,1] metres,
  0 = invalid;
- ``"image"`` (distillation from a teacher: Self): ``image``, ``K``;
- ``"M"`` (self-supervised, monocular): ``image``, ``K`` [3,3] pixel intrinsics at H×W,
  ``frames`` {-1: [H,W,3], 1: [H,W,3]} — the previous and next frame of the sequence;
- ``"S"`` (stereo): ``image``, ``K``, ``image_right`` [H,W,3] (the *other* camera of the
  same frame; for a right-camera target that is the left image) and ``stereo_T`` [4,4]
  (target -> other camera, identity with t_x < 0 for a left target, > 0 for a right one;
  the step keeps its sign and uses its own ``stereo_baseline`` as |t_x|);
- ``"MS"``: all of M and S;
- ``"segmentation"``: ``image`` and ``label`` [H,W] int32 train ids, 255 = ignore (the one
  key that is not float32);
- ``"stereo_depth"`` (the ADU-Depth stereo teacher and its student,
  ``jaxdepth.train.adu``): ``image`` (the target camera), ``image_right`` [H,W,3] (the
  other camera of the frame, always to the *right* of the target: KITTI right-camera
  targets are mirrored with their pair, see below), ``depth`` and ``depth_right``
  [H,W,1] metres (the ground truth of each view; the step's flip swaps the views and
  needs the other one's depth).

Data kinds:

- ``synthetic``: :class:`~jaxdepth.data.synthetic.SyntheticSource` train scenes (its keys
  are named as above; ``stereo_T`` has the metric t_x = -0.54 m, the image is always the
  left camera); rendered a batch at a time (``get_batch``), no per-sample transform.
- ``kitti``: KITTI raw, the Monodepth2 conventions. Split lines ``folder frame side``;
  defaults ``eigen_zhou`` (M, MS) and ``eigen_full`` (S, depth), subset ``train``, or a
  split-file path. Neighbours are frames ``frame ∓ 1`` of the same camera (clamped at a
  sequence end); the stereo view is the other camera with Monodepth2's ``stereo_T``
  (t_x = ∓0.1); ``K`` from ``P_rect_02``/``_03`` of the date's calibration, scaled to H×W
  (``K[0] *= W/w``, ``K[1] *= H/h``); images LANCZOS-resized. Supervised depth is the
  velodyne scan projected straight to H×W with camera-z depth (``gt="velodyne"``), or the
  improved gt PNG reduced by the minimum valid depth per output pixel (``gt="improved"``)
  — never averaged (see :class:`~jaxdepth.data.kitti.KittiDepthTrain`).
- ``nyu``: NYU v2 (FastDepth HDF5) train files, raw 480×640 samples turned by the
  per-sample ``transform`` (:func:`jaxdepth.data.nyu.train_transform`: resize, rotation,
  scale, crop, flip, jitter) into ``image`` [224,288,3] / ``depth`` [224,288,1]; only
  ``needs="depth"`` and only 224×288.
- ``cityscapes`` (``needs="segmentation"`` only): gtFine ``train`` (or ``split``) images
  and labelIds mapped to the 19 train ids, resized to H×W, then the per-sample
  :func:`jaxdepth.data.cityscapes.train_transform` (random scale 0.5–2, crop H×W, flip).
  The procedural scenes give ``needs="segmentation"`` too: 7 classes, the anomaly class
  ignored (:class:`jaxdepth.data.segmentation.SyntheticSegmentation`).

Augmentation: for synthetic and KITTI the step's own flip + colour jitter (``augment=True``)
is the recipe's augmentation (Monodepth2's, with the exact K / stereo mirror) and the
samples are unaugmented; for NYU the transform already augments, so train with
``augment=False`` (``TrainData.augment_in_step`` says which).
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np

from . import kitti as _kitti
from .splits import KITTI_SPLITS, SplitEntry, read_split

__all__ = ["DATA", "NEEDS", "TrainData", "TrainSource", "training_data", "needed_keys",
           "default_kitti_split", "nyu_train_transform"]

DATA = ("synthetic", "kitti", "nyu", "cityscapes")
NEEDS = ("depth", "image", "M", "S", "MS", "segmentation", "stereo_depth")
_KEYS = {
    "depth": ("image", "depth"),
    "segmentation": ("image", "label"),
    "image": ("image", "K"),
    "M": ("image", "K", "frames"),
    "S": ("image", "K", "image_right", "stereo_T"),
    "MS": ("image", "K", "frames", "image_right", "stereo_T"),
    "stereo_depth": ("image", "image_right", "depth", "depth_right"),
}
_KITTI_DEFAULT_SPLIT = {"depth": "eigen_full", "image": "eigen_zhou", "M": "eigen_zhou",
                        "S": "eigen_full",
                        "MS": "eigen_zhou", "stereo_depth": "eigen_full"}
_KITTI_LAYOUT = ("<root>/<date>/calib_cam_to_cam.txt (+ calib_velo_to_cam.txt), "
                 "<root>/<date>/<date>_drive_<nnnn>_sync/image_02|image_03/data/<frame>.png "
                 "(+ velodyne_points/data/<frame>.bin)")
_SYNTHETIC_LENGTH = 4000
_SYNTHETIC_BASELINE = 0.54  # SyntheticSource's default rig (synthetic.OPTIONS["baseline"])


@dataclasses.dataclass(frozen=True)
class TrainData:
    """What :func:`training_data` returns.

    ``source``: ``len()`` and ``source[i]`` (and ``get_batch`` for synthetic); batch it
    with ``Loader(source, B, transform=transform)``. ``transform``: the Loader's
    per-sample ``transform(sample, rng)`` or None. ``description``: one line for the CLI.
    ``keys``: the sample keys (see the module docstring). ``augment_in_step``: whether
    the step's own flip + jitter should run (False for NYU, whose transform augments).
    ``true_baseline``: metric baseline (m) of the stereo rig, for
    ``selfsup.stereo_scale_factor`` (KITTI's nominal 0.54, as Monodepth2's ×5.4; synthetic
    0.54; None for NYU). ``max_depth``: the cap of the data's evaluation (80 m KITTI and
    synthetic, 10 m NYU)."""

    source: Any
    transform: Callable | None
    description: str
    data: str = ""
    needs: str = ""
    keys: tuple = ()
    size: tuple = (0, 0)
    split: str | None = None
    augment_in_step: bool = True
    true_baseline: float | None = None
    max_depth: float = 80.0

    def __len__(self) -> int:
        return len(self.source)


def _float32(x):
    if isinstance(x, Mapping):
        return {k: _float32(v) for k, v in x.items()}
    return np.asarray(x, np.float32)


class TrainSource:
    """``base[i]`` restricted to ``keys`` (renamed by ``rename``: new -> old) and cast to
    float32, so that a Loader batch holds exactly the arrays a train step reads (no
    ``meta`` strings, no ``K_norm`` / ``frames_valid``). ``base`` stays reachable."""

    def __init__(self, base, keys, rename: Mapping | None = None):
        self.base, self.keys, self.rename = base, tuple(keys), dict(rename or {})

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i) -> dict:
        s = self.base[i]
        return {k: _float32(s[self.rename.get(k, k)]) for k in self.keys}

    def __repr__(self) -> str:
        return f"TrainSource({type(self.base).__name__}, keys={list(self.keys)})"


def nyu_train_transform(sample: dict, rng: np.random.Generator) -> dict:
    """:func:`jaxdepth.data.nyu.train_transform`, keeping only ``image`` [224,288,3] and
    ``depth`` [224,288,1] (float32): the Loader transform of ``training_data("nyu")``."""
    from .nyu import train_transform

    out = train_transform(sample, rng)
    return {"image": _float32(out["image"]), "depth": _float32(out["depth"])}


def _parse_needs(needs) -> str:
    if isinstance(needs, str):
        n = (needs.lower() if needs.lower() in ("depth", "image", "segmentation", "stereo_depth")
             else needs.upper())
        if n in _KEYS:
            return n
    elif isinstance(needs, (tuple, list)) and all(isinstance(k, str) for k in needs):
        for n, keys in _KEYS.items():
            if set(needs) == set(keys):
                return n
    raise ValueError(f"needs must be one of {NEEDS} ('depth': supervised image + depth; "
                     "'M', 'S', 'MS': self-supervised modes; 'segmentation': image + "
                     "train-id label) or one of their key tuples "
                     f"{list(_KEYS.values())}; got {needs!r}")


def needed_keys(needs) -> tuple[str, ...]:
    """Sample keys of a need (``"depth"``, ``"M"``, ``"S"``, ``"MS"`` or a key tuple); for
    the modes the same as ``jaxdepth.train.selfsup.data_keys``."""
    return _KEYS[_parse_needs(needs)]


def default_kitti_split(needs) -> str:
    """Monodepth2's training list of a need: ``eigen_zhou`` for M / MS (static frames
    removed, neighbours exist), ``eigen_full`` for S and supervised depth (Eigen's
    training scenes, both cameras)."""
    return _KITTI_DEFAULT_SPLIT[_parse_needs(needs)]


def _check_size(height, width):
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0 or v % 32:
            raise ValueError(f"{name} must be a positive multiple of 32 (the encoder "
                             f"downsamples by 32), got height={height!r} width={width!r}")


def _kitti_entries(split, needs: str) -> tuple[list[SplitEntry], str, str]:
    """(entries, name for the source's messages, label for the description) of a KITTI
    training split name or split-file path."""
    if split is None:
        split = _KITTI_DEFAULT_SPLIT[needs]
    if isinstance(split, str) and split in KITTI_SPLITS:
        if "train" not in KITTI_SPLITS[split]:
            raise ValueError(f"KITTI split {split!r} is a test split (subsets "
                             f"{KITTI_SPLITS[split]}): train on one of "
                             f"{sorted(k for k, v in KITTI_SPLITS.items() if 'train' in v)} "
                             "or a split file")
        return read_split(split, "train"), split, f"{split}/train"
    if not isinstance(split, (str, os.PathLike)):
        raise ValueError(f"split must be a KITTI split name or a split-file path, got {split!r}")
    path = os.fspath(split)
    looks_like_file = os.sep in path or "/" in path or path.endswith((".txt", ".gz"))
    if not os.path.exists(path) and not looks_like_file:
        known = sorted(k for k, v in KITTI_SPLITS.items() if "train" in v)
        raise ValueError(f"unknown KITTI training split {path!r}; expected one of {known} or "
                         "the path of a split file (lines '<date>/<drive>_sync <frame> <l|r>')")
    return read_split(path), path, os.path.basename(path)


def _require_root(data: str, root, layout: str) -> str:
    if root is None:
        raise ValueError(f"data={data!r} needs root=<dataset folder> (expected {layout}); "
                         "got root=None")
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{data} root {root} does not exist (expected {layout})")
    return root


def _synthetic(needs, keys, height, width, root, split, length, seed, moving_objects):
    from jaxdepth.data.synthetic import SyntheticSource

    if root is not None:
        raise ValueError(f"data='synthetic' is generated, it takes no root; got root={root!r}")
    if split is not None:
        raise ValueError(f"data='synthetic' has no split lists (it renders its 'train' "
                         f"split); got split={split!r}")
    n = _SYNTHETIC_LENGTH if length is None else length
    src = SyntheticSource("train", seed=seed, height=height, width=width, length=n, keys=keys,
                          moving_objects=bool(moving_objects))
    what = {"depth": "images with depth", "image": "images", "M": "triplets", "S": "stereo pairs",
            "MS": "triplets + stereo pairs",
            "stereo_depth": "stereo pairs with the depth of both views"}[needs]
    desc = (f"synthetic street scenes train (seed {seed}): {len(src)} {what} at "
            f"{height}x{width}" + (", moving objects" if moving_objects else ""))
    return TrainData(src, None, desc, "synthetic", needs, keys, (height, width), "train",
                     True, _SYNTHETIC_BASELINE, 80.0)


class _IntLabels:
    """A segmentation source with its uint8 ``label`` as int32 (what the step reads)."""

    def __init__(self, base):
        self.base = base
        if hasattr(base, "get_batch"):
            self.get_batch = lambda indices: self._cast(base.get_batch(indices))

    def __len__(self) -> int:
        return len(self.base)

    @staticmethod
    def _cast(sample):
        return {"image": np.asarray(sample["image"], np.float32),
                "label": np.asarray(sample["label"], np.int32)}

    def __getitem__(self, i):
        return self._cast(self.base[i])


def _synthetic_segmentation(height, width, root, split, length, seed):
    from jaxdepth.data.segmentation import SyntheticSegmentation

    if root is not None or split is not None:
        raise ValueError("data='synthetic' is generated: it takes no root and no split")
    n = _SYNTHETIC_LENGTH if length is None else length
    src = SyntheticSegmentation("train", seed=seed, height=height, width=width, size=n)
    desc = (f"synthetic street scenes train (seed {seed}): {n} labelled images at "
            f"{height}x{width}, anomaly class ignored")
    return TrainData(_IntLabels(src), None, desc, "synthetic", "segmentation",
                     _KEYS["segmentation"], (height, width), "train", True, None, 80.0)


def _cityscapes_train(height, width, root, split, length):
    import functools

    from jaxdepth.data import cityscapes

    root = _require_root("cityscapes", root, "leftImg8bit/<split>/<city>/*_leftImg8bit.png "
                         "and gtFine/<split>/<city>/*_gtFine_labelIds.png")
    name = split or "train"
    base = cityscapes.Cityscapes(root, name, height=height, width=width, labels=True)
    if length is not None:
        from jaxdepth.data.pipeline import First
        base = First(base, length)
    # random scale 0.5–2 of the H×W frame, crop H×W, flip (the step does not augment)
    transform = functools.partial(cityscapes.train_transform, crop_size=(height, width))
    cast = lambda sample, rng: _IntLabels._cast(transform(sample, rng))
    desc = f"Cityscapes {name}: {len(base)} images at {height}x{width}, 19 classes"
    return TrainData(base, cast, desc, "cityscapes", "segmentation",
                     _KEYS["segmentation"], (height, width), name, False, None, 80.0)


def _kitti_train(needs, keys, height, width, root, split, length, gt, gt_root, image_ext,
                 skip_missing):
    root = _require_root("kitti", root, "the KITTI raw layout " + _KITTI_LAYOUT)
    entries, name, label = _kitti_entries(split, needs)
    total = len(entries)
    if length is not None:
        entries = entries[:length]
    common = dict(height=height, width=width, intrinsics="calib", image_ext=image_ext,
                  entries=[tuple(e) for e in entries], skip_missing=skip_missing)
    transform = None
    if needs == "stereo_depth":  # NeWCRFs: load wider, random-crop the network width
        load_width = stereo_load_width(width)
        base = _kitti.KittiDepthTrain(root, name, gt=gt, gt_root=gt_root, velodyne_depth="z",
                                      **{**common, "width": load_width})
        src = KittiStereoDepth(base)
        transform = RandomCrop(height, width)
        gt_desc = "velodyne depth" if gt == "velodyne" else "improved-gt depth"
        what = (f"stereo pairs with {gt_desc} of both cameras, loaded at {height}x{load_width}, "
                f"and randomly cropped (NeWCRFs' crop)")
    elif needs == "depth":
        base = _kitti.KittiDepthTrain(root, name, gt=gt, gt_root=gt_root,
                                      velodyne_depth="z", **common)
        src = TrainSource(base, keys)
        gt_desc = ("velodyne depth (camera z, projected at the network size)" if gt == "velodyne"
                   else "improved-gt depth (min valid depth per pixel)")
        what = f"frames with {gt_desc}"
    else:
        frame_ids = (0, -1, 1) if "M" in needs else (0,)
        base = _kitti.KittiRaw(root, name, frame_ids=frame_ids, stereo="S" in needs,
                               **common)
        src = TrainSource(base, keys, {"image_right": "stereo"})
        what = {"image": "frames", "M": "triplets", "S": "stereo pairs",
                "MS": "triplets + stereo pairs"}[needs]
    # fail now, not at the first batch: the calibration of every date, and the first image
    velo = needs in ("depth", "stereo_depth") and gt == "velodyne"
    for folder in sorted({e.folder for e in base.entries}):
        base.calib(folder, velodyne=velo)
    e = base.entries[0]
    first = _kitti.image_path(root, e.folder, e.frame, e.side, image_ext)
    if not os.path.isfile(first):
        raise FileNotFoundError(f"expected KITTI image {first} (split {label}, frame {e.frame}"
                                f" of {e.folder}); are the images {image_ext!r}? pass image_ext")
    n = len(src)
    count = f"{n}" if n == total else f"{n} of {total}"
    desc = f"KITTI raw {label}: {count} {what} at {height}x{width}"
    return TrainData(src, transform, desc, "kitti", needs, keys, (height, width), label, True,
                     _kitti.KITTI_BASELINE_M, _kitti.MAX_DEPTH)


def _nyu_train(needs, keys, height, width, root, split, length):
    from . import nyu

    if needs != "depth":
        if needs == "stereo_depth":
            raise ValueError("NYU v2 (FastDepth HDF5) holds single RGB-D frames: a stereo sample "
                             "needs the right view (image_right), which NYU has not; train the "
                             "ADU-Depth recipes on data='kitti' or 'synthetic'")
        raise ValueError(f"NYU v2 (FastDepth HDF5) holds single RGB-D frames: no stereo pair "
                         f"and no sequence neighbours for self-supervised mode {needs!r}; "
                         "use needs='depth', or data='kitti' / 'synthetic' for M, S, MS")
    if (height, width) != nyu.CROP_SIZE:
        raise ValueError(f"NYU trains at {nyu.CROP_SIZE[0]}x{nyu.CROP_SIZE[1]} (the crop of "
                         f"nyu.train_transform, docs/training.md §2), got {height}x{width}")
    if split is not None:
        raise ValueError(f"data='nyu' trains on every train/<scene>/*.h5 file: no split "
                         f"choice; got split={split!r}")
    root = _require_root("nyu", root, "the NYU FastDepth folder with train/<scene>/*.h5 "
                                      "(or a nyudepthv2/ subfolder)")
    files = nyu.nyu_files(root, "train")
    total = len(files)
    if length is not None:
        files = files[:length]
    src = nyu.NyuV2(root, "train", mode="raw", files=files, expected_count=None)
    count = f"{len(src)}" if len(src) == total else f"{len(src)} of {total}"
    desc = (f"NYU v2 train (FastDepth HDF5): {count} frames, augmented by "
            f"nyu.train_transform to {height}x{width}")
    return TrainData(src, nyu_train_transform, desc, "nyu", needs, keys, (height, width),
                     "train", False, None, nyu.MAX_DEPTH)


#: NeWCRFs' KITTI training crop: the 352×1216 kb-crop, randomly cropped to 352×1120
NEWCRFS_KB_WIDTH, NEWCRFS_CROP_WIDTH = 1216, 1120


def stereo_load_width(width: int) -> int:
    """The width KITTI stereo-depth frames are loaded at before the random crop to
    ``width``: NeWCRFs' ratio 1216 / 1120 (the kb-crop to the training crop)."""
    return int(round(width * NEWCRFS_KB_WIDTH / NEWCRFS_CROP_WIDTH))


class KittiStereoDepth:
    """Stereo pairs with the ground truth of both cameras from a
    :class:`~jaxdepth.data.kitti.KittiDepthTrain` (``needs="stereo_depth"``).

    ``image`` / ``depth``: the split entry's camera; ``image_right`` / ``depth_right``: the
    other camera of the same frame. A right-camera entry (``side == "r"``) is mirrored
    with its pair (both images and depths flipped left-right), so that in every sample
    the other view lies to the right of the target, the arrangement the 6-channel
    teacher reads (a mirrored right camera sees a mirrored world from the left)."""

    def __init__(self, base):
        self.base = base
        self.entries = base.entries

    def __len__(self) -> int:
        return len(self.base)

    def calib(self, folder, velodyne=False):
        return self.base.calib(folder, velodyne=velodyne)

    def __getitem__(self, i) -> dict:
        from .splits import SplitEntry

        e = self.base._entry(i)
        other = "r" if e.side == "l" else "l"
        pair = SplitEntry(e.folder, e.frame, other)
        out = {"image": self.base._image(e.folder, e.frame, e.side)[0],
               "image_right": self.base._image(e.folder, e.frame, other, "stereo pair")[0],
               "depth": self.base.load_gt(e)[..., None],
               "depth_right": self.base.load_gt(pair)[..., None]}
        if e.side == "r":
            out = {k: v[:, ::-1] for k, v in out.items()}
        return {k: np.ascontiguousarray(v, np.float32) for k, v in out.items()}


class RandomCrop:
    """Loader transform: the same random ``height``×``width`` window of every [h,w,C]
    array of a sample (NeWCRFs' random crop; the left and right views and their depths
    share it)."""

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width

    def __call__(self, sample: dict, rng: np.random.Generator) -> dict:
        h, w = np.shape(sample["image"])[:2]
        if h < self.height or w < self.width:
            raise ValueError(f"cannot crop {self.height}x{self.width} from a {h}x{w} sample")
        y = int(rng.integers(0, h - self.height + 1))
        x = int(rng.integers(0, w - self.width + 1))
        return {k: np.ascontiguousarray(v[y:y + self.height, x:x + self.width])
                for k, v in sample.items()}


def training_data(data: str, *, needs: str | tuple, height: int, width: int, root=None,
                  split=None, length: int | None = None, seed: int = 0, gt: str = "velodyne",
                  moving_objects: bool = False, image_ext: str = ".png", gt_root=None,
                  skip_missing: bool = False) -> TrainData:
    """The training source of ``data`` for a trainer's ``needs`` (see the module docstring).

    - ``data``: ``"synthetic"``, ``"kitti"`` or ``"nyu"``; ``root``: the dataset folder
      (KITTI raw / NYU FastDepth; none for synthetic).
    - ``needs``: ``"depth"``, ``"M"``, ``"S"``, ``"MS"``, ``"stereo_depth"`` (KITTI: loaded
      at :func:`stereo_load_width` and randomly cropped to ``width``, NeWCRFs' crop; synthetic:
      rendered at H×W) (or the matching key tuple, e.g.
      ``selfsup.data_keys(mode)``); ``height``, ``width``: multiples of 32 (224×288 for NYU).
    - ``split`` (KITTI): a shipped list with a train subset (``eigen_zhou``, ``eigen_full``)
      or a split-file path; default :func:`default_kitti_split`.
    - ``length``: synthetic: the number of scenes (default 4000); KITTI / NYU: use only the
      first ``length`` frames of the list (quick runs); None = all.
    - ``seed``: synthetic scene seed (the Loader has its own shuffling seed).
    - ``gt`` (KITTI depth): ``"velodyne"`` (default; every raw frame has a scan) or
      ``"improved"`` (``gt_root``: the depth-completion folder, if kept apart; the first /
      last 5 frames of each drive have none: use ``skip_missing=True``).
    - ``moving_objects``: synthetic cars move between frames. ``image_ext`` (KITTI):
      ``".png"`` or e.g. ``".jpg"`` for Monodepth2's converted copies. ``skip_missing``
      (KITTI): drop frames whose image / gt / sequence is missing instead of raising.

    Raises ValueError for an unknown ``data`` / ``needs`` / split name / ``gt``, a size not
    a multiple of 32 (not 224×288 for NYU), or an option the data kind does not take;
    FileNotFoundError for a missing root, split file, calibration, image or gt file.
    """
    if data not in DATA:
        raise ValueError(f"unknown data {data!r}; expected one of {DATA}")
    n = _parse_needs(needs)
    keys = _KEYS[n]
    _check_size(height, width)
    if gt not in ("velodyne", "improved"):
        raise ValueError(f"gt must be 'velodyne' (projected scans) or 'improved' (KITTI's "
                         f"improved ground truth PNGs), got {gt!r}")
    if length is not None and (not isinstance(length, (int, np.integer))
                               or isinstance(length, bool) or length <= 0):
        raise ValueError(f"length must be a positive integer or None, got {length!r}")
    if moving_objects and data != "synthetic":
        raise ValueError(f"moving_objects is an option of data='synthetic', not {data!r}")
    if (n == "segmentation") != (data == "cityscapes") and data != "synthetic":
        raise ValueError(f"data={data!r} has no {'semantic labels' if n == 'segmentation' else 'depth'}"
                         f": needs={n!r} trains on " + ("'synthetic' or 'cityscapes'"
                         if n == "segmentation" else "'synthetic', 'kitti' or 'nyu'"))
    if data == "synthetic" and n == "segmentation":
        return _synthetic_segmentation(height, width, root, split, length, seed)
    if data == "synthetic":
        return _synthetic(n, keys, height, width, root, split, length, seed, moving_objects)
    if data == "cityscapes":
        return _cityscapes_train(height, width, root, split, length)
    if data == "kitti":
        return _kitti_train(n, keys, height, width, root, split, length, gt, gt_root,
                            image_ext, skip_missing)
    return _nyu_train(n, keys, height, width, root, split, length)
