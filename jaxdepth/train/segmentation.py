"""Semantic segmentation training: DeepLabV3+ (`jaxdepth.models.segmentation`) on any source
with `image` `[H,W,3]` and train-id `label` `[H,W]` (255 = ignore), the models PGN and the
segmentation baselines are computed on (`jaxdepth.uncertainty.pgn`).

Loss: pixel-wise cross entropy of the logits (upsampled to the input size) against the
label, averaged over the pixels whose label is not 255 (ignored pixels are masked, never
averaged in) — the loss whose per-pixel gradient PGN takes in closed form (paper eq. 1).
On the procedural scenes the anomaly class is 255 in every training label
(`jaxdepth.data.segmentation.train_labels`): no model ever sees it, and the `ood` split's
anomalies are out of distribution.

Variants: `dropout=0` (the plain model; an ensemble is several plain runs with different
seeds) and `dropout>0` (trained with dropout before the head at that rate: the model MC
dropout samples). Adam at the run's step-decay schedule (`jaxdepth.train.config`);
augmentation (synthetic data): horizontal flip of image and label together and colour
jitter of the image, each p = 0.5; Cityscapes' per-sample transform augments instead
(`jaxdepth.data.cityscapes.train_transform`). BatchNorm trains on batch statistics and
keeps running averages (PyTorch momentum 0.1) for inference.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxdepth.train import state as train_state
from jaxdepth.train.augment import color_jitter, random_flip
from jaxdepth.train.config import RunConfig, flat_dict, method_from_dict
from jaxdepth.train.state import new_state

IGNORE = 255
NETWORK = "segmentation"  # the state's key of the network


@dataclasses.dataclass(frozen=True)
class SegmentationConfig:
    """A segmentation run: the model's fields, the classes and the embedded `run`."""
    num_classes: int = 7
    backbone: str = "resnet18"
    output_stride: int = 16
    width: float = 0.25
    dropout: float = 0.0
    class_names: tuple[str, ...] | None = None
    run: RunConfig = RunConfig(height=64, image_width=128, batch_size=8, steps=1000, lr=1e-3)

    def __post_init__(self):
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names for "
                             f"{self.num_classes} classes")

    @property
    def variant(self) -> str:
        return "drop" if self.dropout > 0 else "plain"

    def with_run(self, **changes) -> SegmentationConfig:
        return dataclasses.replace(self, run=dataclasses.replace(self.run, **changes))

    def to_dict(self) -> dict[str, Any]:
        d = flat_dict(self)
        d["class_names"] = list(self.class_names) if self.class_names is not None else None
        return d

    @classmethod
    def from_dict(cls, d) -> SegmentationConfig:
        names = d.get("class_names")
        return method_from_dict(cls, d, class_names=tuple(names) if names is not None else None)

    def model(self):
        from jaxdepth.models.segmentation import DeepLabV3Plus
        return DeepLabV3Plus(num_classes=self.num_classes, backbone=self.backbone,
                             output_stride=self.output_stride, width=self.width,
                             dropout_rate=self.dropout)

    def compile_key(self) -> SegmentationConfig:
        return dataclasses.replace(self, class_names=None, run=self.run.compile_key())


def cross_entropy(logits, labels, ignore: int = IGNORE):
    """Mean cross entropy over the valid pixels. `logits` `[B,H,W,C]`, `labels` `[B,H,W]`
    integer train ids (`ignore` = masked). Returns `(loss, n_valid)`."""
    labels = labels.astype(jnp.int32)
    valid = labels != ignore
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    n = valid.sum()
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(n, 1), n


def init_state(cfg: SegmentationConfig):
    """The train state of a fresh run: `params` / `batch_stats` under `segmentation`."""
    variables = cfg.model().init_variables(jax.random.PRNGKey(cfg.run.seed), cfg.run.height,
                                           cfg.run.image_width)
    return new_state(cfg.run, {NETWORK: variables["params"]},
                     {NETWORK: variables.get("batch_stats", {})})


def make_step(cfg: SegmentationConfig):
    """A jit-compiled `step(state, batch) -> (state, metrics)` (`metrics`: `loss`,
    `accuracy` over valid pixels). Seeds, steps and learning rates share one compile."""
    return _make_step(cfg.compile_key())


@functools.lru_cache(maxsize=None)
def _make_step(cfg: SegmentationConfig):
    model = cfg.model()

    def loss_fn(params, batch_stats, batch, key):
        k_flip, k_color, k_drop = jax.random.split(key, 3)
        images, labels = batch["image"], batch["label"].astype(jnp.int32)
        if cfg.run.augment:
            (images, labels), _ = random_flip(k_flip, images, labels[..., None])
            labels = labels[..., 0]
            images = color_jitter(k_color, images)
        kw = {"dropout_rng": k_drop} if cfg.dropout > 0 else {}
        out, updates = model.apply({"params": params[NETWORK],
                                    "batch_stats": batch_stats[NETWORK]}, images,
                                   train=True, mutable=["batch_stats"], **kw)
        loss, n = cross_entropy(out["logits"], labels)
        valid = labels != IGNORE
        correct = (jnp.argmax(out["logits"], -1) == labels) & valid
        return loss, ({NETWORK: updates["batch_stats"]},
                      {"accuracy": correct.sum() / jnp.maximum(n, 1)})

    return train_state.make_step(loss_fn, auto_sharding=False)


def variables_of(state):
    """The model variables (`params`, `batch_stats`) of a train state."""
    return {"params": state["params"][NETWORK], "batch_stats": state["batch_stats"][NETWORK]}
