"""PGN closed forms against per-pixel autodiff (jax.grad of each decoder pixel's own loss
w.r.t. the head's kernels, vmapped over pixels, entrywise p-norm in float64 NumPy), the
published code's departures against a hand-built NumPy unfold, and the map layout against
a NumPy half-pixel bilinear upsampling."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import softmax

from jaxdepth.uncertainty import pgn as P

C, D = 5, 6                 # classes, channels of φ
B, H, W = 2, 12, 14         # input; the decoder works at 6×7
PS = (0.1, 0.3, 0.5, 1.0, 2.0)


def assert_close(got, want, **kw):
    """float32 against float64: relative 2e-4, plus 1e-5 of the map's largest value for
    pixels where K w cancels (one δ entry ~1e-5 of the terms it sums)."""
    want = np.asarray(want)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5 * np.abs(want).max(), **kw)


class TinyHead(nn.Module):
    """The contract's head: penultimate 3×3 (no bias) → BN → ReLU → final 1×1."""
    final_bias: bool

    @nn.compact
    def __call__(self, x, offsets):
        x = x + offsets.get("penultimate_in", 0.0)
        pre = nn.Conv(D, (3, 3), padding=((1, 1), (1, 1)), use_bias=False, name="penultimate")(x)
        phi = nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-5,
                                   name="penultimate_bn")(pre))
        phi = phi + offsets.get("final_in", 0.0)
        logits = nn.Conv(C, (1, 1), use_bias=self.final_bias, name="final")(phi)
        return logits, {"penultimate_in": x, "final_in": phi}


class TinySeg(nn.Module):
    """A stride-2 conv stem (tanh, so ψ takes both signs) and `TinyHead`, returning the
    contract's dict."""
    din: int
    final_bias: bool

    @nn.compact
    def __call__(self, images, offsets=None, *, dropout_rng=None, train=False):
        stem = nn.Conv(self.din, (3, 3), strides=(2, 2), name="stem")
        x = jnp.tanh(stem((images - 0.45) / 0.225))
        logits, feats = TinyHead(self.final_bias, name="head")(x, dict(offsets or {}))
        up = jax.image.resize(logits, images.shape[:3] + (C,), "bilinear")
        return {"logits": up, "decoder_logits": logits, "features": feats}


def build(din, bias, seed):
    """The model with random BN statistics and affine parameters, a larger final kernel
    (confident and unconfident pixels) and random images (NumPy draws: no compilation)."""
    model = TinySeg(din, bias)
    rng = np.random.default_rng(seed)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    images = f32(rng.uniform(size=(B, H, W, 3)))
    params = jax.jit(model.init)(jax.random.PRNGKey(seed), images)["params"]
    head = dict(params["head"])
    head["penultimate_bn"] = {"scale": f32(rng.normal(size=D)),
                              "bias": f32(0.3 * rng.normal(size=D))}
    final = dict(head["final"], kernel=3.0 * head["final"]["kernel"])
    if bias:
        final["bias"] = f32(rng.normal(size=C))
    head["final"] = final
    bn_stats = {"mean": f32(0.3 * rng.normal(size=D)), "var": f32(rng.uniform(0.3, 2.0, D))}
    variables = {"params": {**params, "head": head},
                 "batch_stats": {"head": {"penultimate_bn": bn_stats}}}
    return model, variables, images


def np_norm(g, p):
    return (np.abs(np.asarray(g, np.float64)) ** p).sum(-1) ** (1.0 / p)


def labels_np(z):
    """Auxiliary labels and the published code's weights, float64 NumPy."""
    s = softmax(np.asarray(z, np.float64), -1)
    ys = {"onehot": np.eye(C)[np.argmax(z, -1)], "uniform": np.full_like(s, 1.0 / C)}
    return s, ys


def pixel_gradients(variables, psi):
    """jit(vmap over pixels of jax.grad of that pixel's loss w.r.t. the head's params), the
    head run on the model's own ψ = `penultimate_in`. alpha = 1: cross-entropy against y;
    alpha = 0: the surrogate Σ_c w_c z_c with w fixed (its logit gradient is w)."""
    head_module = TinyHead("bias" in variables["params"]["head"]["final"])
    stats = variables["batch_stats"]["head"]

    @jax.jit
    def grads(y, w, alpha):
        def loss(head_params, b, i, j):
            z, _ = head_module.apply({"params": head_params, "batch_stats": stats}, psi, {})
            ce = -jnp.sum(y[b, i, j] * jax.nn.log_softmax(z[b, i, j]))
            return alpha * ce + (1.0 - alpha) * jnp.sum(w[b, i, j] * z[b, i, j])
        b, i, j = (a.ravel() for a in jnp.indices(y.shape[:3]))
        g = jax.vmap(jax.grad(loss), in_axes=(None, 0, 0, 0))(variables["params"]["head"], b, i, j)
        return jax.tree.map(lambda x: x.reshape(y.shape[:3] + (-1,)), g)
    return grads


