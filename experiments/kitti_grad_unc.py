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
flagged under the table and in `config.collapsed`. With `--kitti-root` it runs the
paper's KITTI protocol on converted weights instead (`jaxdepth.benchmarks.kitti`).

The experiment is `Config` (full) or `QUICK`; the flags override their fields.
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdepth import calibration, cli, report, viz  # noqa: E402
from jaxdepth.benchmarks.ablation import mode_protocol  # noqa: E402
from jaxdepth.data.synthetic import SyntheticSource  # noqa: E402
from jaxdepth.evaluation import SYNTHETIC, Evaluator, Row, evaluate, prepare  # noqa: E402
from jaxdepth.train import distill, recipes, runs, selfsup, supervised  # noqa: E402
from jaxdepth.train.config import RunConfig  # noqa: E402
from jaxdepth.uncertainty.methods import MethodOptions, ModelInfo, for_model, method  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    """The main job: model size, training, the methods' options and the evaluation."""
    height: int = 64
    width: int = 192
    model_width: float = 0.25
    num_layers: int = 18
    steps: int = 500           # per model; --selfsup M runs: selfsup.M_STEPS_FACTOR × as many
    batch_size: int = 8
    lr: float = 1e-3
    boot: int = 8              # bootstrap ensemble size
    snap: int = 0              # Snap row: the last N checkpoints of Reg
    selfsup: tuple = ()        # self-supervised modes to add ("M", "S", "MS")
    selfsup_boot: int | None = None
    archs: tuple = ("monodepth2",)  # "monovit" adds MonoViT Reg / Log rows (see MONOVIT_ROWS)
    monovit_size: str = "tiny"     # `jaxdepth.models.monovit.SIZES`; "small" is the released
    monovit_width: float = 1.0     # MonoViT's channel multiplier
    methods: MethodOptions = MethodOptions()
    variance_weight: float = 2.0   # λ of Eq. 5 for the models with log σ heads
    test_images: int = 64
    eval_batch: int = 8
    panels: int = 4
    calibration_images: int = 64   # the calibration split (val) of the error bounds; 0: none
    calibration_monotone: str = "isotonic"  # calibration.fit(monotone=...): or "cummax"
    seed: int = 0

    def run(self, steps: int | None = None) -> RunConfig:
        return RunConfig(height=self.height, image_width=self.width, batch_size=self.batch_size,
                         steps=self.steps if steps is None else steps, lr=self.lr,
                         seed=self.seed, data_seed=self.seed)


QUICK = Config(steps=6, boot=2, test_images=4, height=32, width=96, model_width=0.125,
               eval_batch=4, panels=1, calibration_images=4, monovit_width=0.5)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Gradient uncertainty vs. baselines (paper Table 1)")
    p.add_argument("--out", default="runs/kitti_grad_unc", help="results directory")
    p.add_argument("--checkpoints", default="checkpoints", help="where trained models are kept")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds of training)")
    p.add_argument("--height", type=int, help="input height (default 64)")
    p.add_argument("--width", type=int, help="input width (default 192)")
    p.add_argument("--model-width", type=float, help="channel multiplier of DepthNet (0.25)")
    p.add_argument("--num-layers", type=int, choices=(18, 50))
    p.add_argument("--steps", type=int, help="training steps per model (--selfsup M runs: "
                   "selfsup.M_STEPS_FACTOR × as many)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--boot", type=int, help="bootstrap ensemble size (default 8)")
    p.add_argument("--snap", type=int, help="Snap row: last N checkpoints of Reg")
    p.add_argument("--test-images", type=int)
    p.add_argument("--eval-batch", type=int)
    p.add_argument("--selfsup", nargs="*", choices=("M", "S", "MS"),
                   help="also train self-supervised models of these modes (Monodepth2 "
                        "recipe, jaxdepth.train.selfsup) and add their rows: plain (Post, "
                        "Var, In-Drop, Grad), Log (Log, Grad), Self (Self, Grad), Drop "
                        "and Boot; M is evaluated with per-image median scaling, S/MS with ×5.4")
    p.add_argument("--arch", nargs="+", dest="archs", choices=("monodepth2", "monovit"),
                   help="architectures of the table's models (default monodepth2): monovit "
                        "adds MonoViT Reg (Post, Var, In-Drop, Grad) and Log (Log, Var, "
                        "In-Drop, Grad) rows (--kitti-root: the checkpoints in --weights say their "
                        "architecture; see jaxdepth convert monovit)")
    p.add_argument("--monovit-size", choices=("tiny", "mpvit_tiny", "xsmall", "small"),
                   help="MonoViT's size (default tiny; small is the released model)")
    p.add_argument("--monovit-width", type=float, help="MonoViT's channel multiplier (1.0)")
    p.add_argument("--selfsup-boot", type=int,
                   help="bootstrap size of the self-supervised Boot rows (default: --boot)")
    p.add_argument("--seed", type=int)
    p.add_argument("--panels", type=int, help="test images drawn as PNG panels")
    p.add_argument("--calibration-images", type=int,
                   help="images of the calibration split (val) for the error bounds (0: none)")
    p.add_argument("--no-train", action="store_true", help="fail instead of training")
    cli.add_method_arguments(p, variance_weight=2.0)
    cli.add_kitti_arguments(p)
    return p.parse_args(argv)


