"""The main job end to end in --quick mode: trains, evaluates, writes the
results.json layout the README promises, PNGs, and reuses its checkpoints."""
import json
import math

import pytest

from experiment_scripts import load_experiment

# tiny models: compiling dominates, so compile with XLA's optimisations off
pytestmark = pytest.mark.usefixtures("cheap_compilation")


@pytest.fixture(scope="module")
def experiment():
    return load_experiment("kitti_grad_unc")


@pytest.mark.slow
def test_quick_run_writes_table_json_and_pngs_then_reuses_checkpoints(experiment, tmp_path, capsys):
    """The script's main as a user runs it (in the worker: the segfault that once moved it
    to a subprocess was the worker's memory-map limit, see tests/conftest.py)."""
    args = ["--quick", "--arch", "monodepth2", "monovit", "--out", str(tmp_path / "out"),
            "--checkpoints", str(tmp_path / "ck")]
    experiment.main(args)
    printed = capsys.readouterr().out
    assert "AUSE" in printed and "Grad" in printed
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    assert result["config"]["quick"] is True and result["config"]["dataset"] == "synthetic"
    pairs = [(r["model"], r["method"]) for r in result["rows"]]
    assert pairs == [("Reg", "Post"), ("Reg", "Var"), ("Reg", "In-Drop"), ("Reg", "Grad"),
                     ("Log", "Log"), ("Log", "Var"), ("Log", "In-Drop"), ("Log", "Grad"),
                     ("Drop", "Drop"), ("Boot", "Boot"),
                     ("MonoViT Reg", "Post"), ("MonoViT Reg", "Var"),
                     ("MonoViT Reg", "In-Drop"), ("MonoViT Reg", "Grad"),
                     ("MonoViT Log", "Log"), ("MonoViT Log", "Var"),
                     ("MonoViT Log", "In-Drop"), ("MonoViT Log", "Grad")]
    assert "MonoViT tiny width 0.5" in printed
    for row in result["rows"]:
        for metric in ("abs_rel", "rmse", "a1"):
            assert set(row[metric]) == {"ause", "aurg"}
            assert all(math.isfinite(v) for v in row[metric].values())
        assert row["ms_per_image"] > 0
        assert {"abs_rel", "rmse", "a1"} <= set(row["depth"])
    assert "wrote" in printed and str(tmp_path / "out" / "results.json") in printed
    # error bounds: fitted on the val split, every row, every level, in metres
    cal = result["calibration"]
    assert [(r["model"], r["method"]) for r in cal] == pairs
    for r in cal:
        for key in ("coverage", "mean_bound_m", "constant_bound_m"):
            assert set(r[key]) == {"0.5", "0.8", "0.9", "0.95"}
        assert all(0.0 <= v <= 1.0 for v in r["coverage"].values())
        assert all(v > 0 for v in r["mean_bound_m"].values())
        bounds = [r["mean_bound_m"][k] for k in ("0.5", "0.8", "0.9", "0.95")]
        assert bounds == sorted(bounds)  # a higher level never gets a narrower bound
        assert r["calibration_pixels"] > 1000 and r["test_pixels"] > 1000
    assert "Error bounds at 90%" in printed
    for name in ("sparsification_abs_rel.png", "sparsification_rmse.png",
                 "sparsification_a1.png", "panel_0.png", "table.txt", "reliability.png",
                 "error_bars.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    # run names derive from the configs (a bootstrap member is a Reg run of another seed);
    # every run directory also holds the exported model that `jaxdepth predict` loads
    runs = sorted(p.name.split("-")[0] for p in (tmp_path / "ck").iterdir())
    assert runs == ["drop", "log", "log_monovit_tiny", "reg", "reg", "reg", "reg_monovit_tiny"]
    archs = {p.name.split("-")[0]: json.loads((p / "meta.json").read_text())["architecture"]
             for p in (tmp_path / "ck").iterdir()}
    assert archs["reg_monovit_tiny"] == archs["log_monovit_tiny"] == "MonoViT"
    assert all((p / "meta.json").is_file() for p in (tmp_path / "ck").iterdir())

    # a second run finds every model finished and trains nothing
    cfg = experiment.config_of(experiment.parse_args(args))
    configs = experiment.all_configs(cfg)
    models, _, _ = experiment.train_models(cfg, configs, tmp_path / "ck", train=False)
    assert capsys.readouterr().out.count("reusing") == len(configs) == len(models) == 7

