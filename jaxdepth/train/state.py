"""One train state and one step builder for every trainer.

    state = new_state(cfg.run, params={"depth": ..., "pose": ...}, batch_stats={...})
    step = make_step(loss_fn, auto_sharding=True)       # jit-compiled
    state, metrics = step(state, batch)

The state is a dict pytree: `params` and `batch_stats` (one entry per network:
`depth`, `pose`, `uncert`, …), `opt_state` (the optimiser's state), `key` (the run's
PRNG key: step `t` uses `fold_in(key, t)`), `step` (int32) and `hparams` (the schedule's
values, in the state so that runs differing only in them share one compiled step).

Optimisers (`OPTIMIZERS`, chosen by `new_state(..., optimizer=)`; the keys of `hparams`
tell `optimizer(hp)` which one a state holds):
- `"adam"` (Monodepth2, every trainer's default): Adam (β = 0.9, 0.999, ε = 1e-8) at
  `lr`, ×`decay` from update `drop_step` on; `hparams` = `lr`, `drop_step`, `decay`.
- `"monovit"` (MonoViT's released trainer): AdamW (β = 0.9, 0.999, ε = 1e-8, decoupled
  weight decay `MONOVIT_WEIGHT_DECAY` = 0.01, PyTorch's default, on every parameter) in
  two groups, `optax.partition` over the params: the depth network's `encoder` subtree at
  `MONOVIT_ENCODER_LR` × `lr` (5e-5 against 1e-4 as released), everything else — the
  depth `decoder` and, as in the released trainer, the pose (and any other) network — at
  `lr`; both decay ×`gamma` = 0.9 per epoch of `epoch_steps` updates
  (`RunConfig.epoch_steps` = train_size // batch_size), staircase: update `t` runs at
  `lr_g · gamma^(t // epoch_steps)` (PyTorch's `ExponentialLR(0.9)` stepped once an
  epoch). `hparams` = `lr`, `epoch_steps`, `gamma`; the run's `lr_drop_at` / `lr_decay`
  do not apply.
- `"newcrfs"` (NeWCRFs' released trainer, the ADU-Depth recipes of `jaxdepth.train.adu`):
  Adam (β = 0.9, 0.999, ε = 1e-8, no weight decay: the config's weight decay and eps are
  parsed but never passed to the optimiser) with polynomial decay updated every step,
  `(lr − end_lr)·(1 − t/total_steps)^0.9 + end_lr`, `end_lr` = `NEWCRFS_END_LR` × `lr`;
  `hparams` = `lr`, `end_lr`, `total_steps`, `power`; the run's `lr_drop_at` / `lr_decay`
  do not apply.

`loss_fn(params, batch_stats, batch, key, *extra) -> (loss, (new_batch_stats, metrics))`
is the trainer's whole contribution: its augmentation, forward passes and loss.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adam", "monovit", "newcrfs")
#: MonoViT: the encoder's learning rate relative to the decoder's (5e-5 / 1e-4 as released)
MONOVIT_ENCODER_LR = 0.5
#: MonoViT: AdamW's decoupled weight decay (PyTorch's default; the released trainer sets none)
MONOVIT_WEIGHT_DECAY = 0.01
#: MonoViT: the learning rates' factor per epoch (`ExponentialLR(0.9)`)
MONOVIT_GAMMA = 0.9
#: NeWCRFs: the polynomial schedule's final rate relative to `lr` (2e-6 / 2e-5) and power
NEWCRFS_END_LR = 0.1
NEWCRFS_POWER = 0.9


def hparams(run, optimizer: str = "adam") -> dict:
    """The schedule's values of a `RunConfig` for `optimizer`, as state arrays."""
    if optimizer == "adam":
        return {"lr": jnp.asarray(run.lr, jnp.float32),
                "drop_step": jnp.asarray(run.drop_step, jnp.int32),
                "decay": jnp.asarray(run.lr_decay, jnp.float32)}
    if optimizer == "monovit":
        return {"lr": jnp.asarray(run.lr, jnp.float32),
                "epoch_steps": jnp.asarray(run.epoch_steps, jnp.int32),
                "gamma": jnp.asarray(MONOVIT_GAMMA, jnp.float32)}
    if optimizer == "newcrfs":
        return {"lr": jnp.asarray(run.lr, jnp.float32),
                "end_lr": jnp.asarray(run.lr * NEWCRFS_END_LR, jnp.float32),
                "total_steps": jnp.asarray(max(run.steps, 1), jnp.int32),
                "power": jnp.asarray(NEWCRFS_POWER, jnp.float32)}
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


