"""Swin Transformer encoder (Liu et al., ICCV 2021) in Flax, as NeWCRFs uses it.

    swin = SwinTransformer("large", window=7)
    feats = swin.apply(variables, x)      # x [B,H,W,C_in] → 4 maps at strides 4, 8, 16, 32

This is the dense-prediction variant of the Swin backbone (the one the NeWCRFs code,
aliyun/NeWCRFs, takes from the Swin segmentation code), written from its description:

- `patch_embed`: right/bottom zero padding of H and W to multiples of 4, a 4×4 stride-4
  conv `proj` (with bias) to C channels, LayerNorm `norm` (patch_norm); no absolute
  position embedding.
- Stage i (`layers_i`, dim C·2^i) runs `depths[i]` blocks (`blocks_j`). A block is
  `x = x + DropPath(W-MSA(LN(x)))`, `x = x + DropPath(MLP(LN(x)))` (MLP C → 4C → C,
  exact GELU). W-MSA pads the normed tokens right/bottom with zeros to multiples of the
  window w (padded tokens are not masked in unshifted windows), splits them into w×w
  windows and runs multi-head attention inside each: a fused `qkv` Linear with bias,
  q·head_dim^−½, a relative-position bias from a `relative_position_bias_table` of
  (2w−1)²×heads entries, `proj` Linear. Odd blocks roll the padded map by −⌊w/2⌋ first
  (and back after); their windows get the −100 mask of `shifted_window_mask`, built on
  the padded size.
- Between stages `downsample` (PatchMerging): pad odd H/W, concatenate the 2×2
  neighbours [x0, x1, x2, x3] = pixels (0,0), (1,0), (0,1), (1,1) (row, column
  offsets), LayerNorm(4C) `norm`, Linear 4C → 2C without bias `reduction`.
- Outputs: stage i's output *before* its PatchMerging, through its own LayerNorm
  `norm{i}`; strides 4, 8, 16, 32 (sizes ⌈H/4⌉, then halved with ceil).
- Stochastic depth: block k of the n blocks drops its residual branches per sample with
  probability `drop_path_rate·k/(n−1)` (linearly spaced from 0), only when a `dropout_rng`
  is passed (never at evaluation).

LayerNorm eps is PyTorch's 1e-5 (Flax's default is 1e-6). Parameter names follow the
PyTorch state dict (`.` → `/`, list index i → `_i`). Parameter counts at window 7 (3
input channels): tiny 27,520,698, base 86,745,016, large 194,998,164.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class SwinSize(NamedTuple):
    embed_dim: int
    depths: tuple[int, ...]
    heads: tuple[int, ...]


#: size name → Swin configuration; `micro` is a reduced size for tests and CPU training
SIZES = {
    "tiny": SwinSize(96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "base": SwinSize(128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "large": SwinSize(192, (2, 2, 18, 2), (6, 12, 24, 48)),
    "micro": SwinSize(16, (1, 1, 2, 1), (1, 2, 2, 4)),
}
#: the value added to the attention logits of token pairs from different regions
MASK_VALUE = -100.0


def swin_size(size: str) -> SwinSize:
    if size not in SIZES:
        raise ValueError(f"Swin size must be one of {sorted(SIZES)}, got {size!r}")
    return SIZES[size]


def stage_channels(size: str) -> tuple[int, ...]:
    """The channels of the four stage outputs, C·(1, 2, 4, 8)."""
    c = swin_size(size).embed_dim
    return tuple(c * 2 ** i for i in range(4))


def layer_norm(name: str):
    """PyTorch's `nn.LayerNorm` (eps 1e-5, two-pass variance)."""
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)


# --------------------------------------------------------------------------- windows

def pad_to_multiple(x, multiple: int):
    """Zero-pad `[B,H,W,C]` at the bottom and right to multiples of `multiple`."""
    h, w = x.shape[1], x.shape[2]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        x = jnp.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)))
    return x


