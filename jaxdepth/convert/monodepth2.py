"""Monodepth2-format PyTorch weights → jaxdepth checkpoints, and the checkpoint format.

    from jaxdepth.convert import convert_monodepth2, load_checkpoint
    convert_monodepth2("mono_640x192/encoder.pth", "mono_640x192/depth.pth", "ckpt/mono")
    model, variables, meta = load_checkpoint("ckpt/mono")
    out = model.apply(variables, images)            # images [B, meta["height"], meta["width"], 3]

What the released files contain (Monodepth2 and the models built on it):

- `encoder.pth`: the state dict of `ResnetEncoder` — `encoder.conv1.weight`,
  `encoder.bn1.{weight,bias,running_mean,running_var,num_batches_tracked}`,
  `encoder.layer<k>.<b>.{conv,bn}<n>.*`, `encoder.layer<k>.0.downsample.{0,1}.*`,
  possibly `encoder.fc.*` (ignored) — plus the training resolution `height`, `width`
  and `use_stereo`, which are recorded in the checkpoint's `meta.json`.
- `depth.pth`: `decoder.<i>.conv.conv.{weight,bias}` for the 10 ConvBlocks
  (i = 0..9 = upconv(4,0), upconv(4,1), …, upconv(0,1)) and `decoder.<j>.conv.*`
  for the 3×3 heads (j ≥ 10).

Variant detection (`detect_variant`), from the state dict alone:

- 4 heads → **plain** (`dispconv_0..3`); 8 heads → **uncertconv** (Poggi et al.'s
  Log/Self decoder, `dispconv_s` and a log σ head `uncertconv_s` per scale; in the
  released files they alternate, j = 10 + 2s and 11 + 2s). Which head belongs to which
  scale is read from its input channels (16/32/64/128 at full width), so the order of
  the heads does not matter; every head must have one output channel.
- **Metric** (the NYU supervised decoder of GrUMoDepth: `depthconv` heads, metric depth,
  no sigmoid) has exactly the layout of the plain decoder, so it *cannot* be told from
  the weights. Pass `metric=True` (CLI `--metric`) or `metric=False` (`--disparity`);
  with neither, a model whose file name or one of its three parent folders names NYU
  (`nyu` as a word: `nyu_resnet18/`, `NYU-log/`) is taken as metric and every other one
  as a sigmoid-disparity model; `meta["metric_source"]` says which rule decided.
- Encoder depth (ResNet-18/34/50) and the channel multiplier are read from the blocks
  and `conv1`'s output channels.

Conversion: conv kernels OIHW → HWIO, BatchNorm weight/bias → `params` scale/bias,
running mean/var → `batch_stats` mean/var, `num_batches_tracked` dropped; the result
is checked against `jax.eval_shape(DepthNet(...).init, ...)` and a `ConversionError`
lists every missing or unexpected variable and every shape mismatch.

Pose network (`pose_encoder.pth`, `pose.pth`, optional): stored as a plain tree beside
the depth model, in the naming of `jaxdepth.models.PoseNet`'s ResNet:

    params/pose_encoder/...            same ResNet naming as the depth encoder
                                       (conv1 has 3·num_input_images input channels)
    batch_stats/pose_encoder/...
    params/pose_decoder/squeeze/{kernel,bias}   net.0: 1×1, C_enc → 256
    params/pose_decoder/pose_0/{kernel,bias}    net.1: 3×3, 256·num_input_features → 256
    params/pose_decoder/pose_1/{kernel,bias}    net.2: 3×3, 256 → 256
    params/pose_decoder/pose_2/{kernel,bias}    net.3: 1×1, 256 → 6·num_frames_to_predict_for

(kernels HWIO), read back by `load_pose(dir)`.

The converted models are written with `jaxdepth.export.save_checkpoint` (the one
checkpoint format of jaxdepth, described there) and read back with `load_checkpoint`
(re-exported here); the pose tree goes to `DIR/pose/`, read by `load_pose`.

Reading `.pth` files needs PyTorch (`pip install "jaxdepth[torch]"`, the CPU build is
enough); they are read with `torch.load(..., weights_only=True)`, so a downloaded file
cannot run code. Nothing else here needs torch.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdepth.export import (FORMAT, FORMAT_VERSION, CheckpointError, abstract_variables,
                             check_variables,
                             is_checkpoint, load_checkpoint, load_pose, save_checkpoint)
from jaxdepth.models import DECODER_CHANNELS, DepthNet, ResNetEncoder, encoder_channels
from jaxdepth.models.resnet import scaled

__all__ = [
    "ConversionError", "FORMAT", "FORMAT_VERSION", "convert_monodepth2",
    "convert_monodepth2_folder", "convert_state_dicts", "convert_pose", "detect_variant",
    "encoder_layout", "find_models", "load_checkpoint", "load_pose", "load_state_dict",
    "save_checkpoint", "is_checkpoint",
]

TORCH_HINT = ('reading PyTorch .pth files needs torch: pip install "jaxdepth[torch]" '
              "(the CPU build is enough; jaxdepth pins torch==2.13.0)")
_ARCHS = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34, ((3, 4, 6, 3), True): 50}
_PROBE = (1, 64, 64, 3)  # any multiple of 32 gives the same variable shapes


def _check(flat, abstract, what: str):
    return check_variables(flat, abstract, what, error=ConversionError)


class ConversionError(CheckpointError):
    """The weights do not fit a jaxdepth model (with the reason and the keys involved)."""


# --------------------------------------------------------------------------- reading .pth

def load_state_dict(path, wrappers=("state_dict",)) -> dict[str, Any]:
    """Read a PyTorch state dict with `torch.load(weights_only=True)` on the CPU.

    Tensors become float32 (integer tensors: int64) NumPy arrays, other entries
    (`height`, `width`, `use_stereo`) stay Python values. A `module.` prefix
    (DataParallel) is removed; the first of `wrappers` that holds a mapping (a training
    checkpoint's `state_dict`, …) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(TORCH_HINT) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for code-carrying files, RuntimeError for junk
        raise ConversionError(
            f"{path}: could not be read as plain weights with torch.load(weights_only=True) "
            f"(files that would run code on loading are refused): {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}") from e
    for wrapper in wrappers:
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path}: expected a state dict (a mapping of names to tensors), "
                              f"got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        key = str(key)
        key = key[len("module."):] if key.startswith("module.") else key
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = (value.float() if value.is_floating_point() else value.long()).numpy()
        out[key] = value
    return out


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- layouts

