"""training_data: the sources `jaxdepth train` feeds the steps, on tiny fixture trees."""
import os

import numpy as np
import pytest

import kitti_fixtures as kf
from jaxdepth.data import kitti
from jaxdepth.data.pipeline import Loader
from jaxdepth.data.training import (DATA, TrainData, default_kitti_split, needed_keys,
                                    training_data)

NATIVE = (64, 128)      # fixture images / calib size (h, w)
H, W = 32, 64           # network size: exactly half, so K halves and blocks are 2x2


def _leaves(tree, path=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{path}/{k}")
    else:
        yield path, np.asarray(tree)


def _red(img):
    """The fixture's frame/camera code from a float image (red is constant per image)."""
    r = np.asarray(img)[..., 0] * 255
    assert np.ptp(r) <= 1.0
    return int(round(float(r.mean())))


def _code(frame, side):
    return (16 * frame + (8 if side == "r" else 0)) % 256


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    tree = kf.write_kitti_raw(root, frames=range(6), size=NATIVE)
    # dense scans (collisions in 2x2 blocks exercise the nearest-wins rule), one per frame
    for f in tree.frames:
        kf.write_velodyne(kitti.velodyne_path(str(root), tree.folder, f),
                          kf.random_velodyne_points(4000, seed=f, size=NATIVE))
    split = kf.write_split(root / "splits" / "my_train.txt",
                           tree.entries([1, 2, 4]) + tree.entries([3], "r"))
    return root, tree, split


# ----------------------------------------------------------------------------- KITTI self-sup
@pytest.mark.parametrize("needs", ["M", "S", "MS"])
def test_kitti_selfsup_keys_frames_stereo_and_K(kitti_root, needs):
    root, tree, split = kitti_root
    td = training_data("kitti", needs=needs, height=H, width=W, root=root, split=split)
    assert isinstance(td, TrainData) and td.transform is None and td.augment_in_step
    assert td.description.startswith("KITTI raw my_train.txt: 4 ")
    assert td.true_baseline == pytest.approx(0.54) and td.max_depth == 80.0
    assert len(td) == 4 and td.keys == needed_keys(needs)
    want_P = {"l": 0.06, "r": -0.4732}
    for i, (frame, side) in enumerate([(1, "l"), (2, "l"), (4, "l"), (3, "r")]):
        s = td.source[i]
        assert set(s) == set(td.keys)
        assert s["image"].shape == (H, W, 3) and _red(s["image"]) == _code(frame, side)
        # K = P_rect_0x[:, :3] scaled from the native size to H x W
        cal = kitti.load_calib(str(root / kf.DATE))
        P = cal.P_rect[2 if side == "l" else 3]
        assert P[0, 3] == pytest.approx(kf.FX * want_P[side])
        K = P[:, :3] * np.array([[W / NATIVE[1]], [H / NATIVE[0]], [1]])
        np.testing.assert_allclose(s["K"], K, rtol=1e-6)
        assert s["K"].dtype == np.float32 and s["K"].shape == (3, 3)
        if "M" in needs:
            assert sorted(s["frames"]) == [-1, 1]
            for k in (-1, 1):
                assert s["frames"][k].shape == (H, W, 3)
                assert _red(s["frames"][k]) == _code(frame + k, side)
        else:
            assert "frames" not in s
        if "S" in needs:
            other = "r" if side == "l" else "l"
            assert _red(s["image_right"]) == _code(frame, other)
            T = np.eye(4, dtype=np.float32)
            T[0, 3] = -0.1 if side == "l" else 0.1  # target -> other camera (Monodepth2)
            np.testing.assert_array_equal(s["stereo_T"], T)
        else:
            assert "image_right" not in s and "stereo_T" not in s


def test_kitti_loader_batches_float32_only(kitti_root):
    root, _, split = kitti_root
    td = training_data("kitti", needs="MS", height=H, width=W, root=root, split=split)
    batch = next(iter(Loader(td.source, 2, seed=3, transform=td.transform)))
    leaves = dict(_leaves(batch))
    assert sorted(leaves) == ["/K", "/frames/-1", "/frames/1", "/image", "/image_right",
                              "/stereo_T"]
    for path, a in leaves.items():
        assert a.dtype == np.float32, path  # no strings, nothing the device cannot take
        assert a.shape[0] == 2
    assert leaves["/K"].shape == (2, 3, 3) and leaves["/stereo_T"].shape == (2, 4, 4)


def test_kitti_default_split_and_length(tmp_path):
    # a partial download holding frames of eigen_zhou's first line (drive 0022, frame 473 r)
    kf.write_kitti_raw(tmp_path, drive=22, frames=range(470, 477), size=(32, 64),
                       velodyne=False, improved_gt=False)
    assert default_kitti_split("M") == default_kitti_split("MS") == "eigen_zhou"
    assert default_kitti_split("S") == default_kitti_split("depth") == "eigen_full"
    with pytest.raises(FileNotFoundError, match=r"1 of .* sequences of KITTI split "
                                                r"eigen_zhou/train.*skip_missing"):
        training_data("kitti", needs="M", height=32, width=64, root=tmp_path)
    with pytest.warns(UserWarning, match="skipped"):
        td = training_data("kitti", needs="M", height=32, width=64, root=tmp_path,
                           skip_missing=True)
    n = len(td)
    assert n >= 1 and td.description.startswith(f"KITTI raw eigen_zhou/train: {n} of 39810 "
                                                 "triplets at 32x64")
    assert td.source.base.entries[0] == ("2011_09_26/2011_09_26_drive_0022_sync", 473, "r")
    s = td.source[0]
    assert [_red(s["frames"][k]) for k in (-1, 1)] == [_code(472, "r"), _code(474, "r")]
    with pytest.warns(UserWarning, match="skipped"):
        short = training_data("kitti", needs="M", height=32, width=64, root=tmp_path,
                              skip_missing=True, length=100)
    assert "of 39810" in short.description and len(short) <= min(n, 100)


# ----------------------------------------------------------------------------- KITTI supervised
def _camera_points(points, side):
    """Independent projection with the fixture constants: (u, v, z) of the points in front."""
    X, Y, Z = points[:, 0].astype(np.float64), points[:, 1], points[:, 2]
    xc, yc, zc = -Y, -Z - 0.08, X - 0.27
    t = kf.T2 if side == "l" else kf.T3
    keep = X >= 0
    u = (kf.FX * xc + kf.CX * zc + kf.FX * t) / zc
    v = (kf.FY * yc + kf.CY * zc) / zc
    return u[keep], v[keep], zc[keep]


@pytest.mark.parametrize("side", ["l", "r"])
def test_kitti_velodyne_depth_at_network_size(kitti_root, tmp_path, side):
    root, tree, _ = kitti_root
    split = kf.write_split(tmp_path / "s.txt", tree.entries([2, 3], side))
    td = training_data("kitti", needs="depth", height=H, width=W, root=root, split=split)
    assert "velodyne depth (camera z" in td.description
    assert td.keys == ("image", "depth")
    for i, frame in enumerate((2, 3)):
        s = td.source[i]
        assert set(s) == {"image", "depth"} and s["depth"].shape == (H, W, 1)
        d = s["depth"][..., 0]
        pts = kf.random_velodyne_points(4000, seed=frame, size=NATIVE)
        # 1) point by point with the fixture constants: native pixel centre (u-1, v-1)
        #    lands in output pixel floor((u - 1 + 0.5) * W / w); nearest z wins
        u, v, z = _camera_points(pts, side)
        best = {}
        for uu, vv, zz in zip(u, v, z):
            c, r = int(np.floor((uu - 0.5) * W / NATIVE[1])), int(np.floor((vv - 0.5) * H
                                                                              / NATIVE[0]))
            if 0 <= r < H and 0 <= c < W:
                best[(r, c)] = min(best.get((r, c), np.inf), zz)
        want = np.zeros((H, W))
        for (r, c), zz in best.items():
            want[r, c] = zz
        np.testing.assert_allclose(d, want, rtol=1e-5)
        assert (d > 0).sum() > 300 and (d == 0).sum() > 100
        # 2) = the 2x2-block minimum of the native velodyne map (Monodepth2's projection):
        #    invalid pixels never enter, nothing is averaged
        cal = kitti.load_calib(str(root / kf.DATE))
        cam = 2 if side == "l" else 3
        native = kitti.project_velodyne(pts, cal.velo_to_image(cam), NATIVE)
        blocks = np.where(native > 0, native, np.inf).reshape(H, 2, W, 2).min(axis=(1, 3))
        np.testing.assert_allclose(d, np.where(np.isinf(blocks), 0, blocks), rtol=1e-6)
        assert np.all(d[np.isinf(blocks)] == 0)
        valid = d > 0
        assert np.all(np.isin(d[valid], native[native > 0]))  # every value a real point


def test_velodyne_resized_at_native_size_is_monodepth2(kitti_root):
    root, tree, _ = kitti_root
    cal = kitti.load_calib(str(root / kf.DATE))
    pts = kf.random_velodyne_points(3000, seed=9, size=NATIVE)
    for vel_depth in (False, True):
        np.testing.assert_array_equal(
            kitti.project_velodyne_resized(pts, cal.velo_to_image(2), NATIVE, NATIVE, vel_depth),
            kitti.project_velodyne(pts, cal.velo_to_image(2), NATIVE, vel_depth))


def test_kitti_improved_gt_min_of_valid(kitti_root, tmp_path):
    root, tree, _ = kitti_root
    split = kf.write_split(tmp_path / "s.txt", tree.entries([1, 4]) + tree.entries([2], "r"))
    td = training_data("kitti", needs="depth", height=H, width=W, root=root, split=split,
                       gt="improved")
    assert "improved-gt" in td.description
    for i, (frame, side) in enumerate([(1, "l"), (4, "l"), (2, "r")]):
        d = td.source[i]["depth"][..., 0]
        g = tree.gt[(side, frame)]
        blocks = np.where(g > 0, g, np.inf).reshape(H, 2, W, 2).min(axis=(1, 3))
        np.testing.assert_array_equal(d, np.where(np.isinf(blocks), 0, blocks))
        assert (g == 0).any() and np.all(np.isin(d[d > 0], g[g > 0]))
    # frames 0 and 5 have no improved gt: named, or dropped with skip_missing
    gone = kf.write_split(tmp_path / "gone.txt", tree.entries([0, 2, 5]))
    with pytest.raises(FileNotFoundError, match=r"2 of 3 frames.*improved gt.*"
                                                r"image_02/0000000000.png.*skip_missing"):
        training_data("kitti", needs="depth", height=H, width=W, root=root, split=gone,
                      gt="improved")
    with pytest.warns(UserWarning, match="skipped 2 of 3"):
        td = training_data("kitti", needs="depth", height=H, width=W, root=root, split=gone,
                           gt="improved", skip_missing=True)
    assert len(td) == 1 and td.source.base.entries[0].frame == 2


def test_resize_sparse_depth_non_integer_factor():
    rng = np.random.default_rng(0)
    h, w, Ho, Wo = 48, 96, 32, 64  # factor 2/3
    g = np.round(rng.uniform(1, 80, (h, w)) * 256) / 256
    g[rng.random((h, w)) < 0.7] = 0.0
    got = kitti.resize_sparse_depth(g, Ho, Wo)
    want = np.full((Ho, Wo), np.inf)
    for r in range(h):
        for c in range(w):
            if g[r, c] > 0:  # native centre (r + .5, c + .5) -> output pixel of that area
                R, C = int((r + 0.5) * Ho / h), int((c + 0.5) * Wo / w)
                want[R, C] = min(want[R, C], g[r, c])
    np.testing.assert_array_equal(got, np.where(np.isinf(want), 0, want).astype(np.float32))
    assert got.dtype == np.float32 and (got == 0).any()
    np.testing.assert_array_equal(kitti.resize_sparse_depth(g[..., None], h, w), g)


def test_kitti_missing_velodyne_named(kitti_root, tmp_path):
    root, tree, _ = kitti_root
    other = tmp_path / "k"
    t2 = kf.write_kitti_raw(other, frames=range(3), size=(32, 64))
    os.remove(kitti.velodyne_path(str(other), t2.folder, 1))
    split = kf.write_split(tmp_path / "s.txt", t2.entries())
    with pytest.raises(FileNotFoundError, match=r"1 of 3 frames.*velodyne.*"
                                                r"velodyne_points/data/0000000001.bin"):
        training_data("kitti", needs="depth", height=32, width=64, root=other, split=split)


# ----------------------------------------------------------------------------- NYU, synthetic
def test_nyu_loader_with_transform(tmp_path):
    kf.write_nyu_tree(tmp_path, n_val=0)
    td = training_data("nyu", needs="depth", height=224, width=288, root=tmp_path)
    assert len(td) == 3 and not td.augment_in_step and td.max_depth == 10.0
    assert td.description.startswith("NYU v2 train") and td.true_baseline is None
    batch = next(iter(Loader(td.source, 2, seed=0, transform=td.transform)))
    assert sorted(batch) == ["depth", "image"]
    assert batch["image"].shape == (2, 224, 288, 3) and batch["image"].dtype == np.float32
    assert batch["depth"].shape == (2, 224, 288, 1) and batch["depth"].dtype == np.float32
    assert (batch["depth"] > 0).any()
    assert len(training_data("nyu", needs="depth", height=224, width=288, root=tmp_path,
                             length=2)) == 2


@pytest.mark.slow
def test_synthetic_keys_for_each_need():
    from jaxdepth.train.selfsup import data_keys

    for needs in ("depth", "M", "S", "MS"):
        td = training_data("synthetic", needs=needs, height=32, width=64, seed=1)
        assert len(td) == 4000 and td.augment_in_step and td.true_baseline == 0.54
        assert set(td.source.keys) == set(needed_keys(needs)) == set(td.keys)
        if needs != "depth":
            assert set(data_keys(needs)) == set(td.keys)
            assert needed_keys(data_keys(needs)) == td.keys  # a key tuple works as needs
    td = training_data("synthetic", needs="MS", height=32, width=32, length=4,
                       moving_objects=True)
    assert "moving objects" in td.description and len(td) == 4
    batch = next(iter(Loader(td.source, 2, seed=0, transform=td.transform)))
    assert dict((p, a.shape) for p, a in _leaves(batch)) == {
        "/image": (2, 32, 32, 3), "/K": (2, 3, 3), "/image_right": (2, 32, 32, 3),
        "/stereo_T": (2, 4, 4), "/frames/-1": (2, 32, 32, 3), "/frames/1": (2, 32, 32, 3)}
    assert all(a.dtype == np.float32 for _, a in _leaves(batch))
    assert np.all(batch["stereo_T"][:, 0, 3] < 0)  # the image is the left camera


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs(kitti_root, tmp_path):
    root, tree, split = kitti_root
    ok = dict(needs="M", height=H, width=W)
    assert DATA == ("synthetic", "kitti", "nyu", "cityscapes")
    with pytest.raises(ValueError, match=r"unknown data 'kiti'; expected one of"):
        training_data("kiti", root=root, **ok)
    with pytest.raises(ValueError, match=r"needs must be one of .*got 'MD'"):
        training_data("kitti", needs="MD", height=H, width=W, root=root)
    with pytest.raises(ValueError, match=r"needs must be one of .*got \('image',\)"):
        training_data("synthetic", needs=("image",), height=H, width=W)
    for h, w in ((30, 64), (32, 100), (0, 64)):
        with pytest.raises(ValueError, match=rf"multiple of 32.*height={h} width={w}"):
            training_data("kitti", needs="M", height=h, width=w, root=root)
    with pytest.raises(ValueError, match=r"unknown KITTI training split 'eigen_zhu'.*"
                                         r"eigen_full.*eigen_zhou"):
        training_data("kitti", root=root, split="eigen_zhu", **ok)
    with pytest.raises(ValueError, match=r"'eigen_benchmark' is a test split"):
        training_data("kitti", root=root, split="eigen_benchmark", **ok)
    with pytest.raises(FileNotFoundError, match=r"split file .*nope/split.txt"):
        training_data("kitti", root=root, split=str(tmp_path / "nope" / "split.txt"), **ok)
    with pytest.raises(ValueError, match=r"data='kitti' needs root=.*image_02.*got root=None"):
        training_data("kitti", split=split, **ok)
    with pytest.raises(FileNotFoundError, match=r"kitti root .*missing does not exist "
                                                r"\(expected the KITTI raw layout"):
        training_data("kitti", root=tmp_path / "missing", split=split, **ok)
    with pytest.raises(ValueError, match=r"gt must be 'velodyne'.*got 'lidar'"):
        training_data("kitti", needs="depth", height=H, width=W, root=root, gt="lidar")
    with pytest.raises(ValueError, match="moving_objects is an option of data='synthetic'"):
        training_data("kitti", root=root, split=split, moving_objects=True, **ok)
    with pytest.raises(FileNotFoundError, match=r"image_02/data/0000000001.jpg.*image_ext"):
        training_data("kitti", root=root, split=split, image_ext=".jpg", **ok)
    with pytest.raises(ValueError, match="takes no root"):
        training_data("synthetic", root=root, **ok)
    with pytest.raises(ValueError, match="no split lists"):
        training_data("synthetic", split="eigen_zhou", **ok)
    with pytest.raises(ValueError, match="length must be a positive integer"):
        training_data("synthetic", length=0, **ok)
    # NYU: depth only, 224x288 only, a root with train files
    with pytest.raises(ValueError, match=r"NYU .*no stereo pair.*mode 'MS'"):
        training_data("nyu", needs="MS", height=224, width=288, root=tmp_path)
    with pytest.raises(ValueError, match=r"NYU trains at 224x288.*got 192x640"):
        training_data("nyu", needs="depth", height=192, width=640, root=tmp_path)
    with pytest.raises(ValueError, match=r"data='nyu' needs root=.*got root=None"):
        training_data("nyu", needs="depth", height=224, width=288)
    with pytest.raises(FileNotFoundError, match=r"NYU FastDepth folder"):
        training_data("nyu", needs="depth", height=224, width=288, root=tmp_path)
    with pytest.raises(ValueError, match="no split choice"):
        training_data("nyu", needs="depth", height=224, width=288, root=tmp_path, split="x")
