"""ADU-Depth losses (jaxdepth.losses.adu) and attention adapter (jaxdepth.models.adapter)
against hand-worked cases, naive numpy loops and scipy log-densities."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxdepth.losses import adu
from jaxdepth.models.adapter import (AttentionAdapter, MultiLevelAdapter, Restore,
                                     adaptive_avg_pool, pool_grid)

RNG = np.random.default_rng(0)


def _depth(shape, lo=1.0, hi=10.0):
    return jnp.asarray(RNG.uniform(lo, hi, shape), jnp.float32)


# ----------------------------------------------------------------------------- SILog

def test_silog_hand_worked_2x2_and_invalid_pixel_ignored():
    e = math.e
    pred = np.array([[1.0, e], [e * e, 99.0]], np.float32)[None, :, :, None]
    gt = np.array([[1.0, 1.0], [1.0, 3.0]], np.float32)[None, :, :, None]
    mask = jnp.asarray(np.array([[1, 1], [1, 0]], bool)[None, :, :, None])
    # d = 0, 1, 2 → mean d² = 5/3, mean d = 1
    want = 10.0 * math.sqrt(5.0 / 3.0 - 0.85 * 1.0)
    # the invalid pixel may hold anything, even 0 / NaN / inf, in pred or gt
    preds, gts = [pred], [gt]
    for p4, g4 in [(0.0, 0.0), (np.nan, 5.0), (1e6, np.inf)]:
        preds.append(pred.copy()), gts.append(gt.copy())
        preds[-1][0, 1, 1, 0], gts[-1][0, 1, 1, 0] = p4, g4
    f = jax.jit(jax.vmap(jax.value_and_grad(adu.silog_loss), in_axes=(0, 0, None)))
    loss, grad = f(jnp.asarray(np.stack(preds)), jnp.asarray(np.stack(gts)), mask)
    np.testing.assert_allclose(loss, [want] * 4, rtol=1e-6)
    assert np.all(np.isfinite(grad)) and np.all(grad[:, 0, 1, 1, 0] == 0.0)
    np.testing.assert_allclose(grad, np.broadcast_to(grad[:1], grad.shape), rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(adu.silog_loss, static_argnums=(3, 4))(pred, gt, mask, 1.0, 1.0),
        math.sqrt(2.0 / 3.0), rtol=1e-6)


def test_silog_pools_over_batch_and_exact_fit_has_zero_finite_gradient():
    pred, gt = _depth((2, 3, 4, 1)), _depth((2, 3, 4, 1))
    mask = jnp.asarray(RNG.uniform(size=(2, 3, 4, 1)) > 0.3)
    d = (np.log(np.asarray(pred)) - np.log(np.asarray(gt)))[np.asarray(mask)]
    want = 10 * np.sqrt(np.mean(d ** 2) - 0.85 * np.mean(d) ** 2)
    f = jax.jit(jax.value_and_grad(adu.silog_loss))
    np.testing.assert_allclose(f(pred, gt, mask)[0], want, rtol=1e-5)
    loss, grad = f(gt, gt, mask)
    assert loss == 0.0 and np.all(np.isfinite(grad))
    assert f(pred, gt, jnp.zeros_like(mask))[0] == 0.0


# ----------------------------------------------------------------------------- Eq. 2–3

def test_feature_distillation_matches_numpy_per_level_mean():
    s = [jnp.asarray(RNG.normal(size=(2, 4, 6, 3)), jnp.float32),
         jnp.asarray(RNG.normal(size=(2, 2, 3, 5)), jnp.float32)]
    t = [jnp.asarray(RNG.normal(size=x.shape), jnp.float32) for x in s]
    pix = np.mean([np.mean(np.sum((np.asarray(b) - np.asarray(a)) ** 2, -1))
                   for a, b in zip(s, t)])
    ele = np.mean([np.mean((np.asarray(b) - np.asarray(a)) ** 2) for a, b in zip(s, t)])

    @jax.jit
    def f(s, t):
        g_t = jax.grad(lambda tt: adu.feature_distillation_loss(s, tt))(t)
        return (adu.feature_distillation_loss(s, t),
                adu.feature_distillation_loss(s, t, "element"), g_t)

    got_pix, got_ele, g_t = f(s, t)
    np.testing.assert_allclose(got_pix, pix, rtol=1e-5)
    np.testing.assert_allclose(got_ele, ele, rtol=1e-5)
    assert all(np.all(np.asarray(g) == 0) for g in g_t)   # frozen teacher


# ----------------------------------------------------------------------------- Eq. 4–6

def _naive_focal(ds, dt, mask, alpha, gamma, eps=1e-6):
    out = []
    for b in range(ds.shape[0]):
        tot, n = 0.0, 0
        for i in range(ds.shape[1]):
            for j in range(ds.shape[2]):
                if mask is None or mask[b, i, j, 0]:
                    tot += abs((dt[b, i, j, 0] - ds[b, i, j, 0]) / dt[b, i, j, 0])
                    n += 1
        p = min(max(1.0 - tot / n, eps), 1.0)
        out.append(-alpha * (1.0 - p) ** gamma * math.log(p))
    return np.mean(out)


def test_focal_depth_against_per_pixel_loop():
    dt = _depth((2, 3, 5, 1))
    ds = dt * jnp.asarray(RNG.uniform(0.7, 1.3, dt.shape), jnp.float32)
    mask = np.asarray(RNG.uniform(size=dt.shape) > 0.4)
    mask[:, 0, 0] = True
    settings = [(0.25, 2.0), (1.0, 0.0), (0.5, 1.5)]

    @jax.jit
    def f(ds, dt, mask):
        out = [adu.focal_depth_loss(ds, dt, m, alpha_d=a, gamma=g)
               for m in (None, mask) for a, g in settings]
        far = dt * 3.0   # mean relative error ≥ 1: p_d ≤ 0, clamped
        far_loss, far_grad = jax.value_and_grad(adu.focal_depth_loss)(far, dt)
        return (jnp.stack(out), adu.distillation_score(far, dt), far_loss, far_grad,
                adu.focal_depth_loss(dt, dt))

    got, far_p, far_loss, far_grad, same = f(ds, dt, jnp.asarray(mask))
    dsn, dtn = np.asarray(ds, np.float64), np.asarray(dt, np.float64)
    want = [_naive_focal(dsn, dtn, m, a, g) for m in (None, mask) for a, g in settings]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.all(far_p < 0)
    np.testing.assert_allclose(far_loss, -0.25 * math.log(1e-6), rtol=1e-4)
    assert np.all(np.isfinite(far_grad))
    assert same == 0.0   # equal depths: p_d = 1, loss 0


def test_soft_label_l1_hand_worked():
    ds = jnp.asarray([[[[1.0], [2.0]], [[3.0], [4.0]]],
                      [[[1.0], [1.0]], [[1.0], [1.0]]]])
    dt = jnp.full(ds.shape, 2.0)
    m = np.zeros(ds.shape, bool)
    m[0, 1, 1, 0] = True
    f = jax.jit(lambda ds, dt, m: jnp.stack([
        adu.soft_label_loss(ds, dt), adu.soft_label_loss(ds, dt, reduction="mean"),
        adu.soft_label_loss(ds, dt, m, reduction="mean"), adu.soft_label_loss(ds, dt, m)]))
    # per image |2−1|+0+|2−3|+|2−4| = 4 and 4·|2−1| = 4 → sum 4; 8 / 8 pixels → mean 1;
    # the one masked pixel |2−4| = 2: mean 2, per-image sums 2 and 0 → 1
    np.testing.assert_allclose(f(ds, dt, m), [4.0, 1.0, 2.0, 1.0])


# ----------------------------------------------------------------------------- Eq. 7–8

def test_gaussian_and_laplace_nll_match_scipy_up_to_constants():
    shape = (2, 4, 4, 1)
    mu, y = _depth(shape), _depth(shape)
    s = jnp.asarray(RNG.uniform(-1.5, 1.5, shape), jnp.float32)
    m = jnp.asarray(RNG.uniform(size=shape) > 0.3)
    f_s = jnp.asarray(RNG.normal(size=(2, 4, 4, 3)), jnp.float32)
    f_t = jnp.asarray(RNG.normal(size=(2, 4, 4, 3)), jnp.float32)

    @jax.jit
    def f(mu, y, s, m, f_s, f_t):
        return {"gauss": [adu.uncertainty_feature_loss([mu], [y], s, sigma_param=p)
                          for p in ("log_var", "log_std")],
                "laplace": [adu.uncertainty_response_loss(mu, y, s, mm, sigma_param=p)
                            for p in ("log_std", "log_var") for mm in (None, m)],
                "eq8": adu.uncertainty_response_loss(mu, y, s),
                "eq7": adu.uncertainty_feature_loss([f_s], [f_t], s)}

    got = f(mu, y, s, m, f_s, f_t)
    mun, yn, sn, mn = (np.asarray(a, np.float64) for a in (mu, y, s, m))
    # Eq. 7 with C = 1: s = log σ² (σ = e^{s/2}) or log σ; NLL − ½ log 2π
    for g, sigma in zip(got["gauss"], [np.exp(sn / 2), np.exp(sn)]):
        want = np.mean(-stats.norm.logpdf(yn, mun, sigma)) - 0.5 * math.log(2 * math.pi)
        np.testing.assert_allclose(g, want, rtol=1e-5)
    # Eq. 8: Laplace with variance σ², scale b = σ/√2; NLL − ½ log 2
    want = []
    for sigma in [np.exp(sn), np.exp(sn / 2)]:
        nll = -stats.laplace.logpdf(yn, mun, sigma / math.sqrt(2)) - 0.5 * math.log(2)
        want += [np.mean(nll), np.mean(nll[mn.astype(bool)])]
    np.testing.assert_allclose(got["laplace"], want, rtol=1e-5)
    # Eq. 8 as printed, and Eq. 7 as printed with 3 channels (‖·‖² over channels)
    np.testing.assert_allclose(got["eq8"],
                               np.mean(np.sqrt(2) * np.exp(-sn) * np.abs(yn - mun) + sn),
                               rtol=1e-5)
    sq = np.sum((np.asarray(f_t) - np.asarray(f_s)) ** 2, -1, keepdims=True)
    np.testing.assert_allclose(got["eq7"], np.mean(0.5 * np.exp(-sn) * sq + 0.5 * sn),
                               rtol=1e-5)


def test_uncertainty_pyramid_area_pools_and_per_level_list_is_equivalent():
    s = jnp.asarray(RNG.normal(size=(1, 8, 12, 1)), jnp.float32)
    feats = [jnp.zeros((1, 4, 6, 2)), jnp.zeros((1, 2, 3, 5))]
    t = [jnp.ones_like(f) for f in feats]

    @jax.jit
    def f(s, feats, t):
        pyr = adu.uncertainty_pyramid(s, [(4, 6), (2, 3), (8, 12)])
        x = jnp.arange(5.0).reshape(1, 5, 1, 1)
        return (pyr, adaptive_avg_pool(x, (2, 1))[0, :, 0, 0],
                adu.uncertainty_feature_loss(feats, t, s),
                adu.uncertainty_feature_loss(feats, t, pyr[:2]))

    pyr, bins, from_map, from_list = f(s, feats, t)
    np.testing.assert_allclose(pyr[0], np.asarray(s).reshape(1, 4, 2, 6, 2, 1)
                               .mean((2, 4)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(pyr[2], s)
    np.testing.assert_allclose(bins, [1.0, 3.0])   # PyTorch bins for 5 → 2: [0:3], [2:5]
    np.testing.assert_allclose(from_map, from_list, rtol=1e-6)


# ----------------------------------------------------------------------------- adapter

def _naive_attention(x, p, heads, scale, kv=None):
    """softmax(QKᵀ·scale)·X over the tokens of x [H,W,C] (keys/values from kv)."""
    h, w, _ = x.shape
    xq = x.reshape(h * w, -1)
    xk = xq if kv is None else kv.reshape(-1, kv.shape[-1])
    q = xq @ p["query"]["kernel"] + p["query"]["bias"]
    k = xk @ p["key"]["kernel"] + p["key"]["bias"]
    v = xk @ p["value"]["kernel"] + p["value"]["bias"]
    dq, dv = q.shape[1] // heads, v.shape[1] // heads
    out = []
    for n in range(heads):
        logits = q[:, n * dq:(n + 1) * dq] @ k[:, n * dq:(n + 1) * dq].T * scale
        wts = np.exp(logits - logits.max(1, keepdims=True))
        wts /= wts.sum(1, keepdims=True)
        out.append(wts @ v[:, n * dv:(n + 1) * dv])
    return np.concatenate(out, 1).reshape(h, w, -1)


def _params(c_in, qk, out):
    """Random Eq. 1 parameters (non-zero biases), as the AttentionAdapter tree."""
    def dense(n):
        return {"kernel": jnp.asarray(RNG.normal(size=(c_in, n)) / math.sqrt(c_in),
                                      jnp.float32),
                "bias": jnp.asarray(RNG.normal(size=(n,)) * 0.1, jnp.float32)}
    return {"params": {"query": dense(qk), "key": dense(qk), "value": dense(out)}}


def _np_params(variables):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])


def test_full_attention_matches_naive_numpy_softmax_attention():
    x = jnp.asarray(RNG.normal(size=(2, 3, 5, 4)), jnp.float32)
    mod = AttentionAdapter(out_channels=6, num_heads=2, qk_channels=4, attention="full")
    lit = AttentionAdapter(out_channels=6, attention="full", scale=1.0)   # Eq. 1 as printed
    shapes = jax.tree.map(lambda a: a.shape, jax.eval_shape(mod.init, jax.random.PRNGKey(0), x))
    var, var1 = _params(4, 4, 6), _params(4, 6, 6)
    assert shapes == jax.tree.map(lambda a: a.shape, var)
    y, y1 = jax.jit(lambda v, v1, x: (mod.apply(v, x), lit.apply(v1, x)))(var, var1, x)
    assert y.shape == (2, 3, 5, 6)
    p, xn = _np_params(var), np.asarray(x, np.float64)
    for b in range(2):
        np.testing.assert_allclose(y[b], _naive_attention(xn[b], p, 2, 1 / math.sqrt(2)),
                                   rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y1[0], _naive_attention(xn[0], _np_params(var1), 1, 1.0),
                               rtol=1e-4, atol=1e-5)


def test_pooled_and_window_forms_shapes_and_where_they_equal_full():
    x = jnp.asarray(RNG.normal(size=(1, 6, 10, 3)), jnp.float32)
    var = _params(3, 5, 5)                     # one parameter tree serves every form
    mods = {"full": AttentionAdapter(5, attention="full"),
            "big_pool": AttentionAdapter(5, attention="pooled", pool_tokens=10_000),
            "big_win": AttentionAdapter(5, attention="window", window=(64, 64)),
            "pool": AttentionAdapter(5, attention="pooled", pool_tokens=15),
            "win": AttentionAdapter(5, attention="window", window=(4, 4))}
    y = jax.jit(lambda v, x: {k: m.apply(v, x) for k, m in mods.items()})(var, x)
    assert all(a.shape == (1, 6, 10, 5) for a in y.values())
    np.testing.assert_allclose(y["big_pool"], y["full"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y["big_win"], y["full"], rtol=1e-5, atol=1e-6)
    p, xn = _np_params(var), np.asarray(x[0], np.float64)
    scale = 1 / math.sqrt(5)
    np.testing.assert_allclose(y["full"][0], _naive_attention(xn, p, 1, scale),
                               rtol=1e-4, atol=1e-5)
    # pooled to a smaller grid: attention over adaptive-average-pooled keys/values
    assert pool_grid(6, 10, 15) == (3, 5) and pool_grid(88, 280, 256) == (9, 28)
    kv = xn.reshape(3, 2, 5, 2, 3).mean((1, 3))
    np.testing.assert_allclose(y["pool"][0], _naive_attention(xn, p, 1, scale, kv),
                               rtol=1e-4, atol=1e-5)
    # windows 4×4 over 6×10 (padded to 8×12): each truncated block attends on its own
    want = np.zeros((6, 10, 5))
    for i in range(0, 6, 4):
        for j in range(0, 10, 4):
            want[i:i + 4, j:j + 4] = _naive_attention(xn[i:i + 4, j:j + 4], p, 1, scale)
    np.testing.assert_allclose(y["win"][0], want, rtol=1e-4, atol=1e-5)


def test_multilevel_adapter_and_restore():
    feats = [jnp.asarray(RNG.normal(size=(1, 4, 8, 3)), jnp.float32),
             jnp.asarray(RNG.normal(size=(1, 2, 4, 6)), jnp.float32)]
    s = [jnp.ones((1, 4, 8, 1)), jnp.ones((1, 2, 4, 1))]
    d = _depth((1, 4, 8, 1))
    mod = MultiLevelAdapter(out_channels=(5, 7), attention="full", restore="conv")
    ident = MultiLevelAdapter(out_channels=(5, 7), attention="full")

    @jax.jit
    def f(feats, s, d):
        var = mod.init(jax.random.PRNGKey(0), feats, s)
        plain = ident.apply({"params": {k: var["params"][k] for k in ("level_0", "level_1")}},
                            feats)
        r = Restore()
        return var, mod.apply(var, feats, s), plain, r.apply(r.init(jax.random.PRNGKey(0),
                                                                    d, s[0]), d, s[0])

    var, out, plain, restored = f(feats, s, d)
    assert set(var["params"]) == {"level_0", "level_1", "restore_0", "restore_1"}
    assert [o.shape for o in out] == [(1, 4, 8, 5), (1, 2, 4, 7)]
    for o, q in zip(out, plain):    # zero-initialised g starts as the identity
        np.testing.assert_allclose(o, q, rtol=1e-6)
    np.testing.assert_allclose(restored, d)


# ----------------------------------------------------------------------------- Eq. 9

def _batch(b=2, h=8, w=8):
    gt = RNG.uniform(1.0, 10.0, (b, h, w, 1)).astype(np.float32)
    mask = RNG.uniform(size=(b, h, w, 1)) > 0.5
    pred = gt * RNG.uniform(0.8, 1.2, gt.shape).astype(np.float32)
    teacher = gt * RNG.uniform(0.9, 1.1, gt.shape).astype(np.float32)
    log_var = RNG.uniform(-1, 1, gt.shape).astype(np.float32)
    fs = [RNG.normal(size=(b, h // 2, w // 2, 4)).astype(np.float32),
          RNG.normal(size=(b, h // 4, w // 4, 6)).astype(np.float32)]
    ft = [RNG.normal(size=f.shape).astype(np.float32) for f in fs]
    return jax.tree.map(jnp.asarray, dict(pred=pred, gt=gt, mask=mask, teacher_depth=teacher,
                                          log_var=log_var, student_feats=fs,
                                          teacher_feats=ft))


def _call(kw, config, **over):
    kw = {**kw, **over}
    return adu.adu_total_loss(kw.pop("pred"), kw.pop("gt"), kw.pop("mask"), config=config,
                              **kw)


CONFIGS = {"baseline": adu.AduLossConfig.baseline(), "full": adu.AduLossConfig(),
           "no_uem": adu.AduLossConfig(uncertainty=False),
           "log_var_valid": adu.AduLossConfig(sigma_param="log_var", response_pixels="valid"),
           "log_std": adu.AduLossConfig(sigma_param="log_std"),
           "focal_only": adu.AduLossConfig.baseline(focal_depth=True)}


def test_total_switches_and_parts():
    kw = _batch()

    @jax.jit
    def f(kw):
        out = {k: _call(kw, c) for k, c in CONFIGS.items()}
        out["no_uem_no_logvar"] = _call(kw, CONFIGS["no_uem"], log_var=None)
        out["restored"] = _call(kw, CONFIGS["full"], restored_depth=kw["pred"] * 1.05)
        out["baseline_bare"] = adu.adu_total_loss(kw["pred"], kw["gt"], kw["mask"],
                                                  config=CONFIGS["baseline"])
        p, t, s = kw["pred"], kw["teacher_depth"], kw["log_var"]
        fs, ft = kw["student_feats"], kw["teacher_feats"]
        ref = {"base": adu.silog_loss(p, kw["gt"], kw["mask"]),
               "umr": adu.uncertainty_response_loss(p, t, s),
               "umf": adu.uncertainty_feature_loss(fs, ft, s),
               "focal": adu.focal_depth_loss(p, t),
               "feat": adu.feature_distillation_loss(fs, ft),
               "rd": adu.soft_label_loss(p, t, reduction="mean"),
               "umr_lv_valid": adu.uncertainty_response_loss(p, t, s, kw["mask"], "log_var"),
               "umf_ls": adu.uncertainty_feature_loss(fs, ft, s, "log_std"),
               "umr_restored": adu.uncertainty_response_loss(p * 1.05, t, s)}
        return out, ref

    out, ref = f(kw)
    close = np.testing.assert_allclose
    for k in ("baseline", "baseline_bare"):       # switches off: the base loss only
        total, parts = out[k]
        close(total, ref["base"], rtol=1e-6)
        assert parts["feature"] == parts["response"] == parts["focal"] == 0.0
    total, parts = out["full"]
    close(total, ref["base"] + 0.9 * ref["umr"] + 0.6 * ref["umf"] + 0.8 * ref["focal"],
          rtol=1e-6)
    close(parts["total"], total)
    close([parts["response"], parts["feature"], parts["focal"]],
          [ref["umr"], ref["umf"], ref["focal"]], rtol=1e-6)
    for k in ("no_uem", "no_uem_no_logvar"):      # Eq. 2–3 and Eq. 6 (mean), same slots
        close(out[k][1]["feature"], ref["feat"], rtol=1e-6)
        close(out[k][1]["response"], ref["rd"], rtol=1e-6)
    close(out["restored"][1]["response"], ref["umr_restored"], rtol=1e-6)   # g(d̃; s)
    close(out["restored"][1]["focal"], ref["focal"], rtol=1e-6)              # uses d̃
    close(out["log_var_valid"][1]["response"], ref["umr_lv_valid"], rtol=1e-6)
    close(out["log_std"][1]["feature"], ref["umf_ls"], rtol=1e-6)
    _, p_f = out["focal_only"]
    close(p_f["focal"], ref["focal"], rtol=1e-6)
    assert p_f["feature"] == p_f["response"] == 0.0


def test_total_jit_vmap_and_finite_gradients():
    kw = _batch()
    cfg = adu.AduLossConfig()
    total = jax.jit(adu.adu_total_loss, static_argnames="config")

    def loss(pred, log_var, feats):
        return _call(kw, cfg, pred=pred, log_var=log_var, student_feats=feats)[0]

    preds = jnp.asarray(np.stack([np.asarray(kw["pred"]) * f for f in (1.0, 1.1, 0.9)]))

    @jax.jit
    def g(preds, log_var, feats):
        grads = jax.grad(loss, argnums=(0, 1, 2))(preds[0], log_var, feats)
        return grads, jax.vmap(lambda p: loss(p, log_var, feats))(preds)

    grads, lv = g(preds, kw["log_var"], kw["student_feats"])
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(grads))
    assert np.any(grads[0] != 0) and np.any(grads[1] != 0)
    args = {k: v for k, v in kw.items() if k not in ("pred", "gt", "mask")}
    # vmap over a leading (e.g. ensemble) axis == a loop of the jitted loss
    loop = [total(p, kw["gt"], kw["mask"], config=cfg, **args)[0] for p in preds]
    np.testing.assert_allclose(lv, loop, rtol=1e-5)


def test_adapter_jit_and_gradients_finite():
    x = jnp.asarray(RNG.normal(size=(1, 8, 12, 3)), jnp.float32)
    t = jnp.asarray(RNG.normal(size=(1, 8, 12, 4)), jnp.float32)
    mods = [AttentionAdapter(4, attention=form, pool_tokens=6, window=(3, 5))
            for form in ("pooled", "window")]
    var = _params(3, 4, 4)
    def loss(v, m):
        return adu.feature_distillation_loss([m.apply(v, x)], [t])

    g = jax.jit(lambda v: [jax.grad(loss)(v, m) for m in mods])(var)
    assert all(np.all(np.isfinite(a)) and np.any(a != 0) for a in jax.tree.leaves(g))


# ----------------------------------------------------------------------------- errors

def test_bad_input_raises_value_error_naming_expectation():
    d = np.ones((1, 4, 4, 1), np.float32)      # numpy: the checks run before any op
    m = np.ones(d.shape, bool)
    with pytest.raises(ValueError, match=r"same shape"):
        adu.silog_loss(d, np.ones((1, 4, 5, 1), np.float32), m)
    with pytest.raises(ValueError, match=r"\[B,H,W,1\]"):
        adu.silog_loss(d[..., 0], d[..., 0], m[..., 0])
    with pytest.raises(ValueError, match=r"bool"):
        adu.silog_loss(d, d, m.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"mask must be \[B,H,W,1\]"):
        adu.focal_depth_loss(d, d, m[:, :3])
    with pytest.raises(ValueError, match=r"same non-zero number"):
        adu.feature_distillation_loss([d], [d, d])
    with pytest.raises(ValueError, match=r"sequences"):
        adu.feature_distillation_loss(d, d)
    with pytest.raises(ValueError, match=r"reduction must be one of \('pixel', 'element'\)"):
        adu.feature_distillation_loss([d], [d], reduction="sum")
    with pytest.raises(ValueError, match=r"sigma_param must be one of"):
        adu.uncertainty_response_loss(d, d, d, sigma_param="var")
    with pytest.raises(ValueError, match=r"log_var of level 0 must be \(1, 4, 4, 1\)"):
        adu.uncertainty_feature_loss([d], [d], [d[:, :2]])
    with pytest.raises(ValueError, match=r"sigma_param must be one of \('paper'"):
        adu.AduLossConfig(sigma_param="sigma")
    with pytest.raises(ValueError, match=r"response_pixels"):
        adu.AduLossConfig(response_pixels="some")
    with pytest.raises(ValueError, match=r"gamma must be ≥ 0"):
        adu.focal_depth_loss(d, d, gamma=-1.0)
    with pytest.raises(ValueError, match=r"teacher_depth"):
        adu.adu_total_loss(d, d, m, config=adu.AduLossConfig(feature_distill=False))
    with pytest.raises(ValueError, match=r"log_var"):
        adu.adu_total_loss(d, d, m, teacher_depth=d,
                           config=adu.AduLossConfig(feature_distill=False))
    with pytest.raises(ValueError, match=r"student_feats and teacher_feats"):
        adu.adu_total_loss(d, d, m, teacher_depth=d, log_var=d)
    x = np.zeros((1, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match=r"attention must be one of \('pooled', 'window'"):
        AttentionAdapter(attention="global").init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match=r"\[B,H,W,C\]"):
        AttentionAdapter().init(jax.random.PRNGKey(0), x[0])
    with pytest.raises(ValueError, match=r"divisible by num_heads"):
        AttentionAdapter(out_channels=5, num_heads=2).init(jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match=r"restore must be one of"):
        MultiLevelAdapter((3,), restore="mlp").init(jax.random.PRNGKey(0), [x])
    with pytest.raises(ValueError, match=r"restore='conv' needs log_vars"):
        MultiLevelAdapter((3,), restore="conv").init(jax.random.PRNGKey(0), [x])
