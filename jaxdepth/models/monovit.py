"""MonoViT (Zhao et al., 3DV 2022) in Flax: an MPViT encoder and the HR-Depth nested decoder
with channel-attention adapters, with the jaxdepth apply contract of `DepthNet`.

    model = MonoViT()                                  # the released size, "small"
    variables = model.init_variables(0, 192, 640)      # or jaxdepth.convert.monovit
    out = model.apply(variables, images)               # images [B,H,W,3] in [0,1], H, W % 32 == 0

Encoder (`params/encoder`, `batch_stats/encoder`; module names follow the PyTorch state
dict, `.` → `/`, list index `i` → `_i`): MPViT with MonoViT's two changes — the stem's
second conv has stride 1 and every stage (the first too) downsamples — so the five
outputs sit at strides 2, 4, 8, 16, 32 with D0, D1, D2, D3, D3 channels (small: 64, 128,
216, 288, 288). The images go in as they are, in [0, 1] (MonoViT does not normalise).

- `stem_0`, `stem_1`: conv 3×3 (no bias) → BN → Hardswish; stride 2, then 1.
- `patch_embed_stages_i/patch_embeds_j/patch_conv`: depthwise 3×3 `dwconv` → 1×1 `pwconv`
  → `bn` → Hardswish, the P convs of a stage in sequence (only the first strided); the
  output after conv j is the input of path j.
- `mhca_stages_i`: `InvRes` (1×1 conv-BN-Hardswish → depthwise 3×3 → BN → Hardswish → 1×1
  conv-BN, + identity) on path 0's input and one `mhca_blks_j` transformer encoder per
  path; concat [InvRes, enc_0 … enc_{P−1}] → `aggregate` (1×1 conv-BN-Hardswish).
- `mhca_blks_j`: L blocks `MHCA_layers_l` sharing one `cpe` (depthwise 3×3 with bias +
  identity, at the start of every block) and one `crpe`. A block is
  `x = cpe(x); x += FactorAtt(LN(x)); x += MLP(LN(x))` (LayerNorm eps 1e-6; MLP
  Linear → exact GELU → Linear). Factorised attention (`factoratt_crpe`): `qkv` Linear with
  bias, per head softmax of k over the tokens, `factor = q·(softmax(k)ᵀv)`; CRPE =
  q ⊙ depthwise conv of v (windows 3, 5, 7 for 2, 3, 3 of the 8 heads, channels
  head-major, `crpe/conv_list_0..2`); out = `proj`(Ch^−½·factor + CRPE).

Decoder (`params/decoder`): HR-Depth's nested decoder as MonoViT builds it.

- Adapters `f1`…`f4` (encoder widths → 64, 128, 256, 512): channel attention `ca`
  (mean → `fc_0` (c//16, no bias) → ReLU → `fc_2` → sigmoid → scale) → `conv_se` (3×3, zero
  pad, bias) → ReLU. The stem feature enters unchanged as X_00.
- Nodes X_rc in the order 01, 11, 21, 31, 02, 12, 22, 03, 13, 04. "High" input:
  `X_{r+1}{c−1}_Conv_0`(X_{r+1,c−1}) (a ConvBlock halving the channels); "lows":
  X_r0 … X_{r,c−1}. Attention nodes 31, 22, 13, 04 (`X_rc_attention`, fSE): concat
  [up(high), lows] → SE (`fc_0`, `fc_2`, c//16) → 1×1 `conv_se` with bias → ReLU. Other
  nodes: up(high) ++ lows → [1×1 `X_rc_downsample` (no bias) to 2·dec[r+1] when c > 1] →
  ConvBlock `X_{r+1}{c−1}_Conv_1` (→ dec[r+1]).
- Heads: X_04 → `X_04_Conv_0` → up → `X_04_Conv_1` → `dispconv_0` (scale 0);
  `dispconv_1`(X_04), `dispconv_2`(X_13), `dispconv_3`(X_22): reflection-padded 3×3 convs;
  sigmoid + `disp_to_depth` (or metric depth with `metric=True`). With `log_sigma=True`
  an `uncertconv_s` head beside each `dispconv_s` (same input) gives log σ.
- ConvBlock = reflection pad 1 + 3×3 conv with bias → ELU; upsampling nearest ×2.
- `X_00_Conv_0` … `X_03_Conv_0` are built but never used, as in the released model
  (`unused_convs=True` keeps them as parameters so the released checkpoint converts).

Taps (`features`, and the names `offsets` takes; `offsets[name]` is added to that
activation where it is produced, so ∂L/∂offset at zero is ∂L/∂activation):

- `enc0`…`enc4`: the five encoder outputs as the decoder receives them (the offset is
  added after the encoder, so the encoder's later stages see the unperturbed feature);
- every used ConvBlock's conv output *before* the ELU, named after its module
  (`X_10_Conv_0`, `X_10_Conv_1`, …, `X_13_Conv_0`, `X_04_Conv_0`, `X_04_Conv_1`; see `TAPS`);
- `dispconv_0`: the scale-0 head before its sigmoid.

`MonoViT.default_tap` is `X_13_Conv_0` (64 → 32 channels at H/4), the closest analogue of
Monodepth2's `dec6`. Channel dropout (PyTorch `dropout2d`, when `dropout_rng` is passed)
acts on the outputs of the six non-attention nodes 01, 11, 21, 02, 12, 03, as in
jhornauer/mde_ood's MonoViT decoder.

Parameter counts (`size="small"`): encoder 22,603,400; decoder 5,266,708 with the unused
convs; total 27,870,108 (27,837,772 with `unused_convs=False`).

Sizes (`SIZES`): `small` (MonoViT's), `xsmall` and `mpvit_tiny` (MPViT's other
published sizes), and `tiny`, a reduced configuration of this library for tests and CPU
training (the same topology: paths 2, 3, 3, 3; one block per stage; dims 16, 32, 48, 64;
MLP ratio 2; decoder at a quarter width). `width` multiplies the encoder dims (rounded to
multiples of the 8 heads) and the decoder widths (rounded to even numbers).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdepth.models.depth_decoder import ReflectConv3x3, channel_dropout, upsample2x
from jaxdepth.models.depthnet import disp_to_depth
from jaxdepth.models.contract import add_offset, check_images, check_offsets, random_variables
from jaxdepth.models.swin import Mlp


class MPViTSize(NamedTuple):
    paths: tuple[int, ...]
    layers: tuple[int, ...]
    dims: tuple[int, ...]
    mlp_ratio: int
    decoder_scale: float = 1.0


#: size name → MPViT configuration (and the decoder's width factor)
SIZES = {
    "small": MPViTSize((2, 3, 3, 3), (1, 3, 6, 3), (64, 128, 216, 288), 4),
    "xsmall": MPViTSize((2, 3, 3, 3), (1, 2, 4, 1), (64, 128, 192, 256), 4),
    "mpvit_tiny": MPViTSize((2, 3, 3, 3), (1, 2, 4, 1), (64, 96, 176, 216), 2),
    "tiny": MPViTSize((2, 3, 3, 3), (1, 1, 1, 1), (16, 32, 48, 64), 2, 0.25),
}
NUM_HEADS = 8
CRPE_WINDOWS = ((3, 2), (5, 3), (7, 3))  # (window, heads)
DECODER_CHANNELS = (16, 32, 64, 128, 256)
NODES = ("01", "11", "21", "31", "02", "12", "22", "03", "13", "04")
ATTENTION_NODES = ("31", "22", "13", "04")
UNUSED_CONVS = ("X_00_Conv_0", "X_01_Conv_0", "X_02_Conv_0", "X_03_Conv_0")
ENCODER_TAPS = tuple(f"enc{i}" for i in range(5))


def _decoder_taps() -> tuple[str, ...]:
    taps = []
    for node in NODES:
        r, c = int(node[0]), int(node[1])
        taps.append(f"X_{r + 1}{c - 1}_Conv_0")
        if node not in ATTENTION_NODES:
            taps.append(f"X_{r + 1}{c - 1}_Conv_1")
    return tuple(taps) + ("X_04_Conv_0", "X_04_Conv_1", "dispconv_0")


DECODER_TAPS = _decoder_taps()
#: every tap name of `MonoViT`, encoder first, then the decoder's in the order they are computed
TAPS = ENCODER_TAPS + DECODER_TAPS


def encoder_dims(size: str = "small", width: float = 1.0) -> tuple[int, ...]:
    """The stage dims D0..D3 of an MPViT size at a width multiplier (multiples of 8)."""
    return tuple(max(NUM_HEADS, NUM_HEADS * round(d * width / NUM_HEADS))
                 for d in _size(size).dims)


def decoder_channels(size: str = "small", width: float = 1.0) -> tuple[int, ...]:
    """HR-Depth's decoder widths (16, 32, 64, 128, 256 at full size), kept even."""
    s = _size(size).decoder_scale * width
    return tuple(max(2, 2 * round(c * s / 2)) for c in DECODER_CHANNELS)


