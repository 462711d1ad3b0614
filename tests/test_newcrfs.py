"""NeWCRFs and its Swin encoder in Flax, against independent computations: naive loops for
the window partition, shift mask, window attention, a whole shifted Swin block and
PatchMerging; torch for PixelShuffle, adaptive pooling and bilinear resizing; the
closed-form parameter count of the full sizes; the reduced model's outputs, gradients
w.r.t. tap offsets (against finite differences) and input checks.

Kept cheap: the full sizes only through `jax.eval_shape`, the `micro` model at 64×96.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from jaxdepth.models import swin
from jaxdepth.models.newcrfs import (
    ENCODER_TAPS,
    TAPS,
    NeWCRFs,
    adaptive_avg_pool,
    crf_config,
    pixel_shuffle,
    resize_bilinear,
)
from jaxdepth.uncertainty import gradient_uncertainty

H, W, B = 64, 96, 2
MICRO = {"encoder": "micro", "crf_scale": 1 / 16}
_count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# --------------------------------------------------------------------------- windows

def _naive_shift_mask(hp, wp, w, s):
    """Per token of each shifted window: tokens attend iff both come from the same side
    of the wrap-around (rolled row ≥ hp − s, rolled column ≥ wp − s)."""
    masks = []
    for wi in range(hp // w):
        for wj in range(wp // w):
            tokens = [(wi * w + a, wj * w + b) for a in range(w) for b in range(w)]
            m = np.zeros((w * w, w * w), np.float32)
            for p, (r1, c1) in enumerate(tokens):
                for q, (r2, c2) in enumerate(tokens):
                    same = (r1 >= hp - s) == (r2 >= hp - s) and (c1 >= wp - s) == (c2 >= wp - s)
                    m[p, q] = 0.0 if same else -100.0
            masks.append(m)
    return np.stack(masks)


def test_window_partition_round_trip_and_shift_mask():
    x = np.random.default_rng(0).normal(size=(2, 6, 9, 3)).astype(np.float32)
    win = swin.window_partition(x, 3)
    assert win.shape == (2 * 2 * 3, 9, 3)
    # window 1 of image 0 is rows 0..2, columns 3..5, tokens row-major
    np.testing.assert_array_equal(win[1], x[0, 0:3, 3:6].reshape(9, 3))
    np.testing.assert_array_equal(win[6 + 5], x[1, 3:6, 6:9].reshape(9, 3))
    np.testing.assert_array_equal(swin.window_reverse(win, 3, 6, 9), x)
    np.testing.assert_array_equal(np.asarray(swin.window_reverse(jnp.asarray(win), 3, 6, 9)), x)
    for hp, wp, w, s in ((14, 21, 7, 3), (6, 9, 3, 1), (7, 7, 7, 3)):
        np.testing.assert_array_equal(swin.shifted_window_mask(hp, wp, w, s),
                                      _naive_shift_mask(hp, wp, w, s))


def _naive_bias(table, w):
    heads = table.shape[1]
    bias = np.zeros((heads, w * w, w * w), np.float32)
    for p in range(w * w):
        for q in range(w * w):
            di, dj = p // w - q // w, p % w - q % w
            bias[:, p, q] = table[(di + w - 1) * (2 * w - 1) + dj + w - 1]
    return bias


def _naive_window_attention(x, p, heads, w, mask=None, v=None):
    """x `[N,C]` of one window; numpy multi-head attention with the relative bias."""
    n, c = x.shape
    hd = c // heads
    bias = _naive_bias(np.asarray(p["relative_position_bias_table"]), w)
    if v is None:
        qkv = x @ np.asarray(p["qkv"]["kernel"]) + np.asarray(p["qkv"]["bias"])
        q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
    else:
        qk = x @ np.asarray(p["qk"]["kernel"]) + np.asarray(p["qk"]["bias"])
        q, k = qk[:, :c], qk[:, c:]
    out = np.zeros((n, v.shape[1]), np.float64)
    vd = v.shape[1] // heads
    for h in range(heads):
        logits = (q[:, h * hd:(h + 1) * hd] * hd ** -0.5) @ k[:, h * hd:(h + 1) * hd].T + bias[h]
        if mask is not None:
            logits = logits + mask
        a = np.exp(logits - logits.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        out[:, h * vd:(h + 1) * vd] = a @ v[:, h * vd:(h + 1) * vd]
    return out @ np.asarray(p["proj"]["kernel"]) + np.asarray(p["proj"]["bias"])


def test_window_attention_of_one_window_against_numpy():
    w, heads, c = 3, 2, 8
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, w * w, c)).astype(np.float32)
    mod = swin.WindowAttention(heads, w)
    params = mod.init(jax.random.PRNGKey(0), x)["params"]
    params = dict(params, relative_position_bias_table=jnp.asarray(
        rng.normal(size=((2 * w - 1) ** 2, heads)), jnp.float32))
    mask = swin.shifted_window_mask(w, w, w, 1)  # one window, regions mixed
    for m in (None, mask):
        got = mod.apply({"params": params}, x, m)[0]
        want = _naive_window_attention(x[0], params, heads, w, None if m is None else m[0])
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)


def _layer_norm(x, p):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def _gelu(x):
    from math import erf
    return 0.5 * x * (1.0 + np.vectorize(erf)(x / np.sqrt(2.0)))


def test_shifted_swin_block_against_per_token_loop():
    """A shifted block on a 5×9 map (padded to 6×9, window 3, shift 1), computed per
    token in original coordinates: a token attends to the tokens whose rolled positions
    share its window and its side of the wrap-around."""
    hgt, wid, c, heads, w, s = 5, 9, 8, 2, 3, 1
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1, hgt, wid, c)).astype(np.float32)
    block = swin.SwinBlock(heads, w, shift=s)
    mask = swin.shifted_window_mask(6, 9, w, s)
    variables = block.init(jax.random.PRNGKey(1), x, mask)
    p = jax.tree.map(np.asarray, variables["params"])
    p["attn"]["relative_position_bias_table"] = rng.normal(size=((2 * w - 1) ** 2, heads))
    got = np.asarray(block.apply({"params": p}, x, mask))

    hp, wp = 6, 9
    y = np.zeros((hp, wp, c))
    y[:hgt, :wid] = _layer_norm(x[0], p["norm1"])
    att = p["attn"]
    qkv = y @ att["qkv"]["kernel"] + att["qkv"]["bias"]
    table, hd = att["relative_position_bias_table"], c // heads
    out = np.zeros((hgt, wid, c))
    for r in range(hgt):
        for col in range(wid):
            rr, rc = (r - s) % hp, (col - s) % wp          # rolled position
            keys, biases = [], []
            for r2 in range(hp):
                for c2 in range(wp):
                    kr, kc = (r2 - s) % hp, (c2 - s) % wp
                    if kr // w != rr // w or kc // w != rc // w:
                        continue
                    same = (rr >= hp - s) == (kr >= hp - s) and (rc >= wp - s) == (kc >= wp - s)
                    idx = (rr % w - kr % w + w - 1) * (2 * w - 1) + (rc % w - kc % w + w - 1)
                    keys.append((r2, c2))
                    biases.append(table[idx] + (0.0 if same else -100.0))
            q = qkv[r, col, :c].reshape(heads, hd) * hd ** -0.5
            k = np.stack([qkv[a, b, c:2 * c] for a, b in keys]).reshape(-1, heads, hd)
            v = np.stack([qkv[a, b, 2 * c:] for a, b in keys]).reshape(-1, heads, hd)
            logits = np.einsum("hd,khd->hk", q, k) + np.stack(biases).T
            a = np.exp(logits - logits.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            out[r, col] = np.einsum("hk,khd->hd", a, v).reshape(c)
    x1 = x[0] + out @ att["proj"]["kernel"] + att["proj"]["bias"]
    mlp = p["mlp"]
    hidden = _gelu(_layer_norm(x1, p["norm2"]) @ mlp["fc1"]["kernel"] + mlp["fc1"]["bias"])
    want = x1 + hidden @ mlp["fc2"]["kernel"] + mlp["fc2"]["bias"]
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)


def test_patch_merging_order_and_odd_padding():
    x = np.random.default_rng(3).normal(size=(1, 5, 7, 4)).astype(np.float32)
    mod = swin.PatchMerging()
    p = jax.tree.map(np.asarray, mod.init(jax.random.PRNGKey(0), x)["params"])
    got = np.asarray(mod.apply({"params": p}, x))
    xp = np.zeros((1, 6, 8, 4), np.float32)
    xp[:, :5, :7] = x
    want = np.zeros((3, 4, 8))
    for i in range(3):
        for j in range(4):
            cat = np.concatenate([xp[0, 2 * i, 2 * j], xp[0, 2 * i + 1, 2 * j],
                                  xp[0, 2 * i, 2 * j + 1], xp[0, 2 * i + 1, 2 * j + 1]])
            want[i, j] = _layer_norm(cat, p["norm"]) @ p["reduction"]["kernel"]
    assert "bias" not in p["reduction"]
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- torch ops

def test_pixel_shuffle_matches_torch():
    x = np.random.default_rng(4).normal(size=(2, 3, 5, 12)).astype(np.float32)
    want = torch.nn.PixelShuffle(2)(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_array_equal(np.asarray(pixel_shuffle(jnp.asarray(x), 2)),
                                  want.permute(0, 2, 3, 1).numpy())


def test_adaptive_avg_pool_and_bilinear_resize_match_torch():
    x = np.random.default_rng(5).normal(size=(2, 11, 35, 3)).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    for s in (1, 2, 3, 6):
        want = torch.nn.functional.adaptive_avg_pool2d(xt, s).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(np.asarray(adaptive_avg_pool(jnp.asarray(x), s)), want,
                                   rtol=1e-5, atol=1e-6)
    small = np.random.default_rng(6).normal(size=(1, 2, 3, 2)).astype(np.float32)
    pooled6 = np.asarray(adaptive_avg_pool(jnp.asarray(small), 6))  # output > input
    want6 = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(small).permute(0, 3, 1, 2), 6).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(pooled6, want6, rtol=1e-6)
    # PPM upsampling (and its downsampling when the map is smaller than 6) and the ×4 head
    for src, (h, w) in (((2, 6, 6, 3), (11, 35)), ((2, 6, 6, 3), (2, 3)), ((1, 4, 5, 1), (16, 20))):
        y = np.random.default_rng(7).normal(size=src).astype(np.float32)
        want = torch.nn.functional.interpolate(torch.from_numpy(y).permute(0, 3, 1, 2), size=(h, w),
                                               mode="bilinear", align_corners=False)
        np.testing.assert_allclose(np.asarray(resize_bilinear(jnp.asarray(y), h, w)),
                                   want.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- sizes

def _closed_form(size, in_channels=3, w=7):
    """Parameter count from the architecture's description (NeWCRFs, window 7)."""
    cfg = swin.SIZES[size]
    n = 16 * in_channels * cfg.embed_dim + 3 * cfg.embed_dim          # patch embed + LN
    chans = [cfg.embed_dim * 2 ** i for i in range(4)]
    for i, (d, h) in enumerate(zip(cfg.depths, cfg.heads)):
        c = chans[i]
        n += d * (12 * c * c + 13 * c + (2 * w - 1) ** 2 * h) + 2 * c   # blocks + norm_i
        if i < 3:
            n += 8 * c + 8 * c * c                                      # PatchMerging
    psp = 4 * (chans[3] * 512 + 2 * 512) + 9 * (chans[3] + 4 * 512) * 512 + 2 * 512
    crf = 0
    for x_dim, d, v, h in zip(chans, (128, 256, 512, 1024), (64, 128, 256, 512), (4, 8, 16, 32)):
        crf += (9 * x_dim * d + d) * (x_dim != d) + (9 * v * d + d)
        crf += 2 * (11 * d * d + 12 * d + 13 * 13 * h) + 2 * d
    return n + psp + crf + 9 * 128 + 1


