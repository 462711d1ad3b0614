"""NYU Depth V2 protocol of the gradient-uncertainty paper: Table 3.

    python experiments/nyu_grad_unc.py --nyu-root nyu_data [--weights ckpt/NYU] \\
        [--epochs 20 | --steps N] [--batch-size 12] [--train-dir checkpoints/nyu] \\
        [--models drop post log] [--limit N] [--out DIR]

Data: the FastDepth HDF5 files (`nyudepthv2/val/official/*.h5`, 654 test images;
`train/<scene>/*.h5` for training), read by `jaxdepth.data.nyu.NyuV2`: image and depth
resized ×0.5 (nearest) and centre-cropped to 224×288, which is also the network input.

Models (metric-depth Monodepth2: ResNet-18 + decoder whose heads output depth in metres,
no sigmoid), `--weights` layout (converted with `jaxdepth convert monodepth2 --metric`):

    WEIGHTS/drop/   trained with dropout p = 0.2      -> Drop: Base (MC dropout, 8 passes)
    WEIGHTS/post/   plain model                       -> Post: Base, Var, In-Drop, Grad
    WEIGHTS/log/    with log σ heads (Laplace NLL)    -> Log:  Base, Var, In-Drop, Grad(λ = 2)

Without `--weights`, the three base models are trained first with the NYU recipe of
PROTOCOL.md / TRAINING.md (`jaxdepth.train.supervised` with `metric=True`,
`loss_space="depth"`): L1 (plain, Drop with channel dropout 0.2 after every decoder
block) or Laplace NLL |d − y|/σ + log σ (Log) on metres at each of the 4 scales
bilinearly upsampled to 224×288 and averaged, valid pixels 0 < gt ≤ 10; Adam 1e-4,
×0.1 after epoch 15 of 20 (`--lr-drop-epoch`), batch 12; augmentation
`jaxdepth.data.nyu.train_transform` (scale 1–1.5 with depth / s, rotation ±5°, flip,
colour jitter 0.4, 240×320 resize, centre crop 224×288). The encoder starts from random
(PyTorch-style) weights: jaxdepth has no ImageNet ResNet-18 weights. Training runs live in
`--train-dir/<model>-<config digest>/train` (orbax, resumable: a killed run continues) and
the finished model is exported as a jaxdepth checkpoint to `.../model`, which later runs
reuse. `--epochs` / `--steps` shorten training (tests use `--steps 2`).

Evaluation (protocol `jaxdepth.evaluation.NYU`): mask 1e-3 < gt < 10, predictions clamped
to [1e-3, 10], no scaling; metrics and AUSE/AURG per image, averaged. Spreads are taken
in depth (`space="depth"`): Post |d − flip(d_flip)| with Monodepth's blended depth, Var
the variance of depth over flip/gray/noise/rotation, In-Drop 8 passes with p = 0.2, Drop
the mean and variance of 8 dropout passes, Log σ = exp(log σ), Grad the gradient
uncertainty (tap `dec6`, flip reference, channel max; λ = 2 for Log). Var, In-Drop and
Grad use the single-pass depth, as the reference.

The reference (GrUMoDepth's `evaluate_supervised.py`) evaluates the float maps directly,
with no uint16 storage, so the default mode is its protocol; `--reproduce-reference` only
switches Var to the reference's zero fill of the pixels the back-rotation leaves empty
(depth 0 there, instead of leaving them out). Not reproduced: PyTorch's random draws
(noise, dropout) and torchvision's nearest-neighbour rotation.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import jax

from jaxdepth.benchmarks import kitti as _k
from jaxdepth.evaluation import NYU, Evaluator

__all__ = ["MODELS", "LABELS", "PAPER", "INPUT_SIZE", "add_arguments", "run", "train_config",
           "train_model", "model_kwargs"]

MODELS = ("drop", "post", "log")
LABELS = {"drop": "Drop", "post": "Post", "log": "Log"}
METHODS = {"drop": ("Base",), "post": ("Base", "Var", "In-Drop", "Grad"),
           "log": ("Base", "Var", "In-Drop", "Grad")}
VARIANTS = {"post": "reg", "log": "log", "drop": "drop"}
INPUT_SIZE = (224, 288)

#: paper Table 3: AUSE, AURG for abs_rel, rmse, δ≥1.25; Inf [ms]
PAPER = {
    ("Drop", "Base"): (0.086, 0.002, 0.214, 0.160, 0.169, -0.001, 26.32),
    ("Post", "Base"): (0.066, 0.018, 0.267, 0.096, 0.116, 0.037, 6.58),
    ("Post", "Var"): (0.063, 0.024, 0.221, 0.151, 0.110, 0.045, 16.45),
    ("Post", "In-Drop"): (0.086, 0.000, 0.223, 0.149, 0.163, 0.000, 29.61),
    ("Post", "Grad"): (0.061, 0.025, 0.252, 0.120, 0.106, 0.048, 12.05),
    ("Log", "Base"): (0.055, 0.030, 0.159, 0.210, 0.089, 0.066, 3.29),
    ("Log", "Var"): (0.061, 0.024, 0.220, 0.149, 0.106, 0.049, 16.45),
    ("Log", "In-Drop"): (0.087, -0.002, 0.215, 0.154, 0.166, -0.012, 29.61),
    ("Log", "Grad"): (0.053, 0.032, 0.176, 0.193, 0.086, 0.069, 12.05),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The NYU protocol's options (see the module docstring)."""
    add = _k._add
    add(parser, "--nyu-root", required=True,
        help="NYU FastDepth folder (nyudepthv2/ with val/official/*.h5 and train/*/*.h5)")
    add(parser, "--weights", default=None,
        help="converted metric checkpoint, or a folder with drop/ post/ log/ checkpoints; "
             "without it the base models are trained")
    add(parser, "--train-dir", default="checkpoints/nyu",
        help="where training runs and the exported models live (reused by later runs)")
    add(parser, "--epochs", type=int, default=20, help="training epochs (20)")
    add(parser, "--steps", type=int, default=None, help="training steps (overrides --epochs)")
    add(parser, "--lr-drop-epoch", type=float, default=15,
        help="epoch after which the learning rate drops ×0.1 (15)")
    add(parser, "--batch-size", type=int, default=12, help="training batch (12)")
    add(parser, "--lr", type=float, default=1e-4, help="Adam learning rate (1e-4)")
    add(parser, "--model-width", type=float, default=1.0,
        help="channel multiplier of the trained DepthNet (1.0 = Monodepth2)")
    add(parser, "--num-layers", type=int, default=18, choices=(18, 34, 50), help="ResNet depth")
    add(parser, "--workers", type=int, default=4, help="data loading threads")
    add(parser, "--no-train", action="store_true", help="fail instead of training")
    add(parser, "--reproduce-reference", action="store_true",
        help="Var with the reference's zero fill of rotated-out pixels")
    _k.add_common_arguments(parser, "runs/nyu_grad_unc")