def make_case(din, bias, seed):
    model, variables, images = build(din, bias, seed)
    out = jax.jit(model.apply)(variables, images)
    z = np.asarray(out["decoder_logits"])
    s, ys = labels_np(z)
    grads = pixel_gradients(variables, out["features"]["penultimate_in"])
    truth = {}
    for label, y in ys.items():
        for mode, alpha in (("exact", 1.0), ("reference", 0.0)):
            g = grads(jnp.asarray(y, jnp.float32),
                      jnp.asarray(s * (1 - y), jnp.float32), alpha)
            final = [g["final"]["kernel"]] + ([g["final"]["bias"]] if bias else [])
            truth[label, mode] = {"final": np.asarray(g["final"]["kernel"]),
                                  "final_bias": np.concatenate([np.asarray(a) for a in final], -1),
                                  "penultimate": np.asarray(g["penultimate"]["kernel"])}
    return dict(model=model, variables=variables, images=images, out=out, bias=bias, din=din,
                truth=truth, head=P.head_of(variables))


@pytest.fixture(scope="module")
def cases():
    """Din = D with a final bias (reference mode possible), and Din = 4 without a bias."""
    return {"din6-bias": make_case(6, True, 0), "din4": make_case(4, False, 1)}


@pytest.fixture(scope="module")
def case(cases):
    return cases["din6-bias"]


@pytest.mark.parametrize("name", ["din6-bias", "din4"])
def test_pgn_last_layer_equals_autodiff_norm(cases, name):
    case = cases[name]
    z, phi = case["out"]["decoder_logits"], case["out"]["features"]["final_in"]
    for (label, mode), t in case["truth"].items():
        for p in PS:
            got = P.pgn(z, phi, label=label, p=p, mode=mode)
            assert_close(got, np_norm(t["final"], p), err_msg=f"{label} {mode} p={p}")
            if case["bias"]:
                got = P.pgn(z, phi, label=label, p=p, mode=mode, bias=True)
                assert_close(got, np_norm(t["final_bias"], p),
                             err_msg=f"bias {label} {mode} p={p}")


@pytest.mark.parametrize("name", ["din6-bias", "din4"])
def test_pgn_penultimate_exact_equals_autodiff_norm(cases, name):
    case = cases[name]
    out = case["out"]
    for label in P.LABELS:
        want = case["truth"][label, "exact"]["penultimate"]
        for p in PS:
            got = P.pgn_penultimate(out["decoder_logits"], out["features"]["final_in"],
                                    out["features"]["penultimate_in"], case["head"],
                                    label=label, p=p, mode="exact")
            assert_close(got, np_norm(want, p), err_msg=f"{label} p={p}")


def test_reference_penultimate_needs_din_equal_d(cases):
    out = cases["din4"]["out"]
    with pytest.raises(ValueError, match="Din == D"):
        P.pgn_penultimate(out["decoder_logits"], out["features"]["final_in"],
                          out["features"]["penultimate_in"], cases["din4"]["head"],
                          mode="reference")


def test_pgn_penultimate_reference_reproduces_the_published_departures(case):
    out, v = case["out"], case["variables"]
    head, stats = v["params"]["head"], v["batch_stats"]["head"]["penultimate_bn"]
    gamma, beta = (np.asarray(head["penultimate_bn"][k], np.float64) for k in ("scale", "bias"))
    mean, var = (np.asarray(stats[k], np.float64) for k in ("mean", "var"))
    kernel = np.asarray(head["final"]["kernel"], np.float64)[0, 0]           # [D, C]
    psi = np.asarray(out["features"]["penultimate_in"], np.float64)
    padded = np.pad(psi, ((0, 0), (1, 1), (1, 1), (0, 0)))
    hh, ww = psi.shape[1:3]
    patch = np.zeros(psi.shape[:3] + (9 * psi.shape[-1],))
    for b in range(B):                      # the unfold, one pixel at a time
        for i in range(hh):
            for j in range(ww):
                patch[b, i, j] = padded[b, i:i + 3, j:j + 3].ravel()
    relu_mask = ((psi - mean) / np.sqrt(var + 1e-5) * gamma + beta) >= 0     # BN of the input
    s, ys = labels_np(np.asarray(out["decoder_logits"]))
    for label, y in ys.items():
        delta = gamma * relu_mask * ((s * (1 - y)) @ kernel.T)                # γ only
        for p in PS:
            want = np_norm(delta, 0.5) * np_norm(patch, p)                    # ‖δ‖ at p = 0.5
            got = P.pgn_penultimate(out["decoder_logits"], out["features"]["final_in"],
                                    out["features"]["penultimate_in"], case["head"],
                                    label=label, p=p, mode="reference")
            assert_close(got, want, err_msg=f"{label} p={p}")


