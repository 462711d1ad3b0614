"""Photometric losses against hand-computed cases, and warping of procedural frames with
the true depth and pose (the whole self-supervised loss path, flips included)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import geometry
from jaxdepth.data.synthetic import sample_batch
from jaxdepth.losses import min_reprojection, photometric_error, smoothness, ssim
from jaxdepth.train import selfsup

C1, C2 = 0.01 ** 2, 0.03 ** 2


def _ssim_loop(x, y):
    """SSIM by explicit loops over pixels and 3×3 reflection-padded windows."""
    b, h, w, c = x.shape
    out = np.zeros_like(x, dtype=np.float64)
    refl = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                rows = [refl(i + d, h) for d in (-1, 0, 1)]
                cols = [refl(j + d, w) for d in (-1, 0, 1)]
                wx = x[n][np.ix_(rows, cols)].astype(np.float64)  # [3,3,C]
                wy = y[n][np.ix_(rows, cols)].astype(np.float64)
                mx, my = wx.mean((0, 1)), wy.mean((0, 1))
                vx = (wx ** 2).mean((0, 1)) - mx ** 2
                vy = (wy ** 2).mean((0, 1)) - my ** 2
                cxy = (wx * wy).mean((0, 1)) - mx * my
                out[n, i, j] = ((2 * mx * my + C1) * (2 * cxy + C2)
                                / ((mx ** 2 + my ** 2 + C1) * (vx + vy + C2)))
    return out


def test_ssim_matches_a_numpy_loop():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 5, 6, 3)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
    np.testing.assert_allclose(np.asarray(ssim(x, y)), _ssim_loop(x, y), atol=2e-5)
    np.testing.assert_allclose(np.asarray(ssim(x, x)), 1.0, atol=1e-5)
    # a target broadcast against several predictions gives the same maps
    stacked = np.stack([y, x])
    np.testing.assert_allclose(np.asarray(ssim(stacked, x))[0], np.asarray(ssim(y, x)), atol=1e-6)


def test_photometric_error_of_constant_images_by_hand():
    a, b = 0.5, 0.7
    pred = np.full((1, 4, 4, 3), a, np.float32)
    target = np.full((1, 4, 4, 3), b, np.float32)
    s = (2 * a * b + C1) / (a * a + b * b + C1)  # σ terms vanish: (2σxy + C2)/(σx+σy+C2) = 1
    expected = 0.85 * (1 - s) / 2 + 0.15 * abs(a - b)
    pe = np.asarray(photometric_error(pred, target))
    assert pe.shape == (1, 4, 4, 1)
    # float32 window variances mean(x²) − μ² cancel to ~1e-7, not exactly 0 (vs C2 = 9e-4)
    np.testing.assert_allclose(pe, expected, rtol=2e-3)
    np.testing.assert_allclose(np.asarray(photometric_error(pred, target, alpha=0.0)), 0.2, rtol=1e-6)
    # channel average: an error in one channel of three counts a third
    pred2 = target.copy()
    pred2[..., 0] = a
    l1 = np.asarray(photometric_error(pred2, target, alpha=0.0))
    np.testing.assert_allclose(l1, 0.2 / 3, rtol=1e-5)


def test_dssim_is_clamped_to_0_1():
    x = np.zeros((1, 3, 3, 1), np.float32)
    x[0, 1, 1] = 1.0
    y = 1.0 - x  # anti-correlated: SSIM < 0 but (1 − SSIM)/2 stays ≤ 1
    pe = np.asarray(photometric_error(x, y, alpha=1.0))
    assert (pe <= 1.0).all() and (pe > 0.5).any()


def test_min_reprojection_and_automask_by_hand():
    rep = [np.array([0.10, 0.30, 0.20, 0.50], np.float32).reshape(1, 1, 4, 1),
           np.array([0.40, 0.25, 0.60, 0.45], np.float32).reshape(1, 1, 4, 1)]
    ident = [np.array([0.20, 0.05, 0.70, 0.90], np.float32).reshape(1, 1, 4, 1),
             np.array([0.30, 0.50, 0.15, 0.80], np.float32).reshape(1, 1, 4, 1)]
    m, mask = min_reprojection(rep, ident, noise=0.0)
    np.testing.assert_allclose(np.asarray(m).ravel(), [0.10, 0.05, 0.15, 0.45], rtol=1e-6)
    assert np.asarray(mask).ravel().tolist() == [True, False, False, True]
    # without identities: the plain per-pixel minimum, everything trained
    m2, mask2 = min_reprojection(np.concatenate(rep, -1))
    np.testing.assert_allclose(np.asarray(m2).ravel(), [0.10, 0.25, 0.20, 0.45], rtol=1e-6)
    assert np.asarray(mask2).all()
    # exact ties between identity and reprojection are broken by 1e-5·N(0,1) noise
    tie = np.full((2, 8, 8, 1), 0.3, np.float32)
    m3, mask3 = min_reprojection([tie], [tie], rng=jax.random.PRNGKey(0))
    assert np.abs(np.asarray(m3) - 0.3).max() < 1e-4
    frac = np.asarray(mask3).mean()
    assert 0.2 < frac < 0.8  # the noise, not the order, decides
    with pytest.raises(ValueError, match="rng"):
        min_reprojection([tie], [tie])


def test_smoothness_by_hand():
    disp = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], np.float32).reshape(1, 2, 3, 1)
    flat = np.zeros((1, 2, 3, 3), np.float32)
    # d* = d / mean(d) = [.5, 1, 1.5]: |∂x d*| = 0.5 everywhere, ∂y d* = 0
    assert float(smoothness(disp, flat)) == pytest.approx(0.5, rel=1e-6)
    # an image edge between columns 1 and 2 (all channels +1) damps that gradient by e^-1
    edge = flat.copy()
    edge[:, :, 2] = 1.0
    assert float(smoothness(disp, edge)) == pytest.approx(0.5 * (1 + math.exp(-1)) / 2, rel=1e-6)
    # channel-averaged image gradient; the normalisation makes the loss scale-free
    edge1 = flat.copy()
    edge1[:, :, 2, 0] = 3.0
    assert float(smoothness(disp, edge1)) == pytest.approx(0.5 * (1 + math.exp(-1)) / 2, rel=1e-6)
    assert float(smoothness(10 * disp, edge)) == pytest.approx(float(smoothness(disp, edge)), rel=1e-5)
    vertical = np.transpose(disp, (0, 2, 1, 3))
    assert float(smoothness(vertical, np.zeros((1, 3, 2, 3), np.float32))) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def scenes():
    keys = ("image", "depth", "frames", "poses", "K", "image_right", "stereo_T")
    # 64×208 shares the compiled renderer with tests/test_synthetic.py
    b = jax.tree.map(np.asarray, sample_batch(np.arange(4), height=64, width=208, keys=keys))
    b["depth_sky"] = np.where(b["depth"] > 0, b["depth"], 1e4).astype(np.float32)  # sky: far
    return b


@pytest.mark.slow
def test_true_depth_and_pose_reconstruct_frame_0(scenes):
    b = scenes
    near = (b["depth"] > 0) & (b["depth"] < 10)
    for f in (-1, 1):
        errs = {}
        for name, T in (("true", b["poses"][f]), ("identity", np.tile(np.eye(4), (4, 1, 1))),
                        ("wrong", b["poses"][-f])):
            warped, valid = geometry.warp(b["frames"][f], b["depth_sky"], b["K"], T)
            pe = np.asarray(photometric_error(warped, b["image"]))
            m = np.asarray(valid) & (b["depth"] > 0)
            errs[name] = np.median(pe[m])
            if name == "true":
                # near surfaces match to the 10-bit quantisation; far texture loses
                # sub-pixel detail to the renderer's antialiasing and bilinear resampling
                assert np.median(pe[m & near]) < 0.006
        assert errs["true"] < 0.03
        assert errs["identity"] > 4 * errs["true"] and errs["wrong"] > 4 * errs["true"]


@pytest.mark.slow
def test_loss_path_with_flips_uses_mirrored_intrinsics_and_stereo(scenes):
    """`prepare_inputs` + `photometric_terms` with the true depth: the known stereo
    transform and K are adjusted for flipped samples, so flipped and unflipped samples
    reconstruct equally well; a pose mirrored like the flipped frames also does."""
    b = scenes
    prepare = jax.jit(selfsup.prepare_inputs,
                      static_argnames=("frame_ids", "augment", "stereo_baseline"))
    terms_fn = jax.jit(selfsup.photometric_terms, static_argnames=("alpha", "automask"))
    batch = {k: b[k] for k in ("image", "K", "frames", "image_right", "stereo_T")}
    key = next(k for k in (jax.random.PRNGKey(i) for i in range(50))
               if 0 < int(np.asarray(jax.random.bernoulli(jax.random.split(k)[0], 0.5, (4,))).sum()) < 4)
    for baseline in (None, 0.1):  # metric, and Monodepth2's 0.1 convention (depth × 0.1/0.54)
        inputs = prepare(batch, key, frame_ids=(-1, 1, "s"), augment=True,
                         stereo_baseline=baseline)
        flip = np.asarray(inputs["flip"])
        assert 0 < flip.sum() < 4
        depth = np.where(flip[:, None, None, None], b["depth_sky"][:, :, ::-1], b["depth_sky"])
        gt = np.where(flip[:, None, None, None], b["depth"][:, :, ::-1], b["depth"])
        scale = 1.0 if baseline is None else baseline / 0.54
        mirror = np.diag([-1.0, 1, 1, 1]).astype(np.float32)
        poses = [np.where(flip[:, None, None], mirror @ b["poses"][f] @ mirror, b["poses"][f])
                 for f in (-1, 1)]
        for T in poses:  # a pose network in depth units of this scale
            T[:, :3, 3] *= scale
        scales = [{"disp": jnp.asarray(1.0 / (scale * depth)), "raw": jnp.zeros_like(depth)}]
        for ids, transforms in (((-1, 1), poses), (("s",), [inputs["stereo_T"]])):
            sub = dict(inputs, sources=[inputs["sources"][(-1, 1, "s").index(i)] for i in ids])
            terms = terms_fn(scales, sub, transforms, jax.random.PRNGKey(0), automask=False)
            pe = np.asarray(terms["min_reprojection"][0])
            for sel in (flip, ~flip):
                m = (gt > 0)[sel]
                assert np.median(pe[sel][m]) < 0.02, (ids, baseline, sel)
    # without the flip adjustment of K and the stereo transform, flipped samples fail
    unflipped_T = np.tile(np.eye(4, dtype=np.float32), (4, 1, 1))
    unflipped_T[:, 0, 3] = -0.1
    wrong = dict(inputs, K=jnp.asarray(b["K"]), sources=[inputs["sources"][2]])
    terms = terms_fn(scales, wrong, [unflipped_T], jax.random.PRNGKey(0), automask=False)
    pe = np.asarray(terms["min_reprojection"][0])
    assert np.median(pe[flip][(gt > 0)[flip]]) > 3 * np.median(pe[~flip][(gt > 0)[~flip]])
