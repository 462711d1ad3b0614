"""KITTI raw loaders for training (monocular triplets, stereo pairs) and Eigen evaluation.

On-disk layout (the official raw download, unchanged)::

    <root>/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt
    <root>/<date>/<date>_drive_<nnnn>_sync/image_02/data/<10-digit frame>.png   left  (cam 2)
    <root>/<date>/<date>_drive_<nnnn>_sync/image_03/data/<10-digit frame>.png   right (cam 3)
    <root>/<date>/<date>_drive_<nnnn>_sync/velodyne_points/data/<frame>.bin     float32 x,y,z,r
    <root>/<date>/<drive>_sync/proj_depth/groundtruth/image_02/<frame>.png      improved gt

The improved ground truth (uint16 PNG, value / 256 = metres, 0 = no data) may instead sit in
the KITTI depth-completion layout, ``<gt_root>/{train,val}/<drive>_sync/proj_depth/
groundtruth/image_0x/<frame>.png`` — pass ``gt_root``.

Conventions (Monodepth2 / Poggi protocol):

- Images: PIL, ``.convert("RGB")``, resized with LANCZOS (antialias) to ``height×width``,
  float32 in [0, 1], ``[H, W, 3]``.
- Intrinsics ``intrinsics="calib"`` (default): per sequence from ``P_rect_02`` (``P_rect_03``
  for right images), normalised by the rectified size ``S_rect_0x``; ``"monodepth2"``: the
  fixed ``[[0.58, 0, 0.5], [0, 1.92, 0.5]]``. Samples carry ``K_norm`` and ``K`` in pixels
  of the requested ``height×width`` (``K[0] *= width``, ``K[1] *= height``, as Monodepth2).
- Stereo: ``stereo_T`` is the 4×4 target→other-camera transform in Monodepth2 units, the
  identity with ``t_x = -0.1`` for a left target and ``+0.1`` for a right one (a flip
  augmentation negates it, see :func:`augment`). The metric baseline from the calibration
  (≈0.532 m; the nominal rig is 0.54 m, hence the ×5.4 stereo scale) is ``stereo_baseline``.
- Sequence ends (``sequence_ends="clamp"``, default): a neighbour index outside the
  sequence's frame range (first..last file in ``image_0x/data``) is clamped to it (so the
  neighbour equals the target and, with auto-masking, adds ~no loss), and
  ``frames_valid[k]`` is False. ``"error"`` raises instead (Monodepth2 itself simply
  assumes every neighbour of its lists exists).
- Evaluation ground truth: ``eigen_benchmark`` reads the improved PNGs; ``eigen`` projects
  the velodyne scan into the image exactly as Monodepth2's ``generate_depth_map`` with
  ``vel_depth=True`` (the depth stored is the velodyne x coordinate, which is what the
  published ``gt_depths.npz`` contain); ``velodyne_depth="z"`` uses camera z instead.
- Supervised training ground truth (:class:`KittiDepthTrain`) at the network size
  ``H×W`` without averaging: velodyne points are projected straight to ``H×W``
  (:func:`project_velodyne_resized`, camera-z depth by default), improved-gt PNGs are
  reduced with :func:`resize_sparse_depth` (the minimum valid depth of the native pixels
  whose centres fall in an output pixel) — in both, the nearest surface wins a pixel.
- Masks (docs/protocols.md): ``eigen_benchmark`` gt > 0, no crop; ``eigen`` 1e-3 < gt < 80 and
  the Garg crop (rows ``[0.40810811 h, 0.99189189 h)``, cols ``[0.03594771 w, 0.96405229 w)``,
  truncated to int).

Native ground-truth sizes differ per date (375×1242, 370×1226, 374×1238, 376×1241), so test
batches need ``batch_size=1`` or ``KittiTest(pad_to=(376, 1242))`` — padding is zeros with
``mask`` False, and ``meta["native_size"]`` holds the true ``(h, w)`` to crop back before
resizing predictions to it.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from .pipeline import color_jitter
from .splits import KITTI_SPLITS, SplitEntry, read_split

__all__ = [
    "KITTI_BASELINE_M", "MONODEPTH2_STEREO_TX", "STEREO_SCALE", "MONODEPTH2_K_NORM",
    "GARG_CROP", "MIN_DEPTH", "MAX_DEPTH", "KittiCalib", "KittiRaw", "KittiTest",
    "read_calib_file", "load_calib", "read_velodyne", "read_depth_png", "load_image",
    "velodyne_depth_map", "project_velodyne", "garg_crop_mask", "eval_mask", "scale_intrinsics",
    "image_path", "velodyne_path", "improved_gt_candidates", "augment", "stereo_transform",
    "make_test_sample", "to_network_image", "KittiDepthTrain", "project_velodyne_resized",
    "resize_sparse_depth",
]

KITTI_BASELINE_M = 0.54          #: nominal stereo baseline of the KITTI rig (metres)
MONODEPTH2_STEREO_TX = 0.1       #: |t_x| of Monodepth2's stereo_T (network units)
STEREO_SCALE = KITTI_BASELINE_M / MONODEPTH2_STEREO_TX  #: 5.4, stereo models' depth scale
MONODEPTH2_K_NORM = np.array([[0.58, 0, 0.5], [0, 1.92, 0.5], [0, 0, 1]], np.float32)
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)  #: rows/cols, fractions
MIN_DEPTH, MAX_DEPTH = 1e-3, 80.0
_CAM = {"l": 2, "r": 3}


# ----------------------------------------------------------------------------- paths
def image_path(root: str, folder: str, frame: int, side: str, ext: str = ".png") -> str:
    """``<root>/<folder>/image_0{2,3}/data/<10-digit frame><ext>``."""
    return os.path.join(root, folder, f"image_0{_CAM[side]}", "data", f"{frame:010d}{ext}")


def velodyne_path(root: str, folder: str, frame: int) -> str:
    """``<root>/<folder>/velodyne_points/data/<10-digit frame>.bin``."""
    return os.path.join(root, folder, "velodyne_points", "data", f"{frame:010d}.bin")


def _date(folder: str) -> str:
    return folder.replace("\\", "/").split("/")[0]


def improved_gt_candidates(root: str, folder: str, side: str, gt_root: str | None = None
                           ) -> list[str]:
    """Directories that may hold a sequence's improved gt PNGs, in search order."""
    sub = os.path.join("proj_depth", "groundtruth", f"image_0{_CAM[side]}")
    if gt_root is None:
        return [os.path.join(root, folder, sub)]
    drive = folder.replace("\\", "/").split("/")[-1]
    return [os.path.join(gt_root, "train", drive, sub), os.path.join(gt_root, "val", drive, sub),
            os.path.join(gt_root, drive, sub), os.path.join(gt_root, folder, sub)]