def upsample_np(x, height, width):
    """Bilinear resize of `[B,h,w,C]` with half-pixel centres (PyTorch align_corners=False)."""
    def weights(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        i1, frac = np.minimum(i0 + 1, n_in - 1), src - i0
        m = np.zeros((n_out, n_in))
        np.add.at(m, (np.arange(n_out), i0), 1 - frac)
        np.add.at(m, (np.arange(n_out), i1), frac)
        return m
    return np.einsum("Yy,Xx,byxc->bYXc", weights(x.shape[1], height), weights(x.shape[2], width), x)


def test_pgn_maps_order_names_and_upsampling(case):
    truth, model, v, images = case["truth"], case["model"], case["variables"], case["images"]
    last = "final_bias"                         # the head has a bias: pgn_maps includes it
    maps = P.pgn_maps(model.apply, v, images)
    assert maps.shape == (B, H, W, 20)
    want = [np_norm(truth[label, "exact"][last], p) for label in P.LABELS for p in PS]
    want += [np_norm(truth[label, "exact"]["penultimate"], p) for label in P.LABELS for p in PS]
    want = upsample_np(np.stack(want, -1), H, W)
    for k, name in enumerate(P.PGN_NAMES):
        assert_close(maps[..., k], want[..., k], err_msg=name)
    assert P.PGN_NAMES == P.pgn_names() and len(P.PGN_NAMES) == 20
    assert P.PGN_NAMES[:2] == ("pgn_oh_p0.1", "pgn_oh_p0.3")
    assert P.PGN_NAMES[4:6] == ("pgn_oh_p2", "pgn_uni_p0.1")
    assert P.PGN_NAMES[9:11] == ("pgn_uni_p2", "pgn_pen_oh_p0.1")
    assert P.PGN_NAMES[15] == "pgn_pen_uni_p0.1" and P.PGN_NAMES[19] == "pgn_pen_uni_p2"
    broken = {**v, "params": {**v["params"], "head": {**v["params"]["head"], "final": {
        **v["params"]["head"]["final"], "bias": jnp.asarray(np.full(C, np.nan, np.float32))}}}}
    with pytest.raises(ValueError, match="NaN or inf"):     # the same program, NaN logits
        P.pgn_maps(model.apply, broken, images, check=True)
    ref = P.pgn_maps(model.apply, v, images, ps=(0.3, 1), mode="reference", penultimate=False)
    assert ref.shape == (B, H, W, 4)
    assert P.pgn_names((0.3, 1), penultimate=False) == (
        "pgn_oh_p0.3", "pgn_oh_p1", "pgn_uni_p0.3", "pgn_uni_p1")
    want = [np_norm(truth[label, "reference"][last], p) for label in P.LABELS for p in (0.3, 1)]
    want = upsample_np(np.stack(want, -1), H, W)
    for k in range(4):
        assert_close(ref[..., k], want[..., k])


@pytest.mark.parametrize("name", ["din6-bias", "din4"])
def test_head_of_reads_the_contract_layout(cases, name):
    case = cases[name]
    v, head = case["variables"], case["head"]
    params = v["params"]["head"]
    np.testing.assert_array_equal(head.final_kernel, params["final"]["kernel"][0, 0])
    assert (head.final_bias is not None) == case["bias"]
    np.testing.assert_array_equal(head.penultimate_kernel, params["penultimate"]["kernel"])
    np.testing.assert_array_equal(head.bn_var, v["batch_stats"]["head"]["penultimate_bn"]["var"])
    assert head.bn_eps == 1e-5 and P.head_of(v, bn_eps=1e-3).bn_eps == 1e-3
    last_only = P.head_of({"params": {"net": {"final": params["final"]}}}, path=("net",))
    assert last_only.penultimate_kernel is None
    with pytest.raises(ValueError, match="no entry 'decoder'"):
        P.head_of(v, path=("decoder",))
    with pytest.raises(ValueError, match="batch_stats"):
        P.head_of({"params": v["params"]})
    with pytest.raises(ValueError, match="penultimate layer"):
        P.pgn_maps(case["model"].apply, v, case["images"], head=last_only)


def test_pnorm_is_stable_where_the_naive_formula_is_not():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 300)) * np.array([[1e-30], [1.0], [1e25], [0.0]])
    x[1, :100] = 0.0
    for p in PS:
        got = np.asarray(P.log_pnorm(jnp.asarray(x, jnp.float32), p))
        want = np.log(np_norm(x[:3], p))          # float64: no over/underflow here
        np.testing.assert_allclose(got[:3], want, rtol=1e-5)
        assert got[3] == -np.inf                  # the zero vector: log 0, no NaN
    np.testing.assert_allclose(P.pnorm(jnp.asarray(x, jnp.float32), 2.0),
                               np.sqrt((x ** 2).sum(-1)), rtol=1e-5)
    naive = np.sum(np.abs(x[0].astype(np.float32)) ** np.float32(2)) ** 0.5
    assert naive == 0.0                           # float32 underflows: why log space


