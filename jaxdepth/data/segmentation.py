"""Segmentation samples: the common convention, and the procedural scenes as segmentation data.

Every segmentation source of :mod:`jaxdepth.data` (:mod:`.cityscapes`, :mod:`.smiyc` and
:class:`SyntheticSegmentation` here) follows one sample convention:

- ``image`` ``[H, W, 3]`` float32 RGB in [0, 1] (an alpha channel is dropped);
- semantic data: ``label`` ``[H, W]`` uint8 train ids, :data:`IGNORE_LABEL` = 255 = ignore
  (void; masked in every loss and metric, never averaged in);
- out-of-distribution data: ``ood`` ``[H, W]`` uint8, SegmentMeIfYouCan's ``label_pixel_gt``
  convention: :data:`OOD_IN` = 0 in-distribution (road, for the obstacle track),
  :data:`OOD_ANOMALY` = 1 anomaly / obstacle, :data:`OOD_VOID` = 255 void.

Samples hold only these arrays. The :class:`~jaxdepth.data.pipeline.Loader` would stack
string arrays too, but a batch with string leaves cannot go into a jitted step, so frame
names are not part of a sample: every source has a ``names`` list (sample ``i`` is frame
``names[i]``; a ``Loader`` with ``shuffle=False`` yields them in that order).

Resizing (:func:`resize_image`, :func:`resize_label`, :func:`resize_sample`) is bilinear for
images (PIL's filter, antialiased when reducing, in float32) and nearest for label maps
(output pixel ``i`` takes the source pixel under its centre, ``floor((i + 0.5) · in /
out)``), so no label is ever interpolated.

The procedural street scenes (:mod:`.synthetic`) become segmentation data with the scene
classes minus ``anomaly`` as the training classes (:data:`SYNTHETIC_CLASSES`, Cityscapes'
colours for the same classes in :data:`SYNTHETIC_PALETTE`); :func:`train_labels` maps the
anomaly class to 255, so no model ever trains on it. :func:`ood_labels` gives the anomaly
ground truth; its ``roi`` chooses what counts as in-distribution (see there).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from PIL import Image

from .synthetic import layout as _layout

__all__ = ["IGNORE_LABEL", "OOD_IN", "OOD_ANOMALY", "OOD_VOID", "OOD_ROIS",
           "SYNTHETIC_CLASSES", "SYNTHETIC_PALETTE", "SYNTHETIC_TO_CITYSCAPES",
           "train_labels", "ood_labels", "colorize", "read_rgb", "read_label_png",
           "resize_image", "resize_label", "resize_sample", "load_frame", "palette_of",
           "SyntheticSegmentation"]

IGNORE_LABEL = 255          #: train id of void / ignored pixels
OOD_IN, OOD_ANOMALY, OOD_VOID = 0, 1, 255   #: values of an ``ood`` map (SMIYC convention)
OOD_ROIS = ("all", "road")  #: choices of :func:`ood_labels`'s ``roi``

#: Training classes of the procedural scenes: the scene classes without ``anomaly``; train
#: id ``k`` is scene class ``k`` (the anomaly class is the last scene class).
SYNTHETIC_CLASSES = tuple(c for c in _layout.CLASSES if c != "anomaly")
#: [7, 3] uint8 display colours of :data:`SYNTHETIC_CLASSES`: Cityscapes' colours of the
#: same classes (road (128, 64, 128), …, sky (70, 130, 180)).
SYNTHETIC_PALETTE = np.asarray(_layout.CLASS_COLORS[:len(SYNTHETIC_CLASSES)], np.uint8)
#: [7] uint8 Cityscapes train id of each synthetic class (road 0, sidewalk 1, building 2,
#: car 13, pole 5, vegetation 8, sky 10), e.g. to score a Cityscapes model on the scenes.
SYNTHETIC_TO_CITYSCAPES = np.array([0, 1, 2, 13, 5, 8, 10], np.uint8)

_N_SCENE = len(_layout.CLASSES)
_TRAIN_ID_OF_SCENE_CLASS = np.array([*range(len(SYNTHETIC_CLASSES)), IGNORE_LABEL], np.uint8)
assert _layout.CLASSES[_layout.ANOMALY] == "anomaly" and _layout.ANOMALY == _N_SCENE - 1


# ----------------------------------------------------------------------------- labels
def _scene_classes(labels, what: str) -> np.ndarray:
    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"{what}: expected integer scene class ids, got dtype {lab.dtype}")
    if lab.size and (lab.min() < 0 or lab.max() >= _N_SCENE):
        raise ValueError(f"{what}: expected scene class ids in [0, {_N_SCENE}) "
                         f"({', '.join(_layout.CLASSES)}), got values in "
                         f"[{lab.min()}, {lab.max()}]")
    return lab


def train_labels(labels) -> np.ndarray:
    """Scene classes ``[...]`` (``synthetic.CLASSES`` ids) -> uint8 train ids ``[...]``:
    class ``k < 7`` keeps its id, ``anomaly`` becomes :data:`IGNORE_LABEL` (never trained on)."""
    return _TRAIN_ID_OF_SCENE_CLASS[_scene_classes(labels, "train_labels")]


def ood_labels(labels, roi: str = "all") -> np.ndarray:
    """Scene classes ``[...]`` -> uint8 ``ood`` map ``[...]`` (0 / 1 / 255, SMIYC convention).

    ``roi="all"`` (anomaly-track style, the default): 1 on anomaly pixels, 0 elsewhere. No
    pixel is void: SMIYC's anomaly track voids only unknown background objects, and every
    non-anomaly pixel of a scene (sky included, a Cityscapes class) is a training class.
    ``roi="road"`` (obstacle-track style): 0 on road, 1 on anomalies (the anomaly objects
    stand on the road), 255 on everything off the road."""
    lab = _scene_classes(labels, "ood_labels")
    if roi not in OOD_ROIS:
        raise ValueError(f"roi must be one of {OOD_ROIS}, got {roi!r}")
    out = np.full(lab.shape, OOD_IN if roi == "all" else OOD_VOID, np.uint8)
    if roi == "road":
        out[lab == _layout.ROAD] = OOD_IN
    out[lab == _layout.ANOMALY] = OOD_ANOMALY
    return out


def colorize(label, palette, *, ignore_color=(0, 0, 0)) -> np.ndarray:
    """Label map ``[H, W]`` of ids in ``[0, C)`` or 255 -> uint8 RGB ``[H, W, 3]``:
    ``palette[id]`` (``palette`` ``[C, 3]`` uint8), ``ignore_color`` on 255 (black, like
    Cityscapes' ``unlabeled``). Other ids raise ValueError."""
    lab = np.asarray(label)
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3 or pal.shape[0] == 0 or pal.shape[0] > 255:
        raise ValueError(f"palette must be [C, 3] RGB with 1 <= C <= 255, got {pal.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"label must hold integer ids, got dtype {lab.dtype}")
    bad = (lab < 0) | ((lab >= pal.shape[0]) & (lab != IGNORE_LABEL))
    if bad.any():
        raise ValueError(f"label ids must lie in [0, {pal.shape[0]}) or be {IGNORE_LABEL}; "
                         f"got {np.unique(lab[bad])[:8].tolist()}")
    table = np.zeros((256, 3), np.uint8)
    table[:pal.shape[0]] = pal
    table[IGNORE_LABEL] = ignore_color
    return table[lab.astype(np.intp)]


# ----------------------------------------------------------------------------- files
def palette_of(num_classes: int, class_names=None) -> np.ndarray:
    """``[C, 3]`` uint8 display colours of a model's classes: the scenes' or Cityscapes'
    palette when ``class_names`` are theirs, else fixed distinct random colours."""
    from .cityscapes import PALETTE, TRAIN_CLASSES

    if class_names is not None and tuple(class_names) == SYNTHETIC_CLASSES:
        return SYNTHETIC_PALETTE
    if class_names is not None and tuple(class_names) == tuple(TRAIN_CLASSES):
        return np.asarray(PALETTE, np.uint8)
    return np.random.default_rng(0).integers(40, 256, size=(num_classes, 3)).astype(np.uint8)


def read_rgb(path) -> np.ndarray:
    """An 8-bit image file -> float32 RGB ``[H, W, 3]`` in [0, 1]. The pixels are PIL's
    (``np.asarray(Image.open(path))``, as SegmentMeIfYouCan reads them; the PNG gamma
    chunk is not applied) with an alpha channel dropped; grey or paletted images are
    expanded to RGB."""
    with Image.open(path) as im:
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("L", "LA"):
            im = im.convert("RGB")
        if im.mode not in ("RGB", "RGBA"):
            raise ValueError(f"{path}: expected an 8-bit RGB(A) image, got PIL mode {im.mode!r}")
        arr = np.asarray(im)
    return arr[..., :3].astype(np.float32) / np.float32(255)


def read_label_png(path) -> np.ndarray:
    """An 8-bit single-channel (``L``, or ``P`` read as its indices) label PNG -> uint8
    ``[H, W]`` of the raw values. Other modes (RGB colour maps, 16-bit) raise ValueError."""
    with Image.open(path) as im:
        if im.mode not in ("L", "P"):
            raise ValueError(f"{path}: expected an 8-bit single-channel label PNG (mode 'L'), "
                             f"got PIL mode {im.mode!r}")
        return np.array(im, np.uint8)


# ----------------------------------------------------------------------------- resizing
def _check_size(height, width) -> tuple[int, int] | None:
    if height is None and width is None:
        return None
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer (give both height and width, "
                             f"or neither), got {v!r}")
    return int(height), int(width)


def resize_image(image, height: int, width: int) -> np.ndarray:
    """float image ``[H, W, C]`` -> float32 ``[height, width, C]``, bilinear (PIL's
    ``BILINEAR`` per channel in float32: antialiased when reducing)."""
    img = np.asarray(image, np.float32)
    if img.ndim != 3:
        raise ValueError(f"image must be [H, W, C], got shape {img.shape}")
    height, width = _check_size(height, width)
    if img.shape[:2] == (height, width):
        return img
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c]), "F")
                        .resize((width, height), Image.BILINEAR)) for c in range(img.shape[2])]
    return np.stack(chans, axis=-1)


