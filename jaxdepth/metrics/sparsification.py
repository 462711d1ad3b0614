"""Sparsification curves, AUSE and AURG for depth uncertainty (per image, then averaged).

On the valid pixels of one image (``isfinite(gt) & gt > 0`` AND the user's mask), with
per-pixel errors ``abs_rel = |g − p| / g``, ``sq = (g − p)^2``, ``ratio = max(g/p, p/g)``:

* fractions removed ``q_k = 100·k/steps`` %, ``k = 0 … steps−1``;
  ``x = linspace(0, 1, steps+1)``;
* method curve: keep the pixels with ``u ≤ percentile(u, 100 − q_k)`` (linear rule,
  inclusive, so ties at the threshold are all kept) and evaluate the subset metric
  ``mean(abs_rel)`` | ``sqrt(mean(sq))`` | ``mean(ratio ≥ 1.25)``; append 0 at ``x = 1``;
* oracle curve: the same, ranking by the true error (abs_rel by abs_rel, rmse by sq,
  the δ column by the continuous ratio); append 0;
* random curve: the metric on all pixels, constant;
* ``AUSE = trapz(method, x) − trapz(oracle, x)``, ``AURG = metric(all) − trapz(method, x)``.

The key ``"a1"`` is the δ ≥ 1.25 OUTLIER rate (``1 − a1`` of the depth metrics), named
``a1`` because that is the key the project's results JSON uses; lower is better, like the
other two columns.

Exact percentile rule. With the n valid uncertainties sorted, ``s_0 ≤ … ≤ s_{n−1}``, the
(100 − q_k)-th percentile sits at position ``(n−1)(steps−k)/steps`` between ``s_lo`` and
``s_{lo+1}`` with ``lo = ((n−1)(steps−k)) // steps``. Whatever the interpolation weight,
``{u ≤ threshold}`` is exactly ``{u ≤ s_lo}`` (the threshold lies in ``[s_lo, s_{lo+1})``
if ``s_{lo+1} > s_lo`` and equals ``s_lo`` otherwise), i.e. a prefix of the sorted order of
length ``searchsorted(s, s_lo, side="right")``. Both implementations use this integer
form, so the kept sets do not depend on float rounding: ``np.percentile``'s float64
position can land one ulp below an integer (n = 51, q = 58 % gives 28.999999999999996),
which would drop the pixel sitting exactly at the percentile. Subset metrics are prefix
sums (``cumsum``) over the sorted order: O(H·W) memory, no ``[B, steps, H·W]`` tensor.

Degenerate images: no valid pixel (n = 0), or a non-finite uncertainty / non-finite or
non-positive prediction on a valid pixel, gives NaN everywhere for that image (the mean
helpers skip it, with a warning). n = 1 gives method = oracle = the pixel's error at every
step, so AUSE = 0 and AURG = metric / (2·steps), like a constant uncertainty: a constant
(or single-valued) uncertainty keeps every pixel at every step, so the method curve is
``[M, …, M, 0]`` and ``AURG = M − M·(1 − 1/(2·steps)) = M / (2·steps)`` (M/100 for 50
steps), not 0, because of the appended zero.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdepth.metrics.depth import _check_images, _squeeze_channel, mean_over_images

__all__ = [
    "SPARSIFICATION_METRICS", "ause_aurg", "batch_ause_aurg", "sparsification_curves",
    "mean_ause_aurg",
]

SPARSIFICATION_METRICS = ("abs_rel", "rmse", "a1")


def _image_sparsification(xp, gt, pred, unc, valid, steps: int) -> dict:
    """Curves and areas of one image from flat ``[N]`` arrays, with ``xp`` = numpy or jnp.

    Returns ``{metric: {"method": [steps+1], "oracle": [steps+1], "full": (),
    "ause": (), "aurg": ()}}`` plus ``"x": [steps+1]``.
    """
    dtype = gt.dtype
    one, zero = xp.ones((), dtype), xp.zeros((), dtype)
    n = valid.sum()
    g, p = xp.where(valid, gt, one), xp.where(valid, pred, one)
    abs_rel = xp.where(valid, xp.abs(g - p) / g, zero)
    sq = xp.where(valid, (g - p) ** 2, zero)
    ratio = xp.maximum(g / p, p / g)
    outlier = xp.where(valid & (ratio >= 1.25), one, zero)
    values = {"abs_rel": abs_rel, "rmse": sq, "a1": outlier}
    oracle_key = {"abs_rel": abs_rel, "rmse": sq, "a1": ratio}

    ok = xp.isfinite(unc) & xp.isfinite(pred) & (pred > 0)
    undefined = (n == 0) | xp.any(valid & ~ok)
    k = xp.arange(steps)
    lo = ((n - 1) * (steps - k)) // steps  # floor of the percentile position, exactly

    def keep_prefix(key):
        """Sorted order of ``key`` (invalid last) and the kept prefix length per step."""
        key = xp.where(valid, key, xp.inf)
        order = xp.argsort(key)
        return order, _end_of_ties(xp, key[order])[lo]

    def curve(name, order, m):
        c = xp.cumsum(values[name][order])[m - 1] / m
        c = xp.sqrt(c) if name == "rmse" else c
        return xp.pad(c, (0, 1))  # the appended 0 at x = 1

    x = xp.linspace(0.0, 1.0, steps + 1, dtype=dtype)
    trapezoid = getattr(xp, "trapezoid", None) or xp.trapz  # numpy < 2 has only trapz
    nan = xp.asarray(xp.nan, dtype)
    method_order, method_m = keep_prefix(unc)
    out = {"x": x}
    for name in SPARSIFICATION_METRICS:
        full = values[name].sum() / xp.maximum(n, 1)
        full = xp.sqrt(full) if name == "rmse" else full
        method = curve(name, method_order, method_m)
        oracle = curve(name, *keep_prefix(oracle_key[name]))
        area = trapezoid(method, x=x)
        res = {"method": method, "oracle": oracle, "full": full,
               "ause": area - trapezoid(oracle, x=x), "aurg": full - area}
        out[name] = {key: xp.where(undefined, nan, v) for key, v in res.items()}
    return out


def _end_of_ties(xp, s):
    """``searchsorted(s, s, side="right")`` for sorted ``s: [N]``: 1 + last index of each tie.

    Written as a reverse running minimum over the tie-group ends because ``jnp.searchsorted``
    fails under ``vmap`` on a batch sharded over devices (jax 0.10.2; ``method="sort"`` works
    but is ~1.6× slower here, ``"compare_all"`` is O(N·steps) memory). ``pad`` rather than
    ``concatenate`` for the same reason (concatenating an unbatched constant fails there).
    """
    idx = xp.arange(s.shape[-1])
    last_of_ties = xp.pad(s[:-1] != s[1:], (0, 1), constant_values=True)
    group_end = xp.where(last_of_ties, idx, s.shape[-1])
    if xp is np:
        return np.minimum.accumulate(group_end[::-1])[::-1] + 1
    return jax.lax.cummin(group_end, reverse=True) + 1


def _check_steps(steps):
    if not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return int(steps)


def ause_aurg(gt, pred, uncertainty, mask=None, steps: int = 50) -> dict[str, dict[str, float]]:
    """AUSE and AURG of ONE image, computed in float64 NumPy (the reference computation).

    ``gt, pred, uncertainty, mask: [H, W]`` (or ``[H, W, 1]``; NumPy or JAX). Returns
    ``{"abs_rel" | "rmse" | "a1": {"ause": float, "aurg": float}}``; ``"a1"`` is the
    δ ≥ 1.25 outlier rate. NaN for an image without a valid pixel (see module docstring).
    Not traceable (NumPy); under ``jit`` use ``batch_ause_aurg`` on ``[1, H, W]``.
    """
    steps = _check_steps(steps)
    arrays = _check_images("ause_aurg", False, gt=gt, pred=pred, uncertainty=uncertainty,
                           mask=mask)
    flat = [None if a is None else np.ravel(_squeeze_channel(np.asarray(a), 2))
            for a in arrays]
    g, p, u, m = flat
    g, p, u = (a.astype(np.float64) for a in (g, p, u))
    valid = np.isfinite(g) & (g > 0)
    if m is not None:
        valid &= m.astype(bool)
    with np.errstate(all="ignore"):
        res = _image_sparsification(np, g, p, u, valid, steps)
    return {name: {"ause": float(res[name]["ause"]), "aurg": float(res[name]["aurg"])}
            for name in SPARSIFICATION_METRICS}


@functools.partial(jax.jit, static_argnames="steps")
def _batch_core(gt, pred, unc, valid, steps: int):
    return jax.vmap(lambda *a: _image_sparsification(jnp, *a, steps=steps))(gt, pred, unc, valid)


def _batch_prepare(fn, gt, pred, uncertainty, mask):
    arrays = _check_images(fn, True, gt=gt, pred=pred, uncertainty=uncertainty, mask=mask)
    dtype = jnp.result_type(float)
    g, p, u, m = (None if a is None else _squeeze_channel(jnp.asarray(a), 3) for a in arrays)
    b = g.shape[0]
    g, p, u = (jnp.reshape(a, (b, -1)).astype(dtype) for a in (g, p, u))
    valid = jnp.isfinite(g) & (g > 0)
    if m is not None:
        valid = valid & jnp.reshape(m, (b, -1)).astype(bool)
    return g, p, u, valid


def batch_ause_aurg(gt, pred, uncertainty, mask=None, steps: int = 50) -> dict:
    """Per-image AUSE/AURG of a batch, jit-compiled: ``[B, H, W]`` inputs, per-image masks.

    Returns ``{"abs_rel" | "rmse" | "a1": {"ause": [B], "aurg": [B]}}`` (default float
    dtype, float32 unless x64 is enabled); same numbers as ``ause_aurg`` image by image.
    """
    steps = _check_steps(steps)
    res = _batch_core(*_batch_prepare("batch_ause_aurg", gt, pred, uncertainty, mask),
                      steps=steps)
    return {name: {"ause": res[name]["ause"], "aurg": res[name]["aurg"]}
            for name in SPARSIFICATION_METRICS}


def sparsification_curves(gt, pred, uncertainty, mask=None, steps: int = 50) -> dict:
    """Sparsification curves of a batch for plotting: ``[B, H, W]`` inputs.

    Returns ``{"x": [steps+1], metric: {"method": [B, steps+1], "oracle": [B, steps+1],
    "random": [B, steps+1]}}`` for metric in ``SPARSIFICATION_METRICS``; ``random`` is the
    constant metric on all pixels (what AURG compares against). The sparsification error
    of Fig. 2 of the gradient-uncertainty paper is ``method − oracle``.
    """
    steps = _check_steps(steps)
    res = _batch_core(*_batch_prepare("sparsification_curves", gt, pred, uncertainty, mask),
                      steps=steps)
    out = {"x": res["x"][0]}
    for name in SPARSIFICATION_METRICS:
        r = res[name]
        out[name] = {"method": r["method"], "oracle": r["oracle"],
                     "random": jnp.broadcast_to(r["full"][:, None], r["method"].shape)}
    return out


def mean_ause_aurg(results: Mapping | Sequence[Mapping]) -> dict[str, dict[str, float]]:
    """Mean over images of ``ause_aurg`` results (a list) or ``batch_ause_aurg`` results
    (one dict of ``[B]`` arrays, or a list of them), as Python floats.

    Images with a NaN (no valid pixel) are skipped as a whole, with a ``RuntimeWarning``
    saying how many (``mean_over_images``).
    """
    if isinstance(results, Mapping):
        results = [results]
    rows = [{f"{m}/{a}": r[m][a] for m in SPARSIFICATION_METRICS for a in ("ause", "aurg")}
            for r in results]
    flat = mean_over_images(rows)
    return {m: {a: flat[f"{m}/{a}"] for a in ("ause", "aurg")} for m in SPARSIFICATION_METRICS}
