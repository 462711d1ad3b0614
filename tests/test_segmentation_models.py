"""Segmentation models (`jaxdepth.models.segmentation`): the apply contract PGN relies on.

Tiny widths and small images; the head, the upsampling, ASPP and the gradients w.r.t.
zero offsets are checked against NumPy re-computations written here (explicit 3×3
shifts, the BatchNorm formula, PyTorch's bilinear rule), a finite difference, or
`jax.grad` of an independently written head. Equivalence with torchvision's own models
(weights converted) is in `test_convert_deeplabv3.py`.
"""
from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxdepth.export import load_checkpoint, save_checkpoint
from jaxdepth.models import DeepLabV3, DeepLabV3Plus, MobileNetV3Large
from jaxdepth.models.init import torch_like_init
from jaxdepth.models.mobilenetv3 import make_divisible
from jaxdepth.models.segmentation import ASPP, FEATURES_V3PLUS, dropout, resize_bilinear

C = 3
W16 = 1 / 16


def randomise(variables, seed=0):
    """Random BatchNorm statistics and affine parameters (init gives the identity)."""
    gen = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, variables))
    draws = {"mean": lambda n: gen.normal(0, 0.2, n), "var": lambda n: gen.uniform(0.5, 1.5, n),
             "scale": lambda n: gen.uniform(0.5, 1.5, n), "bias": lambda n: gen.normal(0, 0.2, n)}
    for path, value in flat.items():
        is_bn = path[-1] in ("mean", "var", "scale") or path[:-1] + ("scale",) in flat
        if is_bn:
            flat[path] = draws[path[-1]](value.shape).astype(np.float32)
    return traverse_util.unflatten_dict(flat)


# --------------------------------------------------------------------------- NumPy references

def conv_np(x, kernel, dilation=1):
    """Zero-padded 'same' k×k conv as a sum of shifted matrix products; x `[B,H,W,Ci]`."""
    k = kernel.shape[0]
    p = (k - 1) // 2 * dilation
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, w = x.shape[1:3]
    return sum(xp[:, dy * dilation:dy * dilation + h, dx * dilation:dx * dilation + w] @ kernel[dy, dx]
               for dy in range(k) for dx in range(k))


def bn_np(x, params, stats, eps=1e-5):
    return (x - stats["mean"]) / np.sqrt(stats["var"] + eps) * params["scale"] + params["bias"]


def resize_np(x, h, w):
    """PyTorch's bilinear rule (align_corners=False): source = (i + ½)·n_in/n_out − ½,
    clamped at 0; neighbours i0 = ⌊source⌋, i1 = min(i0 + 1, n_in − 1)."""
    def along(x, axis, n_out):
        n_in = x.shape[axis]
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        i1 = np.minimum(i0 + 1, n_in - 1)
        lam = (src - i0).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
        return np.take(x, i0, axis) * (1 - lam) + np.take(x, i1, axis) * lam
    return along(along(x, 1, h), 2, w)


def head_np(feats, params, stats, bias: bool):
    """penultimate_in → final_in → decoder_logits from the contract's formula."""
    phi = np.maximum(bn_np(conv_np(feats["penultimate_in"], params["penultimate"]["kernel"]),
                           params["penultimate_bn"], stats["penultimate_bn"]), 0)
    logits = phi @ params["final"]["kernel"][0, 0]
    return phi, logits + params["final"]["bias"] if bias else logits


# --------------------------------------------------------------------------- fixtures

@functools.cache
def v3plus():
    model = DeepLabV3Plus(C, "resnet18", 16, width=W16, dropout_rate=0.3)
    variables = randomise(model.init_variables(0, 64, 64))
    images = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3))
    apply = jax.jit(lambda v, x, off, rng: model.apply(v, x, off, dropout_rng=rng))
    return model, variables, images, apply


def _np(tree):
    return jax.tree.map(np.asarray, tree)


# --------------------------------------------------------------------------- DeepLabV3+

