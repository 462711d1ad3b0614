"""One batched input pipeline for every source (procedural scenes, KITTI, NYU, TFDS).

Source protocol: ``len(source)`` and ``source[i] -> dict`` of ``np.ndarray`` (nested
dicts allowed, e.g. ``frames: {-1: img, 1: img}``; string arrays allowed for metadata),
optionally ``source.get_batch(indices) -> dict of stacked arrays`` as a fast path.

:class:`Loader` yields stacked dict batches. The order of epoch ``e`` is
``np.random.default_rng([seed, e, 0]).permutation(len(source))`` (or ``arange``), a pure
function of ``(seed, epoch)``; batch ``p`` of the epoch is slice ``[p·B, (p+1)·B)`` of it.
The state is therefore three integers (``seed``, ``epoch``, ``position``), JSON
serialisable, and a Loader restored with :meth:`Loader.set_state` yields exactly the
batches an uninterrupted one would have. Per-sample transforms get a generator seeded by
``(seed, epoch, 1, source index)``, batch transforms one seeded by ``(seed, epoch, 2,
position)``, so augmentation is reproducible and survives resumption too.

Why a simple iterator and not grain: every source here is random access and cheap to
index, so the whole of what grain would give us (seeded shuffling, resumable state,
threaded prefetch) is ~150 lines with no dependency; the state is plain JSON that orbax's
``JsonSave`` stores beside the train state; sources with ``get_batch`` (the JAX procedural
scenes render a whole batch in one jitted call) keep their fast path, which grain's
per-element ``__getitem__`` would lose; and multiprocess workers do not pay off on 2-core
CI runners or Colab TPU hosts. Grain remains an optional extra: :func:`grain_dataset` wraps
any source as a ``grain.MapDataset`` for users who want its worker processes (its order
differs from :class:`Loader`'s). Nothing in the core imports grain.
"""
from __future__ import annotations

import concurrent.futures as cf
import math
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np
from PIL import Image

__all__ = ["Loader", "First", "stack_samples", "shard_batch", "color_jitter", "grain_dataset"]


class First:
    """The first `n` samples of a source (all of them if `n` is None or larger)."""

    def __init__(self, source, n: int | None):
        self.source, self.n = source, len(source) if n is None else min(n, len(source))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.source[i]


def stack_samples(samples: list, _path: str = "") -> Any:
    """Stack a list of (nested) sample dicts into one dict of ``[B, ...]`` arrays."""
    first = samples[0]
    if isinstance(first, Mapping):
        keys = list(first.keys())
        for s in samples[1:]:
            if not isinstance(s, Mapping) or set(s.keys()) != set(keys):
                other = sorted(map(str, s.keys())) if isinstance(s, Mapping) else type(s)
                raise ValueError(f"cannot batch samples with different keys at "
                                 f"{_path or '<root>'}: {sorted(map(str, keys))} vs {other}")
        return {k: stack_samples([s[k] for s in samples], f"{_path}/{k}") for k in keys}
    arrs = [np.asarray(s) for s in samples]
    shapes = {a.shape for a in arrs}
    if len(shapes) > 1:
        raise ValueError(f"cannot batch {_path or 'samples'}: shapes differ {sorted(shapes)}; "
                         "use batch_size=1 or pad (e.g. KittiTest(pad_to=(376, 1242)))")
    return np.stack(arrs)


