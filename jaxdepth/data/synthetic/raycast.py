"""Ray casting: one view of a scene, from camera rays to packed pixels.

:func:`_render` casts one ray per pixel against every primitive family (axis-aligned
boxes, vertical cylinders, ellipsoids, vertical cones, and the ground: road plane, raised
sidewalks, kerb faces), keeps the nearest hit, gathers what was hit from the scene's
tables (:class:`~.materials.Hit`), derives normals, surface coordinates and the pixel
footprint, asks :mod:`.materials` for albedo and emission, and composites: shading is
Lambertian (sun + hemispheric ambient, per-scene sun direction, colour temperature and
exposure) with cast sun shadows of buildings, cars and tree crowns (shadow rays from the
hit point) and ambient occlusion under cars; the sky (beyond ``max_depth``) keeps its
albedo. Images leave as three 10-bit channels packed into one uint32 per pixel
(:func:`_unpack` turns them into float32 in [0, 1]); depth is the hit distance along z,
exact up to a relative 8e-6 because its 6 low mantissa bits carry the primitive id during
the nearest-hit search (:func:`_pack`).

:func:`_render_program` (program 1 of 2 of a batch, see :mod:`.source`) renders a batch
of views, each from its sample's scene and camera.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from .layout import (_LABEL_OF_MAT, _N_CAR, _N_SIDE, _N_TREE, K_NORM, _camera, _Config,
                     _make_scene, _sample_key)
from .materials import (M_KERB, M_ROAD, M_SIDEWALK, M_SKY, _RGB, FilterWidths, Hit, Noise,
                        SurfaceCoords, _materials, _rows, _surface_noise)

_QMAX = 1023  # images are quantised to 10 bits per channel (see _quantise)
_NONE = 63  # object id of "no hit" (ids are packed into the 6 low bits of t)
_EPS = 1e-3  # nearest hit distance (metres)

# ----------------------------------------------------------------------------- rendering
# Performance notes (XLA:CPU, jax 0.10). XLA:CPU has no multi-output fusion: a value used
# by several fusions is recomputed in each (cheap ops) or, for "expensive" ops (divide,
# sqrt, gather...), materialised with its whole cheap input cone recomputed; it also runs
# each fusion on a single thread. Left alone, the shading below cost ~10× its size. So
# (1) the flattened scene parameters and the shared per-pixel values are materialised
# explicitly, by dividing them by a runtime array of ones (which XLA can neither fold nor
# duplicate; see `_Barrier`); (2) the image leaves the render program as one packed uint32
# per pixel and is unpacked by another program, so all material code runs once per pixel
# rather than once per colour channel; (3) the nearest hit is an unrolled elementwise
# min chain (a fused reduce over a primitive axis is not vectorised across pixels);
# (4) on CPU every view is its own asynchronously dispatched call, so a batch spreads
# over the cores (see source._chunk_size).
_NOHIT = int(np.float32(1e30).view(np.int32)) | _NONE  # finite, above every hit


def _pack(t, ok, ids):
    """(t, id) packed into one int32 whose order is t's (t > 0): min over primitives."""
    key = (lax.bitcast_convert_type(t, jnp.int32) & jnp.int32(~_NONE)) | ids
    return jnp.where(ok, key, jnp.int32(_NOHIT))


def _unpack(packed):
    """uint32 [...] with 3 × 10-bit channels -> float32 [..., 3] in [0, 1]."""
    q = jnp.stack([packed & 1023, (packed >> 10) & 1023, (packed >> 20) & 1023], -1)
    return q.astype(jnp.float32) * jnp.float32(1.0 / _QMAX)


def _quantise(sky, albedo: _RGB, shaded: _RGB):
    """The packed uint32 pixels: albedo where the sky is seen, else the shaded colour,
    quantised to 10 bits per channel."""
    q = [jnp.round(jnp.clip(jnp.where(sky, a, b), 0.0, 1.0) * _QMAX).astype(jnp.uint32)
         for a, b in zip(albedo.c, shaded.c)]
    return q[0] | (q[1] << 10) | (q[2] << 20)


