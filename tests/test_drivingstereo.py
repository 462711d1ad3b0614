"""DrivingStereo loader on a tiny fixture tree in the release's format (drivingstereo_fixtures)."""
import functools
import os

import numpy as np
import pytest
from PIL import Image

import drivingstereo_fixtures as dsf
from jaxdepth.data import drivingstereo as ds
from jaxdepth.data.kitti import resize_sparse_depth
from jaxdepth.data.pipeline import Loader

H, W = dsf.SIZE


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("drivingstereo")
    names = dsf.write_drivingstereo(root, "train")
    dsf.write_drivingstereo(root, "test")
    return str(root), names


def _rgb(c):
    return np.array(c, np.float32) / 255.0


# ----------------------------------------------------------------------------- decoding
def test_discovery_and_decoding(tree):
    root, names = tree
    d = ds.DrivingStereo(root, "train", keys=("image", "image_right", "depth", "mask"))
    assert len(d) == 4 and d.sequences == dsf.SEQUENCES
    assert [(f.sequence, f.name) for f in d.frames] == [
        (dsf.SEQUENCES[s], names[(s, k)]) for s in range(2) for k in range(2)]
    for i, (s, k) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        x = d[i]
        assert set(x) == {"image", "image_right", "depth", "mask", "meta"}
        assert x["image"].shape == (H, W, 3) and x["image"].dtype == np.float32
        assert x["depth"].shape == (H, W, 1) and x["depth"].dtype == np.float32
        raw = dsf.depth_values(s, k)
        np.testing.assert_array_equal(x["depth"][..., 0], raw.astype(np.float32) / 256)
        assert x["depth"][0, 5, 0] == 0 and x["depth"][3, 4, 0] == (256 * (2 + s + k) + 67) / 256
        np.testing.assert_array_equal(x["mask"][..., 0], raw > 0)
        # left / right paired by basename: each carries its frame's own colour
        np.testing.assert_allclose(x["image"].mean((0, 1)), _rgb(dsf.image_colour(s, k, False)),
                                   atol=3 / 255)
        np.testing.assert_allclose(x["image_right"].mean((0, 1)),
                                   _rgb(dsf.image_colour(s, k, True)), atol=3 / 255)
        assert str(x["meta"]["name"]) == names[(s, k)]
        assert str(x["meta"]["sequence"]) == dsf.SEQUENCES[s]
        assert x["meta"]["native_size"].tolist() == [H, W]
    assert d.path(d.frames[1], "image_right") == os.path.join(
        root, "train-right-image", dsf.SEQUENCES[0], names[(0, 1)] + ".jpg")


def test_test_split_folders_and_disparity(tree):
    root, names = tree
    d = ds.DrivingStereo(root, "test", keys=("image", "disparity", "depth"))
    assert len(d) == 4 and d.sequences == ("left-image-half-size",)
    assert d.path(d.frames[0], "depth") == os.path.join(
        root, "test-depth-map", "depth-map-half-size", d.frames[0].name + ".png")
    x = d[0]
    np.testing.assert_array_equal(x["disparity"][..., 0],
                                  np.where(x["depth"][..., 0] > 0, dsf.DISP_PX, 0))
    z = ds.disparity_to_depth(x["disparity"], 100.0)
    np.testing.assert_allclose(z[x["depth"] > 0], 100.0 / dsf.DISP_PX)
    assert (z[x["depth"] == 0] == 0).all()


def test_half_and_full_size_folders(tmp_path):
    dsf.write_drivingstereo(tmp_path, "test")
    full = tmp_path / "test-left-image" / "left-image-full-size"
    os.makedirs(full)
    Image.new("RGB", (2 * W, 2 * H)).save(full / "x.jpg")
    assert ds.DrivingStereo(tmp_path, "test", keys="image").sequences == ("left-image-half-size",)
    f = ds.DrivingStereo(tmp_path, "test", keys="image", size="full")
    assert f.sequences == ("left-image-full-size",) and f[0]["image"].shape == (2 * H, 2 * W, 3)
    assert len(ds.DrivingStereo(tmp_path, "test", keys="image", size=None)) == 5


