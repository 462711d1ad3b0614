"""Semantic segmentation networks with the jaxdepth apply contract (DeepLabV3, DeepLabV3+).

    out = model.apply(variables, images, offsets=None, *, dropout_rng=None, train=False)

`images` `[B,H,W,3]` float in [0,1], any H and W (PyTorch's conv arithmetic: each
stride-2 step maps n to ⌈n/2⌉); ImageNet mean/std normalisation happens inside the
model. `out`:

  - `logits` `[B,H,W,C]`: `decoder_logits` bilinearly resized to the input size with
    half-pixel centres and no antialiasing (PyTorch `F.interpolate(..., "bilinear",
    align_corners=False)`);
  - `decoder_logits` `[B,h,w,C]`: the final 1×1 conv at decoder resolution (stride 8
    for DeepLabV3-ResNet, 16 for DeepLabV3-MobileNetV3, 4 for DeepLabV3+);
  - `aux_logits` `[B,H,W,C]` (DeepLabV3 with `aux=True`): torchvision's FCN aux head;
  - `features`: name → activation `[B,h',w',·]` (`FEATURES_V3` / `FEATURES_V3PLUS`):
    `backbone` (the map ASPP reads), `backbone_aux` (the map the aux head reads),
    `low_level` (ResNet layer1, stride 4), `aspp` (ASPP projection after its ReLU,
    before dropout), `low_level_proj` (its 48-channel projection), `decoder_concat`
    ([low_level_proj; upsampled aspp], before dropout), `penultimate_in` (the input of
    the 3×3 conv before the final one) and `final_in` (φ: the input of the final 1×1
    conv, after the last ReLU).

`offsets[name]` (same shape as `features[name]`) is added to that activation where it
is produced, so `jax.grad` w.r.t. a zero offset is the gradient w.r.t. the feature.

The head (`variables["params"]["head"]`) is what PGN's gradient maps differentiate:
`final_in = relu(penultimate_bn(penultimate(penultimate_in)))` with `penultimate` a 3×3
conv (stride 1, dilation 1, zero "same" padding, no bias) and `penultimate_bn` a
BatchNorm (eps 1e-5), then `decoder_logits = final(final_in)`, a 1×1 conv (with bias in
DeepLabV3, as torchvision's; without in DeepLabV3+, as PGN's reference head). Dropout
(only when `dropout_rng` is passed and the rate is positive; elementwise, PyTorch
`nn.Dropout`, kept values scaled by 1/(1 − rate)) acts before the head, never between
`final_in` and `final`. BatchNorm uses its running statistics unless `train=True`
(then call with `mutable=["batch_stats"]`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdepth.models.contract import check_finite, random_variables
from jaxdepth.models.mobilenetv3 import MobileNetV3Large
from jaxdepth.models.resnet import NORMALISATIONS, ResNetEncoder, scaled

IMAGENET_MEAN, IMAGENET_STD = NORMALISATIONS["imagenet"]
#: DeepLabV3 backbone name → (ResNet depth or None for MobileNetV3-Large)
V3_BACKBONES = {"resnet50": 50, "resnet101": 101, "mobilenet_v3_large": None}
#: DeepLabV3+ backbone name → ResNet depth
V3PLUS_BACKBONES = {"resnet18": 18, "resnet50": 50}
#: feature names of DeepLabV3 (`backbone_aux` only with `aux=True`)
FEATURES_V3 = ("backbone", "backbone_aux", "aspp", "penultimate_in", "final_in")
#: feature names of DeepLabV3+
FEATURES_V3PLUS = ("backbone", "low_level", "aspp", "low_level_proj", "decoder_concat",
                   "penultimate_in", "final_in")
_AUX_DROPOUT = 0.1  # torchvision's FCNHead


def resize_bilinear(x, height: int, width: int):
    """`[B,h,w,C]` → `[B,height,width,C]`, PyTorch `F.interpolate(mode="bilinear",
    align_corners=False)`: half-pixel centres, edge samples clamped, no antialiasing."""
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), "bilinear",
                            antialias=False)


def dropout(x, rng, rate: float):
    """PyTorch `nn.Dropout` (elementwise): zero each value with probability `rate`, scale
    the kept ones by 1/(1 − rate). Identity when `rng` is None or `rate` is 0."""
    if rng is None or rate <= 0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _bn(train: bool, name: str):
    # PyTorch BatchNorm2d defaults: eps 1e-5, momentum 0.1 (Flax 0.9).
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def _conv(features: int, kernel: int, dilation: int = 1, bias: bool = False, name=None):
    pad = (kernel - 1) // 2 * dilation
    return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                   kernel_dilation=(dilation, dilation), use_bias=bias, name=name)


def _check_images(images):
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [B,H,W,3], got shape {images.shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    if 0 in tuple(images.shape):
        raise ValueError(f"images must hold at least one image of at least 1×1 pixels "
                         f"([B,H,W,3] with B, H, W >= 1), got shape {tuple(images.shape)}")
    check_finite(images)


def _check_offsets(offsets, names: Sequence[str]) -> dict:
    offsets = dict(offsets or {})
    unknown = set(offsets) - set(names)
    if unknown:
        raise ValueError(f"unknown offset name(s) {sorted(unknown)}; this model's features are "
                         f"{list(names)}")
    return offsets


def _tap(features: dict, offsets: Mapping, name: str, x):
    """Record activation `x` as `features[name]`, after adding `offsets[name]` if given."""
    if name in offsets:
        off = offsets[name]
        if tuple(off.shape) != tuple(x.shape):
            raise ValueError(f"offsets[{name!r}] must have the feature's shape {tuple(x.shape)}, "
                             f"got {tuple(off.shape)}")
        x = x + off
    features[name] = x
    return x


class ConvBNReLU(nn.Module):
    """k×k conv (no bias, zero padding (k−1)/2·d) → BN → ReLU, `[B,H,W,·]` → `[B,H,W,features]`."""
    features: int
    kernel: int = 1
    dilation: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _conv(self.features, self.kernel, self.dilation, name="conv")(x)
        return nn.relu(_bn(train, "bn")(x))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (Chen et al. 2017, DeepLabV3 §3.3; torchvision's `ASPP`).

    Branches `branch_0` (1×1), `branch_1..n` (3×3, dilation = each of `rates`) and
    `pool` (global average → 1×1 → BN → ReLU, broadcast back: bilinear upsampling of a
    1×1 map), each `features` channels, concatenated and projected by `project` (1×1 →
    BN → ReLU). `[B,h,w,Cin]` → `[B,h,w,features]`; the projection's dropout is the
    caller's.
    """
    features: int
    rates: Sequence[int]

    @nn.compact
    def __call__(self, x, train: bool = False):
        branches = [ConvBNReLU(self.features, 1, name="branch_0")(x, train)]
        for i, rate in enumerate(self.rates, start=1):
            branches.append(ConvBNReLU(self.features, 3, int(rate), name=f"branch_{i}")(x, train))
        pooled = ConvBNReLU(self.features, 1, name="pool")(
            jnp.mean(x, axis=(1, 2), keepdims=True), train)
        branches.append(jnp.broadcast_to(pooled, x.shape[:3] + (self.features,)))
        return ConvBNReLU(self.features, 1, name="project")(jnp.concatenate(branches, -1), train)


