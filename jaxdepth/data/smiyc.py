"""The out-of-distribution segmentation datasets of SegmentMeIfYouCan (SMIYC), as its
benchmark code reads them.

Every source yields :mod:`.segmentation`'s convention: ``image`` ``[H, W, 3]`` float32 in
[0, 1] (PIL's pixels, alpha dropped, as SMIYC reads them) and ``ood`` ``[H, W]`` uint8 =
SMIYC's ``label_pixel_gt``: 0 in-distribution (road, for the obstacle datasets), 1
anomaly / obstacle, 255 void. The raw label images become ``ood`` by SMIYC's rule
(:func:`ood_from_raw`): start from 255, write 0 where the raw value is the dataset's
"usual" class and 1 where it is its anomaly class (a value or an inclusive range). Frame
ids (``names``) are sorted.

Datasets and their on-disk layouts (``root`` may be the dataset folder or the folder that
holds it under SMIYC's name, e.g. ``dataset_AnomalyTrack``):

- :class:`RoadAnomaly21` (anomaly track): ``dataset_AnomalyTrack/images/{fid}.jpg`` and
  ``labels_masks/{fid}_labels_semantic.png`` (raw 0 usual, 1 anomaly, 255 ignore). Void
  marks unknown background objects and gaps inside anomalies. Splits ``all`` (110 frames),
  ``validation`` (validation0000–0009, 10) and ``test`` (100).
- :class:`RoadObstacle21` (obstacle track): ``dataset_ObstacleTrack/images/{fid}.webp`` and
  the same label layout (0 road, 1 obstacle, 255 ignore: everything off the road is void);
  the scene of a frame is ``fid.split("_")[0]``; splits by scene (:data:`OBSTACLE_SPLITS`).
- :class:`LostAndFound`: Cityscapes layout, ``leftImg8bit/{train|test}/{NN}_{scene}/
  {fid}_leftImg8bit.{png|webp|jpg}`` and ``gtCoarse/{split}/{NN}_{scene}/
  {fid}_gtCoarse_labelIds.png`` (raw 0 ignore, 1 road -> 0, 2..200 obstacle -> 1, other
  -> 255: the region of interest is the annotated road). Splits :data:`LAF_SPLITS`.
- :class:`FishyscapesLAF`: ``labels/val/{fid}_fishy-labels.png`` already in the 0/1/255
  convention, images from the LostAndFound tree.

SMIYC checks each split's frame count (``expected_length``) and fails on a mismatch. Here
the count is information (``expected_length``; None where SMIYC checks none) and
``strict=True`` raises the same way; the default ``strict=False`` loads partial trees.
The public releases have labels only for some splits (RoadAnomaly21 / RoadObstacle21 test
labels are kept by the evaluation server): ``labels=None`` loads ``ood`` when every frame
of the split has a label file and images only when none has one (samples then have only
``image``); ``labels=True`` requires them.
"""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence

import numpy as np
from PIL import features as _pil_features

from .segmentation import OOD_ANOMALY, OOD_IN, OOD_VOID, _check_size, load_frame, read_label_png

__all__ = ["ood_from_raw", "RoadAnomaly21", "RoadObstacle21", "LostAndFound",
           "FishyscapesLAF", "ANOMALY_VALIDATION_FIDS", "OBSTACLE_SCENES", "OBSTACLE_SPLITS",
           "LAF_SPLITS", "LAF_INVALID_FRAMES", "LAF_NO_KNOWN_EXCLUDED", "obstacle_track_fids",
           "lost_and_found_fids"]


def ood_from_raw(raw, *, usual, anomaly) -> np.ndarray:
    """Raw label values ``[H, W]`` -> uint8 ``ood`` ``[H, W]`` by SMIYC's rule: 255
    everywhere, 0 where ``raw`` is ``usual``, then 1 where it is ``anomaly``; each class is
    one value or an inclusive ``(lo, hi)`` range."""
    raw = np.asarray(raw)
    out = np.full(raw.shape, OOD_VOID, np.uint8)
    for value, cls in ((OOD_IN, usual), (OOD_ANOMALY, anomaly)):
        if isinstance(cls, Sequence):
            if len(cls) != 2 or cls[0] > cls[1]:
                raise ValueError(f"a class range must be (lo, hi) with lo <= hi, got {cls!r}")
            out[(raw >= cls[0]) & (raw <= cls[1])] = value
        else:
            out[raw == cls] = value
    return out


