"""Procedural street scenes: API, determinism, splits, options, and the geometry of what is
rendered (analytic road depth, temporal and stereo warps, labels vs primitives).

Everything renders at 64×208 with two compiled programs (anomalies off / on), shared by
all tests (splits, moving_objects and batch size do not recompile the renderer).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import geometry as G
from jaxdepth.data import synthetic as syn

H, W = 64, 208
N = 4  # samples in the shared batch
OPTS = dict(height=H, width=W)


@pytest.fixture(scope="module")
def batch():
    """Train samples 0..N-1 with moving cars, all keys, as NumPy."""
    out = syn.sample_batch(np.arange(N), moving_objects=True, **OPTS)
    return {k: ({kk: np.asarray(vv) for kk, vv in v.items()} if isinstance(v, dict)
                else np.asarray(v)) for k, v in out.items()}


@pytest.fixture(scope="module")
def scenes():
    return [syn.scene_description(i, moving_objects=True) for i in range(N)]


def world_points(depth, K, yaw0):
    """Back-projected pixels [H,W,3] in the scene's world frame (X_w = R_y(yaw0) X_cam)."""
    X = np.asarray(G.backproject(depth[None], np.linalg.inv(K)))[0].astype(np.float64)
    c, s = np.cos(yaw0), np.sin(yaw0)
    R = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return X @ R.T


def test_keys_shapes_dtypes(batch):
    assert set(batch) == set(syn.OUTPUT_KEYS)
    for k, shape, dtype in [("image", (N, H, W, 3), np.float32),
                            ("depth", (N, H, W, 1), np.float32),
                            ("labels", (N, H, W), np.int32), ("anomaly", (N, H, W), np.bool_),
                            ("moving", (N, H, W), np.bool_), ("K", (N, 3, 3), np.float32),
                            ("image_right", (N, H, W, 3), np.float32),
                            ("depth_right", (N, H, W, 1), np.float32),
                            ("baseline", (N,), np.float32), ("stereo_T", (N, 4, 4), np.float32)]:
        assert batch[k].shape == shape and batch[k].dtype == dtype, k
    for group in ("frames", "frames_depth", "poses"):
        assert set(batch[group]) == {-1, 1}
    assert batch["frames"][1].shape == (N, H, W, 3)
    assert batch["poses"][-1].shape == (N, 4, 4)
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    np.testing.assert_allclose(batch["K"][0], [[0.58 * W, 0, 0.5 * W], [0, 1.92 * H, 0.5 * H],
                                               [0, 0, 1]], rtol=1e-6)
    np.testing.assert_allclose(batch["baseline"], 0.54)
    np.testing.assert_allclose(batch["stereo_T"][0, 0, 3], -0.54, rtol=1e-6)
    labels = batch["labels"]
    assert labels.min() >= 0 and labels.max() < len(syn.CLASSES)
    sky = labels == syn.SKY
    np.testing.assert_array_equal(sky, batch["depth"][..., 0] == 0)  # sky <=> depth 0
    assert batch["depth"].max() < 80.0
    for c in (syn.ROAD, syn.SIDEWALK, syn.BUILDING, syn.CAR, syn.SKY):
        assert (labels == c).any(), syn.CLASSES[c]
    assert not batch["anomaly"].any()  # train split: no anomalies
    # the camera moves forward 0.5–1.5 m per frame with a small yaw
    for T, sign in ((batch["poses"][1], -1), (batch["poses"][-1], 1)):
        t = T[:, :3, 3]
        assert np.all(sign * t[:, 2] > 0.45) and np.all(np.abs(t[:, 2]) < 1.55)
        yaw = np.degrees(np.arctan2(T[:, 0, 2], T[:, 0, 0]))
        assert np.all(np.abs(yaw) <= 2.0 + 1e-3)


def test_class_constants():
    assert syn.CLASSES[syn.ROAD] == "road" and syn.CLASSES[syn.ANOMALY] == "anomaly"
    assert len(syn.CLASS_COLORS) == len(syn.CLASSES)
    assert {"road", "sidewalk", "building", "car", "pole", "vegetation", "sky",
            "anomaly"} <= set(syn.CLASSES)