def resize_label(label, height: int, width: int) -> np.ndarray:
    """uint8 label map ``[H, W]`` -> ``[height, width]``, nearest: output pixel ``i`` takes
    source pixel ``floor((i + 0.5) · H / height)`` (the source pixel under its centre;
    likewise for columns), in exact integer arithmetic. PIL's ``NEAREST`` follows the same
    rule but in floating point, which can pick the lower pixel where a centre falls exactly
    on a source pixel boundary."""
    lab = np.asarray(label)
    if lab.ndim != 2 or lab.dtype != np.uint8:
        raise ValueError(f"label must be uint8 [H, W], got {lab.dtype} {lab.shape}")
    height, width = _check_size(height, width)
    if lab.shape == (height, width):
        return lab
    rows = (2 * np.arange(height) + 1) * lab.shape[0] // (2 * height)
    cols = (2 * np.arange(width) + 1) * lab.shape[1] // (2 * width)
    return lab[rows[:, None], cols[None, :]]


def load_frame(sources, i, key: str, read_map, size) -> dict:
    """Sample ``i`` of a file-backed source: ``image`` read from ``sources.image_paths[i]``
    and, if ``sources.has_labels``, ``key`` = ``read_map(i)`` (``[H, W]`` uint8, its size
    checked against the image's), both resized to ``size`` (``(height, width)`` or None:
    image bilinear, map nearest). Raises TypeError / IndexError for a bad index."""
    n = len(sources)
    if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
        raise TypeError(f"index must be an integer, got {type(i).__name__}")
    if not -n <= i < n:
        raise IndexError(f"index {i} out of range for {n} samples")
    i = int(i) % n
    out = {"image": read_rgb(sources.image_paths[i])}
    if sources.has_labels:
        m = read_map(i)
        if m.shape != out["image"].shape[:2]:
            raise ValueError(f"{sources.label_paths[i]}: label {m.shape} and image "
                             f"{out['image'].shape[:2]} sizes differ")
        out[key] = m
    if size is not None:
        out["image"] = resize_image(out["image"], *size)
        if key in out:
            out[key] = resize_label(out[key], *size)
    return out


