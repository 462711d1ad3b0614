"""Segmentation data: the procedural scenes as segmentation data, Cityscapes, and the SMIYC
OoD datasets on tiny fixture trees in their real on-disk layouts."""
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image, features

import segmentation_fixtures as sf
from jaxdepth.data import cityscapes as cs
from jaxdepth.data import segmentation as seg
from jaxdepth.data import smiyc
from jaxdepth.data import synthetic as syn
from jaxdepth.data.pipeline import Loader

H, W = 32, 64            # synthetic renders: one compiled program (anomalies on) for the file
WEBP = features.check("webp")


def _naive_bilinear(img, h, w):
    """Bilinear resize with explicit loops: the triangle filter, widened by the reduction
    factor when reducing (antialiasing), on half-pixel centres, weights renormalised at the
    borders."""
    def axis(x, n_out):
        n_in = x.shape[0]
        scale = n_in / n_out
        support = max(scale, 1.0)
        out = np.zeros((n_out,) + x.shape[1:])
        for i in range(n_out):
            centre = (i + 0.5) * scale
            wts = [max(0.0, 1 - abs((j + 0.5 - centre) / support)) for j in range(n_in)]
            out[i] = sum(wj * x[j] for j, wj in enumerate(wts)) / sum(wts)
        return out
    img = np.asarray(img, np.float64)
    return axis(axis(img, h).swapaxes(0, 1), w).swapaxes(0, 1)


def _naive_nearest(lab, h, w):
    """Nearest (the source pixel under each output pixel's centre), with explicit loops."""
    H0, W0 = lab.shape
    out = np.zeros((h, w), lab.dtype)
    for i in range(h):
        for j in range(w):
            out[i, j] = lab[int((i + 0.5) * H0 / h), int((j + 0.5) * W0 / w)]
    return out


def _naive_map(raw, rule):
    """Apply a per-value rule ``value -> output`` with a Python loop over pixels."""
    return np.array([[rule(int(v)) for v in row] for row in raw], np.uint8)


# ============================================================================ synthetic
@pytest.fixture(scope="module")
def ood_scenes(cheap_compilation):
    src = seg.SyntheticSegmentation("ood", seed=3, height=H, width=W, size=5)
    ref = syn.sample_batch(np.arange(4), seed=3, split="ood", height=H, width=W,
                           keys=("image", "labels", "anomaly"))
    return src, jax.tree.map(np.asarray, ref)


def test_synthetic_ood_split_conventions(ood_scenes):
    src, ref = ood_scenes
    assert src.has_ood and src.keys == ("image", "label", "ood") and len(src) == 5
    b = src.get_batch(np.arange(4))
    assert set(b) == {"image", "label", "ood"}
    assert b["label"].dtype == np.uint8 and b["ood"].dtype == np.uint8
    assert b["label"].shape == b["ood"].shape == (4, H, W) and b["image"].shape == (4, H, W, 3)
    np.testing.assert_array_equal(b["image"], ref["image"])
    anomaly = ref["anomaly"]
    assert anomaly.sum() > 20                           # the scenes do contain anomalies
    # ood: exactly the scene's anomaly mask, no void
    np.testing.assert_array_equal(b["ood"], anomaly.astype(np.uint8))
    # label: the scene class where it is a training class, 255 on the anomaly
    np.testing.assert_array_equal(b["label"][~anomaly], ref["labels"][~anomaly])
    assert (b["label"][anomaly] == 255).all()
    assert set(np.unique(b["label"])) <= set(range(7)) | {255}
    assert len(seg.SYNTHETIC_CLASSES) == 7 and "anomaly" not in seg.SYNTHETIC_CLASSES
    # per-sample access and the Loader give the same samples
    one = src[2]
    for k in src.keys:
        np.testing.assert_array_equal(one[k], b[k][2])
    with Loader(src, 2, shuffle=False) as loader:
        first = next(loader)
    np.testing.assert_array_equal(first["ood"], b["ood"][:2])
    assert src.names[:2] == ["ood_000000", "ood_000001"]