def test_deterministic_and_batch_equals_single(batch):
    a = syn.sample(2, moving_objects=True, **OPTS)
    b = syn.sample(2, moving_objects=True, **OPTS)
    for k in ("image", "depth", "labels", "image_right"):
        np.testing.assert_array_equal(a[k], b[k])  # bit-identical
        np.testing.assert_array_equal(a[k], batch[k][2])  # batched form == per-sample form
    np.testing.assert_array_equal(a["frames"][1], batch["frames"][1][2])
    np.testing.assert_array_equal(a["poses"][-1], batch["poses"][-1][2])
    assert not np.array_equal(batch["image"][0], batch["image"][1])
    other_seed = syn.sample(2, seed=1, moving_objects=True, keys=("image",), **OPTS)
    assert not np.array_equal(other_seed["image"], a["image"])


def test_sample_batch_traces_inside_jit():
    """Inside a caller's jit the same programs are inlined. Only traced here (a compile
    would cost ~10 s; the values agree with the eager path up to float rounding)."""
    f = jax.jit(lambda i, s: syn.sample_batch(i, seed=s, keys=("image", "labels", "poses"),
                                              moving_objects=True, **OPTS))
    out = jax.eval_shape(f, jax.ShapeDtypeStruct((3,), jnp.int32),
                         jax.ShapeDtypeStruct((), jnp.uint32))
    assert set(out) == {"image", "labels", "poses"}
    assert out["image"].shape == (3, H, W, 3) and out["image"].dtype == jnp.float32
    assert out["labels"].dtype == jnp.int32 and out["poses"][1].shape == (3, 4, 4)


def test_splits_are_disjoint():
    imgs = {s: syn.sample_batch(np.arange(2), split=s, keys=("image",), anomalies=False,
                                **OPTS)["image"] for s in syn.SPLITS}
    for i in range(2):
        for s1 in syn.SPLITS:
            for s2 in syn.SPLITS:
                if s1 < s2:
                    assert not np.array_equal(imgs[s1][i], imgs[s2][i]), (s1, s2, i)
    # scene parameters differ too, for many indices
    for i in range(8):
        boxes = [syn.scene_description(i, split=s, anomalies=False)["box_lo"] for s in syn.SPLITS]
        assert len({b.tobytes() for b in boxes}) == len(syn.SPLITS)


def test_road_depth_is_the_analytic_plane_depth(batch, scenes):
    K = batch["K"][0]
    v = np.arange(H, dtype=np.float64)[:, None] * np.ones((1, W))
    for i in range(N):
        road = batch["labels"][i] == syn.ROAD
        assert road.sum() > 0.05 * H * W
        z = 1.65 * K[1, 1] / (v[road] - K[1, 2])
        # depth is exact up to the 6 low bits of its float32 mantissa (8e-6 relative)
        np.testing.assert_allclose(batch["depth"][i][road][:, 0], z, rtol=2e-5)
        Xw = world_points(batch["depth"][i], K, scenes[i]["yaw0"])[road]
        kl, kr = scenes[i]["kerbs"]
        assert np.all((Xw[:, 0] > kl - 1e-3) & (Xw[:, 0] < kr + 1e-3))


def _on_box(X, lo, hi, tol):
    inside = np.all((X[:, None] >= lo[None] - tol[:, None, None])
                    & (X[:, None] <= hi[None] + tol[:, None, None]), -1)
    return inside.any(1)


def test_labels_match_the_primitive_hit(batch, scenes):
    """Every labelled pixel's 3-D point lies on a primitive of that class."""
    K = batch["K"][0]
    for i in range(N):
        sc, lab, d = scenes[i], batch["labels"][i], batch["depth"][i]
        Xw = world_points(d, K, sc["yaw0"])
        tol = 2e-3 + 2e-5 * d[..., 0]
        # sidewalk: on the raised plane outside the kerbs, or on a kerb face
        m = lab == syn.SIDEWALK
        x, y = Xw[m, 0], Xw[m, 1]
        outside = (x < sc["kerbs"][0]) | (x > sc["kerbs"][1])
        on_plane = (np.abs(y - sc["sidewalk_y"]) < tol[m]) & outside
        on_kerb = (np.min(np.abs(x[:, None] - sc["kerbs"][None]), 1) < tol[m]) \
            & (y > sc["sidewalk_y"] - tol[m]) & (y < sc["road_y"] + tol[m])
        assert np.all(on_plane | on_kerb)
        for cls in (syn.BUILDING, syn.CAR):
            m = lab == cls
            boxes = sc["box_label"] == cls
            assert m.any()
            assert np.all(_on_box(Xw[m], sc["box_lo"][boxes], sc["box_hi"][boxes], tol[m])), cls
        # poles and trunks: on a vertical cylinder's side; crowns: on an ellipsoid
        cyl, cyl_lab = sc["cylinders"], sc["cylinder_label"]
        m = lab == syn.POLE
        if m.any():
            c = cyl[cyl_lab == syn.POLE]
            r = np.hypot(Xw[m, 0][:, None] - c[None, :, 0], Xw[m, 2][:, None] - c[None, :, 1])
            assert np.all(np.min(np.abs(r - c[None, :, 2]), 1) < tol[m])
        m = lab == syn.VEGETATION
        if m.any():
            c = cyl[cyl_lab == syn.VEGETATION]
            r = np.hypot(Xw[m, 0][:, None] - c[None, :, 0], Xw[m, 2][:, None] - c[None, :, 1])
            on_trunk = np.min(np.abs(r - c[None, :, 2]), 1) < tol[m]
            e = sc["ellipsoids"][sc["ellipsoid_label"] == syn.VEGETATION]
            q = np.sum(((Xw[m][:, None] - e[None, :, :3]) / e[None, :, 3:]) ** 2, -1)
            on_crown = np.min(np.abs(np.sqrt(q) - 1.0), 1) < 1e-3 + tol[m]
            assert np.all(on_trunk | on_crown)


