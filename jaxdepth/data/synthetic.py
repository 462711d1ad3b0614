"""Procedural street scenes: KITTI-like images with exact depth, labels, stereo and motion.

Every sample is a pure function of ``(seed, split, index, options)``, rendered by ray
casting analytic primitives in JAX (jit-compiled, batched):

- a road plane (``y = camera_height`` in camera coordinates: x right, y down, z forward)
  with dashed centre line, edge lines, tyre tracks and optional parking strips; kerbs;
  raised sidewalks with paving slabs;
- building facades (axis-aligned boxes with floors, windows, shop fronts, stone blocks,
  cornices) at varying setbacks, with gaps;
- cars (body box + cabin box) with windows, painted wheels, lights and number plates,
  parked and in both lanes; poles (vertical cylinders); trees (trunk cylinder + ellipsoid
  crown); sky (gradient + clouds on a plane at infinity) beyond the depth cap;
- with ``anomalies=True`` (default only for split ``"ood"``): objects no training class
  has, on the road (a checker/zebra/dotted box, a sphere, an animal-like pair of
  ellipsoids, a cone) in neon colours, labelled ``ANOMALY``.

Textures are analytic functions of the hit point in the primitive's own frame (world
coordinates for static things, box coordinates for cars, so they move with the car),
antialiased by the pixel footprint; shading is Lambertian (sun + hemispheric ambient,
per-scene sun direction, colour temperature and exposure) with cast sun shadows of
buildings, cars and tree crowns and ambient occlusion under cars. Nothing depends on the
viewing direction except the footprint-based antialiasing (which only fades sub-pixel
detail), so the same surface point has the same colour in every view: warping with the
true depth and pose reproduces the image. Images are quantised to 10 bits per channel;
depth is exact up to a relative 8e-6 (the low 6 mantissa bits carry the primitive id).
Kerb faces are labelled ``SIDEWALK`` and tree trunks ``VEGETATION`` (as in Cityscapes).

Speed: one compiled render program per (resolution, anomalies, max_depth, baseline,
camera_height); on CPU every view is its own asynchronously dispatched call so that the
views of a batch spread over the cores (``experiments/bench_synthetic.py`` measures it).

Geometry and conventions: pixel centres at integer coordinates (see
:mod:`jaxdepth.geometry`); ``K`` is KITTI's normalised ``[[0.58, 0, 0.5], [0, 1.92,
0.5]]`` scaled by ``(width, height)``; depth is the z coordinate of the first hit, 0 (and
label ``SKY``) where nothing lies within ``max_depth``. ``poses[k]`` maps points from
camera 0 into camera ``k`` (``X_k = poses[k] @ [X_0, 1]``); the right camera is camera 0
moved by ``+baseline`` along its x axis (``stereo_T`` = identity with ``t_x = -baseline``).
The camera has no pitch or roll, so a road pixel in row ``v`` has depth
``camera_height · f_y / (v - c_y)`` exactly.

Public API: :func:`sample`, :func:`sample_batch`, :func:`scene_description`,
:class:`SyntheticSource`, :data:`CLASSES` (and ``ROAD = 0`` … ``ANOMALY = 7``).
``python -m jaxdepth.data.synthetic --preview out.png`` saves a grid of samples.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import operator

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

__all__ = ["CLASSES", "CLASS_COLORS", "ROAD", "SIDEWALK", "BUILDING", "CAR", "POLE",
           "VEGETATION", "SKY", "ANOMALY", "SPLITS", "OPTIONS", "OUTPUT_KEYS", "K_NORM",
           "intrinsics", "sample", "sample_batch", "scene_description", "SyntheticSource"]

# ----------------------------------------------------------------------------- constants
CLASSES = ("road", "sidewalk", "building", "car", "pole", "vegetation", "sky", "anomaly")
ROAD, SIDEWALK, BUILDING, CAR, POLE, VEGETATION, SKY, ANOMALY = range(len(CLASSES))
#: RGB uint8 colour per class (Cityscapes-like), for previews.
CLASS_COLORS = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70], [0, 0, 142],
                         [153, 153, 153], [107, 142, 35], [70, 130, 180], [255, 200, 0]],
                        np.uint8)
SPLITS = ("train", "val", "test", "ood")
_SPLIT_CODE = {"train": 0x7A11, "val": 0x7A12, "test": 0x7A13, "ood": 0x7A14}
#: KITTI's normalised intrinsics (Monodepth2), scaled by (width, height) in :func:`intrinsics`.
K_NORM = np.array([[0.58, 0.0, 0.5], [0.0, 1.92, 0.5], [0.0, 0.0, 1.0]], np.float32)
#: Options and their defaults (``anomalies=None`` means ``split == "ood"``).
OPTIONS = {"moving_objects": False, "anomalies": None, "max_depth": 80.0, "baseline": 0.54,
           "camera_height": 1.65}
_GROUP_KEYS = {
    "base": ("image", "depth", "labels", "anomaly", "moving", "K"),
    "stereo": ("image_right", "depth_right", "baseline", "stereo_T"),
    "temporal": ("frames", "frames_depth", "poses"),
}
#: Every key a sample can have; ``keys=`` selects a subset (stereo / neighbour frames are
#: rendered only when one of their keys is asked for).
OUTPUT_KEYS = sum(_GROUP_KEYS.values(), ())

# Primitive groups, in id order: (name, type, count, material). Types must be contiguous.
_N_SIDE, _N_CAR, _N_POLE, _N_TREE = 6, 6, 4, 4
# Materials (rows of the per-pixel tables); ground rows and sky follow the objects.
(M_ROAD, M_SIDEWALK, M_KERB, M_BUILDING, M_CAR, M_CABIN, M_POLE, M_TRUNK, M_CROWN,
 M_ANOMALY, M_SKY) = range(11)
_LABEL_OF_MAT = np.array([ROAD, SIDEWALK, SIDEWALK, BUILDING, CAR, CAR, POLE, VEGETATION,
                          VEGETATION, ANOMALY, SKY], np.int32)
# Noise frequencies per material (cycles per metre along s, t; octave 1 and 2).
_NOISE_FREQ = np.array([
    [0.9, 0.9, 4.5, 4.5],   # road
    [1.3, 1.3, 5.0, 5.0],   # sidewalk
    [1.5, 1.5, 6.0, 6.0],   # kerb
    [0.7, 0.7, 3.5, 3.5],   # building
    [1.0, 1.0, 4.0, 4.0],   # car
    [1.0, 1.0, 4.0, 4.0],   # cabin
    [4.0, 0.6, 9.0, 2.0],   # pole
    [7.0, 0.8, 14.0, 2.5],  # trunk
    [1.6, 1.6, 5.5, 5.5],   # crown
    [1.5, 1.5, 5.0, 5.0],   # anomaly
    [0.8, 0.8, 2.6, 2.6],   # sky (cloud-plane units)
], np.float32)
_QMAX = 1023  # images are quantised to 10 bits per channel (see _render)
_NONE = 63  # object id of "no hit" (ids are packed into the 6 low bits of t)


@dataclasses.dataclass(frozen=True)
class _Config:
    height: int
    width: int
    split: str
    moving_objects: bool
    anomalies: bool
    max_depth: float
    baseline: float
    camera_height: float
    keys: tuple

    @property
    def groups(self):
        return tuple(g for g, ks in _GROUP_KEYS.items() if set(ks) & set(self.keys))

    @property
    def layout(self):
        """[(name, type, count, material)] in id order; the anomaly groups only if asked."""
        a = self.anomalies
        groups = [("building", "box", 2 * _N_SIDE, M_BUILDING), ("car", "box", _N_CAR, M_CAR),
                  ("cabin", "box", _N_CAR, M_CABIN), ("anom_box", "box", int(a), M_ANOMALY),
                  ("pole", "cyl", _N_POLE, M_POLE), ("trunk", "cyl", _N_TREE, M_TRUNK),
                  ("crown", "ell", _N_TREE, M_CROWN), ("anom_ell", "ell", 3 * int(a), M_ANOMALY),
                  ("anom_cone", "cone", int(a), M_ANOMALY)]
        return [g for g in groups if g[2] > 0]

    def count(self, typ):
        return sum(n for _, t, n, _ in self.layout if t == typ)

    @property
    def n_objects(self):
        return sum(n for *_, n, _ in self.layout)


def _config(height, width, split, keys, options) -> _Config:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; expected some of "
                         f"{sorted(OPTIONS)}")
    opt = {**OPTIONS, **options}
    if opt["anomalies"] is None:
        opt["anomalies"] = split == "ood"
    for name in ("max_depth", "camera_height"):
        if not float(opt[name]) > 0:
            raise ValueError(f"{name} must be positive, got {opt[name]!r}")
    if not float(opt["baseline"]) >= 0:
        raise ValueError(f"baseline must be >= 0 metres, got {opt['baseline']!r}")
    if keys is None:
        keys = OUTPUT_KEYS
    else:
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        bad = [k for k in keys if k not in OUTPUT_KEYS]
        if bad or not keys:
            raise ValueError(f"unknown or no keys {bad}; expected a subset of {OUTPUT_KEYS}")
        keys = tuple(k for k in OUTPUT_KEYS if k in keys)
    return _Config(int(height), int(width), split, bool(opt["moving_objects"]),
                   bool(opt["anomalies"]), float(opt["max_depth"]), float(opt["baseline"]),
                   float(opt["camera_height"]), keys)


def intrinsics(height: int = 96, width: int = 320) -> np.ndarray:
    """``[3,3]`` float32 pixel intrinsics: :data:`K_NORM` scaled by ``(width, height)``."""
    _config(height, width, "train", None, {})
    K = K_NORM.copy()
    K[0] *= width
    K[1] *= height
    return K


# ----------------------------------------------------------------------------- scenes
class _Tape:
    """Uniform numbers from one PRNG draw, handed out at fixed (static) offsets."""

    def __init__(self, key, n=512):
        self.u = jax.random.uniform(key, (n,), jnp.float32)
        self.i = 0

    def __call__(self, lo=0.0, hi=1.0, n=None):
        k = 1 if n is None else n
        if self.i + k > self.u.shape[0]:
            raise RuntimeError("synthetic scene tape exhausted; enlarge _Tape(n=...)")
        x = self.u[self.i:self.i + k]
        self.i += k
        x = lo + (hi - lo) * x
        return x[0] if n is None else x

    def choice(self, table, n=None):
        table = jnp.asarray(table, jnp.float32)
        idx = jnp.floor(self(0.0, 0.9999, n) * table.shape[0]).astype(jnp.int32)
        return table[idx]


_WALLS = [(0.78, 0.72, 0.62), (0.62, 0.34, 0.26), (0.55, 0.55, 0.54), (0.86, 0.84, 0.79),
          (0.72, 0.60, 0.42), (0.46, 0.39, 0.33), (0.60, 0.65, 0.68), (0.82, 0.66, 0.56),
          (0.70, 0.74, 0.62)]
_PAINTS = [(0.85, 0.85, 0.86), (0.07, 0.07, 0.08), (0.58, 0.59, 0.61), (0.62, 0.07, 0.06),
           (0.09, 0.19, 0.50), (0.10, 0.30, 0.16), (0.86, 0.70, 0.10), (0.33, 0.34, 0.36),
           (0.45, 0.25, 0.12)]
_NEON = [(1.0, 0.05, 1.0), (0.0, 1.0, 1.0), (0.55, 1.0, 0.0), (1.0, 0.5, 0.0),
         (1.0, 0.15, 0.55), (1.0, 1.0, 0.0), (0.55, 0.0, 1.0)]
_PAVING = [(0.60, 0.60, 0.58), (0.64, 0.58, 0.50), (0.56, 0.36, 0.31), (0.50, 0.51, 0.53)]


def _ry(psi):
    c, s = jnp.cos(psi), jnp.sin(psi)
    z, o = jnp.zeros_like(psi), jnp.ones_like(psi)
    return jnp.stack([jnp.stack([c, z, s]), jnp.stack([z, o, z]), jnp.stack([-s, z, c])])


def _sample_key(seed, split_code, index):
    """The sample's PRNG key: seed -> split (disjoint streams) -> index."""
    key = jax.random.fold_in(jax.random.key(seed), split_code)
    return jax.random.fold_in(key, index)


