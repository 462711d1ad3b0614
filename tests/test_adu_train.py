"""The NeWCRFs / ADU-Depth trainers (`jaxdepth.train.adu`): a few steps of each recipe
lower the loss on the procedural stereo scenes, the student with every module off is
the base loss, bad teachers and bad batches get clear errors, and the export of a
student predicts through `jaxdepth predict`.

Tiny networks (Swin `micro`, crf_scale 1/16, 32×64) with XLA's optimisations off;
compiling dominates."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from PIL import Image

from jaxdepth.cli import main
from jaxdepth.data.pipeline import shard_batch
from jaxdepth.data.training import training_data
from jaxdepth.export import load_checkpoint
from jaxdepth.losses.adu import AduLossConfig
from jaxdepth.train import adu, recipes, runs, state as train_state
from jaxdepth.train.config import RunConfig
from jaxdepth.train.loop import data_mesh, replicate

pytestmark = pytest.mark.usefixtures("cheap_compilation")
H, W, B = 32, 64, 8   # the suite runs on 2 host devices: batches split over them
RUN = RunConfig(height=H, image_width=W, batch_size=B, steps=4, lr=1e-3, train_size=8)
TEACHER = adu.NeWCRFsConfig(encoder="micro", crf_scale=1 / 16, stereo=True, run=RUN)


@pytest.fixture(scope="module")
def batch():
    """A fixed stereo batch (smooth random images, depth 2–60 m with invalid pixels; the
    procedural scenes are rendered by the CLI tests below)."""
    rng = np.random.default_rng(0)
    img = rng.random((B, H // 8, W // 8, 3)).repeat(8, 1).repeat(8, 2).astype(np.float32)
    depth = (2 + 58 * img[..., :1]).astype(np.float32)
    depth[:, :4] = 0.0  # "sky": no ground truth
    return {"image": img, "image_right": np.roll(img, -2, axis=2), "depth": depth,
            "depth_right": np.roll(depth, -2, axis=2)}


@pytest.fixture(scope="module")
def teacher_vars():
    return adu.variables_of(adu.init_state(TEACHER))


def _losses(cfg, batch, teacher=None, steps=4, augment=False):
    """Loss of `steps` updates on one fixed batch (the step's augmentation off unless
    `augment`)."""
    cfg = cfg.with_run(augment=augment)
    mesh = data_mesh()
    state = replicate(adu.init_state(cfg), mesh)
    step = adu.make_step(cfg, teacher) if isinstance(cfg, adu.AduConfig) else adu.make_step(cfg)
    out = []
    for _ in range(steps):
        state, m = step(state, shard_batch(batch, mesh))
        out.append(float(m["loss"]))
    return out, m


@pytest.mark.slow
def test_teacher_steps_lower_the_silog_loss(batch):
    losses, _ = _losses(TEACHER, batch)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


@pytest.mark.slow
def test_student_steps_lower_the_loss(batch, teacher_vars):
    # with augmentation, as `jaxdepth train` runs it: the CLI test below reuses this
    # compiled step (the student's step is the module's costliest compilation)
    losses, m = _losses(adu.AduConfig(teacher=TEACHER), batch, teacher_vars, augment=True)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert {"base", "feature", "response", "focal", "p_d"} <= set(m)
    assert float(m["feature"]) > 0 and float(m["focal"]) > 0


def test_student_with_every_module_off_is_the_base_loss(batch, teacher_vars):
    base_cfg = dataclasses.replace(TEACHER, stereo=False, uem=True)
    cfg = adu.AduConfig(teacher=TEACHER, loss=AduLossConfig.baseline())
    assert not cfg.uses_teacher and not cfg.has_sigma
    state = adu.init_state(cfg.with_run(augment=False))
    assert set(state["params"]) == {"depth"}  # no adapters without feature distillation
    key = jax.random.PRNGKey(3)
    a, (_, parts) = jax.jit(adu.adu_loss_fn(cfg.with_run(augment=False)))(
        state["params"], state["batch_stats"], batch, key, teacher_vars)
    b, _ = jax.jit(adu.base_loss_fn(base_cfg.with_run(augment=False)))(
        state["params"], state["batch_stats"], batch, key)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)
    assert float(parts["base"]) == pytest.approx(float(a))


def test_optimizer_is_newcrfs_adam_with_poly_decay():
    st = adu.init_state(TEACHER)
    hp = st["hparams"]
    assert train_state.optimizer_name(hp) == "newcrfs"
    fn = train_state.poly_schedule(hp)
    lr = TEACHER.run.lr
    assert float(fn(0)) == pytest.approx(lr)
    assert float(fn(RUN.steps)) == pytest.approx(0.1 * lr)
    mid = (lr - 0.1 * lr) * 0.5 ** 0.9 + 0.1 * lr
    assert float(fn(RUN.steps // 2)) == pytest.approx(mid, rel=1e-5)


def test_stereo_flip_swaps_the_views():
    x = np.random.default_rng(0).random((4, H, W, 3), np.float32)
    r = np.random.default_rng(1).random((4, H, W, 3), np.float32)
    d = np.random.default_rng(2).random((4, H, W, 1), np.float32) + 1
    dr = d + 10
    b = {"image": x, "image_right": r, "depth": d, "depth_right": dr}
    key = jax.random.PRNGKey(0)
    img, right, depth = adu.stereo_augment(key, b, True)
    flip = np.asarray(jax.random.bernoulli(jax.random.split(key)[0], 0.5, (4,)))
    assert flip.any() and not flip.all()
    for i in range(4):
        want = dr[i, :, ::-1] if flip[i] else d[i]
        np.testing.assert_array_equal(np.asarray(depth[i]), want)
    assert float(np.max(np.abs(np.asarray(img) - np.asarray(right)))) > 0


def test_recipes_round_trip_and_refuse_bad_teachers():
    t = recipes.build("adu-teacher", RUN, encoder="micro", crf_scale=1 / 16)
    s = recipes.build("adu-student", RUN, teacher=t)
    n = recipes.build("newcrfs", RUN, encoder="micro", crf_scale=1 / 16)
    assert (recipes.recipe_of(t), recipes.recipe_of(s), recipes.recipe_of(n)) == (
        "adu-teacher", "adu-student", "newcrfs")
    for c in (t, s, n):
        assert recipes.config_from_dict(c.to_dict()) == c
    assert recipes.needs_of(s) == "stereo_depth" and recipes.needs_of(n) == "depth"
    assert s.student.encoder == "micro" and s.student.uem and not s.student.stereo
    with pytest.raises(ValueError, match="in_channels 6"):
        recipes.build("adu-student", RUN, teacher=n)
    from jaxdepth.train.supervised import SupervisedConfig
    with pytest.raises(ValueError, match="adu-teacher"):
        recipes.build("adu-student", RUN, teacher=SupervisedConfig())
    with pytest.raises(ValueError, match="stereo NeWCRFs"):
        adu.AduConfig(teacher=n)
    with pytest.raises(ValueError, match="encoder / crf_scale"):
        recipes.build("adu-teacher", RUN, model_width=0.5)


def test_teacher_variables_of_wrong_channels_or_architecture_are_refused(batch):
    cfg = adu.AduConfig(teacher=TEACHER)
    mono = adu.variables_of(adu.init_state(dataclasses.replace(TEACHER, stereo=False)))
    with pytest.raises(ValueError, match="3 input channels"):
        adu.make_step(cfg, mono)
    from jaxdepth.models import DepthNet
    dn = DepthNet(width=0.125).init_variables(jax.random.PRNGKey(0), H, W)
    with pytest.raises(ValueError, match="not a NeWCRFs"):
        adu.make_step(cfg, dn)
    big = adu.variables_of(adu.init_state(dataclasses.replace(TEACHER, crf_scale=1 / 8)))
    with pytest.raises(ValueError, match="does not match"):
        adu.make_step(cfg, big)


def test_stereo_batch_without_right_view_is_refused(batch, teacher_vars):
    no_right = {k: v for k, v in batch.items() if k != "image_right"}
    step = adu.make_step(TEACHER)
    with pytest.raises(ValueError, match="image_right"):
        step(adu.init_state(TEACHER), no_right)
    with pytest.raises(ValueError, match="right view"):
        adu.make_step(adu.AduConfig(teacher=TEACHER), teacher_vars)(
            adu.init_state(adu.AduConfig(teacher=TEACHER)), no_right)
    with pytest.raises(ValueError, match="right view"):
        training_data("nyu", needs="stereo_depth", height=224, width=288, root="/nonexistent")


def test_window_partition_sizes_are_refused():
    with pytest.raises(ValueError, match="multiples of 32"):
        RunConfig(height=48, image_width=64)
    model = TEACHER.model()
    v = model.init_variables(0, 64, 64)
    with pytest.raises(ValueError, match="multiples of 32"):
        model.apply(v, np.zeros((1, 48, 64, 6), np.float32))


def _street_image(directory):
    """A 40×70 random RGB PNG for `jaxdepth predict`."""
    path = directory / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 70, 3), np.uint8)).save(path)
    return path


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def exported_teacher(tmp_path_factory):
    """An adu-teacher run's export at initialisation (no training: compiling is the cost)."""
    out = tmp_path_factory.mktemp("adu") / "teacher0"
    cfg = TEACHER.with_run(steps=1)
    runs.export_run(out, cfg, adu.init_state(cfg))
    return out


