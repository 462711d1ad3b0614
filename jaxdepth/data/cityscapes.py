"""Cityscapes semantic segmentation (gtFine) in the official on-disk layout.

Layout (cityscapesScripts' README), unchanged from the download::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png   8-bit RGB
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png           8-bit "L"

with splits ``train`` (2975 images, 18 cities), ``val`` (500: frankfurt, lindau, munster)
and ``test`` (1525; its labels are not public: only ego vehicle and rectification border
are annotated, so :class:`Cityscapes` loads no labels for ``test`` unless asked). Images
are 2048×1024 (W×H).

Labels: ``labelIds`` hold the ids of the full label table (:data:`CITYSCAPES_LABELS`, from
cityscapesScripts' ``helpers/labels.py``); training and evaluation use the 19 train ids
(:data:`TRAIN_CLASSES`), every other label mapped to 255 = ignore (:func:`label_to_train_id`;
the license plate, id −1, is ignored too). ``*_gtFine_labelTrainIds.png`` is not part of the
download: cityscapesScripts' ``createTrainIdLabelImgs.py`` draws it from the polygons with
the same table, background 255 and no license-plate polygons (those are not drawn into
``labelIds`` either), so it equals ``label_to_train_id(labelIds)``. :class:`Cityscapes`
therefore reads ``labelIds`` by default even where a ``labelTrainIds`` file exists (the
shipped file; a ``labelTrainIds`` made with an edited table would silently change the
classes), and reads ``labelTrainIds`` as-is only with ``label_file="labelTrainIds"``
(PGN's evaluation scripts expect that file).

Samples follow :mod:`.segmentation`'s convention: ``image`` ``[H, W, 3]`` float32 in [0, 1],
``label`` ``[H, W]`` uint8 train ids (255 = ignore); optional resizing is bilinear for the
image and nearest for the label. :func:`train_transform` is the training augmentation
(random scale, crop, horizontal flip) as a per-sample ``Loader`` transform.
"""
from __future__ import annotations

import glob
import os
import re
from typing import NamedTuple

import numpy as np

from .segmentation import (IGNORE_LABEL, _check_size, load_frame, read_label_png, resize_image,
                           resize_label)

__all__ = ["CityscapesLabel", "CITYSCAPES_LABELS", "TRAIN_CLASSES", "PALETTE",
           "LABEL_TO_TRAIN_ID", "TRAIN_ID_TO_LABEL_ID", "SPLITS", "EXPECTED_LENGTH",
           "label_to_train_id", "Cityscapes", "train_transform"]


class CityscapesLabel(NamedTuple):
    """One row of the Cityscapes label table."""

    id: int
    name: str
    train_id: int
    category: str
    category_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: tuple


def _table():
    # id, name, trainId, category, catId, hasInstances, ignoreInEval, colour
    rows = """
     0 unlabeled             255 void         0 F T   0   0   0
     1 ego_vehicle           255 void         0 F T   0   0   0
     2 rectification_border  255 void         0 F T   0   0   0
     3 out_of_roi            255 void         0 F T   0   0   0
     4 static                255 void         0 F T   0   0   0
     5 dynamic               255 void         0 F T 111  74   0
     6 ground                255 void         0 F T  81   0  81
     7 road                    0 flat         1 F F 128  64 128
     8 sidewalk                1 flat         1 F F 244  35 232
     9 parking               255 flat         1 F T 250 170 160
    10 rail_track            255 flat         1 F T 230 150 140
    11 building                2 construction 2 F F  70  70  70
    12 wall                    3 construction 2 F F 102 102 156
    13 fence                   4 construction 2 F F 190 153 153
    14 guard_rail            255 construction 2 F T 180 165 180
    15 bridge                255 construction 2 F T 150 100 100
    16 tunnel                255 construction 2 F T 150 120  90
    17 pole                    5 object       3 F F 153 153 153
    18 polegroup             255 object       3 F T 153 153 153
    19 traffic_light           6 object       3 F F 250 170  30
    20 traffic_sign            7 object       3 F F 220 220   0
    21 vegetation              8 nature       4 F F 107 142  35
    22 terrain                 9 nature       4 F F 152 251 152
    23 sky                    10 sky          5 F F  70 130 180
    24 person                 11 human        6 T F 220  20  60
    25 rider                  12 human        6 T F 255   0   0
    26 car                    13 vehicle      7 T F   0   0 142
    27 truck                  14 vehicle      7 T F   0   0  70
    28 bus                    15 vehicle      7 T F   0  60 100
    29 caravan               255 vehicle      7 T T   0   0  90
    30 trailer               255 vehicle      7 T T   0   0 110
    31 train                  16 vehicle      7 T F   0  80 100
    32 motorcycle             17 vehicle      7 T F   0   0 230
    33 bicycle                18 vehicle      7 T F 119  11  32
    -1 license_plate          -1 vehicle      7 F T   0   0 142
    """
    out = []
    for line in rows.strip().splitlines():
        i, name, tid, cat, cid, inst, ign, r, g, b = line.split()
        out.append(CityscapesLabel(int(i), name.replace("_", " "), int(tid), cat, int(cid),
                                   inst == "T", ign == "T", (int(r), int(g), int(b))))
    return tuple(out)