# ----------------------------------------------------------------------------- base
class _OodFrames:
    """A list of frames (``names``, ``image_paths``, ``label_paths``) read as ``image`` /
    ``ood`` samples; subclasses discover the frames and decode their labels."""

    dataset = ""

    def _setup(self, split, fids, image_paths, label_paths, *, labels, expected_length,
               strict, height, width):
        self.split, self.size = split, _check_size(height, width)
        self.names, self.image_paths = list(fids), list(image_paths)
        self.expected_length = expected_length
        if not self.names:
            raise ValueError(f"{self.dataset}-{split}: no frames found under {self.root}")
        if strict and expected_length is not None and len(self.names) != expected_length:
            raise ValueError(f"{self.dataset}-{split} under {self.root} has {len(self.names)} "
                             f"frames; SMIYC expects {expected_length}")
        present = [os.path.isfile(p) for p in label_paths]
        if labels is None:
            if any(present) and not all(present):
                missing = label_paths[present.index(False)]
                raise FileNotFoundError(
                    f"{self.dataset}-{split}: {present.count(False)} of {len(present)} label "
                    f"files missing, e.g. {missing}; pass labels=False for images only")
            labels = all(present)
        elif labels and not all(present):
            raise FileNotFoundError(
                f"{self.dataset}-{split}: label file {label_paths[present.index(False)]} "
                f"missing ({present.count(False)} of {len(present)})")
        self.has_labels = bool(labels)
        self.label_paths = list(label_paths) if self.has_labels else None

    def decode_label(self, raw: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.root!r}, split={self.split!r}, n={len(self)}, "
                f"labels={self.has_labels}, size={self.size})")

    def read_ood(self, i: int) -> np.ndarray:
        """uint8 ``ood`` ``[H, W]`` (0 / 1 / 255) of frame ``i`` at native size."""
        path = self.label_paths[i]
        try:
            return self.decode_label(read_label_png(path))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def __getitem__(self, i: int) -> dict:
        return load_frame(self, i, "ood", self.read_ood, self.size)


def _dataset_dir(root, name: str, marker: str) -> str:
    root = os.fspath(root)
    for cand in (root, os.path.join(root, name)):
        if os.path.isdir(os.path.join(cand, marker)):
            return cand
    raise FileNotFoundError(f"expected the {name} folder (with {marker}/) at {root} or "
                            f"{os.path.join(root, name)}")


def _check_split(dataset: str, split: str, splits) -> None:
    if split not in splits:
        raise ValueError(f"unknown {dataset} split {split!r}; expected one of {tuple(splits)}")


def _flat_frames(base: str, ext: str):
    """Sorted fids of the files ``<base>/images/*.{ext}`` (SMIYC's frame discovery)."""
    paths = glob.glob(os.path.join(base, "images", f"*.{ext}"))
    fids = sorted(os.path.basename(p)[:-len(ext) - 1] for p in paths)
    if not fids:
        raise FileNotFoundError(f"no images under {os.path.join(base, 'images')}: expected "
                                f"images/<fid>.{ext}")
    return fids


def _flat_paths(base: str, fids, ext: str):
    """Image and label paths of ``fids`` in SMIYC's track layout."""
    return ([os.path.join(base, "images", f"{f}.{ext}") for f in fids],
            [os.path.join(base, "labels_masks", f"{f}_labels_semantic.png") for f in fids])


# ----------------------------------------------------------------------------- anomaly track
#: The RoadAnomaly21 validation frames (SMIYC's ``AnomalyTrack-validation``).
ANOMALY_VALIDATION_FIDS = tuple(f"validation{i:04d}" for i in range(10))
_ANOMALY_EXPECTED = {"all": 110, "validation": 10, "test": 100}


