"""Feature-augmentation references, layer-robust aggregates and the gradient method's
input checks ("Revisiting" gradient uncertainty), against explicit computations.

The random models' decoder kernels are doubled: PyTorch's default init shrinks the
activations about 3× per conv, so an untrained decoder barely sees its deepest feature
and the feature references' losses would be at float-rounding level."""
import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import rankdata

from jaxdepth import uncertainty as U
from jaxdepth.models import DepthNet, MonoViT
from jaxdepth.uncertainty import gradient as G
from jaxdepth.uncertainty import transforms as T

H, W, B = 32, 64, 2
TAPS = ("dec6", "dec8")
SCALES = {"feature_noise": 0.5, "feature_dropout": 0.3}


def _boost(variables, gain=2.0):
    def scale(path, a):  # in NumPy: no small XLA programs to compile
        names = [getattr(p, "key", "") for p in path]
        return np.asarray(a) * gain if "decoder" in names and names[-1] == "kernel" else a
    return jax.tree_util.tree_map_with_path(scale, variables)


@pytest.fixture(scope="module")
def depthnet():
    model = DepthNet(width=0.125)
    variables = _boost(model.init_variables(0, H, W))
    images = jax.random.uniform(jax.random.PRNGKey(1), (B, H, W, 3))
    return model, variables, images


@pytest.fixture(scope="module")
def monovit():
    model = MonoViT(size="tiny")
    variables = _boost(model.init_variables(0, H, W))
    images = jax.random.uniform(jax.random.PRNGKey(2), (B, H, W, 3))
    return model, variables, images


def _enc(model):
    """An apply that lists the encoder features (DepthNet needs `encoder_taps=True`)."""
    return model.clone(encoder_taps=True).apply if hasattr(model, "encoder_taps") else model.apply


@functools.partial(jax.jit, static_argnames=("model", "kind", "taps", "tap"))
def hand(model, variables, images, key, scale, member, *, kind, taps, tap="enc4"):
    """The feature reference and the gradients written out: read `f`, perturb it with the
    documented draw (reference member i: `fold_in(rng, i)`), run the model with the
    offset; then `jax.grad` of Σ_images mean (d − d_ref)² w.r.t. zero offsets at `taps`.
    Returns `(d_ref, loss, grads, plain depth)`."""
    plain = _enc(model)(variables, images)
    feats = plain["features"]
    f = feats[tap]
    k = jax.random.fold_in(key, member)
    if kind == "feature_noise":
        mu = f.mean(axis=(1, 2, 3), keepdims=True)
        sd = jnp.sqrt(jnp.mean((f - mu) ** 2, axis=(1, 2, 3), keepdims=True))
        off = scale * sd * jax.random.normal(k, f.shape, f.dtype)
    else:
        keep = jax.random.bernoulli(k, 1.0 - scale, (f.shape[0], 1, 1, f.shape[-1]))
        off = jnp.where(keep, f / (1.0 - scale), 0.0) - f
    d_ref = model.apply(variables, images, {tap: off})["depth"]

    def loss(offsets):
        d = model.apply(variables, images, offsets)["depth"]
        return jnp.sum(jnp.mean((d - d_ref) ** 2, axis=(1, 2, 3)))

    zeros = {t: jnp.zeros_like(feats[t]) for t in taps}
    value, grads = jax.value_and_grad(loss)(zeros)
    return d_ref, value, grads, plain["depth"]


@functools.partial(jax.jit, static_argnames=("model", "kind", "taps", "tap", "batched"))
def library(model, variables, images, key, scale, *, kind, taps, tap="enc4", batched=True):
    """`feature_gradients`, the scale traced (one program serves every scale)."""
    return U.feature_gradients(model.apply, variables, images, taps=taps, reference=kind,
                               rng=key, feature_tap=tap, feature_scale=scale,
                               batch_reference=batched)


def _close_grads(got, want, rel=1e-3):
    for t in want:
        scale = float(jnp.abs(want[t]).max())
        assert scale > 0, t
        np.testing.assert_allclose(got[t], want[t], rtol=0, atol=rel * scale, err_msg=t)


