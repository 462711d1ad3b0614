"""Does self-supervised Monodepth2 training (M, S, MS) from random weights beat a
constant-depth baseline on the procedural street scenes after a few minutes on a CPU?

    python experiments/selfsup_baseline.py                 # M, S, MS at 64×192 (see --help)
    python experiments/selfsup_baseline.py --modes M --steps 300

Trains (or reuses from `--checkpoints`) one `jaxdepth.train.selfsup` model per mode and
evaluates it on the test split (gt < 80 m, per image then averaged):
- M with per-image median scaling (monocular models have no scale);
- S and MS with the known baseline: depth × `stereo_scale_factor` (0.54 m / 0.1 = 5.4,
  Monodepth2's convention, see `selfsup`), no median scaling; MS also with median scaling;
- two constant-depth baselines: `const (median scaling)` — any constant after per-image
  median scaling, i.e. each image's own gt median (uses the gt, so it is a strong
  baseline) — and `const (train median)` — the median gt depth of 256 training images, in
  metres, no scaling (the fair reference for metric S/MS models).
Prints a table and writes `results.json` (rows `{"model", "scaling", "depth": {...}}`).
Models are stored as `selfsup_<mode>-<config hash>`; `experiments/sub_depth.py` reuses
the MS (or, with `--teacher-mode M`, the M) run as its teacher when the configs agree.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import sub_depth  # noqa: E402  (configures the CPU runtime first)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdepth.data.synthetic import SyntheticSource  # noqa: E402
from jaxdepth.evaluation import SYNTHETIC  # noqa: E402
from jaxdepth.train import selfsup  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Self-supervised M/S/MS vs constant depth")
    p.add_argument("--out", default="runs/selfsup_baseline")
    p.add_argument("--checkpoints", default="checkpoints")
    p.add_argument("--modes", nargs="+", default=["M", "S", "MS"], choices=selfsup.MODES)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--model-width", type=float, default=None)
    p.add_argument("--num-layers", type=int, default=18)
    p.add_argument("--steps", type=int, default=None,
                   help="steps of the S / MS runs (M: selfsup.M_STEPS_FACTOR × as many)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--smoothness", type=float, default=1e-3)
    p.add_argument("--no-automask", action="store_true")
    p.add_argument("--stereo-baseline", type=float, default=0.1,
                   help="|t_x| used for S/MS (0 = the scene's metric 0.54 m)")
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--eval-batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true")
    args = p.parse_args(argv)
    quick = dict(steps=6, test_images=8, lr=1e-3, height=32, width=96, model_width=0.125)
    full = dict(steps=600, test_images=64, lr=1e-3, height=64, width=192, model_width=0.25)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.panels = 0
    return args


def mode_config(args, mode) -> selfsup.SelfSupConfig:
    cfg = sub_depth.teacher_config(args)
    return dataclasses.replace(cfg, mode=mode, steps=selfsup.steps_for(mode, args.steps),
                               smoothness=args.smoothness,
                               automask=not args.no_automask,
                               stereo_baseline=args.stereo_baseline or None)


def constant_model(depth: float):
    """An `apply_fn`-like predictor of a constant depth."""

    def apply(variables, images):
        d = jnp.full(images.shape[:3] + (1,), depth, jnp.float32)
        return {"depth": d, "disp": 1.0 / d}

    return apply


def train_median(args, n=256) -> float:
    src = SyntheticSource("train", seed=args.seed, height=args.height, width=args.width,
                          length=n, keys=("depth",))
    d = np.concatenate([np.asarray(src.get_batch(np.arange(i, min(i + 32, n)))["depth"]).ravel()
                        for i in range(0, n, 32)])
    return float(np.median(d[(d > 0) & (d < 80)]))


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    models, protocols, scaling, seconds = {}, {}, {}, {}
    configs = {}
    for mode in args.modes:
        cfg = mode_config(args, mode)
        configs[mode] = cfg
        t = time.perf_counter()
        run = "selfsup_m" if mode == "M" else f"selfsup_{mode.lower()}"
        fn, variables = selfsup.train_or_load(run, cfg, args.checkpoints, no_train=args.no_train)
        seconds[mode] = time.perf_counter() - t
        factor = selfsup.stereo_scale_factor(cfg)
        if "S" in mode:
            name = f"{mode} (×{factor:g}, known baseline)"
            models[name] = (fn, variables)
            protocols[name] = dataclasses.replace(SYNTHETIC, name=f"stereo_{mode}",
                                                  scaling="stereo", stereo_factor=factor)
            scaling[name] = f"stereo ×{factor:g}"
        if mode != "S":
            name = f"{mode} (median scaling)"
            models[name] = (fn, variables)
            protocols[name] = sub_depth.MEDIAN
            scaling[name] = "median"
    med = train_median(args)
    models["const (median scaling)"] = (constant_model(1.0), {})
    protocols["const (median scaling)"] = sub_depth.MEDIAN
    scaling["const (median scaling)"] = "median"
    name = f"const (train median {med:.1f} m)"
    models[name] = (constant_model(med), {})
    protocols[name] = SYNTHETIC
    scaling[name] = "none"
    rows, _, _ = sub_depth.evaluate(models, args, protocols)
    for r in rows:
        r["scaling"] = scaling[r["model"]]
    title = (f"Self-supervised Monodepth2 from scratch vs constant depth ({args.height}×"
             f"{args.width}, ResNet-{args.num_layers} width {args.model_width}, {args.steps} "
             f"steps (M {selfsup.steps_for('M', args.steps)}), lr {args.lr}, batch "
             f"{args.batch_size}, {args.test_images} test images)")
    text = sub_depth.format_depth_table(rows, title)
    text += "\n\ntraining wall time: " + ", ".join(f"{m} {s:.0f} s" for m, s in seconds.items())
    print(text)
    (out / "table.txt").write_text(text + "\n")
    config = dict(vars(args))
    config.update(dataset="synthetic", models={m: c.to_dict() for m, c in configs.items()},
                  train_seconds=seconds, device=jax.devices()[0].device_kind,
                  train_median_depth=med)
    with open(out / "results.json", "w") as f:
        json.dump({"config": config, "rows": rows}, f, indent=2)
    print(f"wrote {out / 'results.json'}; total {time.perf_counter() - t0:.0f} s")
    return rows


if __name__ == "__main__":
    main()