def _make_scene(key, cfg: _Config, moving=False) -> dict:
    """All scene parameters of one sample (traced); ``moving`` (may be traced) gives the
    lane cars their own velocities."""
    T = _Tape(jax.random.fold_in(key, 0))
    h = cfg.camera_height
    f32 = jnp.float32
    # --- road, kerbs, sidewalks
    hw = T(3.5, 4.5)                               # half width of the two driving lanes
    xr = -hw / 2 + T(-0.3, 0.3)                    # road centre: camera in the right lane
    park_l = jnp.where(T() < 0.5, T(2.0, 2.5), 0.0)
    park_r = jnp.where(T() < 0.6, T(2.0, 2.5), 0.0)
    xkl, xkr = xr - hw - park_l, xr + hw + park_r  # kerb lines
    kh = T(0.10, 0.18)                             # kerb height
    sw = T(1.8, 4.5, 2)                            # sidewalk widths (left, right)
    # --- buildings: 6 per side, boxes from the facade 14 m deep, bottom at road level
    lo_b, hi_b, mat_b = [], [], []
    for side, edge in ((-1.0, xkl - sw[0]), (1.0, xkr + sw[1])):
        n = _N_SIDE
        gaps = jnp.where(T(0, 1, n) < 0.45, 0.0, T(2.0, 9.0, n))
        lens = T(7.0, 22.0, n)
        z1 = T(-30.0, -12.0) + jnp.cumsum(gaps + lens)
        z0 = z1 - lens
        setback = jnp.where(T(0, 1, n) < 0.5, 0.0, T(0.3, 3.0, n))
        face = edge + side * setback
        floors = jnp.floor(T(2.0, 8.99, n))
        fh = T(2.8, 3.6, n)
        height = floors * fh + T(0.4, 1.2, n)
        xa, xb = (face - 14.0, face) if side < 0 else (face, face + 14.0)
        lo_b.append(jnp.stack([xa, h - height, z0], -1))
        hi_b.append(jnp.stack([xb, jnp.full((n,), h), z1], -1))
        wall = T.choice(_WALLS, n) * T(0.85, 1.1, n)[:, None]
        glass = jnp.array([0.16, 0.2, 0.26]) * T(0.6, 1.3, n)[:, None]
        mat_b.append(jnp.concatenate([wall, glass, jnp.stack(
            [fh, T(2.2, 3.8, n), T(0.3, 0.55, n), T(0.4, 0.6, n),
             (T(0, 1, n) < 0.45).astype(f32), height], -1)], -1))
    # --- cars: 0,1 parked right; 2 parked left; 3 ego lane; 4,5 oncoming lane
    n = _N_CAR
    L, Wd, Hb = T(3.8, 4.9, n), T(1.65, 1.9, n), T(0.75, 0.95, n)
    park_x = jnp.array([1.0, 1.0, 0.0, 0, 0, 0]) * (xkr - park_r / 2) \
        + jnp.array([0.0, 0, 1, 0, 0, 0]) * (xkl + park_l / 2)
    lane_x = jnp.array([0.0, 0, 0, 1, 0, 0]) * 0.0 + jnp.array([0.0, 0, 0, 0, 1, 1]) * (xr - hw / 2)
    cx = park_x + lane_x + T(-0.15, 0.15, n) * jnp.array([1.0, 1, 1, 2, 2, 2])
    zc0 = T(3.0, 12.0)
    zc1 = zc0 + L[0] + T(1.5, 15.0)
    zc4 = T(4.0, 30.0)
    zc5 = zc4 + L[4] + T(6.0, 30.0)
    z0 = jnp.stack([zc0, zc1, T(2.0, 25.0), T(10.0, 45.0), zc4, zc5])
    present = jnp.stack([park_r > 0, park_r > 0, park_l > 0, T() < 0.7, T() < 0.8, T() < 0.6])
    z0 = jnp.where(present, z0, -1000.0)
    body_lo = jnp.stack([cx - Wd / 2, h - Hb, z0], -1)
    body_hi = jnp.stack([cx + Wd / 2, jnp.full((n,), h), z0 + L], -1)
    Hc, cab_a, cab_f = T(0.45, 0.6, n), T(0.18, 0.3, n), T(0.48, 0.6, n)
    cab_lo = jnp.stack([cx - Wd / 2 + 0.09, h - Hb - Hc, z0 + cab_a * L], -1)
    cab_hi = jnp.stack([cx + Wd / 2 - 0.09, h - Hb, z0 + (cab_a + cab_f) * L], -1)
    vz = jnp.where(moving, jnp.stack([0.0, 0.0, 0.0, T(0.3, 1.8), -T(0.5, 1.8), -T(0.5, 1.8)]),
                   0.0)
    paint = T.choice(_PAINTS, n) * T(0.9, 1.1, n)[:, None]
    # lights on the -z face: rear (red) for cars driving away, front (white) for oncoming
    front = jnp.concatenate([T(0, 1, 3) < 0.5, jnp.array([False, True, True])])
    lights = jnp.where(front[:, None], jnp.array([1.0, 0.95, 0.8]), jnp.array([0.8, 0.05, 0.03]))
    zeros6 = jnp.zeros((n, 6), f32)
    mat_car = jnp.concatenate([paint, lights, zeros6], -1)
    mat_cab = jnp.concatenate([paint, jnp.array([0.1, 0.12, 0.15]) * T(0.7, 1.4, n)[:, None],
                               zeros6], -1)
    # --- poles and trees on the sidewalks
    side_p = jnp.where(T(0, 1, _N_POLE) < 0.5, -1.0, 1.0)
    kerb_p = jnp.where(side_p < 0, xkl, xkr)
    pole_x = kerb_p + side_p * T(0.3, 0.6, _N_POLE)
    pole_z = T(2.0, 70.0, _N_POLE)
    pole_r = T(0.06, 0.13, _N_POLE)
    pole_top = h - kh - T(3.5, 8.0, _N_POLE)
    cyl_pole = jnp.stack([pole_x, pole_z, pole_r, pole_top, jnp.full_like(pole_x, h)], -1)
    mat_pole = jnp.concatenate([
        T.choice([(0.42, 0.43, 0.44), (0.25, 0.27, 0.25), (0.6, 0.6, 0.58)], _N_POLE),
        T.choice([(0.8, 0.78, 0.2), (0.9, 0.9, 0.9), (0.2, 0.35, 0.6)], _N_POLE),
        jnp.stack([T(1.8, 3.0, _N_POLE)] + [jnp.zeros(_N_POLE)] * 5, -1)], -1)
    side_t = jnp.where(T(0, 1, _N_TREE) < 0.5, -1.0, 1.0)
    kerb_t = jnp.where(side_t < 0, xkl, xkr)
    sw_t = jnp.where(side_t < 0, sw[0], sw[1])
    tree_x = kerb_t + side_t * jnp.minimum(T(0.8, 2.0, _N_TREE), sw_t - 0.3)
    tree_z = T(3.0, 75.0, _N_TREE)
    rx, ry = T(1.2, 2.3, _N_TREE), T(1.4, 2.8, _N_TREE)
    rz = rx * T(0.85, 1.15, _N_TREE)
    cy = jnp.minimum(h - kh - T(2.4, 3.4, _N_TREE) - 0.6 * ry, h - 2.3 - ry)
    cyl_trunk = jnp.stack([tree_x, tree_z, T(0.1, 0.22, _N_TREE), cy, jnp.full_like(cy, h)], -1)
    ell_crown = jnp.stack([tree_x, cy, tree_z, rx, ry, rz], -1)
    bark = jnp.array([0.30, 0.22, 0.15]) * T(0.7, 1.2, _N_TREE)[:, None]
    leaf1 = T.choice([(0.24, 0.42, 0.10), (0.32, 0.48, 0.14), (0.20, 0.36, 0.14),
                      (0.42, 0.48, 0.16)], _N_TREE)
    leaf2 = leaf1 * T(0.35, 0.55, _N_TREE)[:, None] + jnp.array([0.02, 0.05, 0.0])
    z4 = jnp.zeros((_N_TREE, 6), f32)
    mat_trunk = jnp.concatenate([bark, bark * 0.6, z4], -1)
    mat_crown = jnp.concatenate([leaf1, leaf2, z4], -1)
    # --- anomalies on the road (drawn from the tape either way: same scene otherwise)
    ax = xr + T(-1, 1, 4) * (hw - 0.9)
    az = T(7.0, 35.0, 4)
    asz = T(0.4, 1.4, 3)
    a_box_lo = jnp.stack([ax[0] - asz[0] / 2, h - asz[1], az[0] - asz[2] / 2])
    a_box_hi = jnp.stack([ax[0] + asz[0] / 2, h, az[0] + asz[2] / 2])
    body = T(0.3, 0.6, 3) * jnp.array([1.7, 1.0, 1.0])
    along = T() < 0.5  # the animal faces along z or along x
    body = jnp.where(along, body[jnp.array([1, 2, 0])], body)
    head_r = T(0.2, 0.35)
    head_off = jnp.where(along, jnp.stack([0.0, 0.0, body[2]]), jnp.stack([body[0], 0.0, 0.0]))
    sph_r = T(0.3, 1.0)
    ell_anom = jnp.stack([
        jnp.stack([ax[1], h - body[1], az[1], body[0], body[1], body[2]]),
        jnp.stack([ax[1] + head_off[0], h - 1.6 * body[1], az[1] + head_off[2],
                   head_r, head_r, head_r]),
        jnp.stack([ax[2], h - sph_r, az[2], sph_r, sph_r, sph_r])])
    cone_h = T(0.5, 2.0)
    cone = jnp.stack([ax[3], az[3], T(0.25, 0.7), h - cone_h, jnp.asarray(h, f32)])[None]
    n_a = 6
    neon = jnp.asarray(_NEON, f32)
    i1 = jnp.floor(T(0, 0.999, n_a) * len(_NEON)).astype(jnp.int32)
    i2 = (i1 + 1 + jnp.floor(T(0, 0.999, n_a) * (len(_NEON) - 1)).astype(jnp.int32)) % len(_NEON)
    kind = jnp.floor(T(0, 2.999, n_a))
    mat_anom = jnp.concatenate([neon[i1], neon[i2], jnp.stack(
        [kind, T(0.08, 0.3, n_a)] + [jnp.zeros(n_a)] * 4, -1)], -1)
    # --- assemble per-type geometry tables and the per-row material table
    a = cfg.anomalies
    boxes_lo = [lo_b[0], lo_b[1], body_lo, cab_lo] + ([a_box_lo[None]] if a else [])
    boxes_hi = [hi_b[0], hi_b[1], body_hi, cab_hi] + ([a_box_hi[None]] if a else [])
    nb = 2 * _N_SIDE + 2 * _N_CAR + int(a)
    box_vz = jnp.concatenate([jnp.zeros(2 * _N_SIDE), vz, vz, jnp.zeros(int(a))])
    cyl = jnp.concatenate([cyl_pole, cyl_trunk])
    ell = jnp.concatenate([ell_crown] + ([ell_anom] if a else []))
    mats = [mat_b[0], mat_b[1], mat_car, mat_cab] + ([mat_anom[:1]] if a else []) \
        + [mat_pole, mat_trunk, mat_crown] + ([mat_anom[1:4], mat_anom[4:5]] if a else [])
    # --- ground, lighting, sky, camera
    road_col = T(0.22, 0.40) * (jnp.array([1.0, 1.0, 1.0]) + T(-0.04, 0.04) * jnp.array([1, 0, -1]))
    paint_col = jnp.where(T() < 0.15, jnp.array([0.9, 0.78, 0.35]), jnp.array([0.92, 0.92, 0.9]))
    dash_p, dash_d = T(6.0, 12.0), T(0.3, 0.5)
    pave = T.choice(_PAVING) * T(0.9, 1.1)
    kerb_col = jnp.array([0.66, 0.66, 0.64]) * T(0.85, 1.1)
    zeros3 = jnp.zeros(3, f32)
    row_road = jnp.concatenate([road_col, paint_col, jnp.stack([dash_p, dash_d, xr, hw, 0., 0.])])
    row_side = jnp.concatenate([pave, zeros3, jnp.stack([T(0.4, 1.0), 0., 0., 0., 0., 0.])])
    row_kerb = jnp.concatenate([kerb_col, zeros3, jnp.zeros(6)])
    overcast = T() < 0.25
    zenith = jnp.where(overcast, jnp.array([0.62, 0.65, 0.70]),
                       jnp.array([0.22, 0.42, 0.82]) * T(0.85, 1.1))
    horizon = jnp.where(overcast, jnp.array([0.80, 0.81, 0.83]),
                        jnp.array([0.74, 0.82, 0.92]) * T(0.9, 1.05))
    row_sky = jnp.concatenate([zenith, horizon, jnp.stack(
        [jnp.where(overcast, 0.0, T(0.0, 0.8)), 0., 0., 0., 0., 0.])])
    mat = jnp.concatenate(mats + [row_road[None], row_side[None], row_kerb[None], row_sky[None]])
    elev, azim, warm = T(math.radians(15), math.radians(70)), T(0, 2 * math.pi), T()
    sun_dir = jnp.stack([jnp.cos(elev) * jnp.sin(azim), -jnp.sin(elev),
                         jnp.cos(elev) * jnp.cos(azim)])
    sun_gain = jnp.where(overcast, 0.25, T(0.55, 1.0))
    sun_col = jnp.stack([1.0, 1.0 - 0.12 * warm, 1.0 - 0.3 * warm]) * sun_gain
    amb = jnp.where(overcast, 0.75, T(0.32, 0.5)) * jnp.array([0.9, 0.95, 1.05])
    return dict(
        box_lo=jnp.concatenate(boxes_lo).reshape(nb, 3),
        box_hi=jnp.concatenate(boxes_hi).reshape(nb, 3),
        box_vz=box_vz.astype(f32), cyl=cyl, ell=ell, cone=cone if a else jnp.zeros((0, 5), f32),
        mat=mat.astype(f32), band=jnp.stack([xkl, xkr, h - kh]),
        sun_dir=sun_dir, sun_col=sun_col, amb=amb, exposure=T(0.9, 1.15),
        # < 2**24 so that it survives the float32 round trip in _render_program
        noise_seed=jax.random.randint(jax.random.fold_in(key, 1), (), 0,
                                      1 << 24).astype(jnp.uint32),
        yaw0=T(math.radians(-3), math.radians(3)), speed=T(0.5, 1.5),
        yaw_rate=T(math.radians(-2), math.radians(2)))