class RoadAnomaly21(_OodFrames):
    """RoadAnomaly21, SMIYC's anomaly track (``dataset_AnomalyTrack``).

    ``split``: ``all`` (every ``images/*.jpg``), ``validation`` (the fids
    :data:`ANOMALY_VALIDATION_FIDS`) or ``test``. SMIYC defines ``test`` by a fixed list of
    100 fids that is not available here; ``all`` minus the validation fids is the same set
    for the complete release (110 = 100 + 10), and it is what ``test`` means here. Raw
    labels: 0 usual -> 0, 1 anomaly -> 1, anything else -> 255. See the module docstring for
    ``labels``, ``strict``, ``height`` / ``width`` (resize: image bilinear, ``ood`` nearest).
    """

    dataset = "RoadAnomaly21"
    SPLITS = tuple(_ANOMALY_EXPECTED)

    def __init__(self, root, split: str = "all", *, labels: bool | None = None,
                 strict: bool = False, height: int | None = None, width: int | None = None):
        _check_split(self.dataset, split, self.SPLITS)
        self.root = _dataset_dir(root, "dataset_AnomalyTrack", "images")
        fids = _flat_frames(self.root, "jpg")
        val = set(ANOMALY_VALIDATION_FIDS)
        if split == "validation":
            fids = [f for f in fids if f in val]
        elif split == "test":
            fids = [f for f in fids if f not in val]
        images, label_paths = _flat_paths(self.root, fids, "jpg")
        self._setup(split, fids, images, label_paths, labels=labels, strict=strict,
                    expected_length=_ANOMALY_EXPECTED[split], height=height, width=width)

    def decode_label(self, raw):
        return ood_from_raw(raw, usual=0, anomaly=1)


# ----------------------------------------------------------------------------- obstacle track
#: Every RoadObstacle21 scene (SMIYC's ``SCENES_ALL``).
OBSTACLE_SCENES = ("curvy-street", "one-way-street", "gravel", "greyasphalt", "motorway",
                   "paving", "darkasphalt", "darkasphalt2", "snowstorm1", "snowstorm2",
                   "driveway", "validation")
_SNOW, _NIGHT, _VAL = {"snowstorm1", "snowstorm2"}, {"driveway"}, {"validation"}
#: split -> (scenes, SMIYC's expected frame count or None).
OBSTACLE_SPLITS = {
    "test": (frozenset(OBSTACLE_SCENES) - _SNOW - _NIGHT - _VAL, 327),
    "night": (frozenset(_NIGHT), 30),
    "snowstorm": (frozenset(_SNOW), 55),
    "noNight": (frozenset(OBSTACLE_SCENES) - _NIGHT, 382),
    "validation": (frozenset(_VAL), 30),
    "all": (frozenset(OBSTACLE_SCENES), None),
}
#: fid prefixes SMIYC drops from ``ObstacleTrack-validation``.
_OBSTACLE_VALIDATION_EXCLUDED = ("validation_19",) + tuple(f"validation_{i}"
                                                           for i in range(21, 30))


def obstacle_track_fids(fids, split: str) -> list[str]:
    """The sorted fids of an ObstacleTrack split: frames whose scene ``fid.split("_")[0]``
    is one of the split's scenes (:data:`OBSTACLE_SPLITS`); ``validation`` also drops the
    prefixes ``validation_19`` and ``validation_21`` … ``validation_29``. A scene outside
    :data:`OBSTACLE_SCENES` raises ValueError.

    SMIYC's ``noNight`` is every scene but ``driveway`` with 382 expected frames, which is
    ``test`` + ``snowstorm`` (327 + 55): it counts no validation frames, so with the
    validation frames in the same ``images/`` folder its ``strict`` check fails (as in SMIYC).
    """
    _check_split("RoadObstacle21", split, OBSTACLE_SPLITS)
    scenes = OBSTACLE_SPLITS[split][0]
    out = []
    for fid in sorted(fids):
        scene = fid.split("_")[0]
        if scene not in OBSTACLE_SCENES:
            raise ValueError(f"RoadObstacle21 frame {fid!r} has scene {scene!r}; expected one "
                             f"of {OBSTACLE_SCENES}")
        if scene not in scenes:
            continue
        if split == "validation" and fid.startswith(_OBSTACLE_VALIDATION_EXCLUDED):
            continue
        out.append(fid)
    return out


