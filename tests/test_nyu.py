"""NYU Depth V2 (FastDepth HDF5 layout) on tiny fixture trees."""
import os

import h5py
import numpy as np
import pytest

import kitti_fixtures as kf
from jaxdepth.data import nyu
from jaxdepth.data.pipeline import Loader


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("nyu") / "nyudepthv2"
    written = kf.write_nyu_tree(root)
    return root, written


def _expected_eval(seed):
    rgb, depth = kf.nyu_arrays(seed)
    # PIL NEAREST ×0.5 keeps source pixel 2i+1; the 224×288 centre crop of 240×320 starts at
    # (8, 16), i.e. source row 17, col 33.
    rows, cols = slice(17, 17 + 2 * 224, 2), slice(33, 33 + 2 * 288, 2)
    return rgb.transpose(1, 2, 0)[rows, cols], depth[rows, cols]


def test_eval_samples_exact(nyu_root):
    root, written = nyu_root
    ds = nyu.NyuV2(root, "val", expected_count=3)
    assert len(ds) == 3
    for i in range(3):
        s = ds[i]
        rel = str(s["meta"]["name"])
        assert rel == os.path.join("val", "official", f"{i + 1:05d}.h5")
        img, depth = _expected_eval(written[rel])
        assert s["image"].shape == (224, 288, 3) and s["image"].dtype == np.float32
        assert s["depth"].shape == (224, 288, 1) and s["depth"].dtype == np.float32
        np.testing.assert_array_equal(s["image"], img / np.float32(255))
        np.testing.assert_array_equal(s["depth"][..., 0], depth)
        np.testing.assert_array_equal(s["mask"][..., 0], (depth > 1e-3) & (depth < 10))
    d, m = s["depth"][..., 0], s["mask"][..., 0]
    assert (d[1:, 0] == 0).all() and not m[:, 0].any()       # source column 33 is 0
    assert (d[0] == 12).all() and not m[0].any()             # source row 17 is 12 m


def test_subsets_roots_and_count_warning(nyu_root, tmp_path):
    root, written = nyu_root
    with pytest.warns(UserWarning, match="has 3 files, expected 654"):
        nyu.NyuV2(root, "val")
    train = nyu.NyuV2(root.parent, "train", mode="raw")  # parent of nyudepthv2/ works too
    assert [str(train[i]["meta"]["name"]) for i in range(len(train))] == [
        os.path.join("nyudepthv2", "train", s, f"{k:05d}.h5")
        for s, k in (("bathroom_0001", 1), ("bathroom_0001", 2), ("kitchen_0002", 1))]
    r = train[0]
    rgb, depth = kf.nyu_arrays(written[os.path.join("train", "bathroom_0001", "00001.h5")])
    np.testing.assert_array_equal(r["image"], rgb.transpose(1, 2, 0))
    np.testing.assert_array_equal(r["depth"][..., 0], depth)
    with pytest.raises(FileNotFoundError, match="val/official"):
        nyu.NyuV2(tmp_path, "val")
    os.makedirs(tmp_path / "val" / "official")
    with pytest.raises(FileNotFoundError, match="no NYU val files.*val/official"):
        nyu.NyuV2(tmp_path, "val")
    with pytest.raises(ValueError, match="empty"):
        nyu.NyuV2(tmp_path, "val", files=[])


