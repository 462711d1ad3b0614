"""Tiny KITTI-raw and NYU (FastDepth HDF5) trees in the real on-disk formats, for tests.

Nothing is downloaded: every file is written here, in the official layout and formats
(8-bit RGB PNGs, the calib text files, float32 velodyne ``.bin``, uint16 improved-gt PNGs,
FastDepth ``.h5`` with ``rgb`` [3,480,640] uint8 / ``depth`` [480,640] float32). Reusable by
any test: ``from kitti_fixtures import write_kitti_raw, write_nyu_tree``.

KITTI fixture camera (default 20×64 images): fx = fy = 40, cx = 32, cy = 10,
``P_rect_02[0,3] = fx·0.06``, ``P_rect_03[0,3] = -fx·0.4732`` (baseline 0.5332 m),
``R_rect_00 = I``; velodyne->cam ``R = [[0,-1,0],[0,0,-1],[1,0,0]]``, ``T = (0,-0.08,-0.27)``,
so a velodyne point (X, Y, Z) is at camera (-Y, -Z-0.08, X-0.27).

Each RGB image encodes its identity: red = (16·frame + 8·[right camera]) mod 256, green =
4·column, blue = 12·row (all uint8, exact at native size).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

DATE = "2011_09_26"
SIZE = (20, 64)                       # (h, w) of the tiny images
FX = FY = 40.0
CX, CY = 32.0, 10.0
T2, T3 = 0.06, -0.4732                # camera x offsets from cam 0 (m)
VELO_R = np.array([[0, -1, 0], [0, 0, -1], [1, 0, 0]], np.float64)
VELO_T = np.array([0.0, -0.08, -0.27])


def _fmt(values) -> str:
    return " ".join(f"{v:e}" for v in np.asarray(values, np.float64).ravel())


def cam_to_cam_text(size=SIZE, fx=FX, fy=FY, cx=CX, cy=CY, t2=T2, t3=T3,
                    R_rect=np.eye(3)) -> str:
    """``calib_cam_to_cam.txt`` in KITTI's format (unrectified K/D/R/T kept plausible)."""
    h, w = size
    lines = ["calib_time: 09-Jan-2012 13:57:47", "corner_dist: 9.950000e-02"]
    for cam, t in ((0, 0.0), (1, -0.5372), (2, t2), (3, t3)):
        K = np.array([[fx * 1.3, 0, cx + 1], [0, fy * 1.3, cy - 1], [0, 0, 1]])
        P = np.array([[fx, 0, cx, fx * t], [0, fy, cy, 0], [0, 0, 1, 0]])
        lines += [f"S_0{cam}: {_fmt([w + 8, h + 6])}", f"K_0{cam}: {_fmt(K)}",
                  f"D_0{cam}: {_fmt([-0.37, 0.2, 0.002, 0.001, -0.07])}",
                  f"R_0{cam}: {_fmt(np.eye(3))}", f"T_0{cam}: {_fmt([t, 0, 0])}",
                  f"S_rect_0{cam}: {_fmt([w, h])}",
                  f"R_rect_0{cam}: {_fmt(R_rect if cam == 0 else np.eye(3))}",
                  f"P_rect_0{cam}: {_fmt(P)}"]
    return "\n".join(lines) + "\n"


def velo_to_cam_text(R=VELO_R, T=VELO_T) -> str:
    """``calib_velo_to_cam.txt`` in KITTI's format."""
    return "\n".join(["calib_time: 15-Mar-2012 11:37:16", f"R: {_fmt(R)}", f"T: {_fmt(T)}",
                      "delta_f: 0.000000e+00 0.000000e+00",
                      "delta_c: 0.000000e+00 0.000000e+00"]) + "\n"


def write_calib(date_dir, size=SIZE, velo_R=VELO_R, velo_T=VELO_T, **kw) -> None:
    """Both calib files of a date folder (``kw``: see :func:`cam_to_cam_text`)."""
    os.makedirs(date_dir, exist_ok=True)
    with open(os.path.join(date_dir, "calib_cam_to_cam.txt"), "w") as f:
        f.write(cam_to_cam_text(size, **kw))
    with open(os.path.join(date_dir, "calib_velo_to_cam.txt"), "w") as f:
        f.write(velo_to_cam_text(velo_R, velo_T))


#: 2011_09_26 calibration values (rounded as printed in the KITTI files)
REAL_R_RECT = np.array([[9.999239e-01, 9.837760e-03, -7.445048e-03],
                        [-9.869795e-03, 9.999421e-01, -4.278459e-03],
                        [7.402527e-03, 4.351614e-03, 9.999631e-01]])
REAL_VELO_R = np.array([[7.533745e-03, -9.999714e-01, -6.166020e-04],
                        [1.480249e-02, 7.280733e-04, -9.998902e-01],
                        [9.998621e-01, 7.523790e-03, 1.480755e-02]])
