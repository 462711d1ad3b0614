"""The method table: every uncertainty method named once, with its options, what it needs
of a model, and one way to call it.

    info = ModelInfo.of(model, variables, meta)           # what the model offers
    fn = method("grad", model.apply, variables, MethodOptions(taps=("dec6",)), info=info)
    est = fn(images, rng)                                 # Estimate(depth, uncertainty)

| name         | label   | method                                              | needs            |
|--------------|---------|-----------------------------------------------------|------------------|
| `grad`       | Grad    | gradient uncertainty (`gradient_uncertainty`)       | log σ if λ > 0   |
| `post`       | Post    | flip post-processing |d − flip(d_flip)|              |                  |
| `var`        | Var     | variance over flip / gray / noise / rotation        |                  |
| `in_drop`    | In-Drop | inference-only channel dropout                      |                  |
| `mc_drop`    | Drop    | MC dropout of a dropout-trained model               | dropout training |
| `ensemble`   | Boot    | mean and variance over an ensemble (Boot / Snap)    | an ensemble      |
| `predictive` | Log     | the model's own σ = exp(log σ) (`to_depth`: σ→depth) | log σ heads      |

`ALIASES` maps the command line's older names (`drop`, `boot`, `log`, `self`) onto these.
The experiments, `jaxdepth predict` and the KITTI / NYU protocols all take their methods
from here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from jaxdepth.uncertainty import baselines, gradient
from jaxdepth.uncertainty.maps import Estimate

__all__ = ["METHODS", "ALIASES", "MethodOptions", "ModelInfo", "Method", "method", "canonical",
           "unsupported", "supported_methods", "for_model"]


@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Settings of the methods (the paper's values by default).

    `variance_weight`: λ of Grad's σ² term (Eq. 5); None = 2.0 for models with log σ
    heads, else 0. `space`: whose spread Post / Var / In-Drop / Drop / Boot measure,
    `disp` or `depth`; None = depth for metric models, else disparity. `to_depth`:
    `predictive` propagates a disparity σ to depth (None = where the model's σ is one
    of the disparity: Self, SUB-Depth).

    Grad: `taps`, `reduce`, `reference` (flip, gray, noise, rot, var, feature_noise,
    feature_dropout), `aggregate` (std, mean, max, rank, zmean), `upsample`, and for
    the feature references `feature_tap` (the perturbed feature, `enc4`) and
    `feature_scale` (relative noise std / dropout rate, 0.1); `var_members`: the
    references `reference="var"` combines (default flip, gray, noise, rot). `taps`
    stays `("dec6",)` (Monodepth2's) by default; `jaxdepth predict` swaps it for the
    model's `default_tap`, and `taps=None` does the same here."""
    taps: tuple | None = ("dec6",)
    reduce: str = "max"
    reference: str = "flip"
    aggregate: str = "std"
    feature_tap: str = "enc4"
    feature_scale: float = 0.1
    var_members: tuple = ("flip", "gray", "noise", "rot")
    upsample: str = "bilinear"
    variance_weight: float | None = None
    samples: int = 8
    in_drop_p: float = 0.2
    rot_angle: float = 10.0
    noise_std: float = 0.01
    space: str | None = None
    bayesian: bool = False
    to_depth: bool | None = False

    def __post_init__(self):
        if self.taps is not None:
            object.__setattr__(self, "taps", (self.taps,) if isinstance(self.taps, str)
                               else tuple(self.taps))
        object.__setattr__(self, "var_members", (self.var_members,)
                           if isinstance(self.var_members, str) else tuple(self.var_members))
        if self.samples < 2:
            raise ValueError(f"samples must be at least 2 for a variance, got {self.samples}")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the table needs to know of a model: log σ heads (and the space of its σ),
    metric output, an ensemble of variable sets, training with dropout (None: unknown,
    e.g. converted weights), its disparity range."""
    log_sigma: bool = False
    metric: bool = False
    ensemble: bool = False
    dropout_trained: bool | None = None
    sigma_space: str | None = None
    min_depth: float = 0.1
    max_depth: float = 100.0

    @classmethod
    def of(cls, model, variables=None, meta: Mapping[str, Any] | None = None) -> ModelInfo:
        meta = meta or {}
        sigma = bool(getattr(model, "log_sigma", False))
        return cls(log_sigma=sigma, metric=bool(getattr(model, "metric", False)),
                   ensemble=isinstance(variables, (list, tuple)),
                   dropout_trained=meta.get("dropout_trained"),
                   sigma_space=meta.get("sigma_space") if sigma else None,
                   min_depth=float(getattr(model, "min_depth", 0.1)),
                   max_depth=float(getattr(model, "max_depth", 100.0)))


def for_model(opts: MethodOptions, model) -> MethodOptions:
    """`opts` for one model: the default `taps` (`("dec6",)`, Monodepth2's) become the
    model's own `default_tap` where it has no `dec6` (MonoViT: `X_13_Conv_0`); taps a
    user chose are kept (and checked when the method runs)."""
    names = getattr(model, "tap_names", None)
    if opts.taps == MethodOptions.taps and names is not None and opts.taps[0] not in names:
        return dataclasses.replace(opts, taps=(model.default_tap,))
    return opts


class Method(NamedTuple):
    label: str     # the column / row name of the paper's tables
    help: str      # one line for `jaxdepth predict --help`
    build: Callable


def _space(opts, info):
    return opts.space or ("depth" if info.metric else "disp")


def _grad(apply_fn, variables, opts, info):
    lam = opts.variance_weight
    lam = (2.0 if info.log_sigma else 0.0) if lam is None else float(lam)
    return lambda x, rng: gradient.gradient_uncertainty(
        apply_fn, variables, x, taps=opts.taps, reference=opts.reference, reduce=opts.reduce,
        aggregate=opts.aggregate, variance_weight=lam, upsample=opts.upsample, rng=rng,
        rot_angle=opts.rot_angle, noise_std=opts.noise_std, feature_tap=opts.feature_tap,
        feature_scale=opts.feature_scale, var_members=opts.var_members)


def _post(apply_fn, variables, opts, info):
    return lambda x, rng: baselines.post(apply_fn, variables, x, space=_space(opts, info))


def _var(apply_fn, variables, opts, info):
    return lambda x, rng: baselines.var(apply_fn, variables, x, rng=rng,
                                        space=_space(opts, info), rot_angle=opts.rot_angle,
                                        noise_std=opts.noise_std)


def _in_drop(apply_fn, variables, opts, info):
    return lambda x, rng: baselines.in_drop(apply_fn, variables, x, rng=rng, n=opts.samples,
                                            p=opts.in_drop_p, space=_space(opts, info))


def _mc_drop(apply_fn, variables, opts, info):
    return lambda x, rng: baselines.mc_drop(apply_fn, variables, x, rng=rng, n=opts.samples,
                                            space=_space(opts, info))


def _ensemble(apply_fn, variables, opts, info):
    return lambda x, rng: baselines.ensemble(apply_fn, variables, x, space=_space(opts, info),
                                             bayesian=opts.bayesian)


def _predictive(apply_fn, variables, opts, info):
    to_depth = opts.to_depth if opts.to_depth is not None else info.sigma_space == "disp"
    rng_range = (info.min_depth, info.max_depth) if to_depth else None
    return lambda x, rng: baselines.predictive(apply_fn, variables, x, to_depth=rng_range)


METHODS: dict[str, Method] = {
    "grad": Method("Grad", "gradient uncertainty (Hornauer & Belagiannis): taps, reference "
                   "(image or feature_noise/feature_dropout at feature_tap), reduce, "
                   "aggregate (std/mean/max/rank/zmean), λ", _grad),
    "post": Method("Post", "|d - flip(d_flip)| and Monodepth's post-processed depth", _post),
    "var": Method("Var", "variance over flip/gray/noise/rotation test-time augmentations", _var),
    "in_drop": Method("In-Drop", "inference-only channel dropout (samples, p)", _in_drop),
    "mc_drop": Method("Drop", "MC dropout of a model trained with dropout (samples)", _mc_drop),
    "ensemble": Method("Boot", "mean and variance over an ensemble checkpoint (Boot/Snap)",
                       _ensemble),
    "predictive": Method("Log", "the model's own sigma = exp(log_sigma) (Log/Self/SUB-Depth "
                         "models; to_depth: a disparity sigma propagated to depth)", _predictive),
}
ALIASES = {"drop": "mc_drop", "boot": "ensemble", "snap": "ensemble", "log": "predictive",
           "self": "predictive", "in-drop": "in_drop"}


def canonical(name: str) -> str:
    """The table name of a method name or alias; ValueError for an unknown one."""
    key = ALIASES.get(name, name)
    if key not in METHODS:
        raise ValueError(f"unknown uncertainty method {name!r}; choose from "
                         f"{', '.join(METHODS)} (or {', '.join(ALIASES)})")
    return key


def unsupported(name: str, info: ModelInfo, opts: MethodOptions = MethodOptions()) -> str | None:
    """Why a model cannot give method `name` (None if it can)."""
    key = canonical(name)
    if key == "ensemble":
        return None if info.ensemble else ("needs an ensemble (several variable sets: a "
                                           "Boot / Snap checkpoint); this is one model")
    if info.ensemble:
        return f"{key} runs on one model; this is an ensemble (use ensemble, or pick a member)"
    if key == "predictive" and not info.log_sigma:
        return "needs a model with a log σ head (Log / Self / SUB-Depth); this one has none"
    if key == "grad" and (opts.variance_weight or 0) > 0 and not info.log_sigma:
        return "with a variance weight λ > 0 needs a model with a log σ head"
    if key == "mc_drop" and info.dropout_trained is False:
        return "needs a model trained with dropout; this one was not (use in_drop)"
    return None


def supported_methods(info: ModelInfo) -> list[str]:
    """The table names a model offers, in table order."""
    return [k for k in METHODS if unsupported(k, info) is None]


def method(name: str, apply_fn, variables, opts: MethodOptions = MethodOptions(), *,
           info: ModelInfo | None = None) -> Callable[..., Estimate]:
    """`fn(images, rng) -> Estimate` of method `name` (a table name or alias) on a model;
    ValueError naming the reason if the model does not offer it."""
    key = canonical(name)
    module = getattr(apply_fn, "__self__", None)
    info = info or ModelInfo.of(module, variables)
    reason = unsupported(key, info, opts)
    if reason:
        raise ValueError(f"method {name!r} {reason}")
    return METHODS[key].build(apply_fn, variables, opts, info)