def model_kwargs(cfg) -> dict:
    """`DepthNet` kwargs of a trained config (as `cfg.model()`), for `save_checkpoint`."""
    return {"num_layers": cfg.num_layers, "width": cfg.width, "log_sigma": cfg.variant == "log",
            "dropout_rate": cfg.dropout, "metric": True, "min_depth": 0.1, "max_depth": 100.0}


def train_config(name: str, args, n_train: int):
    """The `SupervisedConfig` of NYU base model `name` (post | log | drop)."""
    from jaxdepth.train.supervised import SupervisedConfig

    batch = int(args.batch_size)
    steps_per_epoch = n_train // batch
    if steps_per_epoch < 1:
        raise ValueError(f"{n_train} NYU training images are fewer than one batch of {batch}")
    steps = int(args.steps) if args.steps else int(args.epochs) * steps_per_epoch
    drop_at = float(args.lr_drop_epoch) / float(args.epochs)
    return SupervisedConfig(
        variant=VARIANTS[name], num_layers=int(args.num_layers), width=float(args.model_width),
        height=INPUT_SIZE[0], image_width=INPUT_SIZE[1], batch_size=batch, steps=steps,
        lr=float(args.lr), lr_drop_at=drop_at, dropout=0.2, max_depth=10.0,
        seed=int(_k._get(args, "seed", 0)), data_seed=int(_k._get(args, "seed", 0)),
        train_size=n_train, augment=False, loss_space="depth", metric=True,
        init_depth=None)  # default PyTorch-style heads (the 10 m bias is for sigmoid heads)


def _train_sample(sample, rng):
    from jaxdepth.data.nyu import train_transform

    out = train_transform(sample, rng)
    return {"image": out["image"], "depth": out["depth"]}


