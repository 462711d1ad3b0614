"""Depth metrics against NumPy formulas, masks, NaN handling and the KITTI helpers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth.metrics import (
    METRIC_NAMES,
    a1,
    abs_rel,
    batch_depth_metrics,
    clamp,
    depth_metrics,
    garg_crop_mask,
    masked_percentile,
    mean_over_images,
    median_scale,
    rmse,
    silog,
)


def numpy_metrics(gt, pred, mask=None):
    """Eigen/Monodepth2 formulas, silog as the KITTI devkit, on gt[mask] in float64."""
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(gt) & (gt > 0)
    if mask is not None:
        valid &= np.asarray(mask, bool)
    g, p = gt[valid], pred[valid]
    thresh = np.maximum(g / p, p / g)
    d = np.log(p) - np.log(g)
    return {
        "abs_rel": np.mean(np.abs(g - p) / g),
        "sq_rel": np.mean((g - p) ** 2 / g),
        "rmse": np.sqrt(np.mean((g - p) ** 2)),
        "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
        "a1": np.mean(thresh < 1.25),
        "a2": np.mean(thresh < 1.25**2),
        "a3": np.mean(thresh < 1.25**3),
        "silog": np.sqrt(np.mean(d**2) - np.mean(d) ** 2) * 100,
    }


def random_batch(seed, b=3, h=8, w=11):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(1.0, 80.0, (b, h, w))
    pred = gt * rng.uniform(0.5, 2.2, (b, h, w))  # spans all three δ thresholds
    gt[:, 0, :4] = 0.0
    gt[:, 2, :3] = np.nan
    mask = rng.uniform(size=(b, h, w)) > 0.3
    return gt.astype(np.float32), pred.astype(np.float32), mask


def test_depth_metrics_match_numpy_formulas():
    gt, pred, mask = random_batch(0)
    for m in (None, mask[0]):
        ref = numpy_metrics(gt[0], pred[0], m)
        out = depth_metrics(gt[0], pred[0], m)
        assert set(out) == set(METRIC_NAMES)
        for k in METRIC_NAMES:
            np.testing.assert_allclose(out[k], ref[k], rtol=2e-5, err_msg=k)
    # Single-metric functions, trailing channel, JAX inputs.
    ref = numpy_metrics(gt[0], pred[0], mask[0])
    args = (jnp.asarray(gt[0])[..., None], jnp.asarray(pred[0])[..., None], mask[0][..., None])
    for fn in (abs_rel, rmse, a1, silog):
        np.testing.assert_allclose(fn(*args), ref[fn.__name__], rtol=2e-5)


def test_silog_is_scale_invariant_and_kitti_formula():
    gt, pred, _ = random_batch(1, b=1)
    # silog = 100 sqrt(mean(e^2) - mean(e)^2), e = log p - log g: a global scale on the
    # prediction shifts e by a constant and leaves silog unchanged; rmse_log changes.
    a = depth_metrics(gt[0], pred[0])
    b = depth_metrics(gt[0], 3.0 * pred[0])
    np.testing.assert_allclose(a["silog"], b["silog"], rtol=1e-4)
    assert abs(float(a["rmse_log"]) - float(b["rmse_log"])) > 0.1
    assert float(depth_metrics(gt[0], 2.0 * np.nan_to_num(gt[0], nan=1.0))["silog"]) < 1e-2


def test_batch_is_per_image_with_own_masks_and_jittable():
    gt, pred, mask = random_batch(2)
    out = jax.jit(batch_depth_metrics)(gt[..., None], pred[..., None], mask)
    for i in range(3):
        ref = numpy_metrics(gt[i], pred[i], mask[i])
        for k in METRIC_NAMES:
            assert out[k].shape == (3,)
            np.testing.assert_allclose(out[k][i], ref[k], rtol=2e-5, err_msg=k)


def test_invalid_pixels_never_enter_even_if_user_mask_says_so():
    gt, pred, _ = random_batch(3, b=1)
    everything = np.ones(gt.shape[1:], bool)  # the user mask includes the zero/NaN pixels
    out = depth_metrics(gt[0], pred[0], everything)
    ref = numpy_metrics(gt[0], pred[0])
    for k in METRIC_NAMES:
        assert np.isfinite(out[k])
        np.testing.assert_allclose(out[k], ref[k], rtol=2e-5)


def test_image_without_valid_pixel_is_nan_and_skipped_in_the_mean():
    gt, pred, mask = random_batch(4)
    gt[1] = np.nan
    out = batch_depth_metrics(gt, pred, mask)
    assert all(np.isnan(out[k][1]) for k in METRIC_NAMES)
    with pytest.warns(RuntimeWarning, match="skipped 1 of 3"):
        mean = mean_over_images(out)
    for k in METRIC_NAMES:
        np.testing.assert_allclose(mean[k], (out[k][0] + out[k][2]) / 2, rtol=1e-6)
    # A list of per-image dicts gives the same; with nothing to average, NaN.
    per_image = [depth_metrics(gt[i], pred[i], mask[i]) for i in range(3)]
    with pytest.warns(RuntimeWarning):
        assert mean_over_images(per_image) == pytest.approx(mean)
    with pytest.warns(RuntimeWarning, match="skipped 1 of 1"):
        assert np.isnan(mean_over_images([per_image[1]])["rmse"])


def test_masked_percentile_and_median_scale():
    rng = np.random.default_rng(5)
    x = rng.uniform(size=(6, 7))
    mask = rng.uniform(size=(6, 7)) > 0.5
    q = np.array([0.0, 10.0, 50.0, 73.0, 100.0])
    np.testing.assert_allclose(masked_percentile(x, mask, q), np.percentile(x[mask], q),
                               rtol=1e-6)
    one = np.zeros((6, 7), bool)
    one[2, 3] = True
    np.testing.assert_allclose(masked_percentile(x, one, q), x[2, 3], rtol=1e-6)
    assert np.all(np.isnan(masked_percentile(x, np.zeros((6, 7), bool), q)))

    gt, pred, mask = random_batch(6, b=2)
    valid = np.isfinite(gt) & (gt > 0) & mask
    if valid[0].sum() % 2 == valid[1].sum() % 2:  # one odd, one even count of valid pixels
        mask[1, 5, 5], valid[1, 5, 5] = False, False
    assert valid[0].sum() % 2 != valid[1].sum() % 2
    batched = jax.vmap(median_scale)(gt, pred, mask)
    for i in range(2):
        ref = np.median(gt[i][valid[i]]) / np.median(pred[i][valid[i]])
        np.testing.assert_allclose(median_scale(gt[i], pred[i], mask[i]), ref, rtol=1e-6)
        np.testing.assert_allclose(batched[i], ref, rtol=1e-6)
    assert np.isnan(median_scale(np.zeros((3, 3)), np.ones((3, 3))))


def test_garg_crop_mask_bounds():
    for h, w in [(375, 1242), (370, 1226), (192, 640)]:
        top, bottom, left, right = np.array(
            [0.40810811 * h, 0.99189189 * h, 0.03594771 * w, 0.96405229 * w]).astype(np.int32)
        m = garg_crop_mask(h, w)
        assert m.shape == (h, w) and m.dtype == bool
        rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (top, bottom, left, right)
        assert m.sum() == (bottom - top) * (right - left)
    assert tuple(np.nonzero(garg_crop_mask(375, 1242).any(1))[0][[0, -1]]) == (153, 370)


def test_clamp():
    x = jnp.array([0.0, 5e-4, 1.0, 79.0, 120.0])
    np.testing.assert_allclose(clamp(x), [1e-3, 1e-3, 1.0, 79.0, 80.0])
    np.testing.assert_allclose(clamp(x, 1e-3, 10.0), [1e-3, 1e-3, 1.0, 10.0, 10.0])


def test_shape_errors_name_the_expected_shape():
    a = np.ones((4, 5))
    with pytest.raises(ValueError, match=r"\[H, W\].*batch"):
        depth_metrics(np.ones((2, 4, 5)), np.ones((2, 4, 5)))
    with pytest.raises(ValueError, match=r"pred .*\[H, W\]"):
        depth_metrics(a, np.ones((4, 6)))
    with pytest.raises(ValueError, match=r"mask"):
        depth_metrics(a, a, np.ones((5, 4), bool))
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        batch_depth_metrics(a, a)
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        batch_depth_metrics(np.ones((2, 4, 5, 3)), np.ones((2, 4, 5, 3)))


def test_sharded_batch_gives_the_same_numbers():
    from jax.sharding import NamedSharding, PartitionSpec

    n = jax.device_count()
    gt, pred, mask = random_batch(9, b=n, h=4, w=6)
    shard = NamedSharding(jax.make_mesh((n,), ("data",)), PartitionSpec("data"))
    a = batch_depth_metrics(*(jax.device_put(x, shard) for x in (gt, pred, mask)))
    b = batch_depth_metrics(gt, pred, mask)
    for k in METRIC_NAMES:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6)
