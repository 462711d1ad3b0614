"""The NYU Depth V2 protocol of Table 3 (`jaxdepth.benchmarks.nyu`,
`experiments/nyu_grad_unc.py`) end to end on a FastDepth-format HDF5 fixture: the
experiment trains the three metric-depth base models (plain, Log, Drop) for 2 steps with
the NYU recipe through `jaxdepth.train.runs` (which exports them into their run
directories), the protocol evaluates every row, and the test checks the numbers against
an independent computation written here (h5py reading, the ×0.5 nearest resize and
centre crop, the uncertainty functions called directly in depth space, mask, clamp and
metrics in NumPy)."""
import json
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiment_scripts import load_experiment
from jaxdepth import uncertainty as U
from jaxdepth.benchmarks import nyu, protocol
from jaxdepth.convert import is_checkpoint
from jaxdepth.metrics import ause_aurg
from jaxdepth.train import supervised
from kitti_fixtures import write_nyu_tree

ROWS = [("Drop", "Base"), ("Post", "Base"), ("Post", "Var"), ("Post", "In-Drop"),
        ("Post", "Grad"), ("Log", "Base"), ("Log", "Var"), ("Log", "In-Drop"), ("Log", "Grad")]


# a few dozen distinct programs of tiny models: see conftest.cheap_compilation
pytestmark = pytest.mark.usefixtures("cheap_compilation")


@pytest.fixture(scope="module")
def experiment():
    return load_experiment("nyu_grad_unc")


def _eval_inputs(root: Path):
    """Test images and depth read here: rows/cols 2i+1 of the 480×640 arrays (PIL's
    nearest ×0.5), centre crop 224×288 (rows 8:232, cols 16:304)."""
    images, depths = [], []
    for path in sorted((root / "val" / "official").glob("*.h5")):
        with h5py.File(path, "r") as f:
            rgb, depth = f["rgb"][()].transpose(1, 2, 0), f["depth"][()]
        images.append(rgb[1::2, 1::2][8:232, 16:304].astype(np.float32) / 255.0)
        depths.append(depth[1::2, 1::2][8:232, 16:304].astype(np.float64))
    return jnp.asarray(np.stack(images)), depths


