"""KITTI raw loaders on tiny fixture trees in the official formats (see kitti_fixtures)."""
import gzip
import os

import numpy as np
import pytest

import kitti_fixtures as kf
from jaxdepth.data import kitti
from jaxdepth.data.pipeline import Loader
from jaxdepth.data.splits import KITTI_SPLITS, read_split, read_split_file

H, W = kf.SIZE


# ----------------------------------------------------------------------------- split lists
def test_shipped_split_lists():
    counts = {("eigen", "test"): 697, ("eigen_benchmark", "test"): 652,
              ("eigen_zhou", "train"): 39810, ("eigen_zhou", "val"): 4424,
              ("eigen_full", "train"): 45200, ("eigen_full", "val"): 1776}
    assert {(n, s) for n, subs in KITTI_SPLITS.items() for s in subs} == set(counts)
    for (name, subset), n in counts.items():
        e = read_split(name, subset)
        assert len(e) == n
        assert {x.side for x in e} <= {"l", "r"} and all(isinstance(x.frame, int) for x in e)
        assert all(x.folder.split("/")[1].startswith(x.folder.split("/")[0] + "_drive_")
                   for x in e)
    # eigen zero-pads its indices, eigen_benchmark does not: both parse to the same ints
    assert read_split("eigen")[0] == ("2011_09_26/2011_09_26_drive_0002_sync", 69, "l")
    assert read_split("eigen_benchmark")[:3] == [("2011_09_26/2011_09_26_drive_0002_sync", f, "l")
                                                 for f in (69, 54, 42)]
    assert read_split("eigen_zhou", "train")[0] == (
        "2011_09_26/2011_09_26_drive_0022_sync", 473, "r")


def test_split_file_errors(tmp_path):
    p = tmp_path / "missing.txt"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_split_file(p)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="empty"):
        read_split(str(tmp_path / "empty.txt"))
    (tmp_path / "bad.txt").write_text("2011_09_26/x_sync 3 l\n2011_09_26/x_sync three l\n")
    with pytest.raises(ValueError, match=r"bad.txt:2"):
        read_split_file(tmp_path / "bad.txt")
    (tmp_path / "side.txt").write_text("2011_09_26/x_sync 3 q\n")
    with pytest.raises(ValueError, match=r"side.txt:1"):
        read_split_file(tmp_path / "side.txt")
    with pytest.raises(ValueError, match="unknown KITTI split"):
        read_split("eigen_nope")
    with pytest.raises(ValueError, match="subsets"):
        read_split("eigen", "train")
    with gzip.open(tmp_path / "g.txt.gz", "wt") as f:
        f.write("2011_09_26/2011_09_26_drive_0002_sync 0000000005 r\n")
    assert read_split_file(tmp_path / "g.txt.gz") == [
        ("2011_09_26/2011_09_26_drive_0002_sync", 5, "r")]


# ----------------------------------------------------------------------------- calib, velodyne
def test_calib_intrinsics_and_baseline(tmp_path):
    kf.write_kitti_raw(tmp_path)
    cal = kitti.load_calib(str(tmp_path / kf.DATE))
    np.testing.assert_allclose(cal.K_norm(2), [[40 / 64, 0, 0.5], [0, 40 / 20, 0.5], [0, 0, 1]])
    np.testing.assert_allclose(cal.K_norm(3), cal.K_norm(2))
    assert cal.size[2] == (H, W)
    assert cal.baseline == pytest.approx(0.06 + 0.4732)
    np.testing.assert_allclose(kitti.scale_intrinsics(cal.K_norm(2), 10, 32),
                               [[20, 0, 16], [0, 20, 5], [0, 0, 1]])


def test_velodyne_projection_hand_computed(tmp_path):
    tree = kf.write_kitti_raw(tmp_path, frames=[0])
    velo = kitti.velodyne_path(str(tmp_path), tree.folder, 0)
    _, expected = kf.velodyne_points()
    for vel_depth, col in ((False, 0), (True, 1)):
        d = kitti.velodyne_depth_map(str(tmp_path / kf.DATE), velo, 2, vel_depth)
        assert d.shape == (H, W) and d.dtype == np.float32
        assert {tuple(map(int, rc)) for rc in np.argwhere(d > 0)} == set(expected)
        for (r, c), vals in expected.items():
            assert d[r, c] == pytest.approx(vals[col], abs=1e-5)