def _size(size: str) -> MPViTSize:
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    return SIZES[size]


def _hardswish(x):
    return x * jnp.clip(x + 3.0, 0.0, 6.0) / 6.0  # PyTorch's Hardswish


def _bn(train: bool, name: str):
    # PyTorch momentum 0.1 is Flax momentum 0.9.
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


def _conv(features, kernel, stride=1, groups=1, bias=False, name=None):
    pad = (kernel - 1) // 2  # explicit symmetric padding, as PyTorch's `padding=k//2`
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), feature_group_count=groups,
                   use_bias=bias, name=name)


def _layer_norm(name):
    return nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, name=name)


# --------------------------------------------------------------------------- encoder

class ConvBN(nn.Module):
    """`Conv2d_BN`: conv (no bias) → BN → Hardswish (if `act`)."""
    features: int
    kernel: int = 1
    stride: int = 1
    act: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _bn(train, "bn")(_conv(self.features, self.kernel, self.stride, name="conv")(x))
        return _hardswish(x) if self.act else x


class DWConvBN(nn.Module):
    """`DWConv2d_BN`: depthwise 3×3 → pointwise 1×1 (both without bias) → BN → Hardswish."""
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        x = _conv(c, 3, self.stride, groups=c, name="dwconv")(x)
        x = _conv(c, 1, name="pwconv")(x)
        return _hardswish(_bn(train, "bn")(x))


