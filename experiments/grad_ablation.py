"""Ablations of the gradient method on the models of `kitti_grad_unc.py`
(the supplementary material's layer study and the paper's Table 5 references).

    python experiments/grad_ablation.py [--quick] [--models Reg Log]

Reuses the checkpoints the main job trained (same flags select the same models;
trains them if missing), then evaluates Grad with every single decoder tap
dec0…dec10, each channel reduction, each reference (including the ground-truth
loss as an upper bound), several λ for the Log model and a multi-layer
aggregate, and prints AUSE/AURG tables and `ablation.json` in `--out`.
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import kitti_grad_unc as main_job  # noqa: E402

from jaxdepth import uncertainty as U  # noqa: E402
from jaxdepth.data.synthetic import SyntheticSource  # noqa: E402
from jaxdepth.evaluation import SYNTHETIC, Evaluator, format_table  # noqa: E402


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


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    models_wanted = ["Reg", "Log"]
    if "--models" in argv:
        i = argv.index("--models")
        models_wanted = []
        while i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            models_wanted.append(argv.pop(i + 1))
        argv.pop(i)
    args = main_job.parse_args(argv + ["--boot", "0"])
    out = Path(args.out).parent / "grad_ablation"
    out.mkdir(parents=True, exist_ok=True)
    _, models, _ = main_job.train_models(args)
    source = SyntheticSource("test", seed=args.seed, height=args.height, width=args.width,
                             length=args.test_images, keys=("image", "depth"))
    ev = Evaluator(SYNTHETIC)
    key = jax.random.PRNGKey(args.seed)
    for start in range(0, args.test_images, args.eval_batch):
        batch = source.get_batch(np.arange(start, min(start + args.eval_batch, len(source))))
        images, gt = jnp.asarray(batch["image"]), jnp.asarray(batch["depth"])
        for name in models_wanted:
            apply_fn, variables = models[name]
            for label, kw in variants(name, args.variance_weight):
                if kw.get("reference") == "gt":
                    kw = dict(kw, depth_gt=jnp.where(gt > 0, gt, 0.0))
                est = U.gradient_uncertainty(apply_fn, variables, images, rng=key, **kw)
                ev.add(name, label, est, gt)
        print(f"evaluated {min(start + args.eval_batch, args.test_images)}/{args.test_images}",
              flush=True)
    rows = ev.rows()
    table = format_table(rows, "Gradient-method ablation (procedural street scenes)")
    print(table)
    (out / "table.txt").write_text(table + "\n")
    with open(out / "ablation.json", "w") as f:
        json.dump({"config": {k: v for k, v in vars(args).items()}, "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