# ----------------------------------------------------------------------------- readers
def read_calib_file(path: str) -> dict[str, np.ndarray]:
    """Parse a KITTI calib text file (``key: v1 v2 ...``) into float64 arrays.

    Non-numeric values (``calib_time``) are skipped. Missing -> FileNotFoundError."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"expected KITTI calibration file {path}")
    out: dict[str, np.ndarray] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if ":" not in line:
                raise ValueError(f"{path}:{n}: expected 'key: values', got {line.strip()!r}")
            key, value = line.split(":", 1)
            try:
                out[key.strip()] = np.array([float(v) for v in value.split()], np.float64)
            except ValueError:
                pass  # e.g. calib_time: 09-Jan-2012 13:57:47
    return out


def _take(d: dict, path: str, key: str, n: int, what: str) -> np.ndarray:
    if key not in d:
        raise ValueError(f"{path}: missing key {key!r} (expected {n} numbers: {what})")
    v = d[key]
    if v.size != n or not np.all(np.isfinite(v)):
        raise ValueError(f"{path}: key {key!r} expected {n} finite numbers ({what}), "
                         f"got {v.size}: {v.tolist()[:13]}")
    return v


@dataclass(frozen=True)
class KittiCalib:
    """Calibration of one recording date.

    ``P_rect[cam]`` [3,4] (cam 0..3), ``R_rect_00`` [3,3], ``size[cam]`` = (h, w) of the
    rectified images, ``R`` [3,3] / ``T`` [3] velodyne->cam0 (None without velo calib)."""

    P_rect: dict
    R_rect_00: np.ndarray
    size: dict
    R: np.ndarray | None = None
    T: np.ndarray | None = None
    path: str = ""

    def K_norm(self, cam: int = 2) -> np.ndarray:
        """[3,3] float32 intrinsics normalised by the rectified width/height."""
        h, w = self.size[cam]
        K = np.eye(3, dtype=np.float64)
        K[:2, :3] = self.P_rect[cam][:2, :3]
        K[0] /= w
        K[1] /= h
        return K.astype(np.float32)

    @property
    def baseline(self) -> float:
        """Metric baseline between cam 2 and cam 3 from ``P_rect`` (metres, ≈0.532)."""
        return float((self.P_rect[2][0, 3] - self.P_rect[3][0, 3]) / self.P_rect[2][0, 0])

    def velo_to_image(self, cam: int = 2) -> np.ndarray:
        """[3,4] ``P_rect_0cam @ R_cam2rect @ [R|T; 0 0 0 1]``: velodyne -> image (homog.)."""
        if self.R is None:
            raise ValueError(f"no velodyne calibration loaded for {self.path}")
        velo2cam = np.eye(4)
        velo2cam[:3, :3], velo2cam[:3, 3] = self.R, self.T
        rect = np.eye(4)
        rect[:3, :3] = self.R_rect_00
        return self.P_rect[cam] @ rect @ velo2cam


def load_calib(calib_dir: str, velodyne: bool = True) -> KittiCalib:
    """Read ``calib_cam_to_cam.txt`` (and ``calib_velo_to_cam.txt``) of a date folder."""
    p = os.path.join(calib_dir, "calib_cam_to_cam.txt")
    c = read_calib_file(p)
    P = {cam: _take(c, p, f"P_rect_0{cam}", 12, "3x4 rectified projection").reshape(3, 4)
         for cam in (2, 3)}
    for cam in (0, 1):
        if f"P_rect_0{cam}" in c:
            P[cam] = _take(c, p, f"P_rect_0{cam}", 12, "3x4 rectified projection").reshape(3, 4)
    R_rect = _take(c, p, "R_rect_00", 9, "3x3 rectifying rotation").reshape(3, 3)
    size = {}
    for cam in P:
        key = f"S_rect_0{cam}" if f"S_rect_0{cam}" in c else "S_rect_02"
        w, h = _take(c, p, key, 2, "rectified image width height")
        size[cam] = (int(h), int(w))
    R = T = None
    if velodyne:
        pv = os.path.join(calib_dir, "calib_velo_to_cam.txt")
        v = read_calib_file(pv)
        R = _take(v, pv, "R", 9, "3x3 velodyne->camera rotation").reshape(3, 3)
        T = _take(v, pv, "T", 3, "velodyne->camera translation (m)")
    return KittiCalib(P, R_rect, size, R, T, calib_dir)


def read_velodyne(path: str) -> np.ndarray:
    """[N, 4] float32 (x forward, y left, z up in metres, reflectance) from a ``.bin``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"expected KITTI velodyne scan {path} "
                                "(velodyne_points/data/<frame>.bin, float32 x,y,z,r)")
    raw = np.fromfile(path, dtype=np.float32)
    if raw.size % 4:
        raise ValueError(f"{path}: velodyne scan must hold float32 quadruples (x,y,z,r); "
                         f"got {raw.size} floats")
    return raw.reshape(-1, 4)