class PatchEmbed(nn.Module):
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        return DWConvBN(self.stride, name="patch_conv")(x, train)


class ResBlock(nn.Module):
    """The conv-local path (`InvRes`)."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        y = ConvBN(c, act=True, name="conv1")(x, train)
        y = _conv(c, 3, groups=c, name="dwconv")(y)
        y = _hardswish(_bn(train, "norm")(y))
        return x + ConvBN(c, name="conv2")(y, train)


class ConvPosEnc(nn.Module):
    """Depthwise 3×3 (with bias) + identity, on `[B,H,W,C]`."""

    @nn.compact
    def __call__(self, x):
        return x + _conv(x.shape[-1], 3, groups=x.shape[-1], bias=True, name="proj")(x)


class ConvRelPosEnc(nn.Module):
    """q ⊙ depthwise-conv(v), windows per head group; q, v `[B,N,h,Ch]`."""

    @nn.compact
    def __call__(self, q, v, height: int, width: int):
        b, n, h, ch = v.shape
        img = v.reshape(b, height, width, h * ch)  # head-major channels
        outs, start = [], 0
        for k, (window, heads) in enumerate(CRPE_WINDOWS):
            c = heads * ch
            part = img[..., start:start + c]
            outs.append(_conv(c, window, groups=c, bias=True, name=f"conv_list_{k}")(part))
            start += c
        conv_v = jnp.concatenate(outs, -1).reshape(b, n, h, ch)
        return q * conv_v


class FactorAtt(nn.Module):
    """Factorised attention with convolutional relative position encoding."""
    num_heads: int = NUM_HEADS

    @nn.compact
    def __call__(self, x, crpe, height: int, width: int):
        b, n, c = x.shape
        h = self.num_heads
        ch = c // h
        qkv = nn.Dense(3 * c, name="qkv")(x).reshape(b, n, 3, h, ch)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [B,N,h,Ch]
        k = jax.nn.softmax(k, axis=1)  # over the tokens
        kv = jnp.einsum("bnhk,bnhv->bhkv", k, v)
        factor = jnp.einsum("bnhk,bhkv->bnhv", q, kv)
        out = ch ** -0.5 * factor + crpe(q, v, height, width)
        return nn.Dense(c, name="proj")(out.reshape(b, n, c))


class MHCABlock(nn.Module):
    mlp_ratio: int
    num_heads: int = NUM_HEADS

    @nn.compact
    def __call__(self, x, cpe, crpe):
        x = cpe(x)
        b, hh, ww, c = x.shape
        t = x.reshape(b, hh * ww, c)
        t = t + FactorAtt(self.num_heads, name="factoratt_crpe")(
            _layer_norm("norm1")(t), crpe, hh, ww)
        t = t + Mlp(c * self.mlp_ratio, name="mlp")(_layer_norm("norm2")(t))
        return t.reshape(b, hh, ww, c)


class MHCAEncoder(nn.Module):
    """One path's transformer: `layers` blocks sharing `cpe` and `crpe`."""
    layers: int
    mlp_ratio: int
    num_heads: int = NUM_HEADS

    @nn.compact
    def __call__(self, x):
        cpe, crpe = ConvPosEnc(name="cpe"), ConvRelPosEnc(name="crpe")
        for i in range(self.layers):
            x = MHCABlock(self.mlp_ratio, self.num_heads, name=f"MHCA_layers_{i}")(x, cpe, crpe)
        return x


