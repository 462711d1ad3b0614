"""One train state and one step builder for every trainer.

    state = new_state(cfg.run, params={"depth": ..., "pose": ...}, batch_stats={...})
    step = make_step(loss_fn, auto_sharding=True)       # jit-compiled
    state, metrics = step(state, batch)

The state is a dict pytree: `params` and `batch_stats` (one entry per network:
`depth`, `pose`, `uncert`, …), `opt_state` (optax Adam with the run's schedule),
`key` (the run's PRNG key: step `t` uses `fold_in(key, t)`), `step` (int32) and
`hparams` (`lr`, `drop_step`, `decay`: the schedule's values, in the state so that runs
differing only in them share one compiled step).

`loss_fn(params, batch_stats, batch, key, *extra) -> (loss, (new_batch_stats, metrics))`
is the trainer's whole contribution: its augmentation, forward passes and loss.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax


def hparams(run) -> dict:
    """The schedule's values of a `RunConfig`, as state arrays."""
    return {"lr": jnp.asarray(run.lr, jnp.float32),
            "drop_step": jnp.asarray(run.drop_step, jnp.int32),
            "decay": jnp.asarray(run.lr_decay, jnp.float32)}


def schedule(hp) -> optax.Schedule:
    """Step decay: `lr` for updates `count < drop_step`, `lr · decay` from then on
    (`optax.piecewise_constant_schedule` with one boundary, with traced values)."""
    return lambda count: hp["lr"] * jnp.where(count >= hp["drop_step"], hp["decay"], 1.0)


def optimizer(hp) -> optax.GradientTransformation:
    """Adam (β = 0.9, 0.999, ε = 1e-8) at `schedule(hp)`."""
    return optax.adam(schedule(hp))


def new_state(run, params, batch_stats) -> dict:
    """A fresh train state of a run (`params`, `batch_stats`: dicts keyed by network)."""
    hp = hparams(run)
    return {"params": params, "batch_stats": batch_stats,
            "opt_state": optimizer(hp).init(params),
            "key": jax.random.PRNGKey(run.seed + 1), "step": jnp.zeros((), jnp.int32),
            "hparams": hp}


def apply_gradients(state, grads, batch_stats) -> dict:
    """The state after one optimiser update with new BatchNorm statistics."""
    tx = optimizer(state["hparams"])
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return {**state, "params": optax.apply_updates(state["params"], updates),
            "batch_stats": batch_stats, "opt_state": opt_state, "step": state["step"] + 1}


def make_step(loss_fn, *, auto_sharding: bool = True):
    """`jit(step(state, batch, *extra) -> (state, metrics))` from a trainer's `loss_fn`
    (see the module docstring); `metrics` gets `loss`. With `auto_sharding` the body runs
    with the mesh axes in Auto mode (`auto_sharding`)."""

    def step(state, batch, *extra):
        key = jax.random.fold_in(state["key"], state["step"])
        (loss, (stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["batch_stats"], batch, key, *extra)
        return apply_gradients(state, grads, stats), {"loss": loss, **metrics}

    return jax.jit(_auto_sharding(step) if auto_sharding else step)


def _auto_sharding(fn):
    """Run a train step body with the mesh axes in Auto mode (GSPMD propagation) and
    return its outputs replicated.

    `train.loop.fit` shards batches over `jax.make_mesh`'s mesh, whose axes are Explicit
    in JAX ≥ 0.7 (sharding in types): then reshapes, gathers and `vmap`s over the sharded
    batch axis (bilinear sampling, per-pixel minima over sources, `jnp.linalg.inv` of
    batched intrinsics) would each need a hand-written output sharding. Inside
    `auto_axes` the compiler propagates them. Outside a mesh this is the identity.
    """
    auto = jax.sharding.auto_axes(fn, out_sharding=jax.P())

    @functools.wraps(fn)
    def wrapped(*args):
        for leaf in jax.tree.leaves(args):
            mesh = getattr(jax.typeof(leaf).sharding, "mesh", None)
            if (mesh is not None and not mesh.empty
                    and jax.sharding.AxisType.Explicit in mesh.axis_types):
                with jax.sharding.use_abstract_mesh(mesh):
                    return auto(*args)
        return fn(*args)

    return wrapped


def overlay(fresh, start, path: str = ""):
    """`fresh` with every leaf that `start` also has taken from `start` (a fine-tuned run
    starting from another's weights); a shape mismatch names the leaf."""
    if not isinstance(fresh, dict):
        if jnp.shape(fresh) != jnp.shape(start):
            raise ValueError(f"start_state{path} has shape {jnp.shape(start)}, the run "
                             f"needs {jnp.shape(fresh)}")
        return jnp.asarray(start)
    return {k: overlay(v, start[k], f"{path}[{k!r}]") if k in start else v
            for k, v in fresh.items()}
