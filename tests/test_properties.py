"""Property-based tests of the numerics at the edges (issue 17, item 5), with hypothesis.

Sparsification (`jaxdepth.metrics.sparsification`): the oracle curve is never above the
method's and AUSE ≥ 0 (for distinct true errors, see below); AUSE/AURG are invariant to
a strictly increasing transform of the uncertainty and to the order of the pixels; a
constant (or single-pixel) uncertainty gives the documented AURG = M / (2·steps); masks
one pixel wide give finite numbers that agree between the NumPy and the jit version.

Gradient uncertainty (`jaxdepth.uncertainty.gradient_uncertainty`): finite for saturated
disparities (the decoder's sigmoid at exactly 0 or 1: zero loss, a zero map); an exactly
flip-symmetric image through an exactly flip-equivariant model has zero loss and gives
a zero map (not NaN); a `gt` reference valid on one column / one pixel / no pixel is
finite.

Data are drawn by NumPy from a hypothesis-drawn seed (continuous values, so the true
errors are distinct), with hypothesis choosing the structure: sizes, masks, ties in the
uncertainty, steps. Every test is derandomised (a fixed example sequence, no example
database), so CI is deterministic. The model tests draw a handful of examples and
compile once (the jitted `gradient_uncertainty` is reused: only values change).

Ties in the TRUE error: the oracle curve uses the same inclusive percentile rule as the
method curve, so at a step where the oracle's threshold falls inside a group of equal
errors it keeps the whole group, and can then sit above a perfect method that keeps
fewer pixels (errors 0, 1, 1 ranked perfectly: method 0.5, oracle 2/3 at 50 %; AUSE
< 0). The ordering properties are therefore stated for distinct errors.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jaxdepth.metrics import depth as depth_metrics_mod
from jaxdepth.metrics.sparsification import (SPARSIFICATION_METRICS, ause_aurg,
                                             batch_ause_aurg, sparsification_curves)
from jaxdepth.uncertainty import gradient_uncertainty


def _settings(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- data

@st.composite
def images(draw, h=None, w=None, ties=None):
    """`(gt, pred, unc, mask)` `[h, w]` float64 / bool: continuous gt in (0.5, 80) m,
    pred = gt·exp(ε) (distinct errors, ~30 % of pixels off by more than 25 %), some
    invalid gt (0 / NaN), a random mask with at least one valid pixel; the uncertainty
    continuous or quantised to a few levels (ties), and correlated with the error or not."""
    h = draw(st.integers(1, 9)) if h is None else h
    w = draw(st.integers(1, 11)) if w is None else w
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gt = np.exp(rng.uniform(np.log(0.5), np.log(80.0), (h, w)))
    err = rng.normal(0.0, draw(st.sampled_from([0.05, 0.3, 1.0])), (h, w))
    pred = gt * np.exp(err)
    invalid = rng.random((h, w)) < draw(st.sampled_from([0.0, 0.2]))
    gt[invalid & (rng.random((h, w)) < 0.5)] = 0.0
    gt[invalid & (gt > 0)] = np.nan
    mask = rng.random((h, w)) < draw(st.sampled_from([0.1, 0.6, 1.0]))
    valid = np.isfinite(gt) & (gt > 0) & mask
    if not valid.any():  # at least one valid pixel (n = 0 is NaN by definition)
        i, j = rng.integers(h), rng.integers(w)
        gt[i, j], mask[i, j] = 1.0 + rng.random(), True
    quality = draw(st.sampled_from([0.0, 0.5, 1.0]))  # 1: the uncertainty ranks the error
    unc = quality * np.abs(err) + (1 - quality) * rng.random((h, w))
    levels = draw(st.sampled_from([0, 2, 5])) if ties is None else ties
    if levels:  # quantise: ties in the uncertainty
        unc = np.floor(unc / unc.max() * levels) if unc.max() > 0 else unc
    return gt, pred, unc, mask


def _valid(gt, mask):
    return np.isfinite(gt) & (gt > 0) & mask


def _full_metric(gt, pred, mask):
    """The metric on all valid pixels, M, for each of SPARSIFICATION_METRICS."""
    v = _valid(gt, mask)
    g, p = gt[v], pred[v]
    return {"abs_rel": np.mean(np.abs(g - p) / g), "rmse": np.sqrt(np.mean((g - p) ** 2)),
            "a1": np.mean(np.maximum(g / p, p / g) >= 1.25)}


def _close(a, b, rtol=1e-9, atol=1e-12):
    for name in SPARSIFICATION_METRICS:
        for key in ("ause", "aurg"):
            np.testing.assert_allclose(a[name][key], b[name][key], rtol=rtol, atol=atol,
                                       err_msg=f"{name}/{key}")


STEPS = st.sampled_from([1, 3, 20, 50])


# --------------------------------------------------------------------------- sparsification

@_settings(60)
@given(data=images(), steps=STEPS)
def test_ause_is_non_negative(data, steps):
    res = ause_aurg(*data, steps=steps)
    for name in SPARSIFICATION_METRICS:
        assert np.isfinite(res[name]["ause"]) and np.isfinite(res[name]["aurg"])
        assert res[name]["ause"] >= -1e-12, (name, res[name])


@_settings(25)
@given(batch=st.lists(images(h=6, w=10), min_size=3, max_size=3), steps=st.just(20))
def test_oracle_curve_is_never_above_the_method_curve(batch, steps):
    gt, pred, unc, mask = (np.stack(a) for a in zip(*batch))
    curves = sparsification_curves(gt, pred, unc, mask, steps=steps)
    np.testing.assert_allclose(curves["x"], np.linspace(0, 1, steps + 1), atol=1e-6)
    for name in SPARSIFICATION_METRICS:
        method, oracle = np.asarray(curves[name]["method"]), np.asarray(curves[name]["oracle"])
        full = np.asarray(curves[name]["random"])
        assert np.isfinite(method).all() and np.isfinite(oracle).all()
        tol = 1e-5 * np.maximum(full, 1.0)  # float32 prefix sums in two orders
        assert (oracle <= method + tol).all(), name
        assert (oracle[:, 0] == pytest.approx(method[:, 0], rel=1e-5)), name  # nothing removed
        np.testing.assert_allclose(method[:, 0], full[:, 0], rtol=1e-5)
        assert (method[:, -1] == 0).all() and (oracle[:, -1] == 0).all()


def _increasing(kind: str, u):
    return {"exp": lambda x: np.exp(x / 4.0), "cubic": lambda x: x**3 + x,
            "affine": lambda x: 3.0 * x - 7.0, "log1p": lambda x: np.log1p(x - x.min()),
            "rank": lambda x: np.searchsorted(np.unique(x), x).astype(np.float64)}[kind](u)


@_settings(60)
@given(data=images(), steps=STEPS,
       kind=st.sampled_from(["exp", "cubic", "affine", "log1p", "rank"]))
def test_invariant_to_a_strictly_increasing_transform_of_the_uncertainty(data, steps, kind):
    gt, pred, unc, mask = data
    t = _increasing(kind, unc)
    # the transform keeps order and ties exactly on these values (a float rounding that
    # merged two values would be a different ranking, not a property violation)
    order = np.argsort(unc, axis=None, kind="stable")
    u_s, t_s = unc.ravel()[order], t.ravel()[order]
    assert np.array_equal(np.diff(u_s) > 0, np.diff(t_s) > 0)
    _close(ause_aurg(gt, pred, unc, mask, steps=steps), ause_aurg(gt, pred, t, mask, steps=steps))


@_settings(60)
@given(data=images(), steps=STEPS, seed=st.integers(0, 2**32 - 1))
def test_invariant_to_the_order_of_the_pixels(data, steps, seed):
    gt, pred, unc, mask = data
    perm = np.random.default_rng(seed).permutation(gt.size)
    shuffled = [a.ravel()[perm].reshape(a.shape) for a in data]
    _close(ause_aurg(gt, pred, unc, mask, steps=steps), ause_aurg(*shuffled, steps=steps))
    # and into another shape: the image layout does not matter either
    flat = [a.ravel()[perm].reshape(1, -1) for a in data]
    _close(ause_aurg(gt, pred, unc, mask, steps=steps), ause_aurg(*flat, steps=steps))


@_settings(60)
@given(data=images(), steps=STEPS, value=st.floats(-1e6, 1e6, allow_nan=False))
def test_constant_uncertainty_gives_the_documented_aurg(data, steps, value):
    gt, pred, _, mask = data
    res = ause_aurg(gt, pred, np.full(gt.shape, value), mask, steps=steps)
    full = _full_metric(gt, pred, mask)
    for name in SPARSIFICATION_METRICS:
        assert res[name]["aurg"] == pytest.approx(full[name] / (2 * steps), rel=1e-9, abs=1e-12)
        assert res[name]["ause"] >= -1e-12


@_settings(25)
@given(data=images(h=7, w=9, ties=0), steps=st.just(50),
       shape=st.sampled_from(["column", "row", "pixel"]), index=st.integers(0, 100))
def test_one_pixel_wide_valid_masks(data, steps, shape, index):
    gt, pred, unc, _ = data
    gt = np.where(np.isfinite(gt) & (gt > 0), gt, 1.5)  # the mask alone decides
    mask = np.zeros(gt.shape, bool)
    i, j = index % gt.shape[0], index % gt.shape[1]
    if shape == "column":
        mask[:, j] = True
    elif shape == "row":
        mask[i, :] = True
    else:
        mask[i, j] = True
    ref = ause_aurg(gt, pred, unc, mask, steps=steps)
    batch = batch_ause_aurg(gt[None], pred[None], unc[None], mask[None], steps=steps)
    full = _full_metric(gt, pred, mask)
    for name in SPARSIFICATION_METRICS:
        for key in ("ause", "aurg"):
            assert np.isfinite(ref[name][key])
            np.testing.assert_allclose(np.asarray(batch[name][key])[0], ref[name][key],
                                       rtol=1e-4, atol=1e-5 * max(full[name], 1.0))
        assert ref[name]["ause"] >= -1e-12
        if shape == "pixel":  # n = 1: method = oracle, AURG = M / (2·steps)
            assert ref[name]["ause"] == pytest.approx(0.0, abs=1e-12)
            assert ref[name]["aurg"] == pytest.approx(full[name] / (2 * steps), rel=1e-9)
    m = depth_metrics_mod.depth_metrics(gt, pred, mask)
    np.testing.assert_allclose(float(m["abs_rel"]), full["abs_rel"], rtol=1e-5)
    np.testing.assert_allclose(float(m["rmse"]), full["rmse"], rtol=1e-5)
    assert all(np.isfinite(float(v)) for v in m.values())


# --------------------------------------------------------------------------- gradient uncertainty

H, W = 32, 64


@functools.cache
def _depthnet():
    from jaxdepth.models import DepthNet
    model = DepthNet(num_layers=18, width=0.125)
    return model, model.init_variables(jax.random.PRNGKey(0), H, W)


@functools.cache
def _depthnet_forward():
    return jax.jit(_depthnet()[0].apply)


def _with_disp_bias(variables, bias: float, kernel_scale: float):
    """`variables` with the full-resolution disparity head's bias set to `bias` and its
    kernel scaled: |bias| ≫ 1 saturates the sigmoid."""
    params = dict(variables["params"])
    decoder = dict(params["decoder"])
    head = dict(decoder["dispconv_0"])
    head["bias"] = jnp.full_like(head["bias"], bias)
    head["kernel"] = head["kernel"] * kernel_scale
    decoder["dispconv_0"] = head
    params["decoder"] = decoder
    return dict(variables, params=params)


def _image(seed: int, b: int = 2):
    return jax.random.uniform(jax.random.PRNGKey(seed), (b, H, W, 3))


def _assert_map(u, zero: bool = False):
    u = np.asarray(u)
    assert u.shape[-1] == 1 and np.isfinite(u).all(), "NaN / inf in the uncertainty map"
    assert (u >= 0).all() and (u <= 1).all()
    if zero:
        assert (u == 0).all(), f"expected a zero map, max {u.max()}"


@_settings(4)
@given(bias=st.sampled_from([-1e4, -200.0, -30.0, 30.0, 200.0, 1e4]),
       kernel_scale=st.sampled_from([0.0, 1.0, 100.0]), seed=st.integers(0, 1000))
@example(bias=1e4, kernel_scale=0.0, seed=0)  # sigmoid exactly 1: depth = min_depth
@example(bias=-1e4, kernel_scale=1.0, seed=1)  # sigmoid exactly 0: depth = max_depth
def test_gradient_uncertainty_is_finite_for_saturated_disparities(bias, kernel_scale, seed):
    model, variables = _depthnet()
    v = _with_disp_bias(variables, bias, kernel_scale)
    est = gradient_uncertainty(model.apply, v, _image(seed))
    depth = np.asarray(est.depth)
    assert np.isfinite(depth).all() and (depth > 0).all()
    # |bias| = 1e4 with a small kernel: the sigmoid is exactly 0 or 1 at every pixel, the
    # depth is the constant min/max depth, the flip reference equals it: zero loss
    saturated = abs(bias) >= 1e4 and kernel_scale <= 1.0
    if saturated:
        assert np.ptp(depth) == 0.0
    _assert_map(est.uncertainty, zero=saturated)


def _pointwise_model(variables, images, offsets=None):
    """A per-pixel depth model (3 → 4 → 1 channels, element-wise arithmetic only): every
    pixel is computed by the same operations, so it is flip-equivariant bit for bit."""
    offsets = offsets or {}
    w1, w2 = variables["w1"], variables["w2"]
    a = sum(images[..., c:c + 1] * w1[c] for c in range(3)) + offsets.get("f1", 0.0)
    t = jnp.tanh(a)
    b = sum(t[..., c:c + 1] * w2[c] for c in range(4)) + offsets.get("f2", 0.0)
    depth = jax.nn.softplus(b) + 0.1
    return {"depth": depth, "disp": 1.0 / depth, "features": {"f1": a, "f2": b}}


_POINTWISE = {"w1": jax.random.normal(jax.random.PRNGKey(5), (3, 4)),
              "w2": jax.random.normal(jax.random.PRNGKey(6), (4, 1))}


@st.composite
def symmetric_images(draw, b=2, h=8):
    """`[b, h, w, 3]` images equal to their horizontal flip (w = 12 or 13: even and odd
    widths, two compiled shapes), some with saturated pixels (exactly 0 and 1)."""
    odd = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    left = rng.random((b, h, 6, 3)).astype(np.float32)
    middle = [rng.random((b, h, 1, 3)).astype(np.float32)] if odd else []
    x = np.concatenate([left, *middle, left[:, :, ::-1]], axis=2)
    if draw(st.booleans()):
        x = np.round(x)
    assert np.array_equal(x, x[:, :, ::-1])
    return jnp.asarray(x)


@functools.cache
def _pointwise_gradients():
    from jaxdepth.uncertainty import feature_gradients
    return jax.jit(lambda v, x: feature_gradients(_pointwise_model, v, x, taps=("f1", "f2")))


@_settings(6)
@given(x=symmetric_images())
def test_flip_symmetric_image_gives_zero_loss_and_a_zero_map(x):
    _, grads, loss = _pointwise_gradients()(_POINTWISE, x)
    assert (np.asarray(loss) == 0).all()
    assert all((np.asarray(g) == 0).all() for g in grads.values())
    runs = [dict(taps=("f1",))] + [dict(taps=("f1", "f2"), aggregate=a) for a in ("std", "zmean")]
    for kw in runs:
        u = np.asarray(gradient_uncertainty(_pointwise_model, _POINTWISE, x, **kw).uncertainty)
        assert np.isfinite(u).all() and (u == 0).all(), (kw, float(np.nanmax(u)))


def test_flip_symmetric_image_with_rank_aggregation_is_constant():
    # rank scores ties by their average rank: a zero (constant) map of every layer
    # becomes 0.5 everywhere, constant and finite (no information), not 0
    x = jnp.ones((1, 8, 6, 3)) * 0.25
    est = gradient_uncertainty(_pointwise_model, _POINTWISE, x, taps=("f1", "f2"),
                               aggregate="rank")
    u = np.asarray(est.uncertainty)
    assert np.isfinite(u).all() and np.ptp(u) == 0


@_settings(5)
@given(seed=st.integers(0, 2**32 - 1), binary=st.booleans())
def test_depthnet_on_a_flip_symmetric_image_is_finite(seed, binary):
    # DepthNet is not flip-equivariant (stride-2 convolutions, learned kernels), so the
    # loss is not zero here: the map must still be finite and in [0, 1]
    model, variables = _depthnet()
    left = np.random.default_rng(seed).random((2, H, W // 2, 3)).astype(np.float32)
    left = np.round(left) if binary else left
    x = np.concatenate([left, left[:, :, ::-1]], axis=2)
    assert np.array_equal(x, x[:, :, ::-1])
    est = gradient_uncertainty(model.apply, variables, jnp.asarray(x))
    _assert_map(est.uncertainty)


@_settings(3)
@given(index=st.integers(0, 1000), scale=st.sampled_from([1.0, 1e-3, 1e3]))
def test_gt_reference_with_one_pixel_wide_valid_masks(index, scale):
    # two images per call, and each image's map is its own: image 0 gets one region,
    # image 1 the other
    model, variables = _depthnet()
    x = _image(index)
    depth = np.asarray(_depthnet_forward()(variables, x)["depth"])
    i, j = index % H, index % W
    for first, second in (("column", "row"), ("pixel", "none")):
        gt = np.zeros_like(depth)  # invalid (≤ 0) except on the one-pixel-wide region
        for b, shape in enumerate((first, second)):
            region = {"column": (b, slice(None), slice(j, j + 1)),
                      "row": (b, slice(i, i + 1), slice(None)),
                      "pixel": (b, slice(i, i + 1), slice(j, j + 1))}.get(shape)
            if region is not None:
                gt[region] = depth[region] * 1.3 * scale
        if second == "none":
            gt[1, : H // 2] = np.nan  # NaN is invalid too
        est = gradient_uncertainty(model.apply, variables, x, reference="gt",
                                   depth_gt=jnp.asarray(gt))
        _assert_map(est.uncertainty[:1])
        # no valid pixel: the masked mean is 0, the gradient 0, the map 0 (not NaN)
        _assert_map(est.uncertainty[1:], zero=second == "none")
