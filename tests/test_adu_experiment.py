"""experiments/adu_depth.py end to end in --quick mode (its own process, XLA's
optimisations off): trains the teacher, the baseline and the ADU student, prints Table 4's
layout and the verdict, writes the results.json layout the docs promise and the PNGs, and
reuses its checkpoints on a second run."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiment_scripts import load_experiment

pytestmark = pytest.mark.usefixtures("cheap_compilation")
SCRIPT = Path(__file__).parents[1] / "experiments" / "adu_depth.py"
DEPTH = {"abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3"}


def _run(*args):
    # the script as a user runs it, on one CPU device
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                     if not f.startswith("--xla_force_host_platform_device_count"))
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1", XLA_FLAGS=flags)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, time.perf_counter() - t0


@pytest.mark.slow
def test_quick_run_writes_table_json_and_pngs_then_reuses_checkpoints(tmp_path, capsys):
    out, ck = tmp_path / "out", tmp_path / "ck"
    printed, _ = _run("--quick", "--out", out, "--checkpoints", ck)
    assert "Table 4" in printed and "Full ADU-Depth" in printed and "Claim check" in printed
    assert "UEM σ" in printed and "Grad" in printed
    result = json.loads((out / "results.json").read_text())
    assert result["config"]["quick"] is True and result["config"]["dataset"] == "synthetic"
    rows = {r["model"]: r for r in result["rows"]}
    assert list(rows) == ["teacher", "baseline", "adu"]
    for r in rows.values():
        assert set(r["depth"]) == DEPTH and all(math.isfinite(v) for v in r["depth"].values())
    for m in ("abs_rel", "rmse", "a1"):  # σ only where the row has one
        assert set(rows["adu"][m]) == {"ause", "aurg"}
        assert set(rows["adu"]["grad"][m]) == {"ause", "aurg"}
        assert m not in rows["teacher"] and m not in rows["baseline"]
    assert (out / "panel_0.png").stat().st_size > 0
    assert (out / "sparsification_abs_rel.png").exists()
    # a second run finds every model finished and trains nothing (loading only, here)
    experiment = load_experiment("adu_depth")
    cfg = experiment.config_of(experiment.parse_args(["--quick"]))
    configs = experiment.model_configs(cfg)
    models = experiment.train_models(cfg, configs, ck, train=False)
    assert list(models) == ["teacher", "baseline", "adu"]
    assert capsys.readouterr().out.count("reusing") == 3