# ----------------------------------------------------------------------------- textures
_HX, _HY = np.uint32(0x8DA6B343), np.uint32(0xD8163841)


def _mixbits(h):
    """uint32 -> float32 in [0, 1) (one round of a multiply-xorshift integer hash)."""
    h = (h ^ (h >> 16)) * jnp.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    return (h >> 8).astype(jnp.float32) * jnp.float32(1.0 / (1 << 24))


def _hash(ix, iy, seed):
    """Integer lattice hash -> float32 in [0, 1); ``ix``, ``iy`` int32, ``seed`` uint32."""
    u32 = jnp.uint32
    return _mixbits((lax.bitcast_convert_type(ix, u32) * u32(_HX))
                    ^ (lax.bitcast_convert_type(iy, u32) * u32(_HY)) ^ seed)


def _vnoise(x, y, seed):
    """Smooth value noise in [0, 1] (bilinear interpolation of lattice hashes)."""
    u32 = jnp.uint32
    xf, yf = jnp.floor(x), jnp.floor(y)
    fx, fy = x - xf, y - yf
    sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    hx0 = lax.bitcast_convert_type(xf.astype(jnp.int32), u32) * u32(_HX)
    hy0 = lax.bitcast_convert_type(yf.astype(jnp.int32), u32) * u32(_HY)
    hx1, hy1 = hx0 + u32(_HX), hy0 + u32(_HY)
    hy0, hy1 = hy0 ^ seed, hy1 ^ seed
    a, b = _mixbits(hx0 ^ hy0), _mixbits(hx1 ^ hy0)
    c, d = _mixbits(hx0 ^ hy1), _mixbits(hx1 ^ hy1)
    return a + (b - a) * sx + (c - a + (a - b - c + d) * sx) * sy


def _aa(sd, iw):
    """Antialiased inside-indicator of a signed distance ``sd`` (>0 inside); ``iw`` is
    1 / the filter width (the pixel footprint)."""
    return jnp.clip(sd * iw + 0.5, 0.0, 1.0)


def _fade(period, iw):
    """1 where a pattern of ``period`` spans >= 4 footprints (``1/iw``), 0 at <= 2 (then a
    pattern is replaced by its mean)."""
    return jnp.clip(0.5 * period * iw - 1.0, 0.0, 1.0)


def _centred(x):
    """x - round(x), in [-0.5, 0.5]."""
    return x - jnp.floor(x + 0.5)


def _tiles(s, t, cs, ct, joint, iws, iwt):
    """(inside-tile coverage, tile ids) of a grid of ``cs × ct`` tiles with joints."""
    fs, ft = s / cs, t / ct
    ins = _aa((0.5 - jnp.abs(_centred(fs))) * cs - joint / 2, iws)
    int_ = _aa((0.5 - jnp.abs(_centred(ft))) * ct - joint / 2, iwt)
    mean = (1 - joint / cs) * (1 - joint / ct)
    f = _fade(cs, iws) * _fade(ct, iwt)
    cov = mean + f * (ins * int_ - mean)
    return cov, jnp.floor(fs + 0.5).astype(jnp.int32), jnp.floor(ft + 0.5).astype(jnp.int32)