def test_keys_only_left(tree):
    root, _ = tree
    x = ds.DrivingStereo(root, "train", keys=("image",))[0]
    assert set(x) == {"image", "meta"}


# ----------------------------------------------------------------------------- resize, crop
def test_resize(tree):
    root, _ = tree
    d = ds.DrivingStereo(root, "train", height=20, width=44,
                         keys=("image", "image_right", "depth", "disparity", "mask"))
    x = d[2]
    assert x["image"].shape == x["image_right"].shape == (20, 44, 3)
    assert x["depth"].shape == x["disparity"].shape == x["mask"].shape == (20, 44, 1)
    raw = dsf.depth_values(1, 0).astype(np.float32) / 256
    np.testing.assert_array_equal(x["depth"][..., 0], resize_sparse_depth(raw, 20, 44))
    # never averaged: each output is the minimum valid value of its 2x2 block
    blk = np.where(raw > 0, raw, np.inf).reshape(20, 2, 44, 2).min((1, 3))
    np.testing.assert_array_equal(x["depth"][..., 0], np.where(np.isinf(blk), 0, blk))
    np.testing.assert_allclose(x["disparity"][x["depth"] > 0], dsf.DISP_PX * 0.5, rtol=1e-6)
    np.testing.assert_allclose(x["image"].mean((0, 1)), _rgb(dsf.image_colour(1, 0, False)),
                               atol=3 / 255)
    assert x["meta"]["native_size"].tolist() == [H, W]


def test_crop_same_window_everywhere(tree):
    root, _ = tree
    keys = ("image", "image_right", "depth", "disparity", "mask")
    full = ds.DrivingStereo(root, "train", keys=keys)
    d = ds.DrivingStereo(root, "train", crop=(16, 32), keys=keys, rng=np.random.default_rng(3))
    tops = set()
    for _ in range(6):
        x = d[1]
        t, left = x["meta"]["crop"].tolist()
        tops.add((t, left))
        ref = full[1]
        for k in keys:
            assert x[k].shape[:2] == (16, 32)
            np.testing.assert_array_equal(x[k], ref[k][t:t + 16, left:left + 32])
    assert len(tops) > 1          # drawn anew each time from the generator
    # the same generator state gives the same window
    a = d.sample(0, np.random.default_rng(7))["meta"]["crop"]
    b = d.sample(0, np.random.default_rng(7))["meta"]["crop"]
    assert a.tolist() == b.tolist()
    # crop covers every position, the full-size crop only (0, 0)
    g = np.random.default_rng(0)
    one = ds.random_crop(full[0], g, (H, W))
    assert one["meta"]["crop"].tolist() == [0, 0]
    with pytest.raises(ValueError, match="does not fit"):
        ds.random_crop(full[0], g, (H + 1, W))
    with pytest.raises(ValueError, match="larger than the resize"):
        ds.DrivingStereo(root, "train", height=20, width=44, crop=(24, 32))


def test_batches_and_loader(tree):
    root, _ = tree
    d = ds.DrivingStereo(root, "train", crop=(16, 32), rng=0)
    b = d.get_batch(np.array([0, 3]))
    assert b["image"].shape == (2, 16, 32, 3) and b["depth"].shape == (2, 16, 32, 1)
    assert b["image_right"].shape == (2, 16, 32, 3)
    # the reproducible route: crop in the Loader's per-sample transform
    nocrop = ds.DrivingStereo(root, "train")
    mk = lambda: Loader(nocrop, 2, seed=5,  # noqa: E731
                        transform=functools.partial(ds.random_crop, size=(16, 32)))
    b1, b2 = next(mk()), next(mk())
    for k in ("image", "image_right", "depth"):
        np.testing.assert_array_equal(b1[k], b2[k])
    assert b1["depth"].shape == (2, 16, 32, 1)