def optimizer_name(hp) -> str:
    """Which optimiser a state's `hparams` belong to."""
    if "power" in hp:
        return "newcrfs"
    return "monovit" if "gamma" in hp else "adam"


def schedule(hp) -> optax.Schedule:
    """Step decay: `lr` for updates `count < drop_step`, `lr · decay` from then on
    (`optax.piecewise_constant_schedule` with one boundary, with traced values)."""
    return lambda count: hp["lr"] * jnp.where(count >= hp["drop_step"], hp["decay"], 1.0)


def exponential_schedule(hp, scale: float = 1.0) -> optax.Schedule:
    """`scale · lr · gamma^(count // epoch_steps)` (`optax.exponential_decay` with
    `staircase=True`, with traced values): MonoViT's per-epoch `ExponentialLR`."""
    def fn(count):
        epoch = (jnp.asarray(count, jnp.int32) // hp["epoch_steps"]).astype(jnp.float32)
        return scale * hp["lr"] * hp["gamma"] ** epoch
    return fn


def poly_schedule(hp) -> optax.Schedule:
    """NeWCRFs' `(lr − end_lr)·(1 − count/total_steps)^power + end_lr` (`count` clipped to
    `total_steps`; `optax.polynomial_schedule` with traced values)."""
    def fn(count):
        frac = jnp.minimum(jnp.asarray(count, jnp.float32),
                           hp["total_steps"].astype(jnp.float32)) / hp["total_steps"]
        return (hp["lr"] - hp["end_lr"]) * (1.0 - frac) ** hp["power"] + hp["end_lr"]
    return fn


def monovit_schedules(hp) -> dict[str, optax.Schedule]:
    """The two parameter groups' schedules of the `"monovit"` optimiser."""
    return {"encoder": exponential_schedule(hp, MONOVIT_ENCODER_LR),
            "decoder": exponential_schedule(hp)}


def monovit_labels(params) -> dict:
    """The parameter groups of the `"monovit"` optimiser, a prefix tree of `params`:
    `encoder` for the depth network's `encoder` subtree, `decoder` for everything else
    (its `decoder`, the pose network, …), as MonoViT's released trainer groups them."""
    def net(name, tree):
        if name == "depth" and isinstance(tree, Mapping) and "encoder" in tree:
            return {k: "encoder" if k == "encoder" else "decoder" for k in tree}
        return "decoder"
    return {name: net(name, tree) for name, tree in params.items()}


def make_optimizer(hp) -> optax.GradientTransformation:
    """The optimiser a state's `hparams` describe (module doc): Adam at `schedule(hp)`,
    or MonoViT's two-group AdamW at `monovit_schedules(hp)`."""
    if optimizer_name(hp) == "monovit":
        return optax.partition(
            {g: optax.adamw(fn, b1=0.9, b2=0.999, eps=1e-8, weight_decay=MONOVIT_WEIGHT_DECAY)
             for g, fn in monovit_schedules(hp).items()}, monovit_labels)
    if optimizer_name(hp) == "newcrfs":
        return optax.adam(poly_schedule(hp), b1=0.9, b2=0.999, eps=1e-8)
    return optax.adam(schedule(hp))


optimizer = make_optimizer  # the earlier name


def new_state(run, params, batch_stats, optimizer: str = "adam") -> dict:
    """A fresh train state of a run (`params`, `batch_stats`: dicts keyed by network),
    with the optimiser `optimizer` (`OPTIMIZERS`)."""
    hp = hparams(run, optimizer)
    return {"params": params, "batch_stats": batch_stats,
            "opt_state": make_optimizer(hp).init(params),
            "key": jax.random.PRNGKey(run.seed + 1), "step": jnp.zeros((), jnp.int32),
            "hparams": hp}


def apply_gradients(state, grads, batch_stats) -> dict:
    """The state after one optimiser update with new BatchNorm statistics."""
    tx = make_optimizer(state["hparams"])
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