REAL_VELO_T = np.array([-4.069766e-03, -7.631618e-02, -2.717806e-01])


def rgb_image(frame: int, side: str, size=SIZE) -> np.ndarray:
    """uint8 [h, w, 3] identifying (frame, side): see the module docstring."""
    h, w = size
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = (16 * frame + (8 if side == "r" else 0)) % 256
    img[..., 1] = (4 * np.arange(w))[None, :] % 256
    img[..., 2] = (12 * np.arange(h))[:, None] % 256
    return img


def gt_depth(frame: int, size=SIZE) -> np.ndarray:
    """float32 [h, w] metres on the 1/256 grid, with zeros (no data) and values > 80 m."""
    h, w = size
    r, c = np.mgrid[:h, :w]
    d = 0.5 + ((r * w + c + 7 * frame) % 97) * 0.9  # 0.5 .. 86.9 m
    d = np.round(d * 256) / 256
    d[(r + c + frame) % 5 == 0] = 0.0
    return d.astype(np.float32)


def write_png(path, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def write_depth_png(path, depth_m: np.ndarray) -> None:
    """KITTI improved-gt format: uint16 PNG, value = round(metres · 256), 0 = no data."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.round(depth_m * 256).astype(np.uint16)).save(path)


def write_velodyne(path, points: np.ndarray) -> None:
    """KITTI velodyne scan: float32 (x, y, z, reflectance) records, no header."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.asarray(points, np.float32).reshape(-1, 4).tofile(path)


def velodyne_points() -> tuple[np.ndarray, dict]:
    """A handful of velodyne points and the depth map entries they must give.

    Hand computation with the fixture calib (camera = (-Y, -Z-0.08, X-0.27),
    u = (40 xc + 32 zc + 2.4) / zc, v = (40 yc + 10 zc) / zc, pixel = round(.) - 1):

    - A (10.27, -1, -1.08): zc = 10, u = 4 + 32 + 0.24 = 36.24 -> col 35; v = 4 + 10 = 14
      -> row 13; depth z = 10, velodyne x = 10.27.
    - B (20.27, -2, -2.08): zc = 20, u = 2·2 + 32 + 0.12 = 36.12 -> col 35, v = 2·2 + 10 =
      14 -> row 13: same pixel as A but farther, so A (the nearest) must win.
    - C (10.27, 7.91, -0.08): zc = 10, u = -31.64 + 32.24 = 0.6 -> round 1 -> col 0;
      v = 10 -> row 9; depth 10 / 10.27 (outside the Garg crop: col 0 < int(0.036·64) = 2).
    - D (10.27, 7.96, -0.08): u = 0.4 -> round 0 -> col -1: dropped.
    - E (-10.27, 1, -1.08): behind (x < 0): dropped although it would project inside.
    - F (10.27, -20, 0): u = 112.24: outside the image, dropped.
    Returns (points [6, 4] float32, {(row, col): (depth_z, depth_x)}).
    """
    pts = np.array([[10.27, -1, -1.08, 0.5], [20.27, -2, -2.08, 0.1],
                    [10.27, 7.91, -0.08, 0.3], [10.27, 7.96, -0.08, 0.3],
                    [-10.27, 1, -1.08, 0.9], [10.27, -20, 0, 0.2]], np.float32)
    return pts, {(13, 35): (10.0, 10.27), (9, 0): (10.0, 10.27)}


def random_velodyne_points(n: int, seed: int = 0, size=SIZE, depth=(2.0, 70.0),
                           fx=FX, fy=FY, cx=CX, cy=CY, t=T2) -> np.ndarray:
    """``n`` float32 velodyne records (x, y, z, r) for the fixture calib: about 80 % of them
    project inside the ``size`` image of the camera with x offset ``t`` (default cam 2) at
    camera depth z in ``depth``, the rest lie behind the scanner (x < 0) or outside the
    image. Inverse of ``u = (fx xc + cx zc + fx t) / zc``, ``v = (fy yc + cy zc) / zc`` and
    camera = (-Y, -Z - 0.08, X - 0.27)."""
    rng = np.random.default_rng(seed)
    h, w = size
    u = rng.uniform(-0.2 * w, 1.2 * w, n)
    v = rng.uniform(0.0, h + 1.0, n)
    zc = rng.uniform(*depth, n)
    xc = ((u - cx) * zc - fx * t) / fx
    yc = (v - cy) * zc / fy
    X, Y, Z = zc + 0.27, -xc, -yc - 0.08
    behind = rng.random(n) < 0.1
    X = np.where(behind, -X, X)
    return np.stack([X, Y, Z, rng.uniform(0, 1, n)], 1).astype(np.float32)


@dataclass
class KittiTree:
    root: str
    date: str
    folder: str                      # "<date>/<date>_drive_<nnnn>_sync"
    frames: list
    size: tuple
    images: dict = field(default_factory=dict)   # (side, frame) -> uint8 [h, w, 3]
    gt: dict = field(default_factory=dict)       # (side, frame) -> float32 [h, w]
    gt_dir: dict = field(default_factory=dict)   # side -> folder of the improved gt PNGs

    def entries(self, frames=None, side="l"):
        return [(self.folder, f, side) for f in (self.frames if frames is None else frames)]


def write_kitti_raw(root, *, date=DATE, drive=2, frames=range(5), size=SIZE, sides="lr",
                    velodyne=True, improved_gt=True, gt_frames=None, gt_root=None,
                    gt_subset="train", image_ext=".png", write_calib_files=True) -> KittiTree:
    """Write one tiny KITTI raw sequence ``<root>/<date>/<date>_drive_<drive:04d>_sync``.

    ``velodyne``: each frame gets :func:`velodyne_points`. ``improved_gt``: uint16 PNGs of
    :func:`gt_depth` for ``gt_frames`` (default: all but the first and last frame, like
    the real data) in the raw layout, or — with ``gt_root`` — in the
    depth-completion layout ``<gt_root>/<gt_subset>/<drive>_sync/proj_depth/...``."""
    root = os.fspath(root)
    frames = list(frames)
    drive_name = f"{date}_drive_{drive:04d}_sync"
    folder = f"{date}/{drive_name}"
    tree = KittiTree(root, date, folder, frames, tuple(size))
    if write_calib_files:
        write_calib(os.path.join(root, date), size)
    for side in sides:
        cam = 2 if side == "l" else 3
        for f in frames:
            img = rgb_image(f, side, size)
            tree.images[(side, f)] = img
            write_png(os.path.join(root, folder, f"image_0{cam}", "data", f"{f:010d}{image_ext}"),
                      img)
        if improved_gt:
            base = (os.path.join(root, folder) if gt_root is None else
                    os.path.join(os.fspath(gt_root), gt_subset, drive_name))
            tree.gt_dir[side] = os.path.join(base, "proj_depth", "groundtruth", f"image_0{cam}")
            for f in (frames[1:-1] if gt_frames is None else gt_frames):
                d = gt_depth(f, size)
                tree.gt[(side, f)] = d
                write_depth_png(os.path.join(tree.gt_dir[side], f"{f:010d}.png"), d)
    if velodyne:
        pts, _ = velodyne_points()
        for f in frames:
            write_velodyne(os.path.join(root, folder, "velodyne_points", "data", f"{f:010d}.bin"),
                           pts)
    return tree


def write_split(path, entries) -> str:
    """Split file in the Monodepth2 format (``<folder> <frame> <side>`` per line)."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    with open(path, "w") as f:
        for folder, frame, side in entries:
            f.write(f"{folder} {frame} {side}\n")
    return os.fspath(path)


# ----------------------------------------------------------------------------- NYU
NYU_SHAPE = (480, 640)


def nyu_arrays(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 [3, 480, 640], depth float32 [480, 640]) — deterministic, with pixel
    identity: rgb[0] = (row + seed) % 256, rgb[1] = col % 256, rgb[2] = seed;
    depth = 0.5 + 0.01·row + 0.001·col + seed, zero in column 33 and 12 m in row 17 (the
    evaluation resize ×0.5 keeps odd rows/cols, so these land on crop row 0 / col 0)."""
    h, w = NYU_SHAPE
    r, c = np.mgrid[:h, :w]
    rgb = np.stack([(r + seed) % 256, c % 256, np.full((h, w), seed % 256)]).astype(np.uint8)
    depth = (0.5 + 0.01 * r + 0.001 * c + seed).astype(np.float32)
    depth[:, 33] = 0.0
    depth[17] = 12.0
    return rgb, depth


def write_nyu_h5(path, rgb: np.ndarray, depth: np.ndarray) -> str:
    """One FastDepth-style ``.h5``: datasets ``rgb`` and ``depth`` as given."""
    import h5py

    os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("rgb", data=rgb)
        f.create_dataset("depth", data=depth)
    return os.fspath(path)


def write_nyu_tree(root, n_val=3, train=(("bathroom_0001", 2), ("kitchen_0002", 1))) -> dict:
    """``<root>/val/official/0000k.h5`` and ``<root>/train/<scene>/0000k.h5``.

    Returns {relative path: seed} (seed = arguments of :func:`nyu_arrays`)."""
    root = os.fspath(root)
    written, seed = {}, 0
    for k in range(1, n_val + 1):
        rel = os.path.join("val", "official", f"{k:05d}.h5")
        write_nyu_h5(os.path.join(root, rel), *nyu_arrays(seed))
        written[rel], seed = seed, seed + 1
    for scene, n in train:
        for k in range(1, n + 1):
            rel = os.path.join("train", scene, f"{k:05d}.h5")
            write_nyu_h5(os.path.join(root, rel), *nyu_arrays(seed))
            written[rel], seed = seed, seed + 1
    return written