def _naive_generate_depth_map(points, P, h, w, vel_depth):
    """Monodepth2's generate_depth_map, written point by point from its description."""
    best = {}
    for p in points.astype(np.float64):
        if p[0] < 0:
            continue
        x = P @ np.array([p[0], p[1], p[2], 1.0])
        u, v = x[0] / x[2], x[1] / x[2]
        c, r = int(np.round(u)) - 1, int(np.round(v)) - 1
        if 0 <= c < w and 0 <= r < h:
            best[(r, c)] = min(best.get((r, c), np.inf), p[0] if vel_depth else x[2])
    depth = np.zeros((h, w))
    for (r, c), d in best.items():
        depth[r, c] = max(d, 0.0)
    return depth


def test_velodyne_projection_matches_pointwise_reference(tmp_path):
    # Real 2011_09_26 rotations (non-identity R_rect, real velo->cam), tiny image: many
    # points share a pixel, so the nearest-wins rule is exercised.
    kf.write_calib(str(tmp_path), size=(20, 64), fx=37.2, fy=37.2, cx=31.4, cy=9.2,
                   R_rect=kf.REAL_R_RECT, velo_R=kf.REAL_VELO_R, velo_T=kf.REAL_VELO_T)
    cal = kitti.load_calib(str(tmp_path))
    P = cal.velo_to_image(2)
    want = cal.P_rect[2] @ np.block([[kf.REAL_R_RECT, np.zeros((3, 1))], [np.zeros((1, 3)), 1]]) \
        @ np.block([[kf.REAL_VELO_R, kf.REAL_VELO_T[:, None]], [np.zeros((1, 3)), 1]])
    np.testing.assert_allclose(P, want)
    rng = np.random.default_rng(0)
    pts = np.stack([rng.uniform(-5, 60, 3000), rng.uniform(-25, 25, 3000),
                    rng.uniform(-2.5, 1.5, 3000), rng.uniform(0, 1, 3000)], 1).astype(np.float32)
    kf.write_velodyne(str(tmp_path / "scan.bin"), pts)
    for vel_depth in (False, True):
        got = kitti.velodyne_depth_map(str(tmp_path), str(tmp_path / "scan.bin"), 2, vel_depth)
        ref = _naive_generate_depth_map(pts, P, 20, 64, vel_depth)
        np.testing.assert_allclose(got, ref.astype(np.float32), rtol=1e-6)
        assert (got > 0).sum() > 200  # the scene is dense enough to collide


def test_malformed_and_missing_files(tmp_path):
    tree = kf.write_kitti_raw(tmp_path, frames=[0, 1, 2])
    date_dir = tmp_path / kf.DATE
    # calib with a truncated P_rect_02
    txt = (date_dir / "calib_cam_to_cam.txt").read_text().splitlines()
    txt = [" ".join(l.split()[:-1]) if l.startswith("P_rect_02") else l for l in txt]
    (date_dir / "calib_cam_to_cam.txt").write_text("\n".join(txt))
    with pytest.raises(ValueError, match=r"calib_cam_to_cam.txt.*'P_rect_02'.*12"):
        kitti.load_calib(str(date_dir))
    os.remove(date_dir / "calib_velo_to_cam.txt")
    with pytest.raises(FileNotFoundError, match="calib_velo_to_cam.txt"):
        kitti.read_calib_file(str(date_dir / "calib_velo_to_cam.txt"))
    # velodyne scan whose size is not a multiple of 4 floats
    velo = kitti.velodyne_path(str(tmp_path), tree.folder, 1)
    np.zeros(7, np.float32).tofile(velo)
    with pytest.raises(ValueError, match="0000000001.bin.*quadruples"):
        kitti.read_velodyne(velo)
    with pytest.raises(FileNotFoundError, match=r"velodyne_points/data"):
        kitti.read_velodyne(velo.replace("0001", "0009"))
    # an RGB PNG where a uint16 depth map is expected
    bad = tmp_path / "bad_gt.png"
    kf.write_png(str(bad), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="bad_gt.png.*uint16"):
        kitti.read_depth_png(str(bad))