class RoadObstacle21(_OodFrames):
    """RoadObstacle21, SMIYC's obstacle track (``dataset_ObstacleTrack``): ``images/*.webp``,
    split by scene (:func:`obstacle_track_fids`). Raw labels 0 road -> 0, 1 obstacle -> 1,
    anything else -> 255 (off-road is void). Reading the ``.webp`` images needs PIL with
    WebP support (``PIL.features.check("webp")``). Other arguments: see :class:`RoadAnomaly21`.
    """

    dataset = "RoadObstacle21"
    SPLITS = tuple(OBSTACLE_SPLITS)

    def __init__(self, root, split: str = "test", *, labels: bool | None = None,
                 strict: bool = False, height: int | None = None, width: int | None = None):
        _check_split(self.dataset, split, self.SPLITS)
        self.root = _dataset_dir(root, "dataset_ObstacleTrack", "images")
        if not _pil_features.check("webp"):
            raise RuntimeError("RoadObstacle21 images are .webp, but this PIL was built "
                               "without WebP support (PIL.features.check('webp') is False)")
        fids = obstacle_track_fids(_flat_frames(self.root, "webp"), split)
        images, label_paths = _flat_paths(self.root, fids, "webp")
        self._setup(split, fids, images, label_paths, labels=labels, strict=strict,
                    expected_length=OBSTACLE_SPLITS[split][1], height=height, width=width)

    def decode_label(self, raw):
        return ood_from_raw(raw, usual=0, anomaly=1)



# ----------------------------------------------------------------------------- LostAndFound
#: Sorted-list indices of the frames whose labels are empty (``count_nonzero == 0``), which
#: SMIYC drops from the ``Valid`` splits.
LAF_INVALID_FRAMES = {
    "train": (44, 67, 88, 109, 131, 614),
    "test": (17, 37, 55, 72, 91, 110, 129, 153, 174, 197, 218, 353, 490, 618, 686, 792, 793),
}
#: fid prefixes SMIYC also drops for ``testNoKnown``: children (scene 15) and bicycles.
LAF_NO_KNOWN_EXCLUDED = ("15_Rechbergstr_Deckenpfronn", "01_Hanns_Klemm_Str_45_000006",
                         "01_Hanns_Klemm_Str_45_000007", "10_Schlossberg_9_000004")
#: split -> (image folder, drop the invalid frames, drop the known-object prefixes, count).
LAF_SPLITS = {
    "train": ("train", False, False, 1036),
    "test": ("test", False, False, 1203),
    "trainValid": ("train", True, False, 1030),
    "testValid": ("test", True, False, 1186),
    "testNoKnown": ("test", True, True, 1043),
}
_LAF_FID = re.compile(r"^([0-9]{2})_(.*)_([0-9]{6})_([0-9]{6})$")
_LAF_EXTS = ("png", "webp", "jpg")


def lost_and_found_fids(fids, split: str) -> list[str]:
    """The fids of a LostAndFound split from every fid of its folder: sorted; the ``Valid``
    splits drop the indices :data:`LAF_INVALID_FRAMES` of that sorted list (indices past its
    end, in a partial tree, are ignored); ``testNoKnown`` then drops the fids starting with
    one of :data:`LAF_NO_KNOWN_EXCLUDED`."""
    _check_split("LostAndFound", split, LAF_SPLITS)
    folder, drop_invalid, drop_known = LAF_SPLITS[split][:3]
    out = sorted(fids)
    if drop_invalid:
        invalid = set(LAF_INVALID_FRAMES[folder])
        out = [f for i, f in enumerate(out) if i not in invalid]
    if drop_known:
        out = [f for f in out if not f.startswith(LAF_NO_KNOWN_EXCLUDED)]
    return out


def _laf_images(base: str, folder: str) -> dict:
    """fid -> image path of ``leftImg8bit/<folder>/*/*_leftImg8bit.<ext>``, with the first
    of png, webp, jpg that has any file (SMIYC's rule)."""
    img_dir = os.path.join(base, "leftImg8bit", folder)
    if not os.path.isdir(img_dir):
        raise FileNotFoundError(f"expected the LostAndFound folder {img_dir} (leftImg8bit/"
                                f"{folder}/<NN>_<scene>/<fid>_leftImg8bit.png)")
    for ext in _LAF_EXTS:
        paths = glob.glob(os.path.join(img_dir, "*", f"*_leftImg8bit.{ext}"))
        if paths:
            break
    else:
        raise FileNotFoundError(f"no LostAndFound images under {img_dir}: expected "
                                "<NN>_<scene>/<fid>_leftImg8bit.{png|webp|jpg}")
    out = {}
    for p in paths:
        fid = os.path.basename(p)[:-len(f"_leftImg8bit.{ext}")]
        if not _LAF_FID.match(fid):
            raise ValueError(f"{p}: expected a LostAndFound frame id "
                             "<NN>_<scene>_<seq:06d>_<time:06d>")
        out[fid] = p
    return out