def config_of(args) -> Config:
    """The experiment's config: `QUICK` or `Config()`, with the given flags."""
    base = QUICK if args.quick else Config()
    fields = {f.name for f in dataclasses.fields(Config)} - {"methods", "selfsup", "archs"}
    changes = {k: getattr(args, k) for k in fields if getattr(args, k, None) is not None}
    if args.selfsup is not None:
        changes["selfsup"] = tuple(args.selfsup)
    if args.archs:
        changes["archs"] = tuple(dict.fromkeys(args.archs))
    methods = dataclasses.replace(cli.method_options(args), variance_weight=None)
    return dataclasses.replace(base, methods=methods, **changes)


def model_configs(cfg: Config) -> dict[str, supervised.SupervisedConfig]:
    """Table 1's models of each of `cfg.archs`: Monodepth2's Reg, Log, Drop, Boot members;
    MonoViT's Reg and Log (`MonoViT Reg`, `MonoViT Log`)."""
    configs = {}
    if "monodepth2" in cfg.archs:
        base = supervised.SupervisedConfig(num_layers=cfg.num_layers, width=cfg.model_width,
                                           run=cfg.run())
        configs.update({"Reg": base, "Log": dataclasses.replace(base, variant="log"),
                        "Drop": dataclasses.replace(base, variant="drop")})
        for i in range(cfg.boot):
            configs[f"Boot{i + 1}"] = base.with_run(seed=cfg.seed + 1000 + i)
    if "monovit" in cfg.archs:
        vit = supervised.SupervisedConfig(arch="monovit", monovit_size=cfg.monovit_size,
                                          width=cfg.monovit_width, run=cfg.run())
        configs.update({"MonoViT Reg": vit,
                        "MonoViT Log": dataclasses.replace(vit, variant="log")})
    return configs


def selfsup_configs(cfg: Config, mode: str) -> dict:
    """`{row model name: config}` of the self-supervised models of one mode."""
    base = selfsup.SelfSupConfig(mode=mode, num_layers=cfg.num_layers, width=cfg.model_width,
                                 run=cfg.run(selfsup.steps_for(mode, cfg.steps)))
    configs = {mode: base, f"{mode} Log": selfsup.variant_config(base, "log"),
               f"{mode} Self": distill.DistillConfig(method="self", teacher=base),
               f"{mode} Drop": selfsup.variant_config(base, "drop")}
    n_boot = cfg.boot if cfg.selfsup_boot is None else cfg.selfsup_boot
    for i in range(n_boot if n_boot >= 2 else 0):
        configs[f"{mode} Boot{i + 1}"] = base.with_run(seed=cfg.seed + 1000 + i)
    return configs


def all_configs(cfg: Config) -> dict:
    """Every model of the table: Table 1's, then the `selfsup` modes' families."""
    configs = model_configs(cfg)
    for mode in cfg.selfsup:
        configs.update(selfsup_configs(cfg, mode))
    return configs


