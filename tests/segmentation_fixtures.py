"""Tiny Cityscapes and SMIYC (RoadAnomaly21, RoadObstacle21, LostAndFound, Fishyscapes LAF)
trees in the real on-disk layouts and formats, for tests.

Nothing is downloaded: every file is written here with the real names and extensions
(8-bit RGB PNG / JPEG / WebP images, 8-bit "L" label PNGs, 16-bit LostAndFound instance
PNGs). Reusable by any test: ``import segmentation_fixtures as sf``.

Each RGB image encodes its identity: red = 16·index mod 256, green = 4·column, blue =
12·row. Label images cycle through a given list of raw values, ``values[(row·W + col +
index) mod len(values)]``, so every value occurs and frames differ. JPEGs are written at
quality 100 without chroma subsampling (close to, not equal to, the pattern); WebP
losslessly (exact).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

SIZE = (16, 32)                        # (h, w) of the tiny images


def rgb_pattern(index: int, size=SIZE) -> np.ndarray:
    """uint8 [h, w, 3] identifying ``index`` (see the module docstring)."""
    h, w = size
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (16 * index) % 256
    img[..., 1] = (4 * np.arange(w))[None, :] % 256
    img[..., 2] = (12 * np.arange(h))[:, None] % 256
    return img


def cycle_pattern(index: int, values, size=SIZE) -> np.ndarray:
    """uint8 [h, w] cycling through ``values`` (see the module docstring)."""
    h, w = size
    r, c = np.mgrid[:h, :w]
    return np.asarray(values, np.uint8)[(r * w + c + index) % len(values)]


def write_image(path, array: np.ndarray) -> None:
    """An 8-bit image in the format of ``path``'s extension (png, jpg, webp)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    im = Image.fromarray(np.asarray(array, np.uint8))
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext in (".jpg", ".jpeg"):
        im.save(path, quality=100, subsampling=0)
    elif ext == ".webp":
        im.save(path, lossless=True, exact=True)
    else:
        im.save(path)


def rgba(img: np.ndarray, seed: int = 0) -> np.ndarray:
    """``img`` with a random (nowhere zero) alpha channel, to check that readers drop it."""
    alpha = np.random.default_rng(seed).integers(1, 256, img.shape[:2], dtype=np.uint8)
    return np.concatenate([img, alpha[..., None]], axis=-1)


# ----------------------------------------------------------------------------- Cityscapes
#: Every label id of the Cityscapes table (0..33), the raw values of the labelIds fixtures.
CITYSCAPES_IDS = tuple(range(34))
#: Raw values of the labelTrainIds fixtures (train ids and 255), deliberately unrelated to
#: the labelIds pattern, so tests can tell which file was read.
TRAIN_ID_VALUES = (255, *range(18, -1, -1))


def write_cityscapes(root, splits: dict, size=SIZE, *, train_ids: bool = False,
                     labels: bool = True) -> dict:
    """``root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` and
    ``root/gtFine/<split>/<city>/..._gtFine_labelIds.png`` (and ``_labelTrainIds.png``
    with ``train_ids``) for ``splits = {split: {city: n_frames}}``. Frame ``k`` of a city
    is ``<city>_<k:06d>_<19+k:06d>``. Returns ``{name: (rgb, label_ids, train_ids|None)}``
    with a running index over everything written."""
    written, index = {}, 0
    for split, cities in splits.items():
        for city, n in cities.items():
            for k in range(n):
                name = f"{city}_{k:06d}_{19 + k:06d}"
                rgb = rgb_pattern(index, size)
                write_image(os.path.join(root, "leftImg8bit", split, city,
                                         f"{name}_leftImg8bit.png"), rgb)
                gt = os.path.join(root, "gtFine", split, city, name)
                ids = cycle_pattern(index, CITYSCAPES_IDS, size)
                tids = cycle_pattern(index, TRAIN_ID_VALUES, size) if train_ids else None
                if labels:
                    write_image(gt + "_gtFine_labelIds.png", ids)
                    if train_ids:
                        write_image(gt + "_gtFine_labelTrainIds.png", tids)
                written[name] = (rgb, ids, tids)
                index += 1
    return written


