"""PGN (Maag & Riedlinger, "Pixel-wise gradient uncertainty for convolutional neural
networks applied to out-of-distribution segmentation", 2023) on jaxdepth's procedural
street scenes: does the pixel-wise gradient norm beat softmax entropy, MC dropout and an
ensemble at spotting errors and anomalies?

    python experiments/segmentation_ood.py            # default run (see --help)
    python experiments/segmentation_ood.py --quick    # smoke run (< 5 min on 2 CPU cores)

Trains (or reuses from `--checkpoints`, keyed by config) DeepLabV3+ segmentation models on
the scenes' train split with the anomaly class ignored (it never appears as a label):
`plain`, a `drop` variant (dropout 0.2 before the head, for MC dropout) and `--ensemble`
− 1 more plain models with other seeds (the ensemble is them and `plain`). Evaluates

- Table 1 on the test split (no anomalies): ECE (10 bins) and AuSE of the Brier error per
  method (`jaxdepth.benchmarks.segmentation.pixel_rows`);
- Fig. 3 (segment-wise): MetaSeg meta classification AuROC (IoU = 0?) and regression R²
  with the MetaSeg features, the PGN map features, and both;
- Tables 2–3 on the `ood` split (anomalous objects on the road; label 1 on them, 0
  elsewhere, as SegmentMeIfYouCan's anomaly track): pixel AuPRC / AuROC / FPR95, and the
  component sIoU / PPV / mean F1 at each method's best-F1 threshold, SMIYC's component
  size limits scaled to the image size;
- Table 4: seconds per frame of the forward pass, MC dropout and PGN (one-hot + uniform
  labels, five p) and their ratio to the forward pass.

Methods (higher = more uncertain): `softmax` (1 − max probability), `entropy` (/ log C),
`mc_dropout` (predictive entropy of `--mc-samples` passes of `drop`), `ensemble`
(predictive entropy over the members), `pgn_oh_p{p}` / `pgn_uni_p{p}` (last-layer PGN of
`plain`, one-hot / uniform label, p ∈ `--ps`, the exact cross-entropy gradient; `--mode
reference` for the published code's weights). `--pgn-penultimate` adds the penultimate
maps as methods. Writes `results.json` (`{"config", "pixel", "segment", "ood",
"runtime"}`), `tables.txt`, `examples.png` (image / prediction / PGN / entropy / anomaly
ground truth per ood frame) and `pr_curves.png` into `--out`.

Real data: `--cityscapes-root` evaluates Table 1 and Fig. 3 on Cityscapes val and
`--smiyc-root` Tables 2–3 on RoadAnomaly21 (`--smiyc-dataset`), for a checkpoint of a
Cityscapes model (`--checkpoint`, e.g. `jaxdepth convert deeplabv3` or `jaxdepth train
--recipe segmentation --data cityscapes`); MC dropout and the ensemble need their own
checkpoints (`--dropout-checkpoint`, `--ensemble-checkpoints`).
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdepth.benchmarks import segmentation as bench  # noqa: E402
from jaxdepth.data.pipeline import First  # noqa: E402
from jaxdepth.evaluation import Row, timed  # noqa: E402
from jaxdepth.train import recipes  # noqa: E402
from jaxdepth.train.config import RunConfig  # noqa: E402
from jaxdepth.uncertainty import pgn as P  # noqa: E402
from jaxdepth.uncertainty.segmentation import probs_entropy, sampling_uncertainty  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Config:
    """The experiment: sizes, training, the methods' settings, the test sets."""
    height: int = 96
    width: int = 192
    model_width: float = 0.25
    num_layers: int = 18
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    ensemble: int = 3
    mc_samples: int = 16
    ps: tuple = P.DEFAULT_PS
    mode: str = "exact"
    pgn_penultimate: bool = False
    test_images: int = 48
    ood_images: int = 48
    eval_batch: int = 8
    panels: int = 4
    timing_repeats: int = 5
    seed: int = 0


