"""Table 3 of the gradient-uncertainty paper (Hornauer & Belagiannis, ECCV 2022) on
NYU Depth V2: Drop, Post (+ Var, In-Drop, Grad) and Log (+ Var, In-Drop, Grad).

    python experiments/nyu_grad_unc.py --nyu-root nyu_data                  # train, then evaluate
    python experiments/nyu_grad_unc.py --nyu-root nyu_data --weights ckpt/NYU   # converted weights

`--nyu-root` is FastDepth's `nyudepthv2` folder (or its parent). Without `--weights` the
three base models are trained first with the NYU recipe (docs/training.md;
`jaxdepth.train.recipes` `drop` / `supervised` / `log` on `data="nyu"`: metric heads,
L1 / Laplace NLL on metres, 20 epochs, batch 12, Adam 1e-4 ×0.1 after epoch 15,
`jaxdepth.data.nyu.train_transform` augmentation) into run directories under
`--checkpoints` (`<drop|reg|log>-<config digest>`, resumable, reused by later runs).
`--epochs` / `--steps` shorten training (tests use `--steps 2`). Then the protocol
(`jaxdepth.benchmarks.nyu`) evaluates every row; the table is printed and
`results.json` and the sparsification PNGs are written into `--out`.
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from jaxdepth import report  # noqa: E402
from jaxdepth.benchmarks import nyu  # noqa: E402
from jaxdepth.cli.options import add_method_arguments, method_options  # noqa: E402

#: the training recipe of each NYU base model (jaxdepth.train.recipes)
RECIPES = {"drop": "drop", "post": "supervised", "log": "log"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Gradient uncertainty vs. baselines on NYU Depth V2 (paper Table 3)")
    p.add_argument("--nyu-root", required=True,
                   help="NYU FastDepth folder (nyudepthv2/ with val/official/*.h5 and "
                        "train/*/*.h5)")
    p.add_argument("--weights", default=None,
                   help="converted metric checkpoint, or a folder with drop/ post/ log/ "
                        "checkpoints; without it the base models are trained")
    p.add_argument("--checkpoints", default="checkpoints",
                   help="where the training runs live (reused by later runs)")
    p.add_argument("--epochs", type=int, default=20, help="training epochs (20)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps (overrides --epochs)")
    p.add_argument("--lr-drop-epoch", type=float, default=15,
                   help="epoch after which the learning rate drops ×0.1 (15)")
    p.add_argument("--batch-size", type=int, default=12, help="training batch (12)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (1e-4)")
    p.add_argument("--model-width", type=float, default=1.0,
                   help="channel multiplier of the trained DepthNet (1.0 = Monodepth2)")
    p.add_argument("--num-layers", type=int, default=18, choices=(18, 34, 50),
                   help="ResNet depth")
    p.add_argument("--no-train", action="store_true", help="fail instead of training")
    p.add_argument("--reproduce-reference", action="store_true",
                   help="Var with the reference's zero fill of rotated-out pixels")
    p.add_argument("--out", default="runs/nyu_grad_unc", help="results directory")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of training and of the noise / dropout draws")
    p.add_argument("--eval-batch", type=int, default=1,
                   help="images per network call (1; the last batch is padded)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N test images")
    p.add_argument("--models", nargs="+", default=None, choices=nyu.MODELS, metavar="MODEL",
                   help="only these models (drop post log)")
    add_method_arguments(p, variance_weight=2.0)
    return p.parse_args(argv)


def train_configs(args, n_train: int) -> dict:
    """`{model: SupervisedConfig}` of the NYU base models to train."""
    from jaxdepth.train import recipes
    from jaxdepth.train.config import RunConfig

    steps_per_epoch = n_train // args.batch_size
    if steps_per_epoch < 1:
        sys.exit(f"{n_train} NYU training images are fewer than one batch of {args.batch_size}")
    run = RunConfig(height=nyu.INPUT_SIZE[0], image_width=nyu.INPUT_SIZE[1],
                    batch_size=args.batch_size,
                    steps=args.steps if args.steps else args.epochs * steps_per_epoch,
                    lr=args.lr, lr_drop_at=args.lr_drop_epoch / args.epochs, seed=args.seed,
                    data_seed=args.seed, train_size=n_train, augment=False, data="nyu")
    return {name: recipes.build(RECIPES[name], run, model_width=args.model_width,
                                num_layers=args.num_layers)
            for name in nyu.MODELS if not args.models or name in args.models}


def train_models(args) -> dict:
    """Train (resume, or reuse) the NYU base models: `{model: run directory}`."""
    from jaxdepth.data.training import training_data
    from jaxdepth.train import runs, supervised

    data = training_data("nyu", needs="depth", height=nyu.INPUT_SIZE[0],
                         width=nyu.INPUT_SIZE[1], root=args.nyu_root)
    weights = {}
    for name, cfg in train_configs(args, len(data)).items():
        try:
            runs.train_or_load(None, cfg, args.checkpoints, init_state=supervised.init_state,
                               step=supervised.make_step(cfg), data=data,
                               train=not args.no_train)
        except runs.RunNotFinished as e:
            sys.exit(f"NYU {name}: {e} (--no-train)")
        weights[name] = runs.run_dir(args.checkpoints, None, cfg)
    return weights


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    weights = args.weights or train_models(args)
    t_train = time.perf_counter() - t_start
    result = nyu.run(nyu.NyuConfig(
        nyu_root=args.nyu_root, weights=weights, models=args.models, limit=args.limit,
        eval_batch=args.eval_batch, seed=args.seed, methods=method_options(args),
        reproduce_reference=args.reproduce_reference))
    config = {**vars(args), **result.config, "train_seconds": t_train,
              "seconds": time.perf_counter() - t_start}
    out = Path(args.out)
    report.write_results(out, result.rows, result.curves, config, result.title)
    print(f"wrote {out / 'results.json'} and PNGs in {time.perf_counter() - t_start:.0f} s")
    return result.rows


if __name__ == "__main__":
    main()
