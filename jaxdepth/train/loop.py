"""The training loop every trainer shares: resume, step, progress bar, checkpoints.

    state = fit(step_fn, state, loader, steps=..., checkpointer=ckpt)

`step_fn(state, batch) -> (state, metrics)` is jit-compiled by the caller and
pure; `state` is a dict pytree with an int `step`. The loop restores the latest
checkpoint (state and the loader's position), so a killed run started again
ends with exactly the parameters of an uninterrupted one. Batches are placed on
all devices along the `data` mesh axis, variables replicated.
"""
from __future__ import annotations

import time

import jax
from tqdm.auto import tqdm

from jaxdepth.data.pipeline import shard_batch
from jaxdepth.train.checkpoint import Checkpointer


def data_mesh():
    """A 1-D mesh over all devices with axis `data`."""
    return jax.make_mesh((jax.device_count(),), ("data",))


def replicate(tree, mesh):
    return jax.device_put(tree, jax.NamedSharding(mesh, jax.P()))


def fit(step_fn, state, loader, *, steps: int, checkpointer: Checkpointer | None = None,
        progress: bool = True, description: str = "train", log_every: int = 10):
    """Run `step_fn` until `state["step"] == steps`; returns the final state.

    The loader must offer `get_state()`/`set_state()`; with a checkpointer the
    run resumes from its latest checkpoint and saves at its interval and at the end.
    """
    mesh = data_mesh()
    start = 0
    if checkpointer is not None:
        state, data_state, start = checkpointer.restore_or(state, None)
        if data_state:
            loader.set_state(data_state)
    state = replicate(state, mesh)
    batch_size = getattr(loader, "batch_size", None)
    bar = tqdm(total=steps, initial=start, desc=description, disable=not progress,
               dynamic_ncols=True, leave=True, mininterval=1.0)
    wall0 = time.perf_counter()
    t0, seen, last = None, 0, {}  # throughput is counted from the end of the first (compiling) step
    it = iter(loader)
    for step in range(start, steps):
        batch = shard_batch(next(it), mesh)
        state, metrics = step_fn(state, batch)
        if t0 is None:
            jax.block_until_ready(state)
            t0 = time.perf_counter()
        else:
            seen += batch_size or 0
        if checkpointer is not None:
            checkpointer.save(step + 1, state, loader.get_state(), force=step + 1 == steps)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            last = {k: float(v) for k, v in metrics.items()}
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix({**{k: f"{v:.4g}" for k, v in last.items()}, "img/s": f"{rate:.1f}"})
        bar.update(1)
    bar.close()
    if checkpointer is not None:
        checkpointer.wait()
    if progress:
        wall = time.perf_counter() - wall0
        rate = seen / max(time.perf_counter() - t0, 1e-9) if t0 is not None else 0.0
        print(f"{description}: {steps - start} steps in {wall:.1f} s"
              + (f" ({rate:.1f} images/s after compilation)" if seen else "")
              + (f", final {', '.join(f'{k} {v:.4g}' for k, v in last.items())}" if last else ""))
    return state
