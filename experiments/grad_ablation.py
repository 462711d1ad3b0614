"""Ablation of the gradient method's choices on the main job's Reg and Log models:
every decoder tap, the channel reductions, |g|, the references (gray, noise, rotation,
var, ground truth), a three-tap set with each aggregate, and λ for Log.

    python experiments/grad_ablation.py [--quick] [--models Reg Log]

The models are the main job's (`experiments/kitti_grad_unc.py`, the same configs, so its
runs are reused from `--checkpoints`). Prints a table (the Table 1 layout) and writes
`ablation.json` (`{"config", "rows"}`) and `table.txt` into `--out`.
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

from jaxdepth.data.synthetic import SyntheticSource  # noqa: E402
from jaxdepth.evaluation import SYNTHETIC, Evaluator, Row, evaluate, format_table  # noqa: E402
from jaxdepth.train import recipes, supervised  # noqa: E402
from jaxdepth.train.config import RunConfig  # noqa: E402
from jaxdepth.uncertainty import gradient_uncertainty  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    """The main job's model settings (its `Config`) and the evaluation."""
    height: int = 64
    width: int = 192
    model_width: float = 0.25
    num_layers: int = 18
    steps: int = 500
    batch_size: int = 8
    lr: float = 1e-3
    variance_weight: float = 2.0
    test_images: int = 64
    eval_batch: int = 8
    seed: int = 0
    models: tuple = ("Reg", "Log")


QUICK = Config(steps=6, test_images=4, height=32, width=96, model_width=0.125, eval_batch=4)


def variants(model_name, variance_weight):
    """`[(label, gradient_uncertainty kwargs)]` for one model."""
    lam = variance_weight if model_name == "Log" else 0.0
    out = [(f"tap dec{i}", dict(taps=(f"dec{i}",), variance_weight=lam)) for i in range(11)]
    out += [(f"reduce {r}", dict(reduce=r, variance_weight=lam)) for r in ("sum", "mean", "norm")]
    out += [("abs max", dict(absolute=True, variance_weight=lam))]
    out += [(f"ref {r}", dict(reference=r, variance_weight=lam))
            for r in ("gray", "noise", "rot", "var", "gt")]
    out += [("dec4+6+8 std", dict(taps=("dec4", "dec6", "dec8"), variance_weight=lam)),
            ("dec4+6+8 mean", dict(taps=("dec4", "dec6", "dec8"), aggregate="mean",
                                   variance_weight=lam))]
    if model_name == "Log":
        out += [(f"λ={w:g}", dict(variance_weight=w)) for w in (0.0, 0.5, 8.0)]
    return out


def model_config(cfg: Config, name: str) -> supervised.SupervisedConfig:
    """The main job's Reg / Log config for these settings."""
    run = RunConfig(height=cfg.height, image_width=cfg.width, batch_size=cfg.batch_size,
                    steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, data_seed=cfg.seed)
    return supervised.SupervisedConfig(variant={"Reg": "reg", "Log": "log"}[name],
                                       num_layers=cfg.num_layers, width=cfg.model_width, run=run)


def _row(model, label, apply_fn, variables, kw):
    if kw.get("reference") == "gt":
        def fn(x, key, depth):
            return gradient_uncertainty(apply_fn, variables, x, rng=key,
                                        depth_gt=depth * (depth > 0), **kw)
        return Row(model, label, fn, inputs=("depth",))
    return Row(model, label, lambda x, key: gradient_uncertainty(apply_fn, variables, x,
                                                                 rng=key, **kw))


def main(argv=None):
    p = argparse.ArgumentParser(description="Gradient-method ablation (main job's models)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", nargs="+", choices=("Reg", "Log"))
    p.add_argument("--out", default="runs/grad_ablation")
    p.add_argument("--checkpoints", default="checkpoints")
    p.add_argument("--steps", type=int)
    p.add_argument("--test-images", type=int)
    p.add_argument("--seed", type=int)
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    changes = {k: v for k, v in (("steps", args.steps), ("test_images", args.test_images),
                                 ("seed", args.seed)) if v is not None}
    if args.models:
        changes["models"] = tuple(args.models)
    cfg = dataclasses.replace(cfg, **changes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in cfg.models:
        apply_fn, variables = recipes.train_or_load(model_config(cfg, name), args.checkpoints)
        rows += [_row(name, label, apply_fn, variables, kw)
                 for label, kw in variants(name, cfg.variance_weight)]
    source = SyntheticSource("test", seed=cfg.seed, height=cfg.height, width=cfg.width,
                             length=cfg.test_images, keys=("image", "depth"))
    ev = Evaluator(SYNTHETIC)
    evaluate(rows, source, batch_size=cfg.eval_batch, seed=cfg.seed, batch_keys=False,
             add=lambda row, est, samples, idx: ev.add(
                 row.model, row.method, est, [s["depth"] for s in samples]))
    results = ev.rows()
    table = format_table(results, "Gradient-method ablation (procedural street scenes)")
    print(table)
    (out / "table.txt").write_text(table + "\n")
    with open(out / "ablation.json", "w") as f:
        json.dump({"config": dataclasses.asdict(cfg), "rows": results}, f, indent=2)
    return results


if __name__ == "__main__":
    main()