class _RGB:
    """Three planar channels (r, g, b) of [H,W] arrays, with arithmetic: keeps colour maths
    free of a channel axis (XLA:CPU then evaluates each shared term once per pixel)."""

    __slots__ = ("c",)

    def __init__(self, r, g=None, b=None):
        self.c = tuple(r) if g is None else (r, g, b)

    @staticmethod
    def _o(o):
        return o.c if isinstance(o, _RGB) else (o, o, o)

    def __add__(self, o):
        return _RGB([a + b for a, b in zip(self.c, self._o(o))])

    __radd__ = __add__

    def __sub__(self, o):
        return _RGB([a - b for a, b in zip(self.c, self._o(o))])

    def __rsub__(self, o):
        return _RGB([b - a for a, b in zip(self.c, self._o(o))])

    def __mul__(self, o):
        return _RGB([a * b for a, b in zip(self.c, self._o(o))])

    __rmul__ = __mul__

    def mix(self, o, w):
        """(1 - w)·self + w·o."""
        return self + w * (o - self)


def _select(conds, choices, default):
    out = default.c
    for cond, ch in reversed(list(zip(conds, choices))):
        out = [jnp.where(cond, a, b) for a, b in zip(ch.c, out)]
    return _RGB(out)


def _rows(vals, idx):
    """Per-pixel values of table ``vals`` [R] at row indices ``idx`` (gather)."""
    return jnp.take(vals, idx, mode="clip")


# ----------------------------------------------------------------------------- rendering
# Performance notes (XLA:CPU, jax 0.10). XLA:CPU has no multi-output fusion: a value used
# by several fusions is recomputed in each (cheap ops) or, for "expensive" ops (divide,
# sqrt, gather...), materialised with its whole cheap input cone recomputed; it also runs
# each fusion on a single thread. Left alone, the shading below cost ~10× its size. So
# (1) the flattened scene parameters and the shared per-pixel values are materialised
# explicitly, by dividing them by a runtime array of ones (which XLA can neither fold nor
# duplicate; see `mat`); (2) the image leaves the render program as one packed uint32 per
# pixel and is unpacked by another program, so all material code runs once per pixel
# rather than once per colour channel; (3) the nearest hit is an unrolled elementwise
# min chain (a fused reduce over a primitive axis is not vectorised across pixels);
# (4) on CPU every view is its own asynchronously dispatched call, so a batch spreads
# over the cores (see _chunk_size).
_NOHIT = int(np.float32(1e30).view(np.int32)) | _NONE  # finite, above every hit


def _pack(t, ok, ids):
    """(t, id) packed into one int32 whose order is t's (t > 0): min over primitives."""
    key = (lax.bitcast_convert_type(t, jnp.int32) & jnp.int32(~_NONE)) | ids
    return jnp.where(ok, key, jnp.int32(_NOHIT))


