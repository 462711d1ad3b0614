"""Supervised depth training (the NYU recipe of docs/training.md §2, applied to any source
with `image` `[H,W,3]` and metric `depth` `[H,W,1]`, 0 = invalid).

Variants (the models the gradient-uncertainty tables compare):
- `reg`:  plain DepthNet, L1 loss;
- `log`:  DepthNet with log σ heads, Laplace NLL |r|/σ + log σ of the same residual r;
- `drop`: DepthNet trained with channel dropout p = 0.2 after every decoder block.
Boot = several `reg` runs with different seeds; Snap = the last checkpoints of one run.

Loss (per scale s = 0..3, each prediction bilinearly upsampled to the input size,
then averaged over scales, as Monodepth2 and the NYU recipe): mean over valid
pixels (0 < y ≤ `max_depth`, finite) of the per-pixel term on the residual
r = d − y (`loss_space="depth"`, the NYU recipe for metric-depth decoders) or
r = log d − log y (`"log"`, the default here: DepthNet predicts a sigmoid
disparity spanning 0.1–100 m, and an L1 loss in metres drives it through the
flat tail of the sigmoid at a rate set by the farthest pixels — on the street
scenes it trained several times slower). Adam, learning rate
`lr` with one ×0.1 step at `lr_drop_at`·steps (Monodepth2: epoch 15 of 20).
Augmentation: flip (image and depth) and colour jitter (image only), each p = 0.5.
Initialisation: PyTorch-style random weights, except that the disparity heads'
bias starts at the sigmoid logit of `init_depth` (10 m). With the default bias
(prediction 0.2 m everywhere) every early gradient pushes the depth up at once,
Adam's coherent steps blow the un-normalised decoder's activations up to ~10³
within 40 steps for some seeds, the sigmoid saturates at 100 m and its gradient
is exactly zero: the run is dead (seen for 1 of 8 seeds at lr 1e-3).
`metric=True` (the NYU models of Table 3) trains `DepthNet(metric=True)`, whose heads
output metric depth without a sigmoid; use it with `loss_space="depth"` (L1 / Laplace NLL
on metres) and, for NYU, `augment=False` with `jaxdepth.data.nyu.train_transform` in the
input pipeline. `to_dict()` leaves `metric` out while it is False, so the configs (and
checkpoint digests) of earlier runs stay valid.
`arch="monovit"` trains MonoViT (`monovit_size`, `width`) instead of DepthNet, by default
with MonoViT's optimiser (AdamW, encoder at half the decoder's rate, ×0.9 per epoch;
`jaxdepth.train.arch`, `jaxdepth.train.state`); the same loss, heads and initialisation.
BatchNorm uses batch statistics in training and keeps running averages
(PyTorch momentum 0.1) for inference.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxdepth.losses import laplace_nll
from jaxdepth.models import DepthNet, MonoViT
from jaxdepth.train import arch as arch_
from jaxdepth.train import state as train_state
from jaxdepth.train.augment import color_jitter, random_flip
from jaxdepth.train.config import RunConfig, flat_dict, method_from_dict
from jaxdepth.train.state import new_state

VARIANTS = ("reg", "log", "drop")


@dataclasses.dataclass(frozen=True)
class SupervisedConfig:
    """Everything that decides a supervised run's result (saved with its checkpoints):
    the method's fields and the embedded `run` (`jaxdepth.train.config.RunConfig`)."""
    variant: str = "reg"
    num_layers: int = 18
    width: float = 0.25
    dropout: float = 0.2
    max_depth: float = 80.0
    loss_space: str = "log"
    init_depth: float | None = 10.0
    metric: bool = False
    arch: str = "monodepth2"       # or "monovit" (jaxdepth.train.arch)
    monovit_size: str = "small"
    optimizer: str | None = None   # None: the arch's ("adam" / "monovit")
    run: RunConfig = RunConfig(height=96, image_width=320, steps=1500, lr=1e-4)

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.loss_space not in ("log", "depth"):
            raise ValueError(f"loss_space must be 'log' or 'depth', got {self.loss_space!r}")
        if self.metric and self.loss_space != "depth":
            raise ValueError("metric models predict unbounded depth (no sigmoid): train them "
                             "with loss_space='depth'")
        arch_.check(self, uses_num_layers=False)

    def with_run(self, **changes) -> SupervisedConfig:
        return dataclasses.replace(self, run=dataclasses.replace(self.run, **changes))

    def to_dict(self) -> dict[str, Any]:
        d = flat_dict(self)
        if not self.metric:
            del d["metric"]  # configs written before the field existed stay equal
        return arch_.drop_defaults(self, d)

    @classmethod
    def from_dict(cls, d) -> SupervisedConfig:
        return method_from_dict(cls, d)

    @property
    def optimizer_name(self) -> str:
        """The optimiser the run trains with (`jaxdepth.train.state.OPTIMIZERS`)."""
        return arch_.optimizer_of(self)

    def model(self) -> DepthNet | MonoViT:
        return arch_.depth_model(self, log_sigma=self.variant == "log",
                                 dropout_rate=self.dropout, metric=self.metric)

    def compile_key(self) -> SupervisedConfig:
        return dataclasses.replace(self, run=self.run.compile_key())


