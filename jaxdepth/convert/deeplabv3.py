"""torchvision DeepLabV3 state dicts → jaxdepth segmentation checkpoints.

    from jaxdepth.convert import convert_deeplabv3
    convert_deeplabv3("deeplabv3_resnet50_coco.pth", "ckpt/deeplabv3_r50", class_names="voc")
    model, variables, meta = load_checkpoint("ckpt/deeplabv3_r50")
    out = model.apply(variables, images)             # images [B,H,W,3] in [0,1], any size

Reads the `state_dict()` of torchvision's `deeplabv3_resnet50`, `deeplabv3_resnet101` or
`deeplabv3_mobilenet_v3_large` (`torchvision.models.segmentation`; its released weights
are `COCO_WITH_VOC_LABELS_V1`: 21 Pascal VOC classes, trained at 520 px, with the aux
head) into `jaxdepth.models.DeepLabV3`. The keys, and where they go:

| torchvision key (module)                 | jaxdepth variable path                 |
|------------------------------------------|----------------------------------------|
| `backbone.conv1`, `backbone.bn1`, `backbone.layer{k}.{b}.{conv,bn}{n}`, `backbone.layer{k}.0.downsample.{0,1}` (ResNet) | `backbone/conv1`, `backbone/layer{k}_{b}/conv{n}`, `backbone/layer{k}_0/downsample_{0,1}` |
| `backbone.{0,16}.{0,1}` (MobileNetV3 stem / last conv) | `backbone/features_{i}/{conv,bn}` |
| `backbone.{i}.block.{j}.{0,1}`, `backbone.{i}.block.{j}.fc{1,2}` | `backbone/features_{i}/block_{j}/{conv,bn}`, `.../fc{1,2}` |
| `classifier.0.convs.{0..3}.{0,1}` (ASPP 1×1, rates 12/24/36) | `aspp/branch_{0..3}/{conv,bn}` |
| `classifier.0.convs.4.{1,2}` (ASPP pooling) | `aspp/pool/{conv,bn}`                  |
| `classifier.0.project.{0,1}`             | `aspp/project/{conv,bn}`               |
| `classifier.1`, `classifier.2`, `classifier.4` | `head/penultimate`, `head/penultimate_bn`, `head/final` |
| `aux_classifier.{0,1,4}` (FCNHead)       | `aux_head/{conv,bn,final}`             |

Conv weights OIHW → HWIO (transpose (2, 3, 1, 0); depthwise `[C,1,k,k]` → `[k,k,1,C]`),
BatchNorm `weight`/`bias` → `params` `scale`/`bias`, `running_mean`/`running_var` →
`batch_stats` `mean`/`var`, `num_batches_tracked` dropped. The backbone is read from the
keys (`backbone.conv1.weight`: ResNet, its depth from the number of layer3 blocks, 6 or
23; `backbone.16.0.weight`: MobileNetV3-Large), the class count from
`classifier.4.weight`, the aux head from any `aux_classifier.*` key. Every key and
shape is checked against `jax.eval_shape` of the model; a `ConversionError` lists every
missing and unexpected key and every shape mismatch. A checkpoint dict that wraps the
state dict (`model_state`, as DeepLabV3Plus-Pytorch saves; `state_dict`; `model`) and
a DataParallel `module.` prefix are accepted.

The file is read with `torch.load(path, map_location="cpu", weights_only=True)`, so it
cannot run code (this needs PyTorch; torchvision is not needed). torchvision's models
expect ImageNet-normalised input; the jaxdepth model normalises itself, so it takes
images in [0, 1].
"""
from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxdepth.convert.monodepth2 import ConversionError, load_state_dict
from jaxdepth.export import (abstract_variables, check_class_names, check_variables,
                             is_checkpoint, save_checkpoint)
from jaxdepth.models.segmentation import V3_BACKBONES, DeepLabV3

__all__ = ["VOC_CLASSES", "convert_deeplabv3", "convert_deeplabv3_state_dict",
           "deeplabv3_layout", "load_torch_state_dict"]

