"""Self-supervised (M, S, MS, Log), Self and SUB-Depth training steps on a tiny model, and
the SUB-Depth / Self losses against hand-computed values.

The configs are those of the experiments' `--quick` modes (width 0.125, 32×96, batch 8)
and the steps run on the same device mesh as `train.loop.fit`, so the end-to-end runs of
`experiments/sub_depth.py` and `experiments/kitti_grad_unc.py --selfsup` at the end of
this file reuse the compiled steps (one file runs in one test worker).
"""
import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiment_scripts import load_experiment
from jaxdepth.data.pipeline import shard_batch
from jaxdepth.data.synthetic import SyntheticSource
from jaxdepth.losses import self_teaching_loss, sub_depth_loss
from jaxdepth.train import distill, selfsup
from jaxdepth.train.config import RunConfig
from jaxdepth.train.runs import RunNotFinished
from jaxdepth.train.loop import data_mesh, replicate

# tiny models: compiling dominates, so compile with XLA's optimisations off
pytestmark = pytest.mark.usefixtures("cheap_compilation")

BASE = selfsup.SelfSupConfig(mode="M", width=0.125, run=RunConfig(
    height=32, image_width=96, batch_size=8, steps=6))


@pytest.fixture(scope="module")
def batch():
    src = SyntheticSource("train", height=32, width=96, length=8,
                          keys=("image", "K", "frames", "image_right", "stereo_T"))
    return src.get_batch(np.arange(8))


def _run(step, state, batch, keys, n):
    """`n` steps on one batch, placed as `fit` places them; returns (state, losses, metrics)."""
    mesh = data_mesh()
    state = replicate(state, mesh)
    b = shard_batch({k: batch[k] for k in keys}, mesh)
    losses = []
    for _ in range(n):
        state, metrics = step(state, b)
        losses.append(float(metrics["loss"]))
    return jax.device_get(state), losses, {k: float(v) for k, v in metrics.items()}


@pytest.fixture(scope="module")
def teacher(batch):
    """A few M steps: the M test and the teacher of the distillation tests."""
    state, losses, metrics = _run(selfsup.make_step(BASE), selfsup.init_state(BASE), batch,
                                  selfsup.data_keys("M"), 5)
    return state, losses, metrics


@pytest.mark.slow
def test_m_steps_lower_the_loss(teacher):
    state, losses, metrics = teacher
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert 0.0 < metrics["automask"] < 1.0 and metrics["smoothness"] > 0
    assert set(state["params"]) == {"depth", "pose"} and int(state["step"]) == 5


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["S", "MS"])
def test_stereo_modes_lower_the_loss(batch, mode):
    cfg = dataclasses.replace(BASE, mode=mode)
    state, losses, _ = _run(selfsup.make_step(cfg), selfsup.init_state(cfg), batch,
                            selfsup.data_keys(mode), 5)
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    assert ("pose" in state["params"]) == (mode == "MS")


@pytest.mark.slow
def test_log_variant_is_finite_and_trains(batch):
    cfg = dataclasses.replace(BASE, variant="log")
    state, losses, metrics = _run(selfsup.make_step(cfg), selfsup.init_state(cfg), batch,
                                  selfsup.data_keys("M"), 3)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    out = cfg.model().apply(selfsup.variables_of(state), jnp.asarray(batch["image"][:2]))
    assert np.isfinite(np.asarray(out["log_sigma"])).all()


@pytest.mark.slow
def test_drop_variant_trains_a_thinned_decoder(batch, teacher):
    """Drop: the plain loss of a decoder with channel dropout: its training outputs
    depend on the dropout key (the plain model's do not), it trains, and plain configs
    keep their hash."""
    cfg = dataclasses.replace(BASE, variant="drop")
    _, losses, _ = _run(selfsup.make_step(cfg), selfsup.init_state(cfg), batch,
                        selfsup.data_keys("M"), 3)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    images = jnp.asarray(batch["image"])
    variables = selfsup.variables_of(teacher[0])
    for c, differs in ((cfg, True), (BASE, False)):
        raw = [selfsup.train_outputs(c, c.model(), variables, images,
                                     jax.random.PRNGKey(k))[0]["scales"][0]["raw"]
               for k in (0, 1)]
        assert bool(jnp.any(jnp.abs(raw[0] - raw[1]) > 1e-3)) == differs
    assert cfg.to_dict()["dropout"] == 0.2 and "dropout" not in BASE.to_dict()


