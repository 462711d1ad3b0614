"""Pinhole camera geometry for warping images with depth and relative poses.

Conventions (used everywhere in jaxdepth: the procedural renderer, the self-supervised
losses, the tests):

- Camera axes: x right, y down, z forward. ``T`` ``[B,4,4]`` maps 3-D points from the
  target camera into the source camera: ``X_src = T @ [X_tgt, 1]``.
- **Pixel centres lie at integer coordinates.** Column ``u = 0 .. W-1``, row
  ``v = 0 .. H-1``; pixel ``(u, v)`` is the ray ``K^-1 [u, v, 1]``, and
  :func:`bilinear_sample` reads pixel ``(u, v)`` exactly at coordinate ``(u, v)``. The
  valid sampling range is ``[0, W-1] × [0, H-1]``. This is PyTorch's
  ``grid_sample(..., align_corners=True)`` after Monodepth2's normalisation
  ``2·u/(W-1) - 1``, i.e. what Monodepth2 computes on PyTorch < 1.3.
- Intrinsics ``K`` are in the same pixel units (KITTI-style normalised intrinsics scaled
  by ``(W, H)``, so ``c_x = W/2``: half a pixel right of the image centre ``(W-1)/2`` in
  this convention, a principal-point choice, not an error).
- Coordinates are ``[..., 2]`` in the order ``(u, v)`` = (column, row).

All functions take batched arrays ``[B, H, W, C]`` (``K`` and ``T`` may also be unbatched
``[3,3]`` / ``[4,4]``, or 4×4 intrinsics whose top-left 3×3 block is used), are pure, and
work under ``jit``, ``vmap`` and ``grad``.
"""
from __future__ import annotations

import jax.numpy as jnp

__all__ = ["pixel_grid", "backproject", "project", "bilinear_sample", "warp",
           "pose_vec_to_mat", "disp_to_depth", "invert_pose"]

_EPS = 1e-7  # Monodepth2's eps added to the projected z
_BOUNDS_TOL = 1e-3  # pixels: slack of the in-bounds test for float rounding


def _k33(K, name: str = "K"):
    K = jnp.asarray(K)
    if K.ndim not in (2, 3) or K.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f"{name} must be [3,3], [4,4], [B,3,3] or [B,4,4], got {K.shape}")
    K = K[..., :3, :3]
    return K if K.ndim == 3 else K[None]


def _t44(T, name: str = "T"):
    T = jnp.asarray(T)
    if T.ndim not in (2, 3) or T.shape[-2:] != (4, 4):
        raise ValueError(f"{name} must be [4,4] or [B,4,4], got {T.shape}")
    return T if T.ndim == 3 else T[None]


def _check_4d(x, name: str, channels: int | None = None):
    if x.ndim != 4 or (channels is not None and x.shape[-1] != channels):
        c = "C" if channels is None else str(channels)
        raise ValueError(f"{name} must be [B,H,W,{c}], got {x.shape}")


def pixel_grid(height: int, width: int, dtype=jnp.float32):
    """``[H, W, 2]`` pixel-centre coordinates ``(u, v)``: ``u = 0..W-1``, ``v = 0..H-1``."""
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}×{width}")
    v, u = jnp.meshgrid(jnp.arange(height, dtype=dtype), jnp.arange(width, dtype=dtype),
                        indexing="ij")
    return jnp.stack([u, v], axis=-1)


def backproject(depth, inv_K):
    """Camera-space points ``[B,H,W,3]`` = ``depth · K^-1 [u, v, 1]`` for every pixel.

    ``depth``: ``[B,H,W,1]`` (z, not ray length); ``inv_K``: ``[B,3,3]`` or ``[3,3]``
    (or 4×4) inverse intrinsics.
    """
    depth = jnp.asarray(depth)
    _check_4d(depth, "depth", 1)
    inv_K = _k33(inv_K, "inv_K").astype(depth.dtype)
    _, h, w, _ = depth.shape
    uv = pixel_grid(h, w, depth.dtype)
    pix = jnp.concatenate([uv, jnp.ones((h, w, 1), depth.dtype)], axis=-1)  # [H,W,3]
    rays = jnp.einsum("bij,hwj->bhwi", inv_K, pix)
    return rays * depth


