"""Camera geometry: conventions, warping, Rodrigues, bilinear sampling vs NumPy references."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import geometry as G

K = np.array([[58.0, 0.0, 16.0], [0.0, 38.4, 5.0], [0.0, 0.0, 1.0]], np.float32)  # 10×32


def ramp_image(b=1, h=10, w=32):
    """[b,h,w,2]: channel 0 = column u, channel 1 = row v (a linear function of the pixel)."""
    v, u = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                       indexing="ij")
    return np.broadcast_to(np.stack([u, v], -1), (b, h, w, 2)).copy()


def test_pixel_grid_convention():
    g = np.asarray(G.pixel_grid(3, 4))
    assert g.shape == (3, 4, 2)
    np.testing.assert_array_equal(g[2, 1], [1, 2])  # (u, v) = (column, row)
    with pytest.raises(ValueError, match="positive"):
        G.pixel_grid(0, 4)


def test_backproject_project_roundtrip_and_z():
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 50.0, (2, 10, 32, 1)).astype(np.float32)
    pts = np.asarray(G.backproject(depth, np.linalg.inv(K)))
    np.testing.assert_allclose(pts[..., 2:], depth, rtol=1e-6)
    # pixel (u=3, v=7) lies on the ray K^-1 [3, 7, 1]
    ray = np.linalg.inv(K) @ np.array([3.0, 7.0, 1.0])
    np.testing.assert_allclose(pts[1, 7, 3], ray * depth[1, 7, 3, 0], rtol=1e-5)
    uv = np.asarray(G.project(pts, K))  # T=None: identity
    np.testing.assert_allclose(uv, np.broadcast_to(ramp_image(2), uv.shape), atol=1e-4)


def test_identity_pose_warps_to_itself():
    rng = np.random.default_rng(1)
    img = rng.uniform(size=(2, 10, 32, 3)).astype(np.float32)
    depth = rng.uniform(1.0, 30.0, (2, 10, 32, 1)).astype(np.float32)
    warped, valid = jax.jit(G.warp)(img, depth, K, np.eye(4, dtype=np.float32))
    assert valid.shape == (2, 10, 32, 1) and valid.dtype == jnp.bool_
    assert bool(valid.all())
    np.testing.assert_allclose(np.asarray(warped), img, atol=2e-4)


@pytest.mark.parametrize("baseline,z", [(0.54, 10.0), (0.3, 4.0)])
def test_x_translation_shifts_by_f_b_over_z(baseline, z):
    """Source camera at +B along x (T maps target -> source: t = (-B, 0, 0)): the target
    pixel u sees the source at u - f·B/z, so a ramp image reads back u - f·B/z."""
    T = np.eye(4, dtype=np.float32)
    T[0, 3] = -baseline
    depth = np.full((1, 10, 32, 1), z, np.float32)
    d = K[0, 0] * baseline / z
    coords = np.asarray(G.project(G.backproject(depth, np.linalg.inv(K)), K, T))
    np.testing.assert_allclose(coords[..., 0], ramp_image()[..., 0] - d, atol=1e-4)
    np.testing.assert_allclose(coords[..., 1], ramp_image()[..., 1], atol=1e-4)
    warped, valid = G.warp(ramp_image(), depth, K, T)
    u = ramp_image()[..., 0]
    inside = u - d >= 0
    np.testing.assert_array_equal(np.asarray(valid[..., 0]), inside)
    np.testing.assert_allclose(np.asarray(warped[..., 0])[inside], (u - d)[inside], atol=1e-4)
    # border padding: left of the image reads column 0
    np.testing.assert_allclose(np.asarray(warped[..., 0])[~inside], 0.0, atol=1e-6)


def test_warp_masks_points_behind_the_source_camera():
    T = np.eye(4, dtype=np.float32)
    T[2, 3] = -20.0  # source camera 20 m ahead of every point
    _, valid = G.warp(ramp_image(), np.full((1, 10, 32, 1), 5.0, np.float32), K, T)
    assert not bool(valid.any())


def _rot(axis, theta):
    c, s = math.cos(theta), math.sin(theta)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def test_rodrigues_matches_known_rotations():
    for i, axis in enumerate("xyz"):
        for theta in (0.3, -1.2, math.pi / 2):
            aa = np.zeros((1, 3), np.float32)
            aa[0, i] = theta
            M = np.asarray(G.pose_vec_to_mat(aa, np.array([[1.0, 2.0, 3.0]], np.float32)))
            np.testing.assert_allclose(M[0, :3, :3], _rot(axis, theta), atol=1e-6)
            np.testing.assert_allclose(M[0, :3, 3], [1, 2, 3])
            np.testing.assert_allclose(M[0, 3], [0, 0, 0, 1])
    # a general axis against the closed form R = cos θ I + sin θ [k]x + (1 - cos θ) k kᵀ
    k = np.array([1.0, -2.0, 0.5]) / np.linalg.norm([1.0, -2.0, 0.5])
    theta = 0.7
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    R = math.cos(theta) * np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * np.outer(k, k)
    M = np.asarray(G.pose_vec_to_mat((k * theta)[None, None].astype(np.float32),
                                     np.zeros((1, 1, 3), np.float32)))  # PoseNet's [B,1,3]
    np.testing.assert_allclose(M[0, :3, :3], R, atol=1e-6)


def test_pose_invert_and_small_angles():
    rng = np.random.default_rng(2)
    aa = rng.normal(size=(4, 3)).astype(np.float32) * 0.2
    t = rng.normal(size=(4, 3)).astype(np.float32)
    M = np.asarray(G.pose_vec_to_mat(aa, t))
    Minv = np.asarray(G.pose_vec_to_mat(aa, t, invert=True))
    np.testing.assert_allclose(M @ Minv, np.broadcast_to(np.eye(4), M.shape), atol=1e-5)
    np.testing.assert_allclose(np.asarray(G.invert_pose(M)), Minv, atol=1e-5)
    R = M[:, :3, :3]
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.broadcast_to(np.eye(3), R.shape),
                               atol=1e-5)
    zero = np.zeros((1, 3), np.float32)
    np.testing.assert_allclose(np.asarray(G.pose_vec_to_mat(zero, zero)), np.eye(4)[None])
    g = jax.grad(lambda a: G.pose_vec_to_mat(a, jnp.zeros((1, 3)))[0, 0, 1])(jnp.zeros((1, 3)))
    assert np.all(np.isfinite(np.asarray(g)))
    np.testing.assert_allclose(np.asarray(g), [[0, 0, -1]], atol=1e-6)  # dR01/dθz = -1


def _bilinear_reference(img, coords, padding):
    """NumPy loop: pixel (i, j) at coordinate (u=j, v=i); border = clamp the coordinate."""
    b, h, w, c = img.shape
    out = np.zeros(coords.shape[:3] + (c,))
    for n in range(b):
        for i in range(coords.shape[1]):
            for j in range(coords.shape[2]):
                u, v = coords[n, i, j]
                if padding == "border":
                    u, v = min(max(u, 0), w - 1), min(max(v, 0), h - 1)
                u0, v0 = math.floor(u), math.floor(v)
                for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):
                    uu, vv = u0 + du, v0 + dv
                    wgt = (1 - abs(u - uu)) * (1 - abs(v - vv))
                    if 0 <= uu < w and 0 <= vv < h:
                        out[n, i, j] += wgt * img[n, vv, uu]
                    elif padding == "border" and wgt > 0:
                        out[n, i, j] += wgt * img[n, min(max(vv, 0), h - 1), min(max(uu, 0), w - 1)]
    return out


@pytest.mark.parametrize("padding", ["border", "zeros"])
def test_bilinear_sample_matches_numpy_loop(padding):
    rng = np.random.default_rng(3)
    img = rng.uniform(size=(2, 5, 7, 3)).astype(np.float32)
    coords = np.stack([rng.uniform(-2.5, 8.5, (2, 4, 6)), rng.uniform(-2.0, 6.0, (2, 4, 6))],
                      -1).astype(np.float32)
    coords[0, 0, 0] = (3.0, 2.0)   # exactly a pixel centre
    coords[0, 0, 1] = (6.0, 4.0)   # the last pixel centre: still in bounds
    coords[0, 0, 2] = (6.2, 4.0)   # just outside
    out, inb = G.bilinear_sample(img, coords, padding=padding)
    np.testing.assert_allclose(np.asarray(out), _bilinear_reference(img, coords, padding),
                               atol=1e-5)
    u, v = coords[..., 0], coords[..., 1]
    tol = 1e-3  # documented slack for float rounding
    np.testing.assert_array_equal(np.asarray(inb[..., 0]),
                                  (u >= -tol) & (u <= 6 + tol) & (v >= -tol) & (v <= 4 + tol))
    assert bool(inb[0, 0, 1, 0]) and not bool(inb[0, 0, 2, 0])
    np.testing.assert_allclose(np.asarray(out[0, 0, 0]), img[0, 2, 3], atol=1e-6)
    bad = coords.copy()
    bad[1, 0, 0] = (np.nan, 1.0)
    out, inb = G.bilinear_sample(img, bad, padding=padding)
    assert not bool(inb[1, 0, 0, 0]) and np.all(np.isfinite(np.asarray(out)))


def test_geometry_vmaps_and_jits():
    rng = np.random.default_rng(4)
    img = rng.uniform(size=(3, 10, 32, 3)).astype(np.float32)
    depth = rng.uniform(2.0, 9.0, (3, 10, 32, 1)).astype(np.float32)
    T = np.asarray(G.pose_vec_to_mat(rng.normal(size=(3, 3)) * 0.02, rng.normal(size=(3, 3)) * 0.1))
    Kb = np.broadcast_to(K, (3, 3, 3))
    a, va = jax.jit(G.warp)(img, depth, Kb, T)
    b, vb = jax.vmap(lambda i, d, k, t: G.warp(i[None], d[None], k, t))(img, depth, Kb, T)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b[:, 0]), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(va), np.asarray(vb[:, 0]))


def test_disp_to_depth_monodepth2():
    scaled, depth = G.disp_to_depth(jnp.array([0.0, 1.0, 0.5]))
    np.testing.assert_allclose(np.asarray(depth[:2]), [100.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(scaled[2]), 0.01 + (10 - 0.01) * 0.5, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(scaled * depth), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="min_depth"):
        G.disp_to_depth(0.5, min_depth=1.0, max_depth=0.5)


def test_shape_errors_name_what_was_expected():
    with pytest.raises(ValueError, match=r"depth must be \[B,H,W,1\]"):
        G.backproject(np.ones((10, 32, 1)), np.eye(3))
    with pytest.raises(ValueError, match="inv_K"):
        G.backproject(np.ones((1, 10, 32, 1)), np.eye(2))
    with pytest.raises(ValueError, match="padding"):
        G.bilinear_sample(np.ones((1, 2, 2, 1)), np.zeros((1, 2, 2, 2)), padding="reflect")
    with pytest.raises(ValueError, match="T must be"):
        G.warp(np.ones((1, 2, 2, 1)), np.ones((1, 2, 2, 1)), K, np.eye(3))
