"""TFDS ``kitti_eigen`` builder (array_record, no TensorFlow) and the TFDS readers.

The builder is built from a fixture ``manual_dir`` in a tmp dir and read back with
``tfds.data_source`` / ``builder_from_directory`` (TFDS's ``DatasetBuilderTestCase`` would
need TensorFlow). Everything here runs without TensorFlow; the whole module is skipped only
where the optional packages tensorflow-datasets / array-record are not installed.
"""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets",
                           reason="optional extra jaxdepth[data] (tensorflow-datasets) missing")
pytest.importorskip("array_record", reason="optional extra jaxdepth[data] (array-record) missing")

import kitti_fixtures as kf  # noqa: E402
from jaxdepth.data import kitti, nyu, tfds_kitti  # noqa: E402
from jaxdepth.data.pipeline import Loader  # noqa: E402

H, W = kf.SIZE
FRAMES = [42, 54, 69]  # eigen / eigen_benchmark lines 2, 1, 0 (drive_0002, left)


def assert_samples_equal(a, b, path=""):
    assert set(map(str, a)) == set(map(str, b)), path
    for k in a:
        if isinstance(a[k], dict):
            assert_samples_equal(a[k], b[k], f"{path}/{k}")
        else:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=f"{path}/{k}")


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti_raw")
    kf.write_kitti_raw(root, frames=range(40, 72), gt_frames=FRAMES)
    return root


