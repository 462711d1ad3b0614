"""The KITTI protocol of Tables 1/2 (`jaxdepth.benchmarks.kitti`) end to end on a fixture
tree in the real formats (raw PNGs, calib files, velodyne scans, uint16 improved gt; two
drives with different native sizes) with random checkpoints — the Post model converted
from random PyTorch Monodepth2 weights where torch is installed — and its numbers checked
against an independent computation written here: images and gt read with PIL, the
uncertainty functions called directly, resizing, scaling, masks and metrics in NumPy, and
for the reference mode the storage round trip and `compute_aucs` evaluation written out
literally from the formulas."""
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from experiment_scripts import load_experiment
from jaxdepth import report
from jaxdepth import uncertainty as U
from jaxdepth.benchmarks import kitti
from jaxdepth.convert import save_checkpoint
from jaxdepth.metrics import ause_aurg
from jaxdepth.models import DepthNet
from kitti_fixtures import write_calib, write_kitti_raw, write_split

H, W = 32, 64                      # network input of the tiny checkpoints
DISP_BIAS = -4.45                  # sigmoid ≈ 0.0115 -> depth ≈ 8, ×5.4 ≈ 43 m: sane stereo
ROWS = [("Drop", "Base"), ("Boot", "Base"), ("Post", "Base"), ("Post", "Var"),
        ("Post", "In-Drop"), ("Post", "Grad"), ("Log", "Base"), ("Log", "Var"),
        ("Log", "In-Drop"), ("Log", "Grad"), ("Self", "Base"), ("Self", "Var"),
        ("Self", "In-Drop"), ("Self", "Grad")]


# a few dozen distinct programs of tiny models: see conftest.cheap_compilation
pytestmark = pytest.mark.usefixtures("cheap_compilation")


# --------------------------------------------------------------------------- fixtures

def _tiny(log_sigma=False, seed=0):
    kw = {"num_layers": 18, "width": 0.125, "log_sigma": log_sigma}
    v = DepthNet(**kw).init_variables(seed, H, W)
    v = jax.tree.map(np.array, v)
    v["params"]["decoder"]["dispconv_0"]["bias"][:] = DISP_BIAS
    return kw, v


def _converted_post(folder: Path) -> bool:
    """Random PyTorch Monodepth2 weights (the independent torch model of test_convert),
    converted with `jaxdepth convert`; False where torch is missing."""
    try:
        import torch  # noqa: F401
        from test_convert import write_released
    except ImportError:
        return False
    from jaxdepth.convert import convert_monodepth2

    src = folder.parent / "post_pth"
    _, dec = write_released(src, "plain", width=0.125, seed=3, height=H, image_width=W)
    with torch.no_grad():
        dec.decoder[dec.disp_idx[0]].conv.bias.fill_(DISP_BIAS)
    torch.save(dec.state_dict(), src / "depth.pth")
    convert_monodepth2(src / "encoder.pth", src / "depth.pth", folder, metric=False)
    return True


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    # native sizes above the network input (as KITTI's ~375×1242 vs 192×640), two dates
    t1 = write_kitti_raw(root / "raw", frames=range(4), size=(40, 128))
    t2 = write_kitti_raw(root / "raw", date="2011_09_28", drive=5, frames=range(3),
                         size=(44, 140))
    for t in (t1, t2):  # principal point lower, so the scan's point A lands in the Garg crop
        write_calib(root / "raw" / t.date, t.size, cy=25.0)
    entries = t1.entries([1, 2]) + t2.entries([1])
    split = write_split(root / "test_files.txt", entries)
    weights = root / "weights"
    converted = _converted_post(weights / "post")
    if not converted:
        save_checkpoint(weights / "post", *_tiny(seed=0), H, W, {"use_stereo": False})
    for name, log, seed in (("drop", False, 1), ("log", True, 2), ("self", True, 3)):
        save_checkpoint(weights / name, *_tiny(log, seed), H, W, {"use_stereo": False})
    kw, _ = _tiny()
    save_checkpoint(weights / "boot", kw, [_tiny(seed=s)[1] for s in (4, 5)], H, W,
                    {"use_stereo": False})
    return {"root": root / "raw", "split": split, "entries": entries, "weights": weights,
            "trees": {t1.folder: t1, t2.folder: t2}, "converted": converted}


def _config(tree, out, **changes):
    kw = dict(kitti_root=str(tree["root"]), weights=str(tree["weights"]),
              split_file=tree["split"], out=str(out), eval_batch=3)
    return kitti.KittiConfig(**{**kw, **changes})


# --------------------------------------------------------------------------- independent side