#: The full label table (cityscapesScripts ``helpers/labels.py``), in its order.
CITYSCAPES_LABELS = _table()
#: The 19 evaluated classes, in train id order.
TRAIN_CLASSES = tuple(lab.name for lab in sorted(
    (x for x in CITYSCAPES_LABELS if 0 <= x.train_id < 255), key=lambda x: x.train_id))
#: [19, 3] uint8 colour of each train id (for :func:`.segmentation.colorize`).
PALETTE = np.array([next(x.color for x in CITYSCAPES_LABELS if x.train_id == t)
                    for t in range(len(TRAIN_CLASSES))], np.uint8)


def _lookup_tables():
    to_train = np.full(256, IGNORE_LABEL, np.uint8)
    known = np.zeros(256, bool)
    for lab in CITYSCAPES_LABELS:
        if lab.id >= 0:
            to_train[lab.id] = lab.train_id if 0 <= lab.train_id < 255 else IGNORE_LABEL
            known[lab.id] = True
    # cityscapesScripts builds trainId -> label over the reversed table, so for a shared
    # train id (255) the first-listed label (unlabeled, id 0) wins.
    to_label = np.zeros(256, np.uint8)
    for lab in reversed(CITYSCAPES_LABELS):
        if lab.id >= 0 and 0 <= lab.train_id <= 255:
            to_label[lab.train_id] = lab.id
    return to_train, known, to_label


# LABEL_TO_TRAIN_ID: [256] uint8, label id -> train id (255 for ignored labels and for ids
# not in the table). TRAIN_ID_TO_LABEL_ID: [256] uint8, train id -> label id (0..18 -> their
# labels, 255 -> 0 "unlabeled", others 0), e.g. for test-server submissions in label ids.
LABEL_TO_TRAIN_ID, _KNOWN_ID, TRAIN_ID_TO_LABEL_ID = _lookup_tables()
SPLITS = ("train", "val", "test")
#: Images per split of the complete gtFine release.
EXPECTED_LENGTH = {"train": 2975, "val": 500, "test": 1525}


def label_to_train_id(label_ids) -> np.ndarray:
    """Label ids ``[...]`` (ints in the table: 0..33, or −1 for the license plate) -> uint8
    train ids ``[...]``, 255 for every ignored label. Ids outside the table raise ValueError."""
    ids = np.asarray(label_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"label ids must be integers, got dtype {ids.dtype}")
    plate = ids == -1
    in_range = (ids >= 0) & (ids <= 255)
    bad = ~plate & ~_KNOWN_ID[np.where(in_range, ids, 255).astype(np.intp)]
    if bad.any():
        raise ValueError("label ids must be Cityscapes label ids (0..33, or -1 for the license "
                         f"plate); got {np.unique(ids[bad])[:8].tolist()}")
    return np.where(plate, np.uint8(IGNORE_LABEL), LABEL_TO_TRAIN_ID[np.where(plate, 0, ids)])


_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")


