"""ADU-Depth (Wu et al., CoRL 2022) on jaxdepth's procedural street scenes (or KITTI):
does distilling a stereo NeWCRFs teacher into a monocular NeWCRFs student beat the same
student trained on the base loss alone, and how good is the UEM's σ?

    python experiments/adu_depth.py            # default run (≈15 min on 2 CPU cores)
    python experiments/adu_depth.py --quick    # smoke run (< 5 min on 2 CPU cores)
    python experiments/adu_depth.py --kitti-root KITTI --encoder large --crf-scale 1 \\
        --height 352 --width 1120 --lr 2e-5 --steps 100000   # the paper's setting (GPU)

Trains (or reuses from `--checkpoints`, keyed by config; `jaxdepth.train.adu`):
- `teacher`: NeWCRFs on the stereo pair (left ‖ right, 6 channels), SILog only;
- `baseline`: the student network (NeWCRFs + UEM) on the SILog loss only
  (`AduLossConfig.baseline()`: the teacher is not used);
- Table 4's rows, each module added to the baseline (`--no-ablation` skips them):
  `+attention` (Eq. 1–3: attention-adapted feature L2, encoder and decoder levels),
  `+uem` (Eq. 8: the uncertainty-weighted soft label L_umr), `+focal` (Eq. 5),
  `w/o focal` (attention + UEM: L_umf + L_umr, the paper's "0.154" configuration);
- `adu`: the full ADU-Depth student (Eq. 9, λ = 0.9 / 0.6 / 0.8).
Every model has the same network size, seed, data order, step count and optimiser
(NeWCRFs' Adam with poly decay). It evaluates on the test split (metric depth, gt < 80 m,
no scaling; KITTI: Eigen benchmark gt, Garg crop), prints Table 4's layout (abs_rel,
sq_rel, RMSE, RMSE log, δ1–δ3) and the AUSE / AURG of the UEM's σ and of post hoc
gradient uncertainty (Grad: crf0 tap, flip reference) on the ADU student, and writes
`results.json` (`{"config", "rows": [{"model", "depth": {...}, "abs_rel"|"rmse"|"a1":
{"ause", "aurg"} (UEM σ, rows that train it), "grad": {...} (the adu row)}]}`),
`tables.txt` and PNGs (image, teacher / student depth, UEM σ, error) into `--out`.
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
from jaxdepth.evaluation import (DEPTH_KEYS, KITTI_EIGEN, SYNTHETIC,  # noqa: E402
                                 UNCERTAINTY_COLUMNS, Evaluator, Row, evaluate,
                                 format_depth_table, format_uncertainty_table)
from jaxdepth.losses.adu import AduLossConfig  # noqa: E402
from jaxdepth.train import adu, recipes  # noqa: E402
from jaxdepth.train.config import RunConfig  # noqa: E402
from jaxdepth.uncertainty import gradient_uncertainty  # noqa: E402
from jaxdepth.uncertainty.maps import Estimate  # noqa: E402

#: Table 4's rows beside teacher / baseline / adu: each module added to the baseline
ABLATIONS = {
    "+attention": AduLossConfig(feature_distill=True, focal_depth=False, soft_label=False,
                                uncertainty=False),
    "+uem": AduLossConfig(feature_distill=False, focal_depth=False, soft_label=True,
                          uncertainty=True),
    "+focal": AduLossConfig(feature_distill=False, focal_depth=True, soft_label=False,
                            uncertainty=False),
    "w/o focal": AduLossConfig(focal_depth=False),
}
LABELS = {"teacher": "Teacher (stereo)", "baseline": "Baseline (L_b only)",
          "+attention": "+ attention (L_e, L_d)", "+uem": "+ UEM (L_umr)",
          "+focal": "+ focal (L_focal)", "w/o focal": "attention + UEM (w/o focal)",
          "adu": "Full ADU-Depth"}
ORDER = ("teacher", "baseline", "+attention", "+uem", "+focal", "w/o focal", "adu")


@dataclasses.dataclass(frozen=True)
class Config:
    """The experiment: network size, training, evaluation."""
    height: int = 64
    width: int = 192
    encoder: str = "micro"
    crf_scale: float = 1 / 16
    steps: int = 300
    batch_size: int = 4          # ADU-Depth's batch (§4.1)
    lr: float = 3e-4             # from random weights (the paper fine-tunes ImageNet Swin at 2e-5)
    ablation: bool = True
    test_images: int = 64
    eval_batch: int = 8
    panels: int = 2
    seed: int = 0
    kitti_root: str | None = None
    kitti_split: str | None = None   # training list (default eigen_full)
    kitti_limit: int | None = None   # first N training frames
    test_limit: int | None = None    # KITTI: first N Eigen benchmark images


QUICK = Config(height=32, width=96, steps=8, batch_size=2, ablation=False, test_images=8,
               eval_batch=4, panels=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="ADU-Depth: stereo-teacher distillation into a "
                                            "monocular NeWCRFs student (Table 4) + UEM / Grad σ")
    p.add_argument("--out", default="runs/adu_depth", help="results directory")
    p.add_argument("--checkpoints", default="checkpoints", help="where trained models are kept")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (< 5 min)")
    p.add_argument("--height", type=int, help="input height (default 64, multiple of 32)")
    p.add_argument("--width", type=int, help="input width (default 192, multiple of 32)")
    p.add_argument("--encoder", choices=adu.ENCODERS, help="Swin size (default micro)")
    p.add_argument("--crf-scale", type=float, help="CRF / PSP width multiplier (1/16)")
    p.add_argument("--steps", type=int, help="training steps of every model (300)")
    p.add_argument("--batch-size", type=int, help="batch size (4)")
    p.add_argument("--lr", type=float, help="Adam learning rate, poly decay to 0.1×")
    p.add_argument("--no-ablation", dest="ablation", action="store_false", default=None,
                   help="train only teacher, baseline and the full student")
    p.add_argument("--test-images", type=int, help="procedural test scenes (64)")
    p.add_argument("--eval-batch", type=int)
    p.add_argument("--panels", type=int, help="test images drawn as PNG panels")
    p.add_argument("--seed", type=int)
    p.add_argument("--kitti-root", help="KITTI raw root: train on KITTI (stereo pairs + gt, "
                   "random crops) and evaluate on the Eigen benchmark split")
    p.add_argument("--kitti-split", help="KITTI training list (default eigen_full)")
    p.add_argument("--kitti-limit", type=int, help="train on the first N KITTI frames")
    p.add_argument("--test-limit", type=int, help="KITTI: evaluate the first N test images")
    p.add_argument("--no-train", action="store_true", help="fail instead of training")
    return p.parse_args(argv)


def config_of(args) -> Config:
    base = QUICK if args.quick else Config()
    names = {f.name for f in dataclasses.fields(Config)}
    return dataclasses.replace(base, **{k: v for k, v in vars(args).items()
                                        if k in names and v is not None})


def model_configs(cfg: Config) -> dict:
    """`{row: config}` in training order (the teacher first)."""
    run = RunConfig(height=cfg.height, image_width=cfg.width, batch_size=cfg.batch_size,
                    steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, data_seed=cfg.seed,
                    data="kitti" if cfg.kitti_root else "synthetic", split=cfg.kitti_split)
    teacher = adu.NeWCRFsConfig(encoder=cfg.encoder, crf_scale=cfg.crf_scale, stereo=True,
                                run=run)
    configs = {"teacher": teacher,
               "baseline": adu.AduConfig(teacher=teacher, loss=AduLossConfig.baseline())}
    if cfg.ablation:
        configs.update({k: adu.AduConfig(teacher=teacher, loss=v) for k, v in ABLATIONS.items()})
    configs["adu"] = adu.AduConfig(teacher=teacher)
    return configs


def run_names(cfg: Config) -> dict:
    return {k: "adu_" + k.replace("+", "plus_").replace("/", "").replace(" ", "_")
            for k in model_configs(cfg)}


def train_data(cfg: Config, needs):
    if not cfg.kitti_root:
        return None  # the procedural scenes (train_or_load's default)
    from jaxdepth.data.training import training_data
    return training_data("kitti", needs=needs, height=cfg.height, width=cfg.width,
                         root=cfg.kitti_root, split=cfg.kitti_split, length=cfg.kitti_limit)


def train_models(cfg: Config, configs, checkpoints, *, train: bool = True) -> dict:
    """`{row: (apply_fn, variables)}`; the teacher's variables feed every student."""
    names = run_names(cfg)
    out = {}
    teacher = configs["teacher"]
    out["teacher"] = recipes.train_or_load(teacher, checkpoints, name=names["teacher"],
                                           data=train_data(cfg, "stereo_depth"), train=train)
    for k, c in configs.items():
        if k != "teacher":
            out[k] = recipes.train_or_load(c, checkpoints, name=names[k], train=train,
                                           data=train_data(cfg, "stereo_depth"),
                                           teacher_variables=out["teacher"][1])
    return out