def test_log_output_is_finite_where_the_norm_overflows_float32(case):
    z = case["out"]["decoder_logits"]
    phi = 1e30 * np.random.default_rng(5).uniform(0.5, 1.0, z.shape[:-1] + (D,))
    phi = jnp.asarray(phi, jnp.float32)
    s, ys = labels_np(np.asarray(z))
    for label, y in ys.items():
        want = np.log(np_norm(s - y, 0.1)) + np.log(np_norm(phi, 0.1))
        assert np.all(want > np.log(np.finfo(np.float32).max))
        got = P.pgn(z, phi, label=label, p=0.1, log=True)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert np.all(np.asarray(P.pgn(z, phi, label=label, p=0.1)) == np.inf)


def test_everything_jits_and_vmaps(case):
    out, head = case["out"], case["head"]
    z, phi, psi = (out["decoder_logits"], out["features"]["final_in"],
                   out["features"]["penultimate_in"])
    opts = dict(label="uniform", p=0.3, mode="exact")
    want = P.pgn(z, phi, **opts, bias=True)
    jitted = jax.jit(P.pgn, static_argnames=("label", "p", "mode", "bias"))
    np.testing.assert_allclose(jitted(z, phi, **opts, bias=True), want, rtol=1e-5)
    vmapped = jax.jit(jax.vmap(lambda a, b: P.pgn(a, b, **opts, bias=True)))(z, phi)
    np.testing.assert_allclose(vmapped, want, rtol=1e-5)
    want = P.pgn_penultimate(z, phi, psi, head, **opts)
    jitted = jax.jit(P.pgn_penultimate, static_argnames=("label", "p", "mode"))
    np.testing.assert_allclose(jitted(z, phi, psi, head, **opts), want, rtol=1e-5)
    vmapped = jax.jit(jax.vmap(lambda a, b, c: P.pgn_penultimate(a, b, c, head, **opts)))(
        z, phi, psi)
    np.testing.assert_allclose(vmapped, want, rtol=1e-5)
    logged = P.pgn_penultimate(z, phi, psi, head, **opts, log=True)
    np.testing.assert_allclose(np.exp(logged), want, rtol=1e-5)


def test_bad_input_raises_clear_errors(case):
    out, head = case["out"], case["head"]
    z, phi, psi = (out["decoder_logits"], out["features"]["final_in"],
                   out["features"]["penultimate_in"])
    with pytest.raises(ValueError, match="share"):
        P.pgn(out["logits"], phi)                                  # upsampled logits
    with pytest.raises(ValueError, match="share"):
        P.pgn_penultimate(z, phi, psi[:, :-1], head)
    for p in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="p must be a finite number > 0"):
            P.pgn(z, phi, p=p)
    with pytest.raises(ValueError, match="static"):
        jax.jit(lambda p: P.pgn(z, phi, p=p))(0.5)
    with pytest.raises(ValueError, match="label must be one of"):
        P.pgn(z, phi, label="soft")
    with pytest.raises(ValueError, match="mode must be one of"):
        P.pgn_penultimate(z, phi, psi, head, mode="paper")
    bad = np.array(z)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="logits must be finite"):
        P.pgn(bad, phi)
    with pytest.raises(ValueError, match="logits must be finite"):
        P.pgn(jnp.asarray(bad), phi, check=True)
    with pytest.raises(ValueError, match="final_in must have D"):
        P.pgn_penultimate(z, phi[..., :-1], psi, head)
    even = head._replace(penultimate_kernel=jnp.zeros((2, 2) + head.penultimate_kernel.shape[2:]))
    with pytest.raises(ValueError, match="odd square"):
        P.pgn_penultimate(z, phi, psi, even)
    with pytest.raises(ValueError, match="PgnHead"):
        P.pgn_penultimate(z, phi, psi, dict(head._asdict()))
    with pytest.raises(ValueError, match="ps must name"):
        P.pgn_maps(case["model"].apply, case["variables"], case["images"], ps=())
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        P.pgn_maps(case["model"].apply, case["variables"], case["images"][..., :1])
