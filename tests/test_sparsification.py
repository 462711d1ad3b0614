"""AUSE / AURG against an independent naive loop (np.percentile, boolean subsets, trapezoid)."""
import math

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth.metrics import (
    SPARSIFICATION_METRICS,
    ause_aurg,
    batch_ause_aurg,
    depth_metrics,
    mean_ause_aurg,
    sparsification_curves,
)
from jaxdepth.metrics import sparsification as sp

trapezoid = getattr(np, "trapezoid", None) or np.trapz


def naive_ause_aurg(gt, pred, unc, mask=None, steps=50):
    """The protocol written out literally, one subset at a time."""
    g, p, u = (np.asarray(a, np.float64).ravel() for a in (gt, pred, unc))
    valid = np.isfinite(g) & (g > 0)
    if mask is not None:
        valid &= np.asarray(mask, bool).ravel()
    g, p, u = g[valid], p[valid], u[valid]
    if g.size == 0:
        return {m: {"ause": math.nan, "aurg": math.nan} for m in SPARSIFICATION_METRICS}
    per_pixel = {"abs_rel": np.abs(g - p) / g, "rmse": (g - p) ** 2,
                 "a1": np.maximum(g / p, p / g)}

    def metric(name, keep):
        e = per_pixel[name][keep]
        if name == "abs_rel":
            return np.mean(e)
        if name == "rmse":
            return np.sqrt(np.mean(e))
        return np.mean(e >= 1.25)

    def curve(name, rank):
        ys = []
        for k in range(steps):
            q = 100.0 * k / steps
            thr = np.percentile(rank, 100 - q)
            # np.percentile's float64 position (n-1)*q/100 can land one ulp below an
            # integer (n = 51, q = 58 -> 28.999999999999996), putting the threshold a hair
            # below the value that IS the percentile; a tolerance far below the gaps
            # between distinct test values restores the mathematical inclusive rule.
            tol = 1e-9 * (np.ptp(rank) + 1.0)
            ys.append(metric(name, rank <= thr + tol))
        return np.array(ys + [0.0])

    x = np.linspace(0, 1, steps + 1)
    out = {}
    for name in SPARSIFICATION_METRICS:
        method = trapezoid(curve(name, u), x=x)
        oracle = trapezoid(curve(name, per_pixel[name]), x=x)
        full = metric(name, np.ones(g.size, bool))
        out[name] = {"ause": method - oracle, "aurg": full - method}
    return out


def random_batch(seed, b=3, h=9, w=13, levels=6):
    """Continuous gt/pred, quantised uncertainty (ties), masks, zero and NaN gt."""
    rng = np.random.default_rng(seed)
    gt = rng.uniform(1.0, 60.0, (b, h, w))
    pred = gt * rng.uniform(0.6, 1.6, (b, h, w))
    gt[:, 0, :3] = 0.0
    gt[:, 1, :2] = np.nan
    unc = np.round(rng.uniform(0, 1, (b, h, w)) * levels) / levels
    mask = rng.uniform(size=(b, h, w)) > 0.25
    return (gt.astype(np.float32), pred.astype(np.float32), unc.astype(np.float32), mask)


def assert_results_close(a, b, rtol, atol):
    for m in SPARSIFICATION_METRICS:
        for k in ("ause", "aurg"):
            np.testing.assert_allclose(np.asarray(a[m][k], np.float64), b[m][k],
                                       rtol=rtol, atol=atol, err_msg=f"{m}/{k}")


@pytest.mark.parametrize("steps", [50, 7])
def test_per_image_matches_naive_loop(steps):
    gt, pred, unc, mask = random_batch(seed=steps)
    for i in range(gt.shape[0]):
        ref = naive_ause_aurg(gt[i], pred[i], unc[i], mask[i], steps=steps)
        assert_results_close(ause_aurg(gt[i], pred[i], unc[i], mask[i], steps=steps),
                             ref, rtol=1e-9, atol=1e-9)
    # JAX inputs, no user mask, trailing channel.
    ref = naive_ause_aurg(gt[0], pred[0], unc[0], steps=steps)
    res = ause_aurg(jnp.asarray(gt[0])[..., None], jnp.asarray(pred[0]), jnp.asarray(unc[0]),
                    steps=steps)
    assert all(isinstance(res[m][k], float) for m in res for k in res[m])
    assert_results_close(res, ref, rtol=1e-9, atol=1e-9)