def window_partition(x, window: int):
    """`[B,H,W,C]` (H, W multiples of `window`) → `[B·nW, window², C]`, windows in
    row-major order per image, tokens row-major inside a window (NumPy or JAX arrays)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows, window: int, height: int, width: int):
    """Inverse of `window_partition`: `[B·nW, window², C]` → `[B,height,width,C]`."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def relative_position_index(window: int) -> np.ndarray:
    """`[w², w²]` index into the (2w−1)² bias table: for tokens p=(i,j), q=(k,l) of a
    window, (i−k+w−1)·(2w−1) + (j−l+w−1)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    coords = coords.reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return rel[0] * (2 * window - 1) + rel[1]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """`[nW, w², w²]` additive mask (0 or −100) of the shifted windows of a padded
    `height`×`width` map: the map is cut into 3×3 regions by the slices
    [0, −w), [−w, −shift), [−shift, end) of each axis, and two tokens of a window attend
    to each other only if they come from the same region (after the roll by −shift)."""
    region = np.zeros((height, width), np.int64)
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in slices:
        for ws in slices:
            region[hs, ws] = label
            label += 1
    windows = window_partition(region[None, :, :, None], window)[..., 0]  # [nW, w²]
    different = windows[:, None, :] != windows[:, :, None]
    return np.where(different, MASK_VALUE, 0.0).astype(np.float32)


def windowed_attention(q, k, v, bias, mask=None):
    """Softmax attention inside windows. q, k `[B·nW, N, heads, d]` (q already scaled),
    v `[B·nW, N, heads, dv]`, bias `[heads, N, N]`, mask `[nW, N, N]` or None
    → `[B·nW, N, heads·dv]` (head-major channels)."""
    logits = jnp.einsum("bnhd,bmhd->bhnm", q, k) + bias[None]
    if mask is not None:
        nw = mask.shape[0]
        logits = logits.reshape(-1, nw, *logits.shape[1:]) + mask[None, :, None]
        logits = logits.reshape(-1, *logits.shape[2:])
    attn = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("bhnm,bmhd->bnhd", attn, v)
    return out.reshape(out.shape[0], out.shape[1], -1)


def drop_path(x, rng, rate: float):
    """Stochastic depth: zero a sample's residual branch with probability `rate`,
    scale the kept ones by 1/(1 − rate); identity without `rng` or at rate 0."""
    if rng is None or rate <= 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / (1.0 - rate), 0.0)


# --------------------------------------------------------------------------- blocks

class Mlp(nn.Module):
    """Linear `fc1` (C → hidden) → exact GELU → Linear `fc2` (→ C)."""
    hidden: int

    @nn.compact
    def __call__(self, x):
        y = jax.nn.gelu(nn.Dense(self.hidden, name="fc1")(x), approximate=False)
        return nn.Dense(x.shape[-1], name="fc2")(y)


class SwinBlock(nn.Module):
    """One Swin block on `[B,H,W,C]`; `shift` > 0 rolls the windows (module doc)."""
    heads: int
    window: int
    shift: int = 0
    mlp_ratio: int = 4
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, x, mask=None, rng=None):
        _, h, w, c = x.shape
        y = pad_to_multiple(layer_norm("norm1")(x), self.window)
        hp, wp = y.shape[1], y.shape[2]
        if self.shift:
            y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
        windows = window_partition(y, self.window)
        windows = WindowAttention(self.heads, self.window, name="attn")(
            windows, mask if self.shift else None)
        y = window_reverse(windows, self.window, hp, wp)
        if self.shift:
            y = jnp.roll(y, (self.shift, self.shift), axis=(1, 2))
        y = y[:, :h, :w]
        rng1, rng2 = (None, None) if rng is None else jax.random.split(rng)
        x = x + drop_path(y, rng1, self.drop_path_rate)
        y = Mlp(self.mlp_ratio * c, name="mlp")(layer_norm("norm2")(x))
        return x + drop_path(y, rng2, self.drop_path_rate)


class WindowAttention(nn.Module):
    """W-MSA of windows `[B·nW, N, C]`: fused `qkv` Linear, relative-position bias
    (`relative_position_bias_table`), optional shift mask `[nW, N, N]`, `proj` Linear."""
    heads: int
    window: int

    @nn.compact
    def __call__(self, x, mask=None):
        bn, n, c = x.shape
        hd = c // self.heads
        table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                           ((2 * self.window - 1) ** 2, self.heads))
        bias = gather_bias(table, self.window)
        qkv = nn.Dense(3 * c, name="qkv")(x).reshape(bn, n, 3, self.heads, hd)
        q, k, v = qkv[:, :, 0] * hd ** -0.5, qkv[:, :, 1], qkv[:, :, 2]
        out = windowed_attention(q, k, v, bias, None if mask is None else jnp.asarray(mask))
        return nn.Dense(c, name="proj")(out)


def gather_bias(table, window: int):
    """The bias `[heads, w², w²]` of a `[(2w−1)², heads]` relative-position table."""
    n = window * window
    bias = table[relative_position_index(window).reshape(-1)].reshape(n, n, table.shape[-1])
    return bias.transpose(2, 0, 1)


class PatchMerging(nn.Module):
    """`[B,H,W,C]` → `[B,⌈H/2⌉,⌈W/2⌉,2C]`: pad odd sizes, concat the 2×2 neighbours
    [(0,0), (1,0), (0,1), (1,1)], LayerNorm(4C), Linear 4C → 2C (no bias)."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = pad_to_multiple(x, 2)
        x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2],
                             x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
        x = layer_norm("norm")(x)
        return nn.Dense(2 * c, use_bias=False, name="reduction")(x)


