"""MonoViT through the shared training skeleton: `arch="monovit"` configs, MonoViT's
two-group AdamW with per-epoch decay, supervised and selfsup-m steps, and `jaxdepth train
--arch monovit` → `jaxdepth predict`.

MonoViT(size="tiny", width 0.25) at 32×64: compiling its steps dominates (XLA's
optimisations are off suite-wide). The supervised steps run on `fit`'s device mesh with
the command-line run's config, so that run reuses their compiled step.
"""
from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from jaxdepth.cli import main
from jaxdepth.data.pipeline import Loader, shard_batch
from jaxdepth.data.training import training_data
from jaxdepth.export import load_checkpoint
from jaxdepth.models import DepthNet, MonoViT
from jaxdepth.train import recipes, runs, selfsup, supervised
from jaxdepth.train import state as train_state
from jaxdepth.train.config import RunConfig
from jaxdepth.train.loop import data_mesh, replicate

pytestmark = pytest.mark.usefixtures("cheap_compilation")
H, W, B, WIDTH = 32, 64, 8, 0.25
LR = 1e-3  # jaxdepth train's default on the procedural scenes
ARCH = {"arch": "monovit", "monovit_size": "tiny"}


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _steps(step, state, batch, n, mesh=True):
    """`n` steps on one batch (placed as `fit` places it with `mesh`)."""
    if mesh:
        state, batch = replicate(state, data_mesh()), shard_batch(batch, data_mesh())
    losses = []
    for _ in range(n):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    return jax.device_get(state), losses