def read_depth_png(path, what: str = "improved ground truth") -> np.ndarray:
    """[h, w] float32 metres from a KITTI uint16 depth PNG (value / 256; 0 = no data).

    ``path``: a file path, or the PNG's bytes (then ``what`` names it in errors)."""
    if isinstance(path, (bytes, bytearray)):
        src, name = io.BytesIO(path), what
    else:
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"expected KITTI {what} {path} "
                                    "(proj_depth/groundtruth/image_0x/<frame>.png, uint16/256 m)")
        src, name = path, path
    with Image.open(src) as im:
        a = np.asarray(im)
    if a.ndim != 2 or a.dtype not in (np.uint16, np.int32) or a.max(initial=0) > 65535:
        raise ValueError(f"{name}: expected a single-channel uint16 depth PNG, got "
                         f"{a.dtype} {a.shape}")
    return (a.astype(np.float32) / 256.0)


def to_network_image(image, height: int | None = None, width: int | None = None) -> np.ndarray:
    """float32 [H, W, 3] in [0, 1] from a PIL image or uint8 array, resized with LANCZOS
    (PIL's antialias filter, as Monodepth2) when ``height×width`` differs."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    im = im.convert("RGB")
    if height is not None and (im.height, im.width) != (height, width):
        im = im.resize((width, height), Image.LANCZOS)
    return np.asarray(im, np.float32) / 255.0


def load_image(path: str, height: int | None = None, width: int | None = None,
               what: str = "image", hint: str = "") -> tuple[np.ndarray, tuple[int, int]]:
    """(float32 [H, W, 3] in [0, 1] resized with LANCZOS, native (h, w)).

    Missing -> FileNotFoundError "expected KITTI <what> <path> (<hint>)"."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"expected KITTI {what} {path}" + (f" ({hint})" if hint else ""))
    with Image.open(path) as im:
        return to_network_image(im, height, width), (im.height, im.width)


def project_velodyne(points: np.ndarray, P_velo2im: np.ndarray, size: tuple[int, int],
                     vel_depth: bool = False) -> np.ndarray:
    """Sparse depth map [h, w] float32 (metres, 0 = no point) from velodyne points [N, >=3].

    Monodepth2's ``generate_depth_map``: keep x >= 0, project with ``P_velo2im``, divide by
    the projected depth, pixel = ``round(u) - 1`` / ``round(v) - 1`` (half to even), keep
    those inside the image, the nearest point wins a pixel, negative depths become 0.
    ``vel_depth`` stores the velodyne x instead of camera z (Monodepth2's eval export)."""
    uv, d = _project_points(points, P_velo2im, vel_depth)
    return _nearest_map(np.round(uv[:, 0]) - 1, np.round(uv[:, 1]) - 1, d, size)


