"""A tiny DrivingStereo tree in the release's on-disk format, for tests.

Nothing is downloaded: every file is written here, as the extracted official zips lay them
out — ``<split>-left-image/<seq>/<seq>_<timestamp>.jpg`` (8-bit RGB JPEG), the same
basename under ``<split>-right-image/<seq>/``, and uint16 PNGs under
``<split>-depth-map/<seq>/`` (depth · 256) and ``<split>-disparity-map/<seq>/``
(disparity · 256). The test split uses the release's folder names
(``test-left-image/left-image-half-size/`` ...).

Images (default 40×88): flat colours so JPEG keeps them to a few levels — red =
40 + 60·frame, green = 200 on the left / 80 on the right, blue = 30 + 100·sequence
number. Depth: :func:`depth_values` (uint16 with some zeros, exact); disparity:
``DISP_PX · 256`` wherever depth is valid.

Usage: ``from drivingstereo_fixtures import write_drivingstereo``.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

SIZE = (40, 88)                      # (h, w) of the tiny frames
SEQUENCES = ("2018-07-11-14-48-52", "2018-07-16-15-18-53")
STAMPS = ("2018-07-11-14-50-08-769", "2018-07-11-14-50-08-869")
DISP_PX = 12.5                       # disparity (px) of every valid pixel


def frame_name(seq: str, k: int) -> str:
    return f"{seq}_{STAMPS[k]}"


def image_colour(s: int, k: int, right: bool) -> tuple[int, int, int]:
    return (40 + 60 * k, 80 if right else 200, 30 + 100 * s)


def depth_values(s: int, k: int, size=SIZE) -> np.ndarray:
    """uint16 [h, w]: value = 256·(2 + s + k) + 16·col + row (metres = value / 256), with
    row 0 and column 0 invalid (0)."""
    h, w = size
    r, c = np.mgrid[0:h, 0:w]
    v = 256 * (2 + s + k) + 16 * c + r
    v[0, :] = 0
    v[:, 0] = 0
    return v.astype(np.uint16)


def _png16(path: str, a: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(a, np.uint16)).save(path)
    with Image.open(path) as im:       # the file really is 16-bit
        assert im.mode.startswith("I"), im.mode


def _jpg(path: str, colour, size) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (size[1], size[0]), tuple(colour)).save(path, quality=95)


def write_drivingstereo(root, split: str = "train", size=SIZE, sequences=SEQUENCES,
                        frames: int = 2, right: bool = True, depth: bool = True,
                        disparity: bool = True) -> dict:
    """Write ``len(sequences)`` × ``frames`` frames of ``split`` under ``root``.

    Returns ``{(s, k): basename}``. The test split gets the release's single folder per
    kind (``left-image-half-size`` ...), with every frame's name from every sequence."""
    root = os.fspath(root)
    names = {}
    for s, seq in enumerate(sequences):
        for k in range(frames):
            name = frame_name(seq, k)
            names[(s, k)] = name
            folder = seq if split == "train" else "{}-half-size"
            sub = (lambda kind: folder if split == "train" else folder.format(kind))
            _jpg(os.path.join(root, f"{split}-left-image", sub("left-image"), name + ".jpg"),
                 image_colour(s, k, False), size)
            if right:
                _jpg(os.path.join(root, f"{split}-right-image", sub("right-image"),
                                  name + ".jpg"), image_colour(s, k, True), size)
            d = depth_values(s, k, size)
            if depth:
                _png16(os.path.join(root, f"{split}-depth-map", sub("depth-map"),
                                    name + ".png"), d)
            if disparity:
                _png16(os.path.join(root, f"{split}-disparity-map", sub("disparity-map"),
                                    name + ".png"),
                       np.where(d > 0, int(DISP_PX * 256), 0))
    return names
