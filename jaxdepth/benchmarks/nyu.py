"""NYU Depth V2 protocol of the gradient-uncertainty paper: Table 3.

    result = run(NyuConfig(nyu_root="nyu_data", weights="ckpt/NYU"))
    jaxdepth.report.write_results("runs/nyu", result.rows, result.curves, result.config,
                                  result.title)
    # command line (trains the base models first when no --weights are given):
    # python experiments/nyu_grad_unc.py --nyu-root nyu_data [--weights ckpt/NYU]

Data: the FastDepth HDF5 files (`nyudepthv2/val/official/*.h5`, 654 test images), read
by `jaxdepth.data.nyu.NyuV2`: image and depth resized ×0.5 (nearest) and centre-cropped
to 224×288, which is also the network input.

Models (metric-depth Monodepth2: ResNet-18 + decoder whose heads output depth in metres,
no sigmoid), `weights` layout (converted with `jaxdepth convert monodepth2 --metric`, or
the run directories of the NYU recipe, docs/training.md):

    WEIGHTS/drop/   trained with dropout p = 0.2      -> Drop: Base (MC dropout, 8 passes)
    WEIGHTS/post/   plain model                       -> Post: Base, Var, In-Drop, Grad
    WEIGHTS/log/    with log σ heads (Laplace NLL)    -> Log:  Base, Var, In-Drop, Grad(λ = 2)

or a `{model: checkpoint or run directory}` mapping (what `experiments/nyu_grad_unc.py`
passes after training them through `jaxdepth.train.runs`). The protocol trains nothing.

Evaluation (protocol `jaxdepth.evaluation.NYU`, docs/protocols.md): mask 1e-3 < gt < 10,
predictions clamped to [1e-3, 10], no scaling; metrics and AUSE/AURG per image, averaged.
Spreads are taken in depth (`space="depth"`): Post |d − flip(d_flip)| with Monodepth's
blended depth, Var the variance of depth over flip/gray/noise/rotation, In-Drop 8 passes
with p = 0.2, Drop the mean and variance of 8 dropout passes, Log σ = exp(log σ), Grad
the gradient uncertainty (tap `dec6`, flip reference, channel max; λ = 2 for Log, 0 for
Post). Var, In-Drop and Grad use the single-pass depth, as the reference.

The reference (GrUMoDepth's `evaluate_supervised.py`) evaluates the float maps directly,
with no uint16 storage, so the default mode is its protocol; `reproduce_reference=True`
only switches Var to the reference's zero fill of the pixels the back-rotation leaves
empty (depth 0 there, instead of leaving them out; `reference.reference_var`). Not
reproduced: PyTorch's random draws (noise, dropout) and torchvision's nearest-neighbour
rotation.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path

import jax

from jaxdepth.benchmarks import protocol as _p
from jaxdepth.benchmarks.protocol import ProtocolResult
from jaxdepth.evaluation import NYU, Evaluator, evaluate
from jaxdepth.uncertainty.methods import MethodOptions

__all__ = ["MODELS", "LABELS", "METHODS", "PAPER", "INPUT_SIZE", "NyuConfig", "run",
           "resolve_weights", "nyu_test_source"]

MODELS = ("drop", "post", "log")
LABELS = {"drop": "Drop", "post": "Post", "log": "Log"}
#: the table's columns of each model
METHODS = {"drop": ("Base",), "post": ("Base", "Var", "In-Drop", "Grad"),
           "log": ("Base", "Var", "In-Drop", "Grad")}
INPUT_SIZE = (224, 288)

#: paper Table 3: AUSE, AURG for abs_rel, rmse, δ≥1.25; Inf [ms]
PAPER = {
    ("Drop", "Base"): (0.086, 0.002, 0.214, 0.160, 0.169, -0.001, 26.32),
    ("Post", "Base"): (0.066, 0.018, 0.267, 0.096, 0.116, 0.037, 6.58),
    ("Post", "Var"): (0.063, 0.024, 0.221, 0.151, 0.110, 0.045, 16.45),
    ("Post", "In-Drop"): (0.086, 0.000, 0.223, 0.149, 0.163, 0.000, 29.61),
    ("Post", "Grad"): (0.061, 0.025, 0.252, 0.120, 0.106, 0.048, 12.05),
    ("Log", "Base"): (0.055, 0.030, 0.159, 0.210, 0.089, 0.066, 3.29),
    ("Log", "Var"): (0.061, 0.024, 0.220, 0.149, 0.106, 0.049, 16.45),
    ("Log", "In-Drop"): (0.087, -0.002, 0.215, 0.154, 0.166, -0.012, 29.61),
    ("Log", "Grad"): (0.053, 0.032, 0.176, 0.193, 0.086, 0.069, 12.05),
}


@dataclasses.dataclass(frozen=True)
class NyuConfig:
    """One evaluation of Table 3 (see the module docstring).

    `nyu_root`: FastDepth's `nyudepthv2` folder (or its parent); `weights`: the layout
    above, one checkpoint, or a `{model: directory}` mapping; `models`: a subset of
    `MODELS`; `limit`: the first N test images; `eval_batch`: images per network call;
    `seed`: PRNG of noise and dropout; `methods`: the methods' options (λ = 2 for Log,
    Post gets 0); `reproduce_reference`: Var with the reference's zero fill."""
    nyu_root: str | Path
    weights: str | Path | Mapping
    models: tuple | None = None
    limit: int | None = None
    eval_batch: int = 1
    seed: int = 0
    methods: MethodOptions = MethodOptions(variance_weight=2.0)
    reproduce_reference: bool = False

    def __post_init__(self):
        if self.models is not None:
            object.__setattr__(self, "models", tuple(self.models))
        if int(self.eval_batch) < 1:
            raise ValueError(f"eval_batch must be at least 1, got {self.eval_batch}")