def train_models(cfg: Config, configs: dict, checkpoints, *, train: bool = True):
    """Train or reuse the models of `configs`: `({name: (apply_fn, variables)}, snapshots,
    collapsed)`; `collapsed` names the self-supervised models whose depth collapsed to the
    near limit (`selfsup.collapsed`, on the first test images)."""
    models, snaps, collapsed = {}, [], []
    images = None
    for name, c in configs.items():
        keep = max(cfg.snap, 1) if name == "Reg" else 1
        models[name] = recipes.train_or_load(c, checkpoints, train=train, keep=keep)
        if name == "Reg" and cfg.snap:
            snaps = runs.snapshot_variables(runs.run_dir(checkpoints, None, c), cfg.snap)
        if isinstance(c, (selfsup.SelfSupConfig, distill.DistillConfig)):
            if images is None:
                images = jnp.asarray(SyntheticSource(
                    "test", seed=cfg.seed, height=cfg.height, width=cfg.width,
                    length=cfg.eval_batch, keys=("image",)).get_batch(
                        np.arange(cfg.eval_batch))["image"])
            fn, variables = models[name]
            if selfsup.collapsed(fn(variables, images)["depth"], c.model().min_depth):
                collapsed.append(name)
                print(f"WARNING: {name}: depth collapsed to the near limit (scale drift); "
                      f"its rows measure a constant-depth model", file=sys.stderr)
    return models, snaps, collapsed


#: (row model, method label, table method) of Table 1; Log-style rows for σ models
TABLE1 = (("Reg", "Post", "post"), ("Reg", "Var", "var"), ("Reg", "In-Drop", "in_drop"),
          ("Reg", "Grad", "grad"), ("Log", "Log", "predictive"), ("Log", "Var", "var"),
          ("Log", "In-Drop", "in_drop"), ("Log", "Grad", "grad"), ("Drop", "Drop", "mc_drop"))
#: the MonoViT rows (`--arch monovit`): Reg and Log with the training-free methods
MONOVIT_ROWS = (("MonoViT Reg", "Post", "post"), ("MonoViT Reg", "Var", "var"),
                ("MonoViT Reg", "In-Drop", "in_drop"), ("MonoViT Reg", "Grad", "grad"),
                ("MonoViT Log", "Log", "predictive"), ("MonoViT Log", "Var", "var"),
                ("MonoViT Log", "In-Drop", "in_drop"), ("MonoViT Log", "Grad", "grad"))


def selfsup_rows(mode: str) -> tuple:
    return ((mode, "Post", "post"), (mode, "Var", "var"), (mode, "In-Drop", "in_drop"),
            (mode, "Grad", "grad"), (f"{mode} Log", "Log", "predictive"),
            (f"{mode} Log", "Grad", "grad"), (f"{mode} Self", "Self", "predictive"),
            (f"{mode} Self", "Grad", "grad"), (f"{mode} Drop", "Drop", "mc_drop"))


def _row(cfg: Config, configs, models, model, label, name, protocol=None) -> Row:
    apply_fn, variables = models[model]
    module = configs[model].model()
    info = ModelInfo.of(module, variables)
    opts = for_model(cfg.methods, module)  # Grad at MonoViT's own default tap
    if info.log_sigma:
        opts = dataclasses.replace(opts, variance_weight=cfg.variance_weight)
    return Row(model, label, method(name, apply_fn, variables, opts, info=info), protocol)


def build_rows(cfg: Config, configs, models, snaps) -> list[Row]:
    """The table's rows in the order of Table 1, then MonoViT's, then the self-supervised
    ones."""
    rows = [_row(cfg, configs, models, *r) for r in TABLE1 if r[0] in configs]
    boot = [models[k][1] for k in models if k.startswith("Boot")]
    if len(boot) >= 2:
        rows.append(Row("Boot", "Boot", method("ensemble", models["Reg"][0], boot)))
    if snaps:
        rows.append(Row("Snap", "Snap", method("ensemble", models["Reg"][0], snaps)))
    rows += [_row(cfg, configs, models, *r) for r in MONOVIT_ROWS if r[0] in configs]
    for mode in cfg.selfsup:
        rows += selfsup_table_rows(cfg, configs, models, mode)
    return rows


def selfsup_table_rows(cfg: Config, configs, models, mode: str) -> list[Row]:
    """The rows of one self-supervised mode (plain, Log, Self, Drop, Boot)."""
    protocol = mode_protocol(configs[mode])
    rows = [_row(cfg, configs, models, *r, protocol=protocol) for r in selfsup_rows(mode)]
    boot = [models[k][1] for k in models if k.startswith(f"{mode} Boot")]
    if boot:
        rows.append(Row(f"{mode} Boot", "Boot", method("ensemble", models[mode][0], boot),
                        protocol))
    return rows