# ----------------------------------------------------------------------------- training source
def test_training_sample_triplet_and_stereo(tmp_path):
    tree = kf.write_kitti_raw(tmp_path, frames=range(5))
    entries = [(tree.folder, 2, "l"), (tree.folder, 3, "r")]
    ds = kitti.KittiRaw(tmp_path, entries=entries, height=H, width=W, stereo=True)
    assert len(ds) == 2
    s = ds[0]
    assert s["image"].shape == (H, W, 3) and s["image"].dtype == np.float32
    np.testing.assert_array_equal(s["image"], kf.rgb_image(2, "l") / np.float32(255))
    assert sorted(s["frames"]) == [-1, 1]
    np.testing.assert_array_equal(s["frames"][-1] * 255, np.float32(kf.rgb_image(1, "l")))
    np.testing.assert_array_equal(s["frames"][1] * 255, np.float32(kf.rgb_image(3, "l")))
    assert all(bool(v) for v in s["frames_valid"].values())
    np.testing.assert_array_equal(s["stereo"] * 255, np.float32(kf.rgb_image(2, "r")))
    want_T = np.eye(4, dtype=np.float32)
    want_T[0, 3] = -0.1  # left target: Monodepth2's t_x = -0.1
    np.testing.assert_array_equal(s["stereo_T"], want_T)
    assert s["stereo_baseline"] == pytest.approx(0.5332)
    np.testing.assert_allclose(s["K"], [[40, 0, 32], [0, 40, 10], [0, 0, 1]])
    np.testing.assert_allclose(s["K_norm"], [[0.625, 0, 0.5], [0, 2, 0.5], [0, 0, 1]])
    assert str(s["meta"]["folder"]) == tree.folder and int(s["meta"]["frame"]) == 2
    assert str(s["meta"]["side"]) == "l" and tuple(s["meta"]["native_size"]) == (H, W)
    r = ds[1]  # right image: target from image_03, stereo from image_02, t_x = +0.1
    np.testing.assert_array_equal(r["image"] * 255, np.float32(kf.rgb_image(3, "r")))
    np.testing.assert_array_equal(r["stereo"] * 255, np.float32(kf.rgb_image(3, "l")))
    assert r["stereo_T"][0, 3] == np.float32(0.1)
    # network resolution: LANCZOS resize, intrinsics scaled
    small = kitti.KittiRaw(tmp_path, entries=entries, height=10, width=32,
                           intrinsics="monodepth2", frame_ids=(0,))
    t = small[0]
    assert t["image"].shape == (10, 32, 3) and "frames" not in t and "stereo" not in t
    assert np.allclose(t["image"][..., 0], 32 / 255, atol=1 / 255)  # constant plane survives
    np.testing.assert_allclose(t["K"], [[0.58 * 32, 0, 16], [0, 1.92 * 10, 5], [0, 0, 1]],
                               rtol=1e-6)


def test_sequence_ends_clamp_or_error(tmp_path):
    tree = kf.write_kitti_raw(tmp_path, frames=range(4))
    ends = [(tree.folder, 0, "l"), (tree.folder, 3, "l")]
    ds = kitti.KittiRaw(tmp_path, entries=ends, height=H, width=W)
    first, last = ds[0], ds[1]
    np.testing.assert_array_equal(first["frames"][-1], first["image"])  # clamped to frame 0
    np.testing.assert_array_equal(first["frames"][1] * 255, np.float32(kf.rgb_image(1, "l")))
    assert not first["frames_valid"][-1] and first["frames_valid"][1]
    np.testing.assert_array_equal(last["frames"][1], last["image"])
    assert not last["frames_valid"][1]
    strict = kitti.KittiRaw(tmp_path, entries=ends, height=H, width=W, sequence_ends="error")
    with pytest.raises(FileNotFoundError, match="sequence_ends"):
        strict[0]
    with pytest.raises(FileNotFoundError, match=r"image_02/data/0000000004.png.*sequence_ends"):
        strict[1]