class GradientHead(nn.Module):
    """The classifier head PGN differentiates (module doc), `[B,h,w,Cin]` → logits `[B,h,w,C]`.

    `extra_convs` 3×3 conv → BN → ReLU blocks (`conv{i}`, `bn{i}`) come first (PGN's
    DeepLabV3+ head has one: [0]-[2] of its `MySequential`), then `penultimate` (3×3,
    `features` channels, no bias) → `penultimate_bn` → ReLU → `final` (1×1 → C, bias
    if `final_bias`). Returns `(logits, {"penultimate_in", "final_in"})`.
    """
    num_classes: int
    features: int
    extra_convs: int = 0
    final_bias: bool = False

    @nn.compact
    def __call__(self, x, offsets: Mapping | None = None, train: bool = False):
        offsets, feats = dict(offsets or {}), {}
        for i in range(self.extra_convs):
            x = nn.relu(_bn(train, f"bn{i}")(_conv(self.features, 3, name=f"conv{i}")(x)))
        x = _tap(feats, offsets, "penultimate_in", x)
        phi = nn.relu(_bn(train, "penultimate_bn")(_conv(self.features, 3, name="penultimate")(x)))
        phi = _tap(feats, offsets, "final_in", phi)
        return _conv(self.num_classes, 1, bias=self.final_bias, name="final")(phi), feats