class _Barrier:
    """Materialises per-pixel values by dividing them by ``ones``, a runtime float32 array
    of ones (which XLA can neither fold nor duplicate; see the performance notes above)."""

    def __init__(self, ones):
        self.ones = ones

    def __call__(self, x):
        ones = self.ones
        if x.dtype == jnp.float32:
            return x / ones
        if x.dtype == jnp.bool_:
            return (x.astype(jnp.float32) / ones) > 0.5
        return (x.astype(jnp.float32) / ones).astype(x.dtype)  # small ints only

    def key(self, x):
        """The same for packed int32 keys: they are bit patterns of normal floats, so they
        pass exactly through ``x / 1``."""
        return lax.bitcast_convert_type(lax.bitcast_convert_type(x, jnp.float32) / self.ones,
                                        jnp.int32)


# ----------------------------------------------------------------------------- rays
class Ray(NamedTuple):
    """The rays of one view in world coordinates."""

    origin: tuple  # (ox, oy, oz) scalars: the camera centre
    direction: tuple  # (dx, dy, dz) [H,W]: camera z = 1, so the ray parameter t is depth
    inv_direction: tuple  # (1/dx, 1/dy, 1/dz) [H,W], materialised


class _Primitives(NamedTuple):
    """The scene's primitives at the view's time (boxes moved; see _render)."""

    box_lo: jax.Array  # [Nb,3]
    box_hi: jax.Array  # [Nb,3]
    cyl: jax.Array  # [Nc,5] (x, z, radius, y_top, y_bottom)
    ell: jax.Array  # [Ne,6] (centre, radii)
    ell_inv_radii: jax.Array  # [Ne,3]
    cone: jax.Array  # [Nk,5] (x, z, radius, y_apex, y_base)


class _Family(NamedTuple):
    """Which primitive family each pixel's hit belongs to (bool [H,W]; none: sky)."""

    box: jax.Array
    ellipsoid: jax.Array
    cone: jax.Array
    ground: jax.Array  # road, sidewalk or kerb


def _camera_rays(R, c, rays, barrier: _Barrier) -> Ray:
    """World rays of the camera with rotation ``R`` (camera to world) and centre ``c``;
    ``rays`` [2,H,W] is (K⁻¹ [u,v,1])_xy."""
    dxc, dyc = rays
    dx = R[0, 0] * dxc + R[0, 1] * dyc + R[0, 2]
    dy = R[1, 0] * dxc + R[1, 1] * dyc + R[1, 2]
    dz = R[2, 0] * dxc + R[2, 1] * dyc + R[2, 2]  # camera z = 1: t is the depth
    ox, oy, oz = c[0], c[1], c[2]
    idx, idy, idz = barrier(1.0 / dx), barrier(1.0 / dy), barrier(1.0 / dz)
    return Ray((ox, oy, oz), (dx, dy, dz), (idx, idy, idz))


# ----------------------------------------------------------------------------- intersections
# Each family folds its hits into ``key`` (packed (t, id), see _pack): the nearest hit
# over all primitives is one unrolled elementwise min chain.
def _nearest(key, t, ok, i):
    return jnp.minimum(key, _pack(t, ok, i))


def _hit_boxes(key, ray: Ray, lo, hi, cfg: _Config):
    """Axis-aligned boxes ``lo``/``hi`` [Nb,3] (slab test), ids 0..Nb-1. Rays always point
    forward (dz > 0: |yaw| <= 5°, half field of view 41°), so the z slab needs no sort."""
    (ox, oy, oz), _, (idx, idy, idz) = ray
    eps, maxd = _EPS, cfg.max_depth
    for i in range(lo.shape[0]):
        tx1, tx2 = (lo[i, 0] - ox) * idx, (hi[i, 0] - ox) * idx
        ty1, ty2 = (lo[i, 1] - oy) * idy, (hi[i, 1] - oy) * idy
        tn = jnp.maximum(jnp.maximum(jnp.minimum(tx1, tx2), jnp.minimum(ty1, ty2)),
                         (lo[i, 2] - oz) * idz)
        tf = jnp.minimum(jnp.minimum(jnp.maximum(tx1, tx2), jnp.maximum(ty1, ty2)),
                         (hi[i, 2] - oz) * idz)
        key = _nearest(key, tn, (tn <= tf) & (tn > eps) & (tn < maxd), i)
    return key


