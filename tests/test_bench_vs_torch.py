"""experiments/bench_vs_torch.py compares the same computation: its PyTorch Monodepth2 and
hook-based Grad, fed the converted weights, agree with jaxdepth's forward, Post and Grad."""
import pytest

from experiment_scripts import load_experiment

pytest.importorskip("torch", reason="the PyTorch comparison needs torch")
pytest.importorskip("torchvision", reason="the PyTorch comparison needs torchvision")


@pytest.mark.slow  # ~10 s: compiles and runs three methods in both frameworks
def test_torch_and_jax_compute_the_same_forward_post_and_grad():
    bench = load_experiment("bench_vs_torch")
    res = bench.run(height=64, width=192, batch=1, repeats=1,
                    methods=("forward", "post", "grad"))
    rows = res["rows"]
    assert set(rows) == {"forward", "post", "grad"}
    for name, r in rows.items():
        assert r["torch_ms"][bench._torch_threads(None)[0]] > 0 and r["jax_ms"] > 0, name
        # depth (all three), then Post's |p − flip p'| and Grad's normalised map
        assert r["max_rel_diff"][0] < 1e-4, (name, r["max_rel_diff"])
    assert len(rows["post"]["max_abs_diff"]) == len(rows["grad"]["max_abs_diff"]) == 2
    assert rows["post"]["max_rel_diff"][1] < 1e-3, rows["post"]
    assert rows["grad"]["max_abs_diff"][1] < 1e-3, rows["grad"]  # map in [0, 1]