def test_v3plus_shapes_features_and_head_structure():
    model, variables, images, apply = v3plus()
    out = _np(apply(variables, images, None, None))
    assert out["logits"].shape == (2, 64, 64, C) and out["decoder_logits"].shape == (2, 16, 16, C)
    f = out["features"]
    assert set(f) == set(FEATURES_V3PLUS)
    assert f["backbone"].shape == (2, 4, 4, 32)            # layer4 at stride 16 (512/16 ch)
    assert f["low_level"].shape == (2, 16, 16, 4)          # layer1 at stride 4
    assert f["low_level_proj"].shape == (2, 16, 16, 3)     # 48/16
    assert f["aspp"].shape == (2, 4, 4, 16)
    assert f["decoder_concat"].shape == (2, 16, 16, 19)    # [low-level; ASPP] = 304/16
    assert f["penultimate_in"].shape == f["final_in"].shape == (2, 16, 16, 16)
    head = traverse_util.flatten_dict(_np(variables["params"]["head"]))
    assert {"/".join(k): v.shape for k, v in head.items()} == {
        "conv0/kernel": (3, 3, 19, 16), "bn0/scale": (16,), "bn0/bias": (16,),
        "penultimate/kernel": (3, 3, 16, 16), "penultimate_bn/scale": (16,),
        "penultimate_bn/bias": (16,), "final/kernel": (1, 1, 16, C)}   # no conv biases
    assert set(variables["batch_stats"]["head"]) == {"bn0", "penultimate_bn"}
    # the decoder concatenates the low-level projection first, then the upsampled ASPP map
    np.testing.assert_allclose(f["decoder_concat"][..., :3], f["low_level_proj"])
    np.testing.assert_allclose(f["decoder_concat"][..., 3:], resize_np(f["aspp"], 16, 16),
                               rtol=1e-5, atol=1e-5)


def test_v3plus_head_and_upsampling_follow_the_contract():
    model, variables, images, apply = v3plus()
    out = _np(apply(variables, images, None, None))
    params, stats = _np(variables["params"]["head"]), _np(variables["batch_stats"]["head"])
    f = out["features"]
    pen = np.maximum(bn_np(conv_np(f["decoder_concat"], params["conv0"]["kernel"]),
                           params["bn0"], stats["bn0"]), 0)
    np.testing.assert_allclose(f["penultimate_in"], pen, rtol=1e-4, atol=1e-4)
    phi, logits = head_np(f, params, stats, bias=False)
    np.testing.assert_allclose(f["final_in"], phi, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["decoder_logits"], logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["logits"], resize_np(out["decoder_logits"], 64, 64),
                               rtol=1e-5, atol=1e-5)


def test_resize_bilinear_matches_pytorch_rule_at_odd_ratios():
    x = np.random.default_rng(0).normal(size=(1, 5, 7, 2)).astype(np.float32)
    np.testing.assert_allclose(resize_bilinear(jnp.asarray(x), 17, 25), resize_np(x, 17, 25),
                               rtol=1e-5, atol=1e-6)


def test_v3plus_offsets_give_feature_gradients():
    model, variables, images, apply = v3plus()
    out = _np(apply(variables, images, None, None))
    f = out["features"]
    r = np.random.default_rng(1).normal(size=out["decoder_logits"].shape).astype(np.float32)
    names = ("backbone", "penultimate_in", "final_in")

    def loss(off):
        return jnp.sum(r * model.apply(variables, images, off)["decoder_logits"])

    zeros = {n: jnp.zeros_like(f[n]) for n in names}
    value_and_grad = jax.jit(jax.value_and_grad(loss))   # one program for all checks below
    base, grads = value_and_grad(zeros)
    grads = _np(grads)
    params, stats = _np(variables["params"]["head"]), _np(variables["batch_stats"]["head"])
    # ∂L/∂φ = r · Kᵀ for the 1×1 final conv
    np.testing.assert_allclose(grads["final_in"], r @ params["final"]["kernel"][0, 0].T,
                               rtol=1e-4, atol=1e-5)

    def head(p):  # the head written independently in jnp (shifts, BN formula)
        k = params["penultimate"]["kernel"]
        pp = jnp.pad(p, ((0, 0), (1, 1), (1, 1), (0, 0)))
        y = sum(pp[:, dy:dy + 16, dx:dx + 16] @ k[dy, dx] for dy in range(3) for dx in range(3))
        y = jax.nn.relu((y - stats["penultimate_bn"]["mean"])
                        / jnp.sqrt(stats["penultimate_bn"]["var"] + 1e-5)
                        * params["penultimate_bn"]["scale"] + params["penultimate_bn"]["bias"])
        return jnp.sum(r * (y @ params["final"]["kernel"][0, 0]))

    np.testing.assert_allclose(grads["penultimate_in"], jax.grad(head)(f["penultimate_in"]),
                               rtol=1e-4, atol=1e-5)
    # the backbone offset, by a central difference along a random direction (the network
    # is piecewise linear in it; a small step crosses no ReLU kink in practice)
    v = np.random.default_rng(2).normal(size=f["backbone"].shape).astype(np.float32)
    eps = 1e-2
    plus, _ = value_and_grad({**zeros, "backbone": eps * v})
    minus, _ = value_and_grad({**zeros, "backbone": -eps * v})
    np.testing.assert_allclose((float(plus) - float(minus)) / (2 * eps),
                               np.sum(grads["backbone"] * v), rtol=2e-2)
    # without offsets the loss is the same; a nonzero offset on final_in (linear in the
    # logits) moves it by Σ r · (offset · K)
    np.testing.assert_allclose(float(base), np.sum(r * out["decoder_logits"]), rtol=1e-5)
    off = np.random.default_rng(3).normal(size=f["final_in"].shape).astype(np.float32)
    moved, _ = value_and_grad({**zeros, "final_in": jnp.asarray(off)})
    np.testing.assert_allclose(float(moved) - float(base),
                               np.sum(r * (off @ params["final"]["kernel"][0, 0])), rtol=1e-3)


