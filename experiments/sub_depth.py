"""SUB-Depth (Zhou et al., BMVC 2021) on jaxdepth's procedural street scenes: does the
self-distilled student beat its self-supervised teacher, and how do its uncertainties
compare with Poggi et al.'s Log and Self?

    python experiments/sub_depth.py            # default run (see --help; ≈45 min on 2 cores)
    python experiments/sub_depth.py --quick    # smoke run (< 5 min on 2 CPU cores)

Trains (or reuses from `--checkpoints`, keyed by config) on the train split:
- `teacher`: Monodepth2 trained with `--teacher-mode` (default M as in the paper: frames
  −1, 0, +1 with PoseNet; S and MS add the stereo view), `jaxdepth.train.selfsup`. M runs
  train `selfsup.M_STEPS_FACTOR` = 2.5 × `--steps` (1500 by default: from random weights
  PoseNet needs ≈ 900 steps to find the motion before depth follows; see
  `python experiments/selfsup_baseline.py`: M abs_rel 0.239 vs 0.467 for a constant
  depth, MS 0.157 after 600 steps);
- `student`: SUB-Depth from the frozen teacher (`--form pixel`: per-pixel σ_pho from
  the photometric UncertNet and σ_reg from the student's sigmoid σ head; `scalar`:
  Kendall's one log σ per task; `manual`: `--w-pho`/`--w-reg`);
- `log`: the teacher's recipe with a log σ head and the Laplace photometric likelihood,
  fine-tuned from an M teacher (`selfsup.variant_config`);
- `self`: Poggi's self-teaching student of the same teacher;
- with `--ablation`, Table 5's `regression` (ω = 0:1) and `1:1` (0.5:0.5) students; with
  `--grid`, every (ω_pho, ω_reg) pair of Table 1; with `--teacher-seeds N`, N−1 more
  teachers with other seeds (seed-to-seed spread of the baseline).
Every model uses the same seed, data order and step count unless stated. It evaluates on
the test split (KITTI-style protocol: gt < 80 m, per-image median scaling, as for every
monocular model), prints Tables 2, 3 and 5 of the paper, and writes `results.json`
(`{"config", "rows": [{"model", "depth": {...}, "abs_rel"|"rmse"|"a1": {"ause", "aurg"}}]}`,
uncertainty entries only for models with σ), `tables.txt` and PNGs into `--out`.
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
import numpy as np  # noqa: E402

from jaxdepth import viz  # noqa: E402
from jaxdepth.data.synthetic import SyntheticSource  # noqa: E402
from jaxdepth.evaluation import (DEPTH_KEYS, SYNTHETIC, UNCERTAINTY_COLUMNS,  # noqa: E402
                                 Evaluator, Row, evaluate, format_depth_table,
                                 format_uncertainty_table)
from jaxdepth.losses.distill import TABLE1_WEIGHTS  # noqa: E402
from jaxdepth.train import distill, recipes, selfsup  # noqa: E402
from jaxdepth.train.config import RunConfig  # noqa: E402
from jaxdepth.uncertainty.maps import Estimate  # noqa: E402
from jaxdepth.uncertainty.methods import MethodOptions, ModelInfo, method  # noqa: E402

UNC_KEYS = UNCERTAINTY_COLUMNS
MEDIAN = dataclasses.replace(SYNTHETIC, name="synthetic_median", scaling="median")


@dataclasses.dataclass(frozen=True)
class Config:
    """The experiment: sizes, training, the teacher's mode and SUB-Depth's weighting."""
    height: int = 64
    width: int = 192
    model_width: float = 0.25
    num_layers: int = 18
    steps: int = 600           # per model; M-mode runs: selfsup.M_STEPS_FACTOR × as many
    batch_size: int = 8
    lr: float = 1e-3
    teacher_mode: str = "M"
    form: str = "pixel"
    w_pho: float = 0.5
    w_reg: float = 0.5
    teacher_bn: str = "inference"
    ablation: bool = False
    grid: bool = False
    teacher_seeds: int = 1
    test_images: int = 64
    eval_batch: int = 8
    panels: int = 3
    seed: int = 0


QUICK = Config(steps=6, test_images=8, height=32, width=96, model_width=0.125, eval_batch=8,
               panels=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="SUB-Depth self-distillation vs its teacher; "
                                            "Log vs Self vs SUB-Depth uncertainty")
    p.add_argument("--out", default="runs/sub_depth", help="results directory")
    p.add_argument("--checkpoints", default="checkpoints", help="where trained models are kept")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (< 5 min)")
    p.add_argument("--height", type=int, default=None, help="input height (default 64)")
    p.add_argument("--width", type=int, default=None, help="input width (default 192)")
    p.add_argument("--model-width", type=float, default=None,
                   help="channel multiplier of every network (default 0.25)")
    p.add_argument("--num-layers", type=int, default=18, choices=(18, 34, 50))
    p.add_argument("--steps", type=int, default=None,
                   help="training steps of every model (M-mode runs: "
                        "selfsup.M_STEPS_FACTOR × as many)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (×0.1 at 75 %%)")
    p.add_argument("--teacher-mode", default="M", choices=selfsup.MODES,
                   help="self-supervision of the teacher (and of the SUB-Depth student and "
                        "Log): M as in the paper")
    p.add_argument("--form", default="pixel", choices=("pixel", "scalar", "manual"),
                   help="SUB-Depth's task weighting for the `student` row")
    p.add_argument("--w-pho", type=float, default=0.5, help="ω_pho of --form manual")
    p.add_argument("--w-reg", type=float, default=0.5, help="ω_reg of --form manual")
    p.add_argument("--teacher-bn", default="inference", choices=("inference", "batch"),
                   help="teacher BatchNorm: running averages, or batch statistics as the "
                        "released SUB-Depth trainer (reference quirk)")
    p.add_argument("--ablation", action="store_true",
                   help="also train Table 5's ℓ_regression (0:1) and 1:1 students")
    p.add_argument("--grid", action="store_true",
                   help="also train a student for every (ω_pho, ω_reg) of Table 1")
    p.add_argument("--teacher-seeds", type=int, default=1,
                   help="train this many teachers (seeds seed, seed+1, ...) to show the "
                        "seed-to-seed spread; the first one is the teacher")
    p.add_argument("--test-images", type=int, default=None)
    p.add_argument("--eval-batch", type=int, default=None)
    p.add_argument("--panels", type=int, default=None, help="test images drawn as PNG panels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true", help="fail instead of training")
    return p.parse_args(argv)


def config_of(args) -> Config:
    """`QUICK` or `Config()` with the given flags."""
    base = QUICK if args.quick else Config()
    names = {f.name for f in dataclasses.fields(Config)}
    changes = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return dataclasses.replace(base, **changes)


def teacher_config(cfg: Config, seed=None) -> selfsup.SelfSupConfig:
    seed = cfg.seed if seed is None else seed
    return selfsup.SelfSupConfig(
        mode=cfg.teacher_mode, num_layers=cfg.num_layers, width=cfg.model_width,
        run=RunConfig(height=cfg.height, image_width=cfg.width, batch_size=cfg.batch_size,
                      steps=selfsup.steps_for(cfg.teacher_mode, cfg.steps), lr=cfg.lr,
                      seed=seed, data_seed=cfg.seed))


def model_configs(cfg: Config) -> dict:
    """`{row name: config}` in training order (teacher first). The runs are found by
    their configs: the teacher, Log and Self are the runs `kitti_grad_unc.py --selfsup`
    trains for the same settings."""
    teacher = teacher_config(cfg)
    configs = {"teacher": teacher}
    for i in range(1, cfg.teacher_seeds):
        configs[f"teacher_seed{cfg.seed + i}"] = teacher_config(cfg, cfg.seed + i)
    configs["student"] = distill.DistillConfig(
        method="sub_depth", teacher=teacher, form=cfg.form, w_pho=cfg.w_pho,
        w_reg=cfg.w_reg, teacher_bn=cfg.teacher_bn)
    configs["log"] = selfsup.variant_config(teacher, "log")
    configs["self"] = distill.DistillConfig(method="self", teacher=teacher,
                                            teacher_bn=cfg.teacher_bn)
    manual = []
    if cfg.ablation:
        manual += [("regression", (0.0, 1.0)), ("1:1", (0.5, 0.5))]
    if cfg.grid:
        manual += [(f"w{wp:g}:{wr:g}", (wp, wr)) for wp, wr in TABLE1_WEIGHTS]
    for name, (wp, wr) in manual:
        configs[name] = distill.DistillConfig(method="sub_depth", teacher=teacher, form="manual",
                                              w_pho=wp, w_reg=wr, teacher_bn=cfg.teacher_bn)
    return configs


def train_models(configs: dict, checkpoints, *, train: bool = True) -> dict:
    """Train or reuse every model: `{name: (apply_fn, variables)}` (the teacher of every
    student is trained first, as its config says)."""
    return {name: recipes.train_or_load(c, checkpoints, train=train)
            for name, c in configs.items()}


def has_sigma(apply_fn) -> bool:
    return bool(getattr(getattr(apply_fn, "__self__", None), "log_sigma", False))


def predictor(apply_fn, variables, to_depth: bool = False):
    """`fn(images, key) -> Estimate(depth, σ)`: the table's `predictive` (σ = exp(log σ);
    `to_depth`: a σ of the sigmoid disparity propagated to depth), zeros without σ."""
    if not has_sigma(apply_fn):
        one = jax.jit(lambda v, x: apply_fn(v, x)["depth"])
        return lambda x, key: Estimate(one(variables, x), np.zeros(x.shape[:3] + (1,)))
    info = ModelInfo.of(apply_fn.__self__, variables)
    return method("predictive", apply_fn, variables, MethodOptions(to_depth=to_depth), info=info)


#: rows that also get their σ propagated from disparity to depth (`predictor(to_depth=True)`)
DISPARITY_SIGMA = ("student", "self")
TO_DEPTH = " σ→depth"


def evaluate_models(models, cfg: Config, protocols=None, keep_panels=0):
    """Evaluate `{name: (apply_fn, variables)}` on the test split. `protocols`:
    `{name: Protocol}` (default: median scaling). Returns `(rows, evaluators, panels)`."""
    source = SyntheticSource("test", seed=cfg.seed, height=cfg.height, width=cfg.width,
                             length=cfg.test_images, keys=("image", "depth"))
    rows = [Row(name, "", predictor(*m), (protocols or {}).get(name, MEDIAN))
            for name, m in models.items()]
    rows += [Row(name + TO_DEPTH, "", predictor(*models[name], to_depth=True), MEDIAN)
             for name in DISPARITY_SIGMA if name in models]
    ev, panels = {}, {}

    def add(row, est, samples, idx):
        e = ev.setdefault(row.protocol.name, Evaluator(row.protocol))
        gt = np.stack([s["depth"] for s in samples])
        e.add(row.model, "", est, gt)
        if idx[0] == 0 and keep_panels:
            panels[row.model] = est
            panels["image"] = np.stack([s["image"] for s in samples])
            panels["gt"] = gt

    evaluate(rows, source, batch_size=cfg.eval_batch, add=add, seed=cfg.seed,
             batch_keys=False)
    by_name = {r["model"]: r for e in ev.values() for r in e.rows()}
    names = [(n, fn) for n, (fn, _) in models.items()]
    names += [(n + TO_DEPTH, models[n][0]) for n in DISPARITY_SIGMA if n in models]
    out = []
    for name, apply_fn in names:
        r = by_name[name]
        row = {"model": name, "depth": {k: r["depth"][k] for k in DEPTH_KEYS}}
        if has_sigma(apply_fn):
            row.update({k: dict(r[k]) for k, _ in UNC_KEYS})
        out.append(row)
    return out, ev, panels


def tables(rows, cfg: Config) -> str:
    by = {r["model"]: r for r in rows}
    mode = cfg.teacher_mode
    label = {"teacher": f"Monodepth2 {mode} (teacher)", "student": "+ SUB-Depth (student)",
             "log": "Poggi-Log", "self": "Poggi-Self", "regression": "ℓ_regression (0:1)",
             "1:1": "Ours (1:1 weighted)"}
    named = lambda r, name=None: {**r, "model": name or label.get(r["model"], r["model"])}
    out = [format_depth_table([named(by["teacher"]), named(by["student"])],
                              "Table 2 — teacher vs SUB-Depth student (median scaling)",
                              improvement=(by["teacher"], by["student"]))]
    unc = [named(by[k], n) for k, n in (("log", "Poggi-Log"), ("self", "Poggi-Self"),
                                        ("student", "SUB-Depth"), ("self" + TO_DEPTH, "Poggi-Self"
                                        + TO_DEPTH), ("student" + TO_DEPTH, "SUB-Depth" + TO_DEPTH))
           if k in by and "abs_rel" in by[k]]
    if unc:
        out.append(format_uncertainty_table(unc, "Table 3 — uncertainty (AUSE / AURG)"))
    ablation = [named(by["teacher"], "ℓ_photometric (teacher)")]
    ablation += [named(by[k]) for k in ("regression", "1:1") if k in by]
    ablation.append(named(by["student"], f"Ours ({cfg.form} weighted)"))
    out.append(format_depth_table(ablation, "Table 5 — ablation"))
    rest = [named(r) for r in rows if r["model"] not in ("teacher", "student", "regression", "1:1")
            and not r["model"].endswith(TO_DEPTH)]
    if rest:
        out.append(format_depth_table(rest, "Other models (depth)"))
    return "\n\n".join(out)


def save_pngs(out, ev, panels, models, n):
    curves = {}
    for e in ev.values():
        curves.update(e.curves())
    sig = [name for name, (fn, _) in models.items() if has_sigma(fn)]
    plotted = sig + [n + TO_DEPTH for n in DISPARITY_SIGMA if n in models]
    for metric in ("abs_rel", "rmse", "a1"):
        c = {k.split(":")[0]: v[metric] for k, v in curves.items() if k.split(":")[0] in plotted}
        if c:
            viz.plot_sparsification(out / f"sparsification_{metric}.png", c, metric)
    if not panels:
        return
    images, gt = panels["image"], panels["gt"][..., 0]
    for i in range(min(n, images.shape[0])):
        valid = gt[i] > 0
        tiles = [images[i], viz.colorize(1.0 / np.where(valid, gt[i], np.nan))]
        titles = ["input", "ground truth (1/depth)"]
        for name in models:
            tiles.append(viz.colorize(1.0 / np.asarray(panels[name].depth[i, ..., 0])))
            titles.append(f"{name} (1/depth)")
        for name in sig:
            tiles.append(viz.colorize(np.asarray(panels[name].uncertainty[i, ..., 0]), cmap="hot"))
            titles.append(f"{name} σ")
        viz.save_panel(out / f"panel_{i}.png", tiles, titles, ncols=4)


def main(argv=None):
    args = parse_args(argv)
    cfg = config_of(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    configs = model_configs(cfg)
    models = train_models(configs, args.checkpoints, train=not args.no_train)
    t_train = time.perf_counter() - t0
    rows, ev, panels = evaluate_models(models, cfg, keep_panels=cfg.panels)
    text = tables(rows, cfg)
    header = (f"SUB-Depth on procedural street scenes ({cfg.height}×{cfg.width}, "
              f"{cfg.test_images} test images, ResNet-{cfg.num_layers} width "
              f"{cfg.model_width}, {selfsup.steps_for(cfg.teacher_mode, cfg.steps)} "
              f"steps per model, lr {cfg.lr}, batch {cfg.batch_size})")
    text = header + "\n\n" + text
    by = {r["model"]: r for r in rows}
    d_t, d_s = by["teacher"]["depth"], by["student"]["depth"]
    verdict = ("student beats teacher" if d_s["abs_rel"] < d_t["abs_rel"] else
               "student does NOT beat teacher")
    text += (f"\n\nClaim check (abs_rel): teacher {d_t['abs_rel']:.4f}, student "
             f"{d_s['abs_rel']:.4f} → {verdict} by {d_t['abs_rel'] - d_s['abs_rel']:+.4f} "
             f"({100 * (d_t['abs_rel'] - d_s['abs_rel']) / d_t['abs_rel']:+.1f} %)")
    seeds = [r["depth"]["abs_rel"] for n, r in by.items() if n.startswith("teacher")]
    if len(seeds) > 1:
        text += (f"\nTeacher seed spread (abs_rel over {len(seeds)} seeds): "
                 f"{min(seeds):.4f} – {max(seeds):.4f}")
    print(text)
    (out / "tables.txt").write_text(text + "\n")
    config = {**dataclasses.asdict(cfg), "quick": args.quick, "out": args.out,
              "checkpoints": args.checkpoints, "dataset": "synthetic",
              "protocol": dataclasses.asdict(MEDIAN),
              "models": {k: c.to_dict() for k, c in configs.items()},
              "device": jax.devices()[0].device_kind, "train_seconds": t_train}
    with open(out / "results.json", "w") as f:
        json.dump({"config": config, "rows": rows}, f, indent=2)
    save_pngs(out, ev, panels, models, cfg.panels)
    print(f"wrote {out / 'results.json'}, tables.txt and PNGs; total "
          f"{time.perf_counter() - t0:.0f} s (training/loading {t_train:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