def test_malformed_h5_files(tmp_path):
    rgb, depth = kf.nyu_arrays(0)
    p = kf.write_nyu_h5(tmp_path / "hwc.h5", rgb.transpose(1, 2, 0), depth)
    with pytest.raises(ValueError, match=r"hwc.h5.*'rgb'.*uint8 \[3, 480, 640\].*\[480, 640, 3\]"):
        nyu.read_nyu_h5(p)
    p = kf.write_nyu_h5(tmp_path / "u8depth.h5", rgb, depth.astype(np.uint8))
    with pytest.raises(ValueError, match=r"u8depth.h5.*'depth'.*float32 \[480, 640\]"):
        nyu.read_nyu_h5(p)
    with h5py.File(tmp_path / "nodepth.h5", "w") as f:
        f.create_dataset("rgb", data=rgb)
    with pytest.raises(ValueError, match=r"nodepth.h5.*missing dataset 'depth'"):
        nyu.read_nyu_h5(str(tmp_path / "nodepth.h5"))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="junk.h5.*HDF5"):
        nyu.read_nyu_h5(str(tmp_path / "junk.h5"))
    with pytest.raises(FileNotFoundError, match="gone.h5"):
        nyu.read_nyu_h5(str(tmp_path / "gone.h5"))


class _FixedRng:
    """Stands in for np.random.Generator with chosen draws (scale, angle, flip, jitter)."""

    def __init__(self, s, angle, flip, jitter=(1.0, 1.0, 1.0)):
        self.vals = [s, angle]
        self.flip, self.jitter = flip, np.array(jitter)

    def uniform(self, lo, hi, size=None):
        return self.jitter if size == 3 else self.vals.pop(0)

    def random(self):
        return 0.0 if self.flip else 0.9


def test_train_transform_geometry_and_determinism(nyu_root):
    root, _ = nyu_root
    raw = nyu.NyuV2(root, "val", mode="raw", expected_count=None)[1]
    ev = nyu.NyuV2(root, "val", expected_count=None)[1]
    # identity draws: depth equals the evaluation transform's (both nearest), flip mirrors it
    a = nyu.train_transform(raw, _FixedRng(1.0, 0.0, False))
    np.testing.assert_array_equal(a["depth"], ev["depth"])
    b = nyu.train_transform(raw, _FixedRng(1.0, 0.0, True))
    np.testing.assert_array_equal(b["depth"], ev["depth"][:, ::-1])
    np.testing.assert_array_equal(b["image"], a["image"][:, ::-1])
    # scale s divides depth: a constant 5 m scene gives 5/s on every valid pixel; rotation
    # brings in zero (invalid) corners
    const = dict(raw, depth=np.full((480, 640, 1), 5.0, np.float32))
    c = nyu.train_transform(const, _FixedRng(1.25, 0.0, False))
    assert c["depth"].shape == (224, 288, 1) and c["mask"].all()
    np.testing.assert_allclose(np.unique(c["depth"]), [4.0])
    r = nyu.train_transform(const, _FixedRng(1.0, 5.0, False))
    assert not r["mask"].all() and r["mask"].mean() > 0.9 and not r["mask"][0, 0, 0]
    np.testing.assert_allclose(np.unique(r["depth"][r["mask"]]), [5.0])
    # seeded: same generator seed, same sample; other seed, other sample
    x1 = nyu.train_transform(raw, np.random.default_rng(7))
    x2 = nyu.train_transform(raw, np.random.default_rng(7))
    x3 = nyu.train_transform(raw, np.random.default_rng(8))
    for k in ("image", "depth", "mask"):
        np.testing.assert_array_equal(x1[k], x2[k])
    assert not np.array_equal(x1["image"], x3["image"])
    assert x1["image"].dtype == np.float32 and 0 <= x1["image"].min() and x1["image"].max() <= 1
    assert str(x1["meta"]["name"]) == str(raw["meta"]["name"])


def test_loader_with_train_transform(nyu_root):
    root, _ = nyu_root
    src = nyu.NyuV2(root, "train", mode="raw")
    batches = [next(iter(Loader(src, 2, seed=3, transform=nyu.train_transform)))
               for _ in range(2)]
    assert batches[0]["image"].shape == (2, 224, 288, 3)
    assert batches[0]["mask"].shape == (2, 224, 288, 1) and batches[0]["mask"].dtype == bool
    np.testing.assert_array_equal(batches[0]["depth"], batches[1]["depth"])
