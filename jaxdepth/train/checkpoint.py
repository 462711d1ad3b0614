"""Orbax checkpoints of a training run: state, config and data position together.

    ckpt = Checkpointer(directory, config, save_every=500, keep=3)
    state, data_state, step = ckpt.restore_or(state, data_state)   # resume if possible
    ...
    ckpt.save(step, state, loader.get_state())
    ckpt.close()

Each checkpoint is an `ocp.args.Composite` of the train state (`StandardSave`),
the config and the input pipeline's position (`JsonSave`). Opening a directory
whose checkpoints were written with a different config raises `ConfigMismatch`
naming the differing keys, so a run never silently continues someone else's.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class ConfigMismatch(ValueError):
    """The checkpoint directory belongs to a run with another config."""


def _normalise(config: Mapping[str, Any]) -> dict:
    return json.loads(json.dumps(dict(config), sort_keys=True, default=str))


class Checkpointer:
    """A `ocp.CheckpointManager` for one training run (`max_to_keep=keep`,
    `save_interval_steps=save_every`; the final step is always saved via
    `save(..., force=True)`).

    `min_interval_s`: a step on the `save_every` grid is skipped when the last save (or
    the start) is less than this many seconds ago — a short run on a fast machine then
    writes its final checkpoint only instead of one per grid step (each orbax save
    costs ~0.5–3 s whatever the model's size). A kill loses at most
    max(`save_every` steps, `min_interval_s`) of work, never the result: the run
    resumes from the latest save with its data position.
    """

    def __init__(self, directory, config: Mapping[str, Any], *, save_every: int = 500,
                 keep: int | None = 3, asynchronous: bool = True, min_interval_s: float = 0.0):
        self.directory = Path(directory).absolute()
        self.config = _normalise(config)
        self.min_interval_s = float(min_interval_s)
        self._last_save = time.monotonic()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=save_every, create=True,
            enable_async_checkpointing=asynchronous)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._check_config()

    def _check_config(self):
        step = self.manager.latest_step()
        if step is None:
            return
        saved = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        saved = _normalise(saved["config"])
        if saved != self.config:
            keys = sorted(k for k in set(saved) | set(self.config)
                          if saved.get(k) != self.config.get(k))
            diff = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {self.config.get(k)!r}"
                             for k in keys)
            raise ConfigMismatch(f"checkpoints in {self.directory} were written by a run with "
                                 f"another config ({diff}); use a new directory or the same config")

    @property
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, data_state: Mapping[str, Any] | None = None, *,
             force: bool = False) -> bool:
        """Save if `step` is due (or `force`); returns whether a save started."""
        if not force:
            if not self.manager.should_save(step):
                return False
            if time.monotonic() - self._last_save < self.min_interval_s:
                return False
        self._last_save = time.monotonic()
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(self.config),
            data=ocp.args.JsonSave(dict(data_state or {}))), force=True)

    def restore(self, step: int, state_like):
        """Restore `(state, data_state)` of `step` into the structure of `state_like`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
        return out["state"], out["data"]

    def restore_or(self, state, data_state=None):
        """Resume from the latest checkpoint if there is one: `(state, data_state, step)`;
        otherwise the given `state`, `data_state` and step 0."""
        step = self.latest_step
        if step is None:
            return state, data_state, 0
        state, data = self.restore(step, state)
        return state, data, step

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
