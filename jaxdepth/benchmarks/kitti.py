"""KITTI protocol of the gradient-uncertainty paper: Tables 1 (M) and 2 (S).

    result = run(KittiConfig(kitti_root="kitti_data", weights="ckpt/M",
                             split="eigen_benchmark", reproduce_reference=False))
    jaxdepth.report.write_results("runs/kitti", result.rows, result.curves, result.config,
                                  result.title)
    # command line: python experiments/kitti_grad_unc.py --kitti-root kitti_data --weights ckpt/M

`run(cfg)` evaluates every row of Table 1/2 on the KITTI Eigen test split with the
improved ground truth (`eigen_benchmark`, 652 images, gt > 0, no crop, 80 m cap) or the
projected velodyne (`eigen`, 697 images, Garg crop, 1e-3 < gt < 80) and returns a
`ProtocolResult` (rows in the `results.json` layout, each with the published numbers
under `paper`; mean sparsification curves; the config; a title). It prints progress
lines only: the tables and plots are the caller's (`jaxdepth.report`).

`weights` layout (converted jaxdepth checkpoints, see `jaxdepth convert monodepth2`):

    WEIGHTS/post/  plain (Poggi's Monodepth2-Post)     -> Post: Base, Var, In-Drop, Grad
    WEIGHTS/log/   uncertconv (Monodepth2-Log)          -> Log:  Base, Var, In-Drop, Grad(λ)
    WEIGHTS/self/  uncertconv (Monodepth2-Self)         -> Self: Base, Var, In-Drop, Grad(λ)
    WEIGHTS/drop/  plain, dropout-trained (-Drop)       -> Drop: Base (MC dropout, 8 passes)
    WEIGHTS/boot/  ensemble of 8 plain members (-Boot)  -> Boot: Base (mean / variance)

Missing folders are skipped (`models` picks a subset and insists on it). `weights`
may also be one checkpoint: its kind is the folder name if that is one of the five,
else the one kind in `models`, else inferred (ensemble -> boot, log σ heads -> log,
plain -> post), or a `{model: checkpoint dir}` mapping. All models must share the input
size stored in their checkpoints (640×192 for the released ones). The row methods
(`jaxdepth.uncertainty.methods`, options `cfg.methods`): Base = the model's own
uncertainty (Post: flip post-processing |d − flip(d_flip)| with the blended depth;
Log/Self: σ = exp(log σ); Drop: variance of 8 dropout passes; Boot: variance over
members), Var = variance over the flip/gray/noise/rotation test-time augmentations,
In-Drop = 8 inference-only dropout passes (p = 0.2), Grad = gradient uncertainty (tap
`dec6`, flip reference, channel max, λ = `methods.variance_weight` = 2 for Log/Self,
0 for Post). Spreads are taken in disparity. Var, In-Drop and Grad use the single-pass
depth, as the reference.

Supervision: `mono` scales every prediction per image by median(gt)/median(pred) over
the valid pixels; `stereo` multiplies by 5.4 (default: from the checkpoints'
`use_stereo`). Predictions are clamped to [1e-3, 80].

Two modes (docs/protocols.md):

- default (jaxdepth protocol, `jaxdepth.evaluation`): disparity and uncertainty at the
  network size are resized bilinearly (half-pixel centres, float32) to the native gt
  size, depth = 1/disparity, scaled (mono: the median ratio over the evaluated pixels,
  i.e. inside the Garg crop for `eigen`, as Monodepth2), clamped; metrics and AUSE/AURG
  per image (`jaxdepth.metrics`, exact integer percentile rule), averaged over images.
- `reproduce_reference=True`: the uint16 storage round trip and evaluation rules of
  Poggi et al.'s `generate_maps.py` / `evaluate.py`, so that numbers compare one for one
  with the published tables (`jaxdepth.benchmarks.reference`, which lists what is and
  is not reproduced); the stored PNG maps go to `cfg.out/reference/`.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import jax

from jaxdepth.benchmarks import protocol as _p
from jaxdepth.benchmarks.protocol import (ProtocolResult, is_model_dir, load_model,  # noqa: F401
                                          model_kind, paper_row)
from jaxdepth.benchmarks.reference import (FX_NORM, MAX_DEPTH, MIN_DEPTH,  # noqa: F401
                                           SPARSE_METRICS, STEREO_FACTOR, ReferenceEvaluator,
                                           load_disparity, load_uncertainty, mono_ratio,
                                           read_png16, reference_depth_errors, reference_mask,
                                           reference_sparsification, reference_var,
                                           resize_bilinear, store_disparity, store_uncertainty,
                                           to_uint16, write_png16)
from jaxdepth.evaluation import KITTI_BENCHMARK, KITTI_EIGEN, Evaluator, evaluate
from jaxdepth.uncertainty.methods import MethodOptions

__all__ = ["MODELS", "LABELS", "METHODS", "PAPER", "KittiConfig", "run", "resolve_weights",
           "load_model", "model_kind", "paper_row", "ProtocolResult", "kitti_test_source",
           # the reference mode, re-exported from jaxdepth.benchmarks.reference
           "reference_var", "to_uint16", "store_disparity", "load_disparity",
           "store_uncertainty", "load_uncertainty", "mono_ratio", "resize_bilinear",
           "reference_mask", "reference_depth_errors", "reference_sparsification",
           "ReferenceEvaluator", "write_png16", "read_png16"]

#: model folders in the row order of Tables 1 and 2
MODELS = ("drop", "boot", "post", "log", "self")
LABELS = {"drop": "Drop", "boot": "Boot", "post": "Post", "log": "Log", "self": "Self"}
#: the table's columns of each model
METHODS = {"drop": ("Base",), "boot": ("Base",), "post": ("Base", "Var", "In-Drop", "Grad"),
           "log": ("Base", "Var", "In-Drop", "Grad"), "self": ("Base", "Var", "In-Drop", "Grad")}
SPLITS = ("eigen_benchmark", "eigen")

# Published numbers (paper Tables 1 and 2): AUSE, AURG for abs_rel, rmse, δ≥1.25; Inf [ms].
PAPER = {
    "mono": {
        ("Drop", "Base"): (0.056, 0.000, 2.568, 0.944, 0.097, 0.002, 47.12),
        ("Boot", "Base"): (0.058, 0.001, 3.982, -0.743, 0.084, -0.001, 47.12),
        ("Post", "Base"): (0.044, 0.012, 2.864, 0.412, 0.056, 0.022, 11.78),
        ("Post", "Var"): (0.055, 0.003, 3.575, -0.210, 0.074, 0.006, 29.45),
        ("Post", "In-Drop"): (0.031, 0.027, 0.871, 2.495, 0.029, 0.051, 53.01),
        ("Post", "Grad"): (0.029, 0.029, 0.540, 2.825, 0.025, 0.054, 18.84),
        ("Log", "Base"): (0.039, 0.020, 2.562, 0.916, 0.044, 0.038, 5.89),
        ("Log", "Var"): (0.055, 0.004, 3.686, -0.209, 0.075, 0.008, 29.45),
        ("Log", "In-Drop"): (0.045, 0.014, 1.916, 1.561, 0.056, 0.027, 53.01),
        ("Log", "Grad"): (0.026, 0.033, 0.819, 2.658, 0.024, 0.059, 18.84),
        ("Self", "Base"): (0.030, 0.026, 2.009, 1.266, 0.030, 0.045, 5.89),
        ("Self", "Var"): (0.055, 0.001, 3.632, -0.357, 0.073, 0.002, 29.45),
        ("Self", "In-Drop"): (0.033, 0.024, 1.091, 2.184, 0.031, 0.044, 53.01),
        ("Self", "Grad"): (0.024, 0.032, 0.494, 2.780, 0.017, 0.057, 18.84),
    },
    "stereo": {
        ("Drop", "Base"): (0.103, -0.029, 6.163, -2.169, 0.231, -0.080, 47.12),
        ("Boot", "Base"): (0.028, 0.029, 2.291, 0.964, 0.031, 0.048, 47.12),
        ("Post", "Base"): (0.036, 0.020, 2.523, 0.736, 0.044, 0.034, 11.78),
        ("Post", "Var"): (0.054, 0.003, 3.672, -0.327, 0.074, 0.006, 29.45),
        ("Post", "In-Drop"): (0.061, -0.004, 3.366, -0.021, 0.089, -0.009, 53.01),
        ("Post", "Grad"): (0.022, 0.035, 0.510, 2.835, 0.023, 0.057, 18.84),
        ("Log", "Base"): (0.022, 0.036, 0.938, 2.402, 0.018, 0.061, 5.89),
        ("Log", "Var"): (0.054, 0.003, 3.639, -0.299, 0.073, 0.006, 29.45),
        ("Log", "In-Drop"): (0.073, -0.016, 4.063, -0.724, 0.107, -0.028, 53.01),
        ("Log", "Grad"): (0.019, 0.038, 0.490, 2.849, 0.018, 0.061, 18.84),
        ("Self", "Base"): (0.022, 0.035, 1.679, 1.642, 0.022, 0.056, 5.89),
        ("Self", "Var"): (0.056, 0.001, 3.728, -0.408, 0.076, 0.002, 29.45),
        ("Self", "In-Drop"): (0.076, -0.019, 4.173, -0.852, 0.109, -0.031, 53.01),
        ("Self", "Grad"): (0.022, 0.035, 0.515, 2.806, 0.023, 0.055, 18.84),
    },
}


@dataclasses.dataclass(frozen=True)
class KittiConfig:
    """One evaluation of Table 1/2 (see the module docstring).

    `kitti_root`: KITTI raw (`<root>/<date>/<drive>_sync/...`); `weights`: the checkpoint
    layout above; `supervision`: `mono` | `stereo` | None (the checkpoints' `use_stereo`);
    `split`: `eigen_benchmark` | `eigen` (decides the gt and masks); `split_file`: a test
    list (`<folder> <frame> <side>` lines) instead of the packaged one; `gt_root`: the
    improved gt in the depth-completion layout if it is not inside the raw tree;
    `image_ext`: `.png` (or `.jpg` for Monodepth2's converted copy); `models`: a subset of
    `MODELS`; `limit`: the first N test images; `eval_batch`: images per network call
    (the last batch is padded); `seed`: PRNG of noise and dropout (batch b uses
    `fold_in(PRNGKey(seed), b)`); `methods`: the methods' options (λ = 2 for the log σ
    models, Post gets 0); `out`: where the reference mode writes its PNG maps
    (`out/reference/<model>_<method>/raw/`)."""
    kitti_root: str | Path
    weights: str | Path | Mapping
    supervision: str | None = None
    split: str = "eigen_benchmark"
    split_file: str | Path | None = None
    gt_root: str | Path | None = None
    image_ext: str = ".png"
    reproduce_reference: bool = False
    models: tuple | None = None
    limit: int | None = None
    eval_batch: int = 1
    seed: int = 0
    methods: MethodOptions = MethodOptions(variance_weight=2.0)
    out: str | Path = "runs/kitti_protocol"

    def __post_init__(self):
        if self.models is not None:
            object.__setattr__(self, "models", tuple(self.models))
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.supervision not in (None, "mono", "stereo"):
            raise ValueError(f"supervision must be 'mono', 'stereo' or None, got "
                             f"{self.supervision!r}")
        if int(self.eval_batch) < 1:
            raise ValueError(f"eval_batch must be at least 1, got {self.eval_batch}")


def resolve_weights(path, models=None, names=MODELS) -> dict[str, Path]:
    """`{model: checkpoint dir}` in table order from `weights` (see the module doc)."""
    return _p.resolve_weights(path, models, names=names)


def _check_kind(name: str, meta, path) -> None:
    ens = bool(meta.get("ensemble"))
    log = bool(meta["model"].get("log_sigma"))
    if name == "boot" and not ens:
        raise ValueError(f"{path}: boot/ must be an ensemble checkpoint (convert the boot_* "
                         "folders together with `jaxdepth convert monodepth2 --folder`)")
    if name != "boot" and ens:
        raise ValueError(f"{path}: an ensemble checkpoint can only be the boot/ model")
    if name in ("log", "self") and not log:
        raise ValueError(f"{path}: {name}/ needs log σ heads (an uncertconv checkpoint)")
    if name in ("post", "drop") and log:
        raise ValueError(f"{path}: {name}/ must be a plain decoder, this one has log σ heads")


def kitti_test_source(cfg: KittiConfig, height: int, width: int):
    """The KITTI test source of `cfg.split` / `split_file` / `limit` at the network size."""
    from jaxdepth.data.kitti import KittiTest

    eigen = cfg.split == "eigen"
    kw = dict(height=height, width=width, gt_root=cfg.gt_root,
              gt="velodyne" if eigen else "improved", crop="garg" if eigen else "none",
              image_ext=cfg.image_ext)
    source = str(cfg.split_file) if cfg.split_file else cfg.split
    ds = KittiTest(str(cfg.kitti_root), source, **kw)
    if cfg.limit is not None and cfg.limit < len(ds):
        ds = KittiTest(str(cfg.kitti_root), source, entries=ds.entries[:cfg.limit], **kw)
    return ds


def _supervision(given, metas) -> str:
    if given:
        return given
    flags = {m.get("use_stereo") for m in metas.values()}
    if len(flags) == 1 and None not in flags:
        return "stereo" if flags.pop() else "mono"
    raise ValueError("cannot tell mono from stereo models (the checkpoints' use_stereo is "
                     f"{sorted(map(str, flags))}); pass supervision='mono' or 'stereo' "
                     "(--supervision)")


def run(cfg: KittiConfig) -> ProtocolResult:
    """Evaluate Table 1/2 on KITTI (see the module docstring)."""
    t_start = time.perf_counter()
    reference = bool(cfg.reproduce_reference)
    weights = resolve_weights(cfg.weights, cfg.models)
    models = {}
    for name, path in weights.items():
        models[name] = load_model(path)
        _check_kind(name, models[name][2], path)
    height, width = _p.input_size(models)
    supervision = _supervision(cfg.supervision, {k: v[2] for k, v in models.items()})
    source = kitti_test_source(cfg, height, width)
    base = KITTI_EIGEN if cfg.split == "eigen" else KITTI_BENCHMARK
    protocol = dataclasses.replace(base, scaling="median" if supervision == "mono" else "stereo")
    # the reference's Var fills rotated-out pixels with the disparity of a zero sigmoid
    fill = 1.0 / float(next(iter(models.values()))[0].max_depth) if reference else None
    rows = _p.build_rows(models, METHODS, cfg.methods, labels=LABELS, order=MODELS,
                         space="disp", var_fill=fill)
    print(f"KITTI {cfg.split}: {len(source)} images, {supervision} supervision, models "
          f"{', '.join(f'{k}={v}' for k, v in weights.items())}, input {height}×{width}, "
          f"{'reference' if reference else 'jaxdepth'} protocol", flush=True)

    if reference:
        ev = ReferenceEvaluator(cfg.split, supervision, Path(cfg.out) / "reference")

        def add(row, est, sample, i):
            ev.add(row.model, row.method, 1.0 / est.depth[0, ..., 0], est.uncertainty[0, ..., 0],
                   sample["depth"][..., 0], i, row.normalize)
    else:
        ev = Evaluator(protocol)

        def add(row, est, sample, i):
            ev.add(row.model, row.method, est, sample["depth"][None])

    evaluate(rows, source, batch_size=int(cfg.eval_batch), seed=int(cfg.seed),
             add=_p.per_image(add), timer=lambda row, s, n: ev.time(row.model, row.method, s, n))
    if reference and ev.skipped:
        warnings.warn(f"{ev.skipped} image/row pairs had no valid gt pixel and were skipped",
                      stacklevel=2)
    results = _p.attach_paper(ev.rows(), PAPER[supervision])
    config = dataclasses.asdict(cfg)
    config.update(
        dataset="kitti", supervision=supervision, n_images=len(source),
        input_size=[height, width], mode="reference" if reference else "jaxdepth",
        protocol=dataclasses.asdict(protocol),
        models=_p.describe_models(weights, models, "variant", "ensemble", "use_stereo", "model"),
        device=jax.devices()[0].device_kind, seconds=time.perf_counter() - t_start,
        table="Table 1 (monocular)" if supervision == "mono" else "Table 2 (stereo)")
    title = (f"KITTI {cfg.split} ({len(source)} images), {supervision} supervision, "
             f"{'reference (uint16 round trip)' if reference else 'jaxdepth'} protocol")
    return ProtocolResult(results, ev.curves(), _p.jsonable(config), title)

