"""`jaxdepth.calibration` (binned split-conformal error bounds) and `jaxdepth calibrate`.

The statistical tests draw scores s ~ U(0, 1) and errors |N(0, σ(s))| with σ(s) = 0.1 + s
(known conditional distribution), fit on one draw and check coverage on a fresh one. The
CLI test calibrates a tiny random-weight checkpoint on a few procedural scenes.
"""
from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth import calibration as C
from jaxdepth.calibration import Calibration, CalibrationMismatch, evaluate, fit

LEVELS = (0.5, 0.8, 0.9, 0.95)
N = 200_000


def draw(n, seed):
    rng = np.random.default_rng(seed)
    s = rng.random(n)
    return s, np.abs(rng.normal(0.0, 0.1 + s))


@pytest.fixture(scope="module")
def fitted():
    s, e = draw(N, 0)
    return fit(s, e, levels=LEVELS), draw(N, 1)


# ----------------------------------------------------------------------------- the guarantee

def test_hand_worked_conformal_rank():
    errors = np.arange(1.0, 10.0)  # 9 errors 1..9 in one bin
    cal = fit(np.zeros(9), errors, levels=(0.5, 0.8, 0.9))
    assert cal.n_bins == 1 and cal.counts == (9,)
    # ranks ⌈10·α⌉: 5, 8, 9
    assert [b[0] for b in cal.bounds] == [5.0, 8.0, 9.0]
    assert C.conformal_rank(9, 0.8) == 8 and C.conformal_rank(99, 0.95) == 95
    assert [C.min_calibration_size(a) for a in LEVELS] == [1, 4, 9, 19]
    # one bin requested explicitly, scores distinct and shuffled
    rng = np.random.default_rng(3)
    perm = rng.permutation(9)
    cal = fit(rng.random(9), errors[perm], levels=(0.8,), bins=1)
    np.testing.assert_array_equal(cal.error_bound(np.array([-5.0, 0.5, 5.0]), 0.8), [8.0] * 3)
    with pytest.raises(ValueError, match=r"level 0\.95.*9 valid pixel.*at least 19"):
        fit(np.zeros(9), errors, levels=(0.5, 0.95))


def test_marginal_coverage_on_a_fresh_draw(fitted):
    cal, (s, e) = fitted
    result = evaluate(cal, s, e)
    assert list(result) == ["0.5", "0.8", "0.9", "0.95"]
    for level in LEVELS:
        r = result[C.level_key(level)]
        assert level - 0.01 <= r["coverage"] <= level + 0.02, (level, r["coverage"])
        assert r["n"] == N and sum(r["bin_count"]) == N
        assert abs(r["constant_bound_coverage"] - level) < 0.01


def test_isotonic_mode_covers_marginally_without_the_cummax_excess():
    """A score whose error peaks in the middle: the cumulative maximum keeps every later
    bin at the peak's bound (per-bin guarantee, over-covers there); `isotonic`
    (normalised split conformal) stays monotone, covers ≈ α marginally and is narrower."""
    rng = np.random.default_rng(0)
    def draw_hump(n):
        s = rng.random(n)
        return s, np.abs(rng.normal(0.0, 0.1 + np.exp(-((s - 0.4) / 0.1) ** 2)))
    s, e = draw_hump(100_000)
    st, et = draw_hump(100_000)
    cummax = fit(s, e, levels=LEVELS)
    iso = fit(s, e, levels=LEVELS, monotone="isotonic")
    assert iso.info["monotone"] == "isotonic"
    a, b = evaluate(cummax, st, et), evaluate(iso, st, et)
    for level in LEVELS:
        k = C.level_key(level)
        assert level - 0.01 <= b[k]["coverage"] <= level + 0.015, (level, b[k]["coverage"])
        assert a[k]["coverage"] > b[k]["coverage"] and a[k]["mean_bound"] > b[k]["mean_bound"]
        assert np.all(np.diff(iso.bounds_at(level)) >= 0)
    # scale invariance of the ranks holds in this mode too
    again = fit(np.exp(3 * s), e, levels=LEVELS, monotone="isotonic")
    assert again.bounds == iso.bounds
    with pytest.raises(ValueError, match="monotone"):
        fit(s, e, monotone="pava")


