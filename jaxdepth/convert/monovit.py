"""Released MonoViT PyTorch weights (`encoder.pth` + `depth.pth`) → a jaxdepth checkpoint
of `jaxdepth.models.MonoViT`.

    from jaxdepth.convert.monovit import convert_monovit
    convert_monovit("MonoViT_M_640x192/encoder.pth", "MonoViT_M_640x192/depth.pth", "ckpt/monovit")
    model, variables, meta = load_checkpoint("ckpt/monovit")      # jaxdepth.export
    out = model.apply(variables, images)        # images [B, meta["height"], meta["width"], 3]

CLI: `jaxdepth convert monovit --encoder encoder.pth --depth depth.pth --out DIR`.

What the files hold, and how they are read:

- `encoder.pth`: the state dict of the MPViT encoder (`stem.*`, `patch_embed_stages.*`,
  `mhca_stages.*`), plus the training resolution `height`, `width` and `use_stereo`
  (recorded in `meta.json`). Shared submodules appear under several names: each
  transformer encoder's `mhca_blks.j.cpe.*` / `.crpe.*` again as `MHCA_layers.l.cpe.*`,
  `MHCA_layers.l.crpe.*` and `MHCA_layers.l.factoratt_crpe.crpe.*`; the copies are
  checked to be equal and read once. A `cls_head.*` (an ImageNet MPViT file) is ignored.
- `depth.pth`: every decoder tensor twice, as `convs.<name>.*` (a `ModuleDict`) and as
  `decoder.<k>.*` (a `ModuleList` of the same modules in the `convs` order). The `convs`
  copy is read; `decoder.<k>` is paired with the k-th module of `convs` (in the file's
  order) and checked to be equal. A file with only `decoder.<k>.*` keys is read in the
  released order (`RELEASED_DECODER_ORDER`).
- The size is read from the tensor shapes (paths and blocks per stage, the stage dims,
  the MLP ratio) and matched against `jaxdepth.models.monovit.SIZES` and a width
  multiplier (the released files: `small`, width 1); `size=` / `model_width=` (CLI
  `--size`, `--model-width`) override it. The four unused ConvBlocks `X_00_Conv_0` …
  `X_03_Conv_0` are kept when the file has them (`unused_convs`); `uncertconv<i>` heads
  (this library's name for log σ heads) turn on `log_sigma`.

Conversion: conv kernels OIHW → HWIO (depthwise `[C,1,k,k]` → `[k,k,1,C]`), Linear
`(out, in)` → `(in, out)`, BatchNorm / LayerNorm `weight` → `scale`, BatchNorm running
statistics → `batch_stats`, `num_batches_tracked` dropped; the result is checked against
`jax.eval_shape` of the model, and a `ConversionError` lists every missing or unexpected
variable and every shape mismatch. Reading `.pth` files needs torch (weights_only=True).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jaxdepth.convert.monodepth2 import (
    ConversionError,
    _flax_path,
    _key_sample,
    _resolution,
    _sha256,
    load_state_dict,
)
from jaxdepth.export import abstract_variables, check_variables, save_checkpoint
from jaxdepth.models.monovit import (
    ATTENTION_NODES,
    NODES,
    SIZES,
    UNUSED_CONVS,
    MonoViT,
    decoder_channels,
    encoder_dims,
)

__all__ = [
    "RELEASED_DECODER_ORDER",
    "convert_monovit",
    "convert_monovit_state_dicts",
    "monovit_layout",
]


def _released_order() -> tuple[str, ...]:
    names = [f"f{i}" for i in (4, 3, 2, 1)]
    for j in range(5):
        for i in range(5 - j):
            names.append(f"X_{i}{j}_Conv_0")
            if i == 0 and j == 4:
                names.append("X_04_Conv_1")
    names += [f"X_{n}_attention" for n in ATTENTION_NODES]
    for node in NODES:
        if node in ATTENTION_NODES:
            continue
        r, c = int(node[0]), int(node[1])
        if c > 1:
            names.append(f"X_{node}_downsample")
        names.append(f"X_{r + 1}{c - 1}_Conv_1")
    return tuple(names) + tuple(f"dispconv{i}" for i in range(4))


#: the modules of the released decoder in `convs` order (= `decoder.<k>`)
RELEASED_DECODER_ORDER = _released_order()
_SHARED = re.compile(r"^(mhca_stages\.\d+\.mhca_blks\.\d+)\.MHCA_layers\.\d+\."
                     r"(?:factoratt_crpe\.)?(cpe|crpe)\.(.+)$")


def _tensors(sd: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}


# --------------------------------------------------------------------------- encoder

def _dedup_encoder(enc: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop `cls_head.*`, `num_batches_tracked` and the duplicate names of shared
    modules, checking each duplicate equals the tensor it repeats."""
    out, copies = {}, {}
    for key, value in enc.items():
        if key.startswith("cls_head.") or key.endswith("num_batches_tracked"):
            continue
        m = _SHARED.match(key)
        if m:
            copies.setdefault(f"{m.group(1)}.{m.group(2)}.{m.group(3)}", []).append((key, value))
        else:
            out[key] = value
    for canonical, items in copies.items():
        ref = out.get(canonical)
        if ref is None:  # only the per-block names: take the first one
            ref = out[canonical] = items[0][1]
        for key, value in items:
            if value.shape != ref.shape or not np.array_equal(value, ref):
                raise ConversionError(f"encoder.pth: '{key}' should repeat the shared module "
                                      f"'{canonical}' but differs from it")
    return out