def _project_points(points, P_velo2im, vel_depth: bool):
    """Image coordinates `[N, 2]` and depths `[N]` of the velodyne points with x >= 0 that
    project to finite coordinates (camera z, or the velodyne x with `vel_depth`)."""
    pts = np.asarray(points, np.float64)
    pts = pts[pts[:, 0] >= 0]
    hom = np.concatenate([pts[:, :3], np.ones((len(pts), 1))], axis=1)
    im = hom @ np.asarray(P_velo2im, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = im[:, :2] / im[:, 2:3]
    d = pts[:, 0] if vel_depth else im[:, 2]
    ok = np.all(np.isfinite(uv), axis=1)
    return uv[ok], d[ok]


def _nearest_map(u, v, d, size) -> np.ndarray:
    """The float32 map `[h, w]` where each pixel (v, u) inside keeps its nearest depth
    (0: no point; negative depths become 0)."""
    h, w = size
    inside = (u >= 0) & (v >= 0) & (u < w) & (v < h)
    depth = np.full((h, w), np.inf)
    np.minimum.at(depth, (v[inside].astype(np.int64), u[inside].astype(np.int64)), d[inside])
    depth[np.isinf(depth)] = 0.0
    depth[depth < 0] = 0.0
    return depth.astype(np.float32)


def velodyne_depth_map(calib_dir: str, velo_file: str, cam: int = 2, vel_depth: bool = False,
                       calib: KittiCalib | None = None) -> np.ndarray:
    """[h, w] float32 velodyne depth for camera ``cam`` at its rectified size (metres)."""
    calib = calib or load_calib(calib_dir)
    return project_velodyne(read_velodyne(velo_file), calib.velo_to_image(cam), calib.size[cam],
                            vel_depth)


def project_velodyne_resized(points: np.ndarray, P_velo2im: np.ndarray,
                             native_size: tuple[int, int], size: tuple[int, int],
                             vel_depth: bool = False) -> np.ndarray:
    """Sparse depth map [H, W] float32 (metres, 0 = no point) of velodyne points projected
    straight to ``size = (H, W)``, for images resized from ``native_size = (h, w)``.

    As :func:`project_velodyne` (x >= 0, nearest point wins, negative depths -> 0), with the
    native pixel coordinate of a point ``(u - 1, v - 1)`` (Monodepth2's ``round(u) - 1``:
    pixel centres at integers) mapped by the resize's pixel-area rule: output column
    ``floor((u - 0.5) · W / w)``, row ``floor((v - 0.5) · H / h)`` — the output pixel whose
    area (the native area PIL's resize maps onto it) contains the point. No depth is ever
    averaged or interpolated. At ``size == native_size`` this *is* :func:`project_velodyne`
    (identical, ties included)."""
    H, W = (int(x) for x in size)
    h, w = (int(x) for x in native_size)
    if (H, W) == (h, w):
        return project_velodyne(points, P_velo2im, (h, w), vel_depth)
    uv, d = _project_points(points, P_velo2im, vel_depth)
    return _nearest_map(np.floor((uv[:, 0] - 0.5) * (W / w)), np.floor((uv[:, 1] - 0.5) * (H / h)),
                        d, (H, W))


def resize_sparse_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sparse depth map [h, w] (0 = no data) brought to ``height×width`` without averaging.

    Every valid native pixel (r, c) (depth > 0 and finite) goes to the output pixel whose
    area contains its centre, ``(floor((r + 0.5)·H/h), floor((c + 0.5)·W/w))``, and each
    output pixel keeps the *minimum* (nearest) of the depths it receives; output pixels that
    receive none are 0. For an integer factor this is the minimum valid depth of each
    ``h/H × w/W`` block; invalid pixels never enter a value. When upsampling, output pixels
    between native centres stay 0. Returns float32 [height, width]."""
    d = np.asarray(depth, np.float64)
    if d.ndim == 3 and d.shape[-1] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"expected a depth map [h, w] or [h, w, 1], got shape {depth.shape}")
    h, w = d.shape
    if (h, w) == (height, width):
        out = np.where(np.isfinite(d) & (d > 0), d, 0.0)
        return out.astype(np.float32)
    r, c = np.nonzero(np.isfinite(d) & (d > 0))
    rows = np.minimum(np.floor((r + 0.5) * (height / h)).astype(np.int64), height - 1)
    cols = np.minimum(np.floor((c + 0.5) * (width / w)).astype(np.int64), width - 1)
    out = np.full((height, width), np.inf)
    np.minimum.at(out, (rows, cols), d[r, c])
    out[np.isinf(out)] = 0.0
    return out.astype(np.float32)


def garg_crop_mask(h: int, w: int) -> np.ndarray:
    """bool [h, w]: True inside the Garg crop (Monodepth2's int-truncated bounds)."""
    r0, r1, c0, c1 = (np.array(GARG_CROP) * [h, h, w, w]).astype(np.int32)
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def eval_mask(depth: np.ndarray, crop: str = "none") -> np.ndarray:
    """Valid-pixel mask of a gt map [h, w(, 1)]: ``crop="garg"`` -> 1e-3 < gt < 80 & Garg
    crop (split ``eigen``); ``"none"`` -> gt > 0 (``eigen_benchmark``)."""
    d = depth[..., 0] if depth.ndim == 3 else depth
    if crop == "garg":
        m = (d > MIN_DEPTH) & (d < MAX_DEPTH) & garg_crop_mask(*d.shape)
    elif crop == "none":
        m = d > 0
    else:
        raise ValueError(f"crop must be 'garg' or 'none', got {crop!r}")
    return m.reshape(depth.shape)


def scale_intrinsics(K_norm: np.ndarray, height: int, width: int) -> np.ndarray:
    """[3,3] float32 pixel intrinsics at ``height×width`` from normalised ones."""
    K = np.array(K_norm, np.float32, copy=True)
    K[0] *= width
    K[1] *= height
    return K


def stereo_transform(side: str, flipped: bool = False) -> np.ndarray:
    """Monodepth2's ``stereo_T`` [4,4] float32: t_x = -0.1 (left) / +0.1 (right), negated
    by a horizontal flip."""
    T = np.eye(4, dtype=np.float32)
    T[0, 3] = (-1.0 if side == "l" else 1.0) * (-1.0 if flipped else 1.0) * MONODEPTH2_STEREO_TX
    return T


# ----------------------------------------------------------------------------- datasets
def _s(x) -> np.ndarray:
    return np.asarray(x, dtype=np.str_)


class _KittiBase:
    """Split entries + calib cache + validation shared by the training and test sets."""

    def __init__(self, root, split, subset, *, entries, image_ext, intrinsics, height, width,
                 skip_missing):
        self.root = os.fspath(root)
        if intrinsics not in ("calib", "monodepth2"):
            raise ValueError(f"intrinsics must be 'calib' or 'monodepth2', got {intrinsics!r}")
        for what, v in (("height", height), ("width", width)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                  or v <= 0):
                raise ValueError(f"{what} must be a positive integer (pixels) or None, got "
                                 f"{v!r}")
        self.intrinsics, self.image_ext = intrinsics, image_ext
        self.height, self.width = height, width
        self.split_name = "<entries>" if split is None else str(split)
        es = list(read_split(split, subset) if entries is None else
                  [SplitEntry(str(f), int(i), str(s)) for f, i, s in entries])
        lines = list(range(len(es)))
        if not es:
            raise ValueError(f"KITTI split {self.split_name}/{subset} is empty: nothing to load")
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"KITTI root {self.root} does not exist (expected the raw "
                                    "layout <root>/<date>/<date>_drive_<n>_sync/...)")
        seqs = sorted({e.folder for e in es})
        missing = [f for f in seqs if not os.path.isdir(os.path.join(self.root, f))]
        example = image_path(self.root, es[0].folder, es[0].frame, es[0].side, image_ext)
        if len(missing) == len(seqs):
            raise FileNotFoundError(
                f"none of the {len(seqs)} sequences of KITTI split {self.split_name}/{subset} "
                f"exist under {self.root}; expected e.g. {example}")
        self.skipped: list[SplitEntry] = []
        if missing and not skip_missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(seqs)} sequences of KITTI split {self.split_name}/"
                f"{subset} are missing under {self.root}, e.g. "
                f"{[os.path.join(self.root, m) for m in missing[:3]]}; "
                "pass skip_missing=True to drop their frames")
        if skip_missing:
            ok = [os.path.isdir(os.path.join(self.root, e.folder)) and os.path.isfile(
                image_path(self.root, e.folder, e.frame, e.side, image_ext)) and self._has_gt(e)
                for e in es]
            kept = [e for e, k in zip(es, ok) if k]
            lines = [n for n, k in zip(lines, ok) if k]
            self.skipped = [e for e, k in zip(es, ok) if not k]
            if not kept:
                raise FileNotFoundError(f"no frame of KITTI split {self.split_name}/{subset} "
                                        f"exists under {self.root}; expected e.g. {example}")
            if self.skipped:
                warnings.warn(f"KITTI {self.split_name}/{subset}: skipped {len(self.skipped)} of "
                              f"{len(es)} frames whose files are missing under {self.root}")
            es = kept
        self.entries: list[SplitEntry] = es
        self.lines: list[int] = lines  # line number of each entry in the split list
        self._calib: dict[tuple[str, bool], KittiCalib] = {}

    def _has_gt(self, e: SplitEntry) -> bool:
        return True

    def __len__(self) -> int:
        return len(self.entries)

    def calib(self, folder: str, velodyne: bool = False) -> KittiCalib:
        key = (_date(folder), velodyne)
        if key not in self._calib:
            self._calib[key] = load_calib(os.path.join(self.root, _date(folder)), velodyne)
        return self._calib[key]

    def k_norm(self, folder: str, side: str) -> np.ndarray:
        """[3,3] float32 normalised intrinsics of this sample (per ``intrinsics`` mode)."""
        if self.intrinsics == "monodepth2":
            return MONODEPTH2_K_NORM.copy()
        return self.calib(folder).K_norm(_CAM[side])

    def _image(self, folder, frame, side, what="target"):
        p = image_path(self.root, folder, frame, side, self.image_ext)
        name = "left" if side == "l" else "right"
        return load_image(p, self.height, self.width, f"{name} image",
                          f"{what}: image_0{_CAM[side]}/data/{frame:010d}{self.image_ext}")

    def _entry(self, i) -> SplitEntry:
        n = len(self.entries)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        return self.entries[i]