class PatchEmbed(nn.Module):
    """Pad H, W to multiples of 4, 4×4 stride-4 conv `proj` (bias), LayerNorm `norm`."""
    embed_dim: int
    patch_size: int = 4

    @nn.compact
    def __call__(self, x):
        x = pad_to_multiple(x, self.patch_size)
        p = self.patch_size
        x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", name="proj")(x)
        return layer_norm("norm")(x)


class SwinStage(nn.Module):
    """`depth` blocks (even ones unshifted, odd ones shifted by ⌊w/2⌋; the shift mask is
    built once on the stage's padded size), then PatchMerging `downsample` if
    `downsample`. Returns (output before merging, merged map or None)."""
    depth: int
    heads: int
    window: int
    drop_path_rates: tuple[float, ...]
    mlp_ratio: int = 4
    downsample: bool = True

    @nn.compact
    def __call__(self, x, rng=None):
        w = self.window
        hp, wp = -(-x.shape[1] // w) * w, -(-x.shape[2] // w) * w
        shift = w // 2
        mask = shifted_window_mask(hp, wp, w, shift) if self.depth > 1 else None
        for j in range(self.depth):
            block_rng = None if rng is None else jax.random.fold_in(rng, j)
            x = SwinBlock(self.heads, w, shift if j % 2 else 0, self.mlp_ratio,
                          self.drop_path_rates[j], name=f"blocks_{j}")(x, mask, block_rng)
        merged = PatchMerging(name="downsample")(x) if self.downsample else None
        return x, merged


class SwinTransformer(nn.Module):
    """Swin encoder: `[B,H,W,in_channels]` → tuple of the four normed stage outputs
    `[B,⌈H/4⌉,⌈W/4⌉,C]` … `[B,⌈H/32⌉,⌈W/32⌉,8C]` (sizes halved with ceil).

    Attributes:
      size: `tiny`, `base`, `large` (Swin's) or `micro` (reduced; see `SIZES`).
      window: attention window w (NeWCRFs: 7; 12 also supported).
      drop_path_rate: the largest stochastic-depth rate (last block); 0.3 in NeWCRFs.
      mlp_ratio: MLP hidden width / C.
    """
    size: str = "large"
    window: int = 7
    drop_path_rate: float = 0.3
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x, dropout_rng=None, drop_path_rate: float | None = None):
        """`dropout_rng` turns on stochastic depth at `drop_path_rate` (default: the
        attribute)."""
        cfg = swin_size(self.size)
        rate = self.drop_path_rate if drop_path_rate is None else drop_path_rate
        rates = [float(r) for r in np.linspace(0.0, rate, sum(cfg.depths))]
        x = PatchEmbed(cfg.embed_dim, name="patch_embed")(x)
        outs, start = [], 0
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.heads)):
            stage_rng = None if dropout_rng is None else jax.random.fold_in(dropout_rng, i)
            out, x = SwinStage(depth, heads, self.window, tuple(rates[start:start + depth]),
                               self.mlp_ratio, downsample=i < 3, name=f"layers_{i}")(x, stage_rng)
            start += depth
            outs.append(layer_norm(f"norm{i}")(out))
        return tuple(outs)
