"""KITTI protocol of the gradient-uncertainty paper: Tables 1 (M) and 2 (S).

    python experiments/kitti_grad_unc.py --kitti-root kitti_data --weights ckpt/M \\
        [--supervision mono|stereo] [--split eigen_benchmark|eigen] [--gt-root DIR] \\
        [--reproduce-reference] [--models post log ...] [--limit N] [--out DIR]

`run(args)` evaluates every row of Table 1/2 on the KITTI Eigen test split with the
improved ground truth (`eigen_benchmark`, 652 images, gt > 0, no crop, 80 m cap) or the
projected velodyne (`eigen`, 697 images, Garg crop, 1e-3 < gt < 80), prints the table
(`jaxdepth.evaluation.format_table`), writes `results.json` (the layout of the synthetic
job: `{"config": {...}, "rows": [{"model", "method", "abs_rel": {"ause", "aurg"}, "rmse",
"a1", "ms_per_image", "depth": {...}, "paper": {...}}]}`) and the sparsification-error
PNGs into `--out`.

`--weights` layout (converted jaxdepth checkpoints, see `jaxdepth convert monodepth2`):

    WEIGHTS/post/  plain (Poggi's Monodepth2-Post)     -> Post: Base, Var, In-Drop, Grad
    WEIGHTS/log/   uncertconv (Monodepth2-Log)          -> Log:  Base, Var, In-Drop, Grad(λ)
    WEIGHTS/self/  uncertconv (Monodepth2-Self)         -> Self: Base, Var, In-Drop, Grad(λ)
    WEIGHTS/drop/  plain, dropout-trained (-Drop)       -> Drop: Base (MC dropout, 8 passes)
    WEIGHTS/boot/  ensemble of 8 plain members (-Boot)  -> Boot: Base (mean / variance)

Missing folders are skipped (`--models` picks a subset and insists on it). `--weights`
may also be one checkpoint: its kind is the folder name if that is one of the five,
else `--models KIND`, else inferred (ensemble -> boot, log σ heads -> log, plain -> post).
All models must share the input size stored in their checkpoints (640×192 for the
released ones). The row methods: Base = the model's own uncertainty (Post: flip
post-processing |d − flip(d_flip)| with the blended depth; Log/Self: σ = exp(log σ);
Drop: variance of 8 dropout passes; Boot: variance over members), Var = variance over
the flip/gray/noise/rotation test-time augmentations, In-Drop = 8 inference-only dropout
passes (p = 0.2), Grad = gradient uncertainty (tap `dec6`, flip reference, channel max,
λ = 2 for Log/Self). Var, In-Drop and Grad use the single-pass depth, as the reference.

Supervision: `mono` scales every prediction per image by median(gt)/median(pred) over
the valid pixels; `stereo` multiplies by 5.4 (default: from the checkpoints'
`use_stereo`). Predictions are clamped to [1e-3, 80].

Two modes:

- default (jaxdepth protocol, `jaxdepth.evaluation`): disparity and uncertainty at the
  network size are resized bilinearly (half-pixel centres, float32) to the native gt
  size, depth = 1/disparity, scaled (mono: the median ratio over the evaluated pixels,
  i.e. inside the Garg crop for `eigen`, as Monodepth2), clamped; metrics and AUSE/AURG
  per image (`jaxdepth.metrics`, exact integer percentile rule), averaged over images.
- `--reproduce-reference`: the storage quirks of Poggi et al.'s `generate_maps.py` /
  `evaluate.py` (which GrUMoDepth reuses), so that numbers compare one for one with the
  published tables. Reproduced, per image:

  1. disparity stored at the network size as uint16 ``trunc(d·(0.58·W_gt)·256/10)``
     (stereo) or ``trunc(d·(0.58·W_gt)·256/r/10)`` (mono), in float32 with 0.58 as
     float32; ``r = median(gt[gt>0]) / median(resize(1/d)[gt>0])`` — the *depth*, not
     the disparity, is resized, and gt > 0 is used even for `eigen` (no crop, no cap);
     values outside [0, 65535] wrap modulo 2^16 like NumPy's float->uint16 cast on x86;
  2. uncertainty stored as uint16 ``trunc(u·65535)`` (float32), where u is min-max
     normalised per image at the network size for the Base rows of Log/Self/Drop/Boot,
     comes normalised from Var and In-Drop, is the bilinearly resized normalised
     gradient map for Grad, and is the RAW |Δdisparity| (not normalised; values above 1
     wrap) for Post's Base row;
  3. the PNGs are written to ``OUT/reference/<model>_<method>/raw/{disp,uncert}/
     %06d_10.png`` (the layout `evaluate.py --ext_disp_to_eval .../raw/` reads, so the
     reference's own script can evaluate them too) and read back: disparity
     ``v/256/(0.58·W_gt)·10``, uncertainty ``v/256``;
  4. both resized to the gt size with OpenCV's INTER_LINEAR arithmetic in float64
     (`resize_bilinear`: float32 weights, horizontal then vertical pass — it decides
     the ties among the quantised values); depth = 1/disparity (inf where the stored
     value is 0); no median scaling at evaluation (mono: the ratio is baked in; stereo:
     ×5.4); clamp [1e-3, 80];
  5. masks: `eigen_benchmark` gt > 0; `eigen` 1e-3 < gt < 80 and the Garg crop;
  6. AUSE/AURG as `compute_aucs`: thresholds ``np.percentile(-u, 2k)`` in float64 with
     NumPy's own rounding, pixels with ``-u >= t`` kept, 0 appended, trapezoidal areas;
     depth metrics as `compute_eigen_errors`; plain means over images;
  7. Var: pixels that the back-rotation leaves empty take the disparity of a zero
     sigmoid (1/max_depth; torchvision's zero fill of the sigmoid output) instead of
     being left out.

  Not reproduced, so those rows are close but not number for number: random draws
  (Var's noise, In-Drop/Drop dropout masks) come from JAX's PRNG, not PyTorch's; the
  rotation samples bilinearly (torchvision: nearest); OpenCV's SIMD/IPP kernels may
  round float32 resizes (the mono ratio) in the last bit. Shared with the default mode:
  images loaded with PIL and resized with LANCZOS to the network size, as Monodepth2
  (`--image-ext .jpg` reads Monodepth2's jpg-converted KITTI); per-image normalisation
  of the gradient map (the reference normalises per batch, of size 1).
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxdepth import uncertainty as U
from jaxdepth import viz
from jaxdepth.evaluation import KITTI_BENCHMARK, KITTI_EIGEN, Evaluator, format_table
from jaxdepth.uncertainty.maps import Estimate, normalize_per_image
from jaxdepth.uncertainty.transforms import make_reference

__all__ = ["MODELS", "LABELS", "PAPER", "add_arguments", "run", "resolve_weights",
           "load_model", "MethodOptions", "method_options", "model_methods", "build_rows",
           "reference_var", "evaluate_rows", "kitti_test_source", "to_uint16",
           "store_disparity", "load_disparity", "store_uncertainty", "load_uncertainty",
           "mono_ratio", "resize_bilinear", "reference_mask", "reference_depth_errors",
           "reference_sparsification", "ReferenceEvaluator", "write_png16", "read_png16"]

#: model folders in the row order of Tables 1 and 2
MODELS = ("drop", "boot", "post", "log", "self")
LABELS = {"drop": "Drop", "boot": "Boot", "post": "Post", "log": "Log", "self": "Self"}
METHODS = {"drop": ("Base",), "boot": ("Base",), "post": ("Base", "Var", "In-Drop", "Grad"),
           "log": ("Base", "Var", "In-Drop", "Grad"), "self": ("Base", "Var", "In-Drop", "Grad")}
FX_NORM = 0.58          #: Monodepth2's normalised focal length, used by the reference's storage
STEREO_FACTOR = 5.4     #: KITTI baseline 0.54 m / Monodepth2's 0.1
MIN_DEPTH, MAX_DEPTH = 1e-3, 80.0
SPARSE_METRICS = ("abs_rel", "rmse", "a1")

# Published numbers (paper Tables 1 and 2): AUSE, AURG for abs_rel, rmse, δ≥1.25; Inf [ms].
_T = ("abs_rel", "rmse", "a1")
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


def paper_row(values) -> dict:
    """`(a_ause, a_aurg, r_ause, r_aurg, d_ause, d_aurg, ms)` -> the results.json layout."""
    out = {m: {"ause": values[2 * i], "aurg": values[2 * i + 1]} for i, m in enumerate(_T)}
    out["ms_per_image"] = values[6]
    return out


# ----------------------------------------------------------------------------- CLI

def _add(parser, *flags, **kwargs):
    """`add_argument` unless one of the flags exists already (the experiment's parser
    defines the shared ones: --out, --seed, --taps, ...)."""
    if any(f in parser._option_string_actions for f in flags):
        return
    parser.add_argument(*flags, **kwargs)


def add_common_arguments(parser, out_default: str):
    """Options shared with the synthetic job and the NYU protocol (added only if absent)."""
    _add(parser, "--out", default=out_default, help="results directory")
    _add(parser, "--seed", type=int, default=0, help="PRNG seed of noise and dropout")
    _add(parser, "--eval-batch", type=int, default=None,
         help="images per network call (default 1; the last batch is padded)")
    _add(parser, "--taps", nargs="+", default=["dec6"], help="decoder taps of Grad (dec6)")
    _add(parser, "--reduce", default="max", choices=("max", "sum", "mean", "norm"),
         help="Grad channel reduction (max)")
    _add(parser, "--reference", default="flip", choices=("flip", "gray", "noise", "rot", "var"),
         help="Grad reference prediction (flip)")
    _add(parser, "--aggregate", default="std", choices=("std", "mean", "max"),
         help="Grad: combination of several taps (std)")
    _add(parser, "--variance-weight", type=float, default=2.0,
         help="λ of Eq. 5 for the Log/Self models' Grad (2.0)")
    _add(parser, "--samples", type=int, default=8, help="Drop / In-Drop passes (8)")
    _add(parser, "--in-drop-p", type=float, default=0.2, help="In-Drop dropout rate (0.2)")
    _add(parser, "--limit", type=int, default=None, help="evaluate only the first N test images")
    _add(parser, "--models", nargs="+", default=None, metavar="MODEL",
         help="evaluate only these models (subfolders of --weights)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The KITTI protocol's options (see the module docstring)."""
    _add(parser, "--kitti-root", default=None,
         help="KITTI raw root (<root>/<date>/<drive>_sync/...): run the paper's KITTI "
              "protocol (Tables 1/2) instead of the procedural-scene job")
    _add(parser, "--weights", default=None,
         help="converted checkpoint, or a folder with post/ log/ self/ drop/ boot/ checkpoints")
    _add(parser, "--supervision", choices=("mono", "stereo"), default=None,
         help="mono: per-image median scaling; stereo: ×5.4 (default: the checkpoints' "
              "use_stereo)")
    _add(parser, "--split", choices=("eigen_benchmark", "eigen"), default="eigen_benchmark",
         help="eigen_benchmark (improved gt, 652 images) or eigen (velodyne, Garg crop, 697)")
    _add(parser, "--split-file", default=None,
         help="test list to use instead of the packaged one (lines '<folder> <frame> <side>'); "
              "--split still decides the ground truth and masks")
    _add(parser, "--gt-root", default=None,
         help="folder of the improved gt in the depth-completion layout ({train,val}/<drive>/"
              "proj_depth/groundtruth/...) if it is not inside the raw tree")
    _add(parser, "--image-ext", default=".png",
         help="KITTI image extension (.png, or .jpg for Monodepth2's converted copy)")
    _add(parser, "--reproduce-reference", action="store_true",
         help="copy the reference's uint16 storage round trip and evaluation rules")
    add_common_arguments(parser, "runs/kitti_protocol")


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Settings of the uncertainty methods (the paper's values by default)."""
    taps: tuple = ("dec6",)
    reduce: str = "max"
    reference: str = "flip"
    aggregate: str = "std"
    variance_weight: float = 2.0
    samples: int = 8
    in_drop_p: float = 0.2
    rot_angle: float = 10.0
    noise_std: float = 0.01


def method_options(args) -> MethodOptions:
    d = MethodOptions()
    return MethodOptions(taps=tuple(getattr(args, "taps", None) or d.taps),
                         reduce=getattr(args, "reduce", None) or d.reduce,
                         reference=getattr(args, "reference", None) or d.reference,
                         aggregate=getattr(args, "aggregate", None) or d.aggregate,
                         variance_weight=float(_get(args, "variance_weight", d.variance_weight)),
                         samples=int(_get(args, "samples", d.samples)),
                         in_drop_p=float(_get(args, "in_drop_p", d.in_drop_p)))


def _get(args, name, default):
    value = getattr(args, name, None)
    return default if value is None else value


# ----------------------------------------------------------------------------- models

_MODULES: dict = {}


@functools.lru_cache(maxsize=None)
def _load_cached(path: str, stamp):
    from jaxdepth.convert import load_checkpoint

    model, variables, meta = load_checkpoint(path)
    # one module instance per architecture: jit caches key on `model.apply`, so models
    # of one architecture (Post and Drop, Log and Self) share their compiled functions
    model = _MODULES.setdefault(json.dumps(meta["model"], sort_keys=True), model)
    return model, variables, meta


def load_model(path):
    """`(model, variables, meta)` of a checkpoint (`jaxdepth.convert.load_checkpoint`),
    cached per path and `meta.json` time stamp."""
    p = Path(path).resolve()
    meta = p / "meta.json"
    return _load_cached(str(p), meta.stat().st_mtime_ns if meta.is_file() else None)


def _is_model_dir(p: Path) -> bool:
    if (p / "meta.json").is_file():
        return True
    return p.is_dir() and any(c.is_dir() and c.name.isdigit() and (c / "state").is_dir()
                              for c in p.iterdir())


def model_kind(meta) -> str:
    """`boot` for an ensemble, `log` for log σ heads, `post` otherwise."""
    if meta.get("ensemble"):
        return "boot"
    return "log" if meta["model"].get("log_sigma") else "post"


def resolve_weights(path, models=None, names=MODELS) -> dict[str, Path]:
    """`{model: checkpoint dir}` in table order from `--weights` (see the module doc)."""
    if path is None:
        raise ValueError("--weights is required: a converted checkpoint or a folder with "
                         f"{'/ '.join(names)}/ checkpoints")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--weights {p} does not exist")
    wanted = list(models) if models else None
    for m in wanted or []:
        if m not in names:
            raise ValueError(f"unknown model {m!r}; expected some of {names}")
    if _is_model_dir(p):
        if p.name.lower() in names:
            kind = p.name.lower()
        elif wanted and len(wanted) == 1:
            kind = wanted[0]
        elif wanted:
            raise ValueError(f"{p} is one checkpoint; --models must name one kind, got {wanted}")
        else:
            kind = model_kind(load_model(p)[2])
        if wanted and kind not in wanted:
            raise ValueError(f"{p} is a {kind!r} checkpoint but --models asks for {wanted}")
        return {kind: p}
    found = {}
    for name in names:
        for cand in (p / name, p / name.capitalize(), p / name.upper()):
            if cand.is_dir() and _is_model_dir(cand):
                found[name] = cand
                break
    if wanted:
        missing = [m for m in wanted if m not in found]
        if missing:
            raise FileNotFoundError(f"--weights {p} has no checkpoint for {missing} (expected "
                                    f"{', '.join(str(p / m) for m in missing)})")
        found = {m: found[m] for m in names if m in wanted}
    if not found:
        raise FileNotFoundError(
            f"--weights {p} is neither a jaxdepth checkpoint nor a folder with checkpoints "
            f"named {', '.join(n + '/' for n in names)} (convert the released weights with "
            "`jaxdepth convert monodepth2 --folder ... --out WEIGHTS/<model>`)")
    return found


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


# ----------------------------------------------------------------------------- methods

@functools.partial(jax.jit, static_argnames=("apply_fn", "space", "fill", "rot_angle",
                                             "noise_std"))
def _reference_var(apply_fn, variables, images, rng, *, space, fill, rot_angle, noise_std):
    b = images.shape[0]
    refs = [make_reference(n, rng, angle=rot_angle, noise_std=noise_std)
            for n in ("flip", "gray", "noise", "rot")]
    p = apply_fn(variables, jnp.concatenate([images] + [r.transform(images) for r in refs]))[space]
    preds = [p[:b]]
    for k, r in enumerate(refs):
        back, valid = r.inverse(p[(k + 1) * b:(k + 2) * b])
        preds.append(back if valid is None else jnp.where(valid, back, fill))
    u = jnp.var(jnp.stack(preds), 0, ddof=1)
    return Estimate(1.0 / p[:b] if space == "disp" else p[:b], normalize_per_image(u))


def reference_var(apply_fn, variables, images, *, rng, space="disp", fill=0.01,
                  rot_angle=10.0, noise_std=0.01) -> Estimate:
    """Var as the reference computes it: unbiased variance over the prediction and its
    flip / gray / noise / rotation references, where pixels the back-rotation leaves
    empty take the value `fill` (disparity of a zero sigmoid on KITTI, depth 0 on NYU)
    instead of being left out (`jaxdepth.uncertainty.var`); min-max normalised."""
    return _reference_var(apply_fn, variables, images, rng, space=space, fill=float(fill),
                          rot_angle=float(rot_angle), noise_std=float(noise_std))


@dataclasses.dataclass(frozen=True)
class Row:
    name: str          # model folder (post, log, ...)
    model: str         # label in the table (Post, Log, ...)
    method: str        # Base | Var | In-Drop | Grad
    fn: object         # fn(images, key) -> Estimate
    normalize: bool    # the reference min-max normalises this map before storing it


def model_methods(name: str, apply, variables, opts: MethodOptions, *, space: str = "disp",
                  reference: bool = False, var_fill: float = 0.01) -> dict:
    """`{method: fn(images, key) -> Estimate}` of one model (see the module docstring)."""
    if name == "drop":
        return {"Base": lambda x, k: U.mc_drop(apply, variables, x, rng=k, n=opts.samples,
                                              space=space)}
    if name == "boot":
        return {"Base": lambda x, k: U.ensemble(apply, variables, x, space=space)}
    if name == "post":
        fns = {"Base": lambda x, k: U.post(apply, variables, x, space=space)}
        lam = 0.0
    else:
        fns = {"Base": lambda x, k: U.predictive(apply, variables, x)}
        lam = opts.variance_weight
    if reference:
        fns["Var"] = lambda x, k: reference_var(apply, variables, x, rng=k, space=space,
                                                fill=var_fill, rot_angle=opts.rot_angle,
                                                noise_std=opts.noise_std)
    else:
        fns["Var"] = lambda x, k: U.var(apply, variables, x, rng=k, space=space,
                                        rot_angle=opts.rot_angle, noise_std=opts.noise_std)
    fns["In-Drop"] = lambda x, k: U.in_drop(apply, variables, x, rng=k, n=opts.samples,
                                            p=opts.in_drop_p, space=space)
    fns["Grad"] = lambda x, k: U.gradient_uncertainty(
        apply, variables, x, rng=k, variance_weight=lam, taps=opts.taps, reduce=opts.reduce,
        reference=opts.reference, aggregate=opts.aggregate)
    return fns


def build_rows(models: dict, opts: MethodOptions, *, space: str = "disp",
               reference: bool = False, var_fill: float = 0.01, methods=METHODS,
               labels=LABELS, order=MODELS) -> list[Row]:
    """The rows of the table for the loaded `{name: (model, variables, meta)}`, in `order`.

    `Row.normalize`: whether the reference min-max normalises the map before storing it
    (the Base rows of every model but Post; Var/In-Drop/Grad come normalised already)."""
    rows = []
    for name in order:
        if name not in models:
            continue
        model, variables, _ = models[name]
        fns = model_methods(name, model.apply, variables, opts, space=space,
                            reference=reference, var_fill=var_fill)
        for method in methods[name]:
            rows.append(Row(name, labels[name], method, fns[method],
                            method == "Base" and name != "post"))
    return rows


# ----------------------------------------------------------------------------- reference quirks

def to_uint16(x) -> np.ndarray:
    """`np.asarray(x).astype(np.uint16)` as NumPy does it on x86-64, made explicit:
    truncation toward zero, then wrap-around modulo 2^16 (-1.5 -> 65535, 70000.7 -> 4464);
    NaN, ±inf and |x| >= 2^63 give 0."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x) & (np.abs(x) < 2.0 ** 63)
    t = np.trunc(np.where(ok, x, 0.0)).astype(np.int64)
    return (t & 0xFFFF).astype(np.uint16)


def _cv2_axis(n_in: int, n_out: int, clamp_weights: bool):
    """OpenCV's INTER_LINEAR taps along one axis (resize.cpp, generic path): source
    position ``(float)((i+0.5)·scale − 0.5)`` with ``scale = 1/(n_out/n_in)`` in double,
    ``s = floor``, weight ``a = pos − s`` and ``1.f − a`` in float32. Columns clamp the
    position into the image (weight 0 at the borders); rows keep the weight and clip the
    row indices instead, as OpenCV does."""
    scale = 1.0 / (n_out / n_in)
    pos = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(pos).astype(np.int64)
    a = (pos - i0.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        low = i0 < 0
        i0[low], a[low] = 0, 0.0
        high = i0 >= n_in - 1
        i0[high], a[high] = n_in - 1, 0.0
    i1 = np.clip(i0 + 1, 0, n_in - 1)
    i0 = np.clip(i0, 0, n_in - 1)
    return i0, i1, (np.float32(1.0) - a).astype(np.float32), a


def resize_bilinear(x, height: int, width: int) -> np.ndarray:
    """`cv2.resize(x, (width, height))` (INTER_LINEAR) of a 2-D float map, re-derived:
    half-pixel centres, float32 weights, a horizontal then a vertical pass, each
    ``v0·w0 + v1·w1`` in the input's precision (float32 maps in float32, others in
    float64). Equal to OpenCV's generic C++ path; OpenCV's SIMD/IPP kernels may round
    float32 maps differently in the last bit."""
    x = np.asarray(x)
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    x = x.astype(dtype)
    if x.shape == (height, width):
        return x.copy()
    c0, c1, cw0, cw1 = _cv2_axis(x.shape[1], width, clamp_weights=True)
    r0, r1, rw0, rw1 = _cv2_axis(x.shape[0], height, clamp_weights=False)
    cw0, cw1, rw0, rw1 = (w.astype(dtype) for w in (cw0, cw1, rw0, rw1))
    rows = x[:, c0] * cw0[None] + x[:, c1] * cw1[None]
    return rows[r0] * rw0[:, None] + rows[r1] * rw1[:, None]


def mono_ratio(disp, gt) -> np.float32:
    """The reference's per-image median ratio: ``median(gt[gt>0]) / median(resize(1/disp,
    gt size)[gt>0])`` in float32 (the depth, not the disparity, is resized)."""
    gt = np.asarray(gt, np.float32)
    mask = gt > 0
    depth = resize_bilinear(1.0 / np.asarray(disp, np.float32), *gt.shape).astype(np.float32)
    return np.float32(np.median(gt[mask]) / np.median(depth[mask]))


def store_disparity(disp, gt, supervision: str) -> np.ndarray:
    """uint16 PNG content of a network-size scaled disparity (`generate_maps.py`)."""
    d = np.asarray(disp, np.float32)
    scale = np.float32(FX_NORM) * np.float32(np.asarray(gt).shape[1])
    v = d * scale * np.float32(256.0)
    if supervision == "mono":
        v = v / mono_ratio(d, gt)
    v = v / np.float32(10.0)
    return to_uint16(v.astype(np.float32))


def load_disparity(stored, gt_width: int) -> np.ndarray:
    """Disparity read back from the uint16 PNG (`evaluate.py`): ``v/256/(0.58·W)·10``."""
    return np.asarray(stored).astype(np.float64) / 256.0 / (FX_NORM * gt_width) * 10


def store_uncertainty(u) -> np.ndarray:
    """uint16 PNG content of an uncertainty map: ``trunc(u·65535)`` in float32."""
    return to_uint16((np.asarray(u, np.float32) * np.float32(256 * 256 - 1)).astype(np.float32))


def load_uncertainty(stored) -> np.ndarray:
    """Uncertainty read back as `evaluate.py` does: ``v/256`` (only its ranking matters)."""
    return np.asarray(stored).astype(np.float64) / 256.0


def _normalize(u) -> np.ndarray:
    u = np.asarray(u, np.float32)
    lo, hi = u.min(), u.max()
    return (u - lo) / (hi - lo) if hi > lo else np.zeros_like(u)


def reference_mask(gt, split: str, max_depth: float = MAX_DEPTH) -> np.ndarray:
    """`evaluate.py`'s mask: `eigen` 1e-3 < gt < max_depth and the Garg crop; else gt > 0."""
    gt = np.asarray(gt)
    if split != "eigen":
        return gt > 0
    h, w = gt.shape
    mask = (gt > MIN_DEPTH) & (gt < max_depth)
    crop = np.array([0.40810811 * h, 0.99189189 * h, 0.03594771 * w,
                     0.96405229 * w]).astype(np.int32)
    crop_mask = np.zeros(mask.shape)
    crop_mask[crop[0]:crop[1], crop[2]:crop[3]] = 1
    return mask & (crop_mask > 0)


