"""The jaxdepth checkpoint format: what every trainer and converter writes and
`jaxdepth predict` / `load_checkpoint` read.

    save_checkpoint("ckpt/M", DepthNet(width=0.25), variables, 192, 640, {"use_stereo": False})
    model, variables, meta = load_checkpoint("ckpt/M")
    out = model.apply(variables, images)       # images [B, meta["height"], meta["width"], 3]

On disk:

    DIR/meta.json     {"format": "jaxdepth", "version": 1,
                       "architecture": "DepthNet" | "MonoViT" | "NeWCRFs" (absent in
                                       older files: DepthNet),
                       "model": the architecture's keyword arguments (DepthNet: num_layers,
                                width, log_sigma, dropout_rate, metric, min_depth, max_depth,
                                sigma_activation, encoder_taps (absent in older files:
                                false); MonoViT: size, width, log_sigma, dropout_rate, metric,
                                min_depth, max_depth, sigma_activation, unused_convs;
                                NeWCRFs: encoder, window, max_depth, in_channels (6: ADU-Depth's
                                stereo teacher), uem, crf_scale, crf_window, drop_path_rate,
                                normalize, encoder_taps, uem_range, uem_pool,
                                uem_stop_gradient),
                       "height", "width": the input size the model was trained at,
                       "variant": "plain" | "uncertconv", "metric": bool,
                       "use_stereo": bool | null,
                       "scaling": "none" | "median" | "stereo" | absent (how its depth
                                  becomes metres: metric models, M models per image,
                                  S / MS models × "stereo_scale"),
                       "dropout_trained": bool (MC dropout is meaningful),
                       "ensemble": null | {"members": N, "names": [...]},
                       "pose": null | {"num_layers", "width", "num_input_images",
                                       "num_frames_to_predict_for"},
                       "source": {...where it came from: a conversion, or
                                  {"kind": "jaxdepth-train", "recipe", "config", "run", "step"}},
                       "checksum": {"variables": CRC-32 hex of the variables as written}
                                   (absent in older files: not checked)}
    DIR/variables/    orbax `StandardSave` of {"params", "batch_stats"},
                      or of a list of N of them for an ensemble (Boot / Snap)
    DIR/pose/         orbax `StandardSave` of a pose network's tree (optional)

Segmentation checkpoints (`"architecture": "DeepLabV3" | "DeepLabV3Plus"`, modules of
`jaxdepth.models.segmentation`) use the same layout; their `meta.json` has

                      "task": "segmentation" (absent: a depth model),
                      "model": DeepLabV3: num_classes, backbone, aux, width, dropout_rate;
                               DeepLabV3Plus: num_classes, backbone, output_stride, width,
                               dropout_rate, aspp_rates,
                      "num_classes": C, "class_names": [C names] | null,
                      "height", "width": the input size the model was trained at (any
                                positive size; these models take any input size),
                      "ensemble", "pose": null, "source", "created", "jaxdepth_version",

and none of the depth-only entries (`variant`, `metric`, `use_stereo`, `scaling`).

`meta.json` is written last, so a directory without it is an unfinished export.
`load_checkpoint` raises `CheckpointError` (a ValueError) naming the file for a damaged
export — a `meta.json` that is no JSON or lacks entries, unreadable (truncated,
deleted) variable files, variables whose CRC-32 differs from `meta.json`'s — and for
variables that do not fit the model `meta.json` describes (another architecture or
config). A
trainer's run directory (`jaxdepth.train.runs`) holds its orbax steps and, once finished,
this export beside them; `load_checkpoint` also reads a run directory without an export
(an unfinished run, or one written before exports existed, its latest or a given step)
by rebuilding the model from the run's saved config (`jaxdepth.train.recipes`).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxdepth.models import DepthNet, MonoViT, ResNetEncoder, encoder_channels
from jaxdepth.models.newcrfs import NeWCRFs
from jaxdepth.models.segmentation import DeepLabV3, DeepLabV3Plus

__all__ = ["FORMAT", "FORMAT_VERSION", "ARCHITECTURES", "CheckpointError", "save_checkpoint",
           "load_checkpoint", "is_checkpoint", "build_model", "model_kwargs", "load_pose",
           "check_variables", "SEGMENTATION_ARCHITECTURES", "check_class_names"]

FORMAT = "jaxdepth"
FORMAT_VERSION = 1
#: architecture name in meta.json → Flax module class
ARCHITECTURES = {"DepthNet": DepthNet, "MonoViT": MonoViT, "NeWCRFs": NeWCRFs, "DeepLabV3": DeepLabV3,
                 "DeepLabV3Plus": DeepLabV3Plus}
#: architectures whose checkpoints are `"task": "segmentation"`
SEGMENTATION_ARCHITECTURES = ("DeepLabV3", "DeepLabV3Plus")
_PROBE = (1, 64, 64, 3)  # any multiple of 32 gives the same variable shapes
_EXPORT_ENTRIES = ("meta.json", "variables", "pose")


class CheckpointError(ValueError):
    """Variables that do not fit the model, or a directory that is no checkpoint."""


# --------------------------------------------------------------------------- models

def model_kwargs(model) -> dict[str, Any]:
    """The constructor arguments of a Flax module (its dataclass fields)."""
    return {f.name: getattr(model, f.name) for f in dataclasses.fields(model)
            if f.init and f.name not in ("parent", "name")}


def build_model(meta: Mapping[str, Any]):
    """The module a `meta.json` describes (`architecture` + `model` kwargs)."""
    arch = meta.get("architecture", "DepthNet")
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {arch!r}; this jaxdepth knows "
                              f"{sorted(ARCHITECTURES)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["model"].items()}
    return ARCHITECTURES[arch](**kwargs)  # JSON lists back to the tuples the modules take


def abstract_variables(model):
    """`{"params", "batch_stats"}` shapes of a model (any input size multiple of 32)."""
    tree = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct(_PROBE[:3] + (getattr(model, "in_channels", 3),),
                                               jnp.float32))
    return {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}


def check_variables(flat, abstract, what: str, error=CheckpointError):
    """Compare a flat `{path tuple: array}` tree with the abstract tree a module expects
    and return it nested, cast to the expected dtypes; `error` lists every missing or
    unexpected variable and every shape mismatch."""
    want = traverse_util.flatten_dict(abstract)
    missing = sorted("/".join(k) for k in want if k not in flat)
    unexpected = sorted("/".join(k) for k in flat if k not in want)
    shapes = sorted(f"{'/'.join(k)}: got {tuple(flat[k].shape)}, expected {tuple(want[k].shape)}"
                    for k in want if k in flat and tuple(flat[k].shape) != tuple(want[k].shape))
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected),
                             ("shape mismatches", shapes)):
            if items:
                shown = "; ".join(items[:12]) + (f"; … ({len(items)} in all)" if len(items) > 12 else "")
                parts.append(f"{title}: {shown}")
        raise error(f"{what} does not match the jaxdepth model — " + " | ".join(parts))
    return traverse_util.unflatten_dict(
        {k: np.asarray(v, want[k].dtype) for k, v in flat.items()})


# --------------------------------------------------------------------------- orbax trees

def _write_tree(path: Path, tree):
    import orbax.checkpoint as ocp
    ckptr = ocp.StandardCheckpointer()
    try:
        ckptr.save(path.absolute(), jax.tree.map(np.asarray, tree))
        ckptr.wait_until_finished()
    finally:
        ckptr.close()


def _on_first_device(abstract):
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                        abstract)


def tree_crc32(tree) -> str:
    """One CRC-32 (8 hex digits) of a tree's array paths, dtypes, shapes and bytes."""
    crc = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        name = "/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                        for k in path)
        crc = zlib.crc32(f"{name}:{a.dtype}:{a.shape};".encode(), crc)
        crc = zlib.crc32(a.reshape(-1).view(np.uint8), crc)
    return f"{crc:08x}"


