"""Table 1 of the gradient-uncertainty paper (Hornauer & Belagiannis, ECCV 2022),
reproduced end to end on jaxdepth's procedural street scenes.

    python experiments/kitti_grad_unc.py            # full default run (≈12 min on 2 CPU cores)
    python experiments/kitti_grad_unc.py --quick    # smoke run (tests use it)

Trains (or reuses from `--checkpoints`, keyed by config) the Reg, Log, Drop and
Boot models at a small resolution, evaluates every uncertainty method on the
synthetic test split with the KITTI protocol (80 m cap, valid-pixel masks,
metrics per image then averaged), prints the table, writes `results.json` and
PNGs (sparsification-error curves per metric; input/depth/error/uncertainty
panels) into `--out`. `--selfsup M S` adds self-supervised models of those modes
(plain, Log, Self, Drop, Boot; M runs train 2.5× the steps, see `selfsup.steps_for`;
M's Log and Drop are fine-tuned from plain M, see `selfsup.variant_config`)
evaluated with their mode's scaling; models whose depth collapsed to the near limit are
flagged under the table and in `config.collapsed`.
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdepth import uncertainty as U  # noqa: E402
from jaxdepth import viz  # noqa: E402
from jaxdepth.benchmarks import kitti  # noqa: E402
from jaxdepth.data.pipeline import Loader  # noqa: E402
from jaxdepth.data.synthetic import SyntheticSource  # noqa: E402
from jaxdepth.evaluation import SYNTHETIC, Evaluator, format_table  # noqa: E402
from jaxdepth.train import distill, selfsup, supervised  # noqa: E402
from jaxdepth.train.checkpoint import Checkpointer  # noqa: E402
from jaxdepth.train.loop import fit  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Gradient uncertainty vs. baselines (paper Table 1)")
    p.add_argument("--out", default="runs/kitti_grad_unc", help="results directory")
    p.add_argument("--checkpoints", default="checkpoints", help="where trained models are kept")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds of training)")
    p.add_argument("--height", type=int, default=None, help="input height (default 64)")
    p.add_argument("--width", type=int, default=None, help="input width (default 192)")
    p.add_argument("--model-width", type=float, default=None,
                   help="channel multiplier of DepthNet (default 0.25)")
    p.add_argument("--num-layers", type=int, default=18, choices=(18, 50))
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per model (--selfsup M runs: "
                        "selfsup.M_STEPS_FACTOR × as many)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--boot", type=int, default=None, help="bootstrap ensemble size (default 8)")
    p.add_argument("--snap", type=int, default=0, help="Snap row: last N checkpoints of Reg")
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--eval-batch", type=int, default=None)
    p.add_argument("--taps", nargs="+", default=["dec6"], help="decoder taps of the Grad method")
    p.add_argument("--reduce", default="max", choices=("max", "sum", "mean", "norm"))
    p.add_argument("--reference", default="flip", choices=("flip", "gray", "noise", "rot", "var"))
    p.add_argument("--aggregate", default="std", choices=("std", "mean", "max"))
    p.add_argument("--variance-weight", type=float, default=2.0, help="λ of Eq. 5 for Log")
    p.add_argument("--selfsup", nargs="*", default=[], choices=("M", "S", "MS"),
                   help="also train self-supervised models of these modes (Monodepth2 "
                        "recipe, jaxdepth.train.selfsup) and add their rows: plain (Post, "
                        "Var, In-Drop, Grad), Log (Log, Grad), Self (Self, Grad), Drop "
                        "and Boot; M is evaluated with per-image median scaling, S/MS with ×5.4")
    p.add_argument("--selfsup-boot", type=int, default=None,
                   help="bootstrap size of the self-supervised Boot rows (default: --boot)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--panels", type=int, default=None, help="test images drawn as PNG panels")
    p.add_argument("--no-train", action="store_true", help="fail instead of training")
    kitti.add_arguments(p)
    args = p.parse_args(argv)
    quick = dict(steps=6, boot=2, test_images=4, lr=1e-3, height=32, width=96,
                 model_width=0.125, eval_batch=4, panels=1)
    full = dict(steps=500, boot=8, test_images=64, lr=1e-3, height=64, width=192,
                model_width=0.25, eval_batch=8, panels=4)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def model_configs(args) -> dict[str, supervised.SupervisedConfig]:
    base = supervised.SupervisedConfig(
        num_layers=args.num_layers, width=args.model_width, height=args.height,
        image_width=args.width, batch_size=args.batch_size, steps=args.steps, lr=args.lr,
        seed=args.seed, data_seed=args.seed)
    configs = {"Reg": base,
               "Log": dataclasses.replace(base, variant="log"),
               "Drop": dataclasses.replace(base, variant="drop")}
    for i in range(args.boot):
        configs[f"Boot{i + 1}"] = dataclasses.replace(base, seed=args.seed + 1000 + i)
    return configs


def run_dir(root, name, cfg) -> Path:
    digest = hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return Path(root) / f"{name.rstrip('0123456789').lower()}-{digest}"


def train_or_load(name, cfg, args, keep):
    """Variables of the finished run (training or resuming it if needed) and its checkpointer."""
    directory = run_dir(args.checkpoints, name, cfg)
    ckpt = Checkpointer(directory, cfg.to_dict(), save_every=max(1, cfg.steps // 20), keep=keep)
    state = supervised.init_state(cfg)
    if ckpt.latest_step == cfg.steps:
        state, _ = ckpt.restore(cfg.steps, state)
        print(f"{name}: reusing {directory}")
    else:
        if args.no_train:
            sys.exit(f"{name}: no finished checkpoint in {directory} and --no-train given")
        source = SyntheticSource("train", seed=cfg.data_seed, height=cfg.height,
                                 width=cfg.image_width, length=cfg.train_size,
                                 keys=("image", "depth"))
        loader = Loader(source, cfg.batch_size, seed=cfg.seed, shuffle=True)
        state = fit(supervised.make_step(cfg), state, loader, steps=cfg.steps,
                    checkpointer=ckpt, description=f"train {name}")
    return supervised.variables_of(jax.device_get(state)), ckpt


def snapshot_variables(ckpt, cfg, n):
    steps = ckpt.all_steps()[-n:]
    like = supervised.init_state(cfg)
    return [supervised.variables_of(ckpt.restore(s, like)[0]) for s in steps]


def build_methods(models, args, snaps):
    """`[(model, method, fn(images) -> Estimate)]` in the row order of Table 1."""
    reg, log, drop = models["Reg"], models["Log"], models["Drop"]
    taps, key = tuple(args.taps), jax.random.PRNGKey(args.seed)
    grad_kw = dict(taps=taps, reduce=args.reduce, reference=args.reference,
                   aggregate=args.aggregate, rng=key)
    rows = [
        ("Reg", "Post", lambda x: U.post(reg[0], reg[1], x)),
        ("Reg", "Var", lambda x: U.var(reg[0], reg[1], x, rng=key)),
        ("Reg", "In-Drop", lambda x: U.in_drop(reg[0], reg[1], x, rng=key)),
        ("Reg", "Grad", lambda x: U.gradient_uncertainty(reg[0], reg[1], x, **grad_kw)),
        ("Log", "Log", lambda x: U.predictive(log[0], log[1], x)),
        ("Log", "Var", lambda x: U.var(log[0], log[1], x, rng=key)),
        ("Log", "In-Drop", lambda x: U.in_drop(log[0], log[1], x, rng=key)),
        ("Log", "Grad", lambda x: U.gradient_uncertainty(
            log[0], log[1], x, variance_weight=args.variance_weight, **grad_kw)),
        ("Drop", "Drop", lambda x: U.mc_drop(drop[0], drop[1], x, rng=key)),
    ]
    boot = [models[k][1] for k in models if k.startswith("Boot")]
    if len(boot) >= 2:
        rows.append(("Boot", "Boot", lambda x: U.ensemble(reg[0], boot, x)))
    if snaps:
        rows.append(("Snap", "Snap", lambda x: U.ensemble(reg[0], snaps, x)))
    return rows


def selfsup_configs(args, mode) -> dict:
    """`{row model name: config}` of the self-supervised models of one mode."""
    base = selfsup.SelfSupConfig(
        mode=mode, num_layers=args.num_layers, width=args.model_width, height=args.height,
        image_width=args.width, batch_size=args.batch_size,
        steps=selfsup.steps_for(mode, args.steps), lr=args.lr, seed=args.seed,
        data_seed=args.seed)
    configs = {mode: base, f"{mode} Log": selfsup.variant_config(base, "log"),
               f"{mode} Self": distill.DistillConfig(method="self", teacher=base),
               f"{mode} Drop": selfsup.variant_config(base, "drop")}
    n_boot = args.boot if args.selfsup_boot is None else args.selfsup_boot
    for i in range(n_boot if n_boot >= 2 else 0):
        configs[f"{mode} Boot{i + 1}"] = dataclasses.replace(base, seed=args.seed + 1000 + i)
    return configs


def train_selfsup(args):
    """Train or reuse the `--selfsup` models: `(configs, {name: (apply_fn, variables)})`.
    Models whose depth collapsed to the near limit (`selfsup.collapsed`, on the first
    test images) are named in a warning and in `args.collapsed`."""
    configs, models = {}, {}
    args.collapsed = []
    if not args.selfsup:
        return configs, models
    images = SyntheticSource("test", seed=args.seed, height=args.height, width=args.width,
                             length=args.eval_batch, keys=("image",)).get_batch(
                                 np.arange(args.eval_batch))["image"]
    for mode in args.selfsup:
        for name, cfg in selfsup_configs(args, mode).items():
            run = "selfsup_" + name.lower().replace(" ", "_").rstrip("0123456789")
            if isinstance(cfg, distill.DistillConfig):
                models[name] = distill.train_or_load(run, cfg, args.checkpoints,
                                                     models[mode][1], no_train=args.no_train)
            else:
                models[name] = selfsup.train_or_load(run, cfg, args.checkpoints,
                                                     no_train=args.no_train,
                                                     start_name=f"selfsup_{mode.lower()}")
            configs[name] = cfg
            fn, variables = models[name]
            min_depth = getattr(cfg, "student", cfg).min_depth
            if selfsup.collapsed(fn(variables, jnp.asarray(images))["depth"], min_depth):
                args.collapsed.append(name)
                print(f"WARNING: {name}: depth collapsed to the near limit (scale drift); "
                      f"its rows measure a constant-depth model", file=sys.stderr)
    return configs, models


def selfsup_methods(models, args):
    """`[(model, method, fn, protocol)]` for the `--selfsup` models."""
    key = jax.random.PRNGKey(args.seed)
    grad_kw = dict(taps=tuple(args.taps), reduce=args.reduce, reference=args.reference,
                   aggregate=args.aggregate, rng=key)
    rows = []
    for mode in args.selfsup:
        protocol = (dataclasses.replace(SYNTHETIC, name="synthetic_median", scaling="median")
                    if mode == "M" else
                    dataclasses.replace(SYNTHETIC, name="synthetic_stereo", scaling="stereo",
                                        stereo_factor=selfsup.stereo_scale_factor(
                                            selfsup_configs(args, mode)[mode])))
        plain, log, self_ = models[mode], models[f"{mode} Log"], models[f"{mode} Self"]
        drop = models[f"{mode} Drop"]
        rows += [
            (mode, "Post", lambda x, m=plain: U.post(m[0], m[1], x)),
            (mode, "Var", lambda x, m=plain: U.var(m[0], m[1], x, rng=key)),
            (mode, "In-Drop", lambda x, m=plain: U.in_drop(m[0], m[1], x, rng=key)),
            (mode, "Grad", lambda x, m=plain: U.gradient_uncertainty(m[0], m[1], x, **grad_kw)),
            (f"{mode} Log", "Log", lambda x, m=log: U.predictive(m[0], m[1], x)),
            (f"{mode} Log", "Grad", lambda x, m=log: U.gradient_uncertainty(
                m[0], m[1], x, variance_weight=args.variance_weight, **grad_kw)),
            (f"{mode} Self", "Self", lambda x, m=self_: U.predictive(m[0], m[1], x)),
            (f"{mode} Self", "Grad", lambda x, m=self_: U.gradient_uncertainty(
                m[0], m[1], x, variance_weight=args.variance_weight, **grad_kw)),
            (f"{mode} Drop", "Drop", lambda x, m=drop: U.mc_drop(m[0], m[1], x, rng=key)),
        ]
        boot = [models[k][1] for k in models if k.startswith(f"{mode} Boot")]
        if boot:
            rows.append((f"{mode} Boot", "Boot",
                         lambda x, b=boot, m=plain: U.ensemble(m[0], b, x)))
        rows = [r if len(r) == 4 else r + (protocol,) for r in rows]
    return rows


def evaluate(methods, args):
    """Run every method on the synthetic test split: the Evaluator and, for the
    first `--panels` images, the inputs, ground truth and each method's estimate.
    `methods`: `(model, method, fn)` or `(model, method, fn, protocol)` (default: the
    KITTI-style metric protocol `SYNTHETIC`)."""
    source = SyntheticSource("test", seed=args.seed, height=args.height, width=args.width,
                             length=args.test_images, keys=("image", "depth"))
    ev = Evaluator(SYNTHETIC)
    panels = {}
    for start in range(0, args.test_images, args.eval_batch):
        batch = source.get_batch(np.arange(start, min(start + args.eval_batch, len(source))))
        images, gt = jnp.asarray(batch["image"]), jnp.asarray(batch["depth"])
        if start == 0:
            panels = {"image": batch["image"], "gt": batch["depth"][..., 0], "estimates": {}}
        for model, method, fn, *protocol in methods:
            if start == 0:
                jax.block_until_ready(fn(images))  # compile outside the timing
            t0 = time.perf_counter()
            est = jax.block_until_ready(fn(images))
            ev.time(model, method, time.perf_counter() - t0, images.shape[0])
            ev.add(model, method, est, gt, protocol=protocol[0] if protocol else None)
            if start == 0:
                panels["estimates"][(model, method)] = jax.device_get(est)
        print(f"evaluated {min(start + args.eval_batch, args.test_images)}/{args.test_images} "
              "test images", flush=True)
    return ev, panels


def save_panels(out, panels, n):
    """One PNG per test image: input, ground truth, Reg depth, its error, and every
    method's uncertainty (hot: bright = uncertain)."""
    images, gt = panels["image"], panels["gt"]
    reg = panels["estimates"][("Reg", "Post")]
    for i in range(min(n, images.shape[0])):
        valid = gt[i] > 0
        depth = np.asarray(reg.depth[i, ..., 0])
        error = np.where(valid, np.abs(depth - gt[i]) / np.where(valid, gt[i], 1), np.nan)
        tiles = [images[i], viz.colorize(1.0 / np.where(valid, gt[i], np.nan)),
                 viz.colorize(1.0 / depth), viz.colorize(error, cmap="hot", mask=valid)]
        titles = ["input", "ground truth (1/depth)", "Reg: Post depth (1/depth)", "abs rel error"]
        for (model, method), est in panels["estimates"].items():
            tiles.append(viz.colorize(np.asarray(est.uncertainty[i, ..., 0]), cmap="hot"))
            titles.append(f"{model}: {method}")
        viz.save_panel(out / f"panel_{i}.png", tiles, titles, ncols=4)


