"""Materials: what colour a surface point has, before lighting.

Textures are analytic functions of the hit point in the primitive's own frame (world
coordinates for static things, box coordinates for cars, so they move with the car),
antialiased by the pixel footprint: every pattern is drawn through :func:`_aa` (a coverage
ramp one footprint wide) and faded to its mean by :func:`_fade` where its period spans
fewer than a few footprints, so sub-pixel detail never aliases. Nothing depends on the
viewing direction except that footprint, so the same surface point has the same colour in
every view.

This module holds the material ids (rows of the per-pixel material tables), the colour
palettes the scene generator draws from, the noise and tile functions, the planar colour
type :class:`_RGB`, and :func:`_materials`, which turns what a pixel's ray hit
(:class:`Hit`), where on the surface (:class:`SurfaceCoords`), the pixel footprint
(:class:`FilterWidths`) and the surface noise (:class:`Noise`) into albedo and emission.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Materials (rows of the per-pixel tables); ground rows and sky follow the objects.
(M_ROAD, M_SIDEWALK, M_KERB, M_BUILDING, M_CAR, M_CABIN, M_POLE, M_TRUNK, M_CROWN,
 M_ANOMALY, M_SKY) = range(11)
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

# ----------------------------------------------------------------------------- palettes
# RGB albedos the scene generator (layout._make_scene) draws from.
_WALLS = [(0.78, 0.72, 0.62), (0.62, 0.34, 0.26), (0.55, 0.55, 0.54), (0.86, 0.84, 0.79),
          (0.72, 0.60, 0.42), (0.46, 0.39, 0.33), (0.60, 0.65, 0.68), (0.82, 0.66, 0.56),
          (0.70, 0.74, 0.62)]
_PAINTS = [(0.85, 0.85, 0.86), (0.07, 0.07, 0.08), (0.58, 0.59, 0.61), (0.62, 0.07, 0.06),
           (0.09, 0.19, 0.50), (0.10, 0.30, 0.16), (0.86, 0.70, 0.10), (0.33, 0.34, 0.36),
           (0.45, 0.25, 0.12)]
_NEON = [(1.0, 0.05, 1.0), (0.0, 1.0, 1.0), (0.55, 1.0, 0.0), (1.0, 0.5, 0.0),
         (1.0, 0.15, 0.55), (1.0, 1.0, 0.0), (0.55, 0.0, 1.0)]
_PAVING = [(0.60, 0.60, 0.58), (0.64, 0.58, 0.50), (0.56, 0.36, 0.31), (0.50, 0.51, 0.53)]

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

# ----------------------------------------------------------------------------- inputs
class Hit(NamedTuple):
    """The nearest surface under every pixel ([H,W] arrays, gathered from the scene's
    tables by the ray caster)."""

    t: jax.Array  # float32 ray parameter of the hit = its depth (0 where sky)
    sky: jax.Array  # bool: nothing within max_depth, the ray sees the sky
    material: jax.Array  # int32 material id (M_ROAD ... M_SKY)
    #: 6 arrays: the hit primitive's row of the geometry table (box: lo xyz, hi xyz;
    #: cylinder: x, y_top, z, radius, y_bottom, 0; ellipsoid: centre, radii; cone: x,
    #: y_apex, z, radius, y_base, 0; ground and sky: 0, 0, 0, 0, camera_height, 0)
    geometry: tuple
    #: 12 arrays: its row of the material table (colour A, colour B, 6 parameters)
    params: tuple
    x: jax.Array  # hit point, world coordinates
    y: jax.Array
    z: jax.Array

    @property
    def colour_a(self) -> _RGB:
        """Primary colour of the hit primitive."""
        return _RGB(self.params[0:3])

    @property
    def colour_b(self) -> _RGB:
        """Secondary colour."""
        return _RGB(self.params[3:6])

    @property
    def p(self) -> tuple:
        """The 6 material parameters (their meaning depends on the material)."""
        return self.params[6:12]


class SurfaceCoords(NamedTuple):
    """Where on its surface a pixel's hit lies ([H,W] arrays, metres)."""

    s: jax.Array  # first surface coordinate (along the wall / ground); sky: cloud-plane x
    t: jax.Array  # second one (height above the base on walls); sky: cloud-plane z
    lx: jax.Array  # hit point relative to the primitive: x - x0,
    ly: jax.Array  # height above the primitive's base (ellipsoids: above the centre),
    lz: jax.Array  # z - z0
    facing_x: jax.Array  # bool: the normal points mostly along x (s = z, t = height)
    facing_y: jax.Array  # bool: ... mostly along y (horizontal faces: s = x, t = z)
    elevation: jax.Array  # sine of the ray's elevation (sky gradient, clouds)