def _static_consistent(depth0, K, T, depth_src):
    """Pixels of view 0 visible in the source view: the projection lands inside it and the
    source's own depth agrees with the transformed depth (no occlusion), both at the
    nearest pixel and bilinearly (away from depth edges)."""
    pts = G.backproject(depth0, np.linalg.inv(K))
    coords = np.asarray(G.project(pts, K, T))
    R, t = T[:, :3, :3], T[:, None, None, :3, 3]
    z = (np.einsum("bij,bhwj->bhwi", R, np.asarray(pts)) + t)[..., 2]
    src_bil, inb = G.bilinear_sample(depth_src, coords)
    cu = np.clip(np.round(coords[..., 0]).astype(int), 0, W - 1)
    cv = np.clip(np.round(coords[..., 1]).astype(int), 0, H - 1)
    src_near = np.stack([depth_src[b][cv[b], cu[b], 0] for b in range(len(depth0))])
    src_bil = np.asarray(src_bil)[..., 0]
    return (np.asarray(inb)[..., 0] & (depth0[..., 0] > 0) & (z > 0)
            & (np.abs(src_near - z) < 0.01 * z) & (np.abs(src_bil - z) < 0.01 * z))


def test_warping_the_next_frame_reproduces_frame_0(batch):
    K, T = batch["K"], batch["poses"][1]
    ok = _static_consistent(batch["depth"], K, T, batch["frames_depth"][1]) & ~batch["moving"]
    assert ok.mean() > 0.3
    warped, valid = G.warp(batch["frames"][1], batch["depth"], K, T)
    ok &= np.asarray(valid)[..., 0]
    err = np.abs(np.asarray(warped) - batch["image"]).mean(-1)[ok]
    p95 = np.percentile(err, 95)
    assert err.mean() < 0.02 and p95 < 0.08, (err.mean(), p95)
    # negative control: a wrong pose (no motion) does not reproduce frame 0
    wrong, _ = G.warp(batch["frames"][1], batch["depth"], K, np.eye(4, dtype=np.float32))
    assert np.abs(np.asarray(wrong) - batch["image"]).mean(-1)[ok].mean() > 3 * err.mean()


def test_right_view_is_the_disparity_warp(batch):
    K, d = batch["K"], batch["depth"]
    disp = K[:, 0, 0, None, None] * 0.54 / np.maximum(d[..., 0], 1e-6)
    u = np.arange(W, dtype=np.float32)[None, None] - disp
    coords = np.stack([u, np.broadcast_to(np.arange(H, dtype=np.float32)[None, :, None], u.shape)],
                      -1).astype(np.float32)
    ok = _static_consistent(d, K, batch["stereo_T"], batch["depth_right"])
    assert ok.mean() > 0.5
    right, _ = G.bilinear_sample(batch["image_right"], coords)
    err = np.abs(np.asarray(right) - batch["image"]).mean(-1)[ok]
    p95 = np.percentile(err, 95)
    assert err.mean() < 0.015 and p95 < 0.06, (err.mean(), p95)
    # the same pixels through warp() with stereo_T
    warped, valid = G.warp(batch["image_right"], d, K, batch["stereo_T"])
    np.testing.assert_allclose(np.asarray(warped)[ok & np.asarray(valid)[..., 0]],
                               np.asarray(right)[ok & np.asarray(valid)[..., 0]], atol=2e-3)