def _flax_path(module: str) -> tuple[str, ...]:
    """`layer1.0.downsample.0` → (`layer1_0`, `downsample_0`)."""
    out: list[str] = []
    for part in module.split("."):
        if part.isdigit() and out:
            out[-1] = f"{out[-1]}_{part}"
        else:
            out.append(part)
    return tuple(out)


def _arrays(sd: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in sd.items()
            if k.startswith(prefix) and isinstance(v, np.ndarray)}


def _key_sample(sd: Mapping[str, Any], n: int = 6) -> str:
    keys = list(sd)
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "") if keys else "(empty)"


def encoder_layout(sd: Mapping[str, Any], prefix: str = "encoder.") -> dict[str, Any]:
    """`{"num_layers", "width", "in_channels"}` of a `ResnetEncoder` state dict."""
    enc = _arrays(sd, prefix)
    if "conv1.weight" not in enc:
        raise ConversionError(f"not a Monodepth2 ResnetEncoder state dict: no '{prefix}conv1.weight' "
                              f"(keys: {_key_sample(sd)})")
    blocks = []
    for k in range(1, 5):
        ids = {int(m.group(1)) for key in enc if (m := re.match(rf"layer{k}\.(\d+)\.", key))}
        blocks.append(len(ids))
    bottleneck = any(re.match(r"layer1\.\d+\.conv3\.weight$", key) for key in enc)
    arch = _ARCHS.get((tuple(blocks), bottleneck))
    if arch is None:
        raise ConversionError(f"unsupported ResNet encoder: blocks per stage {tuple(blocks)} "
                              f"({'bottleneck' if bottleneck else 'basic'} blocks); jaxdepth "
                              "has ResNet-18, -34 and -50")
    conv1 = enc["conv1.weight"]
    if conv1.ndim != 4 or conv1.shape[2:] != (7, 7):
        raise ConversionError(f"'{prefix}conv1.weight' must be a 7×7 conv kernel, got {conv1.shape}")
    return {"num_layers": arch, "width": conv1.shape[0] / 64.0, "in_channels": int(conv1.shape[1])}