class WithRightView:
    """A KITTI test source with `image_right` (the other camera, for the stereo teacher)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        s = self.base[i]
        e = self.base.entries[i]
        if e.side != "l":
            raise ValueError(f"test entry {e} is a right-camera frame: the teacher reads "
                             "left ‖ right")
        right = self.base._image(e.folder, e.frame, "r", "stereo pair")[0]
        return {**s, "image_right": right}


def test_source(cfg: Config):
    """(source, protocol) of the evaluation."""
    if cfg.kitti_root:
        from jaxdepth.data.kitti import KittiTest
        ds = KittiTest(cfg.kitti_root, "eigen_benchmark", height=cfg.height, width=cfg.width,
                       crop="garg")
        if cfg.test_limit is not None and cfg.test_limit < len(ds):
            ds = KittiTest(cfg.kitti_root, "eigen_benchmark", height=cfg.height,
                           width=cfg.width, crop="garg", entries=ds.entries[:cfg.test_limit])
        return WithRightView(ds), KITTI_EIGEN
    from jaxdepth.data.synthetic import SyntheticSource
    return SyntheticSource("test", seed=cfg.seed, height=cfg.height, width=cfg.width,
                           length=cfg.test_images,
                           keys=("image", "image_right", "depth")), SYNTHETIC


def has_sigma(c) -> bool:
    return isinstance(c, adu.AduConfig) and c.has_sigma


def predictors(models, configs) -> list[Row]:
    """One evaluation row per model (σ: the UEM's exp(log σ) where trained, else zeros),
    plus Grad on the ADU student."""
    rows = []
    for name, (apply_fn, variables) in models.items():
        c = configs[name]
        if name == "teacher":
            f = jax.jit(lambda x, r, v=variables, a=apply_fn: a(v, jnp.concatenate([x, r], -1))[
                "depth"])
            rows.append(Row(name, "", lambda x, key, image_right, f=f: Estimate(
                f(x, image_right), jnp.zeros(x.shape[:3] + (1,))), inputs=("image_right",)))
            continue
        sigma = has_sigma(c)

        def fn(x, key, v=variables, a=apply_fn, sigma=sigma):
            out = a(v, x)
            u = jnp.exp(out["log_sigma"]) if sigma else jnp.zeros_like(out["depth"])
            return Estimate(out["depth"], u)
        rows.append(Row(name, "UEM" if sigma else "", jax.jit(fn)))
    if "adu" in models:
        apply_fn, variables = models["adu"]
        grad = jax.jit(lambda x, v=variables, a=apply_fn: gradient_uncertainty(a, v, x))
        rows.append(Row("adu", "Grad", lambda x, key: grad(x)))
    return rows


def evaluate_models(models, configs, cfg: Config, keep_panels: int = 0):
    """Evaluate every model; returns `(rows, evaluator, panels)` in the results layout."""
    source, protocol = test_source(cfg)
    ev = Evaluator(protocol)
    panels = {}
    batch = 1 if cfg.kitti_root else cfg.eval_batch  # KITTI gt has each image's native size

    def add(row, est, samples, idx):
        for i, s in enumerate(samples):
            one = Estimate(est.depth[i:i + 1], est.uncertainty[i:i + 1])
            ev.add(row.model, row.method, one, np.asarray(s["depth"])[None],
                   None if "mask" not in s else np.asarray(s["mask"])[None, ..., 0])
        if idx[0] == 0 and keep_panels:
            panels[(row.model, row.method)] = est
            panels["image"] = np.stack([s["image"] for s in samples])
            panels["gt"] = [np.asarray(s["depth"])[..., 0] for s in samples]

    evaluate(predictors(models, configs), source, batch_size=batch, add=add, seed=cfg.seed,
             batch_keys=False)
    by = {(r["model"], r["method"]): r for r in ev.rows()}
    unc = [k for k, _ in UNCERTAINTY_COLUMNS]
    rows = []
    for name in models:
        method = "UEM" if has_sigma(configs[name]) else ""
        r = by[(name, method)]
        row = {"model": name, "depth": {k: float(r["depth"][k]) for k in DEPTH_KEYS}}
        if method:
            row.update({k: {"ause": float(r[k]["ause"]), "aurg": float(r[k]["aurg"])}
                        for k in unc})
        if (name, "Grad") in by:
            g = by[(name, "Grad")]
            row["grad"] = {k: {"ause": float(g[k]["ause"]), "aurg": float(g[k]["aurg"])}
                           for k in unc}
        rows.append(row)
    return rows, ev, panels


def tables(rows, cfg: Config) -> str:
    by = {r["model"]: r for r in rows}
    table4 = [{**by[k], "model": LABELS[k]} for k in ORDER if k in by]
    out = [format_depth_table(table4, "Table 4 — ablation (metric depth, no scaling)",
                              improvement=(by["baseline"], by["adu"]))]
    unc = []
    for k in ORDER:
        if k in by and "abs_rel" in by[k]:
            unc.append({**by[k], "model": f"{k}: UEM σ"})
        if k in by and "grad" in by[k]:
            unc.append({**by[k]["grad"], "model": f"{k}: Grad (crf0, flip)"})
    if unc:
        out.append(format_uncertainty_table(unc, "Uncertainty of the students (AUSE / AURG)"))
    return "\n\n".join(out)


def verdict(rows) -> str:
    by = {r["model"]: r for r in rows}
    b, a = by["baseline"]["depth"], by["adu"]["depth"]
    lines = ["Claim check — does the ADU student beat the baseline (same network, data, steps)?"]
    for k in ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1"):
        better = a[k] > b[k] if k == "a1" else a[k] < b[k]
        rel = 100 * (b[k] - a[k]) / b[k] if k != "a1" else 100 * (a[k] - b[k]) / b[k]
        lines.append(f"  {k:9s} baseline {b[k]:.4f}  adu {a[k]:.4f}  -> "
                     f"{'better' if better else 'NOT better'} ({rel:+.1f} %)")
    t = by["teacher"]["depth"]
    lines.append(f"  teacher abs_rel {t['abs_rel']:.4f} (the stereo reference)")
    return "\n".join(lines)


def save_pngs(out: Path, ev, panels, n: int):
    curves = ev.curves()
    for metric in ("abs_rel", "rmse", "a1"):
        c = {k: v[metric] for k, v in curves.items() if k.endswith(("UEM", "Grad"))}
        if c:
            viz.plot_sparsification(out / f"sparsification_{metric}.png", c, metric)
    if not panels:
        return
    images, gts = panels["image"], panels["gt"]
    student = panels.get(("adu", "UEM"))
    teacher = panels.get(("teacher", ""))
    grad = panels.get(("adu", "Grad"))
    for i in range(min(n, images.shape[0])):
        gt = gts[i]
        valid = gt > 0
        d_s = np.asarray(student.depth[i, ..., 0])
        tiles = [images[i], viz.colorize(1.0 / np.where(valid, gt, np.nan)),
                 viz.colorize(1.0 / np.asarray(teacher.depth[i, ..., 0])), viz.colorize(1.0 / d_s),
                 viz.colorize(np.asarray(student.uncertainty[i, ..., 0]), cmap="hot")]
        titles = ["input (left)", "ground truth (1/depth)", "teacher (1/depth)",
                  "ADU student (1/depth)", "UEM σ"]
        if gt.shape == d_s.shape:
            tiles.append(viz.colorize(np.where(valid, np.abs(d_s - gt), np.nan), cmap="hot"))
            titles.append("|student − gt| [m]")
        if grad is not None:
            tiles.append(viz.colorize(np.asarray(grad.uncertainty[i, ..., 0]), cmap="hot"))
            titles.append("Grad")
        viz.save_panel(out / f"panel_{i}.png", tiles, titles, ncols=4)


def main(argv=None):
    args = parse_args(argv)
    cfg = config_of(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    configs = model_configs(cfg)
    models = train_models(cfg, configs, args.checkpoints, train=not args.no_train)
    t_train = time.perf_counter() - t0
    rows, ev, panels = evaluate_models(models, configs, cfg, keep_panels=cfg.panels)
    data = "KITTI (Eigen benchmark, Garg crop)" if cfg.kitti_root else "procedural street scenes"
    header = (f"ADU-Depth on {data} ({cfg.height}×{cfg.width}, NeWCRFs-{cfg.encoder} crf_scale "
              f"{cfg.crf_scale:g}, {cfg.steps} steps of batch {cfg.batch_size} per model, "
              f"Adam lr {cfg.lr:g} poly decay, seed {cfg.seed})")
    text = header + "\n\n" + tables(rows, cfg) + "\n\n" + verdict(rows)
    print(text)
    (out / "tables.txt").write_text(text + "\n")
    _, protocol = (None, KITTI_EIGEN) if cfg.kitti_root else (None, SYNTHETIC)
    config = {**dataclasses.asdict(cfg), "quick": args.quick, "out": args.out,
              "checkpoints": args.checkpoints,
              "dataset": "kitti" if cfg.kitti_root else "synthetic",
              "protocol": dataclasses.asdict(protocol),
              "models": {k: c.to_dict() for k, c in configs.items()},
              "device": jax.devices()[0].device_kind, "train_seconds": t_train}
    with open(out / "results.json", "w") as f:
        json.dump({"config": config, "rows": rows}, f, indent=2, default=str)
    save_pngs(out, ev, panels, cfg.panels)
    print(f"wrote {out / 'results.json'}, tables.txt and PNGs; total "
          f"{time.perf_counter() - t0:.0f} s (training/loading {t_train:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