def test_dataset_errors_name_paths(tmp_path):
    tree = kf.write_kitti_raw(tmp_path, frames=range(3))
    with pytest.raises(ValueError, match="empty"):
        kitti.KittiRaw(tmp_path, entries=[])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        kitti.KittiRaw(tmp_path / "nope", entries=tree.entries())
    gone = [("2011_09_28/2011_09_28_drive_0001_sync", 1, "l")]
    with pytest.raises(FileNotFoundError, match=r"none of the 1 sequences.*2011_09_28_drive_"
                                                r"0001_sync/image_02/data/0000000001.png"):
        kitti.KittiRaw(tmp_path, entries=gone)
    with pytest.raises(FileNotFoundError, match="1 of 2 sequences.*skip_missing"):
        kitti.KittiRaw(tmp_path, entries=tree.entries() + gone)
    os.remove(kitti.image_path(str(tmp_path), tree.folder, 1, "l"))
    with pytest.warns(UserWarning, match="skipped 2 of 4"):
        ds = kitti.KittiRaw(tmp_path, entries=tree.entries() + gone, skip_missing=True)
    assert [e.frame for e in ds.entries] == [0, 2] and ds.lines == [0, 2]
    ds = kitti.KittiRaw(tmp_path, entries=tree.entries(), height=H, width=W, frame_ids=(0,))
    with pytest.raises(FileNotFoundError, match=r"left image .*image_02/data/0000000001.png"):
        ds[1]
    os.remove(tmp_path / kf.DATE / "calib_cam_to_cam.txt")
    with pytest.raises(FileNotFoundError, match="calib_cam_to_cam.txt"):
        ds[0]


# ----------------------------------------------------------------------------- test source
def test_eigen_benchmark_improved_gt(tmp_path):
    tree = kf.write_kitti_raw(tmp_path, frames=range(5))
    ds = kitti.KittiTest(tmp_path, "eigen_benchmark", entries=tree.entries([1, 2, 3]),
                         height=10, width=32)
    s = ds[1]
    assert s["image"].shape == (10, 32, 3)
    assert s["depth"].shape == (H, W, 1) and s["depth"].dtype == np.float32
    np.testing.assert_array_equal(s["depth"][..., 0], kf.gt_depth(2))
    np.testing.assert_array_equal(s["mask"][..., 0], kf.gt_depth(2) > 0)  # no crop, no cap
    assert (s["depth"][s["mask"]] > 80).any()
    assert s["mask"].dtype == bool
    np.testing.assert_allclose(s["K"], [[20, 0, 16], [0, 20, 5], [0, 0, 1]])
    assert tuple(s["meta"]["native_size"]) == (H, W) and int(s["meta"]["index"]) == 1
    # frame 4 has no improved gt (sequence end), like the real data
    ds4 = kitti.KittiTest(tmp_path, "eigen_benchmark", entries=tree.entries([4]))
    with pytest.raises(FileNotFoundError, match=r"improved ground truth .*groundtruth/image_02/"
                                                r"0000000004.png"):
        ds4[0]


def test_improved_gt_in_depth_completion_layout(tmp_path):
    raw, gt = tmp_path / "raw", tmp_path / "data_depth_annotated"
    tree = kf.write_kitti_raw(raw, frames=range(4), gt_root=gt, gt_subset="val")
    assert os.path.isdir(gt / "val" / "2011_09_26_drive_0002_sync" / "proj_depth")
    with pytest.raises(FileNotFoundError, match="gt_root"):
        kitti.KittiTest(raw, entries=tree.entries([1]))[0]
    ds = kitti.KittiTest(raw, entries=tree.entries([1, 2]), gt_root=gt, height=H, width=W)
    np.testing.assert_array_equal(ds[1]["depth"][..., 0], kf.gt_depth(2))