class KittiRaw(_KittiBase):
    """KITTI raw training source (monocular triplets and/or stereo pairs).

    Frames: the shipped list ``split``/``subset`` (default ``eigen_zhou``/``train``), a split
    file path, or ``entries`` = [(folder, frame, side), ...] (then ``split`` is only a label).

    ``__getitem__(i)`` -> dict:
      - ``image`` [H, W, 3] float32 in [0, 1]: target frame (``side`` of the split line)
      - ``frames`` {k: [H, W, 3]} for each non-zero k in ``frame_ids``; ``frames_valid``
        {k: bool ()} — False where the neighbour was clamped at a sequence end
      - ``stereo`` [H, W, 3] (other camera, same frame), ``stereo_T`` [4,4] float32 and
        ``stereo_baseline`` () float32 metres — when ``stereo=True``
      - ``K`` [3,3] float32 pixels at H×W, ``K_norm`` [3,3] float32
      - ``meta``: ``folder`` str, ``frame`` int32, ``side`` str, ``index`` int64 (line number
        in the split list),
        ``native_size`` int32 [2] (h, w)
    """

    def __init__(self, root, split=None, subset="train", *, height=192, width=640,
                 frame_ids: Sequence[int] = (0, -1, 1), stereo=False, intrinsics="calib",
                 sequence_ends="clamp", image_ext=".png", entries=None, skip_missing=False):
        if sequence_ends not in ("clamp", "error"):
            raise ValueError(f"sequence_ends must be 'clamp' or 'error', got {sequence_ends!r}")
        if 0 not in frame_ids:
            raise ValueError(f"frame_ids must contain 0 (the target), got {tuple(frame_ids)}")
        self.frame_ids, self.stereo, self.sequence_ends = tuple(frame_ids), stereo, sequence_ends
        if split is None and entries is None:
            split = "eigen_zhou"
        super().__init__(root, split, subset, entries=entries, image_ext=image_ext,
                         intrinsics=intrinsics, height=height, width=width,
                         skip_missing=skip_missing)
        self._nframes: dict[tuple[str, str], tuple[int, int]] = {}

    def frame_range(self, folder: str, side: str) -> tuple[int, int]:
        """(first, last) frame index of a sequence, from the files in ``image_0x/data``."""
        key = (folder, side)
        if key not in self._nframes:
            d = os.path.dirname(image_path(self.root, folder, 0, side, self.image_ext))
            if not os.path.isdir(d):
                raise FileNotFoundError(f"expected KITTI image folder {d}")
            idx = [int(f[:-len(self.image_ext)]) for f in os.listdir(d)
                   if f.endswith(self.image_ext) and f[:-len(self.image_ext)].isdigit()]
            if not idx:
                raise FileNotFoundError(f"no *{self.image_ext} frames in KITTI image folder {d}")
            self._nframes[key] = (min(idx), max(idx))
        return self._nframes[key]

    def __getitem__(self, i: int) -> dict:
        e = self._entry(i)
        img, native = self._image(e.folder, e.frame, e.side)
        K_norm = self.k_norm(e.folder, e.side)
        out = {"image": img, "K": scale_intrinsics(K_norm, self.height, self.width),
               "K_norm": K_norm}
        nbrs = [k for k in self.frame_ids if k != 0]
        if nbrs:
            out["frames"], out["frames_valid"] = {}, {}
            lo, hi = (self.frame_range(e.folder, e.side) if self.sequence_ends == "clamp"
                      else (-np.inf, np.inf))
            for k in nbrs:
                j = e.frame + k
                valid = True
                if not lo <= j <= hi:
                    j, valid = int(min(max(j, lo), hi)), False
                if j < 0:
                    raise FileNotFoundError(
                        f"neighbour {k:+d} of frame {e.frame} in {e.folder} is before the "
                        "sequence start (use sequence_ends='clamp')")
                try:
                    out["frames"][k] = self._image(e.folder, j, e.side, f"neighbour {k:+d}")[0]
                except FileNotFoundError as err:
                    raise FileNotFoundError(f"{err} — neighbour {k:+d} of frame {e.frame}; at a "
                                            "sequence end use sequence_ends='clamp'") from None
                out["frames_valid"][k] = np.asarray(valid)
        if self.stereo:
            other = "r" if e.side == "l" else "l"
            out["stereo"] = self._image(e.folder, e.frame, other, "stereo pair")[0]
            out["stereo_T"] = stereo_transform(e.side)
            out["stereo_baseline"] = np.float32(self.calib(e.folder).baseline)
        out["meta"] = {"folder": _s(e.folder), "frame": np.int32(e.frame), "side": _s(e.side),
                       "index": np.int64(self.lines[i]), "native_size": np.array(native, np.int32)}
        return out


