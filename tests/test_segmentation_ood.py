"""`experiments/segmentation_ood.py` end to end at a tiny size: trains the plain, dropout
and ensemble models, writes the results.json layout issue 13 specifies (method names
included), the tables and the PNGs, and reuses its checkpoints."""
import json
import math

import numpy as np
import pytest

from experiment_scripts import load_experiment

TINY = ["--quick", "--height", "32", "--width", "64", "--steps", "1", "--test-images", "4",
        "--ood-images", "4", "--eval-batch", "4", "--mc-samples", "2", "--ps", "0.5", "1"]


@pytest.mark.slow
def test_tiny_run_writes_the_results_layout_and_reuses_checkpoints(tmp_path, capsys):
    experiment = load_experiment("segmentation_ood")
    args = TINY + ["--out", str(tmp_path / "out"), "--checkpoints", str(tmp_path / "ck")]
    result = experiment.main(args)
    printed = capsys.readouterr().out
    assert "Table 1" in printed and "Tables 2–3" in printed and "Table 4" in printed
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(saved) == {"config", "pixel", "segment", "ood", "runtime"}
    methods = ["softmax", "entropy", "mc_dropout", "ensemble", "pgn_oh_p0.5", "pgn_oh_p1",
               "pgn_uni_p0.5", "pgn_uni_p1"]
    assert [r["method"] for r in saved["pixel"]] == methods
    assert [r["method"] for r in saved["ood"]] == methods
    assert [r["method"] for r in saved["segment"]] == ["metaseg", "pgn", "metaseg+pgn"]
    assert [r["method"] for r in saved["runtime"]][:3] == ["forward", "mc_dropout", "pgn_oh+uni"]
    for r in saved["pixel"]:
        assert {"ece", "ause"} <= set(r) and 0 <= r["ece"] <= 1 and math.isfinite(r["ause"])
    for r in saved["ood"]:
        assert {"auprc", "auroc", "fpr95", "siou", "ppv", "f1"} <= set(r)
        assert 0 <= r["auprc"] <= 1 and 0 <= r["auroc"] <= 1 and 0 <= r["fpr95"] <= 1
    for r in saved["segment"]:
        assert 0 <= r["meta_auroc"] <= 1 and np.isfinite(r["meta_r2"])
    assert saved["runtime"][0]["overhead"] == 1.0
    assert all(r["s_per_frame"] > 0 for r in saved["runtime"])
    assert saved["config"]["quick"] is True and saved["config"]["ps"] == [0.5, 1.0]
    assert result["pixel"][0]["method"] == "softmax"
    for name in ("examples.png", "pr_curves.png", "tables.txt"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    from jaxdepth.train import recipes
    cfg = experiment.config_of(experiment.parse_args(args))
    for c in experiment.model_configs(cfg).values():  # every model is found again
        recipes.train_or_load(c, tmp_path / "ck", train=False)
    assert capsys.readouterr().out.count("reusing") == 3


@pytest.mark.slow
def test_real_data_flags_evaluate_a_checkpoint_on_cityscapes_and_road_anomaly(tmp_path, capsys):
    """`--checkpoint` + `--cityscapes-root` / `--smiyc-root` on fixture trees in the real
    layouts: a (random) 19-class DeepLabV3+ and its dropout twin, no training."""
    import jax

    import segmentation_fixtures as sf
    from jaxdepth.data.cityscapes import TRAIN_CLASSES
    from jaxdepth.export import save_checkpoint
    from jaxdepth.models.segmentation import DeepLabV3Plus

    for name, rate in (("plain", 0.0), ("drop", 0.2)):
        model = DeepLabV3Plus(num_classes=19, width=0.0625, dropout_rate=rate)
        save_checkpoint(tmp_path / name, model, model.init_variables(jax.random.PRNGKey(0), 32, 64),
                        32, 64, {"class_names": list(TRAIN_CLASSES), "dropout_trained": rate > 0})
    sf.write_cityscapes(tmp_path / "cs", {"val": {"lindau": 4}}, size=(32, 64))
    sf.write_road_anomaly(tmp_path / "smiyc", [f"airplane{i:04d}" for i in range(4)],
                          size=(32, 64))
    experiment = load_experiment("segmentation_ood")
    saved = experiment.main([
        "--checkpoint", str(tmp_path / "plain"), "--dropout-checkpoint", str(tmp_path / "drop"),
        "--cityscapes-root", str(tmp_path / "cs"), "--smiyc-root", str(tmp_path / "smiyc"),
        "--eval-batch", "4", "--mc-samples", "2", "--ps", "0.5", "--timing-repeats", "1",
        "--out", str(tmp_path / "out")])
    assert saved["config"]["dataset"] == "real"
    assert [r["method"] for r in saved["ood"]] == ["softmax", "entropy", "mc_dropout",
                                                   "pgn_oh_p0.5", "pgn_uni_p0.5"]
    assert len(saved["pixel"]) == 5 and len(saved["segment"]) == 3
    assert (tmp_path / "out" / "examples.png").exists()
    assert "Tables 2–3" in capsys.readouterr().out
