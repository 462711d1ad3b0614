"""Gradient uncertainty against independent computations (finite differences,
NumPy re-implementations of each step, symmetry and batch-invariance)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import uncertainty as U
from jaxdepth.models import DepthNet
from jaxdepth.uncertainty.transforms import rotate

H, W = 64, 64


@pytest.fixture(scope="module")
def net():
    model = DepthNet(width=0.125, log_sigma=True)
    variables = model.init_variables(jax.random.PRNGKey(0), H, W)
    images = jax.random.uniform(jax.random.PRNGKey(1), (3, H, W, 3))
    return model.apply, variables, images


def symmetric_model(variables, images, offsets=None):
    """A plain-JAX model exactly equivariant to horizontal flips: 1×1 conv, then a
    3×3 conv whose kernel is mirror-symmetric left-right."""
    offsets = offsets or {}
    a = images @ variables["w1"] + offsets.get("f1", 0.0)
    k = variables["k"]
    k = 0.5 * (k + k[:, ::-1])
    b = jax.lax.conv_general_dilated(jnp.tanh(a), k, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    b = b + offsets.get("f2", 0.0)
    depth = jax.nn.softplus(b) + 0.1
    return {"depth": depth, "disp": 1.0 / depth, "features": {"f1": a, "f2": b}}


def toy_model(variables, images, offsets=None):
    """A small plain-JAX depth model with taps at 1/4 and 1/2 resolution and a log σ
    head: options are model-agnostic, and this compiles in a fraction of a second."""
    offsets = offsets or {}
    conv = lambda x, k, s: jax.lax.conv_general_dilated(
        x, k, (s, s), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    a = conv(images, variables["k1"], 4) + offsets.get("dec4", 0.0)
    b = conv(jnp.repeat(jnp.repeat(jnp.tanh(a), 2, 1), 2, 2), variables["k2"], 1)
    b = b + offsets.get("dec6", 0.0)
    up = jnp.repeat(jnp.repeat(jnp.tanh(b), 2, 1), 2, 2)
    depth = jax.nn.softplus(conv(up, variables["k3"], 1)) + 0.1
    return {"depth": depth, "disp": 1.0 / depth, "log_sigma": conv(up, variables["k4"], 1),
            "features": {"dec4": a, "dec6": b}}


def toy_variables():
    keys = jax.random.split(jax.random.PRNGKey(11), 4)
    shapes = [(3, 3, 3, 6), (3, 3, 6, 5), (3, 3, 5, 1), (3, 3, 5, 1)]
    return {f"k{i + 1}": 0.5 * jax.random.normal(k, s) for i, (k, s) in enumerate(zip(keys, shapes))}


def symmetric_variables():
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    return {"w1": jax.random.normal(k1, (3, 4)), "k": jax.random.normal(k2, (3, 3, 4, 1))}


@pytest.mark.slow
def test_gradient_matches_finite_differences(net):
    apply_fn, variables, images = net
    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda x: x.astype(jnp.float64), variables)
        x64 = images[:2].astype(jnp.float64)
        apply_fn = jax.jit(apply_fn)
        for reference, weight in [("flip", 2.0), ("rot", 0.0), ("var", 0.0)]:
            depth, grads, loss = U.feature_gradients(apply_fn, v64, x64, taps=("dec6", "dec9"),
                                                     reference=reference, variance_weight=weight)
            refs_out = apply_fn(v64, x64)
            shapes = {t: refs_out["features"][t].shape for t in ("dec6", "dec9")}
            direction = {t: jax.random.normal(jax.random.PRNGKey(i), s, jnp.float64)
                         for i, (t, s) in enumerate(shapes.items())}

            def total_loss(eps):
                # the reference prediction is held fixed: evaluate it without offsets
                offs = {t: eps * d for t, d in direction.items()}
                return _loss_with_fixed_reference(apply_fn, v64, x64, offs, reference, weight)

            eps = 1e-4
            fd = (total_loss(eps) - total_loss(-eps)) / (2 * eps)
            analytic = sum(float(jnp.vdot(grads[t], direction[t])) for t in direction)
            np.testing.assert_allclose(analytic, fd, rtol=1e-5, err_msg=reference)
            np.testing.assert_allclose(float(loss.sum()), total_loss(0.0), rtol=1e-9)


def _loss_with_fixed_reference(apply_fn, variables, images, offsets, reference, weight):
    """Independent NumPy computation of the summed per-image auxiliary loss."""
    out = apply_fn(variables, images, offsets)
    d = np.asarray(out["depth"])
    b = images.shape[0]
    if reference == "flip":
        ref = np.asarray(apply_fn(variables, images[:, :, ::-1])["depth"])[:, :, ::-1]
        per = ((d - ref) ** 2).mean(axis=(1, 2, 3))
    elif reference == "gray":
        g = np.asarray(images) @ np.array([0.2989, 0.587, 0.114])
        ref = np.asarray(apply_fn(variables, jnp.asarray(np.repeat(g[..., None], 3, -1)))["depth"])
        per = ((d - ref) ** 2).mean(axis=(1, 2, 3))
    elif reference == "rot":
        rotated, _ = rotate(images, 10.0)
        back, valid = rotate(apply_fn(variables, rotated)["depth"], -10.0)
        valid = np.broadcast_to(np.asarray(valid), d.shape)
        per = np.array([((d[i] - np.asarray(back)[i]) ** 2)[valid[i]].mean() for i in range(b)])
    elif reference == "var":
        preds, masks = [d], [np.ones_like(d, bool)]
        preds.append(np.asarray(apply_fn(variables, images[:, :, ::-1])["depth"])[:, :, ::-1])
        g = np.asarray(images) @ np.array([0.2989, 0.587, 0.114])
        preds.append(np.asarray(apply_fn(variables, jnp.asarray(np.repeat(g[..., None], 3, -1)))["depth"]))
        noise_key = jax.random.fold_in(jax.random.PRNGKey(0), 2)
        noisy = images + 0.01 * jax.random.normal(noise_key, images.shape, images.dtype)
        preds.append(np.asarray(apply_fn(variables, noisy)["depth"]))
        back, valid = rotate(apply_fn(variables, rotate(images, 10.0)[0])["depth"], -10.0)
        preds.append(np.asarray(back))
        masks += [np.ones_like(d, bool)] * 3 + [np.broadcast_to(np.asarray(valid), d.shape)]
        p, m = np.stack(preds), np.stack(masks)
        per = np.zeros(b)
        for i in range(b):
            for (y, x) in np.ndindex(H, W):
                vals = p[m[:, i, y, x, 0], i, y, x, 0]
                per[i] += vals.var(ddof=1)
            per[i] /= H * W
    if weight:
        per = per + weight * (np.exp(np.asarray(out["log_sigma"])) ** 2).mean(axis=(1, 2, 3))
    return float(per.sum())


def test_flip_equivariant_model_has_zero_flip_uncertainty():
    images = jax.random.uniform(jax.random.PRNGKey(4), (2, 16, 24, 3))
    # 1×1 kernel: every pixel is computed by the same arithmetic, so the model is
    # flip-equivariant bit for bit and everything is exactly zero.
    exact = dict(symmetric_variables(), k=symmetric_variables()["k"][1:2, 1:2])
    _, grads, loss = U.feature_gradients(symmetric_model, exact, images, taps=("f1", "f2"))
    assert float(jnp.abs(loss).max()) == 0.0
    assert float(jnp.abs(grads["f1"]).max()) == 0.0 and float(jnp.abs(grads["f2"]).max()) == 0.0
    est = U.gradient_uncertainty(symmetric_model, exact, images, taps=("f1", "f2"))
    assert float(jnp.abs(est.uncertainty).max()) == 0.0
    # a mirror-symmetric 3×3 kernel is equivariant up to float rounding: the raw
    # gradients are rounding noise, far below those of a non-invariant reference
    variables = symmetric_variables()
    flipped_back = symmetric_model(variables, images[:, :, ::-1])["depth"][:, :, ::-1]
    np.testing.assert_allclose(symmetric_model(variables, images)["depth"], flipped_back, atol=1e-6)
    flip = U.gradient_uncertainty(symmetric_model, variables, images, taps=("f1",),
                                  normalize=False, absolute=True)
    gray = U.gradient_uncertainty(symmetric_model, variables, images, taps=("f1",),
                                  normalize=False, absolute=True, reference="gray")
    assert float(flip.uncertainty.max()) < 1e-4 * float(gray.uncertainty.max())


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["flip", "rot", "gt"])
def test_batch_of_eight_equals_eight_batches_of_one(net, reference):
    apply_fn, variables, _ = net
    images = jax.random.uniform(jax.random.PRNGKey(7), (8, H, W, 3))
    gt = jax.random.uniform(jax.random.PRNGKey(8), (8, H, W, 1), minval=1.0, maxval=50.0)
    kw = dict(reference=reference, taps=("dec6", "dec8"), depth_gt=gt if reference == "gt" else None)
    batched = U.gradient_uncertainty(apply_fn, variables, images, **kw)
    for i in range(8):
        kw1 = dict(kw, depth_gt=gt[i:i + 1] if reference == "gt" else None)
        single = U.gradient_uncertainty(apply_fn, variables, images[i:i + 1], **kw1)
        np.testing.assert_allclose(batched.uncertainty[i], single.uncertainty[0], atol=2e-5)
        np.testing.assert_allclose(batched.depth[i], single.depth[0], rtol=1e-5)


@pytest.mark.slow
def test_each_option_changes_what_it_should():
    apply_fn, variables = toy_model, toy_variables()
    images = jax.random.uniform(jax.random.PRNGKey(1), (3, H, W, 3))
    depth, grads, _ = U.feature_gradients(apply_fn, variables, images, taps=("dec4", "dec6"))
    g6 = np.asarray(grads["dec6"])
    h6, w6 = g6.shape[1:3]

    def raw(**kw):
        return np.asarray(U.gradient_uncertainty(apply_fn, variables, images, normalize=False,
                                                 upsample="nearest", **kw).uncertainty)

    def up(m):  # nearest ×(H/h) upsampling in NumPy
        return np.repeat(np.repeat(m, H // m.shape[1], 1), W // m.shape[2], 2)

    def close(got, want):  # separately compiled programs differ by float rounding
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())

    close(raw(), up(g6.max(-1, keepdims=True)))
    close(raw(reduce="sum"), up(g6.sum(-1, keepdims=True)))
    close(raw(reduce="mean"), up(g6.mean(-1, keepdims=True)))
    close(raw(reduce="norm"), up(np.linalg.norm(g6, axis=-1, keepdims=True)))
    close(raw(absolute=True), up(np.abs(g6).max(-1, keepdims=True)))

    def minmax(m):
        lo = m.min(axis=(1, 2, 3), keepdims=True)
        hi = m.max(axis=(1, 2, 3), keepdims=True)
        return (m - lo) / (hi - lo)

    u6 = minmax(g6.max(-1, keepdims=True))
    nearest = U.gradient_uncertainty(apply_fn, variables, images, upsample="nearest")
    np.testing.assert_allclose(nearest.uncertainty, up(u6), atol=1e-5)
    np.testing.assert_allclose(nearest.depth, depth, rtol=1e-6)
    bilinear = U.gradient_uncertainty(apply_fn, variables, images)
    want = jax.image.resize(jnp.asarray(u6), (3, H, W, 1), "bilinear")
    np.testing.assert_allclose(bilinear.uncertainty, want, atol=1e-5)
    assert float(bilinear.uncertainty.min()) >= 0.0 and float(bilinear.uncertainty.max()) <= 1.0

    u4 = up(minmax(np.asarray(grads["dec4"]).max(-1, keepdims=True)))
    for how, fn in [("std", np.std), ("mean", np.mean), ("max", np.max)]:
        est = U.gradient_uncertainty(apply_fn, variables, images, taps=("dec4", "dec6"),
                                     aggregate=how, upsample="nearest")
        np.testing.assert_allclose(est.uncertainty, fn(np.stack([u4, up(u6)]), axis=0), atol=1e-5)

    # the variance term changes the gradient by exactly λ·∂mean(σ²)/∂a
    _, g_w, _ = U.feature_gradients(apply_fn, variables, images, variance_weight=2.0)
    _, g_sig, _ = U.feature_gradients(apply_fn, variables, images, reference="gt",
                                      depth_gt=depth, variance_weight=2.0)  # d − d_ref = 0
    close(g_w["dec6"] - grads["dec6"], g_sig["dec6"])
    assert float(jnp.abs(g_sig["dec6"]).max()) > 0

    # batching the reference with the original is an implementation detail
    for batched in (True, False):  # the default is the backend's faster form
        sep = U.gradient_uncertainty(apply_fn, variables, images, batch_reference=batched)
        np.testing.assert_allclose(sep.uncertainty, bilinear.uncertainty, atol=1e-5)

    # noise depends on the rng, not on anything else
    n1 = U.gradient_uncertainty(apply_fn, variables, images, reference="noise",
                                rng=jax.random.PRNGKey(1))
    n2 = U.gradient_uncertainty(apply_fn, variables, images, reference="noise",
                                rng=jax.random.PRNGKey(2))
    n1b = U.gradient_uncertainty(apply_fn, variables, images, reference="noise",
                                 rng=jax.random.PRNGKey(1))
    np.testing.assert_array_equal(n1.uncertainty, n1b.uncertainty)
    assert not np.allclose(n1.uncertainty, n2.uncertainty)


@pytest.mark.slow
def test_gt_reference_masks_invalid_ground_truth(net):
    apply_fn, variables, images = net
    depth = apply_fn(variables, images)["depth"]
    gt = np.array(depth) * 1.3
    gt[:, :10] = 0.0
    gt[:, 10:12] = np.nan
    _, _, loss = U.feature_gradients(apply_fn, variables, images, reference="gt",
                                     depth_gt=jnp.asarray(gt))
    valid = np.isfinite(gt) & (gt > 0)
    want = [((np.asarray(depth)[i] - gt[i]) ** 2)[valid[i]].mean() for i in range(3)]
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    est = U.gradient_uncertainty(apply_fn, variables, images, reference="gt", depth_gt=jnp.asarray(gt))
    assert np.isfinite(np.asarray(est.uncertainty)).all()


def test_rotation_reference_marks_pixels_without_prediction():
    x = jnp.arange(2 * 32 * 48 * 1, dtype=jnp.float32).reshape(2, 32, 48, 1)
    rotated, valid = rotate(x, 10.0)
    assert valid.shape == (1, 32, 48, 1)
    assert not bool(valid[0, 0, 0, 0]) and bool(valid[0, 16, 24, 0])
    np.testing.assert_array_equal(np.asarray(rotated)[~np.broadcast_to(valid, rotated.shape)], 0.0)
    back, valid_back = rotate(rotated, -10.0)
    core = np.zeros((32, 48), bool)
    core[8:24, 12:36] = True
    np.testing.assert_allclose(np.asarray(back)[:, core], np.asarray(x)[:, core], rtol=0.02)
    np.testing.assert_array_equal(np.asarray(rotate(x, 0.0)[0]), np.asarray(x))


@pytest.mark.slow
def test_sharded_batch_gives_the_same_maps(net):
    apply_fn, variables, _ = net
    n = len(jax.devices())
    assert n >= 2, "tests run on simulated CPU devices (see conftest.py)"
    images = jax.random.uniform(jax.random.PRNGKey(9), (4 * n, H, W, 3))
    mesh = jax.make_mesh((n,), ("data",))
    sharded = jax.device_put(images, jax.NamedSharding(mesh, jax.P("data")))
    replicated = jax.device_put(variables, jax.NamedSharding(mesh, jax.P()))
    one = U.gradient_uncertainty(apply_fn, variables, images)
    many = U.gradient_uncertainty(apply_fn, replicated, sharded)
    assert len(many.uncertainty.sharding.device_set) == n
    np.testing.assert_allclose(many.uncertainty, one.uncertainty, atol=1e-5)
    np.testing.assert_allclose(many.depth, one.depth, rtol=1e-5)


def test_bad_inputs_get_clear_errors(net):
    apply_fn, variables, images = net
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        U.gradient_uncertainty(apply_fn, variables, images[..., :2])
    with pytest.raises(ValueError, match="uint8"):
        U.gradient_uncertainty(apply_fn, variables, np.zeros((1, H, W, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        U.gradient_uncertainty(apply_fn, variables, np.full((1, H, W, 3), 255.0, np.float32))
    with pytest.raises(ValueError, match="reference"):
        U.gradient_uncertainty(apply_fn, variables, images, reference="mirror")
    with pytest.raises(ValueError, match="depth_gt"):
        U.gradient_uncertainty(apply_fn, variables, images, reference="gt")
    with pytest.raises(ValueError, match="dec42"):
        U.gradient_uncertainty(apply_fn, variables, images, taps=("dec42",))
    with pytest.raises(ValueError, match="log_sigma"):
        U.gradient_uncertainty(symmetric_model, symmetric_variables(),
                               jnp.zeros((1, 8, 8, 3)), taps=("f2",), variance_weight=2.0)