def _transform(points, T):
    T = _t44(T).astype(points.dtype)
    return jnp.einsum("bij,bhwj->bhwi", T[:, :3, :3], points) + T[:, None, None, :3, 3]


def project(points, K, T=None):
    """Pixel coordinates ``[B,H,W,2]`` ``(u, v)`` of ``K (R·X + t)`` for ``points`` ``[B,H,W,3]``.

    ``T`` ``[B,4,4]`` (optional, identity if None) moves the points into the camera first.
    As in Monodepth2, ``1e-7`` is added to z before dividing; points at or behind the
    camera give meaningless coordinates (:func:`warp` masks them out).
    """
    points = jnp.asarray(points)
    _check_4d(points, "points", 3)
    if T is not None:
        points = _transform(points, T)
    K = _k33(K).astype(points.dtype)
    cam = jnp.einsum("bij,bhwj->bhwi", K, points)
    return cam[..., :2] / (cam[..., 2:3] + _EPS)


def bilinear_sample(image, coords, padding: str = "border"):
    """Sample ``image`` ``[B,H,W,C]`` bilinearly at pixel ``coords`` ``[B,h,w,2]`` ``(u, v)``.

    Pixel ``(i, j)``'s centre is at coordinate ``(u=j, v=i)`` (see module docstring).
    ``padding="border"``: coordinates are clamped to ``[0, W-1] × [0, H-1]`` first
    (grid_sample's border mode); ``"zeros"``: taps outside the image contribute 0.
    Returns ``(samples [B,h,w,C], in_bounds [B,h,w,1] bool)``, ``in_bounds`` True where
    ``0 <= u <= W-1`` and ``0 <= v <= H-1`` up to ``1e-3`` px (so that float rounding of
    a projected border pixel does not drop it) and the coordinates are finite.
    """
    image = jnp.asarray(image)
    coords = jnp.asarray(coords)
    _check_4d(image, "image")
    _check_4d(coords, "coords", 2)
    if coords.shape[0] != image.shape[0]:
        raise ValueError(f"coords batch {coords.shape[0]} != image batch {image.shape[0]}")
    if padding not in ("border", "zeros"):
        raise ValueError(f"padding must be 'border' or 'zeros', got {padding!r}")
    b, h, w, c = image.shape
    dtype = image.dtype if jnp.issubdtype(image.dtype, jnp.floating) else jnp.float32
    u = coords[..., 0].astype(dtype)
    v = coords[..., 1].astype(dtype)
    finite = jnp.isfinite(u) & jnp.isfinite(v)
    tol = _BOUNDS_TOL
    in_bounds = finite & (u >= -tol) & (u <= w - 1 + tol) & (v >= -tol) & (v <= h - 1 + tol)
    # Non-finite coordinates sample far outside: the border pixel, or zeros.
    u = jnp.where(finite, u, -2.0)
    v = jnp.where(finite, v, -2.0)
    if padding == "border":
        u = jnp.clip(u, 0.0, w - 1)
        v = jnp.clip(v, 0.0, h - 1)
    else:  # keep the fractional position; clip only far enough to make ints safe
        u = jnp.clip(u, -2.0, w + 1.0)
        v = jnp.clip(v, -2.0, h + 1.0)
    u0 = jnp.floor(u)
    v0 = jnp.floor(v)
    fu = (u - u0)[..., None]
    fv = (v - v0)[..., None]
    u0 = u0.astype(jnp.int32)
    v0 = v0.astype(jnp.int32)
    flat = image.reshape(b, h * w, c)

    def tap(vi, ui):
        inside = (ui >= 0) & (ui <= w - 1) & (vi >= 0) & (vi <= h - 1)
        idx = jnp.clip(vi, 0, h - 1) * w + jnp.clip(ui, 0, w - 1)
        vals = jnp.take_along_axis(flat, idx.reshape(b, -1, 1), axis=1)
        vals = vals.reshape(idx.shape + (c,)).astype(dtype)
        return vals if padding == "border" else vals * inside[..., None]

    out = ((1 - fu) * (1 - fv) * tap(v0, u0) + fu * (1 - fv) * tap(v0, u0 + 1)
           + (1 - fu) * fv * tap(v0 + 1, u0) + fu * fv * tap(v0 + 1, u0 + 1))
    return out, in_bounds[..., None]