def test_sharper_than_a_constant_bound(fitted):
    cal, (s, e) = fitted
    result = evaluate(cal, s, e)
    for level in (0.9, 0.95):  # heteroscedastic tails: a constant bound is too wide
        r = result[C.level_key(level)]
        assert r["constant_coverage"] < r["coverage"] - 0.02
        assert r["width_ratio"] < 0.95 and r["mean_bound"] < r["constant_bound"]
    # the bound follows σ(s): the top bin's bound is several times the bottom one's
    b = cal.bounds_at(0.9)
    assert b[-1] > 5 * b[0]


def test_per_bin_coverage_close_to_the_level(fitted):
    cal, (s, e) = fitted
    assert cal.n_bins == C.MAX_AUTO_BINS  # 200 000 pixels: 50 bins of 4000
    counts = np.asarray(cal.counts)
    assert counts.min() >= C.min_calibration_size(0.95) and counts.sum() == N
    result = evaluate(cal, s, e)
    for level in LEVELS:
        r = result[C.level_key(level)]
        test_counts = np.asarray(r["bin_count"])
        tol = 4 * np.sqrt(level * (1 - level) * (1 / counts + 1 / test_counts))
        dev = np.asarray(r["bin_coverage"]) - level
        assert np.all(dev > -tol) and np.all(dev < tol + 0.01), (level, dev.min(), dev.max())


def test_monotone_in_the_score_and_clamped(fitted):
    cal, _ = fitted
    for i, level in enumerate(LEVELS):
        b = cal.bounds_at(level)
        assert np.all(np.diff(b) >= 0)
        if i:
            assert np.all(b >= cal.bounds_at(LEVELS[i - 1]))
    grid = np.linspace(-1.0, 2.0, 301)
    bound = cal.error_bound(grid, 0.9)
    assert np.all(np.diff(bound) >= 0)
    assert bound[0] == cal.bounds_at(0.9)[0] and bound[-1] == cal.bounds_at(0.9)[-1]
    assert np.isnan(cal.error_bound(np.array([np.nan, 0.5]), 0.9)[0])


@pytest.mark.parametrize("transform", [np.exp, lambda x: 3 * x + 1, np.log1p])
def test_monotone_transform_gives_identical_bounds(fitted, transform):
    cal, (s_test, _) = fitted
    s, e = draw(N, 0)
    other = fit(transform(s), e, levels=LEVELS)
    assert other.bounds == cal.bounds and other.counts == cal.counts
    for level in LEVELS:
        for x in (s_test, s):  # fresh scores, and the calibration scores (edges included)
            np.testing.assert_array_equal(other.error_bound(transform(x), level),
                                          cal.error_bound(x, level))


def test_ties_are_merged_into_bins_of_the_minimum_size():
    rng = np.random.default_rng(5)
    s = np.where(rng.random(5000) < 0.6, 0.0, rng.random(5000))  # 60 % tied zeros
    e = rng.random(5000)
    cal = fit(s, e, bins=20)
    assert cal.edges[0] > 0  # the zeros are one bin, not split over several edges
    assert min(cal.counts) >= C.min_calibration_size(0.95) and sum(cal.counts) == 5000
    auto = fit(s, e)  # auto: bins of >= 1000 pixels
    assert min(auto.counts) >= 1000


# ----------------------------------------------------------------------------- inputs