def test_moving_objects_option(batch, scenes):
    moving = batch["moving"]
    assert moving.any()
    assert np.all(batch["labels"][moving] == syn.CAR)
    assert any(np.any(s["box_vz"] != 0) for s in scenes)
    static = syn.sample_batch(np.arange(N), moving_objects=False, **OPTS)
    assert not np.asarray(static["moving"]).any()
    # the world at frame 0 is the same; in frame +1 only car pixels differ
    np.testing.assert_array_equal(np.asarray(static["image"]), batch["image"])
    diff = np.any(np.asarray(static["frames"][1]) != batch["frames"][1], -1)
    assert diff.any()
    lab_static = np.asarray(static["labels"])
    near_car = np.zeros_like(diff)
    for f in (lab_static, batch["labels"]):  # cars (or their shadows) moved in or out
        near_car |= f == syn.CAR
    frac_off_car = (diff & ~near_car).mean()
    assert frac_off_car < 0.05  # shadows of moving cars on the road


def test_anomalies_only_where_asked():
    ood = syn.sample_batch(np.arange(3), split="ood", **OPTS)
    anomaly, labels = np.asarray(ood["anomaly"]), np.asarray(ood["labels"])
    assert anomaly.any()
    np.testing.assert_array_equal(anomaly, labels == syn.ANOMALY)
    off = syn.sample_batch(np.arange(3), split="ood", anomalies=False, keys=("anomaly",), **OPTS)
    assert not np.asarray(off["anomaly"]).any()
    on = syn.sample_batch(np.arange(3), split="val", anomalies=True, keys=("anomaly",), **OPTS)
    assert np.asarray(on["anomaly"]).any()
    # anomalies stand on the road in front of the camera
    rows = np.nonzero(anomaly.any((0, 2)))[0]
    assert rows.max() > H // 2


def test_source_protocol():
    src = syn.SyntheticSource("val", length=5, keys=("image", "depth"), **OPTS)
    assert len(src) == 5 and "val" in repr(src)
    s1 = src[1]
    assert set(s1) == {"image", "depth"} and s1["image"].shape == (H, W, 3)
    assert isinstance(s1["image"], np.ndarray)
    b = src.get_batch(np.array([3, 1]))
    assert b["image"].shape == (2, H, W, 3)
    np.testing.assert_array_equal(b["image"][1], s1["image"])
    np.testing.assert_array_equal(src[-2]["depth"], b["depth"][0])
    ref = syn.sample(3, split="val", keys=("image",), **OPTS)["image"]
    np.testing.assert_array_equal(b["image"][0], ref)
    with pytest.raises(IndexError):
        src[5]
    with pytest.raises(IndexError):
        src.get_batch(np.array([0, 7]))
    assert syn.SyntheticSource("ood").length == syn.SyntheticSource.DEFAULT_LENGTH["ood"]
    # the project's Loader takes the get_batch fast path
    from jaxdepth.data.pipeline import Loader

    first = next(iter(Loader(src, batch_size=2, shuffle=False)))
    np.testing.assert_array_equal(first["image"][1], s1["image"])


def test_errors_name_what_was_expected():
    with pytest.raises(ValueError, match="height must be a positive integer"):
        syn.sample(0, height=0)
    with pytest.raises(ValueError, match="unknown split 'tarin'"):
        syn.sample(0, split="tarin")
    with pytest.raises(ValueError, match="unknown option.*moving_object"):
        syn.sample(0, moving_object=True)
    with pytest.raises(ValueError, match="unknown or no keys"):
        syn.sample(0, keys=("rgb",))
    with pytest.raises(ValueError, match="seed"):
        syn.sample(0, seed=-1)
    with pytest.raises(ValueError, match="indices"):
        syn.sample_batch(np.array([[0, 1]]))
    with pytest.raises(ValueError, match="length"):
        syn.SyntheticSource(length=0)


def test_preview_cli_writes_a_grid(tmp_path):
    out = tmp_path / "preview.png"
    syn._main(["--preview", str(out), "--samples", "1", "--height", str(H), "--width", str(W)])
    from PIL import Image

    with Image.open(out) as im:
        w, h = im.size
    assert w > 6 * W and h > 2 * H  # 2 rows (train + ood) × 6 columns