class MHCAStage(nn.Module):
    out_dim: int
    layers: int
    mlp_ratio: int
    num_heads: int = NUM_HEADS

    @nn.compact
    def __call__(self, inputs: Sequence[jnp.ndarray], train: bool = False):
        outs = [ResBlock(name="InvRes")(inputs[0], train)]
        for j, x in enumerate(inputs):
            outs.append(MHCAEncoder(self.layers, self.mlp_ratio, self.num_heads,
                                    name=f"mhca_blks_{j}")(x))
        return ConvBN(self.out_dim, act=True, name="aggregate")(jnp.concatenate(outs, -1), train)


class PatchEmbedStage(nn.Module):
    """The P patch-embedding convs of a stage, in sequence; returns the P path inputs."""
    paths: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        inputs = []
        for j in range(self.paths):
            x = PatchEmbed(2 if j == 0 else 1, name=f"patch_embeds_{j}")(x, train)
            inputs.append(x)
        return inputs


class MPViTEncoder(nn.Module):
    """MPViT with MonoViT's changes: images `[B,H,W,3]` → 5 maps at strides 2…32."""
    size: str = "small"
    width: float = 1.0

    @nn.compact
    def __call__(self, images, train: bool = False) -> tuple[jnp.ndarray, ...]:
        cfg = _size(self.size)
        dims = encoder_dims(self.size, self.width)
        x = ConvBN(dims[0] // 2, 3, 2, act=True, name="stem_0")(images, train)
        x = ConvBN(dims[0], 3, 1, act=True, name="stem_1")(x, train)
        outs = [x]
        for i in range(4):
            inputs = PatchEmbedStage(cfg.paths[i], name=f"patch_embed_stages_{i}")(x, train)
            x = MHCAStage(dims[min(i + 1, 3)], cfg.layers[i], cfg.mlp_ratio,
                          name=f"mhca_stages_{i}")(inputs, train)
            outs.append(x)
        return tuple(outs)


# --------------------------------------------------------------------------- decoder

class ChannelAttention(nn.Module):
    """mean over pixels → `fc_0` (c//16, no bias) → ReLU → `fc_2` → sigmoid → scale x."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        y = nn.relu(nn.Dense(max(1, c // 16), use_bias=False, name="fc_0")(x.mean((1, 2))))
        y = jax.nn.sigmoid(nn.Dense(c, use_bias=False, name="fc_2")(y))
        return x * y[:, None, None, :]


class Adapter(nn.Module):
    """`f1`…`f4`: channel attention → 3×3 conv (zero pad, bias) → ReLU."""
    features: int

    @nn.compact
    def __call__(self, x):
        x = ChannelAttention(name="ca")(x)
        return nn.relu(_conv(self.features, 3, bias=True, name="conv_se")(x))


class FSE(nn.Module):
    """HR-Depth's fSE node: concat [up(high), lows] → SE → 1×1 conv (bias) → ReLU."""
    features: int

    @nn.compact
    def __call__(self, high, lows):
        x = jnp.concatenate([upsample2x(high)] + list(lows), -1)
        c = x.shape[-1]  # squeeze-excitation, `fc_0` / `fc_2` directly in this module
        y = nn.relu(nn.Dense(max(1, c // 16), use_bias=False, name="fc_0")(x.mean((1, 2))))
        x = x * jax.nn.sigmoid(nn.Dense(c, use_bias=False, name="fc_2")(y))[:, None, None, :]
        return nn.relu(_conv(self.features, 1, bias=True, name="conv_se")(x))


class _UnusedConv3x3(nn.Module):
    """The parameters of a ConvBlock the released decoder builds but never calls."""
    in_features: int
    features: int

    @nn.compact
    def __call__(self):
        self.param("kernel", nn.initializers.lecun_normal(), (3, 3, self.in_features, self.features))
        self.param("bias", nn.initializers.zeros, (self.features,))


class HRDepthDecoder(nn.Module):
    """MonoViT's HR-Depth decoder (module doc). `__call__(features, offsets, dropout_rng,
    dropout_rate)` → dict `heads` (pre-activation, scales 0..3), `log_sigma_heads` (with
    `log_sigma`), `features` (decoder tap → activation)."""
    channels: tuple = DECODER_CHANNELS   # dec[0..4]; the adapters give 2·dec[1..4]
    log_sigma: bool = False
    dropout_rate: float = 0.2
    unused_convs: bool = True

    @nn.compact
    def __call__(self, features, offsets: Mapping[str, jnp.ndarray] | None = None,
                 dropout_rng: jax.Array | None = None, dropout_rate: float | None = None):
        offsets = dict(offsets or {})
        dec = tuple(self.channels)
        rate = self.dropout_rate if dropout_rate is None else dropout_rate
        taps = {}

        def block(name, xs, out):
            a = add_offset(ReflectConv3x3(out, name=name)(xs), name, offsets)
            taps[name] = a
            return nn.elu(a)

        X = {(0, 0): features[0]}
        for i in (4, 3, 2, 1):
            X[(i, 0)] = Adapter(2 * dec[i], name=f"f{i}")(features[i])
        for k, node in enumerate(NODES):
            r, c = int(node[0]), int(node[1])
            below = X[(r + 1, c - 1)]
            high = block(f"X_{r + 1}{c - 1}_Conv_0", [below], below.shape[-1] // 2)
            lows = [X[(r, j)] for j in range(c)]
            if node in ATTENTION_NODES:
                X[(r, c)] = FSE(high.shape[-1], name=f"X_{node}_attention")(high, lows)
                continue
            xs = [upsample2x(high)] + lows
            if c > 1:
                xs = [_conv(2 * dec[r + 1], 1, name=f"X_{node}_downsample")(jnp.concatenate(xs, -1))]
            y = block(f"X_{r + 1}{c - 1}_Conv_1", xs, dec[r + 1])
            if dropout_rng is not None and rate > 0:
                y = channel_dropout(y, jax.random.fold_in(dropout_rng, k), rate)
            X[(r, c)] = y
        if self.unused_convs:
            stem = features[0].shape[-1]
            _UnusedConv3x3(stem, stem // 2, name="X_00_Conv_0")()
            for j in (1, 2, 3):
                _UnusedConv3x3(dec[1], dec[1] // 2, name=f"X_0{j}_Conv_0")()
        x04 = X[(0, 4)]
        x = block("X_04_Conv_0", [x04], x04.shape[-1] // 2)
        x = block("X_04_Conv_1", [upsample2x(x)], dec[0])
        inputs = (x, x04, X[(1, 3)], X[(2, 2)])
        heads, sigmas = [], []
        for s, inp in enumerate(inputs):
            head = ReflectConv3x3(1, name=f"dispconv_{s}")([inp])
            if s == 0:
                head = add_offset(head, "dispconv_0", offsets)
                taps["dispconv_0"] = head
            heads.append(head)
            if self.log_sigma:
                sigmas.append(ReflectConv3x3(1, name=f"uncertconv_{s}")([inp]))
        out = {"heads": tuple(heads), "features": taps}
        if self.log_sigma:
            out["log_sigma_heads"] = tuple(sigmas)
        return out


# --------------------------------------------------------------------------- the model

class MonoViT(nn.Module):
    """MonoViT depth network with the `DepthNet` apply contract (module doc).

        out = MonoViT(size="tiny").apply(variables, images, offsets=None, dropout_rng=None)

    `out`: `disp`, `depth` `[B,H,W,1]` (Monodepth2's `disp_to_depth`, `min_depth` /
    `max_depth`; metric models: depth = head, disp = 1/depth), `scales` (s = 0..3: dicts of
    `disp`, `depth`, `raw` (the head before its activation) and `log_sigma`, each
    `[B,H/2^s,W/2^s,1]`), `log_sigma` (with `log_sigma=True`), `features` (every tap in
    `TAPS` → activation).

    Attributes:
      size: `small` (MonoViT as released), `xsmall`, `mpvit_tiny`, or `tiny` (a reduced
        configuration for tests and CPU training; see `SIZES`).
      width: multiplier of the encoder dims and decoder widths (1.0 = the size as listed).
      log_sigma: add an `uncertconv_s` log σ head per scale.
      dropout_rate: channel-dropout rate used when `dropout_rng` is passed (the outputs of
        the six non-attention decoder nodes).
      metric: the head outputs metric depth, no sigmoid.
      min_depth, max_depth: the range of `disp_to_depth`.
      sigma_activation: `"exp"` (log σ head) or `"sigmoid"` (σ = sigmoid(head)), as DepthNet.
      unused_convs: keep the four ConvBlocks `X_00_Conv_0`…`X_03_Conv_0` the released
        decoder builds and never uses (needed to convert the released checkpoint; small:
        27,870,108 parameters with them, 27,837,772 without; outputs are the same).
    """
    size: str = "small"
    width: float = 1.0
    log_sigma: bool = False
    dropout_rate: float = 0.2
    metric: bool = False
    min_depth: float = 0.1
    max_depth: float = 100.0
    sigma_activation: str = "exp"
    unused_convs: bool = True

    #: the tap closest to Monodepth2's `dec6` (X_13's high branch: 64 → 32 channels at H/4)
    default_tap = "X_13_Conv_0"
    #: every name `features` holds and `offsets` takes
    tap_names = TAPS

    def setup(self):
        self.encoder = MPViTEncoder(self.size, self.width)
        self.decoder = HRDepthDecoder(decoder_channels(self.size, self.width), self.log_sigma,
                                      self.dropout_rate, self.unused_convs)

    def __call__(self, images, offsets: Mapping[str, jax.Array] | None = None, *,
                 dropout_rng: jax.Array | None = None, dropout_rate: float | None = None,
                 train: bool = False):
        """`offsets`: tap → array added to that activation; `dropout_rng`: turns on
        channel dropout at `dropout_rate` (default: the attribute); `train`: BatchNorm
        batch statistics (call with `mutable=["batch_stats"]`)."""
        check_images(images)
        if self.sigma_activation not in ("exp", "sigmoid"):
            raise ValueError(f"sigma_activation must be 'exp' or 'sigmoid', got "
                             f"{self.sigma_activation!r}")
        offsets = check_offsets(offsets, TAPS)
        feats = list(self.encoder(images, train=train))
        enc = {}
        for k, name in enumerate(ENCODER_TAPS):
            feats[k] = add_offset(feats[k], name, offsets)
            enc[name] = feats[k]
        dec = self.decoder(feats, {k: v for k, v in offsets.items() if k not in enc},
                           dropout_rng, dropout_rate)
        scales = []
        for s, raw in enumerate(dec["heads"]):
            if self.metric:
                depth, disp = raw, 1.0 / jnp.maximum(raw, 1e-3)
            else:
                disp, depth = disp_to_depth(jax.nn.sigmoid(raw), self.min_depth, self.max_depth)
            entry = {"disp": disp, "depth": depth, "raw": raw}
            if self.log_sigma:
                head = dec["log_sigma_heads"][s]
                entry["log_sigma"] = (jax.nn.log_sigmoid(head)
                                      if self.sigma_activation == "sigmoid" else head)
            scales.append(entry)
        out = {"disp": scales[0]["disp"], "depth": scales[0]["depth"], "scales": tuple(scales),
               "features": {**enc, **dec["features"]}}
        if self.log_sigma:
            out["log_sigma"] = scales[0]["log_sigma"]
        return out

    def init_variables(self, rng: jax.Array, height: int = 192, width: int = 640):
        """PyTorch-style random variables (see `init.torch_like_init`) for an input of the
        given size; `rng` is a JAX key or an int seed."""
        return random_variables(self, rng, height, width)