def test_shapes_masks_and_jax_arrays():
    s, e = draw(4 * 32 * 48, 2)
    s, e = s.reshape(4, 32, 48, 1), e.reshape(4, 32, 48, 1)
    cal = fit(jnp.asarray(s, jnp.float32), jnp.asarray(e, jnp.float32), levels=(0.8, 0.9))
    bound = cal.error_bound(jnp.asarray(s), 0.9)
    assert bound.shape == s.shape and bound.dtype == np.float64
    # masked pixels (NaN, huge or negative errors) and unmasked non-finite ones are dropped
    mask = np.ones(s.shape, bool)
    mask[0, :4] = False
    e_bad = e.copy()
    e_bad[0, :2] = np.nan
    e_bad[0, 2:4] = 1e9
    e_bad[0, 0, 0] = -1.0
    s_bad = s.copy()
    s_bad[1, 0, 0] = np.nan
    e_bad[1, 0, 1] = np.inf
    keep = mask & np.isfinite(s_bad) & np.isfinite(e_bad)
    masked = fit(s_bad, e_bad, levels=(0.8, 0.9), mask=mask)
    clean = fit(s[keep], e[keep], levels=(0.8, 0.9))
    assert masked == clean and sum(masked.counts) == keep.sum()
    r = evaluate(masked, s_bad, e_bad, mask=mask)
    assert r["0.9"]["n"] == keep.sum()