@pytest.mark.slow
def test_trains_base_models_then_every_row_matches_independent_computation(
        experiment, tmp_path, capsys):
    root = tmp_path / "nyudepthv2"
    write_nyu_tree(root, n_val=3, train=(("bathroom_0001", 4), ("kitchen_0002", 4)))
    common = ["--nyu-root", str(root), "--checkpoints", str(tmp_path / "train"),
              "--model-width", "0.125", "--batch-size", "8", "--eval-batch", "3"]
    with pytest.warns(UserWarning, match="has 3 files, expected 654"):
        rows = experiment.main(common + ["--steps", "2", "--out", str(tmp_path / "out")])
    printed = capsys.readouterr().out
    # one training per model (the run names of jaxdepth.train.recipes.run_name)
    assert all(printed.count(f"train {run}: 2 steps") == 1 for run in ("drop", "reg", "log"))
    assert "published (paper)" in printed
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["rows"] == json.loads(json.dumps(rows))
    assert [(r["model"], r["method"]) for r in rows] == ROWS
    assert result["config"]["dataset"] == "nyu" and result["config"]["n_images"] == 3
    for metric in ("abs_rel", "rmse", "a1"):
        assert (tmp_path / "out" / f"sparsification_{metric}.png").stat().st_size > 1000

    # the exported models (in the run directories): metric DepthNets at 224×288 after 2
    # training steps each
    models = {}
    for name, kind in (("drop", "drop"), ("post", "reg"), ("log", "log")):
        (run,) = (tmp_path / "train").glob(f"{kind}-*")
        assert is_checkpoint(run)
        models[name] = protocol.load_model(run)
        meta = models[name][2]
        assert meta["model"]["metric"] and (meta["height"], meta["width"]) == (224, 288)
        assert meta["model"]["log_sigma"] == (name == "log")
        cfg = meta["source"]["config"]
        assert (cfg["variant"], cfg["metric"], cfg["loss_space"], cfg["steps"], cfg["max_depth"],
                cfg["augment"], cfg["lr"]) == (kind, True, "depth", 2, 10.0, False, 1e-4)
        assert cfg["lr_drop_at"] == pytest.approx(0.75)
        fresh = supervised.SupervisedConfig.from_dict(cfg).model().init_variables(0, 224, 288)
        moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                             models[name][1]["params"], fresh["params"])
        assert max(jax.tree.leaves(moved)) > 0  # trained, not the initialisation

    # independent computation
    x, depths = _eval_inputs(root)
    key = jax.random.fold_in(jax.random.PRNGKey(0), 0)
    est = {}
    m, v, _ = models["drop"]
    est[("Drop", "Base")] = U.mc_drop(m.apply, v, x, rng=key, n=8, space="depth")
    for name, lam in (("post", 0.0), ("log", 2.0)):
        m, v, _ = models[name]
        label = nyu.LABELS[name]
        est[(label, "Base")] = (U.post(m.apply, v, x, space="depth") if name == "post"
                                else U.predictive(m.apply, v, x))
        est[(label, "Var")] = U.var(m.apply, v, x, rng=key, space="depth")
        est[(label, "In-Drop")] = U.in_drop(m.apply, v, x, rng=key, n=8, p=0.2, space="depth")
        est[(label, "Grad")] = U.gradient_uncertainty(m.apply, v, x, rng=key,
                                                      variance_weight=lam)
    for r in rows:
        e = est[(r["model"], r["method"])]
        sparse, depth = [], []
        for j, gt in enumerate(depths):
            mask = (gt > 1e-3) & (gt < 10.0)
            pred = np.clip(np.asarray(e.depth[j, ..., 0], np.float64), 1e-3, 10.0)
            unc = np.asarray(e.uncertainty[j, ..., 0], np.float64)
            sparse.append(ause_aurg(gt, pred, unc, mask))
            g, p = gt[mask], pred[mask]
            depth.append({"abs_rel": np.mean(np.abs(g - p) / g),
                          "rmse": np.sqrt(np.mean((g - p) ** 2)),
                          "a1": np.mean(np.maximum(g / p, p / g) < 1.25)})
        for metric in ("abs_rel", "rmse", "a1"):
            for k in ("ause", "aurg"):
                want = np.mean([s[metric][k] for s in sparse])
                assert r[metric][k] == pytest.approx(want, rel=2e-4, abs=2e-5), (r["model"],
                                                                                r["method"], metric)
            want = np.mean([d[metric] for d in depth])
            assert r["depth"][metric] == pytest.approx(want, rel=2e-4, abs=2e-5)
    assert len({round(r["abs_rel"]["ause"], 7) for r in rows}) > 5

    # a second run finds the trained models; --weights takes the same layout
    experiment.main(common + ["--steps", "2", "--no-train", "--models", "drop", "--limit", "3",
                              "--out", str(tmp_path / "again")])
    assert capsys.readouterr().out.count("reusing") == 1
    layout = tmp_path / "weights"
    layout.mkdir()
    (layout / "drop").symlink_to(next((tmp_path / "train").glob("drop-*")),
                                 target_is_directory=True)
    again = experiment.main(["--nyu-root", str(root), "--weights", str(layout), "--limit", "3",
                             "--eval-batch", "3", "--out", str(tmp_path / "w")])
    assert again[0]["abs_rel"] == rows[0]["abs_rel"] and len(again) == 1


def test_metric_config_is_backward_compatible_and_validated():
    cfg = supervised.SupervisedConfig()
    assert "metric" not in cfg.to_dict() and not cfg.model().metric
    metric = supervised.SupervisedConfig(metric=True, loss_space="depth")
    assert metric.to_dict()["metric"] is True and metric.model().metric
    with pytest.raises(ValueError, match="loss_space='depth'"):
        supervised.SupervisedConfig(metric=True)
