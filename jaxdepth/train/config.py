"""The run configuration every trainer's config embeds: sizes, batch, steps, schedule,
seeds and data.

    run = RunConfig(height=64, image_width=192, steps=500, lr=1e-3)
    cfg = SupervisedConfig(variant="log", run=run)          # a method config embeds it
    cfg = cfg.with_run(seed=3)                              # a Boot member

A method config (`SupervisedConfig`, `SelfSupConfig`, `DistillConfig`, …) is a frozen
dataclass with a `run` field and `to_dict()`. `to_dict()` flattens the run's fields into
the method's dict (`height`, `image_width`, `steps`, …), the layout checkpoints were
keyed by before the run configuration existed, so earlier run names and digests stay.
Data fields at their default (`data="synthetic"`, no `split`) are left out for the same
reason.

Learning rate: Adam with one step decay, `lr` until update `int(lr_drop_at · steps)`,
then `lr · lr_decay` (Monodepth2: ×0.1 after 15 of 20 epochs), an optax schedule whose
values live in the train state (`jaxdepth.train.state`), so that runs that differ only
in seeds, steps, learning rate or data size share one compiled step. MonoViT's optimiser
(`jaxdepth.train.state`, `"monovit"`) instead decays `lr` ×0.9 per epoch of
`epoch_steps` updates, the encoder at half the rate.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

DATA = ("synthetic", "kitti", "nyu", "cityscapes")


SAVE_MIN_SECONDS = 60.0  # the least time between two checkpoints of a run (RunConfig.save_every)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What every training run needs besides its method: input size, batch, steps, the
    learning-rate schedule, seeds and the training data.

    `seed` seeds the networks' initialisation, augmentation and dropout; `data_seed` the
    procedural scenes; `train_size` is the number of procedural training scenes (ignored
    for real data). `data` / `split` name the training set (`jaxdepth.data.training`);
    where the data lives on disk is not part of the run (moving it keeps the run)."""
    height: int = 64
    image_width: int = 192
    batch_size: int = 8
    steps: int = 1000
    lr: float = 1e-3
    lr_drop_at: float = 0.75
    lr_decay: float = 0.1
    seed: int = 0
    data_seed: int = 0
    train_size: int = 4000
    augment: bool = True
    data: str = "synthetic"
    split: str | None = None

    def __post_init__(self):
        if self.height <= 0 or self.image_width <= 0 or self.height % 32 or self.image_width % 32:
            raise ValueError(f"height and image_width must be positive multiples of 32, got "
                             f"{self.height}×{self.image_width}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if not 0.0 <= self.lr_drop_at <= 1.0:
            raise ValueError(f"lr_drop_at must be in [0, 1], got {self.lr_drop_at}")
        if self.data not in DATA:
            raise ValueError(f"data must be one of {DATA}, got {self.data!r}")

    @property
    def drop_step(self) -> int:
        """The first update at the decayed learning rate."""
        return int(self.lr_drop_at * self.steps)

    @property
    def epoch_steps(self) -> int:
        """Updates per epoch, `train_size // batch_size` (at least 1): the period of
        MonoViT's per-epoch learning-rate decay (`jaxdepth.train.state`, optimiser
        `"monovit"`). For real data `jaxdepth train` sets `train_size` of a MonoViT run to
        the number of training frames."""
        return max(1, self.train_size // self.batch_size)

    @property
    def save_every(self) -> int:
        """The checkpoint interval of every trainer: 20 checkpoints per run, at most one
        per `SAVE_MIN_SECONDS` (`train.checkpoint.Checkpointer(min_interval_s=...)`)
        unless the run keeps several steps (Snap's snapshots sit on this grid)."""
        return max(1, self.steps // 20)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.lr_decay == 0.1:
            del d["lr_decay"]
        if self.data == "synthetic":
            del d["data"]
        if self.split is None:
            del d["split"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunConfig:
        """The run part of a flattened method dict (other keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def compile_key(self) -> RunConfig:
        """The fields that shape the compiled step (sizes, batch, augmentation); the rest
        enter only the state or the data."""
        return RunConfig(height=self.height, image_width=self.image_width,
                         batch_size=self.batch_size, steps=0, lr=0.0, lr_drop_at=0.0,
                         lr_decay=0.0, augment=self.augment, train_size=0)


RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))


def method_from_dict(cls, d: Mapping[str, Any], **nested):
    """Rebuild a method config `cls` (with a `run` field) from its flattened `to_dict()`;
    `nested` gives already-rebuilt values of nested config fields."""
    names = {f.name for f in dataclasses.fields(cls)} - {"run"}
    kwargs = {k: v for k, v in d.items() if k in names and k not in nested}
    return cls(run=RunConfig.from_dict(d), **kwargs, **nested)


def flat_dict(cfg) -> dict[str, Any]:
    """`dataclasses.asdict` of a method config with its run's fields at the top level."""
    d = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "run"}
    return {**d, **cfg.run.to_dict()}