def reference_depth_errors(gt, pred) -> dict[str, float]:
    """`compute_eigen_errors` on the masked pixels (float64)."""
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    thresh = np.maximum(gt / pred, pred / gt)
    return {"abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
            "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
            "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
            "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
            "a1": float((thresh < 1.25).mean()), "a2": float((thresh < 1.25 ** 2).mean()),
            "a3": float((thresh < 1.25 ** 3).mean())}


_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def reference_sparsification(gt, pred, unc, steps: int = 50) -> dict:
    """`compute_aucs` of one image's masked pixels: `{metric: {"ause", "aurg", "method",
    "oracle"}}` (curves of length steps+1).

    Removal order and thresholds as the reference: ``t_q = np.percentile(-u, q)`` for
    ``q = 100/steps·k`` (NumPy's float64 rounding), keep ``-u >= t_q``; the oracle ranks by
    the true error (the δ column by the continuous ratio). The kept set is a suffix of the
    ascending order of ``-u``, so subset means come from suffix sums."""
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    unc = np.asarray(unc, np.float64)
    n = gt.size
    quants = [100.0 / steps * t for t in range(steps)]
    x = [1.0 / steps * t for t in range(steps + 1)]
    abs_rel = np.abs(gt - pred) / gt
    sq = (gt - pred) ** 2
    ratio = np.maximum(gt / pred, pred / gt)
    values = {"abs_rel": abs_rel, "rmse": sq, "a1": (ratio >= 1.25).astype(np.float64)}
    oracle_score = {"abs_rel": -abs_rel, "rmse": -sq, "a1": -ratio}

    def curve(score, name):
        order = np.argsort(score, kind="stable")
        thr = np.percentile(score, quants)
        keep = n - np.searchsorted(score[order], thr, side="left")
        suffix = np.concatenate([[0.0], np.cumsum(values[name][order][::-1])])
        c = suffix[keep] / keep
        c = np.sqrt(c) if name == "rmse" else c
        return np.append(c, 0.0)

    out = {}
    for name in SPARSE_METRICS:
        full = values[name].mean()
        full = np.sqrt(full) if name == "rmse" else full
        method, oracle = curve(-unc, name), curve(oracle_score[name], name)
        area = _trapezoid(method, x=x)
        out[name] = {"ause": float(area - _trapezoid(oracle, x=x)), "aurg": float(full - area),
                     "method": method, "oracle": oracle}
    return out