def _resnet_flat(sd, prefix: str, scope: str) -> dict[tuple[str, ...], np.ndarray]:
    """ResNet state dict entries under `prefix` → flat `{(collection, scope, ...): array}`."""
    flat = {}
    for key, value in _arrays(sd, prefix).items():
        module, _, leaf = key.rpartition(".")
        if module.split(".")[0] == "fc" or leaf == "num_batches_tracked":
            continue
        path = (scope,) + _flax_path(module)
        if leaf == "weight" and value.ndim == 4:
            flat[("params",) + path + ("kernel",)] = value.transpose(2, 3, 1, 0)
        elif leaf == "weight":
            flat[("params",) + path + ("scale",)] = value
        elif leaf == "bias":
            flat[("params",) + path + ("bias",)] = value
        elif leaf == "running_mean":
            flat[("batch_stats",) + path + ("mean",)] = value
        elif leaf == "running_var":
            flat[("batch_stats",) + path + ("var",)] = value
        else:
            flat[("unrecognised", prefix + key)] = value
    return flat


def detect_variant(depth_sd: Mapping[str, Any], width: float = 1.0) -> dict[str, Any]:
    """Decoder layout of a `depth.pth` state dict.

    Returns `{"variant": "plain" | "uncertconv", "log_sigma": bool, "heads": {j: (kind,
    scale)}}` with kind `disp` (the depth/disparity head) or `uncert` (log σ).
    """
    dec = _arrays(depth_sd, "decoder.")
    blocks = sorted({int(m.group(1)) for k in dec if (m := re.match(r"(\d+)\.conv\.conv\.weight$", k))})
    heads = sorted({int(m.group(1)) for k in dec if (m := re.match(r"(\d+)\.conv\.weight$", k))})
    if blocks != list(range(10)):
        raise ConversionError("not a Monodepth2 DepthDecoder state dict: expected ConvBlocks "
                              f"'decoder.0..9.conv.conv.weight', found {blocks} "
                              f"(keys: {_key_sample(depth_sd)})")
    if len(heads) not in (4, 8):
        raise ConversionError(f"expected 4 heads (plain decoder) or 8 (uncertconv decoder) at "
                              f"'decoder.<j>.conv.weight', found {len(heads)}: {heads}")
    in_ch = {}
    for j in heads:
        w = dec[f"{j}.conv.weight"]
        if w.ndim != 4 or w.shape[0] != 1 or w.shape[2:] != (3, 3):
            raise ConversionError(f"head 'decoder.{j}.conv.weight' must be a 3×3 kernel with one "
                                  f"output channel, got shape {w.shape}")
        in_ch[j] = int(w.shape[1])
    scale_of_ch = {scaled(c, width): s for s, c in enumerate(DECODER_CHANNELS[:4])}
    per_scale = 2 if len(heads) == 8 else 1
    if len(scale_of_ch) == 4:  # channel counts tell each head's scale
        unknown = {j: c for j, c in in_ch.items() if c not in scale_of_ch}
        if unknown:
            raise ConversionError(f"heads with unexpected input channels {unknown}; a decoder "
                                  f"of width {width:g} has {sorted(scale_of_ch)}")
        scales = [scale_of_ch[in_ch[j]] for j in heads]
    else:  # tiny widths: channel counts collide, use the released order
        scales = [i // per_scale for i in range(len(heads))]
    assigned, seen = {}, {}
    for j, s in zip(heads, scales):
        k = seen.get(s, 0)
        if k >= per_scale:
            raise ConversionError(f"more than {per_scale} head(s) for scale {s}: {in_ch}")
        seen[s] = k + 1
        assigned[j] = ("disp" if k == 0 else "uncert", s)
    if sorted(seen) != [0, 1, 2, 3] or any(v != per_scale for v in seen.values()):
        raise ConversionError(f"heads do not cover scales 0..3 ({per_scale} each): {assigned}")
    log_sigma = len(heads) == 8
    return {"variant": "uncertconv" if log_sigma else "plain", "log_sigma": log_sigma,
            "heads": assigned}


def _decoder_flat(depth_sd, layout, metric: bool) -> dict[tuple[str, ...], np.ndarray]:
    dec = _arrays(depth_sd, "decoder.")
    flat = {}
    head_name = "depthconv" if metric else "dispconv"
    for key, value in dec.items():
        m = re.match(r"(\d+)\.conv(\.conv)?\.(weight|bias)$", key)
        if m is None:
            flat[("unrecognised", "decoder." + key)] = value
            continue
        j, leaf = int(m.group(1)), m.group(3)
        if m.group(2):  # ConvBlock i → upconv(4 - i // 2, i % 2)
            name = f"upconv_{4 - j // 2}_{j % 2}"
        else:
            kind, s = layout["heads"][j]
            name = f"{head_name}_{s}" if kind == "disp" else f"uncertconv_{s}"
        flat[("params", "decoder", name, "kernel" if leaf == "weight" else "bias")] = (
            value.transpose(2, 3, 1, 0) if leaf == "weight" else value)
    return flat


def convert_state_dicts(encoder_sd: Mapping[str, Any], depth_sd: Mapping[str, Any], *,
                        metric: bool = False, min_depth: float = 0.1, max_depth: float = 100.0,
                        dropout_rate: float = 0.2):
    """Encoder + decoder state dicts → `(model_kwargs, variables, info)`.

    `variables` is `{"params", "batch_stats"}` of NumPy arrays for
    `DepthNet(**model_kwargs)`; `info` has the detected `variant`, `height`,
    `width` and `use_stereo` stored in the encoder file (None if absent).
    """
    enc = encoder_layout(encoder_sd)
    if enc["in_channels"] != 3:
        raise ConversionError(f"depth encoder's conv1 takes {enc['in_channels']} channels, expected "
                              "3 (is this the pose encoder?)")
    layout = detect_variant(depth_sd, enc["width"])
    kwargs = {"num_layers": enc["num_layers"], "width": enc["width"],
              "log_sigma": layout["log_sigma"], "dropout_rate": float(dropout_rate),
              "metric": bool(metric), "min_depth": float(min_depth), "max_depth": float(max_depth)}
    flat = {**_resnet_flat(encoder_sd, "encoder.", "encoder"),
            **_decoder_flat(depth_sd, layout, metric)}
    variables = _check(flat, abstract_variables(DepthNet(**kwargs)),
                               f"ResNet-{enc['num_layers']} encoder + {layout['variant']} decoder")

    def _scalar(key, cast):
        v = encoder_sd.get(key)
        if v is None:
            return None
        return cast(np.asarray(v).item())

    info = {"variant": layout["variant"], "height": _scalar("height", int),
            "width": _scalar("width", int), "use_stereo": _scalar("use_stereo", bool)}
    return kwargs, variables, info


def convert_pose(pose_encoder_sd: Mapping[str, Any], pose_sd: Mapping[str, Any]):
    """Pose encoder + PoseDecoder state dicts → `(tree, info)` (names in the module doc)."""
    enc = encoder_layout(pose_encoder_sd)
    if enc["in_channels"] % 3:
        raise ConversionError(f"pose encoder conv1 takes {enc['in_channels']} channels, "
                              "expected a multiple of 3")
    flat = _resnet_flat(pose_encoder_sd, "encoder.", "pose_encoder")
    abstract = jax.eval_shape(ResNetEncoder(enc["num_layers"], enc["width"]).init,
                              jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct(_PROBE[:3] + (enc["in_channels"],), jnp.float32))
    enc_tree = _check(flat, {c: {"pose_encoder": t} for c, t in abstract.items()},
                              f"ResNet-{enc['num_layers']} pose encoder")
    names = {0: "squeeze", 1: "pose_0", 2: "pose_1", 3: "pose_2"}
    kernels = {0: 1, 1: 3, 2: 3, 3: 1}
    net = _arrays(pose_sd, "net.")
    found = sorted(net)
    expected = sorted(f"{i}.{leaf}" for i in names for leaf in ("weight", "bias"))
    if found != expected:
        raise ConversionError(f"not a Monodepth2 PoseDecoder state dict: expected keys "
                              f"{['net.' + k for k in expected]}, found {['net.' + k for k in found]}")
    c_enc = int(encoder_channels(enc["num_layers"], enc["width"])[-1])
    dec = {}
    for i, name in names.items():
        w, b = net[f"{i}.weight"], net[f"{i}.bias"]
        k = kernels[i]
        if w.ndim != 4 or w.shape[2:] != (k, k) or b.shape != (w.shape[0],):
            raise ConversionError(f"pose decoder net.{i} ({name}) must be a {k}×{k} conv with bias, "
                                  f"got weight {w.shape}, bias {b.shape}")
        dec[name] = {"kernel": w.transpose(2, 3, 1, 0).astype(np.float32), "bias": b.astype(np.float32)}
    if net["0.weight"].shape[1] != c_enc:
        raise ConversionError(f"pose decoder squeeze takes {net['0.weight'].shape[1]} channels, the "
                              f"encoder gives {c_enc}")
    out_ch = int(net["3.weight"].shape[0])
    if out_ch % 6:
        raise ConversionError(f"pose decoder output has {out_ch} channels, expected 6·frames")
    tree = {"params": {**enc_tree["params"], "pose_decoder": dec},
            "batch_stats": enc_tree["batch_stats"]}
    info = {"num_layers": enc["num_layers"], "width": enc["width"],
            "num_input_images": enc["in_channels"] // 3,
            "num_input_features": int(net["1.weight"].shape[1]) // 256,
            "num_frames_to_predict_for": out_ch // 6}
    return tree, info


# --------------------------------------------------------------------------- conversion

def _decide_metric(metric: bool | None, paths: Iterable[Path]) -> tuple[bool, str]:
    if metric is not None:
        return bool(metric), "given"
    for p in paths:
        parts = Path(p).absolute().parts[-4:]  # the file and its three parent folders
        if any(re.search(r"(^|[^a-z])nyu([^a-z]|$)", part.lower()) for part in parts):
            return True, (f"inferred: path {str(p)!r} names NYU (pass metric=False / --disparity "
                          "if wrong)")
    return False, ("default: no metric flag and no NYU in the path (pass metric=True / --metric "
                   "for NYU-style metric-depth models)")


def _resolution(info, path, height, width):
    h, w = info["height"], info["width"]
    if height is not None or width is not None:
        if height is None or width is None:
            raise ValueError("give both height and width, or neither")
        return int(height), int(width)
    if h is None or w is None:
        raise ConversionError(f"{path} stores no training resolution ('height'/'width'); pass "
                              "height= and width= (CLI: --height H --width W)")
    return h, w


def convert_monodepth2(encoder, depth, out, pose_encoder=None, pose=None, *,
                       metric: bool | None = None, height: int | None = None,
                       width: int | None = None, min_depth: float = 0.1,
                       max_depth: float = 100.0, overwrite: bool = False) -> Path:
    """Convert Monodepth2-format `encoder.pth` + `depth.pth` (and optionally
    `pose_encoder.pth` + `pose.pth`) into a jaxdepth checkpoint at `out`.

    `encoder`/`depth` may also be lists of paths (one per ensemble member: Boot /
    Snap); then every member must have the same architecture and resolution and
    `load_checkpoint` returns a list of variable sets. `metric`: see the module doc
    (None: inferred from the paths). `height`/`width` override the training
    resolution stored in the encoder file. Returns `out`.
    """
    encs = [Path(p) for p in (encoder if isinstance(encoder, (list, tuple)) else [encoder])]
    deps = [Path(p) for p in (depth if isinstance(depth, (list, tuple)) else [depth])]
    if len(encs) != len(deps) or not encs:
        raise ValueError(f"{len(encs)} encoder file(s) for {len(deps)} depth file(s)")
    if (pose_encoder is None) != (pose is None):
        raise ValueError("give both pose_encoder and pose, or neither")
    metric, metric_source = _decide_metric(metric, encs + deps)
    ensemble = isinstance(encoder, (list, tuple))
    members, first = [], None
    for e, d in zip(encs, deps):
        kwargs, variables, info = convert_state_dicts(
            load_state_dict(e), load_state_dict(d), metric=metric, min_depth=min_depth,
            max_depth=max_depth)
        res = _resolution(info, e, height, width)
        if first is None:
            first = (kwargs, info, res)
        elif (kwargs, res, info["variant"]) != (first[0], first[2], first[1]["variant"]):
            raise ConversionError(f"ensemble members differ: {e} is {kwargs} at {res}, "
                                  f"{encs[0]} is {first[0]} at {first[2]}")
        members.append(variables)
    kwargs, info, (h, w) = first
    pose_pair = None
    if pose_encoder is not None:
        pose_pair = convert_pose(load_state_dict(pose_encoder), load_state_dict(pose))
    source = {"kind": "monodepth2",
              "files": [{"encoder": str(e.absolute()), "depth": str(d.absolute()),
                         "sha256": {"encoder": _sha256(e), "depth": _sha256(d)}}
                        for e, d in zip(encs, deps)]}
    if pose_encoder is not None:
        source["pose"] = {"pose_encoder": str(Path(pose_encoder).absolute()),
                          "pose": str(Path(pose).absolute())}
    meta = {"variant": info["variant"], "metric": metric, "metric_source": metric_source,
            "use_stereo": info["use_stereo"], "source": source,
            "stored_resolution": [info["height"], info["width"]]}
    if ensemble:
        meta["ensemble"] = {"names": [_member_name(e) for e in encs]}
    return save_checkpoint(out, kwargs, members if ensemble else members[0], h, w, meta,
                           pose=pose_pair, overwrite=overwrite)


def _member_name(encoder_path: Path) -> str:
    parts = encoder_path.absolute().parts[:-1]
    return "/".join(parts[-2:]) if len(parts) >= 2 else str(encoder_path)


def _natural(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _model_dir(d: Path, weights: str) -> Path | None:
    for cand in (d, d / weights, d / "models" / weights):
        if (cand / "encoder.pth").is_file() and (cand / "depth.pth").is_file():
            return cand
    return None


def find_models(folder, *, weights: str = "weights_19",
                snapshots: Sequence[int] | None = None) -> list[Path]:
    """The model folders (each with `encoder.pth` and `depth.pth`) under `folder`.

    - `snapshots` (e.g. `range(12, 20)`): `folder/weights_<k>` for each k (Snap);
    - `folder` itself, `folder/<weights>` or `folder/models/<weights>` holds the
      files: that one model;
    - otherwise every subfolder (natural order: boot_1, boot_2, …, boot_10) that
      holds them directly, in `<weights>/` or in `models/<weights>/` (Boot).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such directory")
    if snapshots is not None:
        found = []
        for k in snapshots:
            d = _model_dir(folder / f"weights_{k}", weights) or _model_dir(folder / "models" / f"weights_{k}", weights)
            if d is None:
                raise FileNotFoundError(f"snapshot {k}: no weights_{k}/encoder.pth + depth.pth under {folder}")
            found.append(d)
        return found
    single = _model_dir(folder, weights)
    if single is not None:
        return [single]
    found = [m for sub in sorted((p for p in folder.iterdir() if p.is_dir()), key=_natural)
             if (m := _model_dir(sub, weights)) is not None]
    if not found:
        raise FileNotFoundError(f"no encoder.pth + depth.pth in {folder}, {folder / weights} or its "
                                f"subfolders (boot_*/{weights}/)")
    return found


def convert_monodepth2_folder(folder, out, *, weights: str = "weights_19",
                              snapshots: Sequence[int] | None = None, pose: bool = True,
                              metric: bool | None = None, height: int | None = None,
                              width: int | None = None, min_depth: float = 0.1,
                              max_depth: float = 100.0, overwrite: bool = False) -> Path:
    """Convert a folder: one released model (with its pose network if `pose` and
    `pose_encoder.pth` + `pose.pth` are there) or N members (`boot_*/weights_19`,
    or `snapshots`) saved as an ensemble. See `find_models`."""
    dirs = find_models(folder, weights=weights, snapshots=snapshots)
    common = dict(metric=metric, height=height, width=width, min_depth=min_depth,
                  max_depth=max_depth, overwrite=overwrite)
    if len(dirs) == 1 and snapshots is None:
        d = dirs[0]
        has_pose = pose and (d / "pose_encoder.pth").is_file() and (d / "pose.pth").is_file()
        return convert_monodepth2(d / "encoder.pth", d / "depth.pth", out,
                                  d / "pose_encoder.pth" if has_pose else None,
                                  d / "pose.pth" if has_pose else None, **common)
    if len(dirs) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, found {[str(d) for d in dirs]}")
    return convert_monodepth2([d / "encoder.pth" for d in dirs], [d / "depth.pth" for d in dirs],
                              out, **common)