class FilterWidths(NamedTuple):
    """1 / the pixel footprint along the surface coordinates s and t ([H,W], 1/metres):
    the antialiasing filter of every pattern."""

    s: jax.Array
    t: jax.Array


class Noise(NamedTuple):
    """Two octaves of value noise in about [-0.5, 0.5], per-material frequencies, already
    faded where they would alias ([H,W] each)."""

    octave1: jax.Array
    octave2: jax.Array


def _surface_noise(material, uv: SurfaceCoords, fw: FilterWidths, noise_seed,
                   barrier=lambda x: x) -> Noise:
    """The shared :class:`Noise` of every pixel (``barrier`` materialises each octave;
    see ``raycast._Barrier``)."""
    nf = [_rows(jnp.asarray(_NOISE_FREQ[:, j]), material) for j in range(4)]
    seed = noise_seed + material.astype(jnp.uint32) * jnp.uint32(0x9E3779B9)
    s, tt, iws, iwt = uv.s, uv.t, fw.s, fw.t
    n1 = barrier((_vnoise(s * nf[0], tt * nf[1], seed) - 0.5)
                 * _fade(1.0, jnp.maximum(nf[0] / iws, nf[1] / iwt)))
    n2 = barrier((_vnoise(s * nf[2], tt * nf[3], seed ^ jnp.uint32(0x5BD1E995)) - 0.5)
                 * _fade(1.0, jnp.maximum(nf[2] / iws, nf[3] / iwt)))
    return Noise(n1, n2)


# ----------------------------------------------------------------------------- materials
def _road(hit: Hit, fw: FilterWidths, noise: Noise) -> _RGB:
    """Asphalt, tyre tracks, dashed centre line, edge lines (``p``: dash period, dash
    duty, road centre x, half width)."""
    A, B, p = hit.colour_a, hit.colour_b, hit.p
    n1, n2 = noise
    iws, iwt = fw
    xl = hit.x - p[2]
    hwr = p[3]
    dtrack = jnp.abs(jnp.abs(jnp.abs(xl) - 0.5 * hwr) - 0.8)
    track = 1.0 - 0.14 * jnp.clip(1.0 - (dtrack * 2.5) ** 2, 0.0, 1.0)
    dash_c = _centred(hit.z / p[0] - 0.5 * p[1])
    dash = _aa(0.5 * p[1] * p[0] - jnp.abs(dash_c) * p[0], iwt)
    dash = p[1] + _fade(p[0], iwt) * (dash - p[1])
    centre = _aa(0.06 - jnp.abs(xl), iws) * dash
    edge = _aa(0.07 - jnp.abs(jnp.abs(xl) - (hwr - 0.12)), iws)
    paint = 0.95 * jnp.maximum(centre, edge)
    asphalt = A * ((1.0 + 0.45 * n1 + 0.5 * n2) * track)
    return asphalt.mix(B * (1.0 + 0.3 * n2), paint)