# ----------------------------------------------------------------------------- errors
def test_missing_root_and_split(tmp_path, tree):
    root, _ = tree
    with pytest.raises(ValueError, match="root .*does not exist"):
        ds.DrivingStereo(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train-left-image"):
        ds.DrivingStereo(tmp_path)
    with pytest.raises(ValueError, match="split must be"):
        ds.DrivingStereo(root, "val")
    with pytest.raises(ValueError, match="unknown DrivingStereo keys"):
        ds.DrivingStereo(root, keys=("image", "stereo"))


def test_empty_tree(tmp_path):
    os.makedirs(tmp_path / "train-left-image")
    with pytest.raises(ValueError, match="no sequence folders"):
        ds.DrivingStereo(tmp_path)
    os.makedirs(tmp_path / "train-left-image" / "seqA")
    with pytest.raises(ValueError, match="empty"):
        ds.DrivingStereo(tmp_path)


def test_missing_right_or_depth(tmp_path):
    names = dsf.write_drivingstereo(tmp_path, "train")
    seq, name = dsf.SEQUENCES[1], names[(1, 0)]
    os.remove(tmp_path / "train-depth-map" / seq / f"{name}.png")
    want = str(tmp_path / "train-depth-map" / seq / f"{name}.png")
    with pytest.raises(FileNotFoundError, match="1 of 4") as e:
        ds.DrivingStereo(tmp_path)
    assert want in str(e.value) and name in str(e.value) and "missing='skip'" in str(e.value)
    assert isinstance(e.value, ValueError)
    # not requested -> fine; skip -> dropped with a warning
    assert len(ds.DrivingStereo(tmp_path, keys=("image", "image_right"))) == 4
    with pytest.warns(UserWarning, match="skipped 1"):
        d = ds.DrivingStereo(tmp_path, missing="skip")
    assert len(d) == 3 and [f.name for f in d.skipped] == [name]
    os.remove(tmp_path / "train-right-image" / seq / f"{name}.jpg")
    with pytest.raises(FileNotFoundError, match="no image_right at .*train-right-image"):
        ds.DrivingStereo(tmp_path, keys=("image", "image_right"))


def test_bad_depth_png_and_size_mismatch(tmp_path):
    names = dsf.write_drivingstereo(tmp_path, "train", sequences=dsf.SEQUENCES[:1])
    seq = dsf.SEQUENCES[0]
    p0 = tmp_path / "train-depth-map" / seq / f"{names[(0, 0)]}.png"
    Image.fromarray(np.full((H, W), 7, np.uint8)).save(p0)          # 8-bit PNG
    d = ds.DrivingStereo(tmp_path)
    with pytest.raises(ValueError, match="uint16 PNG depth map"):
        d[0]
    Image.new("RGB", (W, H)).save(p0, format="PNG")                 # RGB PNG
    with pytest.raises(ValueError, match="uint16 PNG depth map"):
        d[0]
    # right image of another size
    pr = tmp_path / "train-right-image" / seq / f"{names[(0, 1)]}.jpg"
    Image.new("RGB", (W - 8, H)).save(pr)
    with pytest.raises(ValueError, match="left/right sizes differ"):
        d[1]
    # depth of another size than the left image
    pd = tmp_path / "train-depth-map" / seq / f"{names[(0, 1)]}.png"
    Image.fromarray(np.ones((H, W - 8), np.uint16)).save(pd)
    with pytest.raises(ValueError, match="depth map is"):
        ds.DrivingStereo(tmp_path, keys=("image", "depth"))[1]


def test_option_errors(tree):
    root, _ = tree
    with pytest.raises(ValueError, match="both height and width"):
        ds.DrivingStereo(root, height=20)
    with pytest.raises(ValueError, match="missing must be"):
        ds.DrivingStereo(root, missing="drop")
    with pytest.raises(ValueError, match="sequences .* not found"):
        ds.DrivingStereo(root, sequences=["nope"])
    with pytest.raises(IndexError):
        ds.DrivingStereo(root)[4]