def _inputs(tree):
    """Network images and native gt, read here with PIL from the fixture files."""
    images, gts = [], []
    for folder, frame, side in tree["entries"]:
        base = tree["root"] / folder
        with Image.open(base / "image_02" / "data" / f"{frame:010d}.png") as im:
            im = im.convert("RGB").resize((W, H), Image.LANCZOS)
            images.append(np.asarray(im, np.float32) / 255.0)
        gt_png = base / "proj_depth" / "groundtruth" / "image_02" / f"{frame:010d}.png"
        with Image.open(gt_png) as im:
            gts.append(np.asarray(im).astype(np.float32) / 256.0)
    return jnp.asarray(np.stack(images)), gts


def _estimates(tree, name, reference=False, seed=0):
    """Every method of one model on the 3 images (one batch: key fold_in(seed, 0))."""
    model, v, _ = kitti.load_model(tree["weights"] / name)
    x, _ = _inputs(tree)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
    a = model.apply
    if name == "drop":
        return {"Base": U.mc_drop(a, v, x, rng=key, n=8)}
    if name == "boot":
        return {"Base": U.ensemble(a, v, x)}
    lam = 0.0 if name == "post" else 2.0
    var = (kitti.reference_var(a, v, x, rng=key, fill=0.01) if reference
           else U.var(a, v, x, rng=key))
    return {"Base": U.post(a, v, x) if name == "post" else U.predictive(a, v, x),
            "Var": var, "In-Drop": U.in_drop(a, v, x, rng=key, n=8, p=0.2),
            "Grad": U.gradient_uncertainty(a, v, x, rng=key, variance_weight=lam)}


def _cv2_resize(x, h, w):
    """cv2.resize(x, (w, h)) with INTER_LINEAR, written out from OpenCV's generic path:
    per output column/row the source position (float)((i+0.5)·(1/(n_out/n_in)) − 0.5),
    floor, float32 weights (1.f − f, f); columns clamp position and weight at the borders,
    rows clip the two row indices; horizontal pass first, then vertical, each
    v0·w0 + v1·w1 in the map's precision."""
    x = np.asarray(x)
    ft = np.float32 if x.dtype == np.float32 else np.float64
    x = x.astype(ft)
    sh, sw = x.shape
    tmp = np.empty((sh, w), ft)
    for j in range(w):
        f = np.float32((j + 0.5) * (1.0 / (w / sw)) - 0.5)
        s = int(np.floor(f))
        f = np.float32(f - np.float32(s))
        if s < 0:
            s, f = 0, np.float32(0.0)
        if s >= sw - 1:
            s, f = sw - 1, np.float32(0.0)
        a0, a1 = ft(np.float32(1.0) - f), ft(f)
        tmp[:, j] = x[:, s] * a0 + x[:, min(s + 1, sw - 1)] * a1
    out = np.empty((h, w), ft)
    for i in range(h):
        f = np.float32((i + 0.5) * (1.0 / (h / sh)) - 0.5)
        s = int(np.floor(f))
        f = np.float32(f - np.float32(s))
        b0, b1 = ft(np.float32(1.0) - f), ft(f)
        out[i] = tmp[min(max(s, 0), sh - 1)] * b0 + tmp[min(max(s + 1, 0), sh - 1)] * b1
    return out


def _eigen_errors(g, p):
    t = np.maximum(g / p, p / g)
    return {"abs_rel": np.mean(np.abs(g - p) / g), "sq_rel": np.mean((g - p) ** 2 / g),
            "rmse": np.sqrt(np.mean((g - p) ** 2)),
            "rmse_log": np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)),
            "a1": np.mean(t < 1.25), "a2": np.mean(t < 1.25 ** 2), "a3": np.mean(t < 1.25 ** 3)}


def _compute_aucs(g, p, u, intervals=50):
    """Poggi et al.'s `compute_aucs`, from its description: remove the most uncertain
    first at the np.percentile thresholds of -u, keep -u >= t, append 0, trapz."""
    errs = {"abs_rel": np.abs(g - p) / g, "rmse": (g - p) ** 2,
            "a1": np.maximum(g / p, p / g)}

    def metric(name, keep):
        e = errs[name][keep]
        return {"abs_rel": e.mean(), "rmse": np.sqrt(e.mean()), "a1": (e >= 1.25).mean()}[name]

    quants = [100.0 / intervals * t for t in range(intervals)]
    x = [1.0 / intervals * t for t in range(intervals + 1)]
    trapz = getattr(np, "trapezoid", None) or np.trapz
    out = {}
    for name in ("abs_rel", "rmse", "a1"):
        sparse = [metric(name, -u >= np.percentile(-u, q)) for q in quants] + [0.0]
        score = -errs[name]
        oracle = [metric(name, score >= np.percentile(score, q)) for q in quants] + [0.0]
        full = metric(name, np.ones(g.size, bool))
        out[name] = (trapz(sparse, x=x) - trapz(oracle, x=x), full - trapz(sparse, x=x))
    return out