def warp(source_image, depth, K, T, padding: str = "border"):
    """Warp ``source_image`` ``[B,H,W,C]`` into the target view; returns ``(warped, valid)``.

    ``depth`` ``[B,H,W,1]``: the target view's depth; ``K`` ``[B,3,3]``; ``T`` ``[B,4,4]``
    maps target-camera points into the source camera. ``warped`` ``[B,H,W,C]`` is the
    source sampled at each target pixel's projection; ``valid`` ``[B,H,W,1]`` bool: the
    projection falls inside the source image and in front of the source camera.
    """
    depth = jnp.asarray(depth)
    _check_4d(depth, "depth", 1)
    K3 = _k33(K).astype(depth.dtype)
    points = _transform(backproject(depth, jnp.linalg.inv(K3)), T)
    coords = project(points, K3)
    warped, inside = bilinear_sample(source_image, coords, padding)
    return warped, inside & (points[..., 2:3] > _EPS)


def _skew(v):
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    o = jnp.zeros_like(x)
    return jnp.stack([jnp.stack([o, -z, y], -1), jnp.stack([z, o, -x], -1),
                      jnp.stack([-y, x, o], -1)], -2)


def _rodrigues(axisangle):
    """``[..., 3]`` axis·angle -> ``[..., 3, 3]`` rotation; exact and smooth at angle 0."""
    th2 = jnp.sum(axisangle ** 2, axis=-1)[..., None, None]
    small = th2 < 1e-8
    th2s = jnp.where(small, 1.0, th2)  # double-where: finite gradients at 0
    th = jnp.sqrt(th2s)
    a = jnp.where(small, 1.0 - th2 / 6.0, jnp.sin(th) / th)
    b = jnp.where(small, 0.5 - th2 / 24.0, (1.0 - jnp.cos(th)) / th2s)
    k = _skew(axisangle)
    eye = jnp.eye(3, dtype=axisangle.dtype)
    return eye + a * k + b * (k @ k)


def invert_pose(T):
    """Inverse of rigid transforms ``[..., 4, 4]``: ``[[Rᵀ, -Rᵀ t], [0, 1]]``."""
    T = jnp.asarray(T)
    rt = jnp.swapaxes(T[..., :3, :3], -1, -2)
    t = -(rt @ T[..., :3, 3:4])
    bottom = jnp.broadcast_to(jnp.array([0, 0, 0, 1], T.dtype), T.shape[:-2] + (1, 4))
    return jnp.concatenate([jnp.concatenate([rt, t], -1), bottom], -2)


def pose_vec_to_mat(axisangle, translation, invert: bool = False):
    """Monodepth2's ``transformation_from_parameters``: ``[B,4,4]`` = ``[R | t]``.

    ``axisangle``, ``translation``: ``[B,3]`` (``[B,1,3]`` as PoseNet outputs is accepted).
    ``R`` by Rodrigues' formula. ``invert=True`` returns the inverse ``[Rᵀ | -Rᵀ t]``
    (used for frame -1, whose pose is predicted in temporal order).
    """
    axisangle = jnp.asarray(axisangle)
    translation = jnp.asarray(translation)
    if axisangle.shape[-1] != 3 or translation.shape[-1] != 3:
        raise ValueError(f"axisangle and translation must end in 3, got {axisangle.shape} "
                         f"and {translation.shape}")
    if axisangle.ndim == 3:
        axisangle = axisangle[:, 0]
    if translation.ndim == 3:
        translation = translation[:, 0]
    dtype = jnp.result_type(axisangle.dtype, translation.dtype, jnp.float32)
    R = _rodrigues(axisangle.astype(dtype))
    t = translation.astype(dtype)[..., None]
    if invert:
        R = jnp.swapaxes(R, -1, -2)
        t = -(R @ t)
    bottom = jnp.broadcast_to(jnp.array([0, 0, 0, 1], dtype), R.shape[:-2] + (1, 4))
    return jnp.concatenate([jnp.concatenate([R, t], -1), bottom], -2)


def disp_to_depth(disp, min_depth: float = 0.1, max_depth: float = 100.0):
    """Monodepth2: sigmoid output -> ``(scaled_disp, depth)``.

    ``scaled_disp = 1/max_depth + (1/min_depth - 1/max_depth)·disp``; ``depth = 1/scaled``.
    """
    if not 0 < min_depth < max_depth:
        raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * jnp.asarray(disp)
    return scaled, 1.0 / scaled
