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
sums over the sorted order: O(H·W) memory, no ``[B, steps, H·W]`` tensor.

Two forms. NumPy (``_image_sparsification_np``: float64, only the valid pixels, one
argsort + three sorts, ``searchsorted`` for the prefix lengths, segment sums between
them) is what ``ause_aurg`` uses and what the batched API uses on the CPU backend; JAX
(``_image_sparsification``, jit-compiled and vmapped in ``_batch_core``: full ``[H·W]``
arrays with invalid pixels keyed +inf, ``cumsum`` in the default dtype) runs on GPU/TPU
and whenever the inputs are traced. ``backend=None | "numpy" | "jax"`` on the batched
functions chooses (``_resolve_backend``); the numbers agree to float32 rounding.

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
    "SPARSIFICATION_METRICS", "ause_aurg", "batch_ause_aurg", "batch_sparsification",
    "sparsification_curves", "curves_of", "mean_ause_aurg",
]

SPARSIFICATION_METRICS = ("abs_rel", "rmse", "a1")


def _image_sparsification_np(g, p, u, steps: int) -> dict:
    """Curves and areas of one image from the ``[n]`` arrays of its VALID pixels (g, p
    float64; u float32 or float64, the ranking only).

    The fast form: one ``argsort`` (of the uncertainty; the three per-pixel values are
    gathered in its order), a plain ``sort`` per oracle key (abs_rel and sq are their own
    keys; the δ oracle ranks by the ratio, so its outlier count in a prefix of length m is
    ``max(0, m − #{ratio < 1.25})``), the kept prefix lengths of the exact integer rule by
    ``searchsorted`` (``steps`` binary searches) and prefix sums at those lengths only.
    Same layout as ``_image_sparsification``.
    """
    n = g.size
    x = np.linspace(0.0, 1.0, steps + 1)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
    # Min / max reductions, not isfinite(...).all(): NaN fails both comparisons.
    undefined = n == 0 or not (u.min() > -np.inf and u.max() < np.inf
                               and p.min() > 0 and p.max() < np.inf)
    if undefined:
        nan_curve = np.full(steps + 1, np.nan)
        res = {"method": nan_curve, "oracle": nan_curve, "full": np.nan, "ause": np.nan,
               "aurg": np.nan}
        return {"x": x, **{name: dict(res) for name in SPARSIFICATION_METRICS}}
    k = np.arange(steps)
    lo = ((n - 1) * (steps - k)) // steps  # floor of the percentile position, exactly
    d = g - p
    abs_rel = np.abs(d) / g
    sq = d * d
    ratio = np.maximum(g / p, p / g)

    def kept(s):  # kept prefix length per step: searchsorted(s, s_lo, side="right")
        return np.searchsorted(s, s[lo], side="right")

    def prefix_mean(v, m):
        """``cumsum(v)[m − 1] / m`` with the appended 0, from the sums of the segments
        between the distinct m (``add.reduceat``, ~20× cheaper than a full ``cumsum``),
        cumulated; ``max(m) == n`` (step 0 keeps every pixel)."""
        ends, which = np.unique(m, return_inverse=True)
        sums = np.add.reduceat(v, np.concatenate([[0], ends[:-1]]),
                               dtype=np.float64 if v.dtype == bool else None)
        return np.pad(np.cumsum(sums)[which] / m, (0, 1))

    order = np.argsort(u)
    m = kept(u[order])
    method = {"abs_rel": prefix_mean(abs_rel[order], m),
              "rmse": np.sqrt(prefix_mean(sq[order], m)),
              "a1": prefix_mean(ratio[order] >= 1.25, m)}
    s_abs, s_sq, s_ratio = np.sort(abs_rel), np.sort(sq), np.sort(ratio)
    m_ratio = kept(s_ratio)
    inliers = np.searchsorted(s_ratio, 1.25, side="left")
    oracle = {"abs_rel": prefix_mean(s_abs, kept(s_abs)),
              "rmse": np.sqrt(prefix_mean(s_sq, kept(s_sq))),
              "a1": np.pad(np.maximum(m_ratio - inliers, 0) / m_ratio, (0, 1))}
    full = {"abs_rel": abs_rel.sum() / n, "rmse": np.sqrt(sq.sum() / n),
            "a1": (n - inliers) / n}
    out = {"x": x}
    for name in SPARSIFICATION_METRICS:
        area = trapezoid(method[name], x=x)
        out[name] = {"method": method[name], "oracle": oracle[name], "full": full[name],
                     "ause": area - trapezoid(oracle[name], x=x),
                     "aurg": full[name] - area}
    return out


