"""The paper's exact protocols on the real datasets.

- `jaxdepth.benchmarks.kitti`: Tables 1 (monocular) and 2 (stereo) of Hornauer &
  Belagiannis (ECCV 2022) on KITTI `eigen_benchmark` (or `eigen`), from converted
  Monodepth2 / Poggi et al. checkpoints: `run(KittiConfig(...))`;
  `experiments/kitti_grad_unc.py --kitti-root ...`.
- `jaxdepth.benchmarks.reference`: the KITTI reference mode (`reproduce_reference=True`):
  Poggi et al.'s uint16 storage round trip and evaluation rules, and the reference's Var.
- `jaxdepth.benchmarks.nyu`: Table 3 on NYU Depth V2 (FastDepth HDF5) from metric-depth
  checkpoints: `run(NyuConfig(...))`; `experiments/nyu_grad_unc.py` trains the base
  models through `jaxdepth.train.runs` when no weights are given.
- `jaxdepth.benchmarks.protocol`: what they share (checkpoint layout, rows of models ×
  methods from `jaxdepth.uncertainty.methods`, the published numbers, `ProtocolResult`).

`run(cfg)` returns a `ProtocolResult` (rows in the `results.json` row layout of
`jaxdepth.evaluation.Evaluator.rows`, curves, config, title) and prints only progress;
`jaxdepth.report.write_results` prints the tables and writes `results.json` and the
plots. Protocol details: docs/protocols.md.
"""
__all__ = ["kitti", "nyu", "protocol", "reference"]