@pytest.mark.slow
def test_fine_tuned_variants_start_from_the_plain_run(teacher, tmp_path):
    """`fine_tune_config`: the variant starts from the plain run's weights (new σ heads
    random, fresh optimiser) at a tenth of its learning rate, and its saved config names
    the run it started from; `variant_config` uses it for M."""
    cfg = selfsup.fine_tune_config(BASE, "log")
    assert cfg.start_from == BASE and cfg.run.lr == pytest.approx(0.1 * BASE.run.lr)
    # the experiments fine-tune M's variants only (S / MS: the baseline fixes the scale)
    assert selfsup.variant_config(BASE, "log") == cfg
    stereo = dataclasses.replace(BASE, mode="S")
    assert selfsup.variant_config(stereo, "drop") == dataclasses.replace(stereo, variant="drop")
    assert cfg.to_dict()["start_from"] == BASE.to_dict() and "start_from" not in BASE.to_dict()
    start = teacher[0]
    state = selfsup.init_state(cfg, start_state=start)
    fresh = selfsup.init_state(cfg)
    flat = dict(jax.tree_util.tree_leaves_with_path(state["params"]))
    from_start = dict(jax.tree_util.tree_leaves_with_path(start["params"]))
    for path, leaf in flat.items():
        if path in from_start:
            np.testing.assert_array_equal(leaf, from_start[path])
    heads = [p for p in flat if p not in from_start]
    assert heads and all("uncertconv" in jax.tree_util.keystr(p) for p in heads)
    for path in heads:  # the σ heads keep their fresh initialisation
        np.testing.assert_array_equal(flat[path], dict(
            jax.tree_util.tree_leaves_with_path(fresh["params"]))[path])
    assert int(state["step"]) == 0 and all(
        float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(state["opt_state"][0].mu))
    # the start run does not enter the compiled step
    assert selfsup.make_step(cfg) is selfsup.make_step(dataclasses.replace(cfg, start_from=None))
    with pytest.raises(ValueError, match="start_from.*width"):
        selfsup.fine_tune_config(BASE, "drop", width=0.25)
    with pytest.raises(RunNotFinished, match="selfsup_m-"):  # the start run comes first
        selfsup.train_or_load(None, cfg, tmp_path, no_train=True)
    bad = jax.tree.map(lambda x: x[..., :1] if jnp.ndim(x) else x, start)
    with pytest.raises(ValueError, match="shape"):
        selfsup.init_state(cfg, start_state=bad)


@pytest.mark.slow
def test_self_and_sub_depth_steps_lower_their_losses(batch, teacher):
    teacher_vars = selfsup.variables_of(teacher[0])
    for cfg, n in ((distill.DistillConfig(method="self", teacher=BASE), 4),
                   (distill.DistillConfig(method="sub_depth", teacher=BASE), 4)):
        state, losses, metrics = _run(distill.make_step(cfg, teacher_vars),
                                      distill.init_state(cfg), batch, distill.data_keys(cfg), n)
        assert all(math.isfinite(v) for v in losses), (cfg.method, losses)
        assert losses[-1] < losses[0], (cfg.method, losses)
        assert metrics["regression"] > 0
    # SUB-Depth's student: a sigmoid σ head (log σ ≤ 0), plus pose and uncertainty networks
    assert set(state["params"]) == {"depth", "pose", "uncert"}
    assert {"photometric", "reconstruction", "distillation"} <= set(metrics)
    out = cfg.model().apply(distill.variables_of(state), jnp.asarray(batch["image"][:2]))
    assert (np.asarray(out["log_sigma"]) < 0).all()