def resolve_weights(weights, models=None) -> dict[str, Path]:
    """`{model: checkpoint dir}` in table order (see `protocol.resolve_weights`)."""
    return _p.resolve_weights(weights, models, names=MODELS)


def _check_model(name, meta, path):
    if meta.get("ensemble"):
        raise ValueError(f"{path}: NYU models are single checkpoints, not ensembles")
    if not meta["model"].get("metric"):
        raise ValueError(f"{path}: not a metric-depth model; convert the NYU weights with "
                         "`jaxdepth convert monodepth2 ... --metric`")
    log = bool(meta["model"].get("log_sigma"))
    if (name == "log") != log:
        raise ValueError(f"{path}: {name}/ {'needs' if name == 'log' else 'must not have'} "
                         "log σ heads")
    size = (int(meta["height"]), int(meta["width"]))
    if size != INPUT_SIZE:
        raise ValueError(f"{path}: NYU models take {INPUT_SIZE[0]}×{INPUT_SIZE[1]} inputs "
                         f"(the evaluation crop), this one {size[0]}×{size[1]}")


def nyu_test_source(root, limit: int | None = None):
    """The 654 NYU test images (`val/official`), or the first `limit` of them."""
    from jaxdepth.data.nyu import NyuV2, nyu_files

    if limit is not None:
        return NyuV2(str(root), "val", files=nyu_files(str(root), "val")[:limit],
                     expected_count=None)
    return NyuV2(str(root), "val")


def run(cfg: NyuConfig) -> ProtocolResult:
    """Evaluate Table 3 on NYU Depth V2 (see the module docstring)."""
    t_start = time.perf_counter()
    reference = bool(cfg.reproduce_reference)
    weights = resolve_weights(cfg.weights, cfg.models)
    models = {}
    for name, path in weights.items():
        models[name] = _p.load_model(path)
        _check_model(name, models[name][2], path)
    source = nyu_test_source(cfg.nyu_root, cfg.limit)
    # the reference's Var fills rotated-out pixels with depth 0
    rows = _p.build_rows(models, METHODS, cfg.methods, labels=LABELS, order=MODELS,
                         space="depth", var_fill=0.0 if reference else None)
    print(f"NYU: {len(source)} test images, models "
          f"{', '.join(f'{k}={v}' for k, v in weights.items())}", flush=True)
    ev = Evaluator(NYU)
    evaluate(rows, source, batch_size=int(cfg.eval_batch), seed=int(cfg.seed),
             add=_p.per_image(lambda row, est, sample, i: ev.add(row.model, row.method, est,
                                                                 sample["depth"][None])),
             timer=lambda row, s, n: ev.time(row.model, row.method, s, n))
    results = _p.attach_paper(ev.rows(), PAPER)
    config = dataclasses.asdict(cfg)
    config.update(
        dataset="nyu", n_images=len(source), input_size=list(INPUT_SIZE),
        mode="reference" if reference else "jaxdepth", protocol=dataclasses.asdict(NYU),
        table="Table 3 (NYU Depth V2)",
        models=_p.describe_models(weights, models, "model", "source"),
        device=jax.devices()[0].device_kind, seconds=time.perf_counter() - t_start)
    title = f"NYU Depth V2 ({len(source)} test images, 224×288), metric-depth Monodepth2"
    return ProtocolResult(results, ev.curves(), _p.jsonable(config), title)