def _render(S, R, c, k, rays, ones, cfg: _Config):
    """One view of scene ``S``: camera-to-world rotation ``R`` [3,3], centre ``c`` [3] (world
    = camera 0 at frame 0), time ``k`` (frames); ``rays`` [2,H,W] (K⁻¹ [u,v,1])_xy,
    ``ones`` [H,W] float32 ones (runtime). Returns (packed rgb uint32 [H,W], depth [H,W]
    float32 (0 = sky), label [H,W] int32, moving [H,W] bool)."""

    def mat(x):
        if x.dtype == jnp.float32:
            return x / ones
        if x.dtype == jnp.bool_:
            return (x.astype(jnp.float32) / ones) > 0.5
        return (x.astype(jnp.float32) / ones).astype(x.dtype)  # small ints only

    def mat_key(x):  # int32 keys are bit patterns of normal floats: exact through x / 1
        return lax.bitcast_convert_type(lax.bitcast_convert_type(x, jnp.float32) / ones,
                                        jnp.int32)

    h, maxd = cfg.camera_height, cfg.max_depth
    eps = 1e-3
    dxc, dyc = rays
    dx = R[0, 0] * dxc + R[0, 1] * dyc + R[0, 2]
    dy = R[1, 0] * dxc + R[1, 1] * dyc + R[1, 2]
    dz = R[2, 0] * dxc + R[2, 1] * dyc + R[2, 2]  # camera z = 1: t is the depth
    ox, oy, oz = c[0], c[1], c[2]
    nb, nc, ne = cfg.count("box"), cfg.count("cyl"), cfg.count("ell")
    P = cfg.n_objects
    idx, idy, idz = mat(1.0 / dx), mat(1.0 / dy), mat(1.0 / dz)
    # Nearest hit over all primitives: one unrolled elementwise min chain (a fused reduce
    # over a primitive axis is not vectorised across pixels by XLA:CPU).
    key = jnp.full(dx.shape, _NOHIT, jnp.int32)

    def nearest(key, t, ok, i):
        return jnp.minimum(key, _pack(t, ok, i))

    # --- boxes (slabs), the moving ones shifted along z by k * vz. Rays always point
    # forward (dz > 0: |yaw| <= 5°, half field of view 41°), so the z slab needs no sort.
    lo = S["box_lo"].at[:, 2].add(S["box_vz"] * k)
    hi = S["box_hi"].at[:, 2].add(S["box_vz"] * k)
    for i in range(nb):
        tx1, tx2 = (lo[i, 0] - ox) * idx, (hi[i, 0] - ox) * idx
        ty1, ty2 = (lo[i, 1] - oy) * idy, (hi[i, 1] - oy) * idy
        tn = jnp.maximum(jnp.maximum(jnp.minimum(tx1, tx2), jnp.minimum(ty1, ty2)),
                         (lo[i, 2] - oz) * idz)
        tf = jnp.minimum(jnp.minimum(jnp.maximum(tx1, tx2), jnp.maximum(ty1, ty2)),
                         (hi[i, 2] - oz) * idz)
        key = nearest(key, tn, (tn <= tf) & (tn > eps) & (tn < maxd), i)
    # --- vertical cylinders (no caps)
    cyl = S["cyl"]
    a2 = dx * dx + dz * dz
    ia2 = mat(1.0 / a2)
    for i in range(nc):
        ocx, ocz = ox - cyl[i, 0], oz - cyl[i, 1]
        b = ocx * dx + ocz * dz
        disc = b * b - a2 * (ocx * ocx + ocz * ocz - cyl[i, 2] ** 2)
        tc = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) * ia2
        yc = oy + tc * dy
        ok = (disc > 0) & (tc > eps) & (tc < maxd) & (yc >= cyl[i, 3]) & (yc <= cyl[i, 4])
        key = nearest(key, tc, ok, nb + i)
    # --- ellipsoids
    ell = S["ell"]
    ir = 1.0 / ell[:, 3:6]
    oe = (jnp.stack([ox, oy, oz]) - ell[:, :3]) * ir
    for i in range(ne):
        ex, ey, ez = ir[i, 0] * dx, ir[i, 1] * dy, ir[i, 2] * dz
        ae = ex * ex + ey * ey + ez * ez
        be = oe[i, 0] * ex + oe[i, 1] * ey + oe[i, 2] * ez
        de = be * be - ae * (jnp.sum(oe[i] * oe[i]) - 1.0)
        te = (-be - jnp.sqrt(jnp.maximum(de, 0.0))) / ae
        key = nearest(key, te, (de > 0) & (te > eps) & (te < maxd), nb + nc + i)
    # --- vertical cones (apex up): anomalies only
    cn = S["cone"]
    for i in range(cfg.count("cone")):
        k2 = (cn[i, 2] / (cn[i, 4] - cn[i, 3])) ** 2
        qx, qz, qy = ox - cn[i, 0], oz - cn[i, 1], oy - cn[i, 3]
        ac = a2 - k2 * dy * dy
        bc = qx * dx + qz * dz - k2 * qy * dy
        dc = bc * bc - ac * (qx * qx + qz * qz - k2 * qy * qy)
        sq = jnp.sqrt(jnp.maximum(dc, 0.0))
        r1, r2 = (-bc - sq) / ac, (-bc + sq) / ac
        t1, t2 = jnp.minimum(r1, r2), jnp.maximum(r1, r2)
        hc = cn[i, 4] - cn[i, 3]

        def on(t):
            y = qy + t * dy
            return (dc > 0) & (t > eps) & (t < maxd) & (y >= 0) & (y <= hc)

        key = nearest(key, jnp.where(on(t1), t1, t2), on(t1) | on(t2), nb + nc + ne + i)
    # --- ground: road (y = h) between the kerbs, sidewalks (y = h - kh) outside, kerb faces
    xkl, xkr, ys = S["band"][0], S["band"][1], S["band"][2]
    t_r = (h - oy) * idy
    x_r = ox + t_r * dx
    key = nearest(key, t_r, (t_r > eps) & (t_r < maxd) & (x_r >= xkl) & (x_r <= xkr), P)
    t_s = (ys - oy) * idy
    x_s = ox + t_s * dx
    key = nearest(key, t_s, (t_s > eps) & (t_s < maxd) & ((x_s < xkl) | (x_s > xkr)), P + 1)
    for xk in (xkl, xkr):
        t_k = (xk - ox) * idx
        y_k = oy + t_k * dy
        key = nearest(key, t_k, (t_k > eps) & (t_k < maxd) & (y_k >= ys) & (y_k <= h), P + 2)
    key = mat_key(key)
    # --- what was hit, and where
    oid = key & jnp.int32(_NONE)
    hit = oid != _NONE
    t = jnp.where(hit, lax.bitcast_convert_type(key & jnp.int32(~_NONE), jnp.float32), 0.0)
    row = jnp.where(hit, oid, P + 3)  # rows: objects, road, sidewalk, kerb, sky
    depth = t
    sky = ~hit
    # per-pixel primitive parameters (gathers from small tables)
    box_g = jnp.concatenate([lo, hi], -1)
    cyl_g = jnp.stack([cyl[:, 0], cyl[:, 3], cyl[:, 1], cyl[:, 2], cyl[:, 4],
                       jnp.zeros(nc)], -1)
    geo = [box_g, cyl_g, ell]
    geo.append(jnp.stack([cn[:, 0], cn[:, 3], cn[:, 1], cn[:, 2], cn[:, 4],
                          jnp.zeros(cn.shape[0])], -1))
    geo.append(jnp.array([[0.0, 0.0, 0.0, 0.0, h, 0.0]] * 4, jnp.float32))
    geo = jnp.concatenate(geo)  # [P+4, 6]
    G = [_rows(geo[:, j], row) for j in range(6)]
    Mt = [_rows(S["mat"][:, j], row) for j in range(12)]
    mat_of_row = np.concatenate([np.repeat(m_, n) for *_, n, m_ in cfg.layout]
                                + [np.array([M_ROAD, M_SIDEWALK, M_KERB, M_SKY])]).astype(np.int32)
    m = _rows(jnp.asarray(mat_of_row), row)
    label = _rows(jnp.asarray(_LABEL_OF_MAT[mat_of_row]), row)
    vz_row = jnp.concatenate([S["box_vz"], jnp.zeros(P + 4 - nb)])
    moving = _rows(vz_row, row) != 0
    is_box = row < nb
    is_ell = (row >= nb + nc) & (row < nb + nc + ne)
    is_cone = (row >= nb + nc + ne) & (row < P)
    ground = (row >= P) & (row < P + 3)
    px, py, pz = mat(ox + t * dx), mat(oy + t * dy), mat(oz + t * dz)
    # --- normals. Box: the face nearest to the hit point; curved: implicit-surface gradient
    fd = [jnp.abs(px - G[0]), jnp.abs(py - G[1]), jnp.abs(pz - G[2]),
          jnp.abs(px - G[3]), jnp.abs(py - G[4]), jnp.abs(pz - G[5])]
    fmin = functools.reduce(jnp.minimum, fd)
    bx = jnp.where(fd[0] == fmin, -1.0, jnp.where(fd[3] == fmin, 1.0, 0.0))
    by = jnp.where((bx == 0) & (fd[1] == fmin), -1.0,
                   jnp.where((bx == 0) & (fd[4] == fmin), 1.0, 0.0))
    bz = jnp.where((bx == 0) & (by == 0), jnp.where(fd[2] == fmin, -1.0, 1.0), 0.0)
    rx_, rz_, ey_ = px - G[0], pz - G[2], py - G[1]
    gx = jnp.where(is_ell, rx_ / (G[3] * G[3]), rx_)
    gz = jnp.where(is_ell, rz_ / (G[5] * G[5]), rz_)
    k2p = (G[3] / jnp.maximum(G[4] - G[1], 1e-6)) ** 2
    gy = jnp.where(is_ell, ey_ / (G[4] * G[4]), jnp.where(is_cone, -k2p * ey_, 0.0))
    gn = lax.rsqrt(jnp.maximum(gx * gx + gy * gy + gz * gz, 1e-20))
    kerb = m == M_KERB
    kerb_n = jnp.where(px > (xkl + xkr) / 2, -1.0, 1.0)
    nx = mat(jnp.where(is_box, bx, jnp.where(ground, jnp.where(kerb, kerb_n, 0.0), gx * gn)))
    ny = mat(jnp.where(is_box, by, jnp.where(ground, jnp.where(kerb, 0.0, -1.0), gy * gn)))
    nz = mat(jnp.where(is_box, bz, jnp.where(ground, 0.0, gz * gn)))
    # --- surface coordinates (s, tt) in the primitive's frame; tt = height for walls
    anx, any_, anz = jnp.abs(nx), jnp.abs(ny), jnp.abs(nz)
    ax_x = mat((anx >= any_) & (anx >= anz))
    ax_y = mat(~ax_x & (any_ >= anz))
    lx, lz = px - G[0], pz - G[2]
    ly = mat(jnp.where(is_ell, G[1], G[4]) - py)  # height above the primitive's base
    fx = cfg.width * float(K_NORM[0, 0])
    # pixel footprint along s and t: (z/f)·sqrt(1 + (a·d)²/(n·d)²) for surface axis a
    dn = jnp.maximum(jnp.abs(dx * nx + dy * ny + dz * nz), 1e-3)
    inv_fp = fx / jnp.maximum(t, 1e-3)
    ds_, dt_ = jnp.where(ax_x, dz, dx), jnp.where(ax_y, dz, dy)
    iws = inv_fp * dn * lax.rsqrt(dn * dn + ds_ * ds_)
    iwt = inv_fp * dn * lax.rsqrt(dn * dn + dt_ * dt_)
    # sky: clouds on a plane at infinity (a function of the direction: same in every view)
    inv_len = lax.rsqrt(dx * dx + dy * dy + dz * dz)
    elev = mat(-dy * inv_len)
    el = jnp.maximum(elev, 0.03)
    cel = inv_len / el
    s = mat(jnp.where(sky, dx * cel, jnp.where(ax_x, lz, lx)))
    tt = mat(jnp.where(sky, dz * cel, jnp.where(ax_y, lz, ly)))
    iwsky = fx * el * el
    iws = mat(jnp.where(sky, iwsky, jnp.minimum(iws, 1e6)))
    iwt = mat(jnp.where(sky, iwsky, jnp.minimum(iwt, 1e6)))
    # --- shared noise: two octaves, per-material frequencies, faded by the footprint
    nf = [_rows(jnp.asarray(_NOISE_FREQ[:, j]), m) for j in range(4)]
    seed = S["noise_seed"] + m.astype(jnp.uint32) * jnp.uint32(0x9E3779B9)
    n1 = mat((_vnoise(s * nf[0], tt * nf[1], seed) - 0.5)
             * _fade(1.0, jnp.maximum(nf[0] / iws, nf[1] / iwt)))
    n2 = mat((_vnoise(s * nf[2], tt * nf[3], seed ^ jnp.uint32(0x5BD1E995)) - 0.5)
             * _fade(1.0, jnp.maximum(nf[2] / iws, nf[3] / iwt)))
    albedo, emit = _materials(S, m, G, Mt, s, tt, lx, ly, lz, px, pz, elev, ax_x, ax_y,
                              iws, iwt, n1, n2, cfg.anomalies)
    # --- lighting: Lambertian sun with cast shadows + hemispheric ambient
    sun = S["sun_dir"]
    lam = jnp.maximum(nx * sun[0] + ny * sun[1] + nz * sun[2], 0.0)
    # shadow rays towards the sun from just off the surface: the buildings on the sun's
    # side of the street, the car bodies and the tree crowns (leaves let some light through)
    qx, qy, qz = px + 2e-3 * nx, py + 2e-3 * ny, pz + 2e-3 * nz
    il = 1.0 / jnp.where(jnp.abs(sun) < 1e-6, 1e-6, sun)
    left = sun[0] < 0
    casters = [(jnp.where(left, lo[i], lo[_N_SIDE + i]),
                jnp.where(left, hi[i], hi[_N_SIDE + i])) for i in range(_N_SIDE)]
    casters += [(lo[2 * _N_SIDE + i], hi[2 * _N_SIDE + i]) for i in range(_N_CAR)]
    blocked = jnp.zeros(t.shape, bool)
    for blo, bhi in casters:
        tx1, tx2 = (blo[0] - qx) * il[0], (bhi[0] - qx) * il[0]
        ty1, ty2 = (blo[1] - qy) * il[1], (bhi[1] - qy) * il[1]
        tz1, tz2 = (blo[2] - qz) * il[2], (bhi[2] - qz) * il[2]
        tn = jnp.maximum(jnp.maximum(jnp.minimum(tx1, tx2), jnp.minimum(ty1, ty2)),
                         jnp.minimum(tz1, tz2))
        tf = jnp.minimum(jnp.minimum(jnp.maximum(tx1, tx2), jnp.maximum(ty1, ty2)),
                         jnp.maximum(tz1, tz2))
        blocked = blocked | ((tn <= tf) & (tf > 0))
    leaves = jnp.zeros(t.shape, bool)
    for i in range(_N_TREE):
        ex = (qx - ell[i, 0]) * ir[i, 0]
        ey = (qy - ell[i, 1]) * ir[i, 1]
        ez = (qz - ell[i, 2]) * ir[i, 2]
        sx, sy, sz = sun[0] * ir[i, 0], sun[1] * ir[i, 1], sun[2] * ir[i, 2]
        bq = ex * sx + ey * sy + ez * sz
        cq = ex * ex + ey * ey + ez * ez - 1.0
        leaves = leaves | ((bq * bq - (sx * sx + sy * sy + sz * sz) * cq > 0) & (bq < 0))
    lit = jnp.where(blocked, 0.0, jnp.where(leaves, jnp.clip(0.25 + 1.5 * n2, 0.0, 1.0), 1.0))
    occ = jnp.zeros_like(t)
    for i in range(_N_CAR):  # ambient occlusion around each car's footprint
        j = 2 * _N_SIDE + i
        ddx = jnp.maximum(jnp.abs(px - (lo[j, 0] + hi[j, 0]) / 2) - (hi[j, 0] - lo[j, 0]) / 2, 0.0)
        ddz = jnp.maximum(jnp.abs(pz - (lo[j, 2] + hi[j, 2]) / 2) - (hi[j, 2] - lo[j, 2]) / 2, 0.0)
        occ = jnp.maximum(occ, 1.0 - jnp.minimum(5.0 * (ddx * ddx + ddz * ddz), 1.0))
    occ = jnp.where(ground, occ, 0.0)
    light = (_RGB(list(S["amb"])) * ((0.75 - 0.25 * ny) * (1.0 - 0.5 * occ))
             + _RGB(list(S["sun_col"])) * (lam * lit * (1.0 - occ)))
    shaded = albedo * (light * S["exposure"] + emit)
    q = [jnp.round(jnp.clip(jnp.where(sky, a, b), 0.0, 1.0) * _QMAX).astype(jnp.uint32)
         for a, b in zip(albedo.c, shaded.c)]
    packed = q[0] | (q[1] << 10) | (q[2] << 20)
    return packed, depth, label, moving & hit