def test_sub_depth_forms_match_hand_computed_values():
    p = [np.array([0.2, 0.4], np.float32).reshape(1, 1, 2, 1),
         np.array([0.1, 0.3], np.float32).reshape(1, 1, 2, 1)]
    smooth = [0.5, 0.25]
    d = np.array([0.3, 0.6], np.float32).reshape(1, 1, 2, 1)
    dt = np.array([0.2, 0.9], np.float32).reshape(1, 1, 2, 1)  # |d − d_T| = 0.1, 0.3
    s_pho = np.log(np.array([0.5, 0.25], np.float32)).reshape(1, 1, 2, 1)
    s_reg = np.log(np.array([0.1, 0.2], np.float32)).reshape(1, 1, 2, 1)
    ln = math.log
    # per pixel: ½Σ_s[mean(p_s/σ_pho + log σ_pho) + 1e-3·S_s/2^s] + mean(r/σ_reg + log σ_reg)
    rec = 0.5 * ((0.2 / 0.5 + ln(0.5) + 0.4 / 0.25 + ln(0.25)) / 2 + 1e-3 * 0.5
                 + (0.1 / 0.5 + ln(0.5) + 0.3 / 0.25 + ln(0.25)) / 2 + 1e-3 / 2 * 0.25)
    dis = (0.1 / 0.1 + ln(0.1) + 0.3 / 0.2 + ln(0.2)) / 2
    loss, t = sub_depth_loss(p, smooth, d, dt, form="pixel", log_sigma_pho=s_pho,
                             log_sigma_reg=s_reg)
    assert float(t["reconstruction"]) == pytest.approx(rec, rel=1e-5)
    assert float(t["distillation"]) == pytest.approx(dis, rel=1e-5)
    assert float(loss) == pytest.approx(rec + dis, rel=1e-5)
    photometric = 0.5 * ((0.3 + 1e-3 * 0.5) + (0.2 + 1e-3 / 2 * 0.25))
    assert float(t["photometric"]) == pytest.approx(photometric, rel=1e-6)
    assert float(t["regression"]) == pytest.approx(0.2, rel=1e-6)
    # scalar (Kendall): ℓ_pho/σ_pho + log σ_pho + ℓ_reg/σ_reg + log σ_reg, σ = e^s
    task = {"pho": jnp.float32(ln(2.0)), "reg": jnp.float32(-1.0)}
    loss, t = sub_depth_loss(p, smooth, d, dt, form="scalar", task_log_sigma=task)
    expected = photometric / 2 + ln(2.0) + 0.2 * math.e - 1.0
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # manual weights (Table 1 grid)
    loss, _ = sub_depth_loss(p, smooth, d, dt, form="manual", weights=(0.2, 0.8))
    assert float(loss) == pytest.approx(0.2 * photometric + 0.8 * 0.2, rel=1e-6)
    # the teacher gets no gradient, the student does
    g_t = jax.grad(lambda x: sub_depth_loss(p, smooth, d, x, form="manual")[0])(jnp.asarray(dt))
    g_s = jax.grad(lambda x: sub_depth_loss(p, smooth, x, dt, form="manual")[0])(jnp.asarray(d))
    assert float(jnp.abs(g_t).max()) == 0.0 and float(jnp.abs(g_s).max()) > 0
    with pytest.raises(ValueError, match="log_sigma_pho"):
        sub_depth_loss(p, smooth, d, dt, form="pixel")
    # Self: |d − d_T|/σ + log σ per pixel
    self_loss = np.asarray(self_teaching_loss(d, dt, s_reg)).ravel()
    np.testing.assert_allclose(self_loss, [1.0 + ln(0.1), 1.5 + ln(0.2)], rtol=1e-5)


def test_configs_and_scale():
    assert selfsup.stereo_scale_factor(BASE) == pytest.approx(5.4)
    assert selfsup.stereo_scale_factor(dataclasses.replace(BASE, stereo_baseline=None)) == 1.0
    assert BASE.frame_ids == (-1, 1) and dataclasses.replace(BASE, mode="MS").frame_ids == (-1, 1, "s")
    cfg = distill.DistillConfig(teacher=BASE)
    assert cfg.student == BASE and cfg.has_pose and cfg.has_uncertnet
    assert distill.DistillConfig.from_dict(cfg.to_dict()) == cfg  # round trip, saved dict
    # a depth map at the near limit (M scale drift into the saturated sigmoid) is flagged
    depth = np.full((2, 4, 5, 1), 0.1, np.float32)
    assert selfsup.collapsed(depth, 0.1) and selfsup.collapsed(depth * 1.04, 0.1)
    depth[0, :1] = 3.0  # 12.5 % of the pixels away from the limit: 87.5 % at it
    assert selfsup.collapsed(depth, 0.1, share=0.8) and not selfsup.collapsed(depth, 0.1)
    # ... and so is one constant depth anywhere (a decoder whose head sees dead features)
    assert selfsup.collapsed(np.full((2, 4, 5, 1), 3.23, np.float32), 0.1)
    assert not selfsup.collapsed(np.linspace(1, 9, 40, dtype=np.float32).reshape(2, 4, 5, 1), 0.1)
    # M runs get M_STEPS_FACTOR × the steps of S / MS runs (PoseNet learns the motion first)
    assert [selfsup.steps_for(m, 600) for m in selfsup.MODES] == [1500, 600, 600]
    with pytest.raises(ValueError, match="mode"):
        selfsup.steps_for("X", 600)
    with pytest.raises(ValueError, match="mode"):
        selfsup.SelfSupConfig(mode="X")
    with pytest.raises(ValueError, match="form"):
        distill.DistillConfig(form="x")


