"""MonoViT in Flax: parameter counts of the released size, outputs and taps of the tiny
configuration, gradients w.r.t. tap offsets, input checks; and DepthNet's encoder taps.

Kept cheap: the full size only through `jax.eval_shape`, one compiled forward (with and
without channel dropout) and one compiled gradient of the tiny model.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxdepth.models import DepthNet, MonoViT
from jaxdepth.models.monovit import (
    DECODER_TAPS,
    ENCODER_TAPS,
    TAPS,
    decoder_channels,
    encoder_dims,
)

H, W, B = 64, 96, 2
_count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))

#: tap → (channels of the released size, resolution divisor); docs/monovit.md's table
FULL_TAPS = {
    "enc0": (64, 2), "enc1": (128, 4), "enc2": (216, 8), "enc3": (288, 16), "enc4": (288, 32),
    "X_10_Conv_0": (32, 4), "X_10_Conv_1": (32, 2), "X_20_Conv_0": (64, 8),
    "X_20_Conv_1": (64, 4), "X_30_Conv_0": (128, 16), "X_30_Conv_1": (128, 8),
    "X_40_Conv_0": (256, 32), "X_11_Conv_0": (32, 4), "X_11_Conv_1": (32, 2),
    "X_21_Conv_0": (64, 8), "X_21_Conv_1": (64, 4), "X_31_Conv_0": (128, 16),
    "X_12_Conv_0": (32, 4), "X_12_Conv_1": (32, 2), "X_22_Conv_0": (64, 8),
    "X_13_Conv_0": (32, 4), "X_04_Conv_0": (16, 2), "X_04_Conv_1": (16, 1),
    "dispconv_0": (1, 1)}


def test_released_size_parameter_counts_and_taps():
    model = MonoViT()
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    params = abstract["params"]
    assert _count(params) == 27_870_108
    assert _count(params["encoder"]) == 22_603_400
    assert _count(params["decoder"]) == 5_266_708
    assert params["decoder"]["X_00_Conv_0"]["kernel"].shape == (3, 3, 64, 32)
    assert params["decoder"]["X_04_attention"]["fc_0"]["kernel"].shape == (192, 12)
    assert params["decoder"]["X_03_downsample"]["kernel"].shape == (1, 1, 160, 64)
    assert "MHCA_layers_5" in params["encoder"]["mhca_stages_2"]["mhca_blks_2"]
    without = jax.eval_shape(MonoViT(unused_convs=False).init, jax.random.PRNGKey(0),
                             jnp.zeros((1, 64, 64, 3)))
    assert _count(without["params"]) == 27_837_772
    feats = jax.eval_shape(lambda v, x: model.apply(v, x)["features"], abstract,
                           jax.ShapeDtypeStruct((1, 192, 640, 3), jnp.float32))
    assert set(feats) == set(TAPS) == set(FULL_TAPS)
    for tap, (ch, div) in FULL_TAPS.items():
        assert feats[tap].shape == (1, 192 // div, 640 // div, ch), tap


@pytest.fixture(scope="module")
def tiny():
    model = MonoViT(size="tiny", log_sigma=True)
    variables = model.init_variables(jax.random.PRNGKey(0), H, W)
    # livelier than PyTorch's default init, whose decoder shrinks the signal ~2× per conv
    # (the random tiny model's disparity would be nearly constant, enc4 nearly irrelevant)
    variables = traverse_util.unflatten_dict({
        k: 2.0 * a if k[:2] == ("params", "decoder") and k[-1] == "kernel" else a
        for k, a in traverse_util.flatten_dict(variables).items()})
    images = jax.random.uniform(jax.random.PRNGKey(1), (B, H, W, 3))

    @jax.jit
    def forward(variables, offsets, rng):  # one program: with offsets, and with dropout
        return model.apply(variables, images, offsets), model.apply(
            variables, images, dropout_rng=rng)["depth"]

    return model, variables, images, lambda offsets, rng: forward(variables, offsets, rng)


def _zeros(model, variables, images, taps):
    shapes = jax.eval_shape(lambda x: model.apply(variables, x)["features"], images)
    return {t: jnp.zeros(shapes[t].shape, shapes[t].dtype) for t in taps}


def test_tiny_outputs_and_tap_shapes(tiny):
    model, variables, images, run = tiny
    zeros = _zeros(model, variables, images, ("X_13_Conv_0", "enc4"))
    out, dropped = run(zeros, jax.random.PRNGKey(3))
    for key in ("disp", "depth", "log_sigma"):
        assert out[key].shape == (B, H, W, 1)
    for s, entry in enumerate(out["scales"]):
        for key in ("disp", "depth", "raw", "log_sigma"):
            assert entry[key].shape == (B, H >> s, W >> s, 1), (s, key)
    np.testing.assert_allclose(out["depth"] * out["disp"], 1.0, rtol=1e-5)
    assert 0.1 - 1e-6 <= float(out["depth"].min()) and float(out["depth"].max()) <= 100 + 1e-3
    np.testing.assert_allclose(out["scales"][0]["raw"], out["features"]["dispconv_0"])
    assert set(out["features"]) == set(TAPS)
    dims = encoder_dims("tiny")
    dec = decoder_channels("tiny")
    assert dims == (16, 32, 48, 64) and dec == (4, 8, 16, 32, 64)
    for k, (c, div) in enumerate(zip(dims[:1] + dims[1:] + dims[3:], (2, 4, 8, 16, 32))):
        assert out["features"][f"enc{k}"].shape == (B, H // div, W // div, c)
    for tap in DECODER_TAPS:  # same resolutions as the full size, channels scaled by 1/4
        ch, div = FULL_TAPS[tap]
        assert out["features"][tap].shape == (B, H // div, W // div, max(1, ch // 4)), tap
    # channel dropout: only with a key, a different prediction
    assert not np.allclose(dropped, out["depth"])


def test_gradient_wrt_zero_offsets_matches_finite_differences(tiny):
    """∂L/∂offset at zero (X_13_Conv_0, the default tap; enc4, the deepest encoder map)
    against central differences along a random direction, in float64 (in float32 the
    differences lose most digits: the decoder's ReLUs and channel attention make larger
    steps nonlinear)."""
    model, variables, images, run = tiny
    taps = ("X_13_Conv_0", "enc4")
    h, w = 32, 64  # smaller: float64 convolutions are slow on the CPU
    weights = np.random.default_rng(7).normal(size=(1, h, w, 1))
    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)
        x64 = np.asarray(images[:1, :h, :w], np.float64)
        zeros = {t: jnp.zeros(s.shape, jnp.float64) for t, s in _zeros(model, v64, x64, taps).items()}
        # one compiled program for the gradient and the values of the differences
        value_and_grad = jax.jit(jax.value_and_grad(lambda v, off: 100.0 * jnp.sum(
            weights * model.apply(v, x64, off)["scales"][0]["raw"]), argnums=1))
        loss = lambda off: value_and_grad(v64, off)[0]
        grads = value_and_grad(v64, zeros)[1]
        rng = np.random.default_rng(8)
        for tap in taps:
            g = np.asarray(grads[tap])
            assert g.shape == zeros[tap].shape and np.abs(g).max() > 0, tap
            u = rng.normal(size=g.shape)
            u /= np.linalg.norm(u)
            eps = 1e-4
            fd = (float(loss({**zeros, tap: eps * u})) - float(loss({**zeros, tap: -eps * u}))) / (2 * eps)
            analytic = float(np.sum(g * u))
            print(f"\n{tap}: directional derivative {analytic:.8g}, central difference {fd:.8g}", end="")
            assert abs(analytic) > 1e-2 and abs(fd - analytic) <= 1e-5 * abs(analytic), (tap, fd, analytic)
    # the offset is added where the tap is produced (float32, the compiled forward)
    zeros = _zeros(model, variables, images, taps)
    key = jax.random.PRNGKey(8)
    off = {**zeros, "X_13_Conv_0": 0.5 * jnp.ones_like(zeros["X_13_Conv_0"])}
    moved, base = run(off, key)[0], run(zeros, key)[0]
    np.testing.assert_allclose(moved["features"]["X_13_Conv_0"],
                               base["features"]["X_13_Conv_0"] + 0.5, atol=1e-5)
    np.testing.assert_array_equal(moved["features"]["X_22_Conv_0"], base["features"]["X_22_Conv_0"])
    assert not np.allclose(moved["disp"], base["disp"])


def test_bad_inputs_and_offsets_get_clear_errors(tiny):
    model, variables, images, _ = tiny
    shape = lambda *a, **k: jax.eval_shape(lambda x: model.apply(variables, x, *a, **k), images)
    with pytest.raises(ValueError, match=r"unknown tap\(s\) \['dec6'\]; expected names from"):
        shape({"dec6": jnp.zeros((1,))})
    with pytest.raises(ValueError, match="X_13_Conv_0.*must have the tap's shape"):
        shape({"X_13_Conv_0": jnp.zeros((1, 2, 3, 4))})
    with pytest.raises(ValueError, match="enc4.*must have the tap's shape"):
        shape({"enc4": jnp.zeros((1, 2, 3, 4))})
    with pytest.raises(ValueError, match="multiples of 32"):
        jax.eval_shape(model.apply, variables, jnp.zeros((1, 60, 96, 3)))
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        jax.eval_shape(model.apply, variables, jnp.zeros((1, 64, 96, 4)))
    with pytest.raises(ValueError, match="size must be one of"):
        MonoViT(size="huge").init_variables(0, 32, 32)


def test_depthnet_encoder_taps():
    model = DepthNet(width=0.125, encoder_taps=True)
    variables = model.init_variables(0, 32, 64)
    images = jax.random.uniform(jax.random.PRNGKey(2), (1, 32, 64, 3))
    feats = jax.eval_shape(lambda x: model.apply(variables, x)["features"], images)
    assert set(feats) == set(ENCODER_TAPS) | {f"dec{i}" for i in range(11)}
    assert [feats[f"enc{k}"].shape[1:3] for k in range(5)] == [(16, 32), (8, 16), (4, 8),
                                                              (2, 4), (1, 2)]
    plain = jax.eval_shape(lambda x: model.clone(encoder_taps=False).apply(variables, x)["features"],
                           images)
    assert set(plain) == {f"dec{i}" for i in range(11)}  # the default stays as it was
    off = jax.random.normal(jax.random.PRNGKey(3), feats["enc4"].shape)
    run = jax.jit(lambda o: model.apply(variables, images, {"enc4": o}))
    base, moved = run(jnp.zeros_like(off)), run(off)
    np.testing.assert_allclose(moved["features"]["enc4"], base["features"]["enc4"] + off, atol=1e-6)
    np.testing.assert_array_equal(moved["features"]["enc3"], base["features"]["enc3"])
    assert not np.allclose(moved["disp"], base["disp"])
    with pytest.raises(ValueError, match="unknown tap"):
        jax.eval_shape(lambda x: model.apply(variables, x, {"enc5": off}), images)
