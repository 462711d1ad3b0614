"""experiments/ablation_references.py and ablation_layers.py end to end on one tiny
model each (a subset of their rows; the full lists are checked without running them)."""
import json
import math

import pytest

from experiment_scripts import load_experiment

METRICS = ("abs_rel", "rmse", "a1")


def _check_rows(rows, out, key):
    result = json.loads((out / "results.json").read_text())
    assert result["rows"] == json.loads(json.dumps(rows))
    for r in result["rows"]:
        assert key in r and "aggregate" in r and "model" in r
        for m in METRICS:
            assert set(r[m]) == {"ause", "aurg"} and all(math.isfinite(v) for v in r[m].values())
    return result


@pytest.mark.slow
def test_reference_and_layer_ablations_write_their_layout(tmp_path, capsys):
    refs = load_experiment("ablation_references")
    ck = tmp_path / "ck"
    rows = refs.main(["--quick", "--models", "Monodepth2 S", "--steps", "1", "--references",
                      "GT", "Flip", "Rot-10", "Feat-noise", "--out", str(tmp_path / "r"),
                      "--checkpoints", str(ck)])
    result = _check_rows(rows, tmp_path / "r", "reference")
    assert [r["reference"] for r in result["rows"]] == ["GT", "Flip", "Rot-10", "Feat-noise"]
    assert result["rows"][1]["taps"] == ["dec6"] and "Reference ablation" in capsys.readouterr().out
    assert (tmp_path / "r" / "references_rmse.png").stat().st_size > 1000

    layers = load_experiment("ablation_layers")
    rows = layers.main(["--quick", "--models", "Monodepth2 S", "--steps", "1", "--taps", "dec6",
                        "enc4", "--sets", "dec4+6+8", "--aggregates", "std", "rank",
                        "--out", str(tmp_path / "l"), "--checkpoints", str(ck)])
    result = _check_rows(rows, tmp_path / "l", "taps")
    assert [(r["method"], r["aggregate"]) for r in result["rows"]] == [
        ("enc4", None), ("dec6", None), ("dec4+6+8 std", "std"), ("dec4+6+8 rank", "rank")]
    printed = capsys.readouterr().out
    assert "reusing" in printed and "Best by AUSE" in printed  # the model was reused
    assert (tmp_path / "l" / "layers_abs_rel.png").stat().st_size > 1000


def test_full_variant_lists():
    """The default rows: Table 5's references plus the two feature ones; every tap of
    each architecture, and each layer set with each aggregate."""
    from jaxdepth.models import DepthNet, MonoViT
    refs = load_experiment("ablation_references")
    labels = [v.label for v in refs.variants("MonoViT M", MonoViT(size="tiny"))]
    assert labels == ["GT", "Flip", "Gray", "Noise", "Rot-5", "Rot-10", "Rot-20", "Feat-noise",
                      "Feat-drop"]
    layers = load_experiment("ablation_layers")
    for model in (DepthNet(width=0.125), MonoViT(size="tiny")):
        v = layers.variants("x", model)
        single = [x for x in v if x.meta["aggregate"] is None]
        assert [x.label for x in single] == list(model.tap_names)
        sets = layers.layer_sets(model)
        assert len(v) - len(single) == len(sets) * len(layers.AGGREGATES)
        assert all(set(t) <= set(model.tap_names) for t in sets.values())
    from jaxdepth.benchmarks import ablation
    with pytest.raises(ValueError, match="model must be one of"):
        ablation.model_config(ablation.QUICK, "MonoViT X")
