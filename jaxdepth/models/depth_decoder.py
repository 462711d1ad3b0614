"""Monodepth2's depth decoder with named taps, additive offsets and channel dropout.

Blocks, in the order of the reference `nn.ModuleList` (`decoder.<idx>`), with their
tap names (docs/design.md §1; the tap is the conv output *before* the ELU):

| tap   | Flax module   | reference key         | block            | resolution |
|-------|---------------|-----------------------|------------------|------------|
| dec0  | upconv_4_0    | decoder.0.conv.conv   | upconv(4,0)      | H/32       |
| dec1  | upconv_4_1    | decoder.1.conv.conv   | upconv(4,1)      | H/16       |
| dec2  | upconv_3_0    | decoder.2.conv.conv   | upconv(3,0)      | H/16       |
| dec3  | upconv_3_1    | decoder.3.conv.conv   | upconv(3,1)      | H/8        |
| dec4  | upconv_2_0    | decoder.4.conv.conv   | upconv(2,0)      | H/8        |
| dec5  | upconv_2_1    | decoder.5.conv.conv   | upconv(2,1)      | H/4        |
| dec6  | upconv_1_0    | decoder.6.conv.conv   | upconv(1,0)      | H/4        |
| dec7  | upconv_1_1    | decoder.7.conv.conv   | upconv(1,1)      | H/2        |
| dec8  | upconv_0_0    | decoder.8.conv.conv   | upconv(0,0)      | H/2        |
| dec9  | upconv_0_1    | decoder.9.conv.conv   | upconv(0,1)      | H          |
| dec10 | dispconv_0    | decoder.10.conv       | dispconv(0)      | H (pre-sigmoid) |

`dispconv_s` is `decoder.(10+s).conv` for the plain decoder and `decoder.(10+2s).conv`
when `uncertconv_s` heads exist (then `uncertconv_s` is `decoder.(11+2s).conv`); the
NYU decoder calls them `depthconv_s`. Kernels are HWIO (PyTorch OIHW transposed).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdepth.models.contract import add_offset
from jaxdepth.models.resnet import scaled

DECODER_CHANNELS = (16, 32, 64, 128, 256)
TAPS = tuple(f"dec{i}" for i in range(11))


def channel_dropout(x, rng, rate: float):
    """PyTorch `dropout2d` on `[B,h,w,C]`: zero whole channels per image with
    probability `rate`, scale the kept ones by 1/(1 − rate)."""
    keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0], 1, 1, x.shape[-1]))
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def upsample2x(x):
    """Nearest-neighbour ×2 upsampling of `[B,h,w,C]` → `[B,2h,2w,C]`."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class ReflectConv3x3(nn.Module):
    """Reflection pad 1 + 3×3 conv with bias (Monodepth2's `Conv3x3`).

    Takes a list of inputs that the reference concatenates along channels and
    applies the matching slice of one kernel to each, summing the results: the
    same function and parameters as conv(concat(xs)), but the gradient w.r.t.
    one input no longer costs the transposed conv of the whole concatenation.
    """
    features: int

    @nn.compact
    def __call__(self, xs: Sequence[jnp.ndarray]):
        cin = sum(x.shape[-1] for x in xs)
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (3, 3, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        out, start = 0.0, 0
        for x in xs:
            c = x.shape[-1]
            xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
            out = out + jax.lax.conv_general_dilated(
                xp, kernel[:, :, start:start + c].astype(x.dtype), (1, 1), "VALID",
                dimension_numbers=("NHWC", "HWIO", "NHWC"))
            start += c
        return out + bias


class DepthDecoder(nn.Module):
    """Decoder of Monodepth2 (+ optional `uncertconv` heads and channel dropout).

    Args of `__call__`:
      features: the 5 encoder maps, finest first.
      offsets: optional mapping tap → array of that tap's shape, added to the
        tap's activation where it is produced (so ∂L/∂offset = ∂L/∂activation).
      dropout_rng: if given, channel dropout (PyTorch `dropout2d`) with rate
        `dropout_rate` (argument, else attribute) after the ELU of each of the
        10 conv blocks.
    Returns a dict with `heads` (tuple over scales 0..3 of the pre-activation
    head outputs `[B,H/2^s,W/2^s,1]`), `log_sigma_heads` (if `log_sigma`) and
    `features` (tap → activation).
    """
    width: float = 1.0
    log_sigma: bool = False
    dropout_rate: float = 0.2
    head_name: str = "dispconv"

    @nn.compact
    def __call__(self, features, offsets: Mapping[str, jnp.ndarray] | None = None,
                 dropout_rng: jax.Array | None = None, dropout_rate: float | None = None):
        offsets = dict(offsets or {})
        unknown = set(offsets) - set(TAPS)
        if unknown:
            raise ValueError(f"unknown tap(s) {sorted(unknown)}; expected names from {TAPS}")
        channels = [scaled(c, self.width) for c in DECODER_CHANNELS]
        taps, heads, sigmas = {}, [None] * 4, [None] * 4
        drop_index = 0
        rate = self.dropout_rate if dropout_rate is None else dropout_rate

        def block(name, tap, xs):
            nonlocal drop_index
            a = ReflectConv3x3(channels[int(name.split("_")[1])], name=name)(xs)
            a = add_offset(a, tap, offsets)
            taps[tap] = a
            y = nn.elu(a)
            if dropout_rng is not None and rate > 0:
                y = channel_dropout(y, jax.random.fold_in(dropout_rng, drop_index), rate)
            drop_index += 1
            return y

        x = features[-1]
        for i in range(4, -1, -1):
            x = block(f"upconv_{i}_0", f"dec{8 - 2 * i}", [x])
            xs = [upsample2x(x)] + ([features[i - 1]] if i > 0 else [])
            x = block(f"upconv_{i}_1", f"dec{9 - 2 * i}", xs)
            if i < 4:
                head = ReflectConv3x3(1, name=f"{self.head_name}_{i}")([x])
                if i == 0:
                    head = add_offset(head, "dec10", offsets)
                    taps["dec10"] = head
                heads[i] = head
                if self.log_sigma:
                    sigmas[i] = ReflectConv3x3(1, name=f"uncertconv_{i}")([x])
        out = {"heads": tuple(heads), "features": taps}
        if self.log_sigma:
            out["log_sigma_heads"] = tuple(sigmas)
        return out
