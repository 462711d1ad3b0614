"""`jaxdepth train` on KITTI raw and NYU fixture trees in the real formats and on the
procedural scenes: runs resume, refuse another config, export a checkpoint that
`jaxdepth predict` loads; every recipe's export predicts with the methods it offers.

Tiny networks (width 0.125, 32×64) with XLA's optimisations off (`cheap_compilation`):
the programs are small, compiling them dominates."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from PIL import Image

import kitti_fixtures as kf
from jaxdepth.cli import main
from jaxdepth.data.pipeline import Loader, shard_batch
from jaxdepth.data.training import training_data
from jaxdepth.export import load_checkpoint
from jaxdepth.train import distill, recipes, runs, selfsup
from jaxdepth.train.config import RunConfig
from jaxdepth.train.loop import data_mesh, replicate

pytestmark = pytest.mark.usefixtures("cheap_compilation")
H, W = 32, 64
SMALL = ["--height", str(H), "--width", str(W), "--model-width", "0.125", "--batch-size", "8"]


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    """Ten frames of both cameras; a split file of eight left and right targets."""
    root = tmp_path_factory.mktemp("kitti")
    tree = kf.write_kitti_raw(root, frames=range(10), size=(20, 64))
    split = root / "train_files.txt"
    lines = [f"{tree.folder} {f} {'l' if f % 2 else 'r'}" for f in range(1, 9)]
    split.write_text("\n".join(lines) + "\n")
    return root, split


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 70, 3), np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def s_run(kitti, tmp_path_factory):
    """`jaxdepth train --recipe selfsup-s` on the KITTI tree (the teacher of later tests;
    the data of every mode is checked in test_training_data.py)."""
    root, split = kitti
    out = tmp_path_factory.mktemp("runs") / "s"
    rc = main(["train", "--recipe", "selfsup-s", "--data", "kitti", "--data-root", str(root),
               "--split", str(split), *SMALL, "--steps", "3", "--out", str(out)])
    assert rc == 0
    return out


@pytest.mark.slow
def test_train_on_kitti_resumes_refuses_another_config_and_predicts(s_run, kitti, image,
                                                                      tmp_path, capsys):
    root, split = kitti
    meta = json.loads((s_run / "meta.json").read_text())
    assert meta["source"]["recipe"] == "selfsup-s" and meta["scaling"] == "stereo"
    assert meta["source"]["config"]["data"] == "kitti" and meta["height"] == H
    args = ["train", "--recipe", "selfsup-s", "--data", "kitti", "--data-root", root,
            "--split", split, *SMALL, "--out", s_run]
    rc, out, err = _run(capsys, *args, "--steps", "3")
    assert rc == 0 and "reusing" in out, err
    rc, out, err = _run(capsys, *args, "--steps", "4")
    assert rc == 2 and "another config (steps: saved 3 vs now 4)" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    rc, out, err = _run(capsys, "predict", "--checkpoint", s_run, "--out", tmp_path, image)
    assert rc == 0, err
    depth = np.load(tmp_path / "street_depth.npy")
    assert depth.shape == (40, 70) and np.isfinite(depth).all()
    assert (tmp_path / "street_panel.png").stat().st_size > 1000
    # the same run directory read without its export: rebuilt from the saved config
    for name in ("meta.json",):
        (s_run / name).rename(tmp_path / name)
    try:
        model, variables, meta2 = load_checkpoint(s_run)
        assert meta2["scaling"] == "stereo" and meta2["source"]["step"] == 3
        model_e, variables_e, _ = load_checkpoint(s_run, step=3)
        jax.tree.map(np.testing.assert_array_equal, variables, variables_e)
    finally:
        (tmp_path / "meta.json").rename(s_run / "meta.json")


@pytest.mark.slow
def test_distillation_and_fine_tuning_from_a_teacher_run(s_run, kitti, image, tmp_path,
                                                          capsys):
    root, split = kitti
    common = ["--data", "kitti", "--data-root", root, "--split", split, "--teacher", s_run,
              "--steps", "2", "--batch-size", "8"]
    rc, out, err = _run(capsys, "train", "--recipe", "sub-depth", *common,
                        "--out", tmp_path / "sd")
    assert rc == 0, err
    assert "train sub-depth: 2 steps in" in out and "images/s" in out
    cfg = recipes.config_from_dict(json.loads((tmp_path / "sd" / "meta.json").read_text())
                                   ["source"]["config"])
    assert isinstance(cfg, distill.DistillConfig) and cfg.teacher.mode == "S"
    rc, out, err = _run(capsys, "predict", "--checkpoint", tmp_path / "sd", "--method", "log",
                        "--out", tmp_path / "p", "--no-panel", image)
    assert rc == 0, err
    rc, out, err = _run(capsys, "train", "--recipe", "selfsup-s-log", *common,
                        "--out", tmp_path / "log")
    assert rc == 0, err
    tuned = recipes.config_from_dict(json.loads((tmp_path / "log" / "meta.json").read_text())
                                     ["source"]["config"])
    assert tuned.start_from.mode == "S" and tuned.run.lr == pytest.approx(1e-5)
    rc, _, err = _run(capsys, "train", "--recipe", "self", "--data", "kitti", "--data-root",
                      root, "--out", tmp_path / "x")
    assert rc == 2 and "--teacher" in err


@pytest.mark.slow
def test_supervised_training_on_kitti_and_nyu_fixture_trees(kitti, image, tmp_path, capsys):
    root, split = kitti
    rc, out, err = _run(capsys, "train", "--recipe", "log", "--data", "kitti", "--data-root",
                        root, "--split", split, *SMALL, "--steps", "2", "--out", tmp_path / "k")
    assert rc == 0, err
    assert "velodyne depth" in out
    nyu = tmp_path / "nyu"
    kf.write_nyu_tree(nyu, n_val=0, train=(("bathroom_0001", 4), ("kitchen_0002", 4)))
    rc, out, err = _run(capsys, "train", "--recipe", "log", "--data", "nyu", "--data-root",
                        nyu, "--model-width", "0.125", "--steps", "1", "--batch-size", "8",
                        "--out", tmp_path / "n")
    assert rc == 0, err
    meta = json.loads((tmp_path / "n" / "meta.json").read_text())
    assert meta["model"]["metric"] and meta["sigma_space"] == "depth" and meta["height"] == 224
    rc, out, err = _run(capsys, "predict", "--checkpoint", tmp_path / "n", "--method", "log",
                        "--out", tmp_path / "p", "--no-panel", image)
    assert rc == 0, err
    rc, _, err = _run(capsys, "train", "--recipe", "selfsup-m", "--data", "nyu",
                      "--data-root", nyu, "--out", tmp_path / "bad")
    assert rc == 2 and "kitti or synthetic" in err
    rc, _, err = _run(capsys, "train", "--recipe", "supervised", "--data", "kitti",
                      "--out", tmp_path / "bad")
    assert rc == 2 and "--data-root" in err


def _one_batch(td, n=8):
    return next(iter(Loader(td.source, n, seed=0, transform=td.transform)))


# the recipes and sizes of the command-line runs above: their compiled steps are reused
@pytest.mark.parametrize("recipe,data,needs", [("log", "kitti", "depth"),
                                               ("selfsup-s", "kitti", "S"),
                                               ("log", "nyu", "depth")])
@pytest.mark.slow
def test_a_few_steps_lower_the_loss_on_fixture_data(kitti, tmp_path, recipe, data, needs):
    root, split = kitti
    if data == "nyu":
        root, split = tmp_path / "nyu", None
        kf.write_nyu_tree(root, n_val=0, train=(("a_0001", 4), ("b_0002", 4)))
    h, w = (224, 288) if data == "nyu" else (H, W)
    run = RunConfig(height=h, image_width=w, batch_size=8, steps=8, lr=1e-3, data=data,
                    augment=data != "nyu")
    cfg = recipes.build(recipe, run, model_width=0.125)
    td = training_data(data, needs=needs, height=h, width=w, root=root,
                       split=str(split) if split else None)
    trainer = recipes.trainer_of(cfg)
    step, state = trainer.make_step(cfg), replicate(trainer.init_state(cfg), data_mesh())
    batch = shard_batch(_one_batch(td), data_mesh())
    losses = []
    for _ in range(6 if data == "nyu" else 8):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses


def _teacher():
    return selfsup.SelfSupConfig(mode="M", width=0.125,
                                 run=RunConfig(height=H, image_width=W, steps=1))


@pytest.mark.parametrize("name", [n if n in ("supervised", "selfsup-ms-log", "sub-depth")
                                  else pytest.param(n, marks=pytest.mark.slow)
                                  for n, r in recipes.RECIPES.items() if r.task == "depth"])
def test_every_recipe_exports_a_checkpoint_that_predicts(name, image, tmp_path, capsys):
    """The export of each recipe's model (at initialisation) loads and predicts with the
    methods the model offers; a method it does not offer is refused with the list."""
    run = RunConfig(height=H, image_width=W, steps=1)
    teacher = _teacher() if recipes.RECIPES[name].teacher == "required" else None
    cfg = recipes.build(name, run, teacher=teacher, model_width=0.125)
    assert recipes.recipe_of(cfg) == name
    assert recipes.config_from_dict(cfg.to_dict()) == cfg
    state = recipes.trainer_of(cfg).init_state(cfg)
    runs.export_run(tmp_path / "ck", cfg, state)
    model, _, meta = load_checkpoint(tmp_path / "ck")
    assert meta["source"]["recipe"] == name and model == cfg.model()
    sigma, drop = model.log_sigma, meta["dropout_trained"]
    own = "log" if sigma else ("drop" if drop else "post")
    extra = ["--samples", "2"] if own == "drop" else []
    rc, out, err = _run(capsys, "predict", "--checkpoint", tmp_path / "ck", "--method", own,
                        *extra, "--out", tmp_path / "p", "--no-panel", image)
    assert rc == 0, err
    assert np.load(tmp_path / "p" / "street_uncertainty.npy").shape == (40, 70)
    wrong = "drop" if not drop else "log"
    rc, _, err = _run(capsys, "predict", "--checkpoint", tmp_path / "ck", "--method", wrong,
                      "--out", tmp_path / "p", image)
    assert rc == 2 and "offers: grad, post, var, in_drop" in err