#: torchvision's category names of the COCO_WITH_VOC_LABELS_V1 segmentation weights
VOC_CLASSES = ("__background__", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
_RESNET_DEPTH = {6: 50, 23: 101}  # layer3 blocks → ResNet depth
_WRAPPERS = ("model_state", "state_dict", "model")
_HEAD = {"classifier.1": ("head", "penultimate"), "classifier.2": ("head", "penultimate_bn"),
         "classifier.4": ("head", "final"), "aux_classifier.0": ("aux_head", "conv"),
         "aux_classifier.1": ("aux_head", "bn"), "aux_classifier.4": ("aux_head", "final")}


# --------------------------------------------------------------------------- reading

def load_torch_state_dict(path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict file as float32 NumPy arrays (integer
    tensors int64), read with `torch.load(weights_only=True)` on the CPU; a wrapping
    `model_state` / `state_dict` / `model` entry is unwrapped, a `module.` prefix removed,
    non-tensor entries are dropped."""
    obj = load_state_dict(path, wrappers=_WRAPPERS)
    out = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not out:
        raise ConversionError(f"{path}: the mapping holds no tensors, so it is no state dict "
                              f"(entries: {', '.join(map(str, list(obj)[:6])) or '(none)'})")
    return out


# --------------------------------------------------------------------------- layout

def _key_sample(sd: Mapping[str, Any], n: int = 6) -> str:
    keys = list(sd)
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "") if keys else "(empty)"


def deeplabv3_layout(sd: Mapping[str, Any]) -> dict[str, Any]:
    """`{"backbone", "num_classes", "aux"}` of a torchvision DeepLabV3 state dict."""
    if "backbone.conv1.weight" in sd:
        blocks = {int(m.group(1)) for k in sd if (m := re.match(r"backbone\.layer3\.(\d+)\.", k))}
        if len(blocks) not in _RESNET_DEPTH:
            raise ConversionError(f"unsupported ResNet backbone: {len(blocks)} blocks in layer3; "
                                  "torchvision's DeepLabV3 ResNet-50 has 6, ResNet-101 23")
        backbone = f"resnet{_RESNET_DEPTH[len(blocks)]}"
    elif "backbone.0.0.weight" in sd and "backbone.16.0.weight" in sd:
        backbone = "mobilenet_v3_large"
    else:
        raise ConversionError("not a torchvision DeepLabV3 state dict: no ResNet "
                              "('backbone.conv1.weight') or MobileNetV3-Large "
                              f"('backbone.16.0.weight') backbone (keys: {_key_sample(sd)})")
    final = sd.get("classifier.4.weight")
    if final is None or np.ndim(final) != 4:
        raise ConversionError("not a torchvision DeepLabV3 state dict: no classifier "
                              f"'classifier.4.weight' [C,256,1,1] (keys: {_key_sample(sd)})")
    return {"backbone": backbone, "num_classes": int(final.shape[0]),
            "aux": any(k.startswith("aux_classifier.") for k in sd)}


def _module_path(module: str) -> tuple[str, ...] | None:
    """torchvision module name → jaxdepth module path (module doc), None if unknown."""
    if module in _HEAD:
        return _HEAD[module]
    if m := re.fullmatch(r"classifier\.0\.convs\.([0-3])\.([01])", module):
        return ("aspp", f"branch_{m.group(1)}", ("conv", "bn")[int(m.group(2))])
    if m := re.fullmatch(r"classifier\.0\.convs\.4\.([12])", module):
        return ("aspp", "pool", ("conv", "bn")[int(m.group(1)) - 1])
    if m := re.fullmatch(r"classifier\.0\.project\.([01])", module):
        return ("aspp", "project", ("conv", "bn")[int(m.group(1))])
    if m := re.fullmatch(r"backbone\.(\d+)\.([01])", module):  # MobileNetV3 stem / last conv
        return ("backbone", f"features_{m.group(1)}", ("conv", "bn")[int(m.group(2))])
    if m := re.fullmatch(r"backbone\.(\d+)\.block\.(\d+)\.([01]|fc1|fc2)", module):
        leaf = {"0": "conv", "1": "bn"}.get(m.group(3), m.group(3))
        return ("backbone", f"features_{m.group(1)}", f"block_{m.group(2)}", leaf)
    if m := re.fullmatch(r"backbone\.((?:conv|bn)1|layer[1-4]\.\d+\.(?:(?:conv|bn)[1-3]|downsample\.[01]))",
                         module):  # ResNet: `layer1.0.downsample.0` → layer1_0/downsample_0
        return ("backbone",) + tuple(re.sub(r"\.(\d+)", r"_\1", m.group(1)).split("."))
    return None


def _flat_variables(sd: Mapping[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """State dict → flat `{(collection, *path, leaf): array}`; keys that have no place
    go under `("unrecognised", key)` so that the check reports them."""
    flat = {}
    for key, value in sd.items():
        module, _, leaf = key.rpartition(".")
        if leaf == "num_batches_tracked":
            continue
        path = _module_path(module)
        if path is None:
            flat[("unrecognised", key)] = value
        elif leaf == "weight" and value.ndim == 4:
            flat[("params",) + path + ("kernel",)] = value.transpose(2, 3, 1, 0)
        elif leaf == "weight" and value.ndim == 1:
            flat[("params",) + path + ("scale",)] = value
        elif leaf == "bias":
            flat[("params",) + path + ("bias",)] = value
        elif leaf == "running_mean":
            flat[("batch_stats",) + path + ("mean",)] = value
        elif leaf == "running_var":
            flat[("batch_stats",) + path + ("var",)] = value
        else:
            flat[("unrecognised", key)] = value
    return flat


def convert_deeplabv3_state_dict(sd: Mapping[str, np.ndarray], *, backbone: str | None = None,
                                 num_classes: int | None = None):
    """torchvision DeepLabV3 state dict (NumPy arrays) → `(DeepLabV3 module, variables)`.

    `backbone` / `num_classes`: None reads them from the keys; given, they must agree.
    """
    layout = deeplabv3_layout(sd)
    if backbone is not None and backbone not in V3_BACKBONES:
        raise ValueError(f"backbone must be one of {sorted(V3_BACKBONES)}, got {backbone!r}")
    for name, given in (("backbone", backbone), ("num_classes", num_classes)):
        if given is not None and given != layout[name]:
            raise ConversionError(f"{name}={given!r} was given, but the state dict holds "
                                  f"{name}={layout[name]!r}")
    model = DeepLabV3(layout["num_classes"], layout["backbone"], aux=layout["aux"])
    variables = check_variables(
        _flat_variables(sd), _abstract(layout["num_classes"], layout["backbone"], layout["aux"]),
        f"torchvision DeepLabV3-{layout['backbone']} state dict", error=ConversionError)
    return model, variables


@functools.lru_cache(maxsize=8)
def _abstract(num_classes: int, backbone: str, aux: bool):
    """The variable shapes of a DeepLabV3 (tracing ResNet-101 takes seconds)."""
    return abstract_variables(DeepLabV3(num_classes, backbone, aux=aux))


# --------------------------------------------------------------------------- conversion

def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_deeplabv3(weights, out, *, backbone: str | None = None,
                      num_classes: int | None = None,
                      class_names: str | Sequence[str] | None = None, height: int = 520,
                      width: int = 520, overwrite: bool = False) -> Path:
    """Convert a torchvision DeepLabV3 `.pth` state dict into a jaxdepth checkpoint at `out`.

    `backbone` (`resnet50`, `resnet101`, `mobilenet_v3_large`) and `num_classes` are read
    from the keys when None. `class_names`: one name per class, or `"voc"` for
    `VOC_CLASSES` (the released torchvision weights). `height`/`width`: the input size
    recorded in `meta.json` (torchvision's preset resizes to 520). Returns `out`.
    """
    weights, out = Path(weights), Path(out)
    if is_checkpoint(out) and not overwrite:  # fail before reading and converting
        raise FileExistsError(f"{out} already holds a jaxdepth checkpoint; pass overwrite=True "
                              "(CLI: --overwrite) to replace it")
    if isinstance(class_names, str):
        if class_names.lower() != "voc":
            raise ValueError(f"class_names must be a list of names or 'voc', got {class_names!r}")
        class_names = VOC_CLASSES
    sd = load_torch_state_dict(weights)
    check_class_names(None if class_names is None else list(class_names),
                      deeplabv3_layout(sd)["num_classes"])
    model, variables = convert_deeplabv3_state_dict(sd, backbone=backbone, num_classes=num_classes)
    meta = {"class_names": None if class_names is None else list(class_names),
            "source": {"kind": "torchvision-deeplabv3", "file": str(weights.absolute()),
                       "sha256": _sha256(weights), "backbone": model.backbone, "aux": model.aux}}
    return save_checkpoint(out, model, variables, height, width, meta, overwrite=overwrite)