def _restore_tree(path: Path, abstract, checksum: str | None = None, meta_path=None):
    """Restore an orbax tree into `abstract`; `CheckpointError` naming the files for
    damaged ones (unreadable, or `checksum` differing) and for a tree of other shapes
    or structure than the model's."""
    import orbax.checkpoint as ocp

    from jaxdepth.train.checkpoint import describe_error, is_mismatch
    if not path.is_dir():
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete or damaged")
    ckptr = ocp.StandardCheckpointer()
    try:
        tree = ckptr.restore(path.absolute(), _on_first_device(abstract))
    except Exception as e:  # noqa: BLE001 — TensorStore / orbax read errors
        if is_mismatch(e):
            raise CheckpointError(f"{path} does not fit the model {meta_path or 'meta.json'} "
                                  f"describes (another architecture or config?): "
                                  f"{describe_error(e)}") from None
        raise CheckpointError(f"{path} is damaged (truncated, deleted or corrupt files) and "
                              f"cannot be read: {describe_error(e)}") from None
    finally:
        ckptr.close()
    if checksum and tree_crc32(tree) != checksum:
        raise CheckpointError(f"{path}: the data does not match the checksum in "
                              f"{meta_path or 'meta.json'} (corrupted files); restore the "
                              "checkpoint from a copy or write it again")
    return tree