def _abstract(model, h=64, w=64):
    return jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, h, w, model.in_channels)))


def test_large_parameter_count_closed_form():
    abstract = _abstract(NeWCRFs())
    params = abstract["params"]
    assert _count(params) == _closed_form("large") == 270_444_877   # ≈ 270.4 M
    assert _count(params["backbone"]) == 194_998_164
    assert _count(params["decoder"]) == 19_665_920
    assert sum(_count(params[f"crf{i}"]) for i in range(4)) == 55_779_640
    assert params["backbone"]["layers_2"]["blocks_17"]["attn"][
        "relative_position_bias_table"].shape == (169, 24)
    assert params["crf3"]["crf_layer"]["blocks_1"]["attn"]["qk"]["kernel"].shape == (1024, 2048)
    assert params["crf0"]["proj_v"]["kernel"].shape == (3, 3, 64, 128)
    assert params["decoder"]["psp_modules_3"]["gn"]["scale"].shape == (512,)
    assert set(abstract["batch_stats"]["decoder"]) == {"bottleneck"}


@pytest.mark.slow
def test_base_tiny_and_teacher_parameter_counts():
    for size, count in (("base", 139_981_297), ("tiny", 88_455_283)):
        params = _abstract(NeWCRFs(encoder=size))["params"]
        assert _count(params) == _closed_form(size) == count, size
    assert "proj_x" not in _abstract(NeWCRFs(encoder="base"))["params"]["crf0"]
    teacher = _abstract(NeWCRFs(in_channels=6))["params"]
    assert _count(teacher) == _closed_form("large", 6) == 270_444_877 + 9_216