class FCNHead(nn.Module):
    """torchvision's `FCNHead` (the aux classifier): 3×3 conv Cin → Cin/4 (no bias) → BN →
    ReLU → dropout 0.1 → 1×1 conv with bias → C. `[B,h,w,Cin]` → `[B,h,w,C]`."""
    num_classes: int

    @nn.compact
    def __call__(self, x, dropout_rng=None, train: bool = False):
        x = nn.relu(_bn(train, "bn")(_conv(x.shape[-1] // 4, 3, name="conv")(x)))
        x = dropout(x, dropout_rng, _AUX_DROPOUT)
        return _conv(self.num_classes, 1, bias=True, name="final")(x)


class _InitMixin:
    def init_variables(self, rng: jax.Array, height: int = 64, width: int = 64):
        """PyTorch-style random variables (see `init.torch_like_init`) for an input of
        the given size (the shapes do not depend on it); `rng` is a JAX key or an int."""
        return random_variables(self, rng, height, width)


def _check_common(num_classes: int, width: float, dropout_rate: float):
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if not width > 0:
        raise ValueError(f"width must be positive, got {width}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate}")


class DeepLabV3(_InitMixin, nn.Module):
    """torchvision's `deeplabv3_resnet50` / `_resnet101` / `deeplabv3_mobilenet_v3_large`.

    Chen et al., "Rethinking Atrous Convolution for Semantic Image Segmentation" (2017),
    as torchvision builds it:

    - backbone: ResNet with `replace_stride_with_dilation=[False, True, True]` (output
      stride 8, layer4 → 2048 ch, aux from layer3, 1024 ch; `jaxdepth.models.resnet`
      explains the first-block dilation rule) or MobileNetV3-Large with `dilated=True`
      (output stride 16, `features_16` → 960 ch, aux from `features_4`, 40 ch);
    - `aspp`: ASPP with rates 12/24/36 and 256 channels, then dropout `dropout_rate`
      (torchvision: 0.5) after the projection's ReLU;
    - `head` (torchvision's `classifier.1`-`.4`): `penultimate` 3×3 256 → 256 →
      `penultimate_bn` → ReLU → `final` 1×1 with bias;
    - `aux_head` (`aux=True`): `FCNHead` on the aux map.

    Parameter names: `backbone/...` as `ResNetEncoder` / `MobileNetV3Large`,
    `aspp/{branch_0..3,pool,project}/{conv,bn}`, `head/{penultimate,penultimate_bn,final}`,
    `aux_head/{conv,bn,final}` (the converter `jaxdepth.convert.deeplabv3` maps
    torchvision's keys). `width` scales every channel count (1.0 = torchvision; other
    values are for small tests, MobileNet channels rounded as torchvision's `width_mult`).
    """
    num_classes: int
    backbone: str = "resnet50"
    aux: bool = False
    width: float = 1.0
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, images, offsets: Mapping[str, jax.Array] | None = None, *,
                 dropout_rng: jax.Array | None = None, train: bool = False):
        """`offsets`: feature name → array added there; `dropout_rng`: turns on dropout
        (ASPP projection at `dropout_rate`, aux head at 0.1); `train`: BN batch statistics."""
        if self.backbone not in V3_BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(V3_BACKBONES)}, got {self.backbone!r}")
        _check_common(self.num_classes, self.width, self.dropout_rate)
        _check_images(images)
        names = FEATURES_V3 if self.aux else tuple(n for n in FEATURES_V3 if n != "backbone_aux")
        offsets, feats = _check_offsets(offsets, names), {}
        depth = V3_BACKBONES[self.backbone]
        if depth is None:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
            x = (images - jnp.asarray(mean, images.dtype)) / jnp.asarray(std, images.dtype)
            maps = MobileNetV3Large(self.width, dilated=True, name="backbone")(x, train)
            high, low = maps[16], maps[4]
        else:
            maps = ResNetEncoder(depth, self.width, output_stride=8, normalisation="imagenet",
                                 name="backbone")(images, train)
            high, low = maps[4], maps[3]
        high = _tap(feats, offsets, "backbone", high)
        channels = scaled(256, self.width)
        x = _tap(feats, offsets, "aspp", ASPP(channels, (12, 24, 36), name="aspp")(high, train))
        rngs = jax.random.split(dropout_rng) if dropout_rng is not None else (None, None)
        x = dropout(x, rngs[0], self.dropout_rate)
        logits, head_feats = GradientHead(self.num_classes, channels, final_bias=True,
                                          name="head")(x, offsets, train)
        feats.update(head_feats)
        height, width = images.shape[1:3]
        out = {"logits": resize_bilinear(logits, height, width), "decoder_logits": logits,
               "features": feats}
        if self.aux:
            low = _tap(feats, offsets, "backbone_aux", low)
            aux = FCNHead(self.num_classes, name="aux_head")(low, rngs[1], train)
            out["aux_logits"] = resize_bilinear(aux, height, width)
        return out


class DeepLabV3Plus(_InitMixin, nn.Module):
    """DeepLabV3+ (Chen et al. 2018, §3.2) with PGN's reference head, on a ResNet backbone.

    - backbone: ResNet-18/50, torchvision-style dilation (`output_stride` 16: layer4
      dilated; 8: layer3 and layer4), ImageNet normalisation;
    - `aspp`: ASPP on layer4, 256 channels, rates `aspp_rates` at output stride 16
      (doubled at 8);
    - decoder: `low_level` (1×1 conv layer1 → 48 ch, BN, ReLU); the ASPP output resized
      bilinearly to layer1's size (×4 at OS 16 when H, W are multiples of 16) and
      concatenated after it: `decoder_concat` = [low-level projection; ASPP] (304 ch);
      dropout `dropout_rate` on it (MC dropout), only when `dropout_rng` is passed;
    - `head`: PGN's `MySequential`: `conv0` 3×3 304 → 256 → `bn0` → ReLU →
      `penultimate` 3×3 256 → 256 → `penultimate_bn` → ReLU → `final` 1×1 → C, no biases.

    `width` scales every channel count (`resnet.scaled`; 1.0 = the reference), so the
    logits are at stride 4.
    """
    num_classes: int
    backbone: str = "resnet18"
    output_stride: int = 16
    width: float = 1.0
    dropout_rate: float = 0.0
    aspp_rates: Sequence[int] = (6, 12, 18)

    @nn.compact
    def __call__(self, images, offsets: Mapping[str, jax.Array] | None = None, *,
                 dropout_rng: jax.Array | None = None, train: bool = False):
        """`offsets`: feature name → array added there; `dropout_rng`: turns on dropout
        of `decoder_concat` at `dropout_rate`; `train`: BN batch statistics."""
        if self.backbone not in V3PLUS_BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(V3PLUS_BACKBONES)}, got "
                             f"{self.backbone!r}")
        if self.output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {self.output_stride}")
        _check_common(self.num_classes, self.width, self.dropout_rate)
        _check_images(images)
        offsets, feats = _check_offsets(offsets, FEATURES_V3PLUS), {}
        maps = ResNetEncoder(V3PLUS_BACKBONES[self.backbone], self.width,
                             output_stride=self.output_stride, normalisation="imagenet",
                             name="backbone")(images, train)
        high = _tap(feats, offsets, "backbone", maps[4])
        low = _tap(feats, offsets, "low_level", maps[1])
        channels = scaled(256, self.width)
        rates = tuple(int(r) * (16 // self.output_stride) for r in self.aspp_rates)
        x = _tap(feats, offsets, "aspp", ASPP(channels, rates, name="aspp")(high, train))
        proj = ConvBNReLU(scaled(48, self.width), 1, name="low_level")(low, train)
        proj = _tap(feats, offsets, "low_level_proj", proj)
        x = resize_bilinear(x, low.shape[1], low.shape[2])
        x = _tap(feats, offsets, "decoder_concat", jnp.concatenate([proj, x], axis=-1))
        x = dropout(x, dropout_rng, self.dropout_rate)
        logits, head_feats = GradientHead(self.num_classes, channels, extra_convs=1,
                                          final_bias=False, name="head")(x, offsets, train)
        feats.update(head_feats)
        return {"logits": resize_bilinear(logits, *images.shape[1:3]), "decoder_logits": logits,
                "features": feats}
