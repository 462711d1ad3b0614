"""Training runs: find a finished run by its config, or train (resume) it, and export it.

    state = train_or_load("reg", cfg, "checkpoints", init_state=supervised.init_state,
                          step=supervised.make_step(cfg), needs="depth")

A run lives in `root/<name>-<digest of cfg.to_dict()>` (or the `directory` given; the
name defaults to one derived from the config, `jaxdepth.train.recipes.run_name`, so two
experiments that train the same config share its run): its
orbax steps (`jaxdepth.train.checkpoint.Checkpointer`: train state, config and the input
pipeline's position; 20 checkpoints per run, at most one a minute,
`RunConfig.save_every`) and, once finished, the exported model beside them
(`jaxdepth.export`), which `jaxdepth predict --checkpoint DIR` loads. Running the same
config again resumes a killed run exactly; a directory
written with another config is refused (`ConfigMismatch`). A run that is not finished
and may not be trained (`train=False`) raises `RunNotFinished`.

A damaged step (unreadable or corrupted files, `jaxdepth.train.checkpoint`, "Damage")
is set aside as `<step>.damaged` and the run resumes from its newest intact step; a
finished run whose final step is damaged is trained again from there (the result is
the same: resuming is exact). `restore_variables` and `load_run` raise
`CheckpointDamaged` naming the step directory.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import jax

from jaxdepth.train.checkpoint import (CheckpointDamaged, Checkpointer, StateMismatch,
                                       describe_error, is_mismatch, verify_checksums)
from jaxdepth.train.config import SAVE_MIN_SECONDS

__all__ = ["RunNotFinished", "digest", "run_dir", "train_or_load", "export_run", "restore_variables",
           "snapshot_variables", "load_run", "depth_variables"]


class RunNotFinished(FileNotFoundError):
    """No finished checkpoint of the run, and training was not allowed."""


def digest(cfg) -> str:
    """The run's identity: the first 10 hex digits of the SHA-1 of its sorted config."""
    text = json.dumps(cfg.to_dict(), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def run_dir(root, name: str | None, cfg) -> Path:
    """`root/<name>-<digest>`: a finished run is found again by its config. `name`
    defaults to the config's own (`jaxdepth.train.recipes.run_name`); the digest is the
    identity, so a directory of the same digest under another name (written by an
    earlier jaxdepth, e.g. `boot-…` for a bootstrap member) is that run."""
    d = digest(cfg)
    if name is None:
        from jaxdepth.train.recipes import run_name
        name = run_name(cfg)
    path = Path(root) / f"{name.lower()}-{d}"
    if not path.exists() and Path(root).is_dir():
        same = sorted(p for p in Path(root).glob(f"*-{d}") if p.is_dir())
        if same:
            return same[0]
    return path


def depth_variables(state) -> dict:
    """The exported network's `{"params", "batch_stats"}` of a train state (or of the
    variables `restore_variables` returns): `depth`, or `segmentation` for a
    segmentation run."""
    net = "depth" if "depth" in state["params"] else "segmentation"
    return {"params": state["params"][net], "batch_stats": state["batch_stats"].get(net, {})}


def train_or_load(name: str | None, cfg, root=None, *, init_state, step, data=None, needs=None,
                  moving_objects: bool = False, train: bool = True, progress: bool = True,
                  keep: int = 1, directory=None, export: bool = True):
    """The final state (on the host) of the run of `cfg`, training or resuming it first if
    it is not finished; a finished run is reused. Returns the full train state after
    training, and `{"params", "batch_stats", "step"}` when a finished run is reused.

    `init_state(cfg)` and `step(state, batch)` come from the trainer; `data` is a
    `jaxdepth.data.training.TrainData` (default: the run's `data` kind with no root, i.e.
    the procedural scenes, with the keys of `needs`); `keep` orbax steps are kept.
    The export (`export_run`) is written when the run finishes, and for a finished run
    that has none yet.
    """
    run = cfg.run
    directory = Path(directory) if directory is not None else run_dir(root, name, cfg)
    name = name or directory.name.rsplit("-", 1)[0]
    with Checkpointer(directory, cfg.to_dict(), save_every=run.save_every, keep=keep,
                      min_interval_s=SAVE_MIN_SECONDS if keep == 1 else 0.0) as ckpt:
        state, damaged = None, ""
        if ckpt.latest_step == run.steps:
            try:
                state = {**restore_variables(directory, run.steps), "step": run.steps}
            except CheckpointDamaged as e:
                damaged = f" (its final step is damaged: {e})"
                if train:
                    warnings.warn(f"{name}: {e}; training the rest of the run again",
                                  RuntimeWarning, stacklevel=2)
                    ckpt.set_aside(run.steps)
            else:
                if progress:
                    print(f"{name}: reusing {directory}")
        if state is None:
            if not train:
                raise RunNotFinished(f"{name}: no finished checkpoint in {directory} (latest "
                                     f"step {ckpt.latest_step}, the run needs {run.steps})"
                                     f"{damaged} and training was disabled")
            state = _train(name, cfg, ckpt, init_state(cfg), step, data, needs,
                           moving_objects, progress)
            ckpt.trim()  # while training, two steps are kept (damage); now `keep`
    if export:
        export_run(directory, cfg, state)
    return state


def _train(name, cfg, ckpt, state, step, data, needs, moving_objects, progress):
    from jaxdepth.data.pipeline import Loader
    from jaxdepth.data.training import training_data
    from jaxdepth.train.loop import fit

    run = cfg.run
    if data is None:
        data = training_data(run.data, needs=needs, height=run.height, width=run.image_width,
                             split=run.split, length=run.train_size, seed=run.data_seed,
                             moving_objects=moving_objects)
    n_dev = jax.device_count()
    if run.batch_size % n_dev:
        raise ValueError(f"{name}: the batch size {run.batch_size} must be a multiple of the "
                         f"{n_dev} devices it is split over")
    threads = 0 if hasattr(data.source, "get_batch") else 4
    with Loader(data.source, run.batch_size, seed=run.seed, shuffle=True,
                transform=data.transform, num_threads=threads,
                prefetch=2 if threads else 0) as loader:
        state = fit(step, state, loader, steps=run.steps, checkpointer=ckpt,
                    description=f"train {name}", progress=progress)
    return jax.device_get(state)


def export_run(directory, cfg, state) -> Path:
    """Write (or rewrite, if it is of another step) the export of a finished run's depth
    model into its run directory (`jaxdepth.export`)."""
    from jaxdepth import export

    directory = Path(directory)
    steps = cfg.run.steps
    if export.is_checkpoint(directory):
        meta = json.loads((directory / "meta.json").read_text())
        if (meta.get("source") or {}).get("step") == steps:
            return directory
    from jaxdepth.train.recipes import export_meta
    meta = export_meta(cfg)
    meta["source"] = {"kind": "jaxdepth-train", "recipe": meta.pop("recipe"),
                      "config": cfg.to_dict(), "run": str(directory), "step": steps}
    return export.save_checkpoint(directory, cfg.model(), depth_variables(state),
                                  cfg.run.height, cfg.run.image_width, meta, overwrite=True)


def restore_variables(directory, step: int) -> dict:
    """`{"params", "batch_stats"}` (keyed by network: `depth`, `pose`, …) of one saved
    step, on the first local device; runs of the earlier supervised trainer, whose state
    held the depth network's variables at the top level, come back under `depth`."""
    import orbax.checkpoint as ocp

    mgr = ocp.CheckpointManager(Path(directory).absolute())
    step_dir = Path(directory) / str(step)
    try:
        if step not in mgr.all_steps():
            raise FileNotFoundError(f"{directory}: no step {step}; steps saved: "
                                    f"{sorted(mgr.all_steps())}")
        try:
            tree = _state_metadata(step_dir / "state")
            sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            target = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                {"params": tree["params"], "batch_stats": tree["batch_stats"]})
            items = {"state": ocp.args.PyTreeRestore(
                item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                partial_restore=True)}
            if (step_dir / "checksum").is_dir():
                items["checksum"] = ocp.args.JsonRestore()
            out = mgr.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:  # noqa: BLE001 — unreadable or missing files
            if is_mismatch(e):
                raise StateMismatch(f"checkpoint {step_dir}: {describe_error(e)}") from None
            raise CheckpointDamaged(f"checkpoint {step_dir} is damaged and cannot be restored "
                                    f"({describe_error(e)})") from None
        state = out["state"]
        verify_checksums(state, out.get("checksum"), f"checkpoint {step_dir}")
    finally:
        mgr.close()
    if "encoder" in state["params"]:  # the earlier supervised layout
        state = {"params": {"depth": state["params"]}, "batch_stats": {"depth": state["batch_stats"]}}
    return {"params": dict(state["params"]), "batch_stats": dict(state["batch_stats"])}


