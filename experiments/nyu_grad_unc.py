"""Table 3 of the gradient-uncertainty paper (Hornauer & Belagiannis, ECCV 2022) on
NYU Depth V2: Drop, Post (+ Var, In-Drop, Grad) and Log (+ Var, In-Drop, Grad).

    python experiments/nyu_grad_unc.py --nyu-root nyu_data                  # train, then evaluate
    python experiments/nyu_grad_unc.py --nyu-root nyu_data --weights ckpt/NYU   # converted weights

`--nyu-root` is FastDepth's `nyudepthv2` folder (or its parent). Without `--weights` the
three base models are trained with the NYU recipe (20 epochs, batch 12, Adam 1e-4 ×0.1
after epoch 15) into `--train-dir` and reused by later runs. Prints the table and writes
`results.json` and the sparsification PNGs into `--out`. Options and the `--weights`
layout: `jaxdepth.benchmarks.nyu`.
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402

from jaxdepth.benchmarks import nyu  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Gradient uncertainty vs. baselines on NYU Depth V2 (paper Table 3)")
    nyu.add_arguments(p)
    return p.parse_args(argv)


def main(argv=None):
    return nyu.run(parse_args(argv))


if __name__ == "__main__":
    main()