def test_crf_config_scales_consistently():
    assert crf_config(1.0) == ((128, 256, 512, 1024), (4, 8, 16, 32), (64, 128, 256, 512), 512, 256)
    dims, heads, v_dims, psp, groups = crf_config(1 / 16)
    assert dims == (8, 16, 32, 64) and v_dims == (4, 8, 16, 32) and (psp, groups) == (32, 16)
    for scale in (0.3, 0.05, 2.0):
        dims, heads, v_dims, psp, groups = crf_config(scale)
        assert all(d % (4 * h) == 0 for d, h in zip(dims, heads))
        assert v_dims[:3] == tuple(d // 4 for d in dims[1:]) and psp == 2 * groups


# --------------------------------------------------------------------------- the reduced model

@pytest.fixture(scope="module")
def student():
    model = NeWCRFs(uem=True, **MICRO)
    variables = model.init_variables(0, H, W)
    images = jax.random.uniform(jax.random.PRNGKey(1), (B, H, W, 3))
    return model, variables, images


def test_micro_forward_outputs_and_offset_gradient(student):
    model, variables, images = student
    feats = jax.eval_shape(lambda v, x: model.apply(v, x)["features"], variables, images)
    assert set(feats) == set(TAPS) and model.tap_names == TAPS
    weights = jax.random.normal(jax.random.PRNGKey(2), (B, H, W, 1))
    direction = jax.random.normal(jax.random.PRNGKey(3), feats["crf0"].shape)

    def loss(offset):
        out = model.apply(variables, images, {"crf0": offset})
        return jnp.sum(out["depth"] * weights), out

    value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (_, out), grad = value_and_grad(jnp.zeros(feats["crf0"].shape))
    # shapes and ranges
    assert out["depth"].shape == out["disp"].shape == (B, H, W, 1)
    assert 0.0 < float(out["depth"].min()) and float(out["depth"].max()) < model.max_depth
    np.testing.assert_allclose(np.asarray(out["disp"]), 1.0 / np.asarray(out["depth"]), rtol=1e-5)
    assert len(out["scales"]) == 1 and set(out["scales"][0]) == {"disp", "depth", "log_sigma"}
    chans = {"enc0": 16, "enc1": 32, "enc2": 64, "enc3": 128, "ppm": 32, "crf3": 64, "crf2": 32,
             "crf1": 16, "crf0": 8, "disp_head": 1}
    divs = {"enc0": 4, "enc1": 8, "enc2": 16, "enc3": 32, "ppm": 32, "crf3": 32, "crf2": 16,
            "crf1": 8, "crf0": 4, "disp_head": 4}
    for tap, a in out["features"].items():
        assert a.shape == (B, H // divs[tap], W // divs[tap], chans[tap]), tap
    # the UEM: s in the scaling range at 1/4…1/32, average-pooled; log σ = s / 2
    lo, hi = model.uem_range
    levels = [np.asarray(s) for s in out["log_var_levels"]]
    for k, s in enumerate(levels):
        assert s.shape == (B, H // 4 // 2 ** k, W // 4 // 2 ** k, 1)
        assert lo < s.min() and s.max() < hi
    np.testing.assert_allclose(levels[1], levels[0].reshape(B, 8, 2, 12, 2, 1).mean((2, 4)),
                               rtol=1e-5)
    assert out["log_var"].shape == (B, H, W, 1)
    np.testing.assert_allclose(np.asarray(out["log_sigma"]), 0.5 * np.asarray(out["log_var"]))
    # d/d offset at zero against a central finite difference along a random direction
    eps = 1e-2
    (plus, _), _ = value_and_grad(eps * direction)
    (minus, _), _ = value_and_grad(-eps * direction)
    finite = (float(plus) - float(minus)) / (2 * eps)
    analytic = float(jnp.vdot(grad, direction))
    assert abs(analytic) > 1e-3
    np.testing.assert_allclose(analytic, finite, rtol=3e-2)


def test_micro_gradient_uncertainty(student):
    model, variables, images = student
    est = gradient_uncertainty(model.apply, variables, images)
    assert est.uncertainty.shape == est.depth.shape == (B, H, W, 1)
    assert np.isfinite(np.asarray(est.uncertainty)).all()
    assert 0.0 <= float(est.uncertainty.min()) and float(est.uncertainty.max()) <= 1.0


def test_teacher_six_channels_and_encoder_taps_off():
    teacher = NeWCRFs(in_channels=6, encoder_taps=False, **MICRO)
    abstract = _abstract(teacher, H, W)
    assert abstract["params"]["backbone"]["patch_embed"]["proj"]["kernel"].shape == (4, 4, 6, 16)
    assert "uem_head" not in abstract["params"]
    out = jax.eval_shape(teacher.apply, abstract, jax.ShapeDtypeStruct((B, H, W, 6), jnp.float32))
    assert out["depth"].shape == (B, H, W, 1) and "log_sigma" not in out
    assert not set(ENCODER_TAPS) & set(out["features"])
    # an encoder offset still works without the encoder taps listed
    zeros = {"enc3": jax.ShapeDtypeStruct((B, H // 32, W // 32, 128), jnp.float32)}
    jax.eval_shape(teacher.apply, abstract, jax.ShapeDtypeStruct((B, H, W, 6), jnp.float32), zeros)


@pytest.mark.slow
def test_micro_teacher_forward_and_training_step():
    """Real values: the 6-channel teacher, BatchNorm statistics and drop path."""
    teacher = NeWCRFs(in_channels=6, **MICRO)
    variables = teacher.init_variables(0, H, W)
    pair = jax.random.uniform(jax.random.PRNGKey(4), (B, H, W, 6))

    @jax.jit
    def step(variables, key):
        def loss(params):
            out, state = teacher.apply({**variables, "params": params}, pair, train=True,
                                       dropout_rng=key, mutable=["batch_stats"])
            return jnp.mean(jnp.log(out["depth"])), (out, state)
        return jax.grad(loss, has_aux=True)(variables["params"])

    grads, (out, state) = step(variables, jax.random.PRNGKey(5))
    _, (out2, _) = step(variables, jax.random.PRNGKey(6))
    assert out["depth"].shape == (B, H, W, 1)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    assert not np.allclose(np.asarray(out["depth"]), np.asarray(out2["depth"]))  # drop path
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state["batch_stats"],
                         variables["batch_stats"])
    assert max(jax.tree.leaves(moved)) > 0
    evaluated = jax.jit(teacher.apply)(variables, pair)
    assert 0.0 < float(evaluated["depth"].min()) and float(evaluated["depth"].max()) < 80.0


# --------------------------------------------------------------------------- input checks

def test_bad_inputs_raise(student):
    model, variables, images = student
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        model.apply(variables, images[..., :2])
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        model.apply(variables, images[0])
    with pytest.raises(ValueError, match="multiples of 32"):
        model.apply(variables, images[:, :48])
    with pytest.raises(ValueError, match="multiples of 32"):
        model.apply(variables, images[:, :, :90])
    with pytest.raises(ValueError, match=r"unknown tap.*'crf9'.*crf0"):
        model.apply(variables, images, {"crf9": jnp.zeros(1)})
    with pytest.raises(ValueError, match=r"offsets\['ppm'\] must have the tap's shape"):
        jax.eval_shape(lambda o: model.apply(variables, images, {"ppm": o}),
                       jax.ShapeDtypeStruct((B, 2, 3, 5), jnp.float32))
    with pytest.raises(ValueError, match=r"\[B,H,W,6\]"):
        NeWCRFs(in_channels=6, **MICRO).apply(variables, images)
    with pytest.raises(ValueError, match="Swin size"):
        _abstract(NeWCRFs(encoder="huge"))
    with pytest.raises(ValueError, match="uem_pool"):
        _abstract(NeWCRFs(uem=True, uem_pool="median", **MICRO))
    with pytest.raises(ValueError, match="crf_scale"):
        _abstract(NeWCRFs(encoder="micro", crf_scale=0.0))


def test_init_draws_swin_linears_small_and_reproducibly(student):
    model, variables, _ = student
    again = model.init_variables(0, H, W)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(variables),
                                                    jax.tree.leaves(again)))
    flat = traverse_util.flatten_dict(variables["params"])
    qkv = np.asarray(flat[("backbone", "layers_2", "blocks_1", "attn", "qkv", "kernel")])
    assert 0.015 < qkv.std() < 0.025
    assert not np.asarray(flat[("backbone", "layers_2", "blocks_1", "attn", "qkv", "bias")]).any()
    table = np.asarray(flat[("crf0", "crf_layer", "blocks_0", "attn", "relative_position_bias_table")])
    assert 0.01 < table.std() < 0.03
