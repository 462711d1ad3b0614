"""ResNet-18/50 encoder in the layout of torchvision, as Monodepth2 uses it.

Parameter names follow the PyTorch state dict one-to-one, with `.` → `/` and
list indices turned into `_<i>`: `encoder.layer1.0.conv1.weight` is
`params/encoder/layer1_0/conv1/kernel` (OIHW → HWIO), BatchNorm `weight`/`bias`
are `scale`/`bias`, `running_mean`/`running_var` are `batch_stats/.../mean|var`.
PyTorch's padding is reproduced exactly (explicit symmetric pads, max-pool with
-inf padding), so converted weights give the same features.
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

# Channels of the five feature maps (strides 2, 4, 8, 16, 32) at width 1.
ENCODER_CHANNELS = {18: (64, 64, 128, 256, 512), 34: (64, 64, 128, 256, 512),
                    50: (64, 256, 512, 1024, 2048)}
_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}


def scaled(channels: int, width: float) -> int:
    """Channel count of a width-scaled layer (at least 1)."""
    return max(1, int(round(channels * width)))


def _conv(features, kernel, stride=1, name=None):
    pad = (kernel - 1) // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), use_bias=False, name=name)


def _bn(train: bool, name: str):
    # PyTorch momentum 0.1 is Flax momentum 0.9.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        name=name)


class BasicBlock(nn.Module):
    features: int
    stride: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.relu(_bn(train, "bn1")(_conv(self.features, 3, self.stride, "conv1")(x)))
        y = _bn(train, "bn2")(_conv(self.features, 3, 1, "conv2")(y))
        if self.downsample:
            x = _bn(train, "downsample_1")(_conv(self.features, 1, self.stride, "downsample_0")(x))
        return nn.relu(x + y)


class Bottleneck(nn.Module):
    """torchvision v1.5 bottleneck: the stride sits on the 3×3 conv."""
    features: int
    stride: int = 1
    downsample: bool = False
    expansion: int = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.relu(_bn(train, "bn1")(_conv(self.features, 1, 1, "conv1")(x)))
        y = nn.relu(_bn(train, "bn2")(_conv(self.features, 3, self.stride, "conv2")(y)))
        y = _bn(train, "bn3")(_conv(self.features * self.expansion, 1, 1, "conv3")(y))
        if self.downsample:
            x = _bn(train, "downsample_1")(
                _conv(self.features * self.expansion, 1, self.stride, "downsample_0")(x))
        return nn.relu(x + y)


class ResNetEncoder(nn.Module):
    """Monodepth2's `ResnetEncoder`: images `[B,H,W,3·n]` in [0,1] → 5 feature maps.

    Input normalisation (x − 0.45) / 0.225 happens here. Returns a tuple of
    `[B, H/2^(k+1), W/2^(k+1), C_k]` for k = 0..4 with `C_k` from
    `ENCODER_CHANNELS` (scaled by `width`).
    """
    num_layers: int = 18
    width: float = 1.0

    @nn.compact
    def __call__(self, images, train: bool = False) -> tuple[jnp.ndarray, ...]:
        if self.num_layers not in _BLOCKS:
            raise ValueError(f"num_layers must be one of {sorted(_BLOCKS)}, got {self.num_layers}")
        bottleneck = self.num_layers >= 50
        x = (images - 0.45) / 0.225
        x = _conv(scaled(64, self.width), 7, 2, "conv1")(x)
        x = nn.relu(_bn(train, "bn1")(x))
        features = [x]
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        in_ch = x.shape[-1]
        for stage, blocks in enumerate(_BLOCKS[self.num_layers]):
            planes = scaled(64 * 2 ** stage, self.width)
            out_ch = planes * 4 if bottleneck else planes
            for b in range(blocks):
                stride = 2 if (b == 0 and stage > 0) else 1
                block = Bottleneck if bottleneck else BasicBlock
                x = block(planes, stride, downsample=(b == 0 and (stride != 1 or in_ch != out_ch)),
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