def _sidewalk(hit: Hit, uv: SurfaceCoords, fw: FilterWidths, noise: Noise,
              noise_seed) -> _RGB:
    """Paving slabs with joints and per-slab shade (``p[0]``: slab size)."""
    A, p = hit.colour_a, hit.p
    n1, n2 = noise
    iws, iwt = fw
    slab = jnp.maximum(p[0], 0.1)
    cov, ci, cj = _tiles(uv.s, uv.t, slab, slab, 0.03, iws, iwt)
    shade = 0.9 + 0.2 * _hash(ci, cj, noise_seed)
    return A * ((1.0 + 0.35 * n1 + 0.3 * n2) * (0.62 + 0.38 * cov)
                * (1.0 + _fade(slab, jnp.minimum(iws, iwt)) * (shade - 1.0)))


def _kerb(hit: Hit, uv: SurfaceCoords, fw: FilterWidths, noise: Noise) -> _RGB:
    """1 m blocks along the kerb."""
    n1, n2 = noise
    kcov = _tiles(uv.s, uv.t + 0.5, 1.0, 100.0, 0.02, fw.s, fw.t)[0]
    return hit.colour_a * ((1.0 + 0.3 * n1 + 0.25 * n2) * (0.6 + 0.4 * kcov))


def _building(hit: Hit, uv: SurfaceCoords, fw: FilterWidths, noise: Noise,
              noise_seed) -> _RGB:
    """Floors, windows (shop fronts on the ground floor), frames, stone blocks, cornice
    (``p``: floor height, window pitch, window width and height fractions, blocks on/off,
    building height; colour B: glass)."""
    A, B, p = hit.colour_a, hit.colour_b, hit.p
    n1, n2 = noise
    iws, iwt = fw
    s, tt = uv.s, uv.t
    f32 = jnp.float32
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
    fw_ = _fade(pw, iws) * _fade(fh, iwt)
    wmean = (ww * wh) / (pw * fh) * below_roof
    win = wmean + fw_ * (win - wmean)
    frame = fw_ * frame
    rb = jnp.floor(tt * (1 / 0.32))
    block = _tiles(s + 0.3 * (rb - 2 * jnp.floor(0.5 * rb)), tt + 0.16, 0.6, 0.32, 0.025,
                   iws, iwt)[0]
    ledge = jnp.where((ft < 0.18) & (fl >= 1), 0.82, 1.0)
    cornice = jnp.where(tt > p[5] - 0.5, 0.7, 1.0)
    wall = A * ((1.0 + 0.25 * n1 + 0.2 * n2) * (1.0 - p[4] * 0.35 * (1.0 - block))
                * ledge * cornice)
    pane = B * (0.45 + 1.1 * _hash(col.astype(jnp.int32), fl.astype(jnp.int32), noise_seed)
                + 0.25 * ft / fh)
    return wall * (1.0 - win - frame) + pane * win + 0.82 * frame


def _car(hit: Hit, uv: SurfaceCoords, fw: FilterWidths, noise: Noise) -> tuple:
    """(body, cabin) colours of a car, in the box's own frame. Body: paint, wheels on the
    sides, lights and number plate on front/back, dark sills (colour B: lights). Cabin:
    glass with pillars, roof in paint (colour B: glass)."""
    A, B, G = hit.colour_a, hit.colour_b, hit.geometry
    n1 = noise.octave1
    iws, iwt = fw
    s, tt, ax_x, ax_y = uv.s, uv.t, uv.facing_x, uv.facing_y
    f32 = jnp.float32
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
    # cabin
    Ls = jnp.where(ax_x, Lz, Wx)
    Hcab = G[4] - G[1]
    glass = _aa(jnp.minimum(s - 0.1, Ls - 0.1 - s), iws) \
        * _aa(jnp.minimum(tt - 0.05, Hcab - 0.07 - tt), iwt) * (1.0 - ax_y.astype(f32))
    glass = glass * (1.0 - _aa(0.06 - jnp.abs(s - 0.5 * Ls), iws) * side_f)
    cabin = paintc.mix(B * (0.8 + 0.8 * tt / jnp.maximum(Hcab, 0.1)), glass)
    return car, cabin