def _materials(S, m, G, Mt, s, tt, lx, ly, lz, px, pz, elev, ax_x, ax_y, iws, iwt, n1, n2,
               anomalies: bool):
    """Albedo (_RGB) and emission of every pixel from its material ``m`` and coordinates."""
    A = _RGB(Mt[0:3])  # primary colour of the hit primitive
    B = _RGB(Mt[3:6])  # secondary colour
    p = Mt[6:12]
    f32 = jnp.float32
    # road: asphalt, tyre tracks, dashed centre line, edge lines
    xl = px - p[2]
    hwr = p[3]
    dtrack = jnp.abs(jnp.abs(jnp.abs(xl) - 0.5 * hwr) - 0.8)
    track = 1.0 - 0.14 * jnp.clip(1.0 - (dtrack * 2.5) ** 2, 0.0, 1.0)
    dash_c = _centred(pz / p[0] - 0.5 * p[1])
    dash = _aa(0.5 * p[1] * p[0] - jnp.abs(dash_c) * p[0], iwt)
    dash = p[1] + _fade(p[0], iwt) * (dash - p[1])
    centre = _aa(0.06 - jnp.abs(xl), iws) * dash
    edge = _aa(0.07 - jnp.abs(jnp.abs(xl) - (hwr - 0.12)), iws)
    paint = 0.95 * jnp.maximum(centre, edge)
    asphalt = A * ((1.0 + 0.45 * n1 + 0.5 * n2) * track)
    road = asphalt.mix(B * (1.0 + 0.3 * n2), paint)
    # sidewalk: paving slabs with joints and per-slab shade
    slab = jnp.maximum(p[0], 0.1)
    cov, ci, cj = _tiles(s, tt, slab, slab, 0.03, iws, iwt)
    shade = 0.9 + 0.2 * _hash(ci, cj, S["noise_seed"])
    sidewalk = A * ((1.0 + 0.35 * n1 + 0.3 * n2) * (0.62 + 0.38 * cov)
                    * (1.0 + _fade(slab, jnp.minimum(iws, iwt)) * (shade - 1.0)))
    # kerb: 1 m blocks along the kerb
    kcov = _tiles(s, tt + 0.5, 1.0, 100.0, 0.02, iws, iwt)[0]
    kerb = A * ((1.0 + 0.3 * n1 + 0.25 * n2) * (0.6 + 0.4 * kcov))
    # building: floors, windows (shop fronts on the ground floor), frames, blocks, cornice
    fh, pw = jnp.maximum(p[0], 1.0), jnp.maximum(p[1], 1.0)
    tf = tt / fh
    fl = jnp.floor(tf)
    ft = (tf - fl) * fh
    sc = s / pw
    col = jnp.floor(sc)
    xs = jnp.abs(sc - col - 0.5) * pw
    gf = fl < 1
    ww = jnp.where(gf, 0.78 * pw, p[2] * pw)
    wy0 = jnp.where(gf, 0.3, 0.95)
    wh = jnp.where(gf, fh - 0.75, p[3] * fh)
    below_roof = (tt < p[5] - 0.9).astype(f32)
    win = _aa(0.5 * ww - xs, iws) * _aa(jnp.minimum(ft - wy0, wy0 + wh - ft), iwt) * below_roof
    frame = _aa(0.5 * ww + 0.09 - xs, iws) \
        * _aa(jnp.minimum(ft - wy0 + 0.14, wy0 + wh + 0.07 - ft), iwt) * below_roof - win
    fw = _fade(pw, iws) * _fade(fh, iwt)
    wmean = (ww * wh) / (pw * fh) * below_roof
    win = wmean + fw * (win - wmean)
    frame = fw * frame
    rb = jnp.floor(tt * (1 / 0.32))
    block = _tiles(s + 0.3 * (rb - 2 * jnp.floor(0.5 * rb)), tt + 0.16, 0.6, 0.32, 0.025,
                   iws, iwt)[0]
    ledge = jnp.where((ft < 0.18) & (fl >= 1), 0.82, 1.0)
    cornice = jnp.where(tt > p[5] - 0.5, 0.7, 1.0)
    wall = A * ((1.0 + 0.25 * n1 + 0.2 * n2) * (1.0 - p[4] * 0.35 * (1.0 - block))
                * ledge * cornice)
    pane = B * (0.45 + 1.1 * _hash(col.astype(jnp.int32), fl.astype(jnp.int32), S["noise_seed"])
                + 0.25 * ft / fh)
    building = wall * (1.0 - win - frame) + pane * win + 0.82 * frame
    # car body: wheels on the sides, lights and plate on front/back, dark sills
    Lz, Wx = G[5] - G[2], G[3] - G[0]
    paintc = A * ((1.0 + 0.15 * n1) * (0.92 + 0.1 * jnp.clip(tt, 0.0, 1.0)))
    dwh = jnp.minimum(jnp.abs(s - 0.82), jnp.abs(s - (Lz - 0.82)))
    rw = jnp.sqrt(dwh * dwh + (tt - 0.33) ** 2)
    side_f = ax_x.astype(f32)
    fb = (~ax_x & ~ax_y).astype(f32)
    tyre = _aa(0.33 - rw, iws) * side_f
    hub = _aa(0.17 - rw, iws) * side_f
    sill = _aa(0.2 - tt, iwt) * (side_f + fb)
    xsc = jnp.abs(s - 0.5 * Wx)
    lamp = _aa(jnp.minimum(xsc - (0.5 * Wx - 0.42), (0.5 * Wx - 0.1) - xsc), iws) \
        * _aa(jnp.minimum(tt - 0.56, 0.72 - tt), iwt) * fb
    plate = _aa(0.26 - xsc, iws) * _aa(jnp.minimum(tt - 0.3, 0.42 - tt), iwt) * fb
    car = paintc * (1 - sill) + 0.06 * sill
    car = car.mix(B, lamp).mix(0.88, plate).mix(0.05, tyre).mix(0.5, hub)
    # cabin: glass with pillars, roof in paint
    Ls = jnp.where(ax_x, Lz, Wx)
    Hcab = G[4] - G[1]
    glass = _aa(jnp.minimum(s - 0.1, Ls - 0.1 - s), iws) \
        * _aa(jnp.minimum(tt - 0.05, Hcab - 0.07 - tt), iwt) * (1.0 - ax_y.astype(f32))
    glass = glass * (1.0 - _aa(0.06 - jnp.abs(s - 0.5 * Ls), iws) * side_f)
    cabin = paintc.mix(B * (0.8 + 0.8 * tt / jnp.maximum(Hcab, 0.1)), glass)
    # pole (metal with a painted band), trunk (bark), crown (leaves)
    band = _aa(jnp.minimum(tt - p[0], p[0] + 0.4 - tt), iwt)
    pole = (A * (1.0 + 0.3 * n1 + 0.2 * n2)).mix(B, band)
    trunk = A * (1.0 + 0.7 * n1 + 0.6 * n2)
    crown = A.mix(B, jnp.clip(0.5 + 1.6 * n1, 0.0, 1.0)) * (1.0 + 1.3 * n2)
    # anomaly: 3-D checker / zebra / dots in neon colours, in the object's frame
    conds = [m == M_ROAD, m == M_SIDEWALK, m == M_KERB, m == M_BUILDING, m == M_CAR,
             m == M_CABIN, m == M_POLE, m == M_TRUNK, m == M_CROWN]
    choices = [road, sidewalk, kerb, building, car, cabin, pole, trunk, crown]
    if anomalies:
        cs = jnp.maximum(p[1], 0.05)
        ics = 1.0 / cs
        wrel = ics / jnp.minimum(iws, iwt)  # footprint in pattern cells

        def tri(x):  # triangle wave in [-1, 1], period 1
            return 1.0 - 4.0 * jnp.abs(_centred(x))

        chk = tri(0.5 * lx * ics) * tri(0.5 * ly * ics) * tri(0.5 * lz * ics)
        zeb = tri(0.5 * (lx + 0.7 * lz + 0.4 * ly) * ics)
        dot_r = jnp.sqrt(_centred(lx * ics) ** 2 + _centred(ly * ics) ** 2
                         + _centred(lz * ics) ** 2)
        pat = jnp.where(p[0] < 1, 0.5 + 0.5 * jnp.clip(chk / wrel, -1.0, 1.0),
                        jnp.where(p[0] < 2, 0.5 + 0.5 * jnp.clip(zeb / wrel, -1.0, 1.0),
                                  jnp.clip((0.33 - dot_r) / wrel + 0.5, 0.0, 1.0)))
        pat = 0.5 + jnp.clip(1.0 / wrel - 1.0, 0.0, 1.0) * (pat - 0.5)
        anomaly = A.mix(B, pat) * (1.0 + 0.1 * n1)
        conds.append(m == M_ANOMALY)
        choices.append(anomaly)
    # sky: horizon -> zenith gradient, clouds
    grad = jnp.clip(elev * 3.0, 0.0, 1.0)
    skyc = B.mix(A, jnp.sqrt(grad))
    cloud = jnp.clip((n1 + 0.6 * n2 + p[0] - 0.55) * 3.0, 0.0, 1.0) * p[0] \
        * jnp.clip((elev - 0.03) * 8.0, 0.0, 1.0)  # thin out towards the horizon
    skyc = skyc.mix(_RGB(0.93, 0.93, 0.95), 0.85 * cloud)
    albedo = _select(conds, choices, skyc)
    return albedo, (jnp.where(m == M_ANOMALY, 0.25, 0.0) if anomalies else 0.0)


