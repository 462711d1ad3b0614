"""Which layers, and how to combine them? The gradient map of Monodepth2 and MonoViT
models, M and S (flip reference), at every single tap (encoder `enc0`…`enc4` and every
decoder tap), and for layer sets combined with each aggregate of
`jaxdepth.uncertainty.maps` (`std`: the public ECCV code's rule; `mean`, `max`, `rank`:
per-layer percentile ranks averaged, `zmean`: per-layer z-scores averaged).

    python experiments/ablation_layers.py [--quick] [--models "MonoViT M" ...]

Models: `jaxdepth.benchmarks.ablation` (shared with `ablation_references.py` through
`--checkpoints`). Prints the table and the best single tap and best set × aggregate per
model, writes `results.json` (`{"config", "rows": [{"model", "taps", "aggregate",
"abs_rel": {"ause", "aurg"}, "rmse", "a1", …}]}`), `table.txt` and
`layers_<metric>.png` into `--out`. The multi-layer rules are this library's readings of
the paper's "normalised, layer-robust" score (docs/design.md), not its numbers.
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

from jaxdepth import cli, report, viz  # noqa: E402
from jaxdepth.benchmarks import ablation  # noqa: E402

AGGREGATES = ("std", "mean", "max", "rank", "zmean")
#: layer sets per architecture: around the default tap, the decoder's later half, all
#: decoder convs
SETS = {"DepthNet": {"dec4+6+8": ("dec4", "dec6", "dec8"),
                     "dec6-9": ("dec6", "dec7", "dec8", "dec9"),
                     "dec0-9": tuple(f"dec{i}" for i in range(10))},
        "MonoViT": {"X13+04a+04b": ("X_13_Conv_0", "X_04_Conv_0", "X_04_Conv_1"),
                    "X22+13+04a": ("X_22_Conv_0", "X_13_Conv_0", "X_04_Conv_0"),
                    "decoder": None}}


def layer_sets(model) -> dict:
    sets = dict(SETS[type(model).__name__])
    if sets.get("decoder", ()) is None:  # every decoder conv (the heads' logits left out)
        sets["decoder"] = tuple(t for t in model.tap_names
                                if not t.startswith(("enc", "disp", "depth")))
    return sets


def variants(name, model, single=None, sets=None, aggregates=AGGREGATES):
    """Single taps (`single`: names, default every tap; `()`: none), then the layer sets
    (`sets`: names of `layer_sets(model)`, default all) × `aggregates`."""
    out = [ablation.Variant(tap, dict(taps=(tap,)), {"taps": [tap], "aggregate": None})
           for tap in (model.tap_names if single is None else
                       [t for t in model.tap_names if t in single])]
    for set_name, taps in layer_sets(model).items():
        if sets is not None and set_name not in sets:
            continue
        out += [ablation.Variant(f"{set_name} {agg}", dict(taps=taps, aggregate=agg),
                                 {"taps": list(taps), "aggregate": agg, "set": set_name})
                for agg in aggregates]
    return out


def best(rows, metric: str = "rmse") -> str:
    """Per model: the best single tap and the best set × aggregate by AUSE."""
    lines = [f"Best by AUSE ({metric}):"]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        single = min((r for r in mine if r["aggregate"] is None),
                     key=lambda r: r[metric]["ause"], default=None)
        multi = min((r for r in mine if r["aggregate"] is not None),
                    key=lambda r: r[metric]["ause"], default=None)
        parts = [f"{p['method']} {p[metric]['ause']:.3f}" for p in (single, multi) if p]
        lines.append(f"  {model:<13} single tap: {parts[0] if single else '-'}; "
                     f"set: {parts[-1] if multi else '-'}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_ablation_arguments(p, out="runs/ablation_layers")
    p.add_argument("--taps", nargs="*", default=None,
                   help="single taps to score (default: every tap; none: only the sets)")
    p.add_argument("--sets", nargs="*", default=None,
                   help="layer sets to score (default: all of `SETS`; none: only single taps)")
    p.add_argument("--aggregates", nargs="+", choices=AGGREGATES, default=list(AGGREGATES))
    return p.parse_args(argv)


def config_of(args) -> ablation.AblationConfig:
    return cli.ablation_config(args)


def main(argv=None):
    args = parse_args(argv)
    cfg = config_of(args)
    rows, curves = ablation.run(
        cfg, lambda name, model: variants(name, model, args.taps, args.sets, args.aggregates),
        args.checkpoints)
    out = Path(args.out)
    title = (f"Layer ablation (flip reference; procedural scenes {cfg.height}×{cfg.width}, "
             f"{cfg.test_images} test images, {cfg.steps} steps/model)")
    report.write_results(out, rows, curves, {**dataclasses.asdict(cfg), "quick": args.quick},
                         title, paper=False, tables=[best(rows)],
                         note=ablation.collapsed_note(rows))
    for metric in ("abs_rel", "rmse"):
        viz.plot_ablation(out / f"layers_{metric}.png", rows, metric=metric,
                          title="Gradient uncertainty: which layers, which aggregate")
    return rows


if __name__ == "__main__":
    main()
