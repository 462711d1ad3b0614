"""Scene layout: what a procedural street scene contains and where its cameras are.

The constants of the data set (classes, splits, options, output keys, intrinsics), the
validated configuration of a render (:class:`_Config`: resolution, split, options and
selected keys; it also fixes the primitive groups, in id order, and so the shapes of the
scene tables), the random scene description (:func:`_make_scene`: road, kerbs and
sidewalks, buildings, cars, poles, trees, anomalies, materials, sun and sky, ego motion,
all drawn from one PRNG tape) and the camera of every view (:func:`_camera`).

Coordinates: camera 0's frame at frame 0 rotated by ``-yaw0`` about y is the world (x right,
y down, z forward; the road plane is ``y = camera_height``, the road runs along +z, camera 0
sits at the origin). ``K`` is KITTI's normalised :data:`K_NORM` scaled by ``(width,
height)``. ``poses[k]`` maps points from camera 0 into camera ``k`` (``X_k = poses[k] @
[X_0, 1]``); the right camera is camera 0 moved by ``+baseline`` along its x axis; the
cameras have no pitch or roll.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from .materials import (_NEON, _PAINTS, _PAVING, _WALLS, M_ANOMALY, M_BUILDING, M_CABIN, M_CAR,
                        M_CROWN, M_POLE, M_TRUNK)

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
# Class label of each material (materials.M_ROAD ... M_SKY).
_LABEL_OF_MAT = np.array([ROAD, SIDEWALK, SIDEWALK, BUILDING, CAR, CAR, POLE, VEGETATION,
                          VEGETATION, ANOMALY, SKY], np.int32)


# ----------------------------------------------------------------------------- config
@dataclasses.dataclass(frozen=True)
class _Config:
    """A validated render configuration (hashable: it keys the compiled-program caches)."""

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


def _ry(psi):
    """[3,3] rotation by ``psi`` about the y axis."""
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
        # < 2**24 so that it survives the float32 round trip in raycast._render_program
        noise_seed=jax.random.randint(jax.random.fold_in(key, 1), (), 0,
                                      1 << 24).astype(jnp.uint32),
        yaw0=T(math.radians(-3), math.radians(3)), speed=T(0.5, 1.5),
        yaw_rate=T(math.radians(-2), math.radians(2)))


# ----------------------------------------------------------------------------- cameras
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