def _state_metadata(path: Path):
    """The saved train state's tree of array metadata (shapes, dtypes)."""
    import logging

    import orbax.checkpoint as ocp

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # "Metadata file does not exist" for Composite items
    try:
        meta = ocp.PyTreeCheckpointer().metadata(path.absolute())
    finally:
        absl.setLevel(level)
    tree = getattr(meta, "item_metadata", meta)
    return getattr(tree, "tree", tree)


def snapshot_variables(directory, n: int) -> list[dict]:
    """The depth variables of the last `n` saved steps of a run (Snap: an ensemble of one
    run's snapshots; train it with `keep >= n`)."""
    import orbax.checkpoint as ocp

    mgr = ocp.CheckpointManager(Path(directory).absolute())
    try:
        steps = sorted(mgr.all_steps())[-n:]
    finally:
        mgr.close()
    if len(steps) < n:
        raise ValueError(f"{directory} keeps {len(steps)} steps, {n} snapshots were asked for "
                         "(train the run with keep >= n)")
    return [depth_variables(restore_variables(directory, s)) for s in steps]


def load_run(directory, step: int):
    """`(model, variables, meta)` of one step of a run directory, the model rebuilt from
    the run's saved config (`jaxdepth.train.recipes.config_from_dict`)."""
    import orbax.checkpoint as ocp

    from jaxdepth.train.recipes import config_from_dict, export_meta

    mgr = ocp.CheckpointManager(Path(directory).absolute())
    try:
        if step not in mgr.all_steps():
            raise FileNotFoundError(f"{directory}: no step {step}; steps saved: "
                                    f"{sorted(mgr.all_steps())}")
        try:
            config = mgr.restore(step, args=ocp.args.Composite(
                config=ocp.args.JsonRestore()))["config"]
        except Exception as e:  # noqa: BLE001 — an unreadable config file
            raise CheckpointDamaged(f"checkpoint {Path(directory) / str(step)} is damaged: its "
                                    f"config cannot be read ({describe_error(e)})") from None
    finally:
        mgr.close()
    cfg = config_from_dict(config, where=str(directory))
    model = cfg.model()
    meta = export_meta(cfg)
    meta.update(format="jaxdepth", version=1, architecture=type(model).__name__,
                height=cfg.run.height, width=cfg.run.image_width, ensemble=None, pose=None,
                source={"kind": "jaxdepth-train", "recipe": meta.pop("recipe"),
                        "config": config, "run": str(directory), "step": step})
    from jaxdepth.export import model_kwargs
    meta["model"] = model_kwargs(model)
    if hasattr(model, "num_classes"):
        meta.update(task="segmentation", num_classes=model.num_classes)
    else:
        meta.update(variant="uncertconv" if model.log_sigma else "plain", metric=model.metric)
    return model, depth_variables(restore_variables(directory, step)), meta