def _hit_cylinders(key, ray: Ray, cyl, a2, ia2, first: int, cfg: _Config):
    """Vertical cylinders ``cyl`` [Nc,5] without caps, ids ``first``...; ``a2`` = dx² + dz²
    and ``ia2`` its (materialised) inverse."""
    (ox, oy, oz), (dx, dy, dz), _ = ray
    eps, maxd = _EPS, cfg.max_depth
    for i in range(cyl.shape[0]):
        ocx, ocz = ox - cyl[i, 0], oz - cyl[i, 1]
        b = ocx * dx + ocz * dz
        disc = b * b - a2 * (ocx * ocx + ocz * ocz - cyl[i, 2] ** 2)
        tc = (-b - jnp.sqrt(jnp.maximum(disc, 0.0))) * ia2
        yc = oy + tc * dy
        ok = (disc > 0) & (tc > eps) & (tc < maxd) & (yc >= cyl[i, 3]) & (yc <= cyl[i, 4])
        key = _nearest(key, tc, ok, first + i)
    return key


def _hit_ellipsoids(key, ray: Ray, ell, ir, first: int, cfg: _Config):
    """Axis-aligned ellipsoids ``ell`` [Ne,6] (inverse radii ``ir`` [Ne,3]), ids
    ``first``..."""
    (ox, oy, oz), (dx, dy, dz), _ = ray
    eps, maxd = _EPS, cfg.max_depth
    oe = (jnp.stack([ox, oy, oz]) - ell[:, :3]) * ir
    for i in range(ell.shape[0]):
        ex, ey, ez = ir[i, 0] * dx, ir[i, 1] * dy, ir[i, 2] * dz
        ae = ex * ex + ey * ey + ez * ez
        be = oe[i, 0] * ex + oe[i, 1] * ey + oe[i, 2] * ez
        de = be * be - ae * (jnp.sum(oe[i] * oe[i]) - 1.0)
        te = (-be - jnp.sqrt(jnp.maximum(de, 0.0))) / ae
        key = _nearest(key, te, (de > 0) & (te > eps) & (te < maxd), first + i)
    return key


def _hit_cones(key, ray: Ray, a2, cn, first: int, cfg: _Config):
    """Vertical cones ``cn`` [Nk,5] (apex up; anomalies only), ids ``first``...; ``a2`` =
    dx² + dz²."""
    (ox, oy, oz), (dx, dy, dz), _ = ray
    eps, maxd = _EPS, cfg.max_depth
    for i in range(cn.shape[0]):
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

        key = _nearest(key, jnp.where(on(t1), t1, t2), on(t1) | on(t2), first + i)
    return key


def _hit_ground(key, ray: Ray, band, first: int, cfg: _Config):
    """The ground: road (``y = camera_height``) between the kerbs, id ``first``; sidewalks
    (``y = ys``) outside, ``first + 1``; the kerb faces, ``first + 2``. ``band`` = (x of
    the left kerb, x of the right kerb, ys)."""
    (ox, oy, _), (dx, dy, _), (idx, idy, _) = ray
    eps, maxd, h = _EPS, cfg.max_depth, cfg.camera_height
    xkl, xkr, ys = band
    t_r = (h - oy) * idy
    x_r = ox + t_r * dx
    key = _nearest(key, t_r, (t_r > eps) & (t_r < maxd) & (x_r >= xkl) & (x_r <= xkr), first)
    t_s = (ys - oy) * idy
    x_s = ox + t_s * dx
    key = _nearest(key, t_s, (t_s > eps) & (t_s < maxd) & ((x_s < xkl) | (x_s > xkr)),
                   first + 1)
    for xk in (xkl, xkr):
        t_k = (xk - ox) * idx
        y_k = oy + t_k * dy
        key = _nearest(key, t_k, (t_k > eps) & (t_k < maxd) & (y_k >= ys) & (y_k <= h),
                       first + 2)
    return key