def test_batch_matches_per_image_float32():
    gt, pred, unc, mask = random_batch(seed=1)
    gt[2] = np.nan  # an image without a valid pixel
    res = batch_ause_aurg(gt[..., None], pred, unc, mask[..., None])
    assert res["rmse"]["ause"].shape == (3,)
    for i in range(3):
        ref = ause_aurg(gt[i], pred[i], unc[i], mask[i])
        assert_results_close({m: {k: v[i] for k, v in r.items()} for m, r in res.items()},
                             ref, rtol=1e-5, atol=1e-5)
    assert all(np.isnan(res[m][k][2]) for m in res for k in res[m])
    # B = 1, NumPy inputs, no mask.
    one = batch_ause_aurg(gt[:1], pred[:1], unc[:1])
    assert_results_close({m: {k: v[0] for k, v in r.items()} for m, r in one.items()},
                         naive_ause_aurg(gt[0], pred[0], unc[0]), rtol=1e-5, atol=1e-5)


def test_hand_worked_four_pixels():
    # gt = 1 everywhere, pred = 1.1, 1.2, 1.4, 2.0, uncertainty = 0.4, 0.3, 0.2, 0.1 (the
    # most wrong pixel looks the most certain), steps = 4: q = 0, 25, 50, 75 %,
    # x = 0, .25, .5, .75, 1. Percentile positions (n-1)(1-q) = 3, 2.25, 1.5, 0.75 keep
    # the 4, 3, 2, 1 least uncertain pixels: {all}, {1,2,3}, {2,3}, {3}.
    #   abs_rel = .1 .2 .4 1.   method .425, 1.6/3, .7, 1, 0   oracle .425, .7/3, .15, .1, 0
    #     trapz(method) = .25 (.2125 + 1.6/3 + .7 + 1) ; trapz(oracle) = .25 (.2125 + .7/3
    #     + .15 + .1); AUSE = .25 (1.6/3 - .7/3 + .45 + .9) = .25 * 1.75 = .4375,
    #     AURG = .425 - .25 (.2125 + 1.6/3 + 1.7)
    #   sq = .01 .04 .16 1.     method sqrt(1.21/4)=.55, sqrt(.4), sqrt(.58), 1, 0
    #                           oracle .55, sqrt(.07), sqrt(.025), .1, 0
    #   ratio = 1.1 1.2 1.4 2 -> outliers 0 0 1 1: method 1/2, 2/3, 1, 1, 0 (area 35/48),
    #                           oracle 1/2, 1/3, 0, 0, 0 (area 7/48): AUSE 7/12, AURG -11/48
    gt = np.ones((2, 2))
    pred = np.array([[1.1, 1.2], [1.4, 2.0]])
    unc = np.array([[0.4, 0.3], [0.2, 0.1]])
    m_rmse = 0.25 * (0.275 + math.sqrt(0.4) + math.sqrt(0.58) + 1.0)
    o_rmse = 0.25 * (0.275 + math.sqrt(0.07) + math.sqrt(0.025) + 0.1)
    expected = {
        "abs_rel": {"ause": 0.4375, "aurg": 0.425 - 0.25 * (0.2125 + 1.6 / 3 + 1.7)},
        "rmse": {"ause": m_rmse - o_rmse, "aurg": 0.55 - m_rmse},
        "a1": {"ause": 7 / 12, "aurg": -11 / 48},
    }
    assert_results_close(ause_aurg(gt, pred, unc, steps=4), expected, rtol=0, atol=1e-12)
    res = batch_ause_aurg(gt[None], pred[None], unc[None], steps=4)
    assert_results_close({m: {k: v[0] for k, v in r.items()} for m, r in res.items()},
                         expected, rtol=0, atol=1e-6)
    # Ties at the threshold are all kept: with u = .1 .2 .2 .2 the 25 % and 50 % steps
    # land on 0.2 (positions 2.25, 1.5) and keep all four pixels; 75 % (0.75) keeps one.
    curves = sparsification_curves(gt[None], pred[None],
                                   np.array([[[0.2, 0.2], [0.2, 0.1]]]), steps=4)
    np.testing.assert_allclose(curves["abs_rel"]["method"][0], [0.425, 0.425, 0.425, 1.0, 0.0],
                               atol=1e-6)
    np.testing.assert_allclose(curves["x"], [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curves["abs_rel"]["random"][0], [0.425] * 5, atol=1e-6)


def test_exact_percentile_rule_where_numpy_rounds_down():
    # n = 51, steps = 50, k = 21: the 58th percentile of 0..50 is exactly 29, but
    # np.percentile returns 28.999999999999996 and `u <= thr` would keep 29 pixels, not 30.
    u = np.arange(51.0)
    assert np.sum(u <= np.percentile(u, 58)) == 29
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 10, (1, 3, 17))
    pred = gt * rng.uniform(0.5, 1.5, gt.shape)
    unc = rng.permutation(u).reshape(1, 3, 17)
    curves = sparsification_curves(gt, pred, unc)
    keep = unc[0] <= 29
    expected = np.mean(np.abs(gt[0] - pred[0])[keep] / gt[0][keep])
    np.testing.assert_allclose(curves["abs_rel"]["method"][0, 21], expected, rtol=1e-6)
    assert_results_close(ause_aurg(gt[0], pred[0], unc[0]),
                         naive_ause_aurg(gt[0], pred[0], unc[0]), rtol=1e-9, atol=1e-9)