def test_v3plus_dropout_only_with_rng_and_before_the_head():
    model, variables, images, apply = v3plus()
    plain = _np(apply(variables, images, None, None))
    drop_a = _np(apply(variables, images, None, jax.random.PRNGKey(5)))
    drop_a2 = _np(apply(variables, images, None, jax.random.PRNGKey(5)))
    drop_b = _np(apply(variables, images, None, jax.random.PRNGKey(6)))
    np.testing.assert_array_equal(drop_a["logits"], drop_a2["logits"])
    assert np.abs(drop_a["logits"] - drop_b["logits"]).max() > 1e-3
    assert np.abs(drop_a["logits"] - plain["logits"]).max() > 1e-3
    # dropout acts on decoder_concat's consumer side: the concat itself is untouched,
    # the head input changes, and final_in → final is the plain 1×1 conv
    np.testing.assert_array_equal(drop_a["features"]["decoder_concat"],
                                  plain["features"]["decoder_concat"])
    assert np.abs(drop_a["features"]["penultimate_in"] - plain["features"]["penultimate_in"]).max() > 1e-3
    params, stats = _np(variables["params"]["head"]), _np(variables["batch_stats"]["head"])
    phi, logits = head_np(drop_a["features"], params, stats, bias=False)
    np.testing.assert_allclose(drop_a["features"]["final_in"], phi, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(drop_a["decoder_logits"], logits, rtol=1e-4, atol=1e-4)


def test_dropout_is_elementwise_inverted_dropout():
    x = jnp.ones((4, 50, 50, 8))
    y = np.asarray(dropout(x, jax.random.PRNGKey(0), 0.25))
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01
    assert len({tuple(c) for c in (y[0, :4, 0, :] == 0)}) > 1       # not whole channels
    np.testing.assert_array_equal(dropout(x, None, 0.25), x)
    np.testing.assert_array_equal(dropout(x, jax.random.PRNGKey(0), 0.0), x)


def _conv_dilations(model, shape):
    """The set of conv dilations in the traced forward pass, and the output shapes."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    jaxpr, out = jax.make_jaxpr(lambda v, x: model.apply(v, x), return_shape=True)(
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x), x)
    found = re.findall(r"rhs_dilation=\((\d+), (\d+)\)", str(jaxpr))
    return {(int(a), int(b)) for a, b in found}, out


def test_output_stride_dilates_backbone_and_doubles_aspp_rates():
    d16, _ = _conv_dilations(DeepLabV3Plus(C, "resnet18", 16, width=W16), (1, 64, 64, 3))
    d8, out = _conv_dilations(DeepLabV3Plus(C, "resnet18", 8, width=W16), (1, 65, 97, 3))
    assert {(r, r) for r in (6, 12, 18)} <= d16 and (2, 2) in d16 and (4, 4) not in d16
    assert {(r, r) for r in (12, 24, 36)} <= d8 and {(2, 2), (4, 4)} <= d8
    assert out["features"]["backbone"].shape == (1, 9, 13, 32)      # ⌈65/8⌉, ⌈97/8⌉; 512/16
    assert out["features"]["low_level"].shape == (1, 17, 25, 4)
    assert out["decoder_logits"].shape == (1, 17, 25, C) and out["logits"].shape == (1, 65, 97, C)


def test_aspp_matches_numpy_with_dilations_and_pooling():
    x = np.random.default_rng(0).normal(size=(2, 7, 9, 3)).astype(np.float32)
    module = ASPP(4, (2, 3))
    variables = randomise(torch_like_init(jax.eval_shape(module.init, jax.random.PRNGKey(0), x), 0),
                          seed=1)
    got = np.asarray(jax.jit(module.apply)(variables, x))
    p, s = _np(variables["params"]), _np(variables["batch_stats"])

    def cbr(name, y, d=1):
        return np.maximum(bn_np(conv_np(y, p[name]["conv"]["kernel"], d), p[name]["bn"],
                                s[name]["bn"]), 0)

    pooled = cbr("pool", x.mean(axis=(1, 2), keepdims=True))
    branches = [cbr("branch_0", x), cbr("branch_1", x, 2), cbr("branch_2", x, 3),
                np.broadcast_to(pooled, (2, 7, 9, 4))]
    np.testing.assert_allclose(got, cbr("project", np.concatenate(branches, -1)),
                               rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- DeepLabV3

def test_v3_contract_any_size_and_aux_head():
    # (MobileNetV3-Large: at full width against torchvision in test_convert_deeplabv3)
    stride, aux_channels, width = 8, 64, W16
    model = DeepLabV3(C, "resnet50", aux=True, width=width)
    variables = randomise(model.init_variables(3))
    images = jax.random.uniform(jax.random.PRNGKey(2), (1, 65, 97, 3))
    out = _np(jax.jit(model.apply)(variables, images))
    h, w = -(-65 // stride), -(-97 // stride)
    assert out["logits"].shape == out["aux_logits"].shape == (1, 65, 97, C)
    assert out["decoder_logits"].shape == (1, h, w, C)
    f = out["features"]
    assert set(f) == {"backbone", "backbone_aux", "aspp", "penultimate_in", "final_in"}
    assert f["backbone_aux"].shape == (1, 9, 13, aux_channels)      # layer3, stride 8
    ch = max(1, round(256 * width))
    assert f["penultimate_in"].shape == f["final_in"].shape == (1, h, w, ch)
    np.testing.assert_array_equal(f["penultimate_in"], f["aspp"])    # no dropout without rng
    params, stats = _np(variables["params"]["head"]), _np(variables["batch_stats"]["head"])
    assert {"/".join(k): v.shape for k, v in traverse_util.flatten_dict(params).items()} == {
        "penultimate/kernel": (3, 3, ch, ch), "penultimate_bn/scale": (ch,),
        "penultimate_bn/bias": (ch,), "final/kernel": (1, 1, ch, C), "final/bias": (C,)}
    phi, logits = head_np(f, params, stats, bias=True)
    np.testing.assert_allclose(f["final_in"], phi, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["decoder_logits"], logits, rtol=1e-4, atol=1e-4)
    scale = np.abs(out["decoder_logits"]).max()  # float32 rounding of the interpolation
    np.testing.assert_allclose(out["logits"], resize_np(out["decoder_logits"], 65, 97),
                               rtol=1e-5, atol=1e-5 * scale)
    aux = _np(variables["params"]["aux_head"])
    assert aux["conv"]["kernel"].shape == (3, 3, aux_channels, aux_channels // 4)
    assert set(traverse_util.flatten_dict(variables["params"])) >= {("aspp", "pool", "conv", "kernel")}


def test_mobilenet_channels_follow_make_divisible():
    assert [make_divisible(v) for v in (4, 10, 16, 72, 90, 3)] == [8, 16, 16, 72, 88, 8]
    maps = jax.eval_shape(lambda x: MobileNetV3Large(1.0, dilated=False).init_with_output(
        jax.random.PRNGKey(0), x)[0], jnp.zeros((1, 64, 64, 3)))
    assert [m.shape[-1] for m in maps] == [16, 16, 24, 24, 40, 40, 40, 80, 80, 80, 80, 112, 112,
                                           160, 160, 160, 960]
    assert [m.shape[1] for m in maps] == [32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 4, 4, 4, 2, 2, 2, 2]
    model = DeepLabV3(C, "mobilenet_v3_large", aux=True, width=0.25)    # dilated: OS 16
    x = jax.ShapeDtypeStruct((1, 65, 97, 3), jnp.float32)
    out = jax.eval_shape(model.apply, jax.eval_shape(model.init, jax.random.PRNGKey(0), x), x)
    assert out["features"]["backbone_aux"].shape == (1, 9, 13, 16)     # features_4: 40·¼ → 16
    assert out["features"]["backbone"].shape == (1, 5, 7, 6 * 40)      # features_16, stride 16
    assert out["decoder_logits"].shape == (1, 5, 7, C) and out["aux_logits"].shape == (1, 65, 97, C)


# --------------------------------------------------------------------------- errors, init

def test_bad_input_and_configuration_raise_value_errors():
    model = DeepLabV3Plus(C, width=W16)
    v = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))

    def call(m, x, off=None):
        return jax.eval_shape(lambda v, x: m.apply(v, x, off), v, x)

    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        call(model, jnp.zeros((32, 32, 3)))
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        call(model, jnp.zeros((1, 32, 32, 4)))
    with pytest.raises(ValueError, match="floating point"):
        call(model, jnp.zeros((1, 32, 32, 3), jnp.uint8))
    with pytest.raises(ValueError, match="unknown offset"):
        call(model, jnp.zeros((1, 32, 32, 3)), {"dec6": jnp.zeros(1)})
    with pytest.raises(ValueError, match="final_in.*shape"):
        call(model, jnp.zeros((1, 32, 32, 3)), {"final_in": jnp.zeros((1, 8, 8, 5))})
    for bad, match in ((DeepLabV3Plus(C, "resnet34"), "backbone"),
                       (DeepLabV3Plus(C, output_stride=32), "output_stride"),
                       (DeepLabV3Plus(C, dropout_rate=1.0), "dropout_rate"),
                       (DeepLabV3Plus(0), "num_classes"),
                       (DeepLabV3(C, "resnet18"), "backbone"),
                       (DeepLabV3(C, width=0.0), "width")):
        with pytest.raises(ValueError, match=match):
            jax.eval_shape(bad.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))


def test_init_variables_are_torch_like_and_seeded():
    model = DeepLabV3Plus(C, width=W16)
    a, b = model.init_variables(7), model.init_variables(7)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
    assert jax.tree.structure(a) == jax.tree.structure(abstract)
    for x, y, s in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(abstract)):
        assert x.shape == s.shape
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a["batch_stats"]["head"]["penultimate_bn"]["var"], 1.0)
    k = np.asarray(a["params"]["head"]["penultimate"]["kernel"])     # Kaiming fan-out, no bias
    assert abs(k.std() - np.sqrt(2 / (9 * k.shape[-1]))) < 0.25 * np.sqrt(2 / (9 * k.shape[-1]))


def test_segmentation_checkpoint_round_trips(tmp_path):
    model = DeepLabV3Plus(C, "resnet18", 8, width=W16, dropout_rate=0.1, aspp_rates=(3, 6, 9))
    variables = randomise(model.init_variables(4))
    names = ["road", "car", "sky"]
    with pytest.raises(ValueError, match="list of 3 strings"):
        save_checkpoint(tmp_path / "bad", model, variables, 65, 97, {"class_names": names[:2]})
    save_checkpoint(tmp_path / "ck", model, variables, 65, 97, {"class_names": names})
    loaded, restored, meta = load_checkpoint(tmp_path / "ck")
    assert loaded == model and loaded.aspp_rates == (3, 6, 9)
    assert (meta["task"], meta["architecture"], meta["num_classes"], meta["class_names"]) == (
        "segmentation", "DeepLabV3Plus", C, names)
    assert (meta["height"], meta["width"]) == (65, 97) and "variant" not in meta
    flat_a, flat_b = (traverse_util.flatten_dict(_np(v)) for v in (variables, restored))
    assert flat_a.keys() == flat_b.keys()
    for k in flat_a:
        np.testing.assert_array_equal(flat_a[k], flat_b[k])