def train_model(name: str, args, train_source) -> Path:
    """Train (or resume, or reuse) NYU base model `name`; returns its exported checkpoint."""
    from jaxdepth.convert import is_checkpoint, save_checkpoint
    from jaxdepth.data.pipeline import Loader
    from jaxdepth.train import supervised
    from jaxdepth.train.checkpoint import Checkpointer
    from jaxdepth.train.loop import fit

    cfg = train_config(name, args, len(train_source))
    digest = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    run_dir = Path(args.train_dir) / f"{name}-{digest}"
    model_dir = run_dir / "model"
    if is_checkpoint(model_dir):
        print(f"NYU {name}: reusing {model_dir}")
        return model_dir
    n_dev = jax.device_count()
    if cfg.batch_size % n_dev:
        raise ValueError(f"--batch-size {cfg.batch_size} must be a multiple of the "
                         f"{n_dev} devices the batch is split over")
    ckpt = Checkpointer(run_dir / "train", cfg.to_dict(), save_every=max(1, cfg.steps // 20),
                        keep=1)
    try:
        state = supervised.init_state(cfg)
        if ckpt.latest_step != cfg.steps:
            if getattr(args, "no_train", False):
                sys.exit(f"NYU {name}: no finished training in {run_dir} and --no-train given")
            loader = Loader(train_source, cfg.batch_size, seed=cfg.seed, shuffle=True,
                            transform=_train_sample, num_threads=int(_k._get(args, "workers", 0)),
                            prefetch=2)
            try:
                state = fit(supervised.make_step(cfg), state, loader, steps=cfg.steps,
                            checkpointer=ckpt, description=f"train NYU {name}")
            finally:
                loader.close()
        else:
            state, _ = ckpt.restore(cfg.steps, state)
    finally:
        ckpt.close()
    variables = jax.device_get(supervised.variables_of(state))
    source = {"kind": "jaxdepth-train", "recipe": "nyu", "config": cfg.to_dict(),
              "run": str(run_dir / "train")}
    save_checkpoint(model_dir, model_kwargs(cfg), variables, *INPUT_SIZE,
                    {"source": source, "use_stereo": None}, overwrite=True)
    return model_dir


def _check_kind(name, meta, path):
    if meta.get("ensemble"):
        raise ValueError(f"{path}: NYU models are single checkpoints, not ensembles")
    if not meta["model"].get("metric"):
        raise ValueError(f"{path}: not a metric-depth model; convert the NYU weights with "
                         "`jaxdepth convert monodepth2 ... --metric`")
    log = bool(meta["model"].get("log_sigma"))
    if (name == "log") != log:
        raise ValueError(f"{path}: {name}/ {'needs' if name == 'log' else 'must not have'} "
                         "log σ heads")


def run(args) -> list[dict]:
    """Evaluate Table 3 on NYU Depth V2 (training the base models if no weights are given)."""
    from jaxdepth.data.nyu import NyuV2, nyu_files

    t_start = time.perf_counter()
    out = Path(getattr(args, "out", None) or "runs/nyu_grad_unc")
    reference = bool(getattr(args, "reproduce_reference", False))
    opts = _k.method_options(args)
    wanted = getattr(args, "models", None)
    if args.weights:
        weights = _k.resolve_weights(args.weights, wanted, names=MODELS)
    else:
        train = NyuV2(args.nyu_root, "train", mode="raw")
        weights = {name: train_model(name, args, train)
                   for name in MODELS if not wanted or name in wanted}
    t_train = time.perf_counter() - t_start
    models = {}
    for name, path in weights.items():
        models[name] = _k.load_model(path)
        _check_kind(name, models[name][2], path)
        size = (int(models[name][2]["height"]), int(models[name][2]["width"]))
        if size != INPUT_SIZE:
            raise ValueError(f"{path}: NYU models take {INPUT_SIZE[0]}×{INPUT_SIZE[1]} inputs "
                             f"(the evaluation crop), this one {size[0]}×{size[1]}")
    limit = getattr(args, "limit", None)
    if limit is not None:
        source = NyuV2(args.nyu_root, "val", files=nyu_files(args.nyu_root, "val")[:limit],
                       expected_count=None)
    else:
        source = NyuV2(args.nyu_root, "val")
    rows = _k.build_rows(models, opts, space="depth", reference=reference, var_fill=0.0,
                         methods=METHODS, labels=LABELS, order=MODELS)
    print(f"NYU: {len(source)} test images, models "
          f"{', '.join(f'{k}={v}' for k, v in weights.items())}", flush=True)
    ev = Evaluator(NYU)
    _k.evaluate_rows(rows, source, int(_k._get(args, "eval_batch", 1)),
                     int(_k._get(args, "seed", 0)),
                     lambda row, est, sample, i: ev.add(row.model, row.method, est,
                                                        sample["depth"][None]),
                     lambda row, s, n: ev.time(row.model, row.method, s, n))
    results = ev.rows()
    for r in results:
        if (r["model"], r["method"]) in PAPER:
            r["paper"] = _k.paper_row(PAPER[(r["model"], r["method"])])
    config = {k: v for k, v in vars(args).items()}
    config.update(
        dataset="nyu", n_images=len(source), input_size=list(INPUT_SIZE),
        mode="reference" if reference else "jaxdepth", protocol=dataclasses.asdict(NYU),
        methods=dataclasses.asdict(opts), table="Table 3 (NYU Depth V2)",
        models={k: {"path": str(weights[k]), "model": m[2].get("model"),
                    "source": m[2].get("source")} for k, m in models.items()},
        device=jax.devices()[0].device_kind, train_seconds=t_train,
        seconds=time.perf_counter() - t_start)
    title = f"NYU Depth V2 ({len(source)} test images, 224×288), metric-depth Monodepth2"
    _k.write_outputs(out, results, ev.curves(), config, title)
    print(f"wrote {out / 'results.json'} and PNGs in {time.perf_counter() - t_start:.0f} s")
    return results