class Loader:
    """Seeded, resumable batch iterator over a source (see the module docstring).

    ``transform(sample, rng) -> sample`` runs per sample (then ``get_batch`` is not used);
    ``batch_transform(batch, rng) -> batch`` per batch. ``num_threads`` > 0 loads samples
    of a batch in a thread pool (file sources); ``prefetch`` > 0 loads that many batches
    ahead in the background (the state still counts only the batches handed out).
    ``num_epochs=None`` iterates forever. ``len(loader)`` is the number of batches per epoch.
    """

    def __init__(self, source, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_remainder: bool = True, num_epochs: int | None = None,
                 transform: Callable | None = None, batch_transform: Callable | None = None,
                 num_threads: int = 0, prefetch: int = 0, state: dict | None = None):
        self.source, self.batch_size = source, int(batch_size)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.drop_remainder, self.num_epochs = bool(drop_remainder), num_epochs
        self.transform, self.batch_transform = transform, batch_transform
        self.num_samples = len(source)
        if self.num_samples == 0:
            raise ValueError(f"cannot load from an empty source ({type(source).__name__})")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.steps_per_epoch = (self.num_samples // self.batch_size if self.drop_remainder
                                else math.ceil(self.num_samples / self.batch_size))
        if self.steps_per_epoch == 0:
            raise ValueError(f"source has {self.num_samples} samples < batch_size "
                             f"{self.batch_size} with drop_remainder=True: every epoch is empty")
        self.epoch, self.position = 0, 0
        self._perm_cache: tuple[int, np.ndarray] | None = None
        self._pool = cf.ThreadPoolExecutor(num_threads) if num_threads > 0 else None
        self._prefetch = int(prefetch)
        self._bg = cf.ThreadPoolExecutor(1) if self._prefetch > 0 else None
        self._pending: dict[tuple[int, int], cf.Future] = {}
        if state is not None:
            self.set_state(state)

    # -------------------------------------------------------------------- order
    def permutation(self, epoch: int) -> np.ndarray:
        """Sample order of ``epoch`` (int64 [N])."""
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            perm = (np.random.default_rng([self.seed, epoch, 0]).permutation(self.num_samples)
                    if self.shuffle else np.arange(self.num_samples))
            self._perm_cache = (epoch, perm)
        return self._perm_cache[1]

    def batch_indices(self, epoch: int, position: int) -> np.ndarray:
        """Source indices of batch ``position`` of ``epoch``."""
        b = self.batch_size
        return self.permutation(epoch)[position * b:(position + 1) * b]

    def __len__(self) -> int:
        return self.steps_per_epoch

    # -------------------------------------------------------------------- loading
    def _sample(self, i: int, epoch: int):
        s = self.source[int(i)]
        if self.transform is not None:
            s = self.transform(s, np.random.default_rng([self.seed, epoch, 1, int(i)]))
        return s

    def load_batch(self, epoch: int, position: int) -> dict:
        """Batch ``position`` of ``epoch`` (a pure function of the two and the seed)."""
        idx = self.batch_indices(epoch, position)
        if self.transform is None and hasattr(self.source, "get_batch"):
            batch = self.source.get_batch(np.asarray(idx))
        elif self._pool is not None:
            batch = stack_samples(list(self._pool.map(lambda i: self._sample(i, epoch), idx)))
        else:
            batch = stack_samples([self._sample(i, epoch) for i in idx])
        if self.batch_transform is not None:
            batch = self.batch_transform(batch,
                                         np.random.default_rng([self.seed, epoch, 2, position]))
        return batch

    def _next_positions(self, k: int):
        e, p = self.epoch, self.position
        for _ in range(k):
            if self.num_epochs is not None and e >= self.num_epochs:
                return
            yield e, p
            p += 1
            if p == self.steps_per_epoch:
                e, p = e + 1, 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        key = (self.epoch, self.position)
        if self._bg is not None:
            for k in self._next_positions(self._prefetch + 1):
                if k not in self._pending:
                    self._pending[k] = self._bg.submit(self.load_batch, *k)
            batch = self._pending.pop(key).result()
        else:
            batch = self.load_batch(*key)
        self.position += 1
        if self.position == self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        return batch

    # -------------------------------------------------------------------- state
    def get_state(self) -> dict:
        """JSON-serialisable position: next batch is ``position`` of ``epoch``."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "batch_size": self.batch_size, "num_samples": self.num_samples,
                "shuffle": self.shuffle, "drop_remainder": self.drop_remainder}

    def set_state(self, state: Mapping) -> None:
        """Resume from :meth:`get_state`; the source and batching must match."""
        for k in ("batch_size", "num_samples", "shuffle", "drop_remainder"):
            if k in state and state[k] != getattr(self, k):
                raise ValueError(f"loader state has {k}={state[k]!r} but this loader has "
                                 f"{getattr(self, k)!r}: the batches would differ")
        epoch, position = int(state["epoch"]), int(state["position"])
        if not 0 <= position < self.steps_per_epoch or epoch < 0:
            raise ValueError(f"invalid loader state epoch={epoch} position={position} "
                             f"({self.steps_per_epoch} batches per epoch)")
        self.seed = int(state.get("seed", self.seed))
        self.epoch, self.position = epoch, position
        self._perm_cache = None
        for f in self._pending.values():
            f.cancel()
        self._pending.clear()

    def close(self) -> None:
        """Stop the worker threads."""
        for pool in (self._pool, self._bg):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._bg = None
        self._pending.clear()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def shard_batch(batch, mesh=None, axis: str = "data"):
    """Place a batch on devices, split along its leading axis: ``NamedSharding(mesh,
    P(axis))``. ``mesh`` defaults to ``jax.make_mesh((jax.device_count(),), ("data",))``.
    String leaves (metadata) stay on the host as NumPy arrays. With several processes each
    passes its local part (``jax.make_array_from_process_local_data``)."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    if mesh is None:
        mesh = jax.make_mesh((jax.device_count(),), (axis,))
    sharding = NamedSharding(mesh, P(axis))
    n = mesh.shape[axis]
    multi = jax.process_count() > 1

    def put(x):
        x = np.asarray(x)
        if x.dtype.kind in "USO":
            return x
        if multi:
            return jax.make_array_from_process_local_data(sharding, x)
        if x.ndim == 0 or x.shape[0] % n:
            raise ValueError(f"batch leaf of shape {x.shape} cannot be split over {n} devices "
                             f"along '{axis}': the batch size must be a multiple of {n}")
        return jax.device_put(x, sharding)

    return jax.tree_util.tree_map(put, batch)