def write_png16(path, array) -> None:
    """A uint16 single-channel PNG (lossless, as cv2.imwrite of a uint16 array)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, np.uint16)).save(path)


def read_png16(path) -> np.ndarray:
    """uint16 [h, w] from a 16-bit PNG (as `cv2.imread(path, -1)`)."""
    with Image.open(path) as im:
        return np.asarray(im).astype(np.uint16)


class ReferenceEvaluator:
    """Accumulates rows under the reference's storage and evaluation rules (module doc)."""

    def __init__(self, split: str, supervision: str, maps_dir, *, steps: int = 50,
                 max_depth: float = MAX_DEPTH, keep_maps: bool = True):
        self.split, self.supervision, self.steps = split, supervision, steps
        self.max_depth, self.keep_maps = max_depth, keep_maps
        self.maps_dir = Path(maps_dir)
        self._depth, self._sparse, self._curves = {}, {}, {}
        self._time: dict = {}
        self._order: list = []
        self.skipped = 0

    def folder(self, model: str, method: str) -> Path:
        return self.maps_dir / f"{model.lower()}_{method.lower()}" / "raw"

    def add(self, model: str, method: str, disp, unc, gt, index: int, normalize: bool):
        """One image: `disp`/`unc` at the network size, `gt` [H, W] metres at native size."""
        key = (model, method)
        if key not in self._order:
            self._order.append(key)
            for d in (self._depth, self._sparse, self._curves):
                d[key] = []
        gt = np.asarray(gt, np.float32)
        h, w = gt.shape
        u = _normalize(unc) if normalize else np.asarray(unc, np.float32)
        stored_d = store_disparity(disp, gt, self.supervision)
        stored_u = store_uncertainty(u)
        if self.keep_maps:
            folder = self.folder(model, method)
            write_png16(folder / "disp" / f"{index:06d}_10.png", stored_d)
            write_png16(folder / "uncert" / f"{index:06d}_10.png", stored_u)
            stored_d = read_png16(folder / "disp" / f"{index:06d}_10.png")
            stored_u = read_png16(folder / "uncert" / f"{index:06d}_10.png")
        disp_r = resize_bilinear(load_disparity(stored_d, w), h, w)
        with np.errstate(divide="ignore"):
            depth = 1.0 / disp_r
        unc_r = resize_bilinear(load_uncertainty(stored_u), h, w)
        mask = reference_mask(gt, self.split, self.max_depth)
        if not mask.any():
            self.skipped += 1
            return
        g = gt[mask].astype(np.float64)
        p = depth[mask] * (STEREO_FACTOR if self.supervision == "stereo" else 1.0)
        p = np.clip(p, MIN_DEPTH, self.max_depth)
        self._depth[key].append(reference_depth_errors(g, p))
        s = reference_sparsification(g, p, unc_r[mask], self.steps)
        self._sparse[key].append({m: (s[m]["ause"], s[m]["aurg"]) for m in SPARSE_METRICS})
        self._curves[key].append({m: (s[m]["method"], s[m]["oracle"]) for m in SPARSE_METRICS})

    def time(self, model: str, method: str, seconds: float, n_images: int):
        entry = self._time.setdefault((model, method), [0.0, 0])
        entry[0] += seconds
        entry[1] += n_images

    def rows(self) -> list[dict]:
        out = []
        for key in self._order:
            row = {"model": key[0], "method": key[1]}
            for m in SPARSE_METRICS:
                vals = np.array([s[m] for s in self._sparse[key]], np.float64)
                row[m] = {"ause": float(vals[:, 0].mean()), "aurg": float(vals[:, 1].mean())}
            seconds, n = self._time.get(key, (float("nan"), 0))
            row["ms_per_image"] = 1e3 * seconds / n if n else float("nan")
            depth = self._depth[key]
            row["depth"] = {k: float(np.mean([d[k] for d in depth])) for k in depth[0]}
            out.append(row)
        return out

    def curves(self) -> dict:
        out = {}
        for key in self._order:
            entry = {}
            for m in SPARSE_METRICS:
                method = np.mean([c[m][0] for c in self._curves[key]], 0)
                oracle = np.mean([c[m][1] for c in self._curves[key]], 0)
                entry[m] = {"x": np.linspace(0, 1, self.steps + 1), "method": method,
                            "oracle": oracle}
            out[f"{key[0]}: {key[1]}"] = entry
        return out