def test_relative_mode_with_depth():
    rng = np.random.default_rng(7)
    n = 100_000
    s, depth = rng.random(n), rng.uniform(1.0, 80.0, n)
    abs_err = depth * np.abs(rng.normal(0.0, 0.02 + 0.1 * s))  # error ∝ depth
    cal = fit(s[: n // 2], abs_err[: n // 2] / depth[: n // 2], relative=True)
    assert cal.relative
    with pytest.raises(ValueError, match="relative.*depth="):
        cal.error_bound(s, 0.9)
    with pytest.raises(ValueError, match="depth"):
        cal.error_bound(s, 0.9, depth=depth[:10])
    bound = cal.error_bound(s, 0.9, depth=depth)
    np.testing.assert_allclose(bound, cal.bounds_at(0.9)[cal.bin_of(s)] * depth)
    r = evaluate(cal, s[n // 2:], abs_err[n // 2:], depth=depth[n // 2:])
    for level in LEVELS:
        assert level - 0.015 <= r[C.level_key(level)]["coverage"] <= level + 0.025
    assert r["0.9"]["constant_coverage"] < r["0.9"]["coverage"] - 0.02  # metres vary with d
    with pytest.raises(ValueError, match="relative"):
        evaluate(cal, s, abs_err)


def test_json_round_trip_and_metadata(tmp_path, fitted):
    cal, (s, _) = fitted
    cal = fit(*draw(5000, 4), levels=LEVELS, method="grad(taps=dec6)", model="DepthNet-abc",
              info={"data": "synthetic", "images": 3})
    path = cal.save(tmp_path / "sub" / "cal.json")
    back = Calibration.load(path)
    assert back == cal and back.edges == cal.edges and back.bounds == cal.bounds
    np.testing.assert_array_equal(back.error_bound(s, 0.95), cal.error_bound(s, 0.95))
    d = json.loads(path.read_text())
    assert d["format"] == C.FORMAT and list(d["bounds"]) == ["0.5", "0.8", "0.9", "0.95"]
    assert back.check(method="grad(taps=dec6)", model="DepthNet-abc") is back
    with pytest.raises(CalibrationMismatch, match="fitted for method 'grad\\(taps=dec6\\)'"):
        back.check(method="post(space=disp)")
    with pytest.raises(CalibrationMismatch, match="model 'DepthNet-abc'"):
        back.check(model="DepthNet-other")
    odd = dataclasses.replace(cal, info={"x": [1.5, float("nan")], "y": np.float32(np.inf)})
    assert Calibration.load(odd.save(tmp_path / "odd.json")).info == {"x": [1.5, None],
                                                                       "y": None}
    (tmp_path / "bad.json").write_text('{"levels": [0.5]}')
    with pytest.raises(ValueError, match="not a jaxdepth calibration"):
        Calibration.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_text("not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        Calibration.load(tmp_path / "junk.json")
    with pytest.raises(FileNotFoundError):
        Calibration.load(tmp_path / "missing.json")


def test_bad_inputs():
    s, e = draw(1000, 6)
    for levels in ((0.0,), (1.0,), (0.9, 1.5), (-0.1,), (float("nan"),), ()):
        with pytest.raises(ValueError, match="level"):
            fit(s, e, levels=levels)
    with pytest.raises(ValueError, match=r"scores \(1000,\) and errors \(999,\)"):
        fit(s, e[:-1])
    with pytest.raises(ValueError, match="mask"):
        fit(s, e, mask=np.ones(999, bool))
    with pytest.raises(ValueError, match="non-negative.*1 valid pixels"):
        fit(s, np.where(np.arange(1000) == 3, -0.5, e))
    with pytest.raises(ValueError, match=r"level 0\.8: 3 valid pixel.*at least 4"):
        fit(s[:3], e[:3], levels=(0.8,))
    with pytest.raises(ValueError, match="too few calibration pixels"):
        fit(s, e, mask=np.zeros(1000, bool))
    for bins in (0, -2, "many", 2.5, True):
        with pytest.raises(ValueError, match="bins"):
            fit(s, e, bins=bins)
    with pytest.raises(ValueError, match="numeric"):
        fit(s.astype(str), e)
    cal = fit(s, e, levels=(0.8, 0.9))
    with pytest.raises(ValueError, match=r"level 0\.95 is not calibrated.*0\.8, 0\.9"):
        cal.error_bound(s, 0.95)
    with pytest.raises(ValueError, match="depth"):
        cal.error_bound(s, 0.9, depth=np.ones(5))
    assert np.array_equal(cal.error_bound(s, "0.9"), cal.error_bound(s, 0.9))
    with pytest.raises(ValueError, match="no valid pixels"):
        evaluate(cal, s, e, mask=np.zeros(1000, bool))
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibration(levels=(0.9,), edges=(0.5,), bounds=((2.0, 1.0),))
    with pytest.raises(ValueError, match="strictly increasing"):
        Calibration(levels=(0.9,), edges=(0.5, 0.5), bounds=((1.0, 1.0, 1.0),))


def test_signatures():
    from jaxdepth.uncertainty.methods import MethodOptions, ModelInfo
    sig = C.method_signature("grad")
    assert sig == ("grad(aggregate=std,reduce=max,reference=flip,taps=dec6,upsample=bilinear,"
                   "variance_weight=0)")
    assert "variance_weight=2" in C.method_signature("grad", info=ModelInfo(log_sigma=True))
    assert C.method_signature("grad", MethodOptions(taps=("dec6", "dec8"))) != sig
    feat = [C.method_signature("grad", MethodOptions(reference="feature_noise", feature_scale=x))
            for x in (0.1, 0.2)]
    assert feat[0] != feat[1] and "feature_tap=enc4" in feat[0]
    assert "var_members=" in C.method_signature("grad", MethodOptions(reference="var"))
    assert C.method_signature("boot") == C.method_signature("ensemble")
    assert C.method_signature("post", info=ModelInfo(metric=True)) == "post(space=depth)"
    meta = {"architecture": "DepthNet", "model": {"width": 0.125}, "height": 64, "width": 64}
    v = {"params": {"a": np.ones(3, np.float32), "b": [np.zeros(2)]}}
    a = C.model_signature(meta, v)
    assert a.startswith("DepthNet-") and a == C.model_signature(dict(meta), {"params": dict(v["params"])})
    v2 = {"params": {"a": np.ones(3, np.float32) * 2, "b": [np.zeros(2)]}}
    assert C.model_signature(meta, v2) != a
    assert C.model_signature(dict(meta, scaling="stereo"), v) != a
    # an ensemble: boot signs all members, a single-model method the chosen member
    assert C.signatures(meta, [v, v2], "boot")[1] == C.model_signature(meta, [v, v2])
    assert C.signatures(meta, [v, v2], "grad", member=1) == (sig, C.model_signature(meta, v2)
                                                             + "#member1")
    assert C.signatures(meta, v, "grad") == (sig, a)


# ----------------------------------------------------------------------------- the CLI

H, W = 64, 64
KW = {"num_layers": 18, "width": 0.125}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    from jaxdepth.convert import save_checkpoint
    from jaxdepth.models import DepthNet
    root = tmp_path_factory.mktemp("ckpts")
    variables = DepthNet(**KW).init_variables(0, H, W)
    return {"plain": save_checkpoint(root / "plain", KW, variables, H, W),
            "mono": save_checkpoint(root / "mono", KW, variables, H, W,
                                    {"scaling": "median", "use_stereo": False})}


def _run(capsys, *argv):
    from jaxdepth.cli import main
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_calibrate_cli_end_to_end(ckpts, tmp_path, capsys):
    from jaxdepth.export import load_checkpoint
    out = tmp_path / "grad.json"
    rc, stdout, err = _run(capsys, "calibrate", "--checkpoint", ckpts["mono"], "--method",
                           "grad", "--data", "synthetic", "--images", 6, "--holdout", 0.34,
                           "--relative", "--levels", 0.9, 0.5, 0.8, "--out", out)
    assert rc == 0, err
    assert "level 0.9: bound" in stdout and "held-out coverage" in stdout
    cal = Calibration.load(out)
    _, variables, meta = load_checkpoint(ckpts["mono"])
    assert cal.levels == (0.5, 0.8, 0.9) and cal.relative
    assert cal.method == C.method_signature("grad") and cal.method.startswith("grad(")
    assert cal.model == C.model_signature(meta, variables)
    assert cal.info["images"] == 4 and cal.info["data"] == "synthetic"
    assert cal.info["split"] == "val" and cal.info["scaling"] == "median"
    assert cal.info["pixels"] == sum(cal.counts) > 1000
    for level in cal.levels:  # in-sample: >= the level by construction
        assert cal.info["calibration_set"][C.level_key(level)]["coverage"] >= level
    hold = cal.info["holdout"]
    assert hold["images"] == 2 and 0.0 < hold["evaluation"]["0.9"]["coverage"] <= 1.0
    cal.check(method=C.method_signature("grad"), model=C.model_signature(meta, variables))
    with pytest.raises(CalibrationMismatch):
        cal.check(method=C.method_signature("post"))
    bound = cal.error_bound(np.linspace(0, 1, 11), 0.9, depth=np.full(11, 10.0))
    assert np.all(np.isfinite(bound)) and np.all(np.diff(bound) >= 0)


def test_predict_writes_bounds_in_metres_and_refuses_another_method(ckpts, tmp_path, capsys):
    """`jaxdepth predict --calibration FILE`: `<stem>_bound<level>.npy` = the file's bound
    of the written uncertainty (× depth for a relative one), the panel gains the bound;
    a file of another method or checkpoint, or an uncalibrated level, is refused."""
    from PIL import Image
    cal_file = tmp_path / "post.json"
    rc, _, err = _run(capsys, "calibrate", "--checkpoint", ckpts["plain"], "--method", "post",
                      "--data", "synthetic", "--images", 2, "--out", cal_file)
    assert rc == 0, err
    img = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 70, 3), np.uint8)).save(img)
    out = tmp_path / "pred"
    rc, _, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], "--method", "post",
                      "--calibration", cal_file, "--out", out, img)
    assert rc == 0, err
    cal = Calibration.load(cal_file)
    u = np.load(out / "street_uncertainty.npy")
    for level in cal.levels:
        b = np.load(out / f"street_bound{level:g}.npy")
        assert b.shape == (40, 70) and b.dtype == np.float32
        np.testing.assert_allclose(b, cal.error_bound(u, level), rtol=1e-6)
    assert (out / "street_panel.png").stat().st_size > 1000
    rc, _, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], "--method", "grad",
                      "--calibration", cal_file, "--out", out, img)
    assert rc == 2 and "--calibration" in err and err.count("\n") == 1
    rc, _, err = _run(capsys, "predict", "--checkpoint", ckpts["mono"], "--method", "post",
                      "--calibration", cal_file, "--out", out, img)
    assert rc == 2 and "--calibration" in err
    rc, _, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], "--method", "post",
                      "--calibration", cal_file, "--levels", "0.7", "--out", out, img)
    assert rc == 2 and "not calibrated" in err