def _laf_label_path(base: str, folder: str, image_path: str, fid: str) -> str:
    scene_dir = os.path.basename(os.path.dirname(image_path))
    return os.path.join(base, "gtCoarse", folder, scene_dir, f"{fid}_gtCoarse_labelIds.png")


def _laf_decode(raw):
    return ood_from_raw(raw, usual=1, anomaly=(2, 200))


class LostAndFound(_OodFrames):
    """LostAndFound in SMIYC's reading (``dataset_LostAndFound``, Cityscapes layout).

    ``split``: ``train`` / ``test`` (every frame of the folder), ``trainValid`` /
    ``testValid`` / ``testNoKnown`` (:func:`lost_and_found_fids`). Images use the first of
    the extensions png, webp, jpg present in the folder. Labels ``gtCoarse`` labelIds: 0
    ignore -> 255, 1 road -> 0, 2..200 obstacles -> 1, others -> 255 (the region of
    interest is the annotated road). The LAF PNGs carry a gamma chunk, which PIL (like
    SMIYC) does not apply. Other arguments: see :class:`RoadAnomaly21`.
    """

    dataset = "LostAndFound"
    SPLITS = tuple(LAF_SPLITS)

    def __init__(self, root, split: str = "test", *, labels: bool | None = None,
                 strict: bool = False, height: int | None = None, width: int | None = None):
        _check_split(self.dataset, split, self.SPLITS)
        self.root = _dataset_dir(root, "dataset_LostAndFound", "leftImg8bit")
        folder = LAF_SPLITS[split][0]
        by_fid = _laf_images(self.root, folder)
        fids = lost_and_found_fids(by_fid, split)
        images = [by_fid[f] for f in fids]
        label_paths = [_laf_label_path(self.root, folder, p, f) for p, f in zip(images, fids)]
        self._setup(split, fids, images, label_paths, labels=labels, strict=strict,
                    expected_length=LAF_SPLITS[split][3], height=height, width=width)

    def decode_label(self, raw):
        return _laf_decode(raw)


class FishyscapesLAF(_OodFrames):
    """Fishyscapes LostAndFound validation (SMIYC's ``FishyLAFAnomaly-val``, 100 frames).

    Frames are the label files ``<root>/labels/val/{fid}_fishy-labels.png`` (sorted), used
    as-is as ``ood`` (0 in-distribution, 1 anomaly, 255 void; any other value raises
    ValueError, where SMIYC would take it); each image is frame ``fid`` of the LostAndFound
    tree ``laf_root``, looked up in its ``train`` folder, then ``test``. Other arguments:
    see :class:`RoadAnomaly21`.
    """

    dataset = "FishyscapesLAF"
    SPLITS = ("val",)

    def __init__(self, root, laf_root, *, split: str = "val", strict: bool = False,
                 height: int | None = None, width: int | None = None):
        _check_split(self.dataset, split, self.SPLITS)
        self.root = os.fspath(root)
        label_dir = os.path.join(self.root, "labels", split)
        suffix = "_fishy-labels.png"
        paths = sorted(glob.glob(os.path.join(label_dir, f"*{suffix}")))
        if not paths:
            raise FileNotFoundError(f"no Fishyscapes LostAndFound labels under {label_dir}: "
                                    f"expected labels/{split}/<fid>{suffix}")
        fids = [os.path.basename(p)[:-len(suffix)] for p in paths]
        laf = _dataset_dir(laf_root, "dataset_LostAndFound", "leftImg8bit")
        trees = [_laf_images(laf, f) for f in ("train", "test")
                 if os.path.isdir(os.path.join(laf, "leftImg8bit", f))]
        images = []
        for fid in fids:
            hit = next((t[fid] for t in trees if fid in t), None)
            if hit is None:
                raise FileNotFoundError(
                    f"Fishyscapes frame {fid!r} has no LostAndFound image: expected "
                    f"{laf}/leftImg8bit/{{train,test}}/<NN>_<scene>/{fid}_leftImg8bit.<ext>")
            images.append(hit)
        self._setup(split, fids, images, paths, labels=True, strict=strict,
                    expected_length=100, height=height, width=width)

    def decode_label(self, raw):
        bad = (raw != OOD_IN) & (raw != OOD_ANOMALY) & (raw != OOD_VOID)
        if bad.any():
            raise ValueError("Fishyscapes labels must be 0 (in-distribution), 1 (anomaly) or "
                             f"255 (void); got {np.unique(raw[bad])[:8].tolist()}")
        return raw