def _pole(hit: Hit, uv: SurfaceCoords, fw: FilterWidths, noise: Noise) -> _RGB:
    """Metal with a painted band (``p[0]``: height of the band below the top)."""
    p, (n1, n2), tt = hit.p, noise, uv.t
    band = _aa(jnp.minimum(tt - p[0], p[0] + 0.4 - tt), fw.t)
    return (hit.colour_a * (1.0 + 0.3 * n1 + 0.2 * n2)).mix(hit.colour_b, band)


def _trunk(hit: Hit, noise: Noise) -> _RGB:
    """Bark."""
    n1, n2 = noise
    return hit.colour_a * (1.0 + 0.7 * n1 + 0.6 * n2)


def _crown(hit: Hit, noise: Noise) -> _RGB:
    """Leaves: two greens mixed by the noise."""
    n1, n2 = noise
    return hit.colour_a.mix(hit.colour_b, jnp.clip(0.5 + 1.6 * n1, 0.0, 1.0)) * (1.0 + 1.3 * n2)


def _anomaly(hit: Hit, uv: SurfaceCoords, fw: FilterWidths, noise: Noise) -> _RGB:
    """3-D checker / zebra / dots (``p[0]`` = 0, 1, 2; ``p[1]``: cell size) in two neon
    colours, in the object's frame."""
    A, B, p = hit.colour_a, hit.colour_b, hit.p
    lx, ly, lz = uv.lx, uv.ly, uv.lz
    cs = jnp.maximum(p[1], 0.05)
    ics = 1.0 / cs
    wrel = ics / jnp.minimum(fw.s, fw.t)  # footprint in pattern cells

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
    return A.mix(B, pat) * (1.0 + 0.1 * noise.octave1)


def _sky(hit: Hit, uv: SurfaceCoords, noise: Noise) -> _RGB:
    """Horizon (colour B) -> zenith (colour A) gradient with clouds (``p[0]``: cloud
    cover), thinning out towards the horizon."""
    A, B, p = hit.colour_a, hit.colour_b, hit.p
    n1, n2 = noise
    elev = uv.elevation
    grad = jnp.clip(elev * 3.0, 0.0, 1.0)
    skyc = B.mix(A, jnp.sqrt(grad))
    cloud = jnp.clip((n1 + 0.6 * n2 + p[0] - 0.55) * 3.0, 0.0, 1.0) * p[0] \
        * jnp.clip((elev - 0.03) * 8.0, 0.0, 1.0)  # thin out towards the horizon
    return skyc.mix(_RGB(0.93, 0.93, 0.95), 0.85 * cloud)


def _materials(hit: Hit, uv: SurfaceCoords, fw: FilterWidths, noise: Noise, noise_seed,
               anomalies: bool):
    """(albedo :class:`_RGB`, emission) of every pixel from its material and coordinates.
    ``noise_seed`` (uint32) seeds the per-tile hashes; ``anomalies`` (static) adds the
    anomaly material (which also glows a little: emission 0.25)."""
    m = hit.material
    road = _road(hit, fw, noise)
    sidewalk = _sidewalk(hit, uv, fw, noise, noise_seed)
    kerb = _kerb(hit, uv, fw, noise)
    building = _building(hit, uv, fw, noise, noise_seed)
    car, cabin = _car(hit, uv, fw, noise)
    pole = _pole(hit, uv, fw, noise)
    trunk = _trunk(hit, noise)
    crown = _crown(hit, noise)
    conds = [m == M_ROAD, m == M_SIDEWALK, m == M_KERB, m == M_BUILDING, m == M_CAR,
             m == M_CABIN, m == M_POLE, m == M_TRUNK, m == M_CROWN]
    choices = [road, sidewalk, kerb, building, car, cabin, pole, trunk, crown]
    if anomalies:
        choices.append(_anomaly(hit, uv, fw, noise))
        conds.append(m == M_ANOMALY)
    albedo = _select(conds, choices, _sky(hit, uv, noise))
    return albedo, (jnp.where(m == M_ANOMALY, 0.25, 0.0) if anomalies else 0.0)