# ----------------------------------------------------------------------------- SMIYC
#: Raw values of the RoadAnomaly21 / RoadObstacle21 label fixtures (0 usual, 1 anomaly,
#: 255 ignore, and two values no class has).
TRACK_RAW_VALUES = (0, 1, 255, 2, 7)
#: Raw values of the LostAndFound gtCoarse labelIds fixtures (0 ignore, 1 road, 2..200
#: obstacles, above 200 nothing).
LAF_RAW_VALUES = (0, 1, 2, 100, 200, 201, 255)


def write_track(root, dataset_dir: str, ext: str, fids, size=SIZE, *,
                labelled=None) -> dict:
    """A SMIYC track tree ``root/<dataset_dir>/images/{fid}.{ext}`` and
    ``labels_masks/{fid}_labels_semantic.png`` (for the fids in ``labelled``; default all).
    Returns ``{fid: (rgb, raw_label)}`` (index = position in ``fids``)."""
    base = os.path.join(root, dataset_dir)
    labelled = set(fids if labelled is None else labelled)
    written = {}
    for i, fid in enumerate(fids):
        rgb, raw = rgb_pattern(i, size), cycle_pattern(i, TRACK_RAW_VALUES, size)
        write_image(os.path.join(base, "images", f"{fid}.{ext}"), rgb)
        if fid in labelled:
            write_image(os.path.join(base, "labels_masks", f"{fid}_labels_semantic.png"), raw)
        written[fid] = (rgb, raw)
    return written


def write_road_anomaly(root, fids, size=SIZE, **kw) -> dict:
    """RoadAnomaly21: ``root/dataset_AnomalyTrack/images/{fid}.jpg`` + labels."""
    return write_track(root, "dataset_AnomalyTrack", "jpg", fids, size, **kw)


def write_road_obstacle(root, fids, size=SIZE, **kw) -> dict:
    """RoadObstacle21: ``root/dataset_ObstacleTrack/images/{fid}.webp`` + labels."""
    return write_track(root, "dataset_ObstacleTrack", "webp", fids, size, **kw)


def laf_scene(fid: str) -> str:
    """The scene folder ``NN_<scene>`` of a LostAndFound fid ``NN_<scene>_<seq>_<time>``."""
    return fid.rsplit("_", 2)[0]


def write_lost_and_found(root, folder: str, fids, size=SIZE, *, ext: str = "png",
                         start: int = 0, alpha_for=()) -> dict:
    """LostAndFound ``root/leftImg8bit/<folder>/<scene>/{fid}_leftImg8bit.<ext>``,
    ``root/gtCoarse/<folder>/<scene>/{fid}_gtCoarse_labelIds.png`` and ``_instanceIds.png``
    (16-bit). Images of the fids in ``alpha_for`` get an alpha channel. Returns ``{fid:
    (rgb, raw_label)}`` with index ``start + position``."""
    written = {}
    for i, fid in enumerate(fids, start):
        rgb, raw = rgb_pattern(i, size), cycle_pattern(i, LAF_RAW_VALUES, size)
        scene = laf_scene(fid)
        write_image(os.path.join(root, "leftImg8bit", folder, scene,
                                 f"{fid}_leftImg8bit.{ext}"),
                    rgba(rgb, i) if fid in alpha_for else rgb)
        gt = os.path.join(root, "gtCoarse", folder, scene, fid)
        write_image(gt + "_gtCoarse_labelIds.png", raw)
        inst = ((raw >= 2) & (raw <= 200)).astype(np.uint16) * np.uint16(1000 + i)
        Image.fromarray(inst).save(gt + "_gtCoarse_instanceIds.png")
        written[fid] = (rgb, raw)
    return written


#: Raw values of the Fishyscapes label fixtures (already 0 / 1 / 255).
FISHY_VALUES = (0, 1, 255)


def write_fishyscapes(root, fids, size=SIZE, values=FISHY_VALUES) -> dict:
    """Fishyscapes LAF ``root/labels/val/{fid}_fishy-labels.png``; returns ``{fid: label}``."""
    out = {}
    for i, fid in enumerate(fids):
        lab = cycle_pattern(i, values, size)
        write_image(os.path.join(root, "labels", "val", f"{fid}_fishy-labels.png"), lab)
        out[fid] = lab
    return out