def evaluate_rows(rows, cfg: Config):
    """Run every row on the synthetic test split: the Evaluator, for the first batch the
    inputs, ground truth and each row's estimate (for the panels), and each row's valid
    test pixels `(scores, errors [m], depth [m])` under its protocol (for the bounds)."""
    source = SyntheticSource("test", seed=cfg.seed, height=cfg.height, width=cfg.width,
                             length=cfg.test_images, keys=("image", "depth"))
    ev, panels, pixels = Evaluator(SYNTHETIC), {"estimates": {}}, {}

    def add(row, est, samples, idx):
        gt = np.stack([s["depth"] for s in samples])
        ev.add(row.model, row.method, est, gt, protocol=row.protocol)
        pred, unc, valid = (np.asarray(x) for x in prepare(est, gt, row.protocol or SYNTHETIC))
        valid = valid & np.isfinite(unc)
        g = gt[..., 0] if gt.ndim == 4 else gt
        part = (unc[valid], np.abs(pred - g)[valid], pred[valid])
        pixels.setdefault((row.model, row.method), []).append(part)
        if idx[0] == 0:
            panels.update(image=np.stack([s["image"] for s in samples]), gt=g)
            panels["estimates"][(row.model, row.method)] = est

    evaluate(rows, source, batch_size=cfg.eval_batch, add=add, seed=cfg.seed, batch_keys=False,
             timer=lambda row, s, n: ev.time(row.model, row.method, s, n))
    pixels = {k: tuple(np.concatenate(x) for x in zip(*v)) for k, v in pixels.items()}
    return ev, panels, pixels


def calibrate_rows(rows, cfg: Config, test_pixels):
    """Error bounds in metres for every row (`jaxdepth.calibration`, normalised split
    conformal by default, `calibration_monotone`): fitted on the
    `calibration_images` of the val split (disjoint from the test split; the row's
    protocol, relative errors for median-scaled rows), checked on the test pixels, against
    a constant bound fitted on the same calibration pixels. Returns `(entries, fits)`:
    the `results.json` "calibration" entries and `{(model, method): Calibration}`."""
    from jaxdepth.cli.calibrate import collect_pixels

    source = SyntheticSource("val", seed=cfg.seed, height=cfg.height, width=cfg.width,
                             length=cfg.calibration_images, keys=("image", "depth"))
    entries, fits = [], {}
    for row in rows:
        protocol = row.protocol or SYNTHETIC
        relative = protocol.scaling == "median"  # its scale comes from the gt: relative bounds
        s, e, d, _ = collect_pixels(row.fn, source, protocol, batch_size=cfg.eval_batch,
                                    seed=cfg.seed, label=f"calibrate {row.model} {row.method}")
        target = e / d if relative else e
        cal = calibration.fit(s, target, relative=relative, monotone=cfg.calibration_monotone,
                              method=row.method, model=row.model)
        const = calibration.fit(np.zeros_like(s), target, relative=relative, bins=1)
        ts, te, td = test_pixels[(row.model, row.method)]
        got = calibration.evaluate(cal, ts, te, depth=td)
        flat = calibration.evaluate(const, np.zeros_like(ts), te, depth=td)
        entries.append({
            "model": row.model, "method": row.method, "relative": relative,
            "coverage": {k: v["coverage"] for k, v in got.items()},
            "mean_bound_m": {k: v["mean_bound"] for k, v in got.items()},
            "constant_bound_m": {k: v["mean_bound"] for k, v in flat.items()},
            "constant_coverage": {k: v["coverage"] for k, v in flat.items()},
            "calibration_pixels": int(s.size), "test_pixels": int(ts.size)})
        fits[(row.model, row.method)] = cal
    return entries, fits


def calibration_table(entries, level: str = "0.9") -> str:
    """Coverage and mean width of the calibrated bound at `level` per row, against the
    constant bound fitted on the same calibration pixels."""
    head = (f"Error bounds at {float(level):.0%} (fitted on the val split, measured on the "
            "test split)")
    w = max([10] + [len(r["model"]) for r in entries])
    lines = [head, f"{'Model':<{w}} {'Method':<9} {'coverage':>9} {'mean bound [m]':>15} "
             f"{'constant: coverage':>19} {'bound [m]':>10}"]
    for r in entries:
        lines.append(f"{r['model']:<{w}} {r['method']:<9} {r['coverage'][level]:>9.3f} "
                     f"{r['mean_bound_m'][level]:>15.3f} {r['constant_coverage'][level]:>19.3f} "
                     f"{r['constant_bound_m'][level]:>10.3f}")
    return "\n".join(lines)