def _decode(key, n_objects: int):
    """(t [H,W] (0 where nothing was hit), table row [H,W], hit bool [H,W]) of the nearest
    hit ``key``. Rows: objects, road, sidewalk, kerb, sky (``n_objects + 3``)."""
    oid = key & jnp.int32(_NONE)
    hit = oid != _NONE
    t = jnp.where(hit, lax.bitcast_convert_type(key & jnp.int32(~_NONE), jnp.float32), 0.0)
    row = jnp.where(hit, oid, n_objects + 3)
    return t, row, hit


# ----------------------------------------------------------------------------- surfaces
def _geometry_table(prims: _Primitives, cfg: _Config):
    """[P+4, 6] per-row primitive parameters (layout: see materials.Hit.geometry)."""
    cyl, cn = prims.cyl, prims.cone
    box_g = jnp.concatenate([prims.box_lo, prims.box_hi], -1)
    cyl_g = jnp.stack([cyl[:, 0], cyl[:, 3], cyl[:, 1], cyl[:, 2], cyl[:, 4],
                       jnp.zeros(cyl.shape[0])], -1)
    geo = [box_g, cyl_g, prims.ell]
    geo.append(jnp.stack([cn[:, 0], cn[:, 3], cn[:, 1], cn[:, 2], cn[:, 4],
                          jnp.zeros(cn.shape[0])], -1))
    geo.append(jnp.array([[0.0, 0.0, 0.0, 0.0, cfg.camera_height, 0.0]] * 4, jnp.float32))
    return jnp.concatenate(geo)


def _material_of_row(cfg: _Config) -> np.ndarray:
    """int32 [P+4]: the material of every table row (objects, road, sidewalk, kerb, sky)."""
    return np.concatenate([np.repeat(m_, n) for *_, n, m_ in cfg.layout]
                          + [np.array([M_ROAD, M_SIDEWALK, M_KERB, M_SKY])]).astype(np.int32)


def _normals(hit: Hit, family: _Family, kerbs, barrier: _Barrier):
    """(nx, ny, nz) [H,W] unit normals (materialised). Box: the face nearest to the hit
    point; curved surfaces: the implicit-surface gradient; ground: up, and kerb faces
    towards the road (``kerbs`` = x of the left and right kerb)."""
    G, px, py, pz = hit.geometry, hit.x, hit.y, hit.z
    xkl, xkr = kerbs
    fd = [jnp.abs(px - G[0]), jnp.abs(py - G[1]), jnp.abs(pz - G[2]),
          jnp.abs(px - G[3]), jnp.abs(py - G[4]), jnp.abs(pz - G[5])]
    fmin = functools.reduce(jnp.minimum, fd)
    bx = jnp.where(fd[0] == fmin, -1.0, jnp.where(fd[3] == fmin, 1.0, 0.0))
    by = jnp.where((bx == 0) & (fd[1] == fmin), -1.0,
                   jnp.where((bx == 0) & (fd[4] == fmin), 1.0, 0.0))
    bz = jnp.where((bx == 0) & (by == 0), jnp.where(fd[2] == fmin, -1.0, 1.0), 0.0)
    is_ell, is_box, ground = family.ellipsoid, family.box, family.ground
    rx_, rz_, ey_ = px - G[0], pz - G[2], py - G[1]
    gx = jnp.where(is_ell, rx_ / (G[3] * G[3]), rx_)
    gz = jnp.where(is_ell, rz_ / (G[5] * G[5]), rz_)
    k2p = (G[3] / jnp.maximum(G[4] - G[1], 1e-6)) ** 2
    gy = jnp.where(is_ell, ey_ / (G[4] * G[4]), jnp.where(family.cone, -k2p * ey_, 0.0))
    gn = lax.rsqrt(jnp.maximum(gx * gx + gy * gy + gz * gz, 1e-20))
    kerb = hit.material == M_KERB
    kerb_n = jnp.where(px > (xkl + xkr) / 2, -1.0, 1.0)
    nx = barrier(jnp.where(is_box, bx, jnp.where(ground, jnp.where(kerb, kerb_n, 0.0), gx * gn)))
    ny = barrier(jnp.where(is_box, by, jnp.where(ground, jnp.where(kerb, 0.0, -1.0), gy * gn)))
    nz = barrier(jnp.where(is_box, bz, jnp.where(ground, 0.0, gz * gn)))
    return nx, ny, nz


