"""MobileNetV3-Large feature extractor in the layout of torchvision's `mobilenet_v3_large().features`.

Howard et al., "Searching for MobileNetV3" (2019), Table 1, as torchvision builds it:

- `features_0`: 3×3 conv stride 2, 3 → 16, BN, hardswish (the stem);
- `features_1` … `features_15`: inverted residual blocks (`BLOCKS`: kernel, expanded
  channels, output channels, squeeze-excitation, activation, stride) — an optional 1×1
  expansion (absent when expanded = input channels), a depthwise k×k conv, an optional
  squeeze-excitation (`avgpool → 1×1 fc1 + ReLU → 1×1 fc2 → hardsigmoid`, squeeze
  channels `make_divisible(expanded / 4)`), a linear 1×1 projection, and a residual
  connection when stride 1 and input = output channels;
- `features_16`: 1×1 conv 160 → 960, BN, hardswish.

BatchNorm has epsilon 0.001 and PyTorch momentum 0.01 (Flax 0.99); convs have no bias
(the SE `fc1`/`fc2` have one). Hardswish is x·relu6(x + 3)/6, hardsigmoid relu6(x + 3)/6.
`dilated=True` (torchvision's `dilated`, DeepLabV3) gives the last three blocks (the C4
stage, 13–15) stride 1 and dilation 2, so the output stride is 16, not 32. A k×k conv of
dilation d is zero-padded by (k − 1)/2·d on each side, as in PyTorch, so any input size
works (odd sizes round up, ⌈n/2⌉, at each stride-2 step).

Parameter names follow torchvision's state dict (`features.{i}.block.{j}.{0,1}`):
`features_{i}/block_{j}/conv/kernel` (HWIO; depthwise `[k,k,1,C]`) and
`features_{i}/block_{j}/bn/{scale,bias}`, SE `features_{i}/block_{j}/fc{1,2}/{kernel,bias}`;
the stem and the last conv are `features_{0,16}/conv` and `.../bn`.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

#: torchvision's `mobilenet_v3_large` blocks 1..15: (kernel, expanded, out, SE, activation, stride)
BLOCKS = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),     # C1
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),      # C2
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),  # C3
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),  # C4 (dilated: stride 1, dilation 2)
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
)
_DILATED_FROM = 13  # first block of the C4 stage
_ACTIVATIONS = {"relu": nn.relu, "hardswish": jax.nn.hard_swish, None: lambda x: x}


def make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's `_make_divisible`: round to the nearest multiple of `divisor` (at
    least `divisor`), going one step up if rounding lost more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _bn(train: bool, name: str = "bn"):
    # torchvision's MobileNetV3 norm layer: eps 0.001, PyTorch momentum 0.01 (Flax 0.99).
    return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3, name=name)


class ConvBNAct(nn.Module):
    """torchvision's `Conv2dNormActivation`: k×k conv (no bias, zero padding (k−1)/2·d),
    BN, activation (`relu`, `hardswish` or None). `[B,H,W,Cin]` → `[B,H/s,W/s,features]`."""
    features: int
    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    activation: str | None = "relu"

    @nn.compact
    def __call__(self, x, train: bool = False):
        pad = (self.kernel - 1) // 2 * self.dilation
        x = nn.Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                    padding=((pad, pad), (pad, pad)), kernel_dilation=(self.dilation,) * 2,
                    feature_group_count=self.groups, use_bias=False, name="conv")(x)
        return _ACTIVATIONS[self.activation](_bn(train)(x))


class SqueezeExcitation(nn.Module):
    """`x · hardsigmoid(fc2(relu(fc1(mean_hw x))))` with 1×1 convs with bias; `[B,H,W,C]`."""
    squeeze: int

    @nn.compact
    def __call__(self, x):
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.relu(nn.Conv(self.squeeze, (1, 1), name="fc1")(s))
        s = nn.Conv(x.shape[-1], (1, 1), name="fc2")(s)
        return x * jax.nn.hard_sigmoid(s)


class InvertedResidual(nn.Module):
    """One MobileNetV3 block (module doc); `block_{j}` numbered as torchvision's `block.{j}`."""
    kernel: int
    expanded: int
    features: int
    use_se: bool
    activation: str
    stride: int = 1
    dilation: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        cin, j, y = x.shape[-1], 0, x
        if self.expanded != cin:
            y = ConvBNAct(self.expanded, 1, activation=self.activation, name=f"block_{j}")(y, train)
            j += 1
        y = ConvBNAct(self.expanded, self.kernel, self.stride, self.dilation, groups=self.expanded,
                      activation=self.activation, name=f"block_{j}")(y, train)
        j += 1
        if self.use_se:
            y = SqueezeExcitation(make_divisible(self.expanded // 4), name=f"block_{j}")(y)
            j += 1
        y = ConvBNAct(self.features, 1, activation=None, name=f"block_{j}")(y, train)
        return x + y if self.stride == 1 and cin == self.features else y


class MobileNetV3Large(nn.Module):
    """`[B,H,W,3]` (already normalised) → tuple of the 17 `features_i` outputs.

    Index 4 is the C2 map (stride 8, 40 channels), 16 the last (stride 16 when
    `dilated`, else 32; 960 channels). `width` is torchvision's `width_mult`
    (channels `make_divisible(c · width)`; 1.0 = the reference).
    """
    width: float = 1.0
    dilated: bool = True

    @nn.compact
    def __call__(self, x, train: bool = False) -> tuple[jnp.ndarray, ...]:
        if self.width <= 0:
            raise ValueError(f"width must be positive, got {self.width}")
        adjust = lambda c: make_divisible(c * self.width)  # noqa: E731
        x = ConvBNAct(adjust(16), 3, 2, activation="hardswish", name="features_0")(x, train)
        outputs = [x]
        for i, (k, expanded, out, se, act, stride) in enumerate(BLOCKS, start=1):
            dilation = 2 if self.dilated and i >= _DILATED_FROM else 1
            x = InvertedResidual(k, adjust(expanded), adjust(out), se, act,
                                 1 if dilation > 1 else stride, dilation,
                                 name=f"features_{i}")(x, train)
            outputs.append(x)
        x = ConvBNAct(6 * adjust(BLOCKS[-1][2]), 1, activation="hardswish",
                      name=f"features_{len(BLOCKS) + 1}")(x, train)
        outputs.append(x)
        return tuple(outputs)