# ----------------------------------------------------------------------------- running

def kitti_test_source(args, height: int, width: int):
    """The KITTI test source of `--split` / `--split-file` / `--limit`."""
    from jaxdepth.data.kitti import KittiTest

    eigen = args.split == "eigen"
    kw = dict(height=height, width=width, gt_root=getattr(args, "gt_root", None),
              gt="velodyne" if eigen else "improved", crop="garg" if eigen else "none",
              image_ext=getattr(args, "image_ext", ".png"))
    source = args.split_file or args.split
    ds = KittiTest(args.kitti_root, source, **kw)
    limit = getattr(args, "limit", None)
    if limit is not None and limit < len(ds):
        ds = KittiTest(args.kitti_root, source, entries=ds.entries[:limit], **kw)
    return ds


def _supervision(args, metas) -> str:
    if getattr(args, "supervision", None):
        return args.supervision
    flags = {m.get("use_stereo") for m in metas.values()}
    if len(flags) == 1 and None not in flags:
        return "stereo" if flags.pop() else "mono"
    raise ValueError("cannot tell mono from stereo models (the checkpoints' use_stereo is "
                     f"{sorted(map(str, flags))}); pass --supervision mono|stereo")


def _input_size(models) -> tuple[int, int]:
    sizes = {(int(m[2]["height"]), int(m[2]["width"])) for m in models.values()}
    if len(sizes) != 1:
        raise ValueError(f"the models were trained at different input sizes {sorted(sizes)}; "
                         "evaluate them in separate runs (--models)")
    return sizes.pop()