# ----------------------------------------------------------------------------- experiments
DEPTH = {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"}


@pytest.fixture(scope="module")
def shared_checkpoints(tmp_path_factory):
    """One checkpoint root for both experiments: runs are found by their configs, so
    `kitti_grad_unc.py --selfsup M` reuses sub_depth.py's teacher, Log and Self."""
    return tmp_path_factory.mktemp("shared_ck")


@pytest.mark.slow
def test_sub_depth_quick_run_writes_results(tmp_path, capsys, shared_checkpoints):
    """experiments/sub_depth.py end to end (M teacher: the configs of the steps above)."""
    args = ["--quick", "--teacher-mode", "M", "--steps", "3", "--test-images", "8",
            "--out", str(tmp_path / "out"), "--checkpoints", str(shared_checkpoints)]
    rows = load_experiment("sub_depth").main(args)
    printed = capsys.readouterr().out
    assert "Table 2" in printed and "Table 3" in printed and "Table 5" in printed
    assert "Claim check" in printed and "Monodepth2 M (teacher)" in printed
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["rows"] == rows
    assert result["config"]["quick"] is True and result["config"]["steps"] == 3
    assert [r["model"] for r in rows] == ["teacher", "student", "log", "self",
                                          "student σ→depth", "self σ→depth"]
    for row in rows:
        assert set(row["depth"]) == DEPTH
        assert all(math.isfinite(v) for v in row["depth"].values())
        has_sigma = row["model"] != "teacher"
        assert set(row) == ({"model", "depth"} | ({"abs_rel", "rmse", "a1"} if has_sigma else set()))
        for metric in ("abs_rel", "rmse", "a1"):
            if has_sigma:
                assert set(row[metric]) == {"ause", "aurg"}
                assert all(math.isfinite(v) for v in row[metric].values())
    by = {r["model"]: r for r in rows}
    assert by["self σ→depth"]["depth"] == by["self"]["depth"]  # same depth, other σ
    assert by["self σ→depth"]["rmse"] != by["self"]["rmse"]
    for name in ("panel_0.png", "sparsification_abs_rel.png", "tables.txt"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    # the student's teacher is the M run, found again by its config; Log and Self are the
    # runs `kitti_grad_unc.py --selfsup M` uses too
    runs = sorted(p.name.split("-")[0] for p in shared_checkpoints.iterdir())
    assert runs == ["selfsup_m", "selfsup_m_log", "selfsup_m_self", "sub_depth_pixel"]


@pytest.mark.slow
def test_kitti_grad_unc_selfsup_rows_use_their_mode_protocol(shared_checkpoints, capsys):
    """`--selfsup M` trains the monocular plain, Log, Self and Drop models and adds their
    rows, evaluated with per-image median scaling (S / MS rows get the known-baseline
    ×5.4). The supervised rows and the shared uncertainty methods are covered by
    tests/test_kitti_grad_unc.py; here three of the rows are evaluated."""
    module = load_experiment("kitti_grad_unc")
    cfg = module.config_of(module.parse_args(["--quick", "--steps", "3", "--boot", "0",
                                              "--selfsup", "M"]))
    configs = module.selfsup_configs(cfg, "M")
    assert list(configs) == ["M", "M Log", "M Self", "M Drop"]
    models, _, collapsed = module.train_models(cfg, configs, shared_checkpoints)
    assert list(models) == list(configs)
    if any(p.name.startswith("sub_depth_pixel") for p in shared_checkpoints.iterdir()):
        # sub_depth.py ran first (same worker): its teacher, Log and Self were reused
        assert capsys.readouterr().out.count("reusing") >= 3
    rows = module.selfsup_table_rows(cfg, configs, models, "M")
    assert [(r.model, r.method) for r in rows] == [
        ("M", "Post"), ("M", "Var"), ("M", "In-Drop"), ("M", "Grad"), ("M Log", "Log"),
        ("M Log", "Grad"), ("M Self", "Self"), ("M Self", "Grad"), ("M Drop", "Drop")]
    assert {r.protocol.scaling for r in rows} == {"median"}
    chosen = [r for r in rows if r.method in ("Post", "Log", "Self")]  # MC Drop: elsewhere
    ev, _, _ = module.evaluate_rows(chosen, cfg)
    result = ev.rows()
    assert [(r["model"], r["method"]) for r in result] == [(r.model, r.method) for r in chosen]
    for row in result:
        assert all(math.isfinite(row[m]["ause"]) for m in ("abs_rel", "rmse", "a1"))
    # median scaling: a model's depth rescaled by any constant scores the same
    first = chosen[0]
    scaled = [dataclasses.replace(first, fn=lambda x, k, f=first.fn: f(x, k)._replace(
        depth=3.0 * f(x, k).depth))]
    ev2, _, _ = module.evaluate_rows(scaled, cfg)
    assert ev2.rows()[0]["depth"]["abs_rel"] == pytest.approx(result[0]["depth"]["abs_rel"],
                                                              rel=1e-4)
    stereo = module.selfsup_configs(cfg, "S")["S"]
    p = module.mode_protocol(stereo)
    assert p.scaling == "stereo" and p.stereo_factor == pytest.approx(5.4)
