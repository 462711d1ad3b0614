"""The segmentation trainer on the shared skeleton: its loss against a loop, a few steps
lower it, `jaxdepth train --recipe segmentation[-drop]` on the procedural scenes and on a
Cityscapes fixture tree exports a checkpoint that loads, resumes and predicts."""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import segmentation_fixtures as sf
from jaxdepth.cli import main
from jaxdepth.data.pipeline import Loader
from jaxdepth.data.training import training_data
from jaxdepth.export import load_checkpoint
from jaxdepth.models.segmentation import DeepLabV3Plus
from jaxdepth.train import recipes, runs
from jaxdepth.train.config import RunConfig
from jaxdepth.train.segmentation import SegmentationConfig, cross_entropy

H, W = 32, 64
SMALL = ["--height", str(H), "--width", str(W), "--model-width", "0.0625", "--batch-size", "8"]


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cross_entropy_averages_only_labelled_pixels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32) * 3
    labels = rng.integers(0, 5, size=(2, 3, 4))
    labels[0, 0, :] = 255
    labels[1, 2, 1] = 255
    total, n = 0.0, 0
    for idx in np.ndindex(labels.shape):
        if labels[idx] == 255:
            continue
        z = logits[idx].astype(np.float64)
        total += np.log(np.exp(z - z.max()).sum()) + z.max() - z[labels[idx]]
        n += 1
    loss, count = cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    assert int(count) == n
    np.testing.assert_allclose(float(loss), total / n, rtol=1e-5)
    none, zero = cross_entropy(jnp.asarray(logits), jnp.full(labels.shape, 255))
    assert float(none) == 0.0 and int(zero) == 0  # nothing labelled: no NaN


def test_config_round_trips_and_names_its_runs():
    cfg = recipes.build("segmentation-drop", RunConfig(height=H, image_width=W),
                        model_width=0.0625)
    assert cfg.dropout == 0.2 and cfg.num_classes == 7 and cfg.class_names[0] == "road"
    assert recipes.config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert recipes.recipe_of(cfg) == "segmentation-drop" and recipes.run_name(cfg) == "seg_drop"
    assert isinstance(cfg.model(), DeepLabV3Plus) and cfg.model().dropout_rate == 0.2
    city = recipes.build("segmentation", RunConfig(height=H, image_width=W, data="cityscapes"))
    assert city.num_classes == 19 and city.class_names[-1] == "bicycle"
    with pytest.raises(ValueError, match="class_names has 2 names for 7 classes"):
        SegmentationConfig(class_names=("a", "b"))


@pytest.mark.slow
def test_a_few_steps_lower_the_loss_on_the_scenes():
    cfg = recipes.build("segmentation", RunConfig(height=H, image_width=W, batch_size=4,
                                                  steps=10, lr=3e-3), model_width=0.0625)
    trainer = recipes.trainer_of(cfg)
    step, state = trainer.make_step(cfg), trainer.init_state(cfg)
    td = training_data("synthetic", needs="segmentation", height=H, width=W, length=8)
    batch = next(iter(Loader(td.source, 4, seed=0)))
    assert batch["label"].dtype == np.int32 and batch["label"].max() < 7 and \
        set(batch) == {"image", "label"}
    losses = []
    for _ in range(10):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0], losses
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


@pytest.mark.slow
def test_train_cli_on_scenes_and_cityscapes_exports_resumes_and_refuses(tmp_path, capsys):
    out = tmp_path / "seg"
    args = ["train", "--recipe", "segmentation", *SMALL, "--steps", "3", "--out", out]
    rc, stdout, err = _run(capsys, *args)
    assert rc == 0, err
    assert "labelled images" in stdout and "jaxdepth predict --checkpoint" in stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["task"] == "segmentation" and meta["class_names"][6] == "sky"
    assert meta["source"]["recipe"] == "segmentation" and meta["architecture"] == "DeepLabV3Plus"
    model, variables, _ = load_checkpoint(out)
    logits = model.apply(variables, jnp.zeros((1, H, W, 3)))["logits"]
    assert logits.shape == (1, H, W, 7) and bool(jnp.isfinite(logits).all())
    rc, stdout, _ = _run(capsys, *args)  # finished: reused, not retrained
    assert rc == 0 and "reusing" in stdout
    image = tmp_path / "street.png"
    Image.fromarray((np.random.default_rng(0).random((40, 70, 3)) * 255).astype(np.uint8)).save(image)
    for method, extra in (("pgn", ["--label", "uniform", "--p", "0.3"]), ("entropy", [])):
        rc, stdout, err = _run(capsys, "predict", "--checkpoint", out, "--method", method,
                               *extra, "--out", tmp_path / "p", image)
        assert rc == 0, err
        labels = np.load(tmp_path / "p" / "street_labels.npy")
        unc = np.load(tmp_path / "p" / "street_uncertainty.npy")
        assert labels.shape == unc.shape == (40, 70) and labels.max() < 7
        assert np.isfinite(unc).all() and (unc >= 0).all()
    assert (tmp_path / "p" / "street_panel.png").stat().st_size > 1000
    for method in ("mc_dropout", "grad"):
        rc, _, err = _run(capsys, "predict", "--checkpoint", out, "--method", method,
                          "--out", tmp_path / "p", image)
        assert rc == 2 and "offers: softmax, entropy, pgn, pgn_penultimate" in err, err
    rc, _, err = _run(capsys, "train", "--recipe", "segmentation-drop", *SMALL, "--steps", "3",
                      "--out", out)
    assert rc == 2 and "dropout" in err  # another config in the same directory

    root = tmp_path / "cityscapes"
    sf.write_cityscapes(root, {"train": {"aachen": 5, "bochum": 4}})
    rc, stdout, err = _run(capsys, "train", "--recipe", "segmentation", "--data", "cityscapes",
                           "--data-root", root, *SMALL, "--steps", "2", "--out", tmp_path / "c")
    assert rc == 0, err
    assert "Cityscapes train: 9 images" in stdout
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["num_classes"] == 19 and meta["class_names"][0] == "road"
    model, variables, meta2 = runs.load_run(tmp_path / "c", 2)
    assert meta2["task"] == "segmentation" and model.num_classes == 19

    for recipe, data, message in (("segmentation", "kitti", "synthetic or cityscapes"),
                                  ("selfsup-m", "cityscapes", "semantic labels only")):
        rc, _, err = _run(capsys, "train", "--recipe", recipe, "--data", data, "--data-root",
                          root, "--out", tmp_path / "bad")
        assert rc == 2 and message in err, err


def test_cityscapes_training_data_crops_and_ignores(tmp_path):
    root = tmp_path / "cs"
    sf.write_cityscapes(root, {"train": {"ulm": 2}})
    td = training_data("cityscapes", needs="segmentation", height=H, width=W, root=root)
    assert len(td) == 2 and not td.augment_in_step
    batch = next(iter(Loader(td.source, 2, seed=0, transform=td.transform)))
    assert batch["image"].shape == (2, H, W, 3) and batch["label"].shape == (2, H, W)
    assert batch["label"].dtype == np.int32
    assert set(np.unique(batch["label"])) <= set(range(19)) | {255}
    with pytest.raises(ValueError, match="no semantic labels"):
        training_data("kitti", needs="segmentation", height=H, width=W, root=root)
    with pytest.raises(FileNotFoundError):
        training_data("cityscapes", needs="segmentation", height=H, width=W,
                      root=tmp_path / "missing")