def evaluate_rows(rows, source, batch_size: int, seed: int, add, timer, progress=True):
    """Run every row on every image of `source` (samples with `image`), calling
    `add(row, estimate_of_image, sample, index)` per image and `timer(row, s, n)` per batch.
    The last batch is padded by repeating its last image (one compiled shape); batch
    `b` uses the key `fold_in(PRNGKey(seed), b)`. Timing (wall clock after
    `block_until_ready`, per image of the batch) leaves out the first batch, which
    compiles; with a single batch that batch is run twice and the second run is timed."""
    n = len(source)
    batch_size = max(1, min(int(batch_size), n))
    single = n <= batch_size
    key = jax.random.PRNGKey(seed)
    for b, start in enumerate(range(0, n, batch_size)):
        idx = list(range(start, min(start + batch_size, n)))
        samples = [source[i] for i in idx]
        images = np.stack([s["image"] for s in samples]).astype(np.float32)
        if len(idx) < batch_size:
            images = np.concatenate([images] + [images[-1:]] * (batch_size - len(idx)))
        images = jnp.asarray(images)
        k = jax.random.fold_in(key, b)
        for row in rows:
            # the first batch compiles: it is not timed (repeated and timed if it is the
            # only batch)
            t0 = time.perf_counter()
            est = jax.block_until_ready(row.fn(images, k))
            if single:
                t0 = time.perf_counter()
                est = jax.block_until_ready(row.fn(images, k))
            if b > 0 or single:
                timer(row, time.perf_counter() - t0, images.shape[0])
            est = Estimate(np.asarray(est.depth), np.asarray(est.uncertainty))
            for j, i in enumerate(idx):
                add(row, Estimate(est.depth[j:j + 1], est.uncertainty[j:j + 1]), samples[j], i)
        if progress:
            print(f"evaluated {idx[-1] + 1}/{n} test images", flush=True)