def monovit_layout(encoder_sd: Mapping[str, Any]) -> dict[str, Any]:
    """`{"paths", "layers", "dims", "mlp_ratio"}` read from an MPViT state dict, and the
    matching `size` / `width` (None where no entry of `SIZES` fits)."""
    enc = _tensors(encoder_sd)
    if "stem.0.conv.weight" not in enc:
        raise ConversionError("not a MonoViT (MPViT) encoder state dict: no 'stem.0.conv.weight' "
                              f"(keys: {_key_sample(encoder_sd)})")
    paths, layers, dims = [], [], []
    for i in range(4):
        p = {int(m.group(1)) for k in enc
             if (m := re.match(rf"patch_embed_stages\.{i}\.patch_embeds\.(\d+)\.", k))}
        n = {int(m.group(1)) for k in enc
             if (m := re.match(rf"mhca_stages\.{i}\.mhca_blks\.0\.MHCA_layers\.(\d+)\.", k))}
        w = enc.get(f"patch_embed_stages.{i}.patch_embeds.0.patch_conv.pwconv.weight")
        if not p or not n or w is None:
            raise ConversionError(f"encoder.pth: stage {i} is incomplete (expected "
                                  f"'patch_embed_stages.{i}.patch_embeds.0.*' and "
                                  f"'mhca_stages.{i}.mhca_blks.0.MHCA_layers.0.*' keys)")
        paths.append(len(p))
        layers.append(len(n))
        dims.append(int(w.shape[0]))
    fc1 = enc.get("mhca_stages.0.mhca_blks.0.MHCA_layers.0.mlp.fc1.weight")
    if fc1 is None:
        raise ConversionError("encoder.pth: no 'mhca_stages.0.mhca_blks.0.MHCA_layers.0.mlp.fc1.weight'")
    ratio = fc1.shape[0] / dims[0]
    layout = {"paths": tuple(paths), "layers": tuple(layers), "dims": tuple(dims),
              "mlp_ratio": ratio, "size": None, "width": None}
    for name, cfg in SIZES.items():
        if (cfg.paths, cfg.layers, float(cfg.mlp_ratio)) != (layout["paths"], layout["layers"], ratio):
            continue
        width = dims[0] / cfg.dims[0]
        if encoder_dims(name, width) == layout["dims"]:
            layout["size"], layout["width"] = name, width
            break
    return layout


def _variable(prefix: tuple[str, ...], module: str, leaf: str, value: np.ndarray):
    """One tensor → `(flat path, array)`."""
    path = prefix + _flax_path(module) if module else prefix
    if leaf == "weight" and value.ndim == 4:
        return ("params",) + path + ("kernel",), value.transpose(2, 3, 1, 0)
    if leaf == "weight" and value.ndim == 2:
        return ("params",) + path + ("kernel",), value.T
    if leaf == "weight":
        return ("params",) + path + ("scale",), value
    if leaf == "bias":
        return ("params",) + path + ("bias",), value
    if leaf in ("running_mean", "running_var"):
        return ("batch_stats",) + path + ("mean" if leaf == "running_mean" else "var",), value
    return None