QUICK = Config(height=64, width=128, model_width=0.125, steps=40, ensemble=2, mc_samples=4,
               test_images=8, ood_images=8, eval_batch=8, panels=2, timing_repeats=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="PGN vs softmax / entropy / MC dropout / ensemble: "
                                            "error detection and OoD segmentation")
    p.add_argument("--out", default="runs/segmentation_ood", help="results directory")
    p.add_argument("--checkpoints", default="checkpoints", help="where trained models are kept")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (< 5 min)")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--model-width", type=float, help="channel multiplier of DeepLabV3+")
    p.add_argument("--num-layers", type=int, choices=(18, 50))
    p.add_argument("--steps", type=int, help="training steps per model")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--ensemble", type=int, help="ensemble members (plain + N−1 seeds)")
    p.add_argument("--mc-samples", type=int, help="MC dropout passes")
    p.add_argument("--ps", type=float, nargs="+", help="PGN exponents (0.1 0.3 0.5 1 2)")
    p.add_argument("--mode", choices=P.MODES, help="PGN: exact gradient or reference weights")
    p.add_argument("--pgn-penultimate", action="store_true", default=None,
                   help="also the penultimate-layer PGN maps as methods")
    p.add_argument("--test-images", type=int)
    p.add_argument("--ood-images", type=int)
    p.add_argument("--eval-batch", type=int)
    p.add_argument("--panels", type=int, help="ood frames drawn in examples.png")
    p.add_argument("--timing-repeats", type=int, help="timed calls per runtime row")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-train", action="store_true", help="fail instead of training")
    real = p.add_argument_group("real data (a Cityscapes model from checkpoints)")
    real.add_argument("--checkpoint", type=Path, help="segmentation checkpoint of the plain model")
    real.add_argument("--dropout-checkpoint", type=Path, help="its dropout variant (MC dropout)")
    real.add_argument("--ensemble-checkpoints", type=Path, nargs="+",
                      help="further members of the ensemble (with --checkpoint)")
    real.add_argument("--cityscapes-root", type=Path, help="Table 1 / Fig. 3 on Cityscapes")
    real.add_argument("--cityscapes-split", default="val")
    real.add_argument("--smiyc-root", type=Path, help="Tables 2-3 on a SegmentMeIfYouCan dataset")
    real.add_argument("--smiyc-dataset", default="road_anomaly21", choices=tuple(SMIYC))
    real.add_argument("--smiyc-split", help="the dataset's split (default: its test split)")
    real.add_argument("--laf-root", type=Path, help="fishyscapes_laf: the LostAndFound tree")
    real.add_argument("--limit", type=int, help="evaluate the first N frames of each set")
    return p.parse_args(argv)


#: SMIYC datasets: (loader name, default split, component size limits)
SMIYC = {"road_anomaly21": ("RoadAnomaly21", "test", "anomaly"),
         "road_obstacle21": ("RoadObstacle21", "test", "obstacle"),
         "lost_and_found": ("LostAndFound", "testNoKnown", "obstacle"),
         "fishyscapes_laf": ("FishyscapesLAF", "val", "anomaly")}


def config_of(args) -> Config:
    base = QUICK if args.quick else Config()
    names = {f.name for f in dataclasses.fields(Config)}
    changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items()
               if k in names and v is not None}
    return dataclasses.replace(base, **changes)


def model_configs(cfg: Config) -> dict:
    """`{name: SegmentationConfig}`: plain, drop and the extra ensemble members."""
    run = RunConfig(height=cfg.height, image_width=cfg.width, batch_size=cfg.batch_size,
                    steps=cfg.steps, lr=cfg.lr, seed=cfg.seed, data_seed=cfg.seed)
    build = lambda recipe, **kw: recipes.build(  # noqa: E731
        recipe, dataclasses.replace(run, **kw), model_width=cfg.model_width,
        num_layers=cfg.num_layers)
    configs = {"plain": build("segmentation"), "drop": build("segmentation-drop")}
    for i in range(1, cfg.ensemble):
        configs[f"member{i}"] = build("segmentation", seed=cfg.seed + i)
    return configs


def pgn_methods(cfg: Config) -> list[str]:
    return list(P.pgn_names(cfg.ps, penultimate=cfg.pgn_penultimate))