def test_core_imports_no_optional_packages():
    code = ("import sys, jaxdepth.data.kitti, jaxdepth.data.nyu, jaxdepth.data.pipeline, "
            "jaxdepth.data.splits, jaxdepth.data.tfds_kitti; "
            "bad = [m for m in ('tensorflow', 'tensorflow_datasets', 'grain', 'array_record') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_clear_error_without_tfds(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    monkeypatch.setattr(tfds_kitti, "_BUILDER", None)
    with pytest.raises(ImportError, match=r"jaxdepth\[data\].*TensorFlow itself is not needed"):
        tfds_kitti.builder_class()


def test_eigen_benchmark_build_and_read(kitti_root, tmp_path):
    data_dir = tmp_path / "tfds"
    with pytest.raises(FileNotFoundError, match="sequences of KITTI split eigen_benchmark/test"):
        tfds_kitti.build("eigen_benchmark", manual_dir=kitti_root, data_dir=data_dir)
    with pytest.warns(UserWarning, match="skipped 649 of 652"):
        tfds_kitti.build("eigen_benchmark", manual_dir=kitti_root, data_dir=data_dir,
                         skip_missing=True)
    prepared = data_dir / "kitti_eigen" / "eigen_benchmark" / "1.0.0"
    assert any(f.startswith("kitti_eigen-test.array_record") for f in os.listdir(prepared))
    # raw records through the public TFDS entry point, in split-list order
    ds = tfds.data_source("kitti_eigen/eigen_benchmark", split="test", data_dir=str(data_dir),
                          decoders={"depth_png": tfds.decode.SkipDecoding()})
    assert len(ds) == 3
    recs = [ds[i] for i in range(3)]
    assert [int(r["frame"]) for r in recs] == [69, 54, 42]
    assert [int(r["index"]) for r in recs] == [0, 1, 2]
    np.testing.assert_array_equal(recs[0]["image"], kf.rgb_image(69, "l"))
    np.testing.assert_array_equal(kitti.read_depth_png(recs[0]["depth_png"]), kf.gt_depth(69))
    np.testing.assert_allclose(recs[0]["K"], [[0.625, 0, 0.5], [0, 2, 0.5], [0, 0, 1]])
    assert recs[0]["image_path"].decode() == os.path.join(
        "2011_09_26", "2011_09_26_drive_0002_sync", "image_02", "data", "0000000069.png")
    # the Source gives exactly KittiTest's samples, without the KITTI folder
    src = tfds_kitti.KittiEigenTFDS("eigen_benchmark", data_dir=data_dir, height=10, width=32)
    with pytest.warns(UserWarning):
        ref = kitti.KittiTest(kitti_root, "eigen_benchmark", skip_missing=True, height=10, width=32)
    assert len(src) == len(ref) == 3
    for i in range(3):
        assert_samples_equal(src[i], ref[i])
    batch = next(iter(Loader(src, 1, shuffle=False)))
    assert batch["depth"].shape == (1, H, W, 1)
    assert "tensorflow" not in sys.modules


def test_eigen_velodyne_config(kitti_root, tmp_path):
    # eigen lists 9 frames of drive_0002 in 40..71 (velodyne scans exist for all of them)
    with pytest.warns(UserWarning, match="skipped 688 of 697"):  # via the TF-free command line
        tfds_kitti.main(["--manual_dir", str(kitti_root), "--data_dir", str(tmp_path),
                         "--config", "eigen", "--skip_missing"])
    src = tfds_kitti.KittiEigenTFDS("eigen", data_dir=tmp_path, height=H, width=W)
    with pytest.warns(UserWarning):
        ref = kitti.KittiTest(kitti_root, "eigen", skip_missing=True, height=H, width=W)
    assert len(src) == len(ref) == 9
    assert [int(src[i]["meta"]["frame"]) for i in range(3)] == [69, 54, 42]
    for i in range(9):
        assert_samples_equal(src[i], ref[i])
    s = src[0]
    assert s["depth"][13, 35, 0] == pytest.approx(10.27, abs=1e-5) and s["mask"].sum() == 1
    ds = tfds.data_source("kitti_eigen/eigen", split="test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(ds[0]["depth_rc"], [[9, 0], [13, 35]])


def test_training_index_config_from_custom_lists(kitti_root, tmp_path):
    folder = "2011_09_26/2011_09_26_drive_0002_sync"
    train = kf.write_split(tmp_path / "train_files.txt",
                           [(folder, 41, "l"), (folder, 50, "r"), (folder, 70, "l")])
    val = kf.write_split(tmp_path / "val_files.txt", [(folder, 60, "r")])
    spec = tfds_kitti.KittiEigenSpec("fixture_zhou", ("train", "val"), False,
                                     split_files=(("train", train), ("val", val)))
    tfds_kitti.build(spec, manual_dir=kitti_root, data_dir=tmp_path / "tfds")
    path = tmp_path / "tfds" / "kitti_eigen" / "fixture_zhou" / "1.0.0"
    src = tfds_kitti.KittiEigenTFDS(path=path, subset="train", height=H, width=W, stereo=True)
    ref = kitti.KittiRaw(kitti_root, train, "train", height=H, width=W, stereo=True)
    assert len(src) == 3
    for i in range(3):
        assert_samples_equal(src[i], ref[i])
    assert len(tfds_kitti.KittiEigenTFDS(path=path, subset="val")) == 1
    rec = tfds.builder_from_directory(str(path)).as_data_source(split="train")[1]
    assert list(rec["frame_range"]) == [40, 71] and rec["stereo_path"].decode().endswith(
        os.path.join("image_02", "data", "0000000050.png"))
    with pytest.raises(ValueError, match="not 'test'"):
        tfds_kitti.KittiEigenTFDS(path=path, subset="test")
    with pytest.raises(FileNotFoundError, match="build"):
        tfds_kitti.KittiEigenTFDS("eigen_zhou", data_dir=tmp_path / "nothing")


def _png(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def test_nyu_depth_v2_through_tfds_data_source(tmp_path):
    # Prepare TFDS's nyu_depth_v2 (same name, version, features) from fixture arrays: the
    # real builder downloads the FastDepth tar and uses tf.io.gfile + TensorFlow's PNG
    # encoder, so here images are handed over as PNG bytes. Reading is TFDS's own
    # nyu_depth_v2 builder via tfds.data_source, with no TensorFlow.
    class FakeNyu(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "nyu_depth_v2"
        VERSION = tfds.core.Version("0.0.1")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(480, 640, 3)),
                "depth": tfds.features.Tensor(shape=(480, 640), dtype=np.float16)}),
                supervised_keys=("image", "depth"))

        def _split_generators(self, dl_manager):
            return {"validation": self._generate_examples([0, 1]),
                    "train": self._generate_examples([2])}

        def _generate_examples(self, seeds):
            for s in seeds:
                rgb, depth = kf.nyu_arrays(s)
                yield f"official_{s:05d}.h5", {"image": _png(rgb.transpose(1, 2, 0)),
                                               "depth": depth.astype(np.float16)}

    FakeNyu(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    src = tfds_kitti.NyuTFDS("validation", data_dir=str(tmp_path))
    assert len(src) == 2
    seeds = []
    for i in range(2):
        s = src[i]
        rgb_seed = int(s["image"][0, 0, 2] * 255)  # blue channel = seed
        seeds.append(rgb_seed)
        rgb, depth = kf.nyu_arrays(rgb_seed)
        ref = nyu.eval_transform(rgb.transpose(1, 2, 0),
                                 depth.astype(np.float16).astype(np.float32))
        for k in ("image", "depth", "mask"):
            np.testing.assert_array_equal(s[k], ref[k])
    assert sorted(seeds) == [0, 1]
    raw = tfds_kitti.NyuTFDS("train", data_dir=str(tmp_path), mode="raw")[0]
    assert raw["image"].shape == (480, 640, 3) and raw["depth"].shape == (480, 640, 1)
    assert next(iter(Loader(src, 2)))["image"].shape == (2, 224, 288, 3)