def test_perfect_uncertainty_gives_zero_ause():
    gt, pred, _, mask = random_batch(seed=3)
    g, p = gt.astype(np.float64), pred.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rankings = {"abs_rel": np.abs(g - p) / g, "rmse": np.abs(g - p),
                    "a1": np.maximum(g / p, p / g)}
    for name, unc in rankings.items():
        unc = np.where(np.isfinite(unc), unc, 0.0)  # invalid pixels are masked out anyway
        assert abs(ause_aurg(gt[0], pred[0], unc[0], mask[0])[name]["ause"]) < 1e-12
        batch = batch_ause_aurg(gt, pred, unc.astype(np.float32), mask)
        np.testing.assert_allclose(batch[name]["ause"], 0.0, atol=1e-5)


@pytest.mark.parametrize("steps", [50, 10])
def test_constant_uncertainty_aurg_is_metric_over_two_steps(steps):
    # Every pixel is kept at every step, so method = [M, ..., M, 0] and
    # trapz = M (1 - 1/steps) + (M/2)(1/steps) = M (1 - 1/(2 steps)): AURG = M / (2 steps).
    gt, pred, _, mask = random_batch(seed=4)
    unc = np.full(gt.shape, 0.3, np.float32)
    batch = batch_ause_aurg(gt, pred, unc, mask, steps=steps)
    for i in range(3):
        d = depth_metrics(gt[i], pred[i], mask[i])
        full = {"abs_rel": d["abs_rel"], "rmse": d["rmse"], "a1": 1.0 - d["a1"]}
        res = ause_aurg(gt[i], pred[i], unc[i], mask[i], steps=steps)
        for name, m in full.items():
            np.testing.assert_allclose(res[name]["aurg"], float(m) / (2 * steps), rtol=1e-5)
            np.testing.assert_allclose(batch[name]["aurg"][i], float(m) / (2 * steps),
                                       rtol=1e-4)