def test_eigen_velodyne_gt_and_garg_crop(tmp_path):
    tree = kf.write_kitti_raw(tmp_path, frames=range(3))
    ds = kitti.KittiTest(tmp_path, "eigen", entries=tree.entries([1]), height=H, width=W)
    s = ds[0]
    d, m = s["depth"][..., 0], s["mask"][..., 0]
    assert d[13, 35] == pytest.approx(10.27, abs=1e-5) and d[9, 0] == pytest.approx(10.27, abs=1e-5)
    assert (d > 0).sum() == 2
    # Garg crop on 20x64: rows [8, 19), cols [2, 61)
    crop = np.zeros((H, W), bool)
    crop[8:19, 2:61] = True
    np.testing.assert_array_equal(kitti.garg_crop_mask(H, W), crop)
    assert m[13, 35] and not m[9, 0] and m.sum() == 1
    z = kitti.KittiTest(tmp_path, "eigen", entries=tree.entries([1]), velodyne_depth="z")[0]
    assert z["depth"][13, 35, 0] == pytest.approx(10.0, abs=1e-5)
    # eigen mask caps at 80 m and drops <= 1e-3
    g = np.array([[0.0, 5e-4, 2e-3, 79.9, 80.0, 85.0]], np.float32)
    g = np.repeat(g, 20, 0)
    np.testing.assert_array_equal(kitti.eval_mask(g, "garg")[12],
                                  [False, False, True, True, False, False])


def test_padded_test_batches_over_sizes(tmp_path):
    a = kf.write_kitti_raw(tmp_path, frames=range(3))
    b = kf.write_kitti_raw(tmp_path, date="2011_09_28", drive=1, frames=range(3), size=(18, 60))
    entries = a.entries([1]) + b.entries([1])
    with pytest.raises(ValueError, match="pad_to"):
        next(iter(Loader(kitti.KittiTest(tmp_path, entries=entries), 2, shuffle=False)))
    ds = kitti.KittiTest(tmp_path, entries=entries, pad_to=(20, 64), height=8, width=24)
    batch = next(iter(Loader(ds, 2, shuffle=False)))
    assert batch["depth"].shape == (2, 20, 64, 1) and batch["image"].shape == (2, 8, 24, 3)
    np.testing.assert_array_equal(batch["meta"]["native_size"], [[20, 64], [18, 60]])
    np.testing.assert_array_equal(batch["depth"][1, :18, :60, 0], kf.gt_depth(1, (18, 60)))
    assert not batch["mask"][1, 18:].any() and not batch["mask"][1, :, 60:].any()
    assert list(batch["meta"]["folder"]) == [a.folder, b.folder]


def test_standard_split_on_partial_tree(tmp_path):
    # eigen_benchmark's first lines are drive_0002 frames 69, 54, 42: write only those.
    kf.write_kitti_raw(tmp_path, frames=[42, 54, 69], gt_frames=[42, 54, 69])
    with pytest.raises(FileNotFoundError, match="sequences of KITTI split eigen_benchmark/test"):
        kitti.KittiTest(tmp_path, "eigen_benchmark")
    with pytest.warns(UserWarning, match="skipped 649 of 652"):
        ds = kitti.KittiTest(tmp_path, "eigen_benchmark", skip_missing=True, height=H, width=W)
    assert [(e.frame, n) for e, n in zip(ds.entries, ds.lines)] == [(69, 0), (54, 1), (42, 2)]
    np.testing.assert_array_equal(ds[2]["depth"][..., 0], kf.gt_depth(42))


def test_augment_is_seeded_and_flips_stereo(tmp_path):
    tree = kf.write_kitti_raw(tmp_path, frames=range(4))
    s = kitti.KittiRaw(tmp_path, entries=tree.entries([1]), height=H, width=W, stereo=True)[0]
    a1 = kitti.augment(s, np.random.default_rng(3), flip_p=1.0, jitter_p=1.0)
    a2 = kitti.augment(s, np.random.default_rng(3), flip_p=1.0, jitter_p=1.0)
    np.testing.assert_array_equal(a1["image_aug"], a2["image_aug"])
    np.testing.assert_array_equal(a1["image"], s["image"][:, ::-1])
    np.testing.assert_array_equal(a1["frames"][1], s["frames"][1][:, ::-1])
    assert a1["stereo_T"][0, 3] == np.float32(0.1) and s["stereo_T"][0, 3] == np.float32(-0.1)
    assert not np.array_equal(a1["image_aug"], a1["image"])
    assert set(a1["frames_aug"]) == {-1, 1} and a1["stereo_aug"].shape == (H, W, 3)
    n = kitti.augment(s, np.random.default_rng(0), flip_p=0.0, jitter_p=0.0)
    np.testing.assert_array_equal(n["image_aug"], s["image"])