def _check_rows(got, expected, rtol, atol):
    assert [(r["model"], r["method"]) for r in got] == list(expected)
    for r in got:
        key = (r["model"], r["method"])
        exp = expected[key]
        for m in ("abs_rel", "rmse", "a1"):
            for k, name in enumerate(("ause", "aurg")):
                want = pytest.approx(exp["sparse"][m][k], rel=rtol, abs=atol)
                assert r[m][name] == want, (key, m, name)
        for m, v in exp["depth"].items():
            assert r["depth"][m] == pytest.approx(v, rel=rtol, abs=atol), (key, m)
        assert r["ms_per_image"] > 0
        assert "paper" in r


def _mean_rows(per_image):
    out = {}
    for key, items in per_image.items():
        out[key] = {"sparse": {m: tuple(np.mean([it[0][m][k] for it in items]) for k in (0, 1))
                               for m in ("abs_rel", "rmse", "a1")},
                    "depth": {m: np.mean([it[1][m] for it in items]) for m in items[0][1]}}
    return out


# --------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def experiment():
    return load_experiment("kitti_grad_unc", "kitti_grad_unc_protocol")


@pytest.mark.slow
def test_mono_benchmark_every_row_matches_independent_computation(tree, experiment, tmp_path,
                                                                    capsys):
    out = tmp_path / "out"
    rows = experiment.main(["--kitti-root", str(tree["root"]), "--weights", str(tree["weights"]),
                            "--split-file", tree["split"], "--out", str(out),
                            "--eval-batch", "3"])
    printed = capsys.readouterr().out
    assert "mono supervision" in printed and "published (paper)" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["rows"] == json.loads(json.dumps(rows))
    cfg = result["config"]
    assert (cfg["dataset"], cfg["split"], cfg["supervision"], cfg["mode"], cfg["n_images"]) == (
        "kitti", "eigen_benchmark", "mono", "jaxdepth", 3)
    for metric in ("abs_rel", "rmse", "a1"):
        assert (out / f"sparsification_{metric}.png").stat().st_size > 1000

    _, gts = _inputs(tree)
    per_image = {}
    for name in ("drop", "boot", "post", "log", "self"):
        for method, est in _estimates(tree, name).items():
            for j, gt in enumerate(gts):
                # independent protocol: bilinear disparity/uncertainty to the gt size,
                # median scaling over gt > 0, clamp [1e-3, 80]
                h, w = gt.shape
                disp = jax.image.resize(1.0 / est.depth[j:j + 1], (1, h, w, 1), "bilinear")
                unc = jax.image.resize(est.uncertainty[j:j + 1], (1, h, w, 1), "bilinear")
                pred = 1.0 / np.asarray(disp[0, ..., 0], np.float64)
                unc = np.asarray(unc[0, ..., 0], np.float64)
                m = gt > 0
                pred = pred * (np.median(gt[m]) / np.median(pred[m]))
                pred = np.clip(pred, 1e-3, 80.0)
                sp = ause_aurg(gt, pred, unc, m)
                per_image.setdefault((kitti.LABELS[name], method), []).append(
                    ({k: (v["ause"], v["aurg"]) for k, v in sp.items()},
                     _eigen_errors(gt[m].astype(np.float64), pred[m])))
    expected = {k: _mean_rows(per_image)[k] for k in ROWS}
    _check_rows(result["rows"], expected, rtol=2e-4, atol=2e-5)
    # the random models must not be degenerate for this check to mean something
    assert len({round(r["abs_rel"]["ause"], 6) for r in result["rows"]}) > 10