@pytest.mark.slow
def test_cli_student_trains_exports_and_predicts(exported_teacher, tmp_path, capsys):
    """`jaxdepth train --recipe adu-student --teacher DIR` (the teacher: an export at
    initialisation; its training step is tested above), then predict on the student."""
    rc, out, err = _run(capsys, "train", "--recipe", "adu-student", "--teacher", exported_teacher,
                        "--height", H, "--width", W, "--batch-size", B, "--steps", 1,
                        "--limit", 8, "--out", tmp_path / "s")
    assert rc == 0, err
    assert "NeWCRFs-micro" in out and "UEM" in out
    model, variables, meta = load_checkpoint(tmp_path / "s")
    assert type(model).__name__ == "NeWCRFs" and model.uem and model.in_channels == 3
    assert meta["source"]["recipe"] == "adu-student" and meta["sigma_space"] == "depth"
    assert "adapter_enc" not in variables["params"]
    img = _street_image(tmp_path)
    rc, out, err = _run(capsys, "predict", "--checkpoint", tmp_path / "s", "--method", "grad",
                        "--out", tmp_path / "p", "--no-panel", img)  # log: the test below
    assert rc == 0, err
    assert np.load(tmp_path / "p" / "street_uncertainty.npy").shape == (40, 70)


def test_cli_refuses_bad_teachers_and_flags(exported_teacher, tmp_path, capsys):
    # a monocular NeWCRFs run as the teacher: wrong input channels
    mono = tmp_path / "mono"
    cfg = recipes.build("newcrfs", RunConfig(height=H, image_width=W, steps=1),
                        encoder="micro", crf_scale=1 / 16)
    runs.export_run(mono, cfg, adu.init_state(cfg))
    rc, _, err = _run(capsys, "train", "--recipe", "adu-student", "--teacher", mono,
                      "--out", tmp_path / "x")
    assert rc == 2 and "in_channels 3" in err and "adu-teacher" in err
    # another architecture (a supervised DepthNet run)
    sup = recipes.build("supervised", RunConfig(height=H, image_width=W, steps=1),
                        model_width=0.125)
    runs.export_run(tmp_path / "sup", sup, recipes.trainer_of(sup).init_state(sup))
    rc, _, err = _run(capsys, "train", "--recipe", "adu-student", "--teacher", tmp_path / "sup",
                      "--out", tmp_path / "x")
    assert rc == 2 and "supervised run" in err and "adu-teacher" in err
    rc, _, err = _run(capsys, "train", "--recipe", "adu-student", "--out", tmp_path / "x")
    assert rc == 2 and "--teacher" in err
    img = _street_image(tmp_path)
    rc, _, err = _run(capsys, "predict", "--checkpoint", exported_teacher, "--out", tmp_path / "p",
                      img)  # the stereo teacher: not a single-image model
    assert rc == 2 and "6 input channels" in err and "adu-student" in err
    rc, _, err = _run(capsys, "train", "--recipe", "sub-depth", "--teacher", exported_teacher,
                      "--out", tmp_path / "x")
    assert rc == 2 and "self-supervised" in err
    rc, _, err = _run(capsys, "train", "--recipe", "adu-teacher", "--model-width", "0.5",
                      "--out", tmp_path / "x")
    assert rc == 2 and "--encoder" in err
    rc, _, err = _run(capsys, "train", "--recipe", "newcrfs", "--height", "48",
                      "--out", tmp_path / "x")
    assert rc == 2 and "multiples of 32" in err
    rc, _, err = _run(capsys, "train", "--recipe", "supervised", "--encoder", "micro",
                      "--out", tmp_path / "x")
    assert rc == 2 and "NeWCRFs recipes" in err


def test_student_export_loads_and_predicts(tmp_path, capsys):
    """The export of an adu-student (at initialisation) rebuilds a NeWCRFs with the UEM
    and `jaxdepth predict` serves the UEM's σ (`--method log`)."""
    cfg = adu.AduConfig(teacher=TEACHER.with_run(steps=1))
    runs.export_run(tmp_path / "s", cfg, adu.init_state(cfg))
    model, variables, meta = load_checkpoint(tmp_path / "s")
    assert model == cfg.model() and meta["source"]["recipe"] == "adu-student"
    assert set(variables["params"]) >= {"backbone", "uem_head"}
    img = _street_image(tmp_path)
    rc, out, err = _run(capsys, "predict", "--checkpoint", tmp_path / "s", "--method", "log",
                        "--out", tmp_path / "p", "--no-panel", img)
    assert rc == 0, err
    assert np.load(tmp_path / "p" / "street_uncertainty.npy").shape == (40, 70)