def valid_depth(y, max_depth):
    """Pixels with usable ground truth: finite and in (0, max_depth]."""
    return jnp.isfinite(y) & (y > 0) & (y <= max_depth)


def _masked_mean(x, valid):
    return jnp.sum(jnp.where(valid, x, 0.0)) / jnp.maximum(valid.sum(), 1)


def supervised_loss(outputs, depth_gt, valid, variant: str, space: str = "log"):
    """Mean over the 4 scales of the masked per-pixel loss at full resolution."""
    b, h, w, _ = depth_gt.shape
    y = jnp.where(valid, depth_gt, 1.0)
    transform = jnp.log if space == "log" else (lambda x: x)
    losses = []
    for entry in outputs["scales"]:
        up = lambda x: jax.image.resize(x, (b, h, w, 1), "bilinear")
        d = up(entry["depth"])
        if variant == "log":
            per_pixel = laplace_nll(transform(d), transform(y), up(entry["log_sigma"]))
        else:
            per_pixel = jnp.abs(transform(d) - transform(y))
        losses.append(_masked_mean(per_pixel, valid))
    return jnp.mean(jnp.stack(losses))


def with_head_bias(variables, depth: float, min_depth: float = 0.1, max_depth: float = 100.0):
    """Set every `dispconv_s` bias so that a zero input predicts `depth` metres."""
    sigmoid = (1.0 / depth - 1.0 / max_depth) / (1.0 / min_depth - 1.0 / max_depth)
    logit = float(jnp.log(sigmoid / (1.0 - sigmoid)))
    decoder = dict(variables["params"]["decoder"])
    for name in [n for n in decoder if n.startswith("dispconv_")]:
        decoder[name] = dict(decoder[name], bias=jnp.full_like(decoder[name]["bias"], logit))
    return dict(variables, params=dict(variables["params"], decoder=decoder))


def init_state(cfg: SupervisedConfig):
    """The train state (`jaxdepth.train.state`) of a fresh run: `params` and
    `batch_stats` under `depth`."""
    model = cfg.model()
    variables = model.init_variables(jax.random.PRNGKey(cfg.run.seed), cfg.run.height,
                                     cfg.run.image_width)
    if cfg.init_depth is not None:
        variables = with_head_bias(variables, cfg.init_depth, model.min_depth, model.max_depth)
    return new_state(cfg.run, {"depth": variables["params"]},
                     {"depth": variables["batch_stats"]}, optimizer=cfg.optimizer_name)


def make_step(cfg: SupervisedConfig):
    """A jit-compiled `step(state, batch) -> (state, metrics)`. Runs that differ only in
    their seeds, steps, learning rate or data size (Boot members) share one compiled step."""
    return _make_step(cfg.compile_key())


@functools.lru_cache(maxsize=None)
def _make_step(cfg: SupervisedConfig):
    model = cfg.model()

    def loss_fn(params, batch_stats, batch, key):
        k_flip, k_color, k_drop = jax.random.split(key, 3)
        images, depth = batch["image"], batch["depth"]
        if cfg.run.augment:
            (images, depth), _ = random_flip(k_flip, images, depth)
            images = color_jitter(k_color, images)
        valid = valid_depth(depth, cfg.max_depth)
        kw = {"dropout_rng": k_drop} if cfg.variant == "drop" else {}
        out, updates = model.apply({"params": params["depth"],
                                    "batch_stats": batch_stats["depth"]}, images,
                                   train=True, mutable=["batch_stats"], **kw)
        loss = supervised_loss(out, depth, valid, cfg.variant, cfg.loss_space)
        return loss, ({"depth": updates["batch_stats"]}, {})

    # DepthNet: no gathers or vmaps over the sharded batch axis, the step compiles as it
    # stands; MonoViT's attention reshapes the sharded batch (tokens ↔ maps): Auto mode
    return train_state.make_step(loss_fn, auto_sharding=cfg.arch == "monovit")


def variables_of(state):
    """The model variables (`params`, `batch_stats`) of a train state."""
    return {"params": state["params"]["depth"], "batch_stats": state["batch_stats"]["depth"]}