def _unpack(packed):
    """uint32 [...] with 3 × 10-bit channels -> float32 [..., 3] in [0, 1]."""
    q = jnp.stack([packed & 1023, (packed >> 10) & 1023, (packed >> 20) & 1023], -1)
    return q.astype(jnp.float32) * jnp.float32(1.0 / _QMAX)


_VIEWS = ("center", "right", -1, 1)  # view ids 0..3


def _view_ids(cfg: _Config):
    """Views rendered per sample (indices into _VIEWS), in order."""
    return ([0] + ([1] if "stereo" in cfg.groups else [])
            + ([2, 3] if "temporal" in cfg.groups else []))


def _camera(S, view, cfg: _Config):
    """(R_cam_to_world [3,3], centre [3], time k, pose [4,4]: camera 0 -> this camera) of
    view id ``view`` (traced int: 0 centre, 1 right, 2 previous, 3 next frame)."""
    R0 = _ry(S["yaw0"])
    c0 = jnp.zeros(3, jnp.float32)
    Rs, cs = [R0, R0], [c0, R0 @ jnp.array([cfg.baseline, 0.0, 0.0], jnp.float32)]
    for k in (-1, 1):
        psi_mid = S["yaw0"] + k * S["yaw_rate"] / 2
        cs.append(k * S["speed"] * jnp.stack([jnp.sin(psi_mid), 0.0, jnp.cos(psi_mid)]))
        Rs.append(_ry(S["yaw0"] + k * S["yaw_rate"]))
    R, c = jnp.stack(Rs)[view], jnp.stack(cs)[view]
    k = jnp.array([0.0, 0.0, -1.0, 1.0], jnp.float32)[view]
    return R, c, k, _relative(R0, c0, R, c)


def _relative(R0, c0, Rk, ck):
    """[4,4] transform mapping camera-0 points into camera k."""
    Rt = Rk.T
    top = jnp.concatenate([Rt @ R0, (Rt @ (c0 - ck))[:, None]], 1)
    return jnp.concatenate([top, jnp.array([[0.0, 0.0, 0.0, 1.0]], jnp.float32)], 0)


def _render_program(indices, views, seed, split_code, moving, ones_s, ones_px, rays,
                    cfg: _Config):
    """Program 1 of 2: render views ``views`` [n] (ids into _VIEWS) of samples ``indices``
    [n] (``seed``, ``split_code``, ``moving`` are traced scalars). ``ones_s`` [n, n_scene]
    and ``ones_px`` [n, H, W] are runtime float32 ones (see the comment above ``_pack``):
    dividing the flattened scene parameters by them keeps XLA from re-deriving every
    parameter inside every per-pixel loop. Returns (packed rgb uint32 [n,H,W], depth
    [n,H,W], labels [n,H,W], moving [n,H,W], pose [n,4,4])."""

    def one(index, view, one_s, one_px):
        S = _make_scene(_sample_key(seed, split_code, index), cfg, moving)
        flat, unravel = ravel_pytree((S, _camera(S, view, cfg)))
        S, (R, c, k, pose) = unravel(flat / one_s)
        return _render(S, R, c, k, rays, one_px, cfg) + (pose,)

    return jax.vmap(one)(indices, views, ones_s, ones_px)


def _finish(chunks, K, cfg: _Config, batch: int):
    """Program 2 of 2: join the rendered views, unpack the images, build the output dict."""
    packed, depth, label, moving, pose = (jnp.concatenate(x) for x in zip(*chunks))
    B, ids = batch, _view_ids(cfg)
    V = len(ids)
    packed, depth, label, moving, pose = (x[:B * V].reshape((B, V) + x.shape[1:])
                                          for x in (packed, depth, label, moving, pose))
    rgb = _unpack(packed)
    depth = depth[..., None]
    out = {"image": rgb[:, 0], "depth": depth[:, 0], "labels": label[:, 0],
           "anomaly": label[:, 0] == ANOMALY, "moving": moving[:, 0],
           "K": jnp.broadcast_to(K, (B, 3, 3))}
    if "stereo" in cfg.groups:
        i = ids.index(1)
        T = jnp.eye(4, dtype=jnp.float32).at[0, 3].set(-cfg.baseline)
        out.update(image_right=rgb[:, i], depth_right=depth[:, i],
                   baseline=jnp.full((B,), cfg.baseline, jnp.float32),
                   stereo_T=jnp.broadcast_to(T, (B, 4, 4)))
    if "temporal" in cfg.groups:
        out["frames"] = {k: rgb[:, ids.index(v)] for k, v in ((-1, 2), (1, 3))}
        out["frames_depth"] = {k: depth[:, ids.index(v)] for k, v in ((-1, 2), (1, 3))}
        out["poses"] = {k: pose[:, ids.index(v)] for k, v in ((-1, 2), (1, 3))}
    return {k: v for k, v in out.items() if k in cfg.keys}


@functools.lru_cache(maxsize=16)
def _ones(*shape):
    return jnp.ones(shape, jnp.float32)


def _chunk_size(n_views: int) -> int:
    """Views per render call. XLA:CPU runs each fusion on a single thread but executes
    separately dispatched programs concurrently, so on CPU every view is its own call (one
    compiled program per config, whatever the batch size; the calls spread over the
    cores). Accelerators get all views in one call."""
    return 1 if jax.default_backend() == "cpu" else n_views


def _canonical(cfg: _Config, **changes) -> _Config:
    """The config with what the programs take as traced inputs (split, moving_objects)
    set to fixed values, so that configs differing only in those share compiled programs."""
    return dataclasses.replace(cfg, split="train", moving_objects=False, **changes)


@functools.lru_cache(maxsize=32)
def _finish_fn(cfg: _Config):
    return jax.jit(functools.partial(_finish, cfg=cfg), static_argnames="batch")


@functools.lru_cache(maxsize=32)
def _render_fn(cfg: _Config):
    """(jitted render program, rays, n_scene) for a config whose split, moving_objects and
    keys are canonical: those are traced (or only select views), so train/val/test and
    moving on/off share one compiled program."""
    K = intrinsics(cfg.height, cfg.width)
    v, u = np.meshgrid(np.arange(cfg.height, dtype=np.float32),
                       np.arange(cfg.width, dtype=np.float32), indexing="ij")
    with jax.ensure_compile_time_eval():  # a concrete array, even if first called in a trace
        rays = jnp.asarray(np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]]))
    n_scene = jax.eval_shape(lambda: ravel_pytree(_make_scene_and_camera(cfg))[0]).shape[0]
    return jax.jit(functools.partial(_render_program, cfg=cfg)), rays, n_scene


@functools.lru_cache(maxsize=64)
def _compiled(cfg: _Config):
    """``run(indices uint32 [B], seed uint32) -> dict`` for one config (see the comment
    above ``_pack`` for why rendering is split into programs)."""
    render, rays, n_scene = _render_fn(_canonical(cfg, keys=OUTPUT_KEYS))
    finish = _finish_fn(_canonical(cfg))
    Kj = jnp.asarray(intrinsics(cfg.height, cfg.width))
    ids = np.array(_view_ids(cfg), np.int32)
    split_code = jnp.uint32(_SPLIT_CODE[cfg.split])
    moving = jnp.bool_(cfg.moving_objects)

    def run(indices, seed):
        B = int(indices.shape[0])
        n = B * len(ids)
        c = _chunk_size(n)
        pad = -n % c
        idx = np.concatenate([np.repeat(np.asarray(indices, np.uint32), len(ids)),
                              np.zeros(pad, np.uint32)])
        vid = np.concatenate([np.tile(ids, B), np.zeros(pad, np.int32)])
        ones_s, ones_px = _ones(c, n_scene), _ones(c, cfg.height, cfg.width)
        outs = [render(idx[i:i + c], vid[i:i + c], seed, split_code, moving, ones_s, ones_px,
                       rays) for i in range(0, n + pad, c)]  # dispatched asynchronously
        return finish(outs, Kj, batch=B)

    return run


def _traced_batch(cfg: _Config, indices, seed):
    """sample_batch inside a caller's trace: the same programs, inlined."""
    indices = jnp.asarray(indices)
    if indices.ndim != 1:
        raise ValueError(f"indices must be a 1-D integer array, got shape {indices.shape}")
    render, rays, n_scene = _render_fn(_canonical(cfg, keys=OUTPUT_KEYS))
    ids = jnp.asarray(_view_ids(cfg), jnp.int32)
    B, V = indices.shape[0], ids.shape[0]
    out = render(jnp.repeat(indices.astype(jnp.uint32), V), jnp.tile(ids, B),
                 jnp.asarray(seed).astype(jnp.uint32), jnp.uint32(_SPLIT_CODE[cfg.split]),
                 jnp.bool_(cfg.moving_objects), jnp.ones((B * V, n_scene), jnp.float32),
                 jnp.ones((B * V, cfg.height, cfg.width), jnp.float32), rays)
    return _finish([out], jnp.asarray(intrinsics(cfg.height, cfg.width)), cfg, batch=B)


def _make_scene_and_camera(cfg: _Config):
    S = _make_scene(_sample_key(jnp.uint32(0), jnp.uint32(0), jnp.uint32(0)), cfg)
    return S, _camera(S, jnp.int32(0), cfg)


def _check_seed(seed):
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return np.uint32(seed)