def _surface(ray: Ray, hit: Hit, normal, is_ell, cfg: _Config, barrier: _Barrier):
    """(:class:`SurfaceCoords`, :class:`FilterWidths`) of every pixel (materialised):
    coordinates in the primitive's frame (``t`` = height for walls); for the sky, clouds on
    a plane at infinity (a function of the direction: the same in every view)."""
    (dx, dy, dz), G, px, py, pz, t = ray.direction, hit.geometry, hit.x, hit.y, hit.z, hit.t
    nx, ny, nz = normal
    sky = hit.sky
    anx, any_, anz = jnp.abs(nx), jnp.abs(ny), jnp.abs(nz)
    ax_x = barrier((anx >= any_) & (anx >= anz))
    ax_y = barrier(~ax_x & (any_ >= anz))
    lx, lz = px - G[0], pz - G[2]
    ly = barrier(jnp.where(is_ell, G[1], G[4]) - py)  # height above the primitive's base
    fx = cfg.width * float(K_NORM[0, 0])
    # pixel footprint along s and t: (z/f)·sqrt(1 + (a·d)²/(n·d)²) for surface axis a
    dn = jnp.maximum(jnp.abs(dx * nx + dy * ny + dz * nz), 1e-3)
    inv_fp = fx / jnp.maximum(t, 1e-3)
    ds_, dt_ = jnp.where(ax_x, dz, dx), jnp.where(ax_y, dz, dy)
    iws = inv_fp * dn * lax.rsqrt(dn * dn + ds_ * ds_)
    iwt = inv_fp * dn * lax.rsqrt(dn * dn + dt_ * dt_)
    # sky: clouds on a plane at infinity
    inv_len = lax.rsqrt(dx * dx + dy * dy + dz * dz)
    elev = barrier(-dy * inv_len)
    el = jnp.maximum(elev, 0.03)
    cel = inv_len / el
    s = barrier(jnp.where(sky, dx * cel, jnp.where(ax_x, lz, lx)))
    tt = barrier(jnp.where(sky, dz * cel, jnp.where(ax_y, lz, ly)))
    iwsky = fx * el * el
    iws = barrier(jnp.where(sky, iwsky, jnp.minimum(iws, 1e6)))
    iwt = barrier(jnp.where(sky, iwsky, jnp.minimum(iwt, 1e6)))
    return SurfaceCoords(s, tt, lx, ly, lz, ax_x, ax_y, elev), FilterWidths(iws, iwt)


