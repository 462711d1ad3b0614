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

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdepth.data.synthetic import SyntheticSource  # noqa: E402
from jaxdepth.evaluation import (DEPTH_KEYS, SYNTHETIC, Evaluator, Row, evaluate,  # noqa: E402
                                 format_depth_table)
from jaxdepth.train import recipes, selfsup  # noqa: E402
from jaxdepth.train.config import RunConfig  # noqa: E402
from jaxdepth.uncertainty.maps import Estimate  # noqa: E402

MEDIAN = dataclasses.replace(SYNTHETIC, name="synthetic_median", scaling="median")


@dataclasses.dataclass(frozen=True)
class Config:
    """The experiment: which modes, their size and training, and the evaluation."""
    modes: tuple = ("M", "S", "MS")
    height: int = 64
    width: int = 192
    model_width: float = 0.25
    num_layers: int = 18
    steps: int = 600           # S / MS runs; M: selfsup.M_STEPS_FACTOR × as many
    batch_size: int = 8
    lr: float = 1e-3
    smoothness: float = 1e-3
    automask: bool = True
    stereo_baseline: float | None = 0.1
    test_images: int = 64
    eval_batch: int = 8
    seed: int = 0


QUICK = Config(steps=6, test_images=8, height=32, width=96, model_width=0.125)


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
    return p.parse_args(argv)


def config_of(args) -> Config:
    base = QUICK if args.quick else Config()
    names = {f.name for f in dataclasses.fields(Config)}
    changes = {k: v for k, v in vars(args).items() if k in names and v is not None}
    changes.update(modes=tuple(args.modes), automask=not args.no_automask,
                   stereo_baseline=args.stereo_baseline or None)
    return dataclasses.replace(base, **changes)


def mode_config(cfg: Config, mode: str) -> selfsup.SelfSupConfig:
    """The mode's run: the same settings as `experiments/sub_depth.py`'s teacher (and
    `kitti_grad_unc.py --selfsup`), so equal configs share one run."""
    return selfsup.SelfSupConfig(
        mode=mode, num_layers=cfg.num_layers, width=cfg.model_width,
        smoothness=cfg.smoothness, automask=cfg.automask,
        stereo_baseline=cfg.stereo_baseline,
        run=RunConfig(height=cfg.height, image_width=cfg.width, batch_size=cfg.batch_size,
                      steps=selfsup.steps_for(mode, cfg.steps), lr=cfg.lr, seed=cfg.seed,
                      data_seed=cfg.seed))


def constant_model(depth: float):
    """A row function predicting a constant depth (no uncertainty)."""

    def fn(images, key):
        d = jnp.full(images.shape[:3] + (1,), depth, jnp.float32)
        return Estimate(d, jnp.zeros_like(d))

    return fn


def depth_model(apply_fn, variables):
    """A row function of a trained model's depth (no uncertainty)."""
    one = jax.jit(lambda v, x: apply_fn(v, x)["depth"])
    return lambda x, key: Estimate(one(variables, x), jnp.zeros(x.shape[:3] + (1,)))


def train_median(cfg: Config, n=256) -> float:
    src = SyntheticSource("train", seed=cfg.seed, height=cfg.height, width=cfg.width,
                          length=n, keys=("depth",))
    d = np.concatenate([np.asarray(src.get_batch(np.arange(i, min(i + 32, n)))["depth"]).ravel()
                        for i in range(0, n, 32)])
    return float(np.median(d[(d > 0) & (d < 80)]))


def evaluate_depth(rows, cfg: Config) -> list[dict]:
    """Depth metrics of every row on the test split, each under its row's protocol."""
    source = SyntheticSource("test", seed=cfg.seed, height=cfg.height, width=cfg.width,
                             length=cfg.test_images, keys=("image", "depth"))
    ev = {}

    def add(row, est, samples, idx):
        e = ev.setdefault(row.protocol.name, Evaluator(row.protocol))
        e.add(row.model, "", est, np.stack([s["depth"] for s in samples]))

    evaluate(rows, source, batch_size=cfg.eval_batch, add=add, seed=cfg.seed)
    by = {r["model"]: r for e in ev.values() for r in e.rows()}
    return [{"model": r.model, "depth": {k: by[r.model]["depth"][k] for k in DEPTH_KEYS}}
            for r in rows]


def main(argv=None):
    args = parse_args(argv)
    cfg = config_of(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows, scaling, seconds, configs = [], {}, {}, {}
    for mode in cfg.modes:
        c = configs[mode] = mode_config(cfg, mode)
        t = time.perf_counter()
        fn = depth_model(*recipes.train_or_load(c, args.checkpoints, train=not args.no_train))
        seconds[mode] = time.perf_counter() - t
        factor = selfsup.stereo_scale_factor(c)
        if "S" in mode:
            name = f"{mode} (×{factor:g}, known baseline)"
            rows.append(Row(name, "", fn, dataclasses.replace(
                SYNTHETIC, name=f"stereo_{mode}", scaling="stereo", stereo_factor=factor)))
            scaling[name] = f"stereo ×{factor:g}"
        if mode != "S":
            name = f"{mode} (median scaling)"
            rows.append(Row(name, "", fn, MEDIAN))
            scaling[name] = "median"
    med = train_median(cfg)
    rows.append(Row("const (median scaling)", "", constant_model(1.0), MEDIAN))
    scaling["const (median scaling)"] = "median"
    name = f"const (train median {med:.1f} m)"
    rows.append(Row(name, "", constant_model(med), SYNTHETIC))
    scaling[name] = "none"
    results = evaluate_depth(rows, cfg)
    for r in results:
        r["scaling"] = scaling[r["model"]]
    title = (f"Self-supervised Monodepth2 from scratch vs constant depth ({cfg.height}×"
             f"{cfg.width}, ResNet-{cfg.num_layers} width {cfg.model_width}, {cfg.steps} "
             f"steps (M {selfsup.steps_for('M', cfg.steps)}), lr {cfg.lr}, batch "
             f"{cfg.batch_size}, {cfg.test_images} test images)")
    text = format_depth_table(results, title)
    text += "\n\ntraining wall time: " + ", ".join(f"{m} {s:.0f} s" for m, s in seconds.items())
    print(text)
    (out / "table.txt").write_text(text + "\n")
    config = {**dataclasses.asdict(cfg), "quick": args.quick, "out": args.out,
              "checkpoints": args.checkpoints, "dataset": "synthetic",
              "models": {m: c.to_dict() for m, c in configs.items()},
              "train_seconds": seconds, "device": jax.devices()[0].device_kind,
              "train_median_depth": med}
    with open(out / "results.json", "w") as f:
        json.dump({"config": config, "rows": results}, f, indent=2)
    print(f"wrote {out / 'results.json'}; total {time.perf_counter() - t0:.0f} s")
    return results


if __name__ == "__main__":
    main()