class KittiTest(_KittiBase):
    """KITTI Eigen test source (``eigen_benchmark`` improved gt, or ``eigen`` velodyne gt).

    Frames: the shipped ``split`` (default ``eigen_benchmark``), a split file path, or
    ``entries`` = [(folder, frame, side), ...] (then ``split`` is only a label).

    ``__getitem__(i)`` -> dict:
      - ``image`` [H, W, 3] float32 in [0, 1] at the network resolution
      - ``depth`` [h, w, 1] float32 metres at native size (0 = invalid)
      - ``mask`` [h, w, 1] bool (docs/protocols.md rule of the split)
      - ``K`` [3,3] pixels at H×W, ``K_norm`` [3,3]
      - ``meta``: ``folder``, ``frame``, ``side``, ``index``, ``native_size`` int32 [2] (h, w)
    With ``pad_to=(ph, pw)``, ``depth``/``mask`` are zero-padded bottom/right to that size.

    ``gt``: ``"improved"`` (default except for ``eigen``) or ``"velodyne"`` (default for
    ``eigen``); ``crop``: ``"garg"`` (default for ``eigen``) or ``"none"``.
    """

    def __init__(self, root, split=None, *, height=192, width=640, gt_root=None,
                 gt=None, crop=None, velodyne_depth="x", intrinsics="calib", image_ext=".png",
                 pad_to=None, entries=None, skip_missing=False):
        if split is None and entries is None:
            split = "eigen_benchmark"
        is_eigen = str(split) == "eigen"
        self.gt = gt or ("velodyne" if is_eigen else "improved")
        self.crop = crop or ("garg" if is_eigen else "none")
        if self.gt not in ("improved", "velodyne"):
            raise ValueError(f"gt must be 'improved' or 'velodyne', got {self.gt!r}")
        if velodyne_depth not in ("x", "z"):
            raise ValueError(f"velodyne_depth must be 'x' or 'z', got {velodyne_depth!r}")
        self.vel_depth = velodyne_depth == "x"
        self.gt_root = None if gt_root is None else os.fspath(gt_root)
        self.pad_to = None if pad_to is None else tuple(pad_to)
        self._gt_dirs: dict[tuple[str, str], str] = {}
        subset = "test" if "test" in KITTI_SPLITS.get(str(split), ()) else "val"
        super().__init__(root, split, subset, entries=entries, image_ext=image_ext,
                         intrinsics=intrinsics, height=height, width=width,
                         skip_missing=skip_missing)

    def _has_gt(self, e: SplitEntry) -> bool:
        try:
            return os.path.isfile(self.gt_path(e))
        except FileNotFoundError:
            return False

    def gt_path(self, e: SplitEntry) -> str:
        """Path of the ground-truth file (improved PNG or velodyne .bin) of an entry."""
        if self.gt == "velodyne":
            return velodyne_path(self.root, e.folder, e.frame)
        key = (e.folder, e.side)
        if key not in self._gt_dirs:
            cands = improved_gt_candidates(self.root, e.folder, e.side, self.gt_root)
            found = [c for c in cands if os.path.isdir(c)]
            if not found:
                raise FileNotFoundError(
                    f"expected KITTI improved ground truth for {e.folder} in one of {cands} "
                    "(proj_depth/groundtruth/image_0x/<frame>.png; pass gt_root=<depth-"
                    "completion folder with train/ and val/> if you keep it apart)")
            self._gt_dirs[key] = found[0]
        return os.path.join(self._gt_dirs[key], f"{e.frame:010d}.png")

    def load_gt(self, e: SplitEntry) -> np.ndarray:
        """[h, w] float32 metres (0 = no data) at native size."""
        if self.gt == "velodyne":
            cal = self.calib(e.folder, velodyne=True)
            return velodyne_depth_map("", self.gt_path(e), _CAM[e.side], self.vel_depth, cal)
        return read_depth_png(self.gt_path(e))

    def __getitem__(self, i: int) -> dict:
        e = self._entry(i)
        img, _ = self._image(e.folder, e.frame, e.side)
        depth = self.load_gt(e)
        K_norm = self.k_norm(e.folder, e.side)
        return make_test_sample(img, depth, K_norm, self.height, self.width, self.crop,
                                self.pad_to, e, self.lines[i])


