"""The paper's exact protocols on the real datasets.

- `jaxdepth.benchmarks.kitti`: Tables 1 (monocular) and 2 (stereo) of Hornauer &
  Belagiannis (ECCV 2022) on KITTI `eigen_benchmark` (or `eigen`), from converted
  Monodepth2 / Poggi et al. checkpoints; `experiments/kitti_grad_unc.py --kitti-root ...`.
- `jaxdepth.benchmarks.nyu`: Table 3 on NYU Depth V2 (FastDepth HDF5), training the
  supervised base models when no weights are given; `experiments/nyu_grad_unc.py`.

Both expose `add_arguments(parser)` and `run(args) -> rows` (the `results.json` row
layout of `jaxdepth.evaluation.Evaluator.rows`).
"""
__all__ = ["kitti", "nyu"]