def _check_indices(indices):
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise ValueError(f"indices must be a 1-D integer array, got shape {idx.shape} "
                         f"dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= 2**31):
        raise ValueError(f"indices must lie in [0, 2**31), got min {idx.min()} max {idx.max()}")
    return idx.astype(np.uint32)


def sample_batch(indices, *, seed: int = 0, height: int = 96, width: int = 320,
                 split: str = "train", keys=None, **options) -> dict:
    """Render the samples ``indices`` (1-D ints) with jit-compiled, batched programs.

    Returns a dict of JAX arrays with a leading batch axis ``B = len(indices)``; the keys
    and per-sample shapes are those of :func:`sample` (``baseline`` is ``[B]``). ``keys``
    (default: all of :data:`OUTPUT_KEYS`) selects outputs; the stereo view and the
    neighbour frames are rendered only if one of their keys is selected. Sample ``i`` of
    the result equals ``sample(indices[i], ...)`` bit for bit (when called eagerly).

    Called eagerly (the usual case) it compiles one render program per resolution and
    anomaly setting, whatever the batch size, split or ``moving_objects``. It can also be
    traced inside ``jax.jit`` (``indices`` and ``seed`` may then be traced arrays), e.g. to
    generate data on an accelerator within a training step: the same scenes, equal up to
    float rounding (XLA optimises the inlined programs differently); on CPU the eager call
    is faster (see the comment above ``_pack``).
    """
    cfg = _config(height, width, split, keys, options)
    if isinstance(indices, jax.core.Tracer) or isinstance(seed, jax.core.Tracer):
        return _traced_batch(cfg, indices, seed)
    idx = _check_indices(indices)
    return _compiled(cfg)(idx, jnp.uint32(_check_seed(seed)))


def sample(index: int, *, seed: int = 0, height: int = 96, width: int = 320,
           split: str = "train", keys=None, **options) -> dict:
    """One procedural street scene: a pure, deterministic function of its arguments.

    Keys (NumPy arrays; ``H = height``, ``W = width``):

    - ``image`` ``[H,W,3]`` float32 in [0, 1]; ``depth`` ``[H,W,1]`` float32 metres (z of
      the first hit; 0 where nothing lies within ``max_depth``: sky);
    - ``labels`` ``[H,W]`` int32 indices into :data:`CLASSES`; ``anomaly`` ``[H,W]`` bool
      (``labels == ANOMALY``); ``moving`` ``[H,W]`` bool (cars with their own motion);
    - ``K`` ``[3,3]`` float32 pixel intrinsics (:func:`intrinsics`);
    - ``image_right`` ``[H,W,3]``, ``depth_right`` ``[H,W,1]``: the right camera (camera 0
      moved ``+baseline`` along x); ``baseline`` float32 scalar (metres); ``stereo_T``
      ``[4,4]``: camera 0 -> right camera (identity, ``t_x = -baseline``);
    - ``frames`` ``{-1: [H,W,3], 1: [H,W,3]}`` previous / next frame, ``frames_depth``
      ``{-1: [H,W,1], 1: [H,W,1]}`` their depths, ``poses`` ``{-1: [4,4], 1: [4,4]}``
      float32 transforms of 3-D points from camera 0 into camera ±1.

    Images are quantised to 10 bits per channel (multiples of 1/1023). ``keys`` selects
    outputs (see :func:`sample_batch`).

    Options (see :data:`OPTIONS`): ``moving_objects`` (cars move between frames),
    ``anomalies`` (default: ``split == "ood"``), ``max_depth`` (80 m), ``baseline``
    (0.54 m), ``camera_height`` (1.65 m). Splits ``train``/``val``/``test``/``ood`` draw
    from disjoint random streams.
    """
    if np.ndim(index) != 0:
        raise ValueError(f"index must be a scalar integer, got shape {np.shape(index)}")
    out = sample_batch(np.array([index]), seed=seed, height=height, width=width, split=split,
                       keys=keys, **options)
    return jax.tree.map(lambda x: np.asarray(x[0]), out)


@functools.lru_cache(maxsize=16)
def _scene_fn(cfg: _Config):
    return jax.jit(lambda i, s, code, moving: _make_scene(_sample_key(s, code, i), cfg, moving))


def scene_description(index: int, *, seed: int = 0, split: str = "train", **options) -> dict:
    """The primitives of a sample's scene at frame 0 (NumPy; for tests and debugging).

    World = camera 0's frame rotated by ``-yaw0`` about y (so the road runs along +z);
    camera 0 sits at the origin. Keys: ``box_lo``/``box_hi`` ``[Nb,3]`` and ``box_vz``
    ``[Nb]`` (z velocity, m/frame), ``box_label`` ``[Nb]``; ``cylinders`` ``[Nc,5]``
    ``(x, z, radius, y_top, y_bottom)`` and ``cylinder_label``; ``ellipsoids`` ``[Ne,6]``
    ``(centre, radii)`` and ``ellipsoid_label``; ``cones`` ``[Nk,5]`` ``(x, z, radius,
    y_apex, y_base)``; ``kerbs`` ``(x_left, x_right)``; ``sidewalk_y``; ``road_y``;
    ``yaw0`` (radians, camera 0's yaw: ``X_world = R_y(yaw0) X_cam``).
    """
    cfg = _config(1, 1, split, None, options)
    idx = int(_check_indices([index])[0])
    S = _scene_fn(_canonical(cfg))(jnp.uint32(idx), jnp.uint32(_check_seed(seed)),
                                   jnp.uint32(_SPLIT_CODE[split]), jnp.bool_(cfg.moving_objects))
    S = jax.tree.map(np.asarray, S)
    labels = np.concatenate([np.full(n, _LABEL_OF_MAT[mt]) for *_, n, mt in cfg.layout])
    nb, nc = cfg.count("box"), cfg.count("cyl")
    ne = cfg.count("ell")
    return {"box_lo": S["box_lo"], "box_hi": S["box_hi"], "box_vz": S["box_vz"],
            "box_label": labels[:nb], "cylinders": S["cyl"], "cylinder_label": labels[nb:nb + nc],
            "ellipsoids": S["ell"], "ellipsoid_label": labels[nb + nc:nb + nc + ne],
            "cones": S["cone"], "kerbs": S["band"][:2], "sidewalk_y": S["band"][2],
            "road_y": np.float32(cfg.camera_height), "yaw0": S["yaw0"]}


# ----------------------------------------------------------------------------- source
class SyntheticSource:
    """Random-access data source of procedural scenes (the project's source protocol).

    ``len(src)``; ``src[i]`` -> dict of NumPy arrays (one sample, keys as :func:`sample`,
    restricted to ``keys``); ``src.get_batch(indices)`` -> the same, stacked, rendered
    in one jit-compiled call. ``length`` defaults to :attr:`DEFAULT_LENGTH` of the split.
    Sample ``i`` is ``sample(i, seed=seed, split=split, ...)``.
    """

    DEFAULT_LENGTH = {"train": 20000, "val": 1000, "test": 1000, "ood": 1000}

    def __init__(self, split: str = "train", *, seed: int = 0, height: int = 96,
                 width: int = 320, length: int | None = None, keys=None, **options):
        self.cfg = _config(height, width, split, keys, options)
        self.split, self.seed = split, int(_check_seed(seed))
        self.height, self.width, self.options = int(height), int(width), dict(options)
        self.keys = self.cfg.keys
        length = self.DEFAULT_LENGTH[split] if length is None else length
        if not isinstance(length, (int, np.integer)) or isinstance(length, bool) or length <= 0:
            raise ValueError(f"length must be a positive integer, got {length!r}")
        self.length = int(length)

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (f"SyntheticSource(split={self.split!r}, seed={self.seed}, height={self.height}, "
                f"width={self.width}, length={self.length}, keys={list(self.keys)}, "
                f"options={self.options})")

    def _render(self, indices: np.ndarray) -> dict:
        out = _compiled(self.cfg)(indices.astype(np.uint32), jnp.uint32(self.seed))
        return jax.tree.map(np.asarray, out)

    def __getitem__(self, i) -> dict:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"index must be an integer, got {type(i).__name__}")
        j = int(i) + self.length if i < 0 else int(i)
        if not 0 <= j < self.length:
            raise IndexError(f"index {i} out of range for {self.length} samples")
        return jax.tree.map(operator.itemgetter(0), self._render(np.array([j])))

    def get_batch(self, indices) -> dict:
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a 1-D integer array, got shape {idx.shape} "
                             f"dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.length):
            raise IndexError(f"indices must lie in [0, {self.length}), got "
                             f"[{idx.min()}, {idx.max()}]")
        return self._render(idx)


# ----------------------------------------------------------------------------- preview
def _preview(path, n: int = 3, seed: int = 0, height: int = 96, width: int = 320):
    """Grid: rows = samples (``n`` train with moving cars + 1 ood), columns = image, depth,
    labels, right view, next frame, anomaly mask."""
    from jaxdepth import viz

    rows = [sample(i, seed=seed, height=height, width=width, split="train", moving_objects=True)
            for i in range(n)]
    rows.append(sample(0, seed=seed, height=height, width=width, split="ood"))
    images, titles = [], []
    for r, s in enumerate(rows):
        d = s["depth"][..., 0]
        split = "ood" if r == n else "train"
        disp = viz.colorize(np.where(d > 0, 1.0 / np.maximum(d, 1e-3), np.nan), cmap="magma",
                            vmin=0.0, vmax=1.0 / 4.0)
        lab = CLASS_COLORS[s["labels"]]
        amask = (s["image"] * 0.35 * 255).astype(np.uint8)
        amask[s["anomaly"]] = (255, 40, 40)
        amask[s["moving"]] = (40, 200, 255)
        images += [s["image"], disp, lab, s["image_right"], s["frames"][1], amask]
        titles += [f"{split} #{r if r < n else 0} image", "depth (1/z)", "labels",
                   "right view", "frame +1", "anomaly (red) / moving (blue)"]
    return viz.save_panel(path, images, titles=titles, ncols=6)


def _main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m jaxdepth.data.synthetic",
                                 description="Procedural street scenes: save a preview grid.")
    ap.add_argument("--preview", metavar="OUT.png", required=True,
                    help="write a grid of samples (image, depth, labels, right, next, anomaly)")
    ap.add_argument("--samples", type=int, default=3, help="train samples (+1 ood sample)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=320)
    a = ap.parse_args(argv)
    path = _preview(a.preview, a.samples, a.seed, a.height, a.width)
    print(f"wrote {path}")


if __name__ == "__main__":
    _main()
