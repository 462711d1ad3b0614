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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdepth import viz  # noqa: E402
from jaxdepth.data.synthetic import SyntheticSource  # noqa: E402
from jaxdepth.evaluation import SYNTHETIC, Evaluator  # noqa: E402
from jaxdepth.losses.distill import TABLE1_WEIGHTS  # noqa: E402
from jaxdepth.train import distill, selfsup  # noqa: E402
from jaxdepth.uncertainty import Estimate  # noqa: E402

DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
DEPTH_LABELS = ("Abs Rel", "Sq Rel", "RMSE", "RMSE log", "δ1", "δ2", "δ3")
UNC_KEYS = (("abs_rel", "Abs Rel"), ("rmse", "RMSE"), ("a1", "δ1"))
MEDIAN = dataclasses.replace(SYNTHETIC, name="synthetic_median", scaling="median")


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
    args = p.parse_args(argv)
    quick = dict(steps=6, test_images=8, lr=1e-3, height=32, width=96, model_width=0.125,
                 eval_batch=8, panels=1)
    full = dict(steps=600, test_images=64, lr=1e-3, height=64, width=192, model_width=0.25,
                eval_batch=8, panels=3)
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def teacher_config(args, seed=None) -> selfsup.SelfSupConfig:
    seed = args.seed if seed is None else seed
    mode = getattr(args, "teacher_mode", "M")
    return selfsup.SelfSupConfig(
        mode=mode, num_layers=args.num_layers, width=args.model_width, height=args.height,
        image_width=args.width, batch_size=args.batch_size,
        steps=selfsup.steps_for(mode, args.steps), lr=args.lr,
        seed=seed, data_seed=args.seed)


def model_configs(args) -> dict:
    """`{row name: config}` in training order (teacher first)."""
    teacher = teacher_config(args)
    configs = {"teacher": teacher}
    for i in range(1, args.teacher_seeds):
        configs[f"teacher_seed{args.seed + i}"] = teacher_config(args, args.seed + i)
    configs["student"] = distill.DistillConfig(
        method="sub_depth", teacher=teacher, form=args.form, w_pho=args.w_pho,
        w_reg=args.w_reg, teacher_bn=args.teacher_bn)
    configs["log"] = selfsup.variant_config(teacher, "log")
    configs["self"] = distill.DistillConfig(method="self", teacher=teacher,
                                            teacher_bn=args.teacher_bn)
    manual = []
    if args.ablation:
        manual += [("regression", (0.0, 1.0)), ("1:1", (0.5, 0.5))]
    if args.grid:
        manual += [(f"w{wp:g}:{wr:g}", (wp, wr)) for wp, wr in TABLE1_WEIGHTS]
    for name, (wp, wr) in manual:
        configs[name] = distill.DistillConfig(method="sub_depth", teacher=teacher, form="manual",
                                              w_pho=wp, w_reg=wr, teacher_bn=args.teacher_bn)
    return configs


#: Rows whose runs are the same models as `kitti_grad_unc.py --selfsup`'s (one checkpoint).
SHARED_RUNS = {"teacher": "", "log": "_log", "self": "_self"}


def _run_name(name: str, mode: str) -> str:
    if name in SHARED_RUNS:
        return f"selfsup_{mode.lower()}{SHARED_RUNS[name]}"
    return "sd_" + "".join(c if c.isalnum() else "_" for c in name)


def train_models(args) -> tuple[dict, dict]:
    """Train or reuse every model: `(configs, {name: (apply_fn, variables)})`."""
    configs = model_configs(args)
    models = {}
    teacher_vars = None
    for name, cfg in configs.items():
        run = _run_name(name, configs["teacher"].mode)
        if isinstance(cfg, selfsup.SelfSupConfig):
            models[name] = selfsup.train_or_load(run, cfg, args.checkpoints,
                                                 no_train=args.no_train,
                                                 start_name=_run_name("teacher", cfg.mode))
            if name == "teacher":
                teacher_vars = models[name][1]
        else:
            models[name] = distill.train_or_load(run, cfg, args.checkpoints, teacher_vars,
                                                 no_train=args.no_train)
    return configs, models


def has_sigma(apply_fn) -> bool:
    module = getattr(apply_fn, "__self__", None)
    return bool(getattr(module, "log_sigma", False))


def predictor(apply_fn, variables, to_depth: bool = False):
    """A jitted `images -> Estimate(depth, σ)` (σ = exp(log_sigma), zeros without σ).

    `to_depth`: propagate a σ of the sigmoid disparity s to depth to first order,
    σ_depth = |∂depth/∂s|·σ = (1/min − 1/max)·depth²·σ (Self's and SUB-Depth's σ live in
    disparity space, where far pixels get small σ although their depth errors are large).
    """
    sigma = has_sigma(apply_fn)
    module = getattr(apply_fn, "__self__", None)

    @jax.jit
    def fn(variables, images):
        out = apply_fn(variables, images)
        unc = jnp.exp(out["log_sigma"]) if sigma else jnp.zeros_like(out["depth"])
        if to_depth:
            unc = unc * (1.0 / module.min_depth - 1.0 / module.max_depth) * out["depth"] ** 2
        return Estimate(out["depth"], unc)

    return lambda images: fn(variables, images)