def test_single_valid_pixel_and_no_valid_pixel():
    gt = np.zeros((3, 4))
    gt[1, 2] = 4.0
    pred = np.full((3, 4), 5.0)
    unc = np.arange(12.0).reshape(3, 4)
    one = ause_aurg(gt, pred, unc, steps=50)
    # n = 1: method = oracle = the pixel's error at every step -> AUSE 0, AURG = e / 100.
    assert one["abs_rel"]["ause"] == 0.0
    assert one["abs_rel"]["aurg"] == pytest.approx(0.25 / 100)
    assert one["rmse"]["aurg"] == pytest.approx(1.0 / 100)
    assert one["a1"]["aurg"] == pytest.approx(1.0 / 100)  # ratio 5/4 = 1.25 is an outlier
    none = ause_aurg(np.zeros((3, 4)), pred, unc)
    assert all(math.isnan(none[m][k]) for m in none for k in none[m])
    batch = batch_ause_aurg(np.stack([gt, np.zeros((3, 4))]), np.stack([pred] * 2),
                            np.stack([unc] * 2))
    np.testing.assert_allclose(batch["abs_rel"]["aurg"][0], 0.25 / 100, rtol=1e-6)
    assert np.isnan(batch["abs_rel"]["aurg"][1])


def test_nonfinite_uncertainty_or_prediction_is_nan():
    gt, pred, unc, mask = random_batch(seed=5, b=1)
    bad_u = unc.copy()
    bad_u[0, 5, 5] = np.nan
    mask[0, 5, 5] = True
    res = ause_aurg(gt[0], pred[0], bad_u[0], mask[0])
    assert math.isnan(res["rmse"]["ause"])
    mask[0, 5, 5] = False  # the bad pixel is masked out: fine again
    assert math.isfinite(ause_aurg(gt[0], pred[0], bad_u[0], mask[0])["rmse"]["ause"])
    bad_p = pred.copy()
    bad_p[0, 5, 5] = 0.0
    assert np.isnan(batch_ause_aurg(gt, bad_p, unc)["a1"]["ause"][0])


def test_mean_ause_aurg_skips_images_without_valid_pixels():
    gt, pred, unc, mask = random_batch(seed=6, b=3)
    gt[1] = 0.0
    per_image = [ause_aurg(gt[i], pred[i], unc[i], mask[i]) for i in range(3)]
    with pytest.warns(RuntimeWarning, match="skipped 1 of 3"):
        mean = mean_ause_aurg(per_image)
    expected = (per_image[0]["rmse"]["ause"] + per_image[2]["rmse"]["ause"]) / 2
    assert mean["rmse"]["ause"] == pytest.approx(expected)
    with pytest.warns(RuntimeWarning, match="skipped 1 of 3"):
        batched = mean_ause_aurg(batch_ause_aurg(gt, pred, unc, mask))
    assert batched["a1"]["aurg"] == pytest.approx(mean["a1"]["aurg"], abs=1e-5)


def test_sparsification_curves_layout_and_areas():
    gt, pred, unc, mask = random_batch(seed=7)
    curves = sparsification_curves(gt, pred, unc, mask, steps=10)
    res = batch_ause_aurg(gt, pred, unc, mask, steps=10)
    assert curves["x"].shape == (11,)
    for name in SPARSIFICATION_METRICS:
        c = curves[name]
        assert c["method"].shape == c["oracle"].shape == c["random"].shape == (3, 11)
        np.testing.assert_array_equal(c["method"][:, -1], 0.0)
        ause = trapezoid(c["method"] - c["oracle"], x=curves["x"], axis=-1)
        np.testing.assert_allclose(ause, res[name]["ause"], atol=1e-5)
        # The oracle is never above the method curve (it keeps the smallest errors).
        assert np.all(np.asarray(c["oracle"]) <= np.asarray(c["method"]) + 1e-6)


def test_no_batch_by_steps_by_pixels_intermediate():
    b, h, w, steps = 2, 16, 16, 50
    args = (jnp.ones((b, h * w)), jnp.ones((b, h * w)), jnp.ones((b, h * w)),
            jnp.ones((b, h * w), bool))
    jaxpr = jax.make_jaxpr(lambda *a: sp._batch_core(*a, steps=steps))(*args)

    def sizes(jx):
        for eqn in jx.eqns:
            for v in eqn.outvars:
                yield int(np.prod(v.aval.shape))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from sizes(sub)

    assert max(sizes(jaxpr.jaxpr)) < b * steps * h * w / 4