def make_test_sample(image: np.ndarray, depth: np.ndarray, K_norm: np.ndarray, height: int,
                     width: int, crop: str, pad_to, e: SplitEntry, index: int) -> dict:
    """Assemble a test sample (see :class:`KittiTest`) from loaded arrays."""
    h, w = depth.shape
    depth = depth[..., None].astype(np.float32)
    mask = eval_mask(depth, crop)
    if pad_to is not None:
        ph, pw = pad_to
        if h > ph or w > pw:
            raise ValueError(f"ground truth of {e.folder} frame {e.frame} is {h}x{w}, larger "
                             f"than pad_to={pad_to}")
        depth = np.pad(depth, ((0, ph - h), (0, pw - w), (0, 0)))
        mask = np.pad(mask, ((0, ph - h), (0, pw - w), (0, 0)))
    return {"image": image, "depth": depth, "mask": mask,
            "K": scale_intrinsics(K_norm, height, width), "K_norm": np.asarray(K_norm, np.float32),
            "meta": {"folder": _s(e.folder), "frame": np.int32(e.frame), "side": _s(e.side),
                     "index": np.int64(index), "native_size": np.array([h, w], np.int32)}}


# ----------------------------------------------------------------------------- augmentation
def augment(sample: dict, rng: np.random.Generator, flip_p: float = 0.5,
            jitter_p: float = 0.5) -> dict:
    """Monodepth2 training augmentation for a :class:`KittiRaw` sample (a Loader transform).

    With probability ``flip_p`` every image is flipped horizontally and ``stereo_T``'s t_x
    negated (``K`` is kept, as Monodepth2 does). With probability ``jitter_p`` one colour
    jitter (brightness, contrast, saturation in [0.8, 1.2], hue ±0.1) is drawn and applied
    to every image, written to ``image_aug`` / ``frames_aug`` / ``stereo_aug`` (the losses use
    the unjittered images); without jitter those keys are copies."""
    out = dict(sample)
    if rng.random() < flip_p:
        out["image"] = sample["image"][:, ::-1].copy()
        if "frames" in sample:
            out["frames"] = {k: v[:, ::-1].copy() for k, v in sample["frames"].items()}
        if "stereo" in sample:
            out["stereo"] = sample["stereo"][:, ::-1].copy()
            out["stereo_T"] = sample["stereo_T"].copy()
            out["stereo_T"][0, 3] *= -1
    if rng.random() < jitter_p:
        b, c, s = rng.uniform(0.8, 1.2, size=3)
        hue = rng.uniform(-0.1, 0.1)
        jit = lambda im: color_jitter(im, b, c, s, hue)  # noqa: E731
    else:
        jit = lambda im: im.copy()  # noqa: E731
    out["image_aug"] = jit(out["image"])
    if "frames" in out:
        out["frames_aug"] = {k: jit(v) for k, v in out["frames"].items()}
    if "stereo" in out:
        out["stereo_aug"] = jit(out["stereo"])
    return out


