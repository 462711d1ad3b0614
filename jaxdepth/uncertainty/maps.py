"""Small pure steps shared by every uncertainty method: the result type, channel
reduction, per-image min-max normalisation, resizing and multi-map aggregation
(std / mean / max, and the layer-robust percentile-rank and z-score combinations).
All maps are `[B,h,w,1]`."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

REDUCTIONS = ("max", "sum", "mean", "norm")
AGGREGATIONS = ("std", "mean", "max", "rank", "zmean")
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


def percentile_rank(u):
    """Per-image percentile rank of each pixel of `[B,...]`, in [0, 1].

    The rank of a pixel among its image's N pixels (0 = smallest), divided by N − 1.
    Ties get the average of the ranks they span (SciPy's `rankdata(method="average")`,
    i.e. `(rankdata(u) − 1)/(N − 1)`), so equal values get equal scores whatever their
    position, and the result depends only on the order of the values: it is invariant
    to any strictly increasing transform of the map. Jit-able: one sort and two
    `searchsorted` per image (O(N log N)). Values are assumed finite.
    """
    b = u.shape[0]
    flat = u.reshape(b, -1)
    n = flat.shape[1]
    s = jnp.sort(flat, axis=1)
    lo = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="left"))(s, flat)
    hi = jax.vmap(lambda a, v: jnp.searchsorted(a, v, side="right"))(s, flat)
    rank = (lo + hi - 1).astype(u.dtype) / 2  # 0-based average rank of each tie group
    return (rank / max(n - 1, 1)).reshape(u.shape)


def zscore_per_image(u):
    """Standardise each image of `[B,...]` to mean 0 and (population) std 1; a map whose
    spread is at float-rounding level (std ≤ 1e-6·|mean|, e.g. a constant) becomes 0."""
    axes = tuple(range(1, u.ndim))
    mu = u.mean(axes, keepdims=True)
    sd = u.std(axes, keepdims=True)
    ok = sd > 1e-6 * jnp.abs(mu)
    return jnp.where(ok, (u - mu) / jnp.where(ok, sd, 1.0), 0.0)


def aggregate_maps(maps, how: str = "std"):
    """Combine a list of `[B,H,W,1]` maps (one per layer) per pixel:

    - `std`: population std across layers (the public ECCV code's rule, applied there
      to per-image min-max normalised maps);
    - `mean`, `max`: mean / max across layers;
    - `rank`: each layer's per-image percentile ranks (`percentile_rank`; ties get
      their average rank), averaged over layers — in [0, 1], and invariant to any
      strictly increasing transform of any single layer's map (its scale, offset,
      normalisation, a square of a non-negative map…): the layer-robust combination;
    - `zmean`: each layer's per-image z-scores (`zscore_per_image`) averaged —
      invariant to a positive affine transform of each layer (not in [0, 1]).

    One map is returned unchanged, whatever `how`.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}, got {how!r}")
    if len(maps) == 1:
        return maps[0]
    if how == "rank":
        return jnp.mean(jnp.stack([percentile_rank(m) for m in maps]), axis=0)
    if how == "zmean":
        return jnp.mean(jnp.stack([zscore_per_image(m) for m in maps]), axis=0)
    stack = jnp.stack(maps)
    return {"std": jnp.std, "mean": jnp.mean, "max": jnp.max}[how](stack, axis=0)