# ----------------------------------------------------------------------------- lighting
def _sunlight(S, hit: Hit, normal, prims: _Primitives, noise: Noise):
    """(Lambert factor, sun visibility in [0, 1]) [H,W]: shadow rays towards the sun from
    just off the surface against the buildings on the sun's side of the street, the car
    bodies and the tree crowns (leaves let some light through)."""
    nx, ny, nz = normal
    px, py, pz = hit.x, hit.y, hit.z
    lo, hi, ell, ir = prims.box_lo, prims.box_hi, prims.ell, prims.ell_inv_radii
    sun = S["sun_dir"]
    lam = jnp.maximum(nx * sun[0] + ny * sun[1] + nz * sun[2], 0.0)
    qx, qy, qz = px + 2e-3 * nx, py + 2e-3 * ny, pz + 2e-3 * nz
    il = 1.0 / jnp.where(jnp.abs(sun) < 1e-6, 1e-6, sun)
    left = sun[0] < 0
    casters = [(jnp.where(left, lo[i], lo[_N_SIDE + i]),
                jnp.where(left, hi[i], hi[_N_SIDE + i])) for i in range(_N_SIDE)]
    casters += [(lo[2 * _N_SIDE + i], hi[2 * _N_SIDE + i]) for i in range(_N_CAR)]
    blocked = jnp.zeros(hit.t.shape, bool)
    for blo, bhi in casters:
        tx1, tx2 = (blo[0] - qx) * il[0], (bhi[0] - qx) * il[0]
        ty1, ty2 = (blo[1] - qy) * il[1], (bhi[1] - qy) * il[1]
        tz1, tz2 = (blo[2] - qz) * il[2], (bhi[2] - qz) * il[2]
        tn = jnp.maximum(jnp.maximum(jnp.minimum(tx1, tx2), jnp.minimum(ty1, ty2)),
                         jnp.minimum(tz1, tz2))
        tf = jnp.minimum(jnp.minimum(jnp.maximum(tx1, tx2), jnp.maximum(ty1, ty2)),
                         jnp.maximum(tz1, tz2))
        blocked = blocked | ((tn <= tf) & (tf > 0))
    leaves = jnp.zeros(hit.t.shape, bool)
    for i in range(_N_TREE):
        ex = (qx - ell[i, 0]) * ir[i, 0]
        ey = (qy - ell[i, 1]) * ir[i, 1]
        ez = (qz - ell[i, 2]) * ir[i, 2]
        sx, sy, sz = sun[0] * ir[i, 0], sun[1] * ir[i, 1], sun[2] * ir[i, 2]
        bq = ex * sx + ey * sy + ez * sz
        cq = ex * ex + ey * ey + ez * ez - 1.0
        leaves = leaves | ((bq * bq - (sx * sx + sy * sy + sz * sz) * cq > 0) & (bq < 0))
    n2 = noise.octave2
    lit = jnp.where(blocked, 0.0, jnp.where(leaves, jnp.clip(0.25 + 1.5 * n2, 0.0, 1.0), 1.0))
    return lam, lit


def _car_occlusion(hit: Hit, prims: _Primitives, ground):
    """Ambient occlusion [H,W] in [0, 1] of the ground around each car's footprint."""
    lo, hi, px, pz = prims.box_lo, prims.box_hi, hit.x, hit.z
    occ = jnp.zeros_like(hit.t)
    for i in range(_N_CAR):
        j = 2 * _N_SIDE + i
        ddx = jnp.maximum(jnp.abs(px - (lo[j, 0] + hi[j, 0]) / 2) - (hi[j, 0] - lo[j, 0]) / 2, 0.0)
        ddz = jnp.maximum(jnp.abs(pz - (lo[j, 2] + hi[j, 2]) / 2) - (hi[j, 2] - lo[j, 2]) / 2, 0.0)
        occ = jnp.maximum(occ, 1.0 - jnp.minimum(5.0 * (ddx * ddx + ddz * ddz), 1.0))
    return jnp.where(ground, occ, 0.0)