@pytest.mark.slow
def test_reference_mode_mono_stores_uint16_maps_and_matches_the_reference_evaluation(
        tree, tmp_path):
    out = tmp_path / "ref"
    result = kitti.run(_config(tree, out, reproduce_reference=True, models=("post", "log")))
    rows = result.rows
    _, gts = _inputs(tree)
    per_image = {}
    for name in ("post", "log"):
        for method, est in _estimates(tree, name, reference=True).items():
            folder = out / "reference" / f"{name}_{method.lower()}" / "raw"
            for j, gt in enumerate(gts):
                h, w = gt.shape
                disp = np.asarray(1.0 / est.depth[j, ..., 0])           # float32, network size
                u = np.asarray(est.uncertainty[j, ..., 0])
                if method == "Base" and name != "post":                 # Log σ: normalised
                    u = (u - np.min(u)) / (np.max(u) - np.min(u))
                # generate_maps.py, mono: ratio of medians with the DEPTH resized, baked in
                ratio = np.median(gt[gt > 0]) / np.median(
                    _cv2_resize(1 / disp, h, w).astype(np.float32)[gt > 0])
                want_d = (disp * (np.float32(0.58) * w) * 256. / ratio / 10.).astype(np.uint16)
                want_u = (u * (256 * 256 - 1)).astype(np.uint16)
                with Image.open(folder / "disp" / f"{j:06d}_10.png") as im:
                    got_d = np.asarray(im).astype(np.uint16)
                with Image.open(folder / "uncert" / f"{j:06d}_10.png") as im:
                    got_u = np.asarray(im).astype(np.uint16)
                np.testing.assert_array_equal(got_d, want_d)
                np.testing.assert_array_equal(got_u, want_u)
                assert got_d.shape == (H, W) and got_d.min() > 0
                # evaluate.py: read back, resize, invert, mask gt > 0, no scaling, clamp
                pred_disp = _cv2_resize(got_d / 256. / (0.58 * w) * 10, h, w)
                pred = 1 / pred_disp
                unc = _cv2_resize(got_u / 256., h, w)
                m = gt > 0
                g, p, uu = gt[m].astype(np.float64), pred[m], unc[m]
                p = np.clip(p, 1e-3, 80.0)
                per_image.setdefault((kitti.LABELS[name], method), []).append(
                    (_compute_aucs(g, p, uu), _eigen_errors(g, p)))
    expected = _mean_rows(per_image)
    _check_rows(rows, {k: expected[k] for k in ROWS if k[0] in ("Post", "Log")},
                rtol=1e-7, atol=1e-10)
    report.write_results(out, rows, result.curves, result.config, result.title)
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["mode"] == "reference" and result["config"]["supervision"] == "mono"


def test_stereo_eigen_split_both_modes(tree, tmp_path):
    """`eigen`: velodyne gt projected into the image, Garg crop, 1e-3 < gt < 80; ×5.4."""
    from jaxdepth.data.kitti import load_calib, velodyne_depth_map

    clean = kitti.run(_config(tree, tmp_path / "c", split="eigen", supervision="stereo",
                              models=("post",))).rows
    ref = kitti.run(_config(tree, tmp_path / "r", split="eigen", supervision="stereo",
                            models=("post",), reproduce_reference=True)).rows
    est = _estimates(tree, "post")
    for rows, reference in ((clean, False), (ref, True)):
        per_image = {}
        for method in ("Base", "In-Drop", "Grad"):
            e = est[method]
            for j, (folder, frame, _) in enumerate(tree["entries"]):
                base = tree["root"] / folder
                gt = velodyne_depth_map("", base / "velodyne_points" / "data" / f"{frame:010d}.bin",
                                        2, True, load_calib(str(base.parent)))
                h, w = gt.shape
                r0, r1, c0, c1 = (np.array([0.40810811, 0.99189189, 0.03594771, 0.96405229])
                                  * [h, h, w, w]).astype(np.int32)
                m = (gt > 1e-3) & (gt < 80)
                crop = np.zeros_like(m)
                crop[r0:r1, c0:c1] = True
                m &= crop
                assert m.sum() == 2          # the fixture scan's points A (28, 35), F (24, 111)
                disp = np.asarray(1.0 / e.depth[j, ..., 0])
                u = np.asarray(e.uncertainty[j, ..., 0])
                if reference:
                    stored = (disp * (np.float32(0.58) * w) * 256. / 10).astype(np.uint16)
                    pred = 1 / _cv2_resize(stored / 256. / (0.58 * w) * 10, h, w)
                    unc = _cv2_resize((u * 65535).astype(np.uint16) / 256., h, w)
                else:  # jaxdepth protocol: bilinear in float32 (= cv2's for upsampling)
                    pred = 1 / np.asarray(jax.image.resize(disp, (h, w), "bilinear"), np.float64)
                    unc = np.asarray(jax.image.resize(u, (h, w), "bilinear"), np.float64)
                p = np.clip(pred[m] * 5.4, 1e-3, 80.0)
                g = gt[m].astype(np.float64)
                per_image.setdefault(("Post", method), []).append(
                    (_compute_aucs(g, p, unc[m]), _eigen_errors(g, p)))
        expected = _mean_rows(per_image)
        got = [r for r in rows if r["method"] in ("Base", "In-Drop", "Grad")]
        # the jaxdepth protocol runs in float32 (rmse areas of ~30 m: ~1e-6 absolute)
        _check_rows(got, expected, rtol=1e-9 if reference else 1e-5,
                    atol=1e-9 if reference else 2e-5)


