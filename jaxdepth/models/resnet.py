"""ResNet-18/50 encoder in the layout of torchvision, as Monodepth2 uses it.

Parameter names follow the PyTorch state dict one-to-one, with `.` → `/` and
list indices turned into `_<i>`: `encoder.layer1.0.conv1.weight` is
`params/encoder/layer1_0/conv1/kernel` (OIHW → HWIO), BatchNorm `weight`/`bias`
are `scale`/`bias`, `running_mean`/`running_var` are `batch_stats/.../mean|var`.
PyTorch's padding is reproduced exactly (explicit symmetric pads, max-pool with
-inf padding), so converted weights give the same features, at any input size.

Dilated backbones (DeepLab) follow torchvision's `replace_stride_with_dilation`:
`output_stride=16` replaces layer4's stride 2 by dilation 2, `output_stride=8` does the
same for layer3 (dilation 2) and layer4 (dilation 4). As in torchvision, the *first*
block of a dilated layer keeps the dilation of the layer before it (layer3 block 0:
d = 1; layer4 block 0: d = 1 at OS 16, d = 2 at OS 8), the later blocks use the new
one. A 3×3 conv of dilation d is padded by d; the stride-free 1×1 downsample stays.
(torchvision refuses dilated `BasicBlock`s; here both 3×3 convs of a ResNet-18/34
block take the block's dilation.) The defaults (`output_stride=32`,
`normalisation="monodepth2"`) are Monodepth2's encoder, unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

# Channels of the five feature maps (strides 2, 4, 8, 16, 32) at width 1.
ENCODER_CHANNELS = {18: (64, 64, 128, 256, 512), 34: (64, 64, 128, 256, 512),
                    50: (64, 256, 512, 1024, 2048), 101: (64, 256, 512, 1024, 2048)}
_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# Which of layer2..4 trade their stride for dilation, per output stride.
_DILATE = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}
#: input normalisation → (mean, std) per RGB channel, applied to images in [0, 1]
NORMALISATIONS = {"monodepth2": (0.45, 0.225),
                  "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                  "none": None}


def scaled(channels: int, width: float) -> int:
    """Channel count of a width-scaled layer (at least 1)."""
    return max(1, int(round(channels * width)))


def _conv(features, kernel, stride=1, name=None, dilation=1):
    pad = (kernel - 1) // 2 * dilation
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), kernel_dilation=(dilation, dilation),
                   use_bias=False, name=name)


def _bn(train: bool, name: str):
    # PyTorch momentum 0.1 is Flax momentum 0.9.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        name=name)


class BasicBlock(nn.Module):
    features: int
    stride: int = 1
    downsample: bool = False
    dilation: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        d = self.dilation
        y = nn.relu(_bn(train, "bn1")(_conv(self.features, 3, self.stride, "conv1", d)(x)))
        y = _bn(train, "bn2")(_conv(self.features, 3, 1, "conv2", d)(y))
        if self.downsample:
            x = _bn(train, "downsample_1")(_conv(self.features, 1, self.stride, "downsample_0")(x))
        return nn.relu(x + y)


class Bottleneck(nn.Module):
    """torchvision v1.5 bottleneck: the stride sits on the 3×3 conv."""
    features: int
    stride: int = 1
    downsample: bool = False
    expansion: int = 4
    dilation: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.relu(_bn(train, "bn1")(_conv(self.features, 1, 1, "conv1")(x)))
        y = nn.relu(_bn(train, "bn2")(
            _conv(self.features, 3, self.stride, "conv2", self.dilation)(y)))
        y = _bn(train, "bn3")(_conv(self.features * self.expansion, 1, 1, "conv3")(y))
        if self.downsample:
            x = _bn(train, "downsample_1")(
                _conv(self.features * self.expansion, 1, self.stride, "downsample_0")(x))
        return nn.relu(x + y)


class ResNetEncoder(nn.Module):
    """Monodepth2's `ResnetEncoder`: images `[B,H,W,3·n]` in [0,1] → 5 feature maps.

    Input normalisation happens here: `normalisation="monodepth2"` is (x − 0.45) / 0.225,
    `"imagenet"` is (x − mean) / std with ImageNet's per-channel statistics
    (torchvision's preset), `"none"` leaves the input as it is. Returns a tuple of
    `[B, H/2^(k+1), W/2^(k+1), C_k]` for k = 0..4 with `C_k` from `ENCODER_CHANNELS`
    (scaled by `width`); with `output_stride` 16 / 8 the last one / two maps stay at
    stride 16 / 8 (dilated, module doc). Odd sizes round up per stride-2 step,
    ⌈n/2⌉, as in PyTorch.
    """
    num_layers: int = 18
    width: float = 1.0
    output_stride: int = 32
    normalisation: str = "monodepth2"

    @nn.compact
    def __call__(self, images, train: bool = False) -> tuple[jnp.ndarray, ...]:
        if self.num_layers not in _BLOCKS:
            raise ValueError(f"num_layers must be one of {sorted(_BLOCKS)}, got {self.num_layers}")
        if self.output_stride not in _DILATE:
            raise ValueError(f"output_stride must be one of {sorted(_DILATE)}, got "
                             f"{self.output_stride}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {sorted(NORMALISATIONS)}, got "
                             f"{self.normalisation!r}")
        bottleneck = self.num_layers >= 50
        stats = NORMALISATIONS[self.normalisation]
        if self.normalisation == "monodepth2":
            x = (images - 0.45) / 0.225
        elif stats is not None:
            x = (images - jnp.asarray(stats[0], images.dtype)) / jnp.asarray(stats[1], images.dtype)
        else:
            x = images
        x = _conv(scaled(64, self.width), 7, 2, "conv1")(x)
        x = nn.relu(_bn(train, "bn1")(x))
        features = [x]
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        in_ch = x.shape[-1]
        dilation = 1
        for stage, blocks in enumerate(_BLOCKS[self.num_layers]):
            planes = scaled(64 * 2 ** stage, self.width)
            out_ch = planes * 4 if bottleneck else planes
            previous_dilation, layer_stride = dilation, 2 if stage > 0 else 1
            if stage > 0 and _DILATE[self.output_stride][stage - 1]:
                dilation, layer_stride = dilation * layer_stride, 1
            for b in range(blocks):
                stride = layer_stride if b == 0 else 1
                block = Bottleneck if bottleneck else BasicBlock
                x = block(planes, stride, downsample=(b == 0 and (stride != 1 or in_ch != out_ch)),
                          dilation=previous_dilation if b == 0 else dilation,
                          name=f"layer{stage + 1}_{b}")(x, train)
                in_ch = out_ch
            features.append(x)
        return tuple(features)


def encoder_channels(num_layers: int = 18, width: float = 1.0) -> Sequence[int]:
    """The channel counts `ResNetEncoder(num_layers, width)` produces."""
    base = ENCODER_CHANNELS[num_layers]
    if num_layers >= 50:
        return (scaled(64, width),) + tuple(4 * scaled(c // 4, width) for c in base[1:])
    return tuple(scaled(c, width) for c in base)