def resize_sample(sample: Mapping, height: int, width: int) -> dict:
    """A sample resized to ``height × width``: ``image`` bilinear, every other ``[H, W]``
    map of the image's size (``label``, ``ood``) nearest; other entries pass through."""
    img = np.asarray(sample["image"])
    out = dict(sample)
    out["image"] = resize_image(img, height, width)
    for k, v in sample.items():
        if k != "image" and np.ndim(v) == 2 and np.shape(v) == img.shape[:2]:
            out[k] = resize_label(v, height, width)
    return out


# ----------------------------------------------------------------------------- source
class SyntheticSegmentation:
    """Procedural street scenes as segmentation data (the project's source protocol).

    Sample ``i`` is the scene ``synthetic.sample(i, seed=seed, split=split, ...)``:
    ``image`` ``[H, W, 3]`` float32, ``label`` ``[H, W]`` uint8 (:func:`train_labels`:
    ids into :data:`SYNTHETIC_CLASSES`, 255 on anomalies) and, when the scenes contain
    anomalies (split ``"ood"``, or ``anomalies=True``), ``ood`` ``[H, W]`` uint8
    (:func:`ood_labels` with ``ood_roi``). ``size`` is the number of samples (default: the
    split's :attr:`SyntheticSource.DEFAULT_LENGTH`); ``options`` go to
    :class:`~jaxdepth.data.synthetic.SyntheticSource`. ``get_batch`` renders a whole batch
    in one jit-compiled call. ``names[i]`` is ``f"{split}_{i:06d}"``.
    """

    def __init__(self, split: str = "train", *, seed: int = 0, height: int = 96,
                 width: int = 320, size: int | None = None, ood_roi: str = "all", **options):
        from .synthetic import SyntheticSource

        if ood_roi not in OOD_ROIS:
            raise ValueError(f"ood_roi must be one of {OOD_ROIS}, got {ood_roi!r}")
        self.source = SyntheticSource(split, seed=seed, height=height, width=width,
                                      length=size, keys=("image", "labels"), **options)
        self.split, self.seed, self.ood_roi = split, self.source.seed, ood_roi
        self.height, self.width = self.source.height, self.source.width
        self.has_ood = self.source.cfg.anomalies
        self.keys = ("image", "label", "ood") if self.has_ood else ("image", "label")

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        return (f"SyntheticSegmentation(split={self.split!r}, seed={self.seed}, "
                f"height={self.height}, width={self.width}, size={len(self)}, "
                f"ood_roi={self.ood_roi!r}, options={self.source.options})")

    @property
    def names(self) -> list[str]:
        return [f"{self.split}_{i:06d}" for i in range(len(self))]

    def _convert(self, rendered: Mapping) -> dict:
        out = {"image": np.asarray(rendered["image"], np.float32),
               "label": train_labels(rendered["labels"])}
        if self.has_ood:
            out["ood"] = ood_labels(rendered["labels"], self.ood_roi)
        return out

    def get_batch(self, indices) -> dict:
        """Samples ``indices`` (1-D ints), stacked ``[B, ...]``, rendered in one call."""
        return self._convert(self.source.get_batch(indices))

    def __getitem__(self, i) -> dict:
        return self._convert(self.source[i])