def test_uint16_storage_by_hand():
    gt = np.zeros((5, 100), np.float32)
    gt[0, :4] = [10.0, 20.0, 30.0, 40.0]
    disp = np.array([[1.0, 2.5], [0.25, 10.0]], np.float32)
    # stereo: trunc(d · (0.58·100) · 256 / 10); 0.58 as float32 times 100 is 58.0 exactly
    np.testing.assert_array_equal(kitti.store_disparity(disp, gt, "stereo"),
                                  [[1484, 3712], [371, 14848]])
    # read back: v / 256 / (0.58·100) · 10
    assert kitti.load_disparity(np.array([1484]), 100)[0] == pytest.approx(1484 / 256 / 58 * 10)
    # mono: a constant disparity 0.5 (depth 2) and gt median 25 give ratio 12.5 baked in
    flat = np.full((2, 4), 0.5, np.float32)
    assert kitti.mono_ratio(flat, gt) == pytest.approx(12.5)
    np.testing.assert_array_equal(kitti.store_disparity(flat, gt, "mono"),
                                  np.full((2, 4), int(0.5 * 58 * 256 / 12.5 / 10)))  # 59.392 -> 59
    # uncertainty: trunc(u · 65535); Post's raw |Δdisp| above 1 wraps modulo 2^16
    np.testing.assert_array_equal(kitti.store_uncertainty(np.array([0.0, 0.5, 1.0, 1.2, 2.0])),
                                  [0, 32767, 65535, 78642 - 65536, 131070 - 65536])
    np.testing.assert_array_equal(kitti.to_uint16([70000.7, -1.5, 65535.99, np.nan, np.inf]),
                                  [4464, 65535, 65535, 0, 0])
    assert kitti.load_uncertainty(np.array([512]))[0] == 2.0


def test_resize_and_sparsification_helpers():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (6, 10))
    ours = kitti.resize_bilinear(x, 13, 31)
    np.testing.assert_array_equal(ours, _cv2_resize(x, 13, 31))
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(kitti.resize_bilinear(x32, 13, 31), _cv2_resize(x32, 13, 31))
    assert kitti.resize_bilinear(x32, 13, 31).dtype == np.float32
    jx = jax.image.resize(jnp.asarray(x, jnp.float32), (13, 31), "bilinear")
    np.testing.assert_allclose(ours, np.asarray(jx), atol=1e-6)
    g = rng.uniform(1, 50, 400)
    p = g * rng.uniform(0.6, 1.5, 400)
    u = np.round(rng.uniform(0, 1, 400) * 20) / 20          # many ties
    got = kitti.reference_sparsification(g, p, u)
    for m, (ause, aurg) in _compute_aucs(g, p, u).items():
        assert got[m]["ause"] == pytest.approx(ause, rel=1e-12, abs=1e-14)
        assert got[m]["aurg"] == pytest.approx(aurg, rel=1e-12, abs=1e-14)
        assert len(got[m]["method"]) == 51 and got[m]["method"][-1] == 0


def test_weights_layout_and_errors(tree, tmp_path):
    w = tree["weights"]
    assert list(kitti.resolve_weights(w)) == ["drop", "boot", "post", "log", "self"]
    assert list(kitti.resolve_weights(w, ["self", "post"])) == ["post", "self"]
    assert kitti.resolve_weights(w / "self") == {"self": w / "self"}       # folder name
    assert kitti.resolve_weights(w / "boot") == {"boot": w / "boot"}
    with pytest.raises(FileNotFoundError, match="post/"):
        kitti.resolve_weights(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint for"):
        kitti.resolve_weights(tmp_path, ["log"])
    with pytest.raises(ValueError, match="unknown model"):
        kitti.resolve_weights(w, ["reg"])
    mislabelled = tmp_path / "mixed"
    mislabelled.mkdir()
    (mislabelled / "log").symlink_to(w / "post", target_is_directory=True)
    with pytest.raises(ValueError, match="log σ heads"):
        kitti.run(_config(tree, tmp_path / "o", weights=str(mislabelled)))


def test_experiment_without_kitti_root_keeps_the_synthetic_job(experiment):
    args = experiment.parse_args(["--quick"])
    assert args.kitti_root is None and args.quick and experiment.config_of(args).test_images == 4
    assert math.isclose(args.variance_weight, 2.0)