def test_calibrate_cli_on_a_kitti_tree(ckpts, tmp_path, capsys):
    from kitti_fixtures import write_kitti_raw, write_split
    tree = write_kitti_raw(tmp_path / "kitti", frames=range(5))
    split = write_split(tmp_path / "split.txt", tree.entries([1, 2, 3]))
    args = ["calibrate", "--checkpoint", ckpts["plain"], "--method", "post", "--data", "kitti",
            "--data-root", tmp_path / "kitti", "--split", split, "--levels", 0.5, 0.8]
    rc, _, err = _run(capsys, *args, "--gt", "improved", "--out", tmp_path / "k.json")
    assert rc == 0, err
    cal = Calibration.load(tmp_path / "k.json")
    assert cal.method == "post(space=disp)" and cal.info["protocol"] == "kitti_eigen_benchmark"
    assert cal.info["images"] == 3 and 0 < sum(cal.counts) <= 3 * 20 * 64
    # velodyne gt in the Garg crop of 20x64 images: too few pixels for level 0.8
    rc, _, err = _run(capsys, *args, "--out", tmp_path / "v.json")
    assert rc == 2 and "too few calibration pixels for level 0.8" in err
    assert not (tmp_path / "v.json").exists()


def test_calibrate_cli_errors(ckpts, tmp_path, capsys):
    base = ["calibrate", "--method", "grad", "--out", tmp_path / "c.json"]
    rc, _, err = _run(capsys, *base, "--checkpoint", tmp_path / "missing", "--data", "synthetic")
    assert rc == 2 and "does not exist" in err and err.startswith("jaxdepth: error:")
    rc, _, err = _run(capsys, *base, "--checkpoint", ckpts["plain"], "--data", "kitti")
    assert rc == 2 and "--data-root" in err
    rc, _, err = _run(capsys, *base, "--checkpoint", ckpts["plain"], "--data", "synthetic",
                      "--data-root", tmp_path)
    assert rc == 2 and "no --data-root" in err
    rc, _, err = _run(capsys, *base, "--checkpoint", ckpts["plain"], "--data", "synthetic",
                      "--levels", 0.9, 1.2)
    assert rc == 2 and "(0, 1)" in err
    rc, _, err = _run(capsys, *base, "--checkpoint", ckpts["plain"], "--data", "synthetic",
                      "--holdout", 1.0)
    assert rc == 2 and "--holdout" in err
    rc, _, err = _run(capsys, *base, "--checkpoint", ckpts["plain"], "--data", "synthetic",
                      "--bins", "few")
    assert rc == 2 and "--bins" in err
    rc, _, err = _run(capsys, *base, "--checkpoint", ckpts["mono"], "--data", "synthetic")
    assert rc == 2 and "--relative" in err and "monocular" in err
    rc, _, err = _run(capsys, *base, "--checkpoint", ckpts["plain"], "--data", "synthetic",
                      "--split", "ood")
    assert rc == 2 and "--split ood" in err
    rc, _, err = _run(capsys, *base, "--checkpoint", ckpts["plain"], "--data", "nyu",
                      "--data-root", tmp_path)
    assert rc == 2 and "224x288" in err
    rc, _, err = _run(capsys, "calibrate", "--method", "log", "--out", tmp_path / "c.json",
                      "--checkpoint", ckpts["plain"], "--data", "synthetic")
    assert rc == 2 and "log σ head" in err
    assert not (tmp_path / "c.json").exists()
