"""docs/reliability.md §"Bad input", run as a test: every row of its table is a case here.

Each row's `call` cell names a case id of `CASES` (a callable that makes the bad call);
its `gets` cell says what the call gets:

- `` `ValueError: fragment` `` (any exception type): the call raises it (or a subclass),
  and the message contains `fragment`;
- `` `jaxdepth: error: fragment` ``: a CLI row; `jaxdepth.cli.main` returns or exits with
  status 2 and stderr is exactly one line starting `jaxdepth: error:` that contains the
  fragment, no traceback;
- `` `RuntimeWarning: fragment` ``: the call warns so (the case checks its result);
- `` `result: …` ``: the case itself checks the documented result (masked, NaN, …).

Every row needs a case and every case a row. Most calls fail in validation, before
anything is compiled; the models are built once per module at 32×64.
"""
from __future__ import annotations

import builtins
import math
import re
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
H, W = 32, 64


# ----------------------------------------------------------------------------- the table
def table_rows() -> list[dict]:
    """The rows of the table under `## Bad input` (up to the next `## ` heading)."""
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Bad input")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end >= 0 else None]
    rows, header = [], None
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        # cells split at unescaped pipes; `\|` is a pipe inside a cell (GFM)
        cells = [c.strip().replace("\\|", "|")
                 for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set("".join(cells)) <= set("-: "):
            continue
        row = dict(zip(header, cells))
        spans = re.findall(r"`([^`]+)`", row["call"])
        gets = re.findall(r"`([^`]+)`", row["gets"])
        assert spans and gets, f"row without a case id or an expectation: {line}"
        rows.append({"case": spans[0], "gets": gets[0], "line": line})
    return rows


ROWS = table_rows() if "## Bad input" in DOC.read_text(encoding="utf-8") else []


# ----------------------------------------------------------------------------- fixtures
class Lazy:
    """Module-level state built on first use (the tiny models, files, a checkpoint)."""

    def __init__(self):
        self._cache = {}

    def get(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


LAZY = Lazy()


def depthnet():
    from jaxdepth.models import DepthNet
    return LAZY.get("depthnet", lambda: (lambda m: (m, m.init_variables(0, H, W)))(
        DepthNet(width=0.125)))


def monovit():
    from jaxdepth.models import MonoViT
    return LAZY.get("monovit", lambda: (lambda m: (m, m.init_variables(0, H, W)))(
        MonoViT(size="tiny", width=0.5)))


def newcrfs():
    from jaxdepth.models import NeWCRFs
    return LAZY.get("newcrfs", lambda: (lambda m: (m, m.init_variables(0, H, W)))(
        NeWCRFs(encoder="micro", crf_scale=1 / 16)))


def deeplab():
    from jaxdepth.models import DeepLabV3Plus
    return LAZY.get("deeplab", lambda: (lambda m: (m, m.init_variables(0, H, W)))(
        DeepLabV3Plus(3, width=0.125)))


def images(batch=1, h=H, w=W, value=0.5):
    return np.full((batch, h, w, 3), value, np.float32)


def nan_images(n=3):
    x = images()
    x[0, 0, :n, 0] = np.nan
    return x


def inf_images():
    x = images()
    x[0, 1, 0] = np.inf  # 3 values: one pixel, all channels
    return x


def apply_case(model, x, **kw):
    def case():
        m, v = model()
        return m.apply(v, x() if callable(x) else x, **kw)
    return case


def unc_case(name, x, *args, **kw):
    def case():
        from jaxdepth import uncertainty
        m, v = depthnet()
        fn = getattr(uncertainty, name)
        if name == "ensemble":
            return fn(m.apply, [v, v], x() if callable(x) else x, **kw)
        return fn(m.apply, v, x() if callable(x) else x, *args, **kw)
    return case


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A directory with a non-calibration JSON, broken JSON, a non-image .png, a file."""
    d = tmp_path_factory.mktemp("bad_inputs")
    (d / "broken.json").write_text("{nope")
    (d / "other.json").write_text('{"a": 1}')
    (d / "not_an_image.png").write_text("not an image")
    (d / "plain_file").write_text("x")
    (d / "no_images").mkdir()
    (d / "no_images" / "notes.txt").write_text("not an image")
    return d


def checkpoint(files_dir: Path) -> Path:
    """A width-0.125 DepthNet export at 32×64 (random weights), written once."""
    def build():
        from jaxdepth.convert import save_checkpoint
        m, v = depthnet()
        return save_checkpoint(files_dir / "ckpt", {"num_layers": 18, "width": 0.125}, v, H, W)
    return LAZY.get("checkpoint", build)


FILES: dict = {}  # filled by the autouse fixture below (cases are plain lambdas)


@pytest.fixture(autouse=True, scope="module")
def _files(files):
    FILES["dir"] = files
    yield


def f(name) -> str:
    return str(FILES["dir"] / name)


def ckpt() -> str:
    return str(checkpoint(FILES["dir"]))


# ----------------------------------------------------------------------------- results
def _masked_gt():
    """gt with zero, negative, NaN, inf and (for the protocol) beyond-cap pixels."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 50, (4, 6)).astype(np.float32)
    pred = (gt * rng.uniform(0.8, 1.2, gt.shape)).astype(np.float32)
    bad = gt.copy()
    bad[0, :4] = [0.0, -3.0, np.nan, np.inf]
    return gt, pred, bad


def depth_metrics_masked():
    from jaxdepth.metrics import depth_metrics
    gt, pred, bad = _masked_gt()
    keep = np.ones(gt.shape, bool)
    keep[0, :4] = False
    got = depth_metrics(bad, pred)
    want = depth_metrics(gt, pred, keep)
    for k in want:
        assert math.isfinite(float(got[k])) and float(got[k]) == pytest.approx(float(want[k]))


def depth_metrics_no_valid():
    from jaxdepth.metrics import batch_depth_metrics, mean_over_images
    gt, pred, _ = _masked_gt()
    gts = np.stack([gt, np.zeros_like(gt)])
    per = batch_depth_metrics(gts, np.stack([pred, pred]))
    assert all(np.isnan(np.asarray(v)[1]) and np.isfinite(np.asarray(v)[0])
               for v in per.values())
    mean = mean_over_images(per)  # warns: skipped 1 of 2 images
    assert mean["rmse"] == pytest.approx(float(np.asarray(per["rmse"])[0]))


def ause_no_valid():
    from jaxdepth.metrics import ause_aurg, mean_ause_aurg
    gt, pred, _ = _masked_gt()
    empty = ause_aurg(np.zeros_like(gt), pred, np.ones_like(gt))
    assert all(math.isnan(v) for r in empty.values() for v in r.values())
    ok = ause_aurg(gt, pred, np.abs(gt - pred))
    mean = mean_ause_aurg([ok, empty])  # warns
    assert mean["rmse"]["ause"] == pytest.approx(ok["rmse"]["ause"])


def ause_nan_uncertainty():
    from jaxdepth.metrics import ause_aurg
    gt, pred, _ = _masked_gt()
    u = np.abs(gt - pred)
    u[2, 3] = np.nan
    res = ause_aurg(gt, pred, u)
    assert all(math.isnan(v) for r in res.values() for v in r.values())


def protocol_cap():
    from jaxdepth.evaluation import SYNTHETIC, prepare
    from jaxdepth.uncertainty import Estimate
    gt = np.full((1, 4, 6), 10.0, np.float32)
    gt[0, 0, :5] = [0.0, -1.0, np.nan, np.inf, 120.0]  # 120 m: beyond the 80 m cap
    est = Estimate(jnp.full((1, 4, 6, 1), 9.0), jnp.ones((1, 4, 6, 1)))
    _, _, valid = prepare(est, gt, SYNTHETIC)
    valid = np.asarray(valid)
    assert not valid[0, 0, :5].any() and valid[0, 0, 5] and valid[0, 1:].all()


def fit_drops_nan():
    from jaxdepth import calibration
    rng = np.random.default_rng(0)
    s, e = rng.random(4000), rng.random(4000)
    s2, e2 = s.copy(), e.copy()
    s2[:100], e2[100:200] = np.nan, np.inf
    a = calibration.fit(s2, e2, levels=(0.9,), bins=2)
    b = calibration.fit(s[200:], e[200:], levels=(0.9,), bins=2)
    np.testing.assert_array_equal(a.bounds, b.bounds)


def calibration():
    from jaxdepth import calibration as cal
    rng = np.random.default_rng(0)
    return LAZY.get("cal", lambda: cal.fit(rng.random(4000), rng.random(4000), levels=(0.9,)))


def relative_calibration():
    from jaxdepth import calibration as cal
    rng = np.random.default_rng(0)
    return LAZY.get("relcal", lambda: cal.fit(rng.random(4000), rng.random(4000),
                                              levels=(0.9,), relative=True))


def error_bound_nan():
    out = calibration().error_bound(np.array([0.2, np.nan]), 0.9)
    assert np.isfinite(out[0]) and np.isnan(out[1])


# ----------------------------------------------------------------------------- cases
def _kitti(cls, *a, **kw):
    def case():
        from jaxdepth.data import kitti
        return getattr(kitti, cls)(*a, **kw)
    return case


def _data(module, cls, *a, **kw):
    def case():
        import importlib
        return getattr(importlib.import_module(f"jaxdepth.data.{module}"), cls)(*a, **kw)
    return case


def _cli(*argv):
    """A CLI call; argv entries may be callables (paths made by the fixtures)."""
    def case():
        from jaxdepth.cli import main
        args = [str(a() if callable(a) else a) for a in argv]
        try:
            return main(args)
        except SystemExit as e:
            return e.code
    case.cli = True
    return case


def _M():
    from jaxdepth import metrics
    return metrics


def _L():
    from jaxdepth import losses
    return losses


def _S():
    from jaxdepth.metrics import segmentation
    return segmentation


def _O():
    from jaxdepth.metrics import ood
    return ood


def _K():
    from jaxdepth import calibration
    return calibration


def _pgn():
    from jaxdepth.uncertainty import pgn
    return pgn


G = np.full((4, 6), 5.0, np.float32)
P = np.full((4, 6), 4.0, np.float32)
LAB = np.zeros((4, 6), np.int64)
X8 = np.full((1, 8, 8, 3), 0.5, np.float32)
D8 = X8[..., :1]
LOGITS = np.zeros((1, 8, 8, 4), np.float32)
PHI = np.ones((1, 8, 8, 5), np.float32)
S4K = np.random.default_rng(0).random(4000)
U8 = (images() * 255).astype(np.uint8)
GRAD, CAL = "gradient_uncertainty", ("calibrate", "--checkpoint", "/nonexistent/ckpt",
                                      "--method", "grad", "--data", "synthetic",
                                      "--out", "/nonexistent/cal.json")

CASES = {
    # models' apply
    **{f"{name}-rank": apply_case(model, images()[0]) for name, model in
       (("depthnet", depthnet), ("monovit", monovit), ("newcrfs", newcrfs),
        ("deeplab", deeplab))},
    **{f"{name}-channels": apply_case(model, images()[..., :2]) for name, model in
       (("depthnet", depthnet), ("monovit", monovit), ("newcrfs", newcrfs),
        ("deeplab", deeplab))},
    **{f"{name}-uint8": apply_case(model, U8) for name, model in
       (("depthnet", depthnet), ("monovit", monovit), ("newcrfs", newcrfs),
        ("deeplab", deeplab))},
    **{f"{name}-nan": apply_case(model, nan_images) for name, model in
       (("depthnet", depthnet), ("monovit", monovit), ("newcrfs", newcrfs),
        ("deeplab", deeplab))},
    "depthnet-inf-jax": apply_case(depthnet, lambda: jnp.asarray(inf_images())),
    "depthnet-empty": apply_case(depthnet, images(batch=0)),
    "deeplab-empty": apply_case(deeplab, images(batch=0)),
    **{f"{name}-size": apply_case(model, images(h=48)) for name, model in
       (("depthnet", depthnet), ("monovit", monovit), ("newcrfs", newcrfs))},
    **{f"{name}-tap": apply_case(model, images(), offsets={"nope": jnp.zeros(1)})
       for name, model in (("depthnet", depthnet), ("monovit", monovit),
                           ("newcrfs", newcrfs), ("deeplab", deeplab))},
    # uncertainty
    "grad-rank": unc_case(GRAD, images()[0]),
    "grad-channels": unc_case(GRAD, images()[..., :1]),
    "grad-uint8": unc_case(GRAD, U8),
    "grad-float-int": unc_case(GRAD, images().astype(np.int32)),
    "grad-range": unc_case(GRAD, images(value=1.5)),
    "grad-nan": unc_case(GRAD, nan_images),
    "grad-inf-jax": unc_case(GRAD, lambda: jnp.asarray(inf_images())),
    "grad-empty": unc_case(GRAD, images(batch=0)),
    "grad-size": unc_case(GRAD, images(h=48)),
    "grad-reference": unc_case(GRAD, images(), reference="mirror"),
    "grad-aggregate": unc_case(GRAD, images(), aggregate="median"),
    "grad-reduce": unc_case(GRAD, images(), reduce="median"),
    "grad-upsample": unc_case(GRAD, images(), upsample="cubic"),
    "grad-tap": unc_case(GRAD, images(), taps=("nope",)),
    "grad-var-members": unc_case(GRAD, images(), reference="var", var_members=("mirror",)),
    **{f"{m}-{kind}": unc_case(m, x) for m in ("post", "var", "in_drop", "mc_drop",
                                               "ensemble", "predictive")
       for kind, x in (("uint8", U8), ("range", images(value=-0.5)), ("nan", nan_images))},
    "post-space": unc_case("post", images(), space="log"),
    "in_drop-n": unc_case("in_drop", images(), n=1),
    "in_drop-p": unc_case("in_drop", images(), p=1.5),
    "mc_drop-n": unc_case("mc_drop", images(), n=0),
    "ensemble-one": lambda: __import__("jaxdepth.uncertainty").uncertainty.ensemble(
        depthnet()[0].apply, [depthnet()[1]], images()),
    "predictive-no-sigma": unc_case("predictive", images()),
    "predictive-to-depth": unc_case("predictive", images(), to_depth=(10.0, 1.0)),
    "pgn-shape": lambda: _pgn().pgn(LOGITS, PHI[:, :4]),
    "pgn-p": lambda: _pgn().pgn(LOGITS, PHI, p=0),
    "pgn-label": lambda: _pgn().pgn(LOGITS, PHI, label="soft"),
    "pgn-nan": lambda: _pgn().pgn(LOGITS * np.nan, PHI),
    "pgn-maps-nan": lambda: _pgn().pgn_maps(deeplab()[0].apply, deeplab()[1], nan_images()),
    # depth metrics
    "metrics-rank": lambda: _M().depth_metrics(G[None], P[None]),
    "metrics-batch-rank": lambda: _M().batch_depth_metrics(G, P),
    "metrics-shape": lambda: _M().depth_metrics(G, P[:, :5]),
    "metrics-mask-shape": lambda: _M().depth_metrics(G, P, np.ones((4, 5), bool)),
    "metrics-mask-dtype": lambda: _M().depth_metrics(G, P, np.full((4, 6), 0.5)),
    "metrics-mask-str": lambda: _M().depth_metrics(G, P, np.full((4, 6), "y")),
    "metrics-gt-dtype": lambda: _M().depth_metrics(G.astype(str), P),
    "metrics-invalid-gt": depth_metrics_masked,
    "metrics-no-valid": depth_metrics_no_valid,
    "metrics-mean-empty": lambda: _M().mean_over_images([]),
    "protocol-cap": protocol_cap,
    "ause-rank": lambda: _M().ause_aurg(G[None], P[None], G[None]),
    "ause-shape": lambda: _M().ause_aurg(G, P, np.ones((4, 5))),
    "ause-steps": lambda: _M().ause_aurg(G, P, G, steps=0),
    "ause-no-valid": ause_no_valid,
    "ause-nan-uncertainty": ause_nan_uncertainty,
    "batch-ause-backend": lambda: _M().batch_ause_aurg(G[None], P[None], G[None],
                                                       backend="torch"),
    # segmentation / OoD metrics
    "seg-dtype": lambda: _S().confusion_matrix(LAB.astype(float), LAB, 3),
    "seg-shape": lambda: _S().confusion_matrix(LAB[:, :5], LAB, 3),
    "seg-classes": lambda: _S().confusion_matrix(LAB, LAB, 0),
    "seg-range": lambda: _S().confusion_matrix(LAB + 5, LAB, 3),
    "seg-confidence": lambda: _S().ece(np.full((4, 6), 1.5), LAB, LAB),
    "seg-bins": lambda: _S().ece(np.full((4, 6), 0.5), LAB, LAB, bins=0),
    "seg-minmax-empty": lambda: _S().minmax_normalize(np.zeros(0)),
    "ood-label": lambda: _O().pixel_counts(np.zeros((4, 6)), LAB + 2),
    "ood-label-dtype": lambda: _O().pixel_counts(np.zeros((4, 6)), LAB.astype(float)),
    "ood-shape": lambda: _O().pixel_counts(np.zeros((4, 5)), LAB),
    "ood-nan": lambda: _O().pixel_counts(np.full((4, 6), np.nan), LAB),
    "ood-empty": lambda: _O().pixel_metrics([]),
    # losses
    "photometric-shape": lambda: _L().photometric_error(X8, X8[:, :7]),
    "photometric-l1-shape": lambda: _L().photometric_error(X8, X8[:, :7], alpha=0),
    "ssim-shape": lambda: _L().ssim(X8, X8[:, :, :7]),
    "smoothness-rank": lambda: _L().smoothness(D8[0], X8[0]),
    "smoothness-shape": lambda: _L().smoothness(D8, X8[:, :7]),
    "min-reprojection-rng": lambda: _L().min_reprojection(D8, D8),
    "laplace-nll-shape": lambda: _L().laplace_nll(D8, D8[..., 0], D8),
    "gaussian-nll-shape": lambda: _L().gaussian_nll(D8, D8, D8[:, :7]),
    "adu-mask-dtype": lambda: _L().adu.silog_loss(D8, D8, np.ones(D8.shape, np.float32)),
    "adu-shape": lambda: _L().adu.silog_loss(D8, D8[:, :7], np.ones(D8.shape, bool)),
    "adu-gamma": lambda: _L().adu.focal_depth_loss(D8, D8, gamma=-1.0),
    "adu-reduction": lambda: _L().adu.soft_label_loss(D8, D8, reduction="median"),
    # calibration
    "fit-level-one": lambda: _K().fit(S4K, S4K, levels=(0.9, 1.0)),
    "fit-level-zero": lambda: _K().fit(S4K, S4K, levels=(0.0,)),
    "fit-levels-empty": lambda: _K().fit(S4K, S4K, levels=()),
    "fit-shape": lambda: _K().fit(S4K, S4K[:10]),
    "fit-mask-shape": lambda: _K().fit(S4K, S4K, mask=np.ones(10, bool)),
    "fit-negative": lambda: _K().fit(S4K, -S4K),
    "fit-dtype": lambda: _K().fit(S4K.astype(str), S4K),
    "fit-empty": lambda: _K().fit(S4K[:0], S4K[:0]),
    "fit-too-few": lambda: _K().fit(S4K[:5], S4K[:5], levels=(0.9,)),
    "fit-all-nan": lambda: _K().fit(S4K * np.nan, S4K, levels=(0.9,)),
    "fit-nan-dropped": fit_drops_nan,
    "fit-bins": lambda: _K().fit(S4K, S4K, bins=0),
    "fit-monotone": lambda: _K().fit(S4K, S4K, monotone="max"),
    "error-bound-level": lambda: calibration().error_bound(S4K, 0.5),
    "error-bound-dtype": lambda: calibration().error_bound(S4K.astype(str), 0.9),
    "error-bound-relative": lambda: relative_calibration().error_bound(S4K, 0.9),
    "error-bound-depth-shape": lambda: relative_calibration().error_bound(S4K, 0.9,
                                                                          depth=S4K[:5]),
    "error-bound-nan": error_bound_nan,
    "load-missing": lambda: _K().Calibration.load("/nonexistent/cal.json"),
    "load-directory": lambda: _K().Calibration.load(FILES["dir"]),
    "load-broken": lambda: _K().Calibration.load(f("broken.json")),
    "load-other": lambda: _K().Calibration.load(f("other.json")),
    # loaders
    "kittiraw-root": _kitti("KittiRaw", "/nonexistent/kitti", "eigen_zhou"),
    "kittiraw-split": _kitti("KittiRaw", "/nonexistent/kitti", "nosplit"),
    "kittiraw-size": _kitti("KittiRaw", "/nonexistent/kitti", "eigen_zhou", height=0),
    "kittiraw-frames": _kitti("KittiRaw", "/nonexistent/kitti", "eigen_zhou",
                              frame_ids=(-1, 1)),
    "kittitest-root": _kitti("KittiTest", "/nonexistent/kitti", "eigen"),
    "kittitest-gt": _kitti("KittiTest", "/nonexistent/kitti", "eigen", gt="lidar"),
    "kittitest-size": _kitti("KittiTest", "/nonexistent/kitti", "eigen", width=-5),
    "nyu-root": _data("nyu", "NyuV2", "/nonexistent/nyu"),
    "nyu-subset": _data("nyu", "NyuV2", "/nonexistent/nyu", "test"),
    "nyu-mode": _data("nyu", "NyuV2", "/nonexistent/nyu", mode="train"),
    "nyu-files-empty": _data("nyu", "NyuV2", "/nonexistent/nyu", files=[]),
    "cityscapes-root": _data("cityscapes", "Cityscapes", "/nonexistent/cityscapes"),
    "cityscapes-split": _data("cityscapes", "Cityscapes", "/nonexistent/cityscapes", "dev"),
    "cityscapes-size": _data("cityscapes", "Cityscapes", "/nonexistent/cityscapes",
                             height=-1, width=5),
    "drivingstereo-root": _data("drivingstereo", "DrivingStereo", "/nonexistent/ds"),
    "drivingstereo-split": _data("drivingstereo", "DrivingStereo", "/nonexistent/ds", "dev"),
    "drivingstereo-size": _data("drivingstereo", "DrivingStereo", "/nonexistent/ds",
                                height=0, width=5),
    "drivingstereo-keys": _data("drivingstereo", "DrivingStereo", "/nonexistent/ds",
                                keys=("lidar",)),
    "synthetic-split": _data("synthetic", "SyntheticSource", "dev"),
    "synthetic-size": _data("synthetic", "SyntheticSource", "val", height=0),
    "synthetic-length": _data("synthetic", "SyntheticSource", "val", length=0),
    "synthetic-seed": _data("synthetic", "SyntheticSource", "val", seed=-1),
    "synthetic-index": lambda: _data("synthetic", "SyntheticSource", "val", length=2)()[5],
    "synthetic-indices": lambda: _data("synthetic", "SyntheticSource", "val")().get_batch(
        np.zeros((2, 2), int)),
    # CLI
    "cli-no-command": _cli(),
    "cli-unknown-command": _cli("serve"),
    "cli-unknown-flag": _cli("predict", "--checkpoint", "/nonexistent/ckpt", "--bogus", "a.png"),
    "predict-no-checkpoint-flag": _cli("predict", "a.png"),
    "predict-method": _cli("predict", "--checkpoint", "/nonexistent/ckpt", "--method", "magic",
                           "a.png"),
    "predict-batch-type": _cli("predict", "--checkpoint", "/nonexistent/ckpt",
                               "--batch-size", "x", "a.png"),
    "predict-batch-zero": _cli("predict", "--checkpoint", "/nonexistent/ckpt",
                               "--batch-size", "0", "a.png"),
    "predict-no-image": _cli("predict", "--checkpoint", "/nonexistent/ckpt"),
    "predict-missing-image": _cli("predict", "--checkpoint", "/nonexistent/ckpt",
                                  "/nonexistent/a.png"),
    "predict-no-match": _cli("predict", "--checkpoint", "/nonexistent/ckpt",
                             lambda: FILES["dir"] / "no_images"),
    "predict-missing-checkpoint": _cli("predict", "--checkpoint", "/nonexistent/ckpt",
                                       lambda: f("not_an_image.png")),
    "predict-not-a-checkpoint": _cli("predict", "--checkpoint", lambda: FILES["dir"],
                                     "--out", lambda: FILES["dir"] / "out",
                                     lambda: f("not_an_image.png")),
    "predict-out-unwritable": _cli("predict", "--checkpoint", ckpt, "--out",
                                   lambda: f("plain_file") + "/out", lambda: f("not_an_image.png")),
    "predict-unreadable-image": _cli("predict", "--checkpoint", ckpt, "--out",
                                     lambda: FILES["dir"] / "out", "--no-panel",
                                     lambda: f("not_an_image.png")),
    "predict-method-needs-sigma": _cli("predict", "--checkpoint", ckpt, "--method", "predictive",
                                       "--out", lambda: FILES["dir"] / "out",
                                       lambda: f("not_an_image.png")),
    "predict-tap": _cli("predict", "--checkpoint", ckpt, "--taps", "nope", "--out",
                        lambda: FILES["dir"] / "out", lambda: f("not_an_image.png")),
    "predict-calibration-missing": _cli("predict", "--checkpoint", ckpt, "--calibration",
                                        "/nonexistent/cal.json", "--out",
                                        lambda: FILES["dir"] / "out",
                                        lambda: f("not_an_image.png")),
    "predict-levels-alone": _cli("predict", "--checkpoint", ckpt, "--levels", "0.9", "--out",
                                 lambda: FILES["dir"] / "out", lambda: f("not_an_image.png")),
    "calibrate-level-range": _cli(*CAL, "--levels", "1.5"),
    "calibrate-level-type": _cli(*CAL, "--levels", "ninety"),
    "calibrate-holdout": _cli(*CAL, "--holdout", "1"),
    "calibrate-images": _cli(*CAL, "--images", "0"),
    "calibrate-pixel-fraction": _cli(*CAL, "--pixel-fraction", "0"),
    "calibrate-bins": _cli(*CAL, "--bins", "x"),
    "calibrate-data": _cli(*CAL[:6], "imagenet", *CAL[7:]),
    "calibrate-data-root": _cli(*CAL[:6], "kitti", *CAL[7:]),
    "calibrate-missing-checkpoint": _cli(*CAL),
    "convert-format": _cli("convert", "resnet"),
    "convert-missing-file": _cli("convert", "monodepth2", "--encoder", "/nonexistent/e.pth",
                                 "--depth", "/nonexistent/d.pth", "--out", "/nonexistent/ck"),
    "convert-encoder-alone": _cli("convert", "monodepth2", "--encoder", "/nonexistent/e.pth",
                                  "--out", "/nonexistent/ck"),
    "convert-deeplabv3-missing": _cli("convert", "deeplabv3", "--weights", "/nonexistent/w.pth",
                                      "--out", "/nonexistent/ck"),
    "convert-monovit-missing": _cli("convert", "monovit", "--encoder", "/nonexistent/e.pth",
                                    "--depth", "/nonexistent/d.pth", "--out", "/nonexistent/ck"),
    "train-recipe": _cli("train", "--recipe", "nope", "--out", "/nonexistent/run"),
    "train-no-out": _cli("train", "--recipe", "selfsup-s"),
    "train-steps": _cli("train", "--recipe", "selfsup-s", "--steps", "0", "--out",
                        lambda: FILES["dir"] / "run"),
    "train-data-root": _cli("train", "--recipe", "selfsup-s", "--data", "kitti", "--out",
                            lambda: FILES["dir"] / "run"),
    "train-out-unwritable": _cli("train", "--recipe", "selfsup-s", "--steps", "1", "--out",
                                 lambda: f("plain_file") + "/run"),
    "train-size": _cli("train", "--recipe", "selfsup-s", "--height", "33", "--steps", "1",
                       "--out", lambda: FILES["dir"] / "run"),
    "train-teacher": _cli("train", "--recipe", "self", "--teacher", "/nonexistent/run",
                          "--steps", "1", "--out", lambda: FILES["dir"] / "run"),
}


# ----------------------------------------------------------------------------- tests
def test_every_row_has_a_case_and_every_case_a_row():
    ids = [r["case"] for r in ROWS]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    assert not dupes, f"case ids in more than one row: {dupes}"
    assert not set(ids) - set(CASES), f"rows without a case: {sorted(set(ids) - set(CASES))}"
    assert not set(CASES) - set(ids), f"cases without a row: {sorted(set(CASES) - set(ids))}"


def _exception_type(name: str):
    t = getattr(builtins, name, None)
    assert isinstance(t, type) and issubclass(t, BaseException), f"unknown type {name}"
    return t


@pytest.mark.parametrize("row", ROWS, ids=[r["case"] for r in ROWS])
def test_row(row, capsys):
    case, gets = CASES[row["case"]], row["gets"]
    if gets.startswith("jaxdepth: error:"):
        assert getattr(case, "cli", False), f"{row['case']}: a CLI row needs a _cli case"
        capsys.readouterr()
        code = case()
        out, err = capsys.readouterr()
        assert code == 2, f"exit status {code}; stderr: {err}"
        assert "Traceback" not in err and err.endswith("\n"), err
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("jaxdepth: error: "), err
        assert gets[len("jaxdepth: error:"):].strip() in lines[0]
        return
    if gets.startswith("result:"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # unexpected: fails the row
            case()
        return
    name, _, fragment = gets.partition(": ")
    kind = _exception_type(name)
    if issubclass(kind, Warning):
        with pytest.warns(kind, match=re.escape(fragment)):
            case()
        return
    with pytest.raises(kind, match=re.escape(fragment)):
        case()
