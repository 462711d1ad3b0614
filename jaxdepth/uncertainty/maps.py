"""Small pure steps shared by every uncertainty method: the result type, channel
reduction, per-image min-max normalisation, resizing and multi-map aggregation.
All maps are `[B,h,w,1]`."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

REDUCTIONS = ("max", "sum", "mean", "norm")
AGGREGATIONS = ("std", "mean", "max")
UPSAMPLING = ("bilinear", "nearest")


class Estimate(NamedTuple):
    """What every uncertainty method returns: `depth` and `uncertainty`, both `[B,H,W,1]`."""
    depth: jax.Array
    uncertainty: jax.Array


def reduce_channels(g, how: str = "max"):
    """`[B,h,w,c]` → `[B,h,w,1]`: max | sum | mean | L2 norm over channels (paper Eq. 2)."""
    if how == "max":
        return g.max(-1, keepdims=True)
    if how == "sum":
        return g.sum(-1, keepdims=True)
    if how == "mean":
        return g.mean(-1, keepdims=True)
    if how == "norm":
        return jnp.sqrt(jnp.sum(g * g, -1, keepdims=True))
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got {how!r}")


def normalize_per_image(u, valid=None):
    """Min-max normalise each image of `[B,h,w,1]` to [0,1] (paper Eq. 3).

    Min and max are taken over `valid` pixels (all if None); a constant map
    becomes 0 rather than NaN.
    """
    axes = tuple(range(1, u.ndim))
    if valid is None:
        lo, hi = u.min(axes, keepdims=True), u.max(axes, keepdims=True)
    else:
        lo = jnp.where(valid, u, jnp.inf).min(axes, keepdims=True)
        hi = jnp.where(valid, u, -jnp.inf).max(axes, keepdims=True)
    span = hi - lo
    return jnp.where(span > 0, (u - lo) / jnp.where(span > 0, span, 1.0), 0.0)


def resize(u, height: int, width: int, method: str = "bilinear"):
    """Resize `[B,h,w,C]` to `[B,height,width,C]` (half-pixel centres, as
    PyTorch `interpolate(align_corners=False)` and cv2 when upsampling)."""
    if method not in UPSAMPLING:
        raise ValueError(f"upsample must be one of {UPSAMPLING}, got {method!r}")
    if u.shape[1:3] == (height, width):
        return u
    return jax.image.resize(u, (u.shape[0], height, width, u.shape[-1]), method=method)


def aggregate_maps(maps, how: str = "std"):
    """Combine a list of `[B,H,W,1]` maps per pixel: population std (the reference
    for several layers), mean or max. One map is returned unchanged."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {how!r}")
    if len(maps) == 1:
        return maps[0]
    stack = jnp.stack(maps)
    return {"std": jnp.std, "mean": jnp.mean, "max": jnp.max}[how](stack, axis=0)
