"""Orbax checkpoints of a training run: state, config and data position together.

    ckpt = Checkpointer(directory, config, save_every=500, keep=3)
    state, data_state, step = ckpt.restore_or(state, data_state)   # resume if possible
    ...
    ckpt.save(step, state, loader.get_state())
    ckpt.close()

Each checkpoint is an `ocp.args.Composite` of the train state (`StandardSave`),
the config and the input pipeline's position (`JsonSave`), and a CRC-32 of every array
of the state (`checksum`, `JsonSave`). Opening a directory whose checkpoints were
written with a different config raises `ConfigMismatch` naming the differing keys, so
a run never silently continues someone else's; a step whose train state has another
tree structure or shapes (another trainer version or architecture) raises
`StateMismatch` (a `ConfigMismatch`).

Damage. Orbax finalises a step by renaming its temporary directory, so a killed save
leaves nothing orbax reads; what can still happen is damage to a finished step (a
truncated, zeroed, deleted or bit-flipped file: a full disk, a copy cut short, a
failing disk). `restore_or` detects it — orbax / TensorStore fail to read the step, or
the restored arrays do not match the CRC-32s saved with them — warns naming the step
directory and the error, moves the step aside to `<step>.damaged` (kept for
inspection, ignored by orbax, never deleted by jaxdepth; delete it when you like) and
resumes from the newest intact step. To always have one, at least two steps are kept
while a run trains (`keep=1` keeps two until `trim()`, which `train_or_load` calls
when a run finishes). When no intact step is left, training restarts from step 0 with
a warning (the damaged steps stay aside). Checkpoints written before the checksums
existed are restored without that check.

Output directory. Before training starts (`restore_or`) the directory is probed with
a temporary file and its free space compared with the size of one checkpoint; every
save checks the free space again. Either failing raises `OutputNotWritable` (an
`OSError`) naming the directory, before a save half-writes.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "ConfigMismatch", "StateMismatch", "CheckpointDamaged",
           "OutputNotWritable", "probe_writable", "tree_checksums", "verify_checksums",
           "is_mismatch", "describe_error"]

DAMAGED_SUFFIX = ".damaged"


class ConfigMismatch(ValueError):
    """The checkpoint directory belongs to a run with another config."""


class StateMismatch(ConfigMismatch):
    """A saved train state of another tree structure or shapes than the trainer's."""


class CheckpointDamaged(ValueError):
    """A checkpoint step (or export) that cannot be read back intact."""


class OutputNotWritable(OSError):
    """An output directory that cannot be written, or has no room for the output."""


def _normalise(config: Mapping[str, Any]) -> dict:
    return json.loads(json.dumps(dict(config), sort_keys=True, default=str))


# --------------------------------------------------------------------------- helpers

def probe_writable(directory, need_bytes: int = 0, what: str = "output directory") -> Path:
    """Create `directory` if needed and write (then remove) a temporary file in it;
    raise `OutputNotWritable` naming it if that fails or if fewer than `need_bytes`
    bytes are free there. Returns the directory."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".jaxdepth-write-probe-"):
            pass
    except OSError as e:
        raise OutputNotWritable(f"{what} {directory} is not writable "
                                f"({e.strerror or e}); choose another directory or fix its "
                                "permissions") from None
    if need_bytes:
        free = shutil.disk_usage(directory).free
        if free < need_bytes:
            raise OutputNotWritable(f"{what} {directory} has {free / 1e6:.1f} MB free, and "
                                    f"needs about {need_bytes / 1e6:.1f} MB; free some space or "
                                    "choose another directory")
    return directory


def _key_name(k) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def tree_checksums(tree) -> dict[str, str]:
    """`{"a/b/c": "<crc32 hex>"}` of every array leaf (its bytes on the host)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        out["/".join(_key_name(k) for k in path)] = f"{zlib.crc32(a.reshape(-1).view(np.uint8)):08x}"
    return out