def method_maps(models: dict, cfg: Config):
    """`(fn(images, key) -> {"probs": {model: [B,H,W,C]}, "maps": {method: [B,H,W]}},
    model_of)`: every method's map from one pass of each model (softmax, entropy and PGN
    of `plain`, MC dropout of `drop`, the ensemble of `plain` and the `member*` models);
    `model_of[method]` names whose probabilities the method's prediction is."""
    apply_fn, plain = models["plain"]
    names = pgn_methods(cfg)
    head = P.head_of(plain)
    members = [plain] + [v for k, (_, v) in models.items() if k.startswith("member")]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members) if len(members) > 1 else None
    drop_fn, drop = models.get("drop", (None, None))
    model_of = {m: "plain" for m in ["softmax", "entropy", *names]}
    if drop is not None:
        model_of["mc_dropout"] = "drop"
    if stacked is not None:
        model_of["ensemble"] = "ensemble"

    @jax.jit
    def fn(images, key):
        out = apply_fn(plain, images)
        probs = jax.nn.softmax(out["logits"], -1)
        maps = {"softmax": 1.0 - probs.max(-1), "entropy": probs_entropy(probs, normalise=True)}
        pgn = P.pgn_maps(apply_fn, plain, images, ps=cfg.ps, mode=cfg.mode, head=head,
                         penultimate=cfg.pgn_penultimate)
        maps.update({n: pgn[..., i] for i, n in enumerate(names)})
        all_probs = {"plain": probs}
        if drop is not None:
            mc = sampling_uncertainty(jax.vmap(
                lambda k: drop_fn(drop, images, dropout_rng=k)["logits"])(
                    jax.random.split(key, cfg.mc_samples)))
            maps["mc_dropout"], all_probs["drop"] = mc.entropy, mc.probs
        if stacked is not None:
            ens = sampling_uncertainty(jax.vmap(lambda v: apply_fn(v, images)["logits"])(stacked))
            maps["ensemble"], all_probs["ensemble"] = ens.entropy, ens.probs
        return {"probs": all_probs, "maps": maps}

    return fn, model_of


def runtime_rows(models: dict, cfg: Config) -> list[dict]:
    """Table 4: seconds per frame (batch 1) of the forward pass (logits → softmax), MC
    dropout (`mc_samples` passes), PGN last layer (one-hot + uniform, every p: forward
    included) and, measured too, PGN penultimate; `overhead` = time / forward time."""
    apply_fn, plain = models["plain"]
    drop_fn, drop = models["drop"]
    head = P.head_of(plain)
    x = jnp.asarray(np.random.default_rng(0).random((1, cfg.height, cfg.width, 3)), jnp.float32)
    key = jax.random.PRNGKey(0)
    forward = jax.jit(lambda v, x: jax.nn.softmax(apply_fn(v, x)["logits"], -1))
    mc = jax.jit(lambda v, x, k: sampling_uncertainty(jax.vmap(
        lambda kk: drop_fn(v, x, dropout_rng=kk)["logits"])(jax.random.split(k, cfg.mc_samples))))
    last = lambda v, x: P.pgn_maps(apply_fn, v, x, ps=cfg.ps, mode=cfg.mode, head=head,  # noqa: E731
                                   penultimate=False)
    both = lambda v, x: P.pgn_maps(apply_fn, v, x, ps=cfg.ps, mode=cfg.mode, head=head,  # noqa: E731
                                   penultimate=True)
    r = cfg.timing_repeats
    t_fwd = timed(forward, plain, x, repeats=r)[1]
    rows = [("forward", t_fwd), ("mc_dropout", timed(mc, drop, x, key, repeats=r)[1]),
            ("pgn_oh+uni", timed(last, plain, x, repeats=r)[1]),
            ("pgn_oh+uni+penultimate", timed(both, plain, x, repeats=r)[1])]
    return [{"method": m, "s_per_frame": t, "overhead": t / t_fwd} for m, t in rows]