def _encoder_flat(enc: Mapping[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    flat = {}
    for key, value in enc.items():
        module, _, leaf = key.rpartition(".")
        # the stem is an nn.Sequential of Conv2d_BN: stem.0.conv → stem_0/conv
        item = _variable(("encoder",), module, leaf, value)
        if item is None:
            flat[("unrecognised", key)] = value
        else:
            flat[item[0]] = item[1]
    return flat


# --------------------------------------------------------------------------- decoder

def _decoder_modules(depth_sd: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """`{module name: {rest: tensor}}` of the decoder, de-duplicated and checked."""
    dec = _tensors(depth_sd)
    convs, order = {}, []
    listed: dict[int, dict[str, np.ndarray]] = {}
    other = []
    for key, value in dec.items():
        if key.startswith("convs."):
            name, _, rest = key[len("convs."):].partition(".")
            if name not in convs:
                convs[name] = {}
                order.append(name)
            convs[name][rest] = value
        elif m := re.match(r"decoder\.(\d+)\.(.+)$", key):
            listed.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            other.append(key)
    if other:
        raise ConversionError(f"depth.pth: unexpected keys {other[:8]}"
                              f"{' …' if len(other) > 8 else ''} (expected 'convs.*' and "
                              "'decoder.<k>.*')")
    if not convs and not listed:
        raise ConversionError("not a MonoViT depth decoder state dict: no 'convs.*' or "
                              f"'decoder.<k>.*' keys (keys: {_key_sample(depth_sd)})")
    if not convs:  # only the ModuleList copy: the released order
        if max(listed) >= len(RELEASED_DECODER_ORDER):
            raise ConversionError(f"depth.pth has decoder.{max(listed)}.*, more modules than "
                                  f"the released decoder's {len(RELEASED_DECODER_ORDER)}; "
                                  "without 'convs.*' keys they cannot be named")
        return {RELEASED_DECODER_ORDER[k]: v for k, v in listed.items()}
    for k, tensors in sorted(listed.items()):
        if k >= len(order):
            raise ConversionError(f"depth.pth: 'decoder.{k}.*' has no 'convs.*' counterpart "
                                  f"({len(order)} modules in convs)")
        name = order[k]
        for rest, value in tensors.items():
            ref = convs[name].get(rest)
            if ref is None or ref.shape != value.shape or not np.array_equal(ref, value):
                raise ConversionError(f"depth.pth: 'decoder.{k}.{rest}' should repeat "
                                      f"'convs.{name}.{rest}' but "
                                      f"{'that key is missing' if ref is None else 'differs'}")
        missing = sorted(set(convs[name]) - set(tensors))
        if missing:
            raise ConversionError(f"depth.pth: 'convs.{name}.{missing[0]}' has no copy "
                                  f"'decoder.{k}.{missing[0]}'")
    return convs


_CONV_BLOCK = re.compile(r"X_\d\d_Conv_\d$")
_HEAD = re.compile(r"(dispconv|uncertconv)(\d)$")


def _decoder_flat(modules: Mapping[str, Mapping[str, np.ndarray]]):
    flat = {}
    for name, tensors in modules.items():
        head = _HEAD.match(name)
        for rest, value in tensors.items():
            module, _, leaf = rest.rpartition(".")
            if _CONV_BLOCK.match(name) and module == "conv.conv" or re.match(r"X_\d\d_downsample$", name) and module == "conv":      # ConvBlock → Conv3x3 → conv
                target = (name, "")
            elif head and module == "conv":
                target = (f"{head.group(1)}_{head.group(2)}", "")
            elif re.match(r"(f\d|X_\d\d_attention)$", name) and module in (
                    "ca.fc.0", "ca.fc.2", "fc.0", "fc.2", "conv_se"):
                target = (name, module)
            else:
                target = None
            item = None if target is None else _variable(
                ("decoder", target[0]), target[1], leaf, value)
            if item is None:
                flat[("unrecognised", f"convs.{name}.{rest}")] = value
            else:
                flat[item[0]] = item[1]
    return flat


# --------------------------------------------------------------------------- conversion

def convert_monovit_state_dicts(encoder_sd: Mapping[str, Any], depth_sd: Mapping[str, Any], *,
                                size: str | None = None, model_width: float | None = None,
                                min_depth: float = 0.1, max_depth: float = 100.0,
                                dropout_rate: float = 0.2):
    """Encoder + decoder state dicts → `(model_kwargs, variables, info)`.

    `variables` is `{"params", "batch_stats"}` of NumPy arrays for `MonoViT(**model_kwargs)`;
    `info` has the read `layout`, `variant`, `height`, `width` and `use_stereo` stored in
    the encoder file (None if absent)."""
    layout = monovit_layout(encoder_sd)
    size = size or layout["size"]
    width = float(model_width if model_width is not None else (layout["width"] or 1.0))
    if size is None:
        raise ConversionError(
            f"encoder.pth: paths {layout['paths']}, blocks {layout['layers']}, dims "
            f"{layout['dims']}, MLP ratio {layout['mlp_ratio']:g} match no MonoViT size "
            f"({', '.join(sorted(SIZES))}) at any width; pass size= and model_width= "
            "(CLI: --size, --model-width)")
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    modules = _decoder_modules(depth_sd)
    present = [n for n in UNUSED_CONVS if n in modules]
    log_sigma = any(_HEAD.match(n) and n.startswith("uncertconv") for n in modules)
    kwargs = {"size": size, "width": width, "log_sigma": log_sigma,
              "dropout_rate": float(dropout_rate), "metric": False,
              "min_depth": float(min_depth), "max_depth": float(max_depth),
              "unused_convs": bool(present)}
    flat = {**_encoder_flat(_dedup_encoder(_tensors(encoder_sd))), **_decoder_flat(modules)}
    dec = decoder_channels(size, width)
    variables = check_variables(
        flat, abstract_variables(MonoViT(**kwargs)),
        f"MonoViT {size} (width {width:g}: encoder dims {encoder_dims(size, width)}, decoder "
        f"{dec})", error=ConversionError)

    def _scalar(key, cast):
        v = encoder_sd.get(key)
        return None if v is None else cast(np.asarray(v).item())

    info = {"layout": layout, "variant": "uncertconv" if log_sigma else "plain",
            "height": _scalar("height", int), "width": _scalar("width", int),
            "use_stereo": _scalar("use_stereo", bool)}
    return kwargs, variables, info


def convert_monovit(encoder, depth, out, *, size: str | None = None,
                    model_width: float | None = None, height: int | None = None,
                    width: int | None = None, min_depth: float = 0.1, max_depth: float = 100.0,
                    overwrite: bool = False) -> Path:
    """Convert MonoViT's `encoder.pth` + `depth.pth` into a jaxdepth checkpoint at `out`
    (written with `jaxdepth.export.save_checkpoint`; `load_checkpoint` rebuilds the
    `MonoViT`). `size` / `model_width`: the model size and width multiplier (default: read
    from the shapes); `height` / `width`: the training resolution (default: the one stored
    in `encoder.pth`). Returns `out`."""
    encoder, depth = Path(encoder), Path(depth)
    kwargs, variables, info = convert_monovit_state_dicts(
        load_state_dict(encoder), load_state_dict(depth), size=size, model_width=model_width,
        min_depth=min_depth, max_depth=max_depth)
    h, w = _resolution(info, encoder, height, width)
    meta = {"variant": info["variant"], "metric": False,
            "metric_source": "MonoViT outputs sigmoid disparity",
            "use_stereo": info["use_stereo"], "stored_resolution": [info["height"], info["width"]],
            "source": {"kind": "monovit",
                       "files": [{"encoder": str(encoder.absolute()), "depth": str(depth.absolute()),
                                  "sha256": {"encoder": _sha256(encoder), "depth": _sha256(depth)}}],
                       "size_source": "given" if size else "read from the tensor shapes"}}
    return save_checkpoint(out, MonoViT(**kwargs), variables, h, w, meta, overwrite=overwrite)
