"""Post hoc and sampling baselines against loops over separate forward passes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import uncertainty as U
from jaxdepth.models import DepthNet
from jaxdepth.uncertainty.transforms import rotate

H, W = 32, 64


@pytest.fixture(scope="module")
def net():
    model = DepthNet(width=0.125, log_sigma=True)
    variables = model.init_variables(jax.random.PRNGKey(0), H, W)
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, H, W, 3))
    return model.apply, variables, images


def minmax(u):
    lo = u.min(axis=(1, 2, 3), keepdims=True)
    return (u - lo) / (u.max(axis=(1, 2, 3), keepdims=True) - lo)


@pytest.mark.slow
def test_post_matches_two_passes_and_monodepth_blend(net):
    apply_fn, variables, images = net
    p = np.asarray(apply_fn(variables, images)["disp"])
    pf = np.asarray(apply_fn(variables, images[:, :, ::-1])["disp"])[:, :, ::-1]
    est = U.post(apply_fn, variables, images)
    np.testing.assert_allclose(est.uncertainty, np.abs(p - pf), rtol=1e-4, atol=2e-6)
    for batched in (True, False):  # one forward of 2B or two of B: the same estimate
        other = U.post(apply_fn, variables, images, batched=batched)
        np.testing.assert_allclose(other.uncertainty, est.uncertainty, rtol=1e-4, atol=2e-6)
        np.testing.assert_allclose(other.depth, est.depth, rtol=1e-5)
    xs = np.linspace(0, 1, W)
    left = 1.0 - np.clip(20 * (xs - 0.05), 0, 1)
    right = left[::-1]
    blend = right[:, None] * p + left[:, None] * pf + (1 - left - right)[:, None] * 0.5 * (p + pf)
    np.testing.assert_allclose(est.depth, 1.0 / blend, rtol=1e-4)
    # a column in the middle is the plain mean of the two passes
    np.testing.assert_allclose(1.0 / est.depth[:, :, W // 2], 0.5 * (p + pf)[:, :, W // 2], rtol=1e-5)


@pytest.mark.slow
def test_var_matches_five_separate_passes(net):
    apply_fn, variables, images = net
    rng = jax.random.PRNGKey(3)
    fwd = lambda x: np.asarray(apply_fn(variables, x)["disp"])
    gray = np.repeat((np.asarray(images) @ np.array([0.2989, 0.587, 0.114]))[..., None], 3, -1)
    noisy = images + 0.01 * jax.random.normal(rng, images.shape)
    back, valid = rotate(jnp.asarray(fwd(rotate(images, 10.0)[0])), -10.0)
    preds = [fwd(images), fwd(images[:, :, ::-1])[:, :, ::-1], fwd(jnp.asarray(gray)), fwd(noisy),
             np.asarray(back)]
    valid = np.broadcast_to(np.asarray(valid), preds[0].shape)
    stack = np.stack(preds)
    want = np.where(valid, stack.var(0, ddof=1), stack[:4].var(0, ddof=1))
    est = U.var(apply_fn, variables, images, rng=rng)
    np.testing.assert_allclose(est.uncertainty, minmax(want), atol=2e-4)
    for batched in (True, False):  # one forward of 5B or five of B
        other = U.var(apply_fn, variables, images, rng=rng, batched=batched)
        np.testing.assert_allclose(other.uncertainty, est.uncertainty, atol=2e-4)
    np.testing.assert_allclose(est.depth, 1.0 / preds[0], rtol=1e-5)
    raw = U.var(apply_fn, variables, images, rng=rng, normalize=False, space="depth")
    stack_d = 1.0 / np.where(stack > 0, stack, 1.0)
    want_d = np.where(valid, stack_d.var(0, ddof=1), stack_d[:4].var(0, ddof=1))
    np.testing.assert_allclose(raw.uncertainty, want_d, rtol=2e-3, atol=1e-6)


def _dropout_loop(apply_fn, variables, images, rng, n, **kw):
    fwd = jax.jit(lambda v, x, k: apply_fn(v, x, dropout_rng=k, **kw)["disp"])
    return np.stack([np.asarray(fwd(variables, images, k)) for k in jax.random.split(rng, n)])


@pytest.mark.slow
def test_in_drop_and_mc_drop_match_explicit_sampling(net):
    apply_fn, variables, images = net
    rng = jax.random.PRNGKey(4)
    samples = _dropout_loop(apply_fn, variables, images, rng, 8, dropout_rate=0.2)
    est = U.in_drop(apply_fn, variables, images, rng=rng)
    np.testing.assert_allclose(est.depth, apply_fn(variables, images)["depth"], rtol=1e-5)
    np.testing.assert_allclose(est.uncertainty, minmax(samples.var(0, ddof=1)), atol=1e-4)
    mc = U.mc_drop(apply_fn, variables, images, rng=rng, n=8)
    samples_model_rate = _dropout_loop(apply_fn, variables, images, rng, 8)
    np.testing.assert_allclose(mc.depth, 1.0 / samples_model_rate.mean(0), rtol=1e-4)
    np.testing.assert_allclose(mc.uncertainty, samples_model_rate.var(0, ddof=1), rtol=1e-3,
                               atol=1e-9)
    with pytest.raises(ValueError, match="n must be"):
        U.in_drop(apply_fn, variables, images, n=1)


@pytest.mark.slow
def test_in_drop_runs_the_encoder_once(net):
    """XLA's FLOP count: encoder once + (n+1) decoders, far below n+1 full forwards."""
    model = DepthNet(width=0.125)
    variables = model.init_variables(0, 64, 64)
    images = jnp.zeros((1, 64, 64, 3))
    flops = lambda f: jax.jit(f).lower(variables, images).compile().cost_analysis()["flops"]
    forward = flops(lambda v, x: model.apply(v, x)["disp"])
    encoder = flops(lambda v, x: model.apply(v, x, method=lambda m, y: m.encoder(y))[-1])
    decoder = forward - encoder
    in_drop = flops(lambda v, x: U.in_drop(model.apply, v, x, n=8))
    assert in_drop < encoder + 9 * decoder * 1.15
    assert in_drop < 0.8 * 9 * forward