class Cityscapes:
    """Cityscapes gtFine source (see the module docstring).

    ``root`` holds ``leftImg8bit/`` and ``gtFine/``; ``split`` is ``train``, ``val`` or
    ``test``. Samples (sorted by city, then name): ``image`` ``[H, W, 3]`` float32 and, with
    labels, ``label`` ``[H, W]`` uint8 train ids. ``labels`` defaults to True for ``train``
    and ``val`` and False for ``test`` (whose labels are not public); with labels, every
    image's label file must exist. ``label_file``: ``"labelIds"`` (default, mapped with
    :func:`label_to_train_id`) or ``"labelTrainIds"`` (read as-is). ``height`` and ``width``
    (both or neither) resize: image bilinear, label nearest. ``names[i]`` is
    ``<city>_<seq>_<frame>``. ``strict=True`` raises when the split does not have
    :data:`EXPECTED_LENGTH` images (the complete release); the count is always in
    ``expected_length``.
    """

    def __init__(self, root, split: str = "train", *, height: int | None = None,
                 width: int | None = None, labels: bool | None = None,
                 label_file: str = "labelIds", strict: bool = False):
        if split not in SPLITS:
            raise ValueError(f"unknown Cityscapes split {split!r}; expected one of {SPLITS}")
        if label_file not in ("labelIds", "labelTrainIds"):
            raise ValueError(f"label_file must be 'labelIds' or 'labelTrainIds', got "
                             f"{label_file!r}")
        self.root, self.split, self.label_file = os.fspath(root), split, label_file
        self.size = _check_size(height, width)
        self.has_labels = split != "test" if labels is None else bool(labels)
        self.expected_length = EXPECTED_LENGTH[split]
        img_dir = os.path.join(self.root, "leftImg8bit", split)
        if not os.path.isdir(img_dir):
            raise FileNotFoundError(
                f"expected the Cityscapes root at {self.root} with leftImg8bit/{split}/<city>/"
                "<city>_<seq>_<frame>_leftImg8bit.png (and gtFine/ for labels); "
                f"{img_dir} is not a directory")
        self.image_paths = sorted(glob.glob(os.path.join(img_dir, "*", "*_leftImg8bit.png")))
        if not self.image_paths:
            raise FileNotFoundError(f"no Cityscapes {split} images under {img_dir}: expected "
                                    "<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png")
        self.names = []
        for p in self.image_paths:
            m = _NAME.match(os.path.basename(p))
            if m is None:
                raise ValueError(f"{p}: expected a Cityscapes name "
                                 "<city>_<seq:06d>_<frame:06d>_leftImg8bit.png")
            self.names.append(os.path.basename(p)[:-len("_leftImg8bit.png")])
        if strict and len(self.image_paths) != self.expected_length:
            raise ValueError(f"Cityscapes {split} under {self.root} has "
                             f"{len(self.image_paths)} images; the complete release has "
                             f"{self.expected_length}")
        self.label_paths = None
        if self.has_labels:
            self.label_paths = [
                os.path.join(self.root, "gtFine", split, os.path.basename(os.path.dirname(p)),
                             f"{n}_gtFine_{label_file}.png")
                for p, n in zip(self.image_paths, self.names)]
            missing = [q for q in self.label_paths if not os.path.isfile(q)]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} of {len(self.label_paths)} Cityscapes {split} label "
                    f"files missing, e.g. {missing[0]} (expected gtFine/{split}/<city>/"
                    f"<name>_gtFine_{label_file}.png beside every image; labels=False "
                    "loads images only)")

    def __len__(self) -> int:
        return len(self.image_paths)

    def __repr__(self) -> str:
        return (f"Cityscapes({self.root!r}, split={self.split!r}, size={self.size}, "
                f"labels={self.has_labels}, n={len(self)})")

    def read_label(self, i: int) -> np.ndarray:
        """uint8 train ids ``[H, W]`` of sample ``i`` at native size."""
        path = self.label_paths[i]
        raw = read_label_png(path)
        if self.label_file == "labelIds":
            try:
                return label_to_train_id(raw)
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from None
        bad = (raw >= len(TRAIN_CLASSES)) & (raw != IGNORE_LABEL)
        if bad.any():
            raise ValueError(f"{path}: labelTrainIds must be 0..{len(TRAIN_CLASSES) - 1} or "
                             f"255, got {np.unique(raw[bad])[:8].tolist()}")
        return raw

    def __getitem__(self, i: int) -> dict:
        return load_frame(self, i, "label", self.read_label, self.size)


def train_transform(sample: dict, rng: np.random.Generator, *, crop_size=(512, 1024),
                    scale_range=(0.5, 2.0), flip_prob: float = 0.5) -> dict:
    """Training augmentation of a segmentation sample (``image`` ``[H, W, 3]``, ``label``
    and any other uint8 ``[H, W]`` map such as ``ood``) -> the same keys at ``crop_size``
    (``(height, width)``; the default suits full-resolution 1024×2048 Cityscapes frames).

    Random scale ``s ~ U(scale_range)`` (resize to ``round(s·H) × round(s·W)``: image
    bilinear, maps nearest), pad to at least ``crop_size`` at the bottom / right (image 0,
    maps 255 = ignore), a uniformly placed crop, then a horizontal flip with probability
    ``flip_prob``. Random draws, in order: scale, crop row, crop column, flip. Use
    ``functools.partial`` for other settings, e.g. ``Loader(src, 8, transform=partial(
    train_transform, crop_size=(256, 512)))``.
    """
    ch, cw = _check_size(*crop_size)
    lo, hi = (float(v) for v in scale_range)
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got {scale_range}")
    img = np.asarray(sample["image"], np.float32)
    h, w = img.shape[:2]
    maps = [k for k, v in sample.items() if k != "image" and np.shape(v) == (h, w)]
    for k in maps:
        if np.asarray(sample[k]).dtype != np.uint8:
            raise ValueError(f"train_transform resizes every [H, W] entry as a uint8 label map; "
                             f"{k!r} is {np.asarray(sample[k]).dtype}")
    s = float(rng.uniform(lo, hi))
    sh, sw = max(1, round(s * h)), max(1, round(s * w))
    out = dict(sample)
    out["image"] = resize_image(img, sh, sw)
    for k in maps:
        out[k] = resize_label(sample[k], sh, sw)
    ph, pw = max(0, ch - sh), max(0, cw - sw)
    if ph or pw:
        out["image"] = np.pad(out["image"], ((0, ph), (0, pw), (0, 0)))
        for k in maps:
            out[k] = np.pad(out[k], ((0, ph), (0, pw)), constant_values=IGNORE_LABEL)
    top = int(rng.integers(0, sh + ph - ch + 1))
    left = int(rng.integers(0, sw + pw - cw + 1))
    flip = bool(rng.random() < flip_prob)
    for k in ["image", *maps]:
        x = out[k][top:top + ch, left:left + cw]
        out[k] = np.ascontiguousarray(x[:, ::-1] if flip else x)
    return out