def test_synthetic_road_roi_and_train_split(ood_scenes):
    _, ref = ood_scenes
    road = seg.SyntheticSegmentation("ood", seed=3, height=H, width=W, size=2, ood_roi="road")
    got = road.get_batch(np.array([0, 1]))["ood"]
    rule = {syn.ROAD: 0, syn.ANOMALY: 1}
    for k in range(2):
        np.testing.assert_array_equal(
            got[k], _naive_map(ref["labels"][k], lambda v: rule.get(v, 255)))
    assert (got == 255).any() and (got == 0).any() and (got == 1).any()
    # the training split has no anomalies, hence no ``ood`` (checked without rendering)
    train = seg.SyntheticSegmentation("train", height=H, width=W)
    assert not train.has_ood and train.keys == ("image", "label")
    assert len(train) == syn.SyntheticSource.DEFAULT_LENGTH["train"]
    # train scenes with anomalies (same compiled program): anomaly pixels ignored in label
    s = seg.SyntheticSegmentation("train", height=H, width=W, size=3, anomalies=True)[1]
    assert set(s) == {"image", "label", "ood"}
    np.testing.assert_array_equal(s["ood"] == 1, s["label"] == 255)
    with pytest.raises(ValueError, match="ood_roi must be one of"):
        seg.SyntheticSegmentation("ood", ood_roi="sky")
    with pytest.raises(ValueError, match="unknown split"):
        seg.SyntheticSegmentation("extra")