def _image_sparsification(gt, pred, unc, valid, steps: int) -> dict:
    """Curves and areas of one image from flat ``[N]`` JAX arrays (traceable, vmap-able).

    Returns ``{metric: {"method": [steps+1], "oracle": [steps+1], "full": (),
    "ause": (), "aurg": ()}}`` plus ``"x": [steps+1]``. Invalid pixels get the key +inf,
    so they sort last. Sorts have at most two operands (an ``argsort`` for the method
    curve, then gathers; a plain ``sort`` of abs_rel / sq / ratio for the oracles, whose
    values are their own keys; the δ oracle counts outliers in a prefix of the sorted
    ratios, as the NumPy form): XLA runs such sorts as (segmented) radix sorts on GPU,
    and on CPU a four-operand sort measured ~1.4× slower than argsort + gathers.
    """
    dtype = gt.dtype
    one, zero, inf = jnp.ones((), dtype), jnp.zeros((), dtype), jnp.asarray(jnp.inf, dtype)
    n = valid.sum()
    g, p = jnp.where(valid, gt, one), jnp.where(valid, pred, one)
    abs_rel = jnp.where(valid, jnp.abs(g - p) / g, zero)
    sq = jnp.where(valid, (g - p) ** 2, zero)
    ratio = jnp.maximum(g / p, p / g)
    outlier = jnp.where(valid & (ratio >= 1.25), one, zero)

    ok = jnp.isfinite(unc) & jnp.isfinite(pred) & (pred > 0)
    undefined = (n == 0) | jnp.any(valid & ~ok)
    k = jnp.arange(steps)
    lo = ((n - 1) * (steps - k)) // steps  # floor of the percentile position, exactly

    def kept(s):  # sorted keys (invalid = +inf last) -> kept prefix length per step
        return _end_of_ties(jnp, s)[lo]

    def prefix_mean(c, m):
        return jnp.pad(c[m - 1] / m, (0, 1))  # the appended 0 at x = 1

    key_u = jnp.where(valid, unc, inf)
    order = jnp.argsort(key_u)  # key + iota: the pair sort GPUs run as a radix sort
    m = kept(key_u[order])
    method = {name: prefix_mean(jnp.cumsum(v[order]), m)
              for name, v in zip(SPARSIFICATION_METRICS, (abs_rel, sq, outlier))}
    s_abs, s_sq, s_ratio = (jnp.sort(jnp.where(valid, v, inf)) for v in (abs_rel, sq, ratio))
    m_ratio = kept(s_ratio)
    outliers = jnp.sum(valid & (ratio >= 1.25))  # an exact integer count
    oracle = {"abs_rel": prefix_mean(jnp.cumsum(s_abs), kept(s_abs)),
              "rmse": prefix_mean(jnp.cumsum(s_sq), kept(s_sq)),
              "a1": jnp.pad(jnp.maximum(m_ratio - (n - outliers), 0) / m_ratio, (0, 1))}
    full = {"abs_rel": abs_rel.sum() / jnp.maximum(n, 1), "rmse": sq.sum() / jnp.maximum(n, 1),
            "a1": outliers / jnp.maximum(n, 1)}
    oracle["a1"], full["a1"] = oracle["a1"].astype(dtype), full["a1"].astype(dtype)
    for key in (method, oracle, full):
        key["rmse"] = jnp.sqrt(key["rmse"])

    x = jnp.linspace(0.0, 1.0, steps + 1, dtype=dtype)
    nan = jnp.asarray(jnp.nan, dtype)
    out = {"x": x}
    for name in SPARSIFICATION_METRICS:
        area = jnp.trapezoid(method[name], x=x)
        res = {"method": method[name], "oracle": oracle[name], "full": full[name],
               "ause": area - jnp.trapezoid(oracle[name], x=x), "aurg": full[name] - area}
        out[name] = {key: jnp.where(undefined, nan, v) for key, v in res.items()}
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