def save_examples(path, ood_maps, source, cfg: Config, pgn_name: str, palette):
    """One row per ood frame: image | prediction | PGN | entropy | anomaly ground truth."""
    from jaxdepth import viz

    panels = []
    for i in range(min(cfg.panels, len(source))):
        sample = source[i]
        pred = ood_maps.probs["plain"][i].argmax(-1)
        gt = np.where(sample["ood"] == 255, 0.5, sample["ood"].astype(np.float32))
        panels += [sample["image"], np.asarray(palette)[pred], ood_maps.maps[pgn_name][i],
                   ood_maps.maps["entropy"][i], gt]
    titles = ["image", "prediction", pgn_name, "entropy", "anomaly gt"] * (len(panels) // 5)
    return viz.save_panel(path, panels, titles, ncols=5)


def save_pr_curves(path, rows):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for r in rows:
        ax.plot(r["curves"]["recall"], r["curves"]["precision"],
                label=f"{r['method']} (AP {r['auprc']:.3f})", lw=1.2)
    ax.set_xlabel("recall (anomaly pixels)")
    ax.set_ylabel("precision")
    ax.set_title("pixel-level anomaly PR curves (ood split)", fontsize=9)
    ax.legend(fontsize=6, loc="upper right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    fig.savefig(path, bbox_inches="tight")
    return path


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "curves"} for r in rows]


def checkpoint_models(args):
    """`({name: (apply_fn, variables)}, (height, width), palette)` of real checkpoints."""
    from jaxdepth.data.segmentation import palette_of
    from jaxdepth.export import load_checkpoint

    if args.checkpoint is None:
        raise SystemExit("--cityscapes-root / --smiyc-root evaluate a trained model: give "
                         "--checkpoint DIR (a segmentation checkpoint)")
    model, variables, meta = load_checkpoint(args.checkpoint)
    if meta.get("task") != "segmentation":
        raise SystemExit(f"--checkpoint {args.checkpoint} is not a segmentation model")
    models = {"plain": (model.apply, variables)}
    if args.dropout_checkpoint:
        m, v, _ = load_checkpoint(args.dropout_checkpoint)
        models["drop"] = (m.apply, v)
    for i, path in enumerate(args.ensemble_checkpoints or [], 1):
        models[f"member{i}"] = (model.apply, load_checkpoint(path)[1])
    size = (args.height or int(meta["height"]), args.width or int(meta["width"]))
    return models, size, palette_of(int(meta["num_classes"]), meta.get("class_names"))


def real_sources(args, height, width):
    """`(test source or None, ood source or None, track)` of the real-data flags."""
    from jaxdepth.data import cityscapes, smiyc
    from jaxdepth.metrics import ood as ood_metrics

    test = ood = None
    track = ood_metrics.ANOMALY_TRACK
    if args.cityscapes_root:
        test = First(cityscapes.Cityscapes(args.cityscapes_root, args.cityscapes_split,
                                            height=height, width=width), args.limit)
    if args.smiyc_root:
        name, split, kind = SMIYC[args.smiyc_dataset]
        kw = dict(split=args.smiyc_split or split, height=height, width=width)
        if name == "FishyscapesLAF":
            if args.laf_root is None:
                raise SystemExit("--smiyc-dataset fishyscapes_laf needs --laf-root")
            data = smiyc.FishyscapesLAF(args.smiyc_root, args.laf_root, **kw)
        else:
            data = getattr(smiyc, name)(args.smiyc_root, **kw)
        ood = First(data, args.limit)
        track = ood_metrics.ANOMALY_TRACK if kind == "anomaly" else ood_metrics.OBSTACLE_TRACK
    return test, ood, track