def verify_checksums(tree, saved: Mapping[str, str] | None, where) -> None:
    """Raise `CheckpointDamaged` naming the arrays of `tree` whose CRC-32 differs from
    `saved` (arrays `saved` does not list are not checked; `saved` None: nothing is)."""
    if not saved:
        return
    now = tree_checksums(tree)
    bad = sorted(k for k, v in now.items() if k in saved and saved[k] != v)
    if bad:
        shown = ", ".join(bad[:5]) + (f", … ({len(bad)} in all)" if len(bad) > 5 else "")
        raise CheckpointDamaged(f"{where}: the data of {shown} does not match the checksum "
                                "saved with it (a corrupted file)")


def is_mismatch(error: BaseException) -> bool:
    """Whether an orbax restore error says the saved tree has another structure or
    shapes than the one asked for (as opposed to unreadable, damaged files)."""
    msg = str(error)
    return isinstance(error, ValueError) and any(s in msg for s in (
        "tree structures do not match", "is not compatible with the stored shape"))


def describe_error(error: BaseException, limit: int = 400) -> str:
    """A one-line summary of a (TensorStore / orbax / JSON) read error: its root cause
    (`__cause__` chain; TensorStore's message names the array and the file it failed
    on), without TensorStore's spec dumps."""
    chain, e = [], error
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__
    e = chain[-1]
    text = str(e).split(" [tensorstore_spec")[0].split(" See full TensorStore")[0]
    text = " ".join(f"{type(e).__name__}: {text}".split())
    return text if len(text) <= limit else text[:limit] + "…"


def _tree_nbytes(tree) -> int:
    return int(sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(tree)))


# --------------------------------------------------------------------------- checkpointer