def _valid_float64(g, p, u, valid):
    """The valid pixels of one flat image: g and p as float64, u as float32 or float64
    (its own dtype if one of those: the ranking and the ties are the same, and a float32
    argsort is faster). Gathered before the cast: one ``flatnonzero``, then a ``take``
    per array (cheaper than three boolean compressions at KITTI densities)."""
    u_dtype = u.dtype if u.dtype in (np.float32, np.float64) else np.float64
    if not valid.all():
        idx = np.flatnonzero(valid)
        g, p, u = g.take(idx), p.take(idx), u.take(idx)
    return np.asarray(g, np.float64), np.asarray(p, np.float64), np.asarray(u, u_dtype)


def ause_aurg(gt, pred, uncertainty, mask=None, steps: int = 50) -> dict[str, dict[str, float]]:
    """AUSE and AURG of ONE image, computed in float64 NumPy (the reference computation).

    ``gt, pred, uncertainty, mask: [H, W]`` (or ``[H, W, 1]``; NumPy or JAX). Returns
    ``{"abs_rel" | "rmse" | "a1": {"ause": float, "aurg": float}}``; ``"a1"`` is the
    δ ≥ 1.25 outlier rate. NaN for an image without a valid pixel (see module docstring).
    Not traceable (NumPy); under ``jit`` use ``batch_ause_aurg(..., backend="jax")`` on
    ``[1, H, W]``.
    """
    steps = _check_steps(steps)
    arrays = _check_images("ause_aurg", False, gt=gt, pred=pred, uncertainty=uncertainty,
                           mask=mask)
    g, p, u, m = (None if a is None else np.ravel(_squeeze_channel(np.asarray(a), 2))
                  for a in arrays)
    with np.errstate(all="ignore"):
        valid = _valid(np, g, None if m is None else m.astype(bool))
        res = _image_sparsification_np(*_valid_float64(g, p, u, valid), steps)
    return {name: {"ause": float(res[name]["ause"]), "aurg": float(res[name]["aurg"])}
            for name in SPARSIFICATION_METRICS}


@functools.partial(jax.jit, static_argnames="steps")
def _batch_core(gt, pred, unc, valid, steps: int):
    return jax.vmap(lambda *a: _image_sparsification(*a, steps=steps))(gt, pred, unc, valid)


def _valid(xp, g, m):
    """``isfinite(g) & (g > 0)``, AND the user's mask ``m`` (or None)."""
    with np.errstate(invalid="ignore"):
        valid = xp.isfinite(g) & (g > 0)
    return valid if m is None else valid & m


def _batch_prepare(fn, xp, gt, pred, uncertainty, mask):
    """``[B, N]`` arrays of the default float dtype and the bool mask (or None), in ``xp``."""
    arrays = _check_images(fn, True, gt=gt, pred=pred, uncertainty=uncertainty, mask=mask)
    dtype = jnp.result_type(float)
    g, p, u, m = (None if a is None else _squeeze_channel(xp.asarray(a), 3) for a in arrays)
    b = g.shape[0]
    g, p, u = (xp.asarray(xp.reshape(a, (b, -1)), dtype) for a in (g, p, u))  # no copy
    return g, p, u, None if m is None else xp.asarray(xp.reshape(m, (b, -1)), bool)


def _numpy_batch(g, p, u, m, steps: int) -> dict:
    """``_batch_core``'s output from the NumPy form, image by image (valid pixels only;
    the valid mask too is made per image, which stays in cache)."""
    with np.errstate(all="ignore"):
        per_image = [_image_sparsification_np(*_valid_float64(
            g[i], p[i], u[i], _valid(np, g[i], None if m is None else m[i])), steps)
            for i in range(g.shape[0])]
    dtype = jnp.result_type(float)
    out = {"x": np.linspace(0.0, 1.0, steps + 1, dtype=dtype)[None]}
    for name in SPARSIFICATION_METRICS:
        out[name] = {key: np.asarray([r[name][key] for r in per_image], dtype).reshape(
                         (len(per_image),) + shape)
                     for key, shape in (("method", (steps + 1,)), ("oracle", (steps + 1,)),
                                        ("full", ()), ("ause", ()), ("aurg", ()))}
    return jax.tree.map(jnp.asarray, out)


BACKENDS = (None, "numpy", "jax")