def test_train_and_ood_label_maps():
    labels = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_array_equal(seg.train_labels(labels), [[0, 1, 2, 3], [4, 5, 6, 255]])
    np.testing.assert_array_equal(seg.ood_labels(labels), [[0, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(seg.ood_labels(labels, "road"),
                                  [[0, 255, 255, 255], [255, 255, 255, 1]])
    assert seg.train_labels(labels).dtype == np.uint8
    with pytest.raises(ValueError, match=r"scene class ids in \[0, 8\).*\[0, 8\]"):
        seg.train_labels(np.array([0, 8]))
    with pytest.raises(ValueError, match="integer scene class ids"):
        seg.ood_labels(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="roi must be one of"):
        seg.ood_labels(labels, "sky")


def test_palettes_colorize_and_cityscapes_mapping():
    # the synthetic palette is Cityscapes' colour of the same class
    colour = {lab.name: lab.color for lab in cs.CITYSCAPES_LABELS}
    for name, rgb in zip(seg.SYNTHETIC_CLASSES, seg.SYNTHETIC_PALETTE):
        assert tuple(int(v) for v in rgb) == colour[name]
    assert [cs.TRAIN_CLASSES.index(n) for n in seg.SYNTHETIC_CLASSES] == \
        seg.SYNTHETIC_TO_CITYSCAPES.tolist()
    lab = np.array([[0, 6, 255], [3, 255, 1]], np.uint8)
    got = seg.colorize(lab, seg.SYNTHETIC_PALETTE, ignore_color=(9, 8, 7))
    assert got.dtype == np.uint8 and got.shape == (2, 3, 3)
    for i in range(2):
        for j in range(3):
            want = (9, 8, 7) if lab[i, j] == 255 else tuple(seg.SYNTHETIC_PALETTE[lab[i, j]])
            assert tuple(got[i, j]) == want
    np.testing.assert_array_equal(seg.colorize(np.array([[18]]), cs.PALETTE)[0, 0],
                                  (119, 11, 32))        # bicycle
    with pytest.raises(ValueError, match=r"\[0, 7\) or be 255.*\[7\]"):
        seg.colorize(np.array([[7]]), seg.SYNTHETIC_PALETTE)
    with pytest.raises(ValueError, match=r"palette must be \[C, 3\]"):
        seg.colorize(lab, np.zeros((4, 4), np.uint8))


def test_resize_helpers_against_independent_implementations():
    rng = np.random.default_rng(0)
    img = rng.random((6, 10, 3)).astype(np.float32)
    lab = rng.integers(0, 256, (6, 10)).astype(np.uint8)
    for h, w in ((3, 5), (9, 16), (4, 7)):
        np.testing.assert_allclose(seg.resize_image(img, h, w), _naive_bilinear(img, h, w),
                                   atol=1e-5)
        np.testing.assert_array_equal(seg.resize_label(lab, h, w), _naive_nearest(lab, h, w))
    out = seg.resize_sample({"image": img, "label": lab, "ood": lab, "k": np.eye(3)}, 9, 16)
    np.testing.assert_array_equal(out["ood"], _naive_nearest(lab, 9, 16))
    np.testing.assert_array_equal(out["k"], np.eye(3))
    with pytest.raises(ValueError, match="height must be a positive integer"):
        seg.resize_image(img, 0, 4)
    with pytest.raises(ValueError, match=r"label must be uint8 \[H, W\]"):
        seg.resize_label(lab.astype(np.int32), 3, 5)


# ============================================================================ Cityscapes
def test_cityscapes_label_table():
    table = cs.CITYSCAPES_LABELS
    assert len(table) == 35 and [x.id for x in table] == [*range(34), -1]
    assert cs.TRAIN_CLASSES == (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck",
        "bus", "train", "motorcycle", "bicycle")
    for x in table:   # evaluated exactly when it has a train id; instances: humans, vehicles
        assert x.ignore_in_eval == (x.train_id in (255, -1))
        assert x.has_instances == (24 <= x.id <= 33)
        assert x.category == ("void", "flat", "construction", "object", "nature", "sky",
                              "human", "vehicle")[x.category_id]
    named = {x.name: x for x in table}
    assert named["road"].color == (128, 64, 128) and named["car"].train_id == 13
    assert named["license plate"].color == (0, 0, 142) and named["license plate"].train_id == -1
    assert cs.PALETTE.shape == (19, 3) and cs.PALETTE.dtype == np.uint8
    assert tuple(cs.PALETTE[10]) == (70, 130, 180)             # sky
    # label -> train id: the lookup against a loop over the table rows, and a hand case
    ids = np.array([*range(34), -1, 7, 26])
    row = {x.id: x.train_id for x in table}
    want = [255 if row[int(i)] in (255, -1) else row[int(i)] for i in ids]
    np.testing.assert_array_equal(cs.label_to_train_id(ids), want)
    np.testing.assert_array_equal(cs.label_to_train_id(np.array([7, 26, 0, 33, -1, 9])),
                                  [0, 13, 255, 18, 255, 255])
    assert cs.label_to_train_id(np.zeros((2, 2), np.uint8)).dtype == np.uint8
    for t in range(19):
        assert cs.LABEL_TO_TRAIN_ID[cs.TRAIN_ID_TO_LABEL_ID[t]] == t
    assert cs.TRAIN_ID_TO_LABEL_ID[255] == 0                    # 'unlabeled' is listed first
    with pytest.raises(ValueError, match=r"0\.\.33, or -1.*\[-2, 34\]"):
        cs.label_to_train_id(np.array([3, 34, -2]))
    with pytest.raises(ValueError, match="must be integers"):
        cs.label_to_train_id(np.array([1.0]))


@pytest.fixture(scope="module")
def city_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    written = sf.write_cityscapes(root, {"train": {"bochum": 1, "aachen": 2},
                                         "val": {"frankfurt": 1}}, train_ids=True)
    written.update(sf.write_cityscapes(root, {"test": {"berlin": 1}}, labels=False))
    return root, written


def test_cityscapes_files_labels_and_resize(city_root):
    root, written = city_root
    row = {x.id: x.train_id for x in cs.CITYSCAPES_LABELS}
    ds = cs.Cityscapes(root, "train")
    assert ds.names == ["aachen_000000_000019", "aachen_000001_000020", "bochum_000000_000019"]
    assert len(ds) == 3 and ds.expected_length == 2975 and ds.has_labels
    for i, name in enumerate(ds.names):
        rgb, ids, _ = written[name]
        s = ds[i]
        assert set(s) == {"image", "label"} and s["image"].dtype == np.float32
        np.testing.assert_array_equal(s["image"], rgb / np.float32(255))
        np.testing.assert_array_equal(
            s["label"], _naive_map(ids, lambda v: row[v] if 0 <= row[v] < 255 else 255))
    # labelTrainIds exist beside labelIds; they are read only when asked for, and as-is
    np.testing.assert_array_equal(cs.Cityscapes(root, "train", label_file="labelTrainIds")[0]
                                  ["label"], written[ds.names[0]][2])
    assert not np.array_equal(ds[0]["label"], written[ds.names[0]][2])
    small = cs.Cityscapes(root, "val", height=8, width=12)[0]
    rgb, ids, _ = written["frankfurt_000000_000019"]
    np.testing.assert_allclose(small["image"], _naive_bilinear(rgb / 255.0, 8, 12), atol=1e-5)
    np.testing.assert_array_equal(small["label"],
                                  _naive_nearest(cs.label_to_train_id(ids), 8, 12))
    test = cs.Cityscapes(root, "test")                  # test labels are not public
    assert not test.has_labels and set(test[0]) == {"image"}
    with Loader(ds, 2, shuffle=False) as loader:
        batch = next(loader)
    assert batch["image"].shape == (2, *sf.SIZE, 3) and batch["label"].shape == (2, *sf.SIZE)


def test_cityscapes_errors(city_root, tmp_path):
    root, _ = city_root
    with pytest.raises(ValueError, match=r"unknown Cityscapes split 'training'.*'train'"):
        cs.Cityscapes(root, "training")
    with pytest.raises(FileNotFoundError, match="leftImg8bit/train/<city>"):
        cs.Cityscapes(tmp_path, "train")
    with pytest.raises(ValueError, match="complete release has 500"):
        cs.Cityscapes(root, "val", strict=True)
    with pytest.raises(ValueError, match="give both height and width"):
        cs.Cityscapes(root, "val", height=8)
    with pytest.raises(ValueError, match="label_file must be"):
        cs.Cityscapes(root, "val", label_file="color")
    with pytest.raises(FileNotFoundError, match="gtFine/test/<city>"):
        cs.Cityscapes(root, "test", labels=True)
    broken = tmp_path / "broken"
    sf.write_cityscapes(broken, {"val": {"lindau": 2}})
    os.remove(broken / "gtFine" / "val" / "lindau" / "lindau_000001_000020_gtFine_labelIds.png")
    with pytest.raises(FileNotFoundError,
                       match=r"1 of 2 .*lindau_000001_000020_gtFine_labelIds\.png"):
        cs.Cityscapes(broken, "val")
    assert len(cs.Cityscapes(broken, "val", labels=False)) == 2
    sf.write_image(broken / "gtFine" / "val" / "lindau" / "lindau_000001_000020_gtFine_labelIds.png",
                   np.full(sf.SIZE, 40, np.uint8))
    with pytest.raises(ValueError, match=r"lindau_000001_000020_gtFine_labelIds\.png.*\[40\]"):
        cs.Cityscapes(broken, "val")[1]
    sf.write_image(broken / "leftImg8bit" / "val" / "lindau" / "lindau_12_leftImg8bit.png",
                   sf.rgb_pattern(0))
    with pytest.raises(ValueError, match="expected a Cityscapes name"):
        cs.Cityscapes(broken, "val", labels=False)


def test_train_transform():
    img = sf.rgb_pattern(3).astype(np.float32) / 255
    lab = sf.cycle_pattern(0, range(40))
    sample = {"image": img, "label": lab, "ood": lab[::-1].copy(), "other": np.arange(3)}
    h, w = sf.SIZE
    flips = set()
    for seed in range(6):           # scale 1: the crop is a slice at the drawn offsets
        got = cs.train_transform(sample, np.random.default_rng(seed), crop_size=(8, 12),
                                 scale_range=(1.0, 1.0))
        r = np.random.default_rng(seed)
        r.uniform(1.0, 1.0)
        top, left = r.integers(0, h - 8 + 1), r.integers(0, w - 12 + 1)
        flip = r.random() < 0.5
        flips.add(bool(flip))
        for k in ("image", "label", "ood"):
            want = sample[k][top:top + 8, left:left + 12]
            np.testing.assert_array_equal(got[k], want[:, ::-1] if flip else want)
        np.testing.assert_array_equal(got["other"], np.arange(3))
    assert flips == {True, False}
    # scale 2, crop = the whole scaled image: nearest doubling of the label
    got = cs.train_transform(sample, np.random.default_rng(1), crop_size=(2 * h, 2 * w),
                             scale_range=(2.0, 2.0), flip_prob=0.0)
    np.testing.assert_array_equal(got["label"], np.repeat(np.repeat(lab, 2, 0), 2, 1))
    np.testing.assert_allclose(got["image"], _naive_bilinear(img, 2 * h, 2 * w), atol=1e-5)
    # crop larger than the image: padded bottom/right with 0 (image) and 255 (maps)
    got = cs.train_transform(sample, np.random.default_rng(2), crop_size=(h + 3, w + 5),
                             scale_range=(1.0, 1.0), flip_prob=0.0)
    np.testing.assert_array_equal(got["label"][:h, :w], lab)
    assert (got["label"][h:] == 255).all() and (got["ood"][:, w:] == 255).all()
    assert (got["image"][h:] == 0).all() and got["image"].shape == (h + 3, w + 5, 3)
    with pytest.raises(ValueError, match="scale_range"):
        cs.train_transform(sample, np.random.default_rng(0), scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="uint8 label map; 'depth' is float32"):
        cs.train_transform({"image": img, "depth": np.ones((h, w), np.float32)},
                           np.random.default_rng(0))


# ============================================================================ SMIYC
def test_ood_from_raw_rule():
    raw = np.random.default_rng(0).integers(0, 256, (5, 7)).astype(np.uint8)
    raw[0, :4] = (0, 1, 2, 200)
    np.testing.assert_array_equal(
        smiyc.ood_from_raw(raw, usual=1, anomaly=(2, 200)),
        _naive_map(raw, lambda v: 0 if v == 1 else 1 if 2 <= v <= 200 else 255))
    np.testing.assert_array_equal(
        smiyc.ood_from_raw(raw, usual=0, anomaly=1),
        _naive_map(raw, lambda v: {0: 0, 1: 1}.get(v, 255)))
    with pytest.raises(ValueError, match=r"\(lo, hi\) with lo <= hi"):
        smiyc.ood_from_raw(raw, usual=0, anomaly=(5, 2))


def _track_rule(v):
    return {0: 0, 1: 1}.get(v, 255)


def test_road_anomaly(tmp_path):
    fids = ["zebra0001", "validation0003", "airplane0000", "validation0000", "validation0010"]
    written = sf.write_road_anomaly(tmp_path, fids, labelled=fids[1:])
    val = smiyc.RoadAnomaly21(tmp_path, "validation")          # parent of dataset_AnomalyTrack
    assert val.names == ["validation0000", "validation0003"] and val.has_labels
    assert val.expected_length == 10
    for i, fid in enumerate(val.names):
        rgb, raw = written[fid]
        s = val[i]
        assert set(s) == {"image", "ood"} and s["ood"].dtype == np.uint8
        np.testing.assert_array_equal(s["ood"], _naive_map(raw, _track_rule))
        assert np.abs(s["image"] * 255 - rgb).max() <= 4        # JPEG at quality 100
    test = smiyc.RoadAnomaly21(tmp_path / "dataset_AnomalyTrack", "test", labels=False)
    assert test.names == ["airplane0000", "validation0010", "zebra0001"]
    assert set(test[0]) == {"image"}
    # zebra0001 has no label file: 'all' / 'test' cannot load labels for every frame
    with pytest.raises(FileNotFoundError, match=r"1 of 5 label files missing.*zebra0001"):
        smiyc.RoadAnomaly21(tmp_path, "all")
    with pytest.raises(FileNotFoundError, match="zebra0001_labels_semantic.png"):
        smiyc.RoadAnomaly21(tmp_path, "test", labels=True)
    with pytest.raises(ValueError, match="RoadAnomaly21-validation .* has 2 frames; SMIYC "
                                         "expects 10"):
        smiyc.RoadAnomaly21(tmp_path, "validation", strict=True)
    with pytest.raises(ValueError, match=r"unknown RoadAnomaly21 split 'val'.*'validation'"):
        smiyc.RoadAnomaly21(tmp_path, "val")
    with pytest.raises(FileNotFoundError, match="dataset_AnomalyTrack folder"):
        smiyc.RoadAnomaly21(tmp_path / "nothing")
    small = smiyc.RoadAnomaly21(tmp_path, "validation", height=8, width=16)
    with Loader(small, 2, shuffle=False) as loader:
        batch = next(loader)
    assert batch["image"].shape == (2, 8, 16, 3)
    np.testing.assert_array_equal(
        batch["ood"][1], _naive_nearest(_naive_map(written["validation0003"][1], _track_rule),
                                        8, 16))


OBSTACLE_FIDS = ["curvy-street_01", "driveway_02", "snowstorm1_03", "snowstorm2_04",
                 "validation_1", "validation_19", "validation_190", "validation_2",
                 "validation_25", "darkasphalt2_05", "gravel_06"]


def test_obstacle_track_split_rules():
    want = {"test": ["curvy-street_01", "darkasphalt2_05", "gravel_06"],
            "night": ["driveway_02"],
            "snowstorm": ["snowstorm1_03", "snowstorm2_04"],
            "validation": ["validation_1", "validation_2"],
            "noNight": sorted(set(OBSTACLE_FIDS) - {"driveway_02"}),
            "all": sorted(OBSTACLE_FIDS)}
    for split, fids in want.items():
        assert smiyc.obstacle_track_fids(OBSTACLE_FIDS[::-1], split) == fids, split
    counts = {k: v[1] for k, v in smiyc.OBSTACLE_SPLITS.items()}
    assert counts == {"test": 327, "night": 30, "snowstorm": 55, "noNight": 382,
                      "validation": 30, "all": None}
    assert counts["test"] + counts["night"] + counts["snowstorm"] == 412  # the paper's count
    with pytest.raises(ValueError, match="scene 'moon'"):
        smiyc.obstacle_track_fids(["moon_1"], "all")
    with pytest.raises(ValueError, match="unknown RoadObstacle21 split"):
        smiyc.obstacle_track_fids(OBSTACLE_FIDS, "day")


def test_road_obstacle_files(tmp_path):
    if not WEBP:    # this PIL cannot write .webp: the loader must say why it cannot read them
        os.makedirs(tmp_path / "dataset_ObstacleTrack" / "images")
        with pytest.raises(RuntimeError, match="WebP"):
            smiyc.RoadObstacle21(tmp_path, "test")
        return
    written = sf.write_road_obstacle(tmp_path, OBSTACLE_FIDS)
    ds = smiyc.RoadObstacle21(tmp_path, "snowstorm")
    assert ds.names == ["snowstorm1_03", "snowstorm2_04"] and ds.expected_length == 55
    for i, fid in enumerate(ds.names):
        rgb, raw = written[fid]
        np.testing.assert_array_equal(ds[i]["image"], rgb / np.float32(255))  # lossless
        np.testing.assert_array_equal(ds[i]["ood"], _naive_map(raw, _track_rule))
    with pytest.raises(ValueError, match="expects 30"):
        smiyc.RoadObstacle21(tmp_path, "validation", strict=True)


LAF_TEST = sorted(
    [f"01_Hanns_Klemm_Str_45_{s:06d}_{t:06d}" for s in (1, 6, 7) for t in (10, 20)]
    + [f"04_Maurener_Weg_8_000002_{t:06d}" for t in range(30, 110, 10)]
    + [f"15_Rechbergstr_Deckenpfronn_000001_{t:06d}" for t in (10, 20, 30)]
    + [f"10_Schlossberg_9_000004_{t:06d}" for t in (40, 50)]
    + ["10_Schlossberg_9_000003_000040"])
LAF_TRAIN = ["03_Hanns_Klemm_Str_19_000000_000050", "13_Elly_Beinhorn_Str_000001_000080",
             "13_Elly_Beinhorn_Str_000002_000030"]


def test_lost_and_found_split_rules():
    assert len(LAF_TEST) == 20
    # full-length lists: the Valid splits have SMIYC's expected sizes and drop exactly the
    # listed sorted indices
    for folder, n, split in (("train", 1036, "trainValid"), ("test", 1203, "testValid")):
        fids = [f"02_Scene_{i // 50:06d}_{i % 50:06d}" for i in range(n)]
        got = smiyc.lost_and_found_fids(fids[::-1], split)
        assert got == list(np.delete(np.array(fids), smiyc.LAF_INVALID_FRAMES[folder]))
        assert len(got) == smiyc.LAF_SPLITS[split][3]
        assert smiyc.lost_and_found_fids(fids, folder) == fids
    # the 20-frame test list by hand: sorted index 17 is dropped, then the known objects
    valid = LAF_TEST[:17] + LAF_TEST[18:]
    assert smiyc.lost_and_found_fids(LAF_TEST, "testValid") == valid
    no_known = [f for f in valid if f.startswith(
        ("04_", "10_Schlossberg_9_000003", "01_Hanns_Klemm_Str_45_000001"))]
    assert smiyc.lost_and_found_fids(LAF_TEST, "testNoKnown") == no_known
    assert len(no_known) == 11
    with pytest.raises(ValueError, match="unknown LostAndFound split 'valid'"):
        smiyc.lost_and_found_fids(LAF_TEST, "valid")


@pytest.fixture(scope="module")
def laf_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("laf") / "dataset_LostAndFound"
    written = sf.write_lost_and_found(root, "test", LAF_TEST, alpha_for=LAF_TEST[:1])
    written.update(sf.write_lost_and_found(root, "train", LAF_TRAIN,
                                           ext="webp" if WEBP else "jpg", start=20))
    # a stray jpg in the png tree: png has hits, so only png files count (SMIYC's rule)
    sf.write_image(root / "leftImg8bit" / "test" / "04_Maurener_Weg_8" /
                   "04_Maurener_Weg_8_000009_000010_leftImg8bit.jpg", sf.rgb_pattern(0))
    return root, written


def _laf_rule(v):
    return 0 if v == 1 else 1 if 2 <= v <= 200 else 255


def test_lost_and_found_files(laf_root):
    root, written = laf_root
    ds = smiyc.LostAndFound(root.parent, "test")           # parent of dataset_LostAndFound
    assert ds.names == LAF_TEST and ds.expected_length == 1203
    for i in (0, 5):
        rgb, raw = written[ds.names[i]]
        s = ds[i]
        np.testing.assert_array_equal(s["image"], rgb / np.float32(255))  # frame 0 is RGBA
        np.testing.assert_array_equal(s["ood"], _naive_map(raw, _laf_rule))
    assert os.path.dirname(ds.image_paths[0]).endswith(os.path.join("test",
                                                                    "01_Hanns_Klemm_Str_45"))
    assert smiyc.LostAndFound(root, "testNoKnown").names == \
        smiyc.lost_and_found_fids(LAF_TEST, "testNoKnown")
    train = smiyc.LostAndFound(root, "trainValid")        # invalid indices past the end
    assert train.names == LAF_TRAIN
    assert train.image_paths[0].endswith(".webp" if WEBP else ".jpg")
    rgb, raw = written[LAF_TRAIN[2]]
    np.testing.assert_array_equal(train[2]["ood"], _naive_map(raw, _laf_rule))
    with pytest.raises(ValueError, match="LostAndFound-testNoKnown .* expects 1043"):
        smiyc.LostAndFound(root, "testNoKnown", strict=True)


def test_fishyscapes_laf(laf_root, tmp_path):
    root, written = laf_root
    fids = [LAF_TRAIN[1], LAF_TEST[3], LAF_TRAIN[0]]
    labels = sf.write_fishyscapes(tmp_path / "fs", fids)
    ds = smiyc.FishyscapesLAF(tmp_path / "fs", root)
    assert ds.names == sorted(fids) and ds.expected_length == 100
    for i, fid in enumerate(ds.names):
        s = ds[i]
        np.testing.assert_array_equal(s["ood"], labels[fid])          # used as-is
        assert os.path.join("leftImg8bit", "train" if fid in LAF_TRAIN else "test") in \
            ds.image_paths[i]
    np.testing.assert_array_equal(ds[0]["image"], written[ds.names[0]][0] / np.float32(255))
    shutil.copytree(tmp_path / "fs", tmp_path / "fs_bad")
    sf.write_fishyscapes(tmp_path / "fs_bad", fids[:1], values=(0, 1, 7))
    with pytest.raises(ValueError, match=r"fishy-labels\.png.*0 \(in-distribution\).*\[7\]"):
        smiyc.FishyscapesLAF(tmp_path / "fs_bad", root)[
            sorted(fids).index(fids[0])]
    sf.write_fishyscapes(tmp_path / "fs_bad", ["05_Schafgasse_1_000001_000010"])
    with pytest.raises(FileNotFoundError, match="'05_Schafgasse_1_000001_000010' has no "
                                                "LostAndFound image"):
        smiyc.FishyscapesLAF(tmp_path / "fs_bad", root)
    with pytest.raises(FileNotFoundError, match="labels/val/<fid>_fishy-labels.png"):
        smiyc.FishyscapesLAF(tmp_path, root)


def test_readers_reject_wrong_formats(tmp_path):
    p = tmp_path / "rgb_label.png"
    sf.write_image(p, sf.rgb_pattern(0))
    with pytest.raises(ValueError, match="8-bit single-channel label PNG.*'RGB'"):
        seg.read_label_png(p)
    q = tmp_path / "deep.png"
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(q)
    with pytest.raises(ValueError, match="8-bit RGB"):
        seg.read_rgb(q)
    grey = tmp_path / "grey.png"
    sf.write_image(grey, np.full((2, 3), 51, np.uint8))
    np.testing.assert_array_equal(seg.read_rgb(grey), np.full((2, 3, 3), 0.2, np.float32))
