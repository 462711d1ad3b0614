"""Segmentation baselines against SciPy / NumPy loops over separate forward passes, and the
autodiff gradient norm against PGN's closed forms."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy

from jaxdepth.uncertainty import pgn as P
from jaxdepth.uncertainty import segmentation as S

C, D = 5, 6
B, H, W = 2, 12, 14          # the decoder works at 6×7
RATE = 0.3


class TinySeg(nn.Module):
    """Contract model: stride-2 conv stem, tanh, dropout (only with `dropout_rng`), then the
    head penultimate 3×3 → BN → ReLU → final 1×1 (with bias)."""

    @nn.compact
    def __call__(self, images, offsets=None, *, dropout_rng=None, train=False):
        x = jnp.tanh(nn.Conv(D, (3, 3), strides=(2, 2), name="stem")(images - 0.5))
        if dropout_rng is not None:
            x = nn.Dropout(RATE, deterministic=False)(x, rng=dropout_rng)
        head = _Head(name="head")
        logits, feats = head(x)
        return {"logits": jax.image.resize(logits, images.shape[:3] + (C,), "bilinear"),
                "decoder_logits": logits, "features": feats}


class _Head(nn.Module):
    @nn.compact
    def __call__(self, x):
        pre = nn.Conv(D, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="penultimate")(x)
        phi = nn.relu(nn.BatchNorm(use_running_average=True, name="penultimate_bn")(pre))
        return nn.Conv(C, (1, 1), name="final")(phi), {"penultimate_in": x, "final_in": phi}


def members(n):
    """`n` variable sets: Flax init, a larger final kernel, random BN statistics."""
    model = TinySeg()
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(B, H, W, 3)), jnp.float32)
    init = jax.jit(model.init)
    out = []
    for seed in range(n):
        rng = np.random.default_rng(seed + 10)
        v = init(jax.random.PRNGKey(seed), images)
        head = dict(v["params"]["head"])
        head["final"] = {"kernel": 3.0 * head["final"]["kernel"],
                         "bias": jnp.asarray(rng.normal(size=C), jnp.float32)}
        stats = {"mean": jnp.asarray(0.3 * rng.normal(size=D), jnp.float32),
                 "var": jnp.asarray(rng.uniform(0.3, 2.0, D), jnp.float32)}
        out.append({"params": {**v["params"], "head": head},
                    "batch_stats": {"head": {"penultimate_bn": stats}}})
    return model, out, images


@pytest.fixture(scope="module")
def net():
    return members(3)


def np_entropy(probs):
    return scipy_entropy(np.moveaxis(np.asarray(probs, np.float64), -1, 0))


def test_max_softmax_and_entropy_match_scipy():
    rng = np.random.default_rng(1)
    z = (3.0 * rng.normal(size=(2, 3, 4, C))).astype(np.float32)
    z[0, 0, 0] = [80.0, 0.0, -5.0, 1.0, 2.0]          # confident: s underflows to 0
    z[0, 0, 1] = [-np.inf, 1.0, 1.0, 1.0, 1.0]         # a masked class
    z[0, 0, 2] = 0.0                                   # uniform: normalised entropy 1
    s = softmax(z.astype(np.float64), -1)

    @jax.jit                                           # one program for all of them
    def scores(z, s):
        return (S.max_softmax(z), S.max_softmax_uncertainty(z), S.entropy(z),
                S.entropy(z, normalise=True), S.probs_entropy(s))

    conf, unc, ent, ent01, probs_ent = scores(z, s.astype(np.float32))
    np.testing.assert_allclose(conf, s.max(-1), rtol=1e-6)
    np.testing.assert_allclose(unc, 1 - s.max(-1), atol=1e-6)
    np.testing.assert_allclose(ent, np_entropy(s), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ent01, np_entropy(s) / np.log(C), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ent[0, 0, 1], np.log(4), rtol=1e-6)
    np.testing.assert_allclose(ent01[0, 0, 2], 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs_ent, np_entropy(s), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="C >= 2"):
        S.entropy(np.zeros((3, 1), np.float32), normalise=True)


def test_sampling_uncertainty_matches_numpy():
    z = np.random.default_rng(2).normal(size=(4, 2, 3, 3, C)).astype(np.float32)
    got = jax.jit(S.sampling_uncertainty)(z)
    probs = [softmax(z[i].astype(np.float64), -1) for i in range(4)]
    mean = np.mean(probs, 0)
    np.testing.assert_allclose(got.probs, mean, rtol=1e-5)
    np.testing.assert_allclose(got.entropy, np_entropy(mean), rtol=1e-5)
    mi = np_entropy(mean) - np.mean([np_entropy(q) for q in probs], 0)
    np.testing.assert_allclose(got.mutual_information, mi, atol=2e-6)
    assert np.all(mi > 0)


def loop_statistics(logits):
    """Mean softmax, its entropy and the mutual information from a list of `[B,H,W,C]`."""
    probs = [softmax(np.asarray(z, np.float64), -1) for z in logits]
    mean = np.mean(probs, 0)
    return mean, np_entropy(mean), np_entropy(mean) - np.mean([np_entropy(q) for q in probs], 0)


def test_mc_dropout_matches_a_loop_over_keys(net):
    model, (variables, *_), images = net
    rng = jax.random.PRNGKey(7)
    got = S.mc_dropout(model.apply, variables, images, rng, samples=4)
    apply = jax.jit(lambda v, x, key: model.apply(v, x, dropout_rng=key)["logits"])
    loop = [apply(variables, images, key) for key in jax.random.split(rng, 4)]
    mean, ent, mi = loop_statistics(loop)
    assert got.probs.shape == (B, H, W, C) and got.entropy.shape == (B, H, W)
    np.testing.assert_allclose(got.probs, mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.entropy, ent, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.mutual_information, mi, atol=1e-5)
    assert np.mean(mi > 1e-4) > 0.5               # dropout was on: the samples disagree
    with pytest.raises(ValueError, match="samples must be >= 2"):
        S.mc_dropout(model.apply, variables, images, rng, samples=1)


def test_ensemble_matches_a_loop_over_members(net):
    model, variables, images = net
    got = S.ensemble(model.apply, variables, images)
    apply = jax.jit(lambda v, x: model.apply(v, x)["logits"])
    mean, ent, mi = loop_statistics([apply(v, images) for v in variables])
    np.testing.assert_allclose(got.probs, mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.entropy, ent, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got.mutual_information, mi, atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        S.ensemble(model.apply, variables[:1], images)
    with pytest.raises(ValueError, match="share one variable structure"):
        S.ensemble(model.apply, [variables[0], {"params": {}}], images)


def assert_close(got, want):
    """float32 both ways: relative 2e-4 plus 1e-5 of the largest value (cancellation)."""
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
def test_autodiff_gradient_norm_equals_pgn(net):
    model, (variables, *_), images = net
    out = model.apply(variables, images)
    z, feats = out["decoder_logits"], out["features"]
    head = P.head_of(variables)
    for label, mode, bias in [("onehot", "exact", True), ("uniform", "reference", False)]:
        g = S.per_pixel_gradients(model.apply, variables, images, layer=("head", "final"),
                                  label=label, mode=mode, bias=bias)
        assert g.shape == (B, 6, 7, D * C + (C if bias else 0))
        for p in (0.1, 0.5, 2.0):
            want = P.pgn(z, feats["final_in"], label=label, p=p, mode=mode, bias=bias)
            assert_close(P.pnorm(g, p), want)
    got = S.gradient_norm(model.apply, variables, images, layer="head/penultimate/kernel",
                          label="uniform", p=0.3)
    want = P.pgn_penultimate(z, feats["final_in"], feats["penultimate_in"], head,
                             label="uniform", p=0.3)
    assert_close(got, want)


def test_gradient_norm_rejects_bad_arguments(net):
    model, (variables, *_), images = net
    with pytest.raises(ValueError, match="no layer 'head/last'"):
        S.gradient_norm(model.apply, variables, images, layer=("head", "last"))
    with pytest.raises(ValueError, match="has no 'bias'"):
        S.gradient_norm(model.apply, variables, images, layer="head/penultimate", bias=True)
    with pytest.raises(ValueError, match="must be a layer with a 'kernel'"):
        S.gradient_norm(model.apply, variables, images, layer="head")
    with pytest.raises(ValueError, match="p must be a number > 0"):
        S.gradient_norm(model.apply, variables, images, layer="head/final", p=0)
    with pytest.raises(ValueError, match="label must be one of"):
        S.gradient_norm(model.apply, variables, images, layer="head/final", label="gt")
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        S.mc_dropout(model.apply, variables, images[0], None)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        S.ensemble(model.apply, variables, 2.0 * np.asarray(images))
