"""Which reference? ECCV Table 5's ablation ("Revisiting" adds the feature references):
the gradient map of Monodepth2 and MonoViT models, M and S, at each model's default tap
with the reference taken from the ground truth (GT), the horizontal flip, a grayscale
copy, Gaussian noise, rotations by 5/10/20°, or an encoder feature (`enc4`) perturbed by
Gaussian noise or channel dropout.

    python experiments/ablation_references.py [--quick] [--models "Monodepth2 M" ...]

Models: `jaxdepth.benchmarks.ablation` (trained once, reused from `--checkpoints` with
`ablation_layers.py`). Prints the table, writes `results.json` (`{"config", "rows":
[{"model", "reference", "aggregate", "abs_rel": {"ause", "aurg"}, "rmse", "a1", …}]}`),
`table.txt` and `references_<metric>.png` into `--out`. The feature references are this
library's readings of the paper's "feature augmentation" (docs/design.md), not its
numbers.
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import dataclasses  # noqa: E402
from pathlib import Path  # noqa: E402

from jaxdepth import cli, report, viz  # noqa: E402
from jaxdepth.benchmarks import ablation  # noqa: E402

#: (label, gradient_uncertainty keyword arguments): Table 5's rows, then the features'
REFERENCES = (("GT", dict(reference="gt")), ("Flip", dict(reference="flip")),
              ("Gray", dict(reference="gray")), ("Noise", dict(reference="noise")),
              ("Rot-5", dict(reference="rot", rot_angle=5.0)),
              ("Rot-10", dict(reference="rot", rot_angle=10.0)),
              ("Rot-20", dict(reference="rot", rot_angle=20.0)),
              ("Feat-noise", dict(reference="feature_noise", feature_tap="enc4",
                                  feature_scale=0.1)),
              ("Feat-drop", dict(reference="feature_dropout", feature_tap="enc4",
                                 feature_scale=0.1)))


def variants(name, model, chosen=None):
    return [ablation.Variant(label, dict(kw, taps=(model.default_tap,)),
                             {"reference": label, "taps": [model.default_tap],
                              "aggregate": None, "options": kw})
            for label, kw in REFERENCES if chosen is None or label in chosen]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_ablation_arguments(p, out="runs/ablation_references")
    p.add_argument("--references", nargs="+", choices=[r for r, _ in REFERENCES],
                   help="a subset of the references (default: all)")
    return p.parse_args(argv)


def config_of(args) -> ablation.AblationConfig:
    return cli.ablation_config(args)


def main(argv=None):
    args = parse_args(argv)
    cfg = config_of(args)
    rows, curves = ablation.run(cfg, lambda name, model: variants(name, model, args.references),
                                args.checkpoints)
    out = Path(args.out)
    title = (f"Reference ablation (ECCV Table 5 layout; procedural scenes {cfg.height}×"
             f"{cfg.width}, {cfg.test_images} test images, {cfg.steps} steps/model)")
    report.write_results(out, rows, curves, {**dataclasses.asdict(cfg), "quick": args.quick},
                         title, paper=False, note=ablation.collapsed_note(rows))
    for metric in ("abs_rel", "rmse"):
        viz.plot_ablation(out / f"references_{metric}.png", rows, metric=metric,
                          title="Gradient uncertainty: which reference")
    return rows


if __name__ == "__main__":
    main()