class Checkpointer:
    """A `ocp.CheckpointManager` for one training run (`max_to_keep=max(keep, 2)` —
    see "Damage" in the module doc —, `save_interval_steps=save_every`; the final step
    is always saved via `save(..., force=True)`).

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
        self.keep = keep
        self.min_interval_s = float(min_interval_s)
        self._last_save = time.monotonic()
        self._need_bytes = 0
        self.damaged: dict[int, str] = {}  # step → why, found unreadable by this object
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if keep is None else max(int(keep), 2),
            save_interval_steps=save_every, create=True,
            enable_async_checkpointing=asynchronous)
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._check_config()

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def _note_damage(self, step: int, error: BaseException | str):
        why = error if isinstance(error, str) else describe_error(error)
        self.damaged[step] = why
        warnings.warn(f"checkpoint {self.step_dir(step)} is damaged and cannot be restored "
                      f"({why})", RuntimeWarning, stacklevel=3)

    def set_aside(self, step: int) -> Path | None:
        """Move a damaged step out of orbax's way: `<step>` → `<step>.damaged` (`.1`, …
        if taken); returns the new path (None if the step directory is gone)."""
        src = self.step_dir(step)
        if not src.exists():
            return None
        dst = src.with_name(src.name + DAMAGED_SUFFIX)
        n = 0
        while dst.exists():
            n += 1
            dst = src.with_name(f"{src.name}{DAMAGED_SUFFIX}.{n}")
        src.rename(dst)
        self.manager.reload()
        return dst

    def _check_config(self):
        for step in reversed(self.all_steps()):
            try:
                saved = self.manager.restore(step, args=ocp.args.Composite(
                    config=ocp.args.JsonRestore()))["config"]
                if not isinstance(saved, Mapping):
                    raise CheckpointDamaged(f"config is a {type(saved).__name__}, not a mapping")
            except Exception as e:  # noqa: BLE001 — any read failure is damage here
                self._note_damage(step, e)
                continue
            saved = _normalise(saved)
            if saved != self.config:
                keys = sorted(k for k in set(saved) | set(self.config)
                              if saved.get(k) != self.config.get(k))
                diff = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {self.config.get(k)!r}"
                                 for k in keys)
                raise ConfigMismatch(f"checkpoints in {self.directory} were written by a run "
                                     f"with another config ({diff}); use a new directory or "
                                     "the same config")
            return

    @property
    def latest_step(self) -> int | None:
        """The newest step not found damaged."""
        steps = [s for s in self.all_steps() if s not in self.damaged]
        return steps[-1] if steps else None

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def check_room(self, state=None):
        """`probe_writable` of the directory, with room for one checkpoint of `state`
        (or of the last state saved / restored)."""
        if state is not None:
            self._need_bytes = int(_tree_nbytes(state) * 1.1) + (1 << 20)
        probe_writable(self.directory, self._need_bytes, "checkpoint directory")

    def save(self, step: int, state, data_state: Mapping[str, Any] | None = None, *,
             force: bool = False) -> bool:
        """Save if `step` is due (or `force`); returns whether a save started. Raises
        `OutputNotWritable` when the directory has no room for it."""
        if not force:
            if not self.manager.should_save(step):
                return False
            if time.monotonic() - self._last_save < self.min_interval_s:
                return False
        if not self._need_bytes:
            self._need_bytes = int(_tree_nbytes(state) * 1.1) + (1 << 20)
        free = shutil.disk_usage(self.directory).free
        if free < self._need_bytes:
            self.manager.wait_until_finished()
            raise OutputNotWritable(
                f"checkpoint directory {self.directory} has {free / 1e6:.1f} MB free, the "
                f"checkpoint of step {step} needs about {self._need_bytes / 1e6:.1f} MB: free "
                f"some space and run again (it resumes from step {self.latest_step or 0})")
        self._last_save = time.monotonic()
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), config=ocp.args.JsonSave(self.config),
            data=ocp.args.JsonSave(dict(data_state or {})),
            checksum=ocp.args.JsonSave(tree_checksums(state))), force=True)

    def restore(self, step: int, state_like):
        """Restore `(state, data_state)` of `step` into the structure of `state_like`;
        raises `StateMismatch` for a state of another structure, `CheckpointDamaged` (or
        orbax's / TensorStore's error) for an unreadable or corrupted step."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_like)
        items = dict(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore())
        if (self.step_dir(step) / "checksum").is_dir():
            items["checksum"] = ocp.args.JsonRestore()
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:
            if is_mismatch(e):
                raise StateMismatch(
                    f"checkpoint {self.step_dir(step)} holds a train state of another "
                    f"structure than this run's ({describe_error(e)}); it was written by "
                    "another version of the trainer or another architecture: use a new "
                    "directory") from None
            raise
        verify_checksums(out["state"], out.get("checksum"), self.step_dir(step))
        return out["state"], out["data"]

    def restore_or(self, state, data_state=None):
        """Resume from the newest intact checkpoint if there is one: `(state, data_state,
        step)`; otherwise the given `state`, `data_state` and step 0. Damaged steps newer
        than the one resumed from are warned about and set aside (module doc); the
        directory is probed for writing first (`check_room`)."""
        self.check_room(state)
        restored = None
        for step in reversed(self.all_steps()):
            if step in self.damaged:
                continue
            try:
                restored = (*self.restore(step, state), step)
                break
            except StateMismatch:
                raise
            except Exception as e:  # noqa: BLE001 — unreadable files, checksum mismatches
                self._note_damage(step, e)
        start = restored[2] if restored else 0
        moved = [(s, self.set_aside(s)) for s in sorted(self.damaged) if s > start]
        if moved:
            where = ", ".join(f"{self.step_dir(s).name} → {p.name}" for s, p in moved if p)
            then = (f"resuming from step {start}" if restored else
                    "no intact checkpoint is left: training restarts from step 0")
            warnings.warn(f"damaged checkpoint(s) in {self.directory} set aside ({where}); "
                          f"{then}", RuntimeWarning, stacklevel=2)
            for s, _ in moved:
                self.damaged.pop(s, None)
        if restored is None:
            return state, data_state, 0
        return restored

    def trim(self):
        """Delete all but the newest `keep` steps (a finished run keeps `keep`; while it
        trains, at least two are kept as a fallback against damage)."""
        if self.keep is None:
            return
        self.manager.wait_until_finished()
        for step in self.all_steps()[:-int(self.keep)]:
            self.manager.delete(step)

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