def _resolve_backend(backend, *arrays) -> str:
    """The dispatch rule: traced inputs -> "jax"; otherwise ``backend``, and by default
    "numpy" on the CPU backend (``jax.default_backend() == "cpu"``), "jax" elsewhere."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    traced = any(isinstance(a, jax.core.Tracer) for a in arrays)
    if traced:
        if backend == "numpy":
            raise ValueError('backend="numpy" cannot take traced arrays (inside jit / vmap / '
                             'grad); use backend="jax" or None')
        return "jax"
    if backend is None:
        return "numpy" if jax.default_backend() == "cpu" else "jax"
    return backend


def batch_sparsification(gt, pred, uncertainty, mask=None, steps: int = 50,
                         backend: str | None = None) -> dict:
    """Everything per image of a batch: ``[B, H, W]`` inputs (or ``[B, H, W, 1]``).

    Returns ``{"x": [steps+1], metric: {"method": [B, steps+1], "oracle": [B, steps+1],
    "full": [B], "ause": [B], "aurg": [B]}}`` for metric in ``SPARSIFICATION_METRICS``, as
    JAX arrays of the default float dtype (float32 unless x64 is enabled); ``full`` is the
    metric on all valid pixels (the random curve's level).

    ``backend``: ``"jax"`` is the jit-compiled, vmapped pure function (what runs under
    ``jit`` / ``vmap`` / ``grad``: traced inputs always take it); ``"numpy"`` is the fast
    host form (per image, only the valid pixels sorted, float64, results cast to the
    default dtype); ``None`` (default) picks ``"numpy"`` when ``jax.default_backend()`` is
    ``"cpu"`` and ``"jax"`` otherwise. Both give the same numbers up to float32 rounding
    (the kept sets are the same by the exact integer rule; the jax form sums in the
    default dtype).
    """
    steps = _check_steps(steps)
    backend = _resolve_backend(backend, gt, pred, uncertainty, mask)
    xp = np if backend == "numpy" else jnp
    g, p, u, m = _batch_prepare("batch_sparsification", xp, gt, pred, uncertainty, mask)
    if xp is np:
        res = _numpy_batch(g, p, u, m, steps)
    else:
        res = _batch_core(g, p, u, _valid(jnp, g, m), steps=steps)
    return {"x": res["x"][0], **{name: res[name] for name in SPARSIFICATION_METRICS}}


def batch_ause_aurg(gt, pred, uncertainty, mask=None, steps: int = 50,
                    backend: str | None = None) -> dict:
    """Per-image AUSE/AURG of a batch: ``[B, H, W]`` inputs, per-image masks.

    Returns ``{"abs_rel" | "rmse" | "a1": {"ause": [B], "aurg": [B]}}`` (default float
    dtype, float32 unless x64 is enabled); same numbers as ``ause_aurg`` image by image.
    ``backend``: see ``batch_sparsification`` (default: NumPy on the CPU backend, the
    jit-compiled form elsewhere and whenever the inputs are traced).
    """
    res = batch_sparsification(gt, pred, uncertainty, mask, steps, backend)
    return {name: {"ause": res[name]["ause"], "aurg": res[name]["aurg"]}
            for name in SPARSIFICATION_METRICS}


def curves_of(res: Mapping) -> dict:
    """``sparsification_curves``' layout from a ``batch_sparsification`` result."""
    out = {"x": res["x"]}
    for name in SPARSIFICATION_METRICS:
        r = res[name]
        out[name] = {"method": r["method"], "oracle": r["oracle"],
                     "random": jnp.broadcast_to(r["full"][:, None], r["method"].shape)}
    return out


def sparsification_curves(gt, pred, uncertainty, mask=None, steps: int = 50,
                          backend: str | None = None) -> dict:
    """Sparsification curves of a batch for plotting: ``[B, H, W]`` inputs.

    Returns ``{"x": [steps+1], metric: {"method": [B, steps+1], "oracle": [B, steps+1],
    "random": [B, steps+1]}}`` for metric in ``SPARSIFICATION_METRICS``; ``random`` is the
    constant metric on all pixels (what AURG compares against). The sparsification error
    of Fig. 2 of the gradient-uncertainty paper is ``method − oracle``. ``backend``: see
    ``batch_sparsification``.
    """
    return curves_of(batch_sparsification(gt, pred, uncertainty, mask, steps, backend))


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