#: rows that also get their σ propagated from disparity to depth (`predictor(to_depth=True)`)
DISPARITY_SIGMA = ("student", "self")
TO_DEPTH = " σ→depth"


def evaluate(models, args, protocols=None, keep_panels=0):
    """Evaluate `{name: (apply_fn, variables)}` on the test split. `protocols`:
    `{name: Protocol}` (default: median scaling). Returns `(rows, evaluator, panels)`."""
    source = SyntheticSource("test", seed=args.seed, height=args.height, width=args.width,
                             length=args.test_images, keys=("image", "depth"))
    ev = {}
    fns = {name: predictor(*m) for name, m in models.items()}
    fns.update({name + TO_DEPTH: predictor(*models[name], to_depth=True)
                for name in DISPARITY_SIGMA if name in models})
    panels = {}
    for start in range(0, args.test_images, args.eval_batch):
        batch = source.get_batch(np.arange(start, min(start + args.eval_batch, len(source))))
        images, gt = jnp.asarray(batch["image"]), jnp.asarray(batch["depth"])
        for name, fn in fns.items():
            protocol = (protocols or {}).get(name, MEDIAN)
            ev.setdefault(protocol.name, Evaluator(protocol))
            est = fn(images)
            ev[protocol.name].add(name, "", est, gt)
            if start == 0 and keep_panels:
                panels[name] = jax.device_get(est)
        if start == 0 and keep_panels:
            panels["image"], panels["gt"] = np.asarray(images), np.asarray(gt)
    rows = []
    by_name = {}
    for e in ev.values():
        for r in e.rows():
            by_name[r["model"]] = r
    names = [(n, fn) for n, (fn, _) in models.items()]
    names += [(n + TO_DEPTH, models[n][0]) for n in DISPARITY_SIGMA if n in models]
    for name, apply_fn in names:
        r = by_name[name]
        row = {"model": name, "depth": {k: r["depth"][k] for k in DEPTH_KEYS}}
        if has_sigma(apply_fn):
            row.update({k: dict(r[k]) for k, _ in UNC_KEYS})
        rows.append(row)
    return rows, ev, panels


def format_depth_table(rows, title, improvement=None) -> str:
    head = f"{'Method':<28}" + "".join(f"{lab:>10}" for lab in DEPTH_LABELS)
    lines = [title, head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<28}" + "".join(f"{r['depth'][k]:>10.4f}" for k in DEPTH_KEYS))
    if improvement is not None:
        a, b = improvement  # baseline row, improved row; > 0 means b is better
        diff = [(b["depth"][k] - a["depth"][k]) if k in ("a1", "a2", "a3")
                else (a["depth"][k] - b["depth"][k]) for k in DEPTH_KEYS]
        lines.append(f"{'Improvement':<28}" + "".join(f"{d:>10.4f}" for d in diff))
    return "\n".join(lines)


def format_uncertainty_table(rows, title) -> str:
    head1 = f"{'Method':<28}" + "".join(f"{lab:^20}" for _, lab in UNC_KEYS)
    head2 = f"{'':<28}" + "".join(f"{'AUSE↓':>10}{'AURG↑':>10}" for _ in UNC_KEYS)
    lines = [title, head1, head2, "-" * len(head2)]
    for r in rows:
        lines.append(f"{r['model']:<28}" + "".join(
            f"{r[k]['ause']:>10.4f}{r[k]['aurg']:>10.4f}" for k, _ in UNC_KEYS))
    return "\n".join(lines)


def tables(rows, args) -> str:
    by = {r["model"]: r for r in rows}
    mode = getattr(args, "teacher_mode", "M")
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
    ablation.append(named(by["student"], f"Ours ({args.form} weighted)"))
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    configs, models = train_models(args)
    t_train = time.perf_counter() - t0
    rows, ev, panels = evaluate(models, args, keep_panels=args.panels)
    text = tables(rows, args)
    header = (f"SUB-Depth on procedural street scenes ({args.height}×{args.width}, "
              f"{args.test_images} test images, ResNet-{args.num_layers} width "
              f"{args.model_width}, {selfsup.steps_for(args.teacher_mode, args.steps)} "
              f"steps per model, lr {args.lr}, batch "
              f"{args.batch_size})")
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
    config = dict(vars(args))
    config.update(dataset="synthetic", protocol=dataclasses.asdict(MEDIAN),
                  models={k: c.to_dict() for k, c in configs.items()},
                  device=jax.devices()[0].device_kind, train_seconds=t_train)
    with open(out / "results.json", "w") as f:
        json.dump({"config": config, "rows": rows}, f, indent=2)
    save_pngs(out, ev, panels, models, args.panels)
    print(f"wrote {out / 'results.json'}, tables.txt and PNGs; total "
          f"{time.perf_counter() - t0:.0f} s (training/loading {t_train:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