def test_shape_errors():
    a = np.ones((4, 5))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        ause_aurg(a, np.ones((4, 6)), a)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        ause_aurg(np.ones((2, 4, 5)), np.ones((2, 4, 5)), np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        batch_ause_aurg(a, a, a)
    with pytest.raises(ValueError, match=r"mask"):
        batch_ause_aurg(a[None], a[None], a[None], mask=np.ones((1, 4, 4), bool))
    with pytest.raises(ValueError, match="steps"):
        ause_aurg(a, a, a, steps=0)


def test_sharded_batch_gives_the_same_numbers():
    from jax.sharding import NamedSharding, PartitionSpec

    n = jax.device_count()
    gt, pred, unc, mask = random_batch(seed=8, b=n, h=4, w=6)
    mesh = jax.make_mesh((n,), ("data",))
    shard = NamedSharding(mesh, PartitionSpec("data"))
    sharded = [jax.device_put(a, shard) for a in (gt, pred, unc, mask)]
    # The jit form on a sharded batch (vmap over sharded inputs) vs the default.
    a, b = batch_ause_aurg(*sharded, backend="jax"), batch_ause_aurg(gt, pred, unc, mask)
    for m in SPARSIFICATION_METRICS:
        for k in ("ause", "aurg"):
            np.testing.assert_allclose(a[m][k], b[m][k], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ backends: NumPy fast path, jit
def tied_batch(seed, b=3, h=9, w=13):
    """Integer gt / pred (tied errors, ratios exactly 1.25 at g = 4, p = 5), few
    uncertainty levels, NaN / zero gt, a NaN prediction and a NaN uncertainty on masked
    pixels only, masks."""
    rng = np.random.default_rng(seed)
    gt = rng.integers(1, 9, (b, h, w)).astype(np.float32)
    pred = rng.integers(1, 9, (b, h, w)).astype(np.float32)
    gt[:, 0, :2], gt[:, 1, 0] = 0.0, np.nan
    gt[0, 2, 2], pred[0, 2, 2] = 4.0, 5.0
    unc = rng.integers(0, 4, (b, h, w)).astype(np.float32) / 4
    mask = rng.uniform(size=(b, h, w)) > 0.2
    mask[:, 3, 3] = False
    pred[:, 3, 3], unc[:, 3, 3] = np.nan, np.nan  # masked out: harmless
    return gt, pred, unc, mask


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numpy_fast_path_equals_naive_and_jit(seed):
    data = random_batch(seed=20 + seed) if seed == 2 else tied_batch(seed)
    steps = (50, 7, 50)[seed]  # one shape: the jax form compiles twice
    gt, pred, unc, mask = data
    fast = sp.batch_sparsification(*data, steps=steps, backend="numpy")
    jit = sp.batch_sparsification(*data, steps=steps, backend="jax")
    for i in range(gt.shape[0]):
        ref = naive_ause_aurg(gt[i], pred[i], unc[i], mask[i], steps=steps)
        assert_results_close(ause_aurg(gt[i], pred[i], unc[i], mask[i], steps=steps), ref,
                             rtol=1e-9, atol=1e-12)
        for res in (fast, jit):
            assert_results_close({m: {k: res[m][k][i] for k in ("ause", "aurg")}
                                  for m in SPARSIFICATION_METRICS}, ref, rtol=1e-5, atol=1e-6)
    for m in SPARSIFICATION_METRICS:
        for k in ("method", "oracle", "full", "ause", "aurg"):
            assert fast[m][k].dtype == jit[m][k].dtype == jnp.result_type(float)
            np.testing.assert_allclose(fast[m][k], jit[m][k], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{m}/{k}")
    np.testing.assert_allclose(fast["x"], jit["x"], rtol=1e-6)  # jnp.linspace: 1 ulp off


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_backends_on_degenerate_images(backend):
    gt, pred, unc, mask = tied_batch(seed=3)
    gt[1, :5], mask[1, 5:] = np.nan, False  # no valid pixel
    pred[2, 4, 4], mask[2, 4, 4] = -1.0, True  # non-positive prediction on a valid pixel
    res = sp.batch_sparsification(gt, pred, unc, mask, backend=backend)
    for m in SPARSIFICATION_METRICS:
        for k in ("method", "oracle", "full", "ause", "aurg"):
            v = np.asarray(res[m][k])
            assert np.isfinite(v[0]).all() and np.isnan(v[1:]).all(), (m, k)
    with pytest.warns(RuntimeWarning, match="skipped 2 of 3"):
        mean = mean_ause_aurg(batch_ause_aurg(gt, pred, unc, mask, backend=backend))
    assert mean["rmse"]["ause"] == pytest.approx(float(res["rmse"]["ause"][0]))
    # A single valid pixel: AUSE 0, AURG = error / (2 steps).
    one = np.zeros_like(mask)
    one[:, 5, 5] = True
    res = batch_ause_aurg(gt, pred, unc, one, backend=backend)  # the compiled shape
    err = np.abs(gt[:, 5, 5] - pred[:, 5, 5]) / gt[:, 5, 5]
    np.testing.assert_array_equal(res["abs_rel"]["ause"], 0.0)
    np.testing.assert_allclose(res["abs_rel"]["aurg"], err / 100, rtol=1e-4)  # f32 M − area


def test_jit_and_vmap_take_the_jax_form():
    gt, pred, unc, mask = tied_batch(seed=4)
    eager = batch_ause_aurg(gt, pred, unc, mask)
    jitted = jax.jit(lambda *a: batch_ause_aurg(*a))(gt, pred, unc, mask)
    stacked = [np.stack([a, a[::-1]]) for a in (gt, pred, unc, mask)]
    vmapped = jax.vmap(lambda *a: sparsification_curves(*a, steps=50))(*stacked)
    curves = sparsification_curves(gt, pred, unc, mask)
    for m in SPARSIFICATION_METRICS:
        for k in ("ause", "aurg"):
            np.testing.assert_allclose(jitted[m][k], eager[m][k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(vmapped[m]["method"][0], curves[m]["method"], atol=1e-6)
        np.testing.assert_allclose(vmapped[m]["oracle"][1], curves[m]["oracle"][::-1],
                                   atol=1e-6)
    with pytest.raises(ValueError, match="traced"):
        jax.jit(lambda *a: batch_ause_aurg(*a, backend="numpy"))(gt, pred, unc, mask)
    with pytest.raises(ValueError, match="backend"):
        batch_ause_aurg(gt, pred, unc, mask, backend="torch")


def test_dispatch_rule(monkeypatch):
    x = np.ones((1, 2, 2))
    assert sp._resolve_backend(None, x) == ("numpy" if jax.default_backend() == "cpu"
                                            else "jax")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert sp._resolve_backend(None, x) == "jax"
    assert sp._resolve_backend("numpy", x) == "numpy"
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert sp._resolve_backend(None, x, None) == "numpy"
    assert sp._resolve_backend("jax", x) == "jax"


def test_fast_path_large_image_with_ties_and_sparse_mask():
    # 5 % valid pixels of a 60×200 image, uncertainty on 64 levels: the NumPy form
    # against the naive loop (float64).
    rng = np.random.default_rng(9)
    gt = rng.uniform(1, 80, (1, 60, 200)).astype(np.float32)
    pred = (gt * rng.uniform(0.7, 1.4, gt.shape)).astype(np.float32)
    unc = (rng.integers(0, 64, gt.shape) / 64).astype(np.float32)
    mask = rng.uniform(size=gt.shape) < 0.05
    ref = naive_ause_aurg(gt[0], pred[0], unc[0], mask[0])
    assert_results_close(ause_aurg(gt[0], pred[0], unc[0], mask[0]), ref, rtol=1e-9,
                         atol=1e-12)
    fast = batch_ause_aurg(gt, pred, unc, mask)
    assert_results_close({m: {k: v[0] for k, v in r.items()} for m, r in fast.items()}, ref,
                         rtol=1e-5, atol=1e-6)