@pytest.mark.parametrize("kind", ["feature_noise", "feature_dropout"])
def test_feature_reference_matches_explicit_computation(depthnet, kind):
    model, variables, images = depthnet
    key, other = jax.random.PRNGKey(5), jax.random.PRNGKey(6)
    kw = dict(kind=kind, taps=TAPS)
    scale = SCALES[kind]
    d_ref, want_loss, want, plain = hand(model, variables, images, key, scale, 0, **kw)
    assert float(jnp.abs(d_ref - plain).max()) > 1e-3 * float(plain.std())  # a real change
    # the reference batched with the original (default) for one, separate for the other
    kw["batched"] = kind == "feature_noise"
    depth, grads, loss = library(model, variables, images, key, scale, **kw)
    np.testing.assert_allclose(depth, plain, rtol=1e-5)
    np.testing.assert_allclose(loss.sum(), want_loss, rtol=1e-3)
    assert grads.keys() == set(TAPS)
    _close_grads(grads, want)
    # deterministic given the rng, and a different rng draws a different reference
    again = library(model, variables, images, key, scale, **kw)
    np.testing.assert_array_equal(again[2], loss)
    moved = library(model, variables, images, other, scale, **kw)
    assert not np.allclose(moved[2], loss, rtol=1e-2, atol=0)
    # scale → 0: the reference becomes the prediction, the loss and gradients vanish
    tiny = {"feature_noise": 1e-4, "feature_dropout": 1e-7}[kind]
    _, g0, l0 = library(model, variables, images, key, tiny, **kw)
    assert float(l0.max()) < 1e-6 * float(loss.min())
    for t in TAPS:
        assert float(jnp.abs(g0[t]).max()) < 1e-3 * float(jnp.abs(grads[t]).max())


def test_feature_offsets_have_the_documented_semantics():
    f = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5, 64)) * 2.0 + 1.0
    key = jax.random.PRNGKey(1)
    rate = 0.25
    dropped = np.asarray(f + T.feature_offset("feature_dropout", f, key, rate))
    kept = np.abs(dropped).reshape(3, 20, 64).max(1) > 0  # per image and channel
    for b in range(3):
        np.testing.assert_allclose(dropped[b][..., kept[b]],
                                   np.asarray(f)[b][..., kept[b]] / (1 - rate), rtol=1e-6)
        np.testing.assert_array_equal(dropped[b][..., ~kept[b]], 0.0)
    assert 0 < (~kept).sum() < kept.size and not (kept[0] == kept[1]).all()
    noise = np.asarray(T.feature_offset("feature_noise", f, key, 0.1))
    eps = np.asarray(jax.random.normal(key, f.shape))
    std = np.asarray(f).reshape(3, -1).std(1)[:, None, None, None]
    np.testing.assert_allclose(noise, 0.1 * std * eps, rtol=1e-5, atol=1e-6)


def test_reference_predictions_and_var_members(depthnet):
    """`reference_predictions` of `var` over both feature references: member i draws with
    `fold_in(rng, i)` and is the explicit perturbed pass."""
    model, variables, images = depthnet
    members = ("feature_noise", "feature_dropout")
    key = jax.random.PRNGKey(3)
    refs = jax.jit(lambda v, x, k: U.reference_predictions(
        model.apply, v, x, reference="var", var_members=members, rng=k,
        feature_scale=0.3))(variables, images, key)
    assert len(refs) == 2 and refs[0][1] is None and refs[1][1] is None
    for i, kind in enumerate(members):
        d_ref = hand(model, variables, images, key, 0.3, i, kind=kind, taps=TAPS)[0]
        np.testing.assert_allclose(refs[i][0], d_ref, rtol=1e-5)