def color_jitter(img: np.ndarray, brightness: float = 1.0, contrast: float = 1.0,
                 saturation: float = 1.0, hue: float = 0.0) -> np.ndarray:
    """Colour jitter of a float image [H, W, 3] in [0, 1] with given factors (torchvision
    formulas, fixed order brightness, contrast, saturation, hue; hue in turns)."""
    w = np.array([0.299, 0.587, 0.114], np.float32)
    x = np.clip(np.asarray(img, np.float32) * brightness, 0, 1)
    m = float((x @ w).mean())
    x = np.clip((x - m) * contrast + m, 0, 1)
    g = (x @ w)[..., None]
    x = np.clip((x - g) * saturation + g, 0, 1)
    if hue:
        hsv = np.asarray(Image.fromarray((x * 255 + 0.5).astype(np.uint8)).convert("HSV"),
                         np.int16)
        hsv[..., 0] = (hsv[..., 0] + int(round(hue * 255))) % 256
        x = np.asarray(Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB"),
                       np.float32) / 255.0
    return x.astype(np.float32)


def grain_dataset(source, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                  drop_remainder: bool = True, num_epochs: int | None = None,
                  transform: Callable | None = None):
    """The same source as a ``grain.MapDataset`` (optional extra ``grain``): shuffled per
    epoch by grain's own seeded shuffle, ``transform(sample, rng)`` as a random map, then
    batched. Iterate ``iter(ds.to_iter_dataset())``; its iterator has grain's
    ``get_state``/``set_state``. The order differs from :class:`Loader`'s."""
    try:
        import grain
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("grain_dataset needs the optional 'grain' package "
                          "(pip install 'jaxdepth[data]')") from err
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds.repeat(num_epochs)
    if transform is not None:
        ds = ds.random_map(transform, seed=seed)
    return ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=stack_samples)