# ----------------------------------------------------------------------------- one view
def _render(S, R, c, k, rays, ones, cfg: _Config):
    """One view of scene ``S``: camera-to-world rotation ``R`` [3,3], centre ``c`` [3] (world
    = camera 0 at frame 0), time ``k`` (frames); ``rays`` [2,H,W] (K⁻¹ [u,v,1])_xy,
    ``ones`` [H,W] float32 ones (runtime). Returns (packed rgb uint32 [H,W], depth [H,W]
    float32 (0 = sky), label [H,W] int32, moving [H,W] bool)."""
    barrier = _Barrier(ones)
    ray = _camera_rays(R, c, rays, barrier)
    (ox, oy, oz), (dx, dy, dz), _ = ray
    nb, nc, ne = cfg.count("box"), cfg.count("cyl"), cfg.count("ell")
    P = cfg.n_objects
    # --- nearest hit over all primitives. The moving boxes are shifted along z by k * vz.
    key = jnp.full(dx.shape, _NOHIT, jnp.int32)
    lo = S["box_lo"].at[:, 2].add(S["box_vz"] * k)
    hi = S["box_hi"].at[:, 2].add(S["box_vz"] * k)
    key = _hit_boxes(key, ray, lo, hi, cfg)
    a2 = dx * dx + dz * dz  # horizontal |d|², shared by cylinders and cones
    key = _hit_cylinders(key, ray, S["cyl"], a2, barrier(1.0 / a2), nb, cfg)
    ell = S["ell"]
    ir = 1.0 / ell[:, 3:6]  # shared with the shadow rays through the tree crowns
    key = _hit_ellipsoids(key, ray, ell, ir, nb + nc, cfg)
    key = _hit_cones(key, ray, a2, S["cone"], nb + nc + ne, cfg)
    band = xkl, xkr, _ = S["band"][0], S["band"][1], S["band"][2]
    key = _hit_ground(key, ray, band, P, cfg)
    prims = _Primitives(lo, hi, S["cyl"], ell, ir, S["cone"])
    # --- what was hit, and where: per-pixel rows of small tables (gathers)
    t, row, found = _decode(barrier.key(key), P)
    sky = ~found
    geo = _geometry_table(prims, cfg)
    G = [_rows(geo[:, j], row) for j in range(6)]
    Mt = [_rows(S["mat"][:, j], row) for j in range(12)]
    mat_of_row = _material_of_row(cfg)
    m = _rows(jnp.asarray(mat_of_row), row)
    label = _rows(jnp.asarray(_LABEL_OF_MAT[mat_of_row]), row)
    moving = _rows(jnp.concatenate([S["box_vz"], jnp.zeros(P + 4 - nb)]), row) != 0
    family = _Family(box=row < nb, ellipsoid=(row >= nb + nc) & (row < nb + nc + ne),
                     cone=(row >= nb + nc + ne) & (row < P), ground=(row >= P) & (row < P + 3))
    hit = Hit(t, sky, m, G, Mt, barrier(ox + t * dx), barrier(oy + t * dy), barrier(oz + t * dz))
    # --- surface: normals, coordinates, footprint, noise, materials
    normal = _normals(hit, family, (xkl, xkr), barrier)
    uv, fw = _surface(ray, hit, normal, family.ellipsoid, cfg, barrier)
    noise = _surface_noise(m, uv, fw, S["noise_seed"], barrier)
    albedo, emit = _materials(hit, uv, fw, noise, S["noise_seed"], cfg.anomalies)
    # --- lighting: Lambertian sun with cast shadows + hemispheric ambient
    lam, lit = _sunlight(S, hit, normal, prims, noise)
    occ = _car_occlusion(hit, prims, family.ground)
    ny = normal[1]
    light = (_RGB(list(S["amb"])) * ((0.75 - 0.25 * ny) * (1.0 - 0.5 * occ))
             + _RGB(list(S["sun_col"])) * (lam * lit * (1.0 - occ)))
    shaded = albedo * (light * S["exposure"] + emit)
    return _quantise(sky, albedo, shaded), t, label, moving & found


def _render_program(indices, views, seed, split_code, moving, ones_s, ones_px, rays,
                    cfg: _Config):
    """Program 1 of 2: render views ``views`` [n] (ids into layout._VIEWS) of samples
    ``indices`` [n] (``seed``, ``split_code``, ``moving`` are traced scalars). ``ones_s``
    [n, n_scene] and ``ones_px`` [n, H, W] are runtime float32 ones (see the performance
    notes above): dividing the flattened scene parameters by them keeps XLA from
    re-deriving every parameter inside every per-pixel loop. Returns (packed rgb uint32
    [n,H,W], depth [n,H,W], labels [n,H,W], moving [n,H,W], pose [n,4,4])."""

    def one(index, view, one_s, one_px):
        S = _make_scene(_sample_key(seed, split_code, index), cfg, moving)
        flat, unravel = ravel_pytree((S, _camera(S, view, cfg)))
        S, (R, c, k, pose) = unravel(flat / one_s)
        return _render(S, R, c, k, rays, one_px, cfg) + (pose,)

    return jax.vmap(one)(indices, views, ones_s, ones_px)
