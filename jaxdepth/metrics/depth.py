"""Depth-estimation metrics (Eigen et al. / Monodepth2 / KITTI benchmark) on masked pixels.

Shapes: one image is ``[H, W]`` (a trailing singleton channel ``[H, W, 1]`` is accepted);
a batch is ``[B, H, W]`` (or ``[B, H, W, 1]``). With ``g`` the ground truth and ``p`` the
prediction on the valid pixels of one image:

    abs_rel  = mean(|g - p| / g)          sq_rel   = mean((g - p)^2 / g)
    rmse     = sqrt(mean((g - p)^2))      rmse_log = sqrt(mean((log g - log p)^2))
    a1/a2/a3 = mean(max(g/p, p/g) < 1.25 ** (1, 2, 3))
    silog    = 100 * sqrt(mean(e^2) - mean(e)^2),  e = log p - log g   (natural log;
               the KITTI depth benchmark's scale-invariant log error, lambda = 1;
               evaluated as 100 * sqrt(mean((e - mean e)^2)), the same number)

Valid pixels are ``isfinite(gt) & gt > 0``, AND-ed with the user's mask: an invalid pixel
(zero or NaN depth) is never averaged in. An image without a valid pixel gives NaN for
every metric; ``mean_over_images`` skips such images (and warns how many it skipped).
Predictions are not masked: clamp them first (``clamp``), as the KITTI protocol does.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "METRIC_NAMES",
    "abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "silog",
    "depth_metrics", "batch_depth_metrics", "mean_over_images",
    "valid_mask", "masked_percentile", "median_scale", "garg_crop_mask", "clamp",
]

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "silog")


# ----------------------------------------------------------------------------- shapes
def _squeeze_channel(x, ndim: int):
    """Drop a trailing singleton channel so ``x`` has ``ndim`` dims."""
    if x.ndim == ndim + 1 and x.shape[-1] == 1:
        return x[..., 0]
    return x


def _check_images(fn: str, batched: bool, **arrays):
    """Validate equal shapes ``[H, W]`` (or ``[B, H, W]`` if ``batched``), channel squeezed.

    ``None`` entries are passed through. Raises ``ValueError`` naming the expected shape.
    Returns the arrays (as given, channel squeezed) in keyword order.
    """
    ndim = 3 if batched else 2
    expected = "[B, H, W] or [B, H, W, 1]" if batched else "[H, W] or [H, W, 1]"
    out, ref = [], None
    for name, x in arrays.items():
        if x is None:
            out.append(None)
            continue
        shape = tuple(np.shape(x))
        if not (len(shape) == ndim or (len(shape) == ndim + 1 and shape[-1] == 1)):
            hint = "" if batched else " (use the batch_* function for a batch)"
            raise ValueError(f"{fn}: {name} must have shape {expected}, got {shape}{hint}")
        _check_dtype(fn, name, x)
        core = shape[:ndim]
        if ref is None:
            ref = (name, core)
        elif core != ref[1]:
            raise ValueError(
                f"{fn}: {name} has shape {shape} but {ref[0]} has {ref[1]}; "
                f"all inputs must share the shape {expected}")
        out.append(x)
    return out


def _check_dtype(fn: str, name: str, x):
    """Values must be real numbers; a mask bool (or numbers that are all 0 or 1, checked
    when concrete: a traced mask is cast to bool). ValueError naming the dtype / values."""
    dtype = getattr(x, "dtype", None)
    dtype = np.asarray(x).dtype if dtype is None else np.dtype(dtype)
    numeric = np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    if name != "mask":
        if not numeric:
            raise ValueError(f"{fn}: {name} must be a real-valued (float) array, got dtype "
                             f"{dtype}")
        return
    if dtype == np.bool_:
        return
    if not numeric:
        raise ValueError(f"{fn}: mask must be a bool array (True = valid pixel), got dtype "
                         f"{dtype}")
    if isinstance(x, jax.core.Tracer):
        return
    values = np.asarray(x)
    bad = ~((values == 0) | (values == 1))
    if bad.any():
        raise ValueError(f"{fn}: mask must be bool (or only 0 and 1), got dtype {dtype} with "
                         f"{int(bad.sum())} other values, e.g. {values[bad].flat[0]!r}")


def valid_mask(gt, mask=None):
    """``isfinite(gt) & (gt > 0)`` AND-ed with ``mask`` (same shape as ``gt``), as bool."""
    gt = jnp.asarray(gt)
    valid = jnp.isfinite(gt) & (gt > 0)
    if mask is not None:
        valid = valid & jnp.asarray(mask, bool)
    return valid


# ------------------------------------------------------------------- per-pixel terms
def _safe(gt, pred, valid):
    one = jnp.ones((), gt.dtype)
    return jnp.where(valid, gt, one), jnp.where(valid, pred, one)


def _masked_mean(x, valid):
    """Mean of ``x`` over ``valid`` on the last two axes; NaN where no pixel is valid."""
    n = valid.sum(axis=(-2, -1))
    s = jnp.where(valid, x, 0).sum(axis=(-2, -1))
    return jnp.where(n > 0, s / jnp.maximum(n, 1), jnp.nan)


def _all_metrics(gt, pred, valid):
    """Every metric of METRIC_NAMES for ``[..., H, W]`` inputs -> dict of ``[...]``."""
    g, p = _safe(gt, pred, valid)
    diff = g - p
    ratio = jnp.maximum(g / p, p / g)
    e = jnp.log(p) - jnp.log(g)
    out = {
        "abs_rel": _masked_mean(jnp.abs(diff) / g, valid),
        "sq_rel": _masked_mean(diff**2 / g, valid),
        "rmse": jnp.sqrt(_masked_mean(diff**2, valid)),
        "rmse_log": jnp.sqrt(_masked_mean(e**2, valid)),
    }
    for i, name in enumerate(("a1", "a2", "a3"), start=1):
        out[name] = _masked_mean((ratio < 1.25**i).astype(g.dtype), valid)
    # mean(e^2) - mean(e)^2 in the two-pass form mean((e - mean e)^2): same value, no
    # float32 cancellation (one pass gives ~0.1 instead of 0 for p = 2 g).
    e_mean = _masked_mean(e, valid)[..., None, None]
    out["silog"] = 100.0 * jnp.sqrt(_masked_mean((e - e_mean) ** 2, valid))
    return out


def _prepare(fn, gt, pred, mask, batched):
    gt, pred, mask = _check_images(fn, batched, gt=gt, pred=pred, mask=mask)
    ndim = 3 if batched else 2
    dtype = jnp.result_type(float)
    gt = _squeeze_channel(jnp.asarray(gt, dtype), ndim)
    pred = _squeeze_channel(jnp.asarray(pred, dtype), ndim)
    if mask is not None:
        mask = _squeeze_channel(jnp.asarray(mask, bool), ndim)
    return gt, pred, valid_mask(gt, mask)


@jax.jit
def _metrics_jit(gt, pred, valid):
    return _all_metrics(gt, pred, valid)


def depth_metrics(gt, pred, mask=None) -> dict[str, jax.Array]:
    """All depth metrics of one image: ``gt, pred, mask: [H, W]`` -> dict of 0-d arrays.

    Keys: ``METRIC_NAMES``. NaN for every key if the image has no valid pixel.
    """
    return _metrics_jit(*_prepare("depth_metrics", gt, pred, mask, batched=False))


def batch_depth_metrics(gt, pred, mask=None) -> dict[str, jax.Array]:
    """Per-image depth metrics of a batch: ``[B, H, W]`` inputs -> dict of ``[B]`` arrays.

    Each image is averaged over its own valid pixels (per-image masks); jit-compiled.
    """
    return _metrics_jit(*_prepare("batch_depth_metrics", gt, pred, mask, batched=True))


def _single(name):
    def metric(gt, pred, mask=None) -> jax.Array:
        return depth_metrics(gt, pred, mask)[name]

    metric.__name__ = metric.__qualname__ = name
    metric.__doc__ = (f"``{name}`` of one image (``[H, W]`` inputs) as a 0-d array; "
                      "see the module docstring for the formula.")
    return metric


abs_rel = _single("abs_rel")
sq_rel = _single("sq_rel")
rmse = _single("rmse")
rmse_log = _single("rmse_log")
a1 = _single("a1")
a2 = _single("a2")
a3 = _single("a3")
silog = _single("silog")


def _image_rows(per_image) -> dict[str, np.ndarray]:
    """Dict of ``[B]`` arrays or a sequence of dicts of scalars -> dict of float64 ``[B]``."""
    if isinstance(per_image, Mapping):
        return {k: np.atleast_1d(np.asarray(v, np.float64)) for k, v in per_image.items()}
    per_image = list(per_image)
    if not per_image:
        raise ValueError("mean_over_images: no images given")
    keys = per_image[0].keys()
    return {k: np.concatenate([np.atleast_1d(np.asarray(r[k], np.float64)) for r in per_image])
            for k in keys}


def mean_over_images(per_image: Mapping | Sequence[Mapping]) -> dict[str, float]:
    """Mean of per-image values, skipping every image with a NaN in any of its values.

    ``per_image``: a dict of ``[B]`` arrays (``batch_depth_metrics``) or a list of such
    dicts (or of dicts of scalars). An image is skipped as a whole (so every key averages
    the same images) when any of its values is NaN, which is what an image without a valid
    pixel gives; a ``RuntimeWarning`` says how many images were skipped. If every image is
    skipped the result is NaN.
    """
    rows = _image_rows(per_image)
    table = np.stack(list(rows.values()), axis=0)  # [K, B]
    keep = ~np.isnan(table).any(axis=0)
    skipped = int((~keep).sum())
    if skipped:
        warnings.warn(f"mean_over_images: skipped {skipped} of {keep.size} images with a NaN "
                      "value (no valid pixel)", RuntimeWarning, stacklevel=2)
    if not keep.any():
        return {k: float("nan") for k in rows}
    return {k: float(v[keep].mean()) for k, v in rows.items()}


# ---------------------------------------------------------------------- KITTI helpers
def masked_percentile(x, mask, q) -> jax.Array:
    """``np.percentile(x[mask], q)`` (linear rule) for a traced, variable number of pixels.

    ``x, mask``: equal shapes (flattened); ``q``: percent, scalar or ``[K]``. Invalid
    pixels are set to +inf and sorted last; with n valid, the position is q/100·(n−1),
    linearly interpolated. NaN if no pixel is valid. jit/vmap-able.
    """
    x = jnp.ravel(jnp.asarray(x, jnp.result_type(float)))
    valid = jnp.ravel(jnp.asarray(mask, bool))
    n = valid.sum()
    s = jnp.sort(jnp.where(valid, x, jnp.inf))
    pos = jnp.asarray(q, x.dtype) / 100 * (n - 1)
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, None)
    hi = jnp.clip(jnp.minimum(lo + 1, n - 1), 0, None)
    a, b = s[lo], s[hi]
    return jnp.where(n > 0, a + (b - a) * (pos - lo), jnp.nan)


def median_scale(gt, pred, mask=None) -> jax.Array:
    """Monocular scale of one image: ``median(gt[v]) / median(pred[v])``, a 0-d array.

    ``gt, pred, mask: [H, W]``; ``v`` = valid pixels (``valid_mask(gt, mask)``). Multiply
    ``pred`` by it (before ``clamp``). NaN if no pixel is valid. Use ``jax.vmap`` for a batch.
    """
    gt, pred, valid = _prepare("median_scale", gt, pred, mask, batched=False)
    return masked_percentile(gt, valid, 50.0) / masked_percentile(pred, valid, 50.0)


def garg_crop_mask(h: int, w: int) -> np.ndarray:
    """Garg/Eigen crop as a bool ``[h, w]`` mask, with Monodepth2's integer bounds.

    Rows ``[int(0.40810811 h), int(0.99189189 h))``, columns
    ``[int(0.03594771 w), int(0.96405229 w))`` (``astype(np.int32)`` truncation).
    """
    top, bottom, left, right = np.array(
        [0.40810811 * h, 0.99189189 * h, 0.03594771 * w, 0.96405229 * w]).astype(np.int32)
    mask = np.zeros((h, w), bool)
    mask[top:bottom, left:right] = True
    return mask


def clamp(pred, min_depth: float = 1e-3, max_depth: float = 80.0):
    """``clip(pred, min_depth, max_depth)`` (KITTI: [1e-3, 80]; NYU: [1e-3, 10])."""
    return jnp.clip(pred, min_depth, max_depth)