def write_outputs(out: Path, rows: list[dict], curves: dict, config: dict, title: str):
    """Print the table; write `table.txt`, `results.json` and the sparsification PNGs."""
    table = format_table(rows, title)
    print(table)
    paper = [r for r in rows if "paper" in r]
    if paper:
        print("published (paper):")
        nan = float("nan")
        print(format_table([{**r, **r["paper"], "depth": {"abs_rel": nan, "rmse": nan, "a1": nan}}
                            for r in paper]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.txt").write_text(table + "\n")
    with open(out / "results.json", "w") as f:
        json.dump({"config": config, "rows": rows}, f, indent=2, default=str)
    for metric in SPARSE_METRICS:
        viz.plot_sparsification(out / f"sparsification_{metric}.png",
                                 {k: v[metric] for k, v in curves.items()}, metric)


def run(args) -> list[dict]:
    """Evaluate Table 1/2 on KITTI (see the module docstring); returns the rows."""
    t_start = time.perf_counter()
    out = Path(getattr(args, "out", None) or "runs/kitti_protocol")
    reference = bool(getattr(args, "reproduce_reference", False))
    opts = method_options(args)
    weights = resolve_weights(args.weights, getattr(args, "models", None))
    models = {}
    for name, path in weights.items():
        models[name] = load_model(path)
        _check_kind(name, models[name][2], path)
    height, width = _input_size(models)
    supervision = _supervision(args, {k: v[2] for k, v in models.items()})
    source = kitti_test_source(args, height, width)
    base = KITTI_EIGEN if args.split == "eigen" else KITTI_BENCHMARK
    protocol = dataclasses.replace(base, scaling="median" if supervision == "mono" else "stereo")
    fill = 1.0 / float(next(iter(models.values()))[0].max_depth)
    rows = build_rows(models, opts, space="disp", reference=reference, var_fill=fill)
    batch = int(_get(args, "eval_batch", 1))
    print(f"KITTI {args.split}: {len(source)} images, {supervision} supervision, models "
          f"{', '.join(f'{k}={v}' for k, v in weights.items())}, input {height}×{width}, "
          f"{'reference' if reference else 'jaxdepth'} protocol", flush=True)

    if reference:
        ev = ReferenceEvaluator(args.split, supervision, out / "reference")

        def add(row, est, sample, i):
            ev.add(row.model, row.method, 1.0 / est.depth[0, ..., 0], est.uncertainty[0, ..., 0],
                   sample["depth"][..., 0], i, row.normalize)
    else:
        ev = Evaluator(protocol)

        def add(row, est, sample, i):
            ev.add(row.model, row.method, est, sample["depth"][None])

    evaluate_rows(rows, source, batch, int(_get(args, "seed", 0)), add,
                  lambda row, s, n: ev.time(row.model, row.method, s, n))
    if reference and ev.skipped:
        warnings.warn(f"{ev.skipped} image/row pairs had no valid gt pixel and were skipped")
    results = ev.rows()
    for r in results:
        if (r["model"], r["method"]) in PAPER[supervision]:
            r["paper"] = paper_row(PAPER[supervision][(r["model"], r["method"])])
    config = {k: v for k, v in vars(args).items()}
    config.update(
        dataset="kitti", split=args.split, supervision=supervision, n_images=len(source),
        input_size=[height, width], mode="reference" if reference else "jaxdepth",
        protocol=dataclasses.asdict(protocol), methods=dataclasses.asdict(opts),
        models={k: {"path": str(weights[k]), "variant": m[2].get("variant"),
                    "ensemble": m[2].get("ensemble"), "use_stereo": m[2].get("use_stereo"),
                    "model": m[2].get("model")} for k, m in models.items()},
        device=jax.devices()[0].device_kind, seconds=time.perf_counter() - t_start,
        table=("Table 1 (monocular)" if supervision == "mono" else "Table 2 (stereo)"))
    title = (f"KITTI {args.split} ({len(source)} images), {supervision} supervision, "
             f"{'reference (uint16 round trip)' if reference else 'jaxdepth'} protocol")
    write_outputs(out, results, ev.curves(), config, title)
    print(f"wrote {out / 'results.json'} and PNGs in {time.perf_counter() - t_start:.0f} s")
    return results