# --------------------------------------------------------------------------- writing

def is_checkpoint(directory) -> bool:
    """Whether `directory` holds a jaxdepth checkpoint (`meta.json` of this format)."""
    meta = Path(directory) / "meta.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def _is_run_dir(directory: Path) -> bool:
    return any(p.is_dir() and p.name.isdigit() for p in directory.iterdir())


def _prepare_dir(directory: Path, overwrite: bool):
    """Make room for an export: an empty or new directory, a run directory (its orbax
    steps stay), or — with `overwrite` — a directory holding an earlier export."""
    if directory.exists():
        if not directory.is_dir():
            raise FileExistsError(f"{directory} exists and is not a directory")
        if is_checkpoint(directory) or (directory / "variables").is_dir():
            if not overwrite:
                raise FileExistsError(f"{directory} already holds a jaxdepth checkpoint; pass "
                                      "overwrite=True (CLI: --overwrite) to replace it")
            for name in _EXPORT_ENTRIES:
                p = directory / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        elif any(directory.iterdir()) and not _is_run_dir(directory):
            raise FileExistsError(f"{directory} is not empty and holds no jaxdepth checkpoint; "
                                  "refusing to write into it — choose another directory")
    directory.mkdir(parents=True, exist_ok=True)


def save_checkpoint(directory, model, variables, height: int, width: int,
                    meta: Mapping[str, Any] | None = None, *, pose=None,
                    overwrite: bool = False) -> Path:
    """Write a jaxdepth checkpoint (format in the module doc); returns its path.

    `model`: the Flax module (or a DepthNet kwargs mapping); `variables`: its
    `{"params", "batch_stats"}`, or a list of them (an ensemble), checked against the
    model. `meta`: extra `meta.json` entries (`use_stereo`, `scaling`, `source`, …;
    `ensemble.names` for member names; segmentation: `class_names`, a list of
    `num_classes` strings). `pose`: an optional `(tree, info)` (see
    `jaxdepth.convert.monodepth2.convert_pose`). A run directory keeps its orbax steps.
    """
    directory = Path(directory)
    if isinstance(model, Mapping):
        model = DepthNet(**model)
    arch = type(model).__name__
    if ARCHITECTURES.get(arch) is not type(model):
        raise CheckpointError(f"cannot export a {arch}: the format knows {sorted(ARCHITECTURES)}")
    kwargs = model_kwargs(model)
    segmentation = arch in SEGMENTATION_ARCHITECTURES
    for name, value in (("height", height), ("width", width)):
        if int(value) <= 0 or (int(value) % 32 and not segmentation):
            raise ValueError(f"{name} must be a positive {'integer' if segmentation else 'multiple of 32'}, "
                             f"got {value}")
    members = list(variables) if isinstance(variables, (list, tuple)) else None
    abstract = abstract_variables(model)
    checked = []
    for i, v in enumerate(members if members is not None else [variables]):
        v = {"params": v["params"], "batch_stats": v.get("batch_stats", {})}
        flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, v))
        checked.append(check_variables(flat, abstract,
                                       f"variables{'' if members is None else f'[{i}]'}"))
    meta = dict(meta or {})
    if segmentation:
        check_class_names(meta.get("class_names"), int(kwargs["num_classes"]))
    ensemble = None
    if members is not None:
        names = list((meta.get("ensemble") or {}).get("names")
                     or [f"m{i}" for i in range(len(members))])
        ensemble = {"members": len(members), "names": names}
    _prepare_dir(directory, overwrite)
    tree = checked if members is not None else checked[0]
    _write_tree(directory / "variables", tree)
    checksum = {"variables": tree_crc32(tree)}
    pose_info = None
    if pose is not None:
        tree, pose_info = pose
        _write_tree(directory / "pose", tree)
    full = {
        "format": FORMAT, "version": FORMAT_VERSION, "architecture": arch, "model": kwargs,
        "height": int(height), "width": int(width),
        "source": None, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    if segmentation:
        full.update({"task": "segmentation", "num_classes": int(kwargs["num_classes"]),
                     "class_names": None})
    else:
        full.update({"variant": "uncertconv" if kwargs.get("log_sigma") else "plain",
                     "metric": bool(kwargs.get("metric", False)), "use_stereo": None})
    full.update(meta)
    full["ensemble"], full["pose"] = ensemble, pose_info
    full["checksum"] = checksum
    import jaxdepth
    full["jaxdepth_version"] = jaxdepth.__version__
    tmp = directory / "meta.json.tmp"
    tmp.write_text(json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(directory / "meta.json")
    return directory


def check_class_names(names, num_classes: int):
    """Raise ValueError unless `names` is None or a list of `num_classes` strings."""
    if names is None:
        return
    if (isinstance(names, str) or not all(isinstance(n, str) for n in names)
            or len(names) != num_classes):
        raise ValueError(f"class_names must be a list of {num_classes} strings (one per class), "
                         f"got {names!r}")


# --------------------------------------------------------------------------- reading

def _run_step(directory: Path, step: int | None):
    """(run directory, step) if `directory` is a trainer's run directory or one step of it."""
    if directory.name.isdigit() and (directory / "state").is_dir() and (directory / "config").is_dir():
        return directory.parent, int(directory.name) if step is None else step
    steps = [int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit()
             and (p / "state").is_dir()] if directory.is_dir() else []
    if not steps:
        return None
    return directory, max(steps) if step is None else step


def load_checkpoint(directory, *, step: int | None = None):
    """`(model, variables, meta)` of a jaxdepth checkpoint directory.

    `variables` is `{"params", "batch_stats"}` (jax arrays on the first local device),
    or a list of them for an ensemble (`meta["ensemble"]` not None). A trainer's run
    directory is read through its export when it has one (and `step` is None), else from
    its orbax steps (`step`: which one, default the latest).
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    meta_path = directory / "meta.json"
    if not meta_path.is_file() or step is not None:
        run = _run_step(directory, step)
        if run is not None:
            from jaxdepth.train.runs import load_run
            return load_run(*run)
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"{directory} has no meta.json, so it is not a jaxdepth checkpoint (convert "
                "PyTorch weights with `jaxdepth convert monodepth2 ... --out DIR`, train one "
                "with `jaxdepth train ... --out DIR`, or give a directory the jaxdepth "
                "trainer wrote)")
        raise FileNotFoundError(f"{directory} is an exported checkpoint without training "
                                f"steps; step={step} cannot be chosen")
    meta = _read_meta(meta_path)
    try:
        model = build_model(meta)
        abstract = abstract_variables(model)
        ensemble = meta.get("ensemble")
        target = [abstract] * int(ensemble["members"]) if ensemble else abstract
        int(meta["height"]), int(meta["width"])
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{meta_path} is damaged or incomplete: it does not describe a "
                              f"model ({type(e).__name__}: {e})") from None
    variables = _restore_tree(directory / "variables", target,
                              (meta.get("checksum") or {}).get("variables"), meta_path)
    if ensemble:
        variables = list(variables)
    return model, variables, meta


def _read_meta(meta_path: Path) -> dict:
    try:
        meta = json.loads(meta_path.read_text())
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{meta_path} is damaged: not text ({e})") from None
    except ValueError as e:
        raise CheckpointError(f"{meta_path} is not valid JSON — a damaged or truncated file "
                              f"({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{meta_path} is damaged: a JSON {type(meta).__name__}, not an "
                              "object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"{meta_path}: format version {meta['version']} is newer than "
                              f"this jaxdepth reads ({FORMAT_VERSION}); upgrade jaxdepth")
    return meta


def load_pose(directory):
    """`(tree, info)` of the pose network stored with a checkpoint, or None."""
    directory = Path(directory)
    meta = _read_meta(directory / "meta.json")
    info = meta.get("pose")
    if not info or not (directory / "pose").is_dir():
        return None
    return _restore_pose(directory, info), info


def _restore_pose(directory: Path, info):
    c = 3 * int(info["num_input_images"])
    enc = jax.eval_shape(ResNetEncoder(int(info["num_layers"]), float(info["width"])).init,
                         jax.random.PRNGKey(0), jax.ShapeDtypeStruct(_PROBE[:3] + (c,), jnp.float32))
    c_enc = int(encoder_channels(int(info["num_layers"]), float(info["width"]))[-1])
    nif = int(info.get("num_input_features") or 1)
    f32 = jnp.float32
    conv = lambda k, i, o: {"kernel": jax.ShapeDtypeStruct((k, k, i, o), f32),  # noqa: E731
                            "bias": jax.ShapeDtypeStruct((o,), f32)}
    dec = {"squeeze": conv(1, c_enc, 256), "pose_0": conv(3, 256 * nif, 256),
           "pose_1": conv(3, 256, 256), "pose_2": conv(1, 256, 6 * int(info["num_frames_to_predict_for"]))}
    abstract = {"params": {"pose_encoder": enc["params"], "pose_decoder": dec},
                "batch_stats": {"pose_encoder": enc["batch_stats"]}}
    return _restore_tree(directory / "pose", abstract, None, directory / "meta.json")