def main(argv=None):
    args = parse_args(argv)
    cfg = config_of(args)
    real = bool(args.cityscapes_root or args.smiyc_root)
    if real:
        models, (h, w), palette = checkpoint_models(args)
        cfg = dataclasses.replace(cfg, height=h, width=w, ensemble=1 + len(
            args.ensemble_checkpoints or []))
        test, ood, track = real_sources(args, h, w)
        track = bench.scaled_track(h, w, track)
        configs, dataset = {}, "real"
    else:
        from jaxdepth.data.segmentation import SYNTHETIC_PALETTE, SyntheticSegmentation

        configs = model_configs(cfg)
        models = {name: recipes.train_or_load(c, args.checkpoints, train=not args.no_train)
                  for name, c in configs.items()}
        test = SyntheticSegmentation("test", seed=cfg.seed, height=cfg.height, width=cfg.width,
                                     size=cfg.test_images)
        ood = SyntheticSegmentation("ood", seed=cfg.seed, height=cfg.height, width=cfg.width,
                                    size=cfg.ood_images)
        track, palette, dataset = bench.scaled_track(cfg.height, cfg.width), SYNTHETIC_PALETTE, \
            "synthetic"
    fn, model_of = method_maps(models, cfg)
    rows = [Row("all", "all", fn)]
    methods = [m for m in ["softmax", "entropy", "mc_dropout", "ensemble", *pgn_methods(cfg)]
               if m in model_of]
    num_classes = int(models["plain"][0].__self__.num_classes)
    tables, result = [], {"pixel": [], "segment": [], "ood": []}
    miou = {}
    if test is not None:
        test_maps = bench.collect(rows, test, model_of, batch_size=cfg.eval_batch, seed=cfg.seed)
        miou = {m: bench.miou_of(test_maps.probs[m], test_maps.label, num_classes)
                for m in test_maps.probs}
        result["pixel"] = bench.pixel_rows(test_maps, methods)
        result["segment"] = bench.segment_rows(test_maps, "plain", pgn_methods(cfg),
                                               seed=cfg.seed)
        tables += [
            "mIoU on the test split: " + ", ".join(f"{k} {v:.3f}" for k, v in miou.items()),
            bench.format_rows(result["pixel"], [("ece", "ECE ↓"), ("ause", "AuSE ↓"),
                                                ("ece_reference", "ECE(ref)"),
                                                ("ause_reference", "AuSE(ref)")],
                              "Table 1 — pixel-wise uncertainty (test split)"),
            bench.format_rows(result["segment"], [("meta_auroc", "AuROC ↑"),
                                                  ("meta_accuracy", "ACC ↑"), ("meta_r2", "R² ↑"),
                                                  ("segments", "segments")],
                              "Fig. 3 — segment-wise meta classification / regression (MetaSeg)")]
    if ood is not None:
        ood_maps = bench.collect(rows, ood, model_of, batch_size=cfg.eval_batch, seed=cfg.seed)
        result["ood"] = bench.ood_rows(ood_maps, methods, track=track)
        tables.append(bench.format_rows(
            result["ood"], [("auprc", "AuPRC ↑"), ("auroc", "AuROC ↑"), ("fpr95", "FPR95 ↓"),
                            ("siou", "sIoU ↑"), ("ppv", "PPV ↑"), ("f1", "mean F1 ↑")],
            f"Tables 2–3 — OoD segmentation (ood split; components ≥ {track.min_pred} px "
            f"predicted, ≥ {track.min_gt} px ground truth)"))
    timing = runtime_rows(models, cfg) if "drop" in models else []
    if timing:
        tables.append(bench.format_rows(timing, [("s_per_frame", "s/frame"),
                                                 ("overhead", "× forward")],
                                        f"Table 4 — runtime per frame at {cfg.height}x{cfg.width} "
                                        f"({jax.default_backend()}, batch 1)"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(tables)
    print(text)
    (out / "tables.txt").write_text(text + "\n")
    written = ["results.json", "tables.txt"]
    if ood is not None:
        best = max((r for r in result["ood"] if r["method"].startswith("pgn")),
                   key=lambda r: r["auprc"])
        save_examples(out / "examples.png", ood_maps, ood, cfg, best["method"], palette)
        save_pr_curves(out / "pr_curves.png", result["ood"])
        written += ["examples.png", "pr_curves.png"]
    saved = {"config": {**dataclasses.asdict(cfg), "quick": bool(args.quick),
                        "dataset": dataset, "miou": miou, "track": track._asdict(),
                        "checkpoints": {k: recipes.run_name(c) for k, c in configs.items()}},
             "pixel": _strip(result["pixel"]), "segment": result["segment"],
             "ood": _strip(result["ood"]), "runtime": timing}
    (out / "results.json").write_text(json.dumps(saved, indent=2, default=float))
    print(f"\nwrote {', '.join(str(out / n) for n in written)}")
    return saved


if __name__ == "__main__":
    main()