def train_models(args):
    """Train or reuse every model: `(configs, {name: (apply_fn, variables)}, snapshots)`."""
    configs = model_configs(args)
    models, snaps = {}, []
    for name, cfg in configs.items():
        keep = max(args.snap, 1) if name == "Reg" else 1
        variables, ckpt = train_or_load(name, cfg, args, keep)
        models[name] = (cfg.model().apply, variables)
        if name == "Reg" and args.snap:
            snaps = snapshot_variables(ckpt, cfg, args.snap)
        ckpt.close()
    return configs, models, snaps


def main(argv=None):
    args = parse_args(argv)
    if args.kitti_root:
        return kitti.run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    configs, models, snaps = train_models(args)
    ss_configs, ss_models = train_selfsup(args)
    configs.update(ss_configs)
    t_train = time.perf_counter() - t_start
    methods = build_methods(models, args, snaps) + selfsup_methods(ss_models, args)
    ev, panels = evaluate(methods, args)
    rows = ev.rows()
    title = (f"Uncertainty on procedural street scenes ({args.height}×{args.width}, "
             f"{args.test_images} test images, DepthNet ResNet-{args.num_layers} "
             f"width {args.model_width}, {args.steps} steps/model"
             + (f"; M: {selfsup.steps_for('M', args.steps)}" if "M" in args.selfsup else "")
             + ")")
    table = format_table(rows, title)
    if args.collapsed:
        table += ("\ncollapsed to the near limit (constant depth; their rows are not "
                  "meaningful): " + ", ".join(args.collapsed))
    print(table)
    (out / "table.txt").write_text(table + "\n")
    config = {k: v for k, v in vars(args).items()}
    config.update(dataset="synthetic", protocol=dataclasses.asdict(SYNTHETIC),
                  models={k: c.to_dict() for k, c in configs.items()},
                  device=jax.devices()[0].device_kind, train_seconds=t_train)
    with open(out / "results.json", "w") as f:
        json.dump({"config": config, "rows": rows}, f, indent=2)
    curves = ev.curves()
    for metric, label in (("abs_rel", "abs_rel"), ("rmse", "rmse"), ("a1", "a1")):
        viz.plot_sparsification(out / f"sparsification_{label}.png",
                                {k: v[metric] for k, v in curves.items()}, metric)
    save_panels(out, panels, args.panels)
    print(f"wrote {out / 'results.json'} and PNGs; total {time.perf_counter() - t_start:.0f} s "
          f"(training/loading {t_train:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