@pytest.mark.slow
def test_monovit_default_tap_and_encoder_feature(monovit):
    """MonoViT: `taps=None` is its `X_13_Conv_0`, the reference perturbs its `enc4`, the loss
    is the explicit one (the gradient against `jax.grad` of the loss written out is
    model-agnostic, checked on DepthNet)."""
    model, variables, images = monovit
    key = jax.random.PRNGKey(4)
    assert G.resolve_taps(model.apply) == ("X_13_Conv_0",)
    run = functools.partial(library, model, variables, images, kind="feature_noise", taps=None)
    depth, grads, loss = run(key, 0.5)
    assert grads.keys() == {"X_13_Conv_0"}
    g = np.asarray(grads["X_13_Conv_0"])
    assert g.shape[1:3] == (H // 4, W // 4) and np.isfinite(g).all() and np.abs(g).max() > 0
    apply = jax.jit(lambda v, x, off: model.apply(v, x, {"enc4": off}))
    plain = apply(variables, images, jnp.zeros((B, H // 32, W // 32, 64)))  # enc4: 64 ch
    off = T.feature_offset("feature_noise", plain["features"]["enc4"],
                           jax.random.fold_in(key, 0), 0.5)
    d_ref = apply(variables, images, off)["depth"]
    np.testing.assert_allclose(depth, plain["depth"], rtol=1e-5)
    np.testing.assert_allclose(loss, np.mean((np.asarray(depth) - np.asarray(d_ref)) ** 2,
                                             axis=(1, 2, 3)), rtol=1e-3)
    np.testing.assert_array_equal(run(key, 0.5)[2], loss)
    assert not np.allclose(run(jax.random.PRNGKey(7), 0.5)[2], loss, rtol=1e-2, atol=0)
    assert float(run(key, 1e-4)[2].max()) < 1e-2 * float(loss.min())


# ----------------------------------------------------------------------------- aggregates

def _maps(seed=0, layers=3, shape=(2, 8, 12, 1)):
    """Non-negative maps with many exact ties (values on a grid of 0.125)."""
    rng = np.random.default_rng(seed)
    return [(np.round(rng.uniform(0, 1, shape) * 8) / 8).astype(np.float32)
            for _ in range(layers)]


def naive_rank(maps):
    out = np.zeros(maps[0].shape)
    for m in maps:
        for b in range(m.shape[0]):
            n = m[b].size
            out[b] += ((rankdata(m[b].ravel(), method="average") - 1) / (n - 1)).reshape(m[b].shape)
    return out / len(maps)


def test_rank_aggregate_equals_scipy_and_is_layer_robust():
    maps = _maps()
    got = U.aggregate_maps([jnp.asarray(m) for m in maps], "rank")
    np.testing.assert_allclose(got, naive_rank(maps), atol=1e-6)
    jitted = jax.jit(lambda *ms: U.aggregate_maps(list(ms), "rank"))(*maps)
    np.testing.assert_allclose(jitted, got, atol=1e-7)
    assert float(got.min()) >= 0 and float(got.max()) <= 1
    # a strictly increasing transform of one layer changes nothing
    for f in (lambda m: m ** 2 + 3, lambda m: np.exp(5 * m), lambda m: 0.01 * m - 7):
        moved = [maps[0], f(maps[1]), maps[2]]
        np.testing.assert_array_equal(U.aggregate_maps([jnp.asarray(m) for m in moved], "rank"),
                                      got)
    # … while std, mean and max change
    moved = [maps[0], maps[1] ** 2 + 3, maps[2]]
    for how in ("std", "mean", "max"):
        a = U.aggregate_maps([jnp.asarray(m) for m in maps], how)
        b = U.aggregate_maps([jnp.asarray(m) for m in moved], how)
        assert not np.allclose(a, b), how
    # ties share their average rank: a constant map is 0.5 everywhere
    np.testing.assert_array_equal(U.percentile_rank(jnp.zeros((2, 4, 4, 1))), 0.5)


def test_zmean_and_the_unchanged_aggregates():
    maps = _maps(1)
    stack = np.stack(maps)
    z = [(m - m.mean((1, 2, 3), keepdims=True)) / m.std((1, 2, 3), keepdims=True) for m in maps]
    got = U.aggregate_maps([jnp.asarray(m) for m in maps], "zmean")
    np.testing.assert_allclose(got, np.mean(z, 0), atol=1e-5)
    affine = [maps[0], 4 * maps[1] + 2, maps[2]]
    np.testing.assert_allclose(U.aggregate_maps([jnp.asarray(m) for m in affine], "zmean"), got,
                               atol=1e-5)
    np.testing.assert_array_equal(U.zscore_per_image(jnp.full((1, 3, 3, 1), 0.7)), 0.0)
    for how, fn in [("std", np.std), ("mean", np.mean), ("max", np.max)]:
        np.testing.assert_allclose(U.aggregate_maps([jnp.asarray(m) for m in maps], how),
                                   fn(stack, axis=0), atol=1e-6)
    for how in U.AGGREGATIONS:  # one map: returned unchanged
        np.testing.assert_array_equal(U.aggregate_maps([jnp.asarray(maps[0])], how), maps[0])


def toy_model(variables, images, offsets=None):
    """A plain-JAX two-tap model (compiles in a fraction of a second)."""
    offsets = offsets or {}
    conv = lambda x, k, s: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    a = conv(images, variables["k1"], 4) + offsets.get("a", 0.0)
    b = conv(jnp.repeat(jnp.repeat(jnp.tanh(a), 2, 1), 2, 2), variables["k2"], 1)
    b = b + offsets.get("b", 0.0)
    up = jnp.repeat(jnp.repeat(jnp.tanh(b), 2, 1), 2, 2)
    depth = jax.nn.softplus(conv(up, variables["k3"], 1)) + 0.1
    return {"depth": depth, "disp": 1.0 / depth, "features": {"a": a, "b": b}}


def test_rank_aggregate_end_to_end():
    keys = jax.random.split(jax.random.PRNGKey(11), 3)
    variables = {f"k{i + 1}": 0.5 * jax.random.normal(k, s) for i, (k, s) in enumerate(
        zip(keys, [(3, 3, 3, 6), (3, 3, 6, 5), (3, 3, 5, 1)]))}
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3))
    _, grads, _ = jax.jit(lambda v, x: U.feature_gradients(toy_model, v, x, taps=("a", "b")))(
        variables, images)
    est = U.gradient_uncertainty(toy_model, variables, images, taps=("a", "b"),
                                 aggregate="rank", upsample="nearest")
    maps = []
    for t in ("a", "b"):
        u = np.asarray(grads[t]).max(-1, keepdims=True)
        lo, hi = u.min((1, 2, 3), keepdims=True), u.max((1, 2, 3), keepdims=True)
        u = (u - lo) / (hi - lo)
        maps.append(np.repeat(np.repeat(u, 32 // u.shape[1], 1), 32 // u.shape[2], 2))
    # nearest upsampling: blocks of exact ties; near-equal values may swap order between
    # the two programs, so compare loosely per pixel and tightly on average
    diff = np.abs(np.asarray(est.uncertainty) - naive_rank(maps))
    assert diff.max() < 0.02 and diff.mean() < 1e-3


# ----------------------------------------------------------------------------- bad inputs

def test_bad_inputs_get_clear_errors(depthnet, monovit):
    model, variables, images = depthnet
    call = functools.partial(U.gradient_uncertainty, model.apply, variables, images)
    with pytest.raises(ValueError, match=r"unknown tap.*dec42.*DepthNet takes enc0.*dec10"):
        call(taps=("dec42",))
    with pytest.raises(ValueError, match=r"unknown feature_tap 'enc7'.*enc4"):
        call(reference="feature_noise", feature_tap="enc7")
    for scale in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="feature_scale must be > 0"):
            call(reference="feature_noise", feature_scale=scale)
    for rate in (1.0, 1.5):
        with pytest.raises(ValueError, match="dropout rate.*< 1"):
            call(reference="feature_dropout", feature_scale=rate)
    with pytest.raises(ValueError, match="dropout rate"):
        call(reference="var", var_members=("flip", "feature_dropout"), feature_scale=1.0)
    with pytest.raises(ValueError, match="aggregate must be one of .*rank"):
        call(aggregate="median")
    with pytest.raises(ValueError, match="var_members"):
        call(reference="var", var_members=("flip", "gt"))
    with pytest.raises(ValueError, match="var_members"):
        call(reference="var", var_members=())
    with pytest.raises(ValueError, match="reference must be one of"):
        call(reference="feature_blur")
    with pytest.raises(ValueError, match="multiples of 32"):
        U.gradient_uncertainty(model.apply, variables, images[:, :, :48])
    with pytest.raises(ValueError, match="multiples of 32"):
        U.feature_gradients(model.apply, variables, images[:, :24], reference="feature_noise")
    mv, mv_vars, mv_images = monovit
    with pytest.raises(ValueError, match=r"\['dec6'\].*MonoViT takes.*default_tap is "
                                         r"'X_13_Conv_0'"):
        U.gradient_uncertainty(mv.apply, mv_vars, mv_images, taps=("dec6",))
    with pytest.raises(ValueError, match="unknown feature_tap 'enc5'"):
        U.feature_gradients(mv.apply, mv_vars, mv_images, reference="feature_dropout",
                            feature_tap="enc5")
    # a plain function: the names come from its features
    toy = lambda v, x, offsets=None: {"depth": x[..., :1] + 1, "features": {"a": x}}  # noqa: E731
    with pytest.raises(ValueError, match="features are a"):
        U.gradient_uncertainty(toy, {}, jnp.zeros((1, 4, 4, 3)), taps=("b",))
    assert G.resolve_taps(toy) == ("dec6",) and G.resolve_taps(model.apply) == ("dec6",)


def test_method_table_and_cli_pass_the_options(monkeypatch):
    from jaxdepth.cli import options
    from jaxdepth.uncertainty import methods as M

    parser = argparse.ArgumentParser()
    options.add_method_arguments(parser)
    args = parser.parse_args(["--reference", "var", "--var-members", "flip,feature_noise",
                              "--feature-tap", "enc3", "--feature-scale", "0.3",
                              "--aggregate", "rank", "--taps", "dec6,dec8"])
    opts = options.method_options(args)
    assert (opts.reference, opts.var_members, opts.feature_tap, opts.feature_scale,
            opts.aggregate, opts.taps) == ("var", ("flip", "feature_noise"), "enc3", 0.3,
                                           "rank", ("dec6", "dec8"))
    assert options.method_options(parser.parse_args([])).var_members == G.VAR_MEMBERS
    for bad in (["--var-members", "flip,blur"], ["--reference", "feature_blur"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    seen = {}
    monkeypatch.setattr(G, "gradient_uncertainty", lambda *a, **kw: seen.update(kw))
    M.method("grad", lambda v, x, o=None: None, {}, opts, info=M.ModelInfo())(None, "rng")
    assert {k: seen[k] for k in ("reference", "var_members", "feature_tap", "feature_scale",
                                 "aggregate", "taps", "rng")} == {
        "reference": "var", "var_members": ("flip", "feature_noise"), "feature_tap": "enc3",
        "feature_scale": 0.3, "aggregate": "rank", "taps": ("dec6", "dec8"), "rng": "rng"}