# ----------------------------------------------------------------------------- supervised training
class KittiDepthTrain(_KittiBase):
    """KITTI raw supervised training source: image and sparse metric depth, both at H×W.

    Frames: the shipped list ``split``/``subset`` (default ``eigen_full``/``train``: Eigen's
    training scenes, both cameras; every raw frame has a velodyne scan), a split file path,
    or ``entries`` = [(folder, frame, side), ...] (then ``split`` is only a label).

    ``__getitem__(i)`` -> dict:
      - ``image`` [H, W, 3] float32 in [0, 1] (LANCZOS resize, as :class:`KittiRaw`)
      - ``depth`` [H, W, 1] float32 metres, 0 = no data, never averaged across pixels:
        ``gt="velodyne"`` (default) projects the frame's scan straight to H×W with
        :func:`project_velodyne_resized` for the camera of ``side`` (P_rect_02 / _03);
        ``velodyne_depth="z"`` (default) stores camera z — the depth the networks predict
        and the geometry warps with (the evaluation's ``"x"``, the velodyne's forward
        coordinate, is ~0.27 m larger: the scanner sits behind the camera); raw scans
        also hold points the camera cannot see (occluded from its viewpoint, the reason
        the improved gt exists); ``gt="improved"`` reads
        the uint16 PNG (raw layout, or ``gt_root`` in the depth-completion layout) and
        reduces it with :func:`resize_sparse_depth` (minimum valid depth per output pixel)
      - ``K`` [3,3] float32 pixels at H×W, ``K_norm`` [3,3]
      - ``meta``: ``folder``, ``frame``, ``side``, ``index``, ``native_size`` int32 [2]

    Missing ground truth is checked when the source is built: with ``skip_missing=False``
    (default) a FileNotFoundError names the first missing file and how many there are;
    ``skip_missing=True`` drops those frames (and frames whose image is missing) with a
    warning. The improved gt has no PNG for the first and last 5 frames of each drive, so
    ``gt="improved"`` on a shipped list needs ``skip_missing=True``.
    """

    def __init__(self, root, split=None, subset="train", *, height=192, width=640,
                 gt="velodyne", gt_root=None, velodyne_depth="z", intrinsics="calib",
                 image_ext=".png", entries=None, skip_missing=False):
        if gt not in ("velodyne", "improved"):
            raise ValueError(f"gt must be 'velodyne' or 'improved', got {gt!r}")
        if velodyne_depth not in ("x", "z"):
            raise ValueError(f"velodyne_depth must be 'x' or 'z', got {velodyne_depth!r}")
        if split is None and entries is None:
            split = "eigen_full"
        self.gt, self.vel_depth = gt, velodyne_depth == "x"
        self.gt_root = None if gt_root is None else os.fspath(gt_root)
        self._gt_dirs: dict[tuple[str, str], str] = {}
        super().__init__(root, split, subset, entries=entries, image_ext=image_ext,
                         intrinsics=intrinsics, height=height, width=width,
                         skip_missing=skip_missing)
        if not skip_missing:
            missing = [e for e in self.entries if not self._has_gt(e)]
            if missing:
                e = missing[0]
                try:
                    first = self.gt_path(e)
                except FileNotFoundError as err:
                    first = str(err)
                kind = ("velodyne scan (velodyne_points/data/<frame>.bin)" if gt == "velodyne"
                        else "improved gt PNG (proj_depth/groundtruth/image_0x/<frame>.png)")
                raise FileNotFoundError(
                    f"{len(missing)} of {len(self.entries)} frames of KITTI split "
                    f"{self.split_name}/{subset} have no {kind} under {self.root}; first: "
                    f"{first} (frame {e.frame} of {e.folder}); pass skip_missing=True to drop "
                    "them" + ("" if gt == "velodyne" or gt_root else
                              ", or gt_root=<depth-completion folder with train/ and val/>"))

    gt_path = KittiTest.gt_path
    _has_gt = KittiTest._has_gt

    def load_gt(self, e: SplitEntry) -> np.ndarray:
        """[H, W] float32 metres (0 = no data) at the network size."""
        if self.gt == "velodyne":
            cal = self.calib(e.folder, velodyne=True)
            cam = _CAM[e.side]
            return project_velodyne_resized(read_velodyne(self.gt_path(e)),
                                            cal.velo_to_image(cam), cal.size[cam],
                                            (self.height, self.width), self.vel_depth)
        return resize_sparse_depth(read_depth_png(self.gt_path(e)), self.height, self.width)

    def __getitem__(self, i: int) -> dict:
        e = self._entry(i)
        img, native = self._image(e.folder, e.frame, e.side)
        K_norm = self.k_norm(e.folder, e.side)
        return {"image": img, "depth": self.load_gt(e)[..., None],
                "K": scale_intrinsics(K_norm, self.height, self.width), "K_norm": K_norm,
                "meta": {"folder": _s(e.folder), "frame": np.int32(e.frame),
                         "side": _s(e.side), "index": np.int64(self.lines[i]),
                         "native_size": np.array(native, np.int32)}}