@pytest.mark.slow
def test_ensemble_and_predictive(net):
    apply_fn, variables, images = net
    model = DepthNet(width=0.125, log_sigma=True)
    members = [variables] + [model.init_variables(s, H, W) for s in (7, 8)]
    outs = [apply_fn(v, images) for v in members]
    disp = np.stack([np.asarray(o["disp"]) for o in outs])
    sig2 = np.stack([np.exp(np.asarray(o["log_sigma"])) ** 2 for o in outs])
    est = U.ensemble(apply_fn, members, images)
    np.testing.assert_allclose(est.depth, 1.0 / disp.mean(0), rtol=1e-5)
    np.testing.assert_allclose(est.uncertainty, disp.var(0, ddof=1), rtol=1e-4, atol=1e-9)
    bayes = U.ensemble(apply_fn, members, images, bayesian=True)
    np.testing.assert_allclose(bayes.uncertainty, disp.var(0, ddof=1) + sig2.sum(0), rtol=1e-4)
    pred = U.predictive(apply_fn, variables, images)
    np.testing.assert_allclose(pred.uncertainty, np.exp(np.asarray(outs[0]["log_sigma"])), rtol=1e-5)
    np.testing.assert_allclose(pred.depth, outs[0]["depth"], rtol=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        U.ensemble(apply_fn, members[:1], images)


def test_predictive_needs_log_sigma():
    model = DepthNet(width=0.125)
    variables = model.init_variables(0, 32, 32)
    with pytest.raises(ValueError, match="log_sigma"):
        U.predictive(model.apply, variables, jnp.zeros((1, 32, 32, 3)))