def save_calibration_pngs(out, entries, fits, panels, level: float = 0.9):
    """`reliability.png` (observed vs nominal coverage of every row) and
    `error_bars.png` (Reg Grad on the first test image: depth, bound, true error)."""
    viz.plot_reliability(out / "reliability.png",
                         {f"{r['model']}: {r['method']}": r["coverage"] for r in entries})
    key = next((k for k in fits if k[1] == "Grad"), next(iter(fits)))
    est, gt = panels["estimates"][key], panels["gt"][0]
    depth = np.asarray(est.depth[0, ..., 0])
    bound = fits[key].error_bound(np.asarray(est.uncertainty[0, ..., 0]), level,
                                  depth=depth if fits[key].relative else None)
    valid = (gt > SYNTHETIC.gt_min) & (gt < (SYNTHETIC.gt_max or np.inf))
    error = np.where(valid, np.abs(depth - gt), np.nan)
    viz.save_error_bar_panel(out / "error_bars.png", panels["image"][0], depth, bound, error,
                             level=level, title=f"{key[0]}: {key[1]}")


def save_panels(out, panels, n):
    """One PNG per test image: input, ground truth, the first Post row's depth (Reg's),
    its error, and every method's uncertainty (hot: bright = uncertain)."""
    images, gt = panels["image"], panels["gt"]
    first = next(k for k in panels["estimates"] if k[1] == "Post")
    reg = panels["estimates"][first]
    for i in range(min(n, images.shape[0])):
        valid = gt[i] > 0
        depth = np.asarray(reg.depth[i, ..., 0])
        error = np.where(valid, np.abs(depth - gt[i]) / np.where(valid, gt[i], 1), np.nan)
        tiles = [images[i], viz.colorize(1.0 / np.where(valid, gt[i], np.nan)),
                 viz.colorize(1.0 / depth), viz.colorize(error, cmap="hot", mask=valid)]
        titles = ["input", "ground truth (1/depth)", f"{first[0]}: Post depth (1/depth)",
                  "abs rel error"]
        for (model, name), est in panels["estimates"].items():
            tiles.append(viz.colorize(np.asarray(est.uncertainty[i, ..., 0]), cmap="hot"))
            titles.append(f"{model}: {name}")
        viz.save_panel(out / f"panel_{i}.png", tiles, titles, ncols=4)


def main(argv=None):
    args = parse_args(argv)
    if args.kitti_root:
        from jaxdepth.benchmarks import kitti

        result = kitti.run(cli.kitti_config(args))
        report.write_results(Path(args.out), result.rows, result.curves, result.config,
                             result.title)
        return result.rows
    cfg = config_of(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    configs = all_configs(cfg)
    models, snaps, collapsed = train_models(cfg, configs, args.checkpoints,
                                            train=not args.no_train)
    t_train = time.perf_counter() - t_start
    table_rows = build_rows(cfg, configs, models, snaps)
    ev, panels, pixels = evaluate_rows(table_rows, cfg)
    rows = ev.rows()
    nets = ([f"DepthNet ResNet-{cfg.num_layers} width {cfg.model_width}"]
            if "monodepth2" in cfg.archs else [])
    nets += ([f"MonoViT {cfg.monovit_size} width {cfg.monovit_width}"]
             if "monovit" in cfg.archs else [])
    title = (f"Uncertainty on procedural street scenes ({cfg.height}×{cfg.width}, "
             f"{cfg.test_images} test images, {', '.join(nets)}, {cfg.steps} steps/model"
             + (f"; M: {selfsup.steps_for('M', cfg.steps)}" if "M" in cfg.selfsup else "")
             + ")")
    note = ("collapsed to the near limit (constant depth; their rows are not meaningful): "
            + ", ".join(collapsed)) if collapsed else None
    config = {**dataclasses.asdict(cfg), "quick": args.quick, "out": args.out,
              "checkpoints": args.checkpoints, "collapsed": collapsed, "dataset": "synthetic",
              "protocol": dataclasses.asdict(SYNTHETIC),
              "models": {k: c.to_dict() for k, c in configs.items()},
              "device": jax.devices()[0].device_kind, "train_seconds": t_train}
    entries, fits = (calibrate_rows(table_rows, cfg, pixels) if cfg.calibration_images
                      else ([], {}))
    report.write_results(out, rows, ev.curves(), config, title, note=note,
                         extra={"calibration": entries} if entries else None,
                         tables=[calibration_table(entries)] if entries else ())
    save_panels(out, panels, cfg.panels)
    if entries:
        save_calibration_pngs(out, entries, fits, panels)
    print(f"wrote {out / 'results.json'} and PNGs; total {time.perf_counter() - t_start:.0f} s "
          f"(training/loading {t_train:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