def _changed(a, b) -> bool:
    return any(bool(jnp.any(x != y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ----------------------------------------------------------------------------- configs
def test_configs_keep_monodepth2_dicts_and_name_monovit_runs():
    run = RunConfig(height=H, image_width=W)
    for name in ("supervised", "log", "selfsup-m", "selfsup-ms-log"):
        old = recipes.build(name, run, model_width=WIDTH)
        d = old.to_dict()
        assert not {"arch", "monovit_size", "optimizer"} & set(d), name
        assert isinstance(old.model(), DepthNet) and old.optimizer_name == "adam"
        new = recipes.build(name, run, model_width=WIDTH, **ARCH)
        d = new.to_dict()
        assert (d["arch"], d["monovit_size"]) == ("monovit", "tiny") and "optimizer" not in d
        assert new.optimizer_name == "monovit" and runs.digest(new) != runs.digest(old)
        assert recipes.config_from_dict(d) == new and recipes.recipe_of(new) == name
        assert recipes.run_name(new) == recipes.run_name(old) + "_monovit_tiny"
        m = new.model()
        assert isinstance(m, MonoViT) and (m.size, m.width) == ("tiny", WIDTH)
        assert m.log_sigma == (name in ("log", "selfsup-ms-log"))
    # an explicit optimiser: stored only when it is not the architecture's own
    cfg = supervised.SupervisedConfig(**ARCH, optimizer="monovit")
    assert cfg.optimizer is None and cfg == supervised.SupervisedConfig(**ARCH)
    adam = supervised.SupervisedConfig(**ARCH, optimizer="adam")
    assert adam.to_dict()["optimizer"] == "adam" and adam.optimizer_name == "adam"
    assert dataclasses.replace(supervised.SupervisedConfig(), **ARCH).optimizer_name == "monovit"
    # metric (NYU) and dropout carry over; the student of a MonoViT teacher is MonoViT
    nyu = recipes.build("drop", RunConfig(height=H, image_width=W, data="nyu"), **ARCH)
    assert nyu.model().metric and nyu.model().dropout_rate == 0.2
    teacher = recipes.build("selfsup-m", run, model_width=WIDTH, **ARCH)
    for name in ("self", "sub-depth"):
        student = recipes.build(name, run, teacher=teacher, model_width=WIDTH)
        assert isinstance(student.model(), MonoViT) and student.student.arch == "monovit"
        assert student.model().log_sigma
    tuned = recipes.build("selfsup-m-log", run, teacher=teacher)
    assert tuned.start_from == teacher and isinstance(tuned.model(), MonoViT)
    with pytest.raises(ValueError, match="fine-tunes its teacher's network"):
        recipes.build("selfsup-m-log", run, teacher=teacher, arch="monodepth2")
    with pytest.raises(ValueError, match="monovit_size"):
        supervised.SupervisedConfig(monovit_size="tiny")
    with pytest.raises(ValueError, match="arch"):
        selfsup.SelfSupConfig(arch="vit")
    with pytest.raises(ValueError, match="segmentation"):
        recipes.build("segmentation", run, arch="monovit")


# ----------------------------------------------------------------------------- optimiser
def test_monovit_optimizer_groups_rates_decay_and_weight_decay():
    """Encoder at ½ the run's lr, decoder and pose at the lr, ×0.9 per epoch of
    train_size // batch_size updates, AdamW's decoupled weight decay 0.01: the updates of
    a constant gradient against the hand-computed ones."""
    run = RunConfig(lr=LR, train_size=8, batch_size=4)  # epoch = 2 updates
    hp = train_state.hparams(run, "monovit")
    assert run.epoch_steps == 2 and train_state.optimizer_name(hp) == "monovit"
    sched = train_state.monovit_schedules(hp)
    for t in (0, 1, 2, 3, 5, 40):
        assert float(sched["decoder"](t)) == pytest.approx(LR * 0.9 ** (t // 2), rel=1e-6)
        assert float(sched["encoder"](t)) == pytest.approx(0.5 * LR * 0.9 ** (t // 2), rel=1e-6)
    # the released setting: 1e-4 for the decoder, 5e-5 for the encoder
    released = train_state.monovit_schedules(train_state.hparams(RunConfig(lr=1e-4), "monovit"))
    assert float(released["encoder"](0)) == pytest.approx(5e-5)
    assert float(released["decoder"](0)) == pytest.approx(1e-4)

    params = {"depth": {"encoder": {"w": jnp.full(3, 2.0)}, "decoder": {"w": jnp.full(2, -1.0)}},
              "pose": {"w": jnp.full(2, 0.5)}}
    labels = train_state.monovit_labels(params)
    assert labels == {"depth": {"encoder": "encoder", "decoder": "decoder"}, "pose": "decoder"}
    tx = train_state.make_optimizer(hp)
    opt = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    expect = {k: np.asarray(v, np.float64) for k, v in
              (("enc", 2.0), ("dec", -1.0), ("pose", 0.5))}
    for t in range(5):
        upd, opt = tx.update(grads, opt, params)
        params = optax.apply_updates(params, upd)
        lr = LR * 0.9 ** (t // 2)
        # a constant gradient: Adam's direction m̂ / (√v̂ + ε) is 1 / (1 + 1e-8)
        for k, rate in (("enc", 0.5 * lr), ("dec", lr), ("pose", lr)):
            expect[k] = expect[k] - rate * (1 / (1 + 1e-8) + 0.01 * expect[k])
        np.testing.assert_allclose(params["depth"]["encoder"]["w"], expect["enc"], rtol=1e-6)
        np.testing.assert_allclose(params["depth"]["decoder"]["w"], expect["dec"], rtol=1e-6)
        np.testing.assert_allclose(params["pose"]["w"], expect["pose"], rtol=1e-6)
    # Monodepth2's configs keep Adam with the step decay
    assert train_state.optimizer_name(train_state.hparams(run)) == "adam"


# ----------------------------------------------------------------------------- steps
def _cli_config(steps=3):
    """The config `jaxdepth train --recipe supervised --arch monovit` below builds (same
    compile key: its run reuses the compiled step)."""
    run = RunConfig(height=H, image_width=W, batch_size=B, steps=steps, lr=LR, train_size=B)
    return recipes.build("supervised", run, model_width=WIDTH, **ARCH)


@pytest.mark.slow
def test_supervised_steps_lower_the_loss():
    cfg = _cli_config()
    td = training_data("synthetic", needs="depth", height=H, width=W, length=B)
    batch = next(iter(Loader(td.source, B, seed=0, transform=td.transform)))
    state0 = supervised.init_state(cfg)
    assert set(state0["params"]["depth"]) == {"encoder", "decoder"}
    state, losses = _steps(supervised.make_step(cfg), state0, batch, 3)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    for part in ("encoder", "decoder"):
        assert _changed(state0["params"]["depth"][part], state["params"]["depth"][part])
    assert int(state["step"]) == 3 and float(state["hparams"]["gamma"]) == pytest.approx(0.9)


@pytest.mark.slow
def test_selfsup_m_steps_lower_the_loss():
    cfg = recipes.build("selfsup-m", RunConfig(height=H, image_width=W, batch_size=4, lr=LR),
                        model_width=WIDTH, **ARCH)
    src = training_data("synthetic", needs="M", height=H, width=W, length=4).source
    batch = next(iter(Loader(src, 4, seed=0)))
    state0 = selfsup.init_state(cfg)
    assert set(state0["params"]) == {"depth", "pose"}
    state, losses = _steps(selfsup.make_step(cfg), state0, batch, 3, mesh=False)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0], losses
    assert _changed(state0["params"]["pose"], state["params"]["pose"])
    assert _changed(state0["params"]["depth"]["encoder"], state["params"]["depth"]["encoder"])


# ----------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_train_monovit_and_predict(tmp_path, capsys):
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 70, 3), np.uint8)).save(image)
    out = tmp_path / "run"
    rc, text, err = _run(capsys, "train", "--recipe", "supervised", "--arch", "monovit",
                         "--monovit-size", "tiny", "--data", "synthetic", "--height", H,
                         "--width", W, "--model-width", WIDTH, "--batch-size", B,
                         "--limit", B, "--steps", 2, "--out", out)
    assert rc == 0, err
    assert "MonoViT-tiny" in text and "AdamW lr 0.001 (encoder 0.0005)" in text
    meta = json.loads((out / "meta.json").read_text())
    assert meta["architecture"] == "MonoViT" and meta["model"]["size"] == "tiny"
    assert meta["source"]["config"]["arch"] == "monovit"
    assert recipes.config_from_dict(meta["source"]["config"]) == _cli_config(steps=2)
    model, _, _ = load_checkpoint(out)
    assert isinstance(model, MonoViT)
    rc, text, err = _run(capsys, "predict", "--checkpoint", out, "--out", tmp_path / "p",
                         "--no-panel", image)
    assert rc == 0, err
    depth = np.load(tmp_path / "p" / "street_depth.npy")
    unc = np.load(tmp_path / "p" / "street_uncertainty.npy")
    assert depth.shape == unc.shape == (40, 70) and np.isfinite(depth).all()
    # refused in one line
    rc, _, err = _run(capsys, "train", "--recipe", "supervised", "--monovit-size", "tiny",
                      "--out", tmp_path / "bad")
    assert rc == 2 and "--monovit-size applies to --arch monovit" in err
    rc, _, err = _run(capsys, "train", "--recipe", "segmentation", "--arch", "monovit",
                      "--out", tmp_path / "bad")
    assert rc == 2 and "--arch applies to the depth recipes" in err
    assert err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--arch {monodepth2,monovit}" in capsys.readouterr().out
