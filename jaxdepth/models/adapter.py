"""ADU-Depth's self-attention adaptation layers and restoring function (Wu et al.,
"ADU-Depth: Attention-based Distillation with Uncertainty Modeling for Depth
Estimation", CoRL 2022, Eq. 1 and Eq. 7–8), written from the paper's formulas.

    adapter = MultiLevelAdapter(out_channels=(64, 128, 256, 512))
    variables = adapter.init(rng, student_feats)
    adapted = adapter.apply(variables, student_feats)    # list of [B,H_l,W_l,C_l]

**Eq. 1.** Per level the student feature `[B,H,W,C_s]` is flattened to H·W tokens and
mapped to F = softmax(Q·Kᵀ·scale)·X, with Q, K, X (the value) learned linear maps of
the token (`nn.Dense`, i.e. 1×1 convolutions, with bias). The value map has the
teacher's channel count, so F can be compared with the teacher feature directly.
As in Eq. 1 there is no output projection, residual, normalisation or positional
encoding; heads are concatenated.

**Attention form** (`attention=`). At 1/4 of a 352×1120 input there are 24,640 tokens,
and the full attention matrix (≈6·10⁸ entries per head and image) does not fit, so:

- `"pooled"` (default): every query attends to all positions, with the keys and values
  computed from the feature average-pooled (adaptive average pooling, PyTorch-style bins)
  to a grid of about `pool_tokens` cells (default 256) with the map's aspect ratio
  (`pool_grid`). Pooling commutes with the affine K/X maps, so this equals attention
  over pooled keys/values. It keeps the paper's motivation (global, long-range context)
  at O(H·W·pool_tokens) memory. When the grid is at least the map size nothing is
  pooled and the result equals `"full"`.
- `"window"`: full attention inside non-overlapping `window` = (h, w) windows (default
  8×8). Maps are zero-padded to window multiples and padded keys masked out, so an edge
  window attends over its valid pixels only; a window covering the whole map (it is
  clamped to the map size) equals `"full"`. Local only.
- `"full"`: exact global attention; materialises (H·W)² logits per head: small maps only.

**Other unspecified choices** (ADU-Depth leaves them open): one head by default
(`num_heads`); query/key width `qk_channels` = the output width by default; the logits
are scaled by 1/√(head width) as in Vaswani et al. (`scale=None`; Eq. 1 as printed has
no scale: pass `scale=1.0`).

**Restoring function g** (Eq. 7–8, unspecified in the paper): `restore="identity"`
(default) uses the attention-adapted feature itself, g(F̃; s) = F̃ (the adapter is
already the learnable map); `restore="conv"` uses `Restore`, g(F̃; s) = F̃ + W·[F̃, s] + b,
a 1×1 convolution over the feature concatenated with its log-variance map, zero-
initialised so that it starts as the identity. `Restore(1)` serves as g for depth.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["AttentionAdapter", "MultiLevelAdapter", "Restore", "ATTENTION_FORMS",
           "RESTORE_FORMS", "pool_grid", "adaptive_avg_pool"]

ATTENTION_FORMS = ("pooled", "window", "full")
RESTORE_FORMS = ("identity", "conv")


def pool_grid(height: int, width: int, tokens: int) -> tuple[int, int]:
    """A (h, w) grid of about `tokens` cells with the map's aspect, clamped to the map."""
    if tokens < 1:
        raise ValueError(f"pool_tokens must be a positive int, got {tokens}")
    gh = max(1, round(math.sqrt(tokens * height / width)))
    gw = max(1, round(tokens / gh))
    return min(gh, height), min(gw, width)


def _pool_matrix(size: int, out: int) -> np.ndarray:
    """[out, size] averaging weights of adaptive average pooling (PyTorch bins)."""
    m = np.zeros((out, size), np.float32)
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x, out_hw: tuple[int, int]):
    """Adaptive average pooling of `[B,H,W,C]` to `[B,h,w,C]` (h ≤ H, w ≤ W)."""
    if x.ndim != 4:
        raise ValueError(f"adaptive_avg_pool expects [B,H,W,C], got shape {x.shape}")
    (h, w), (H, W) = out_hw, x.shape[1:3]
    if not (1 <= h <= H and 1 <= w <= W):
        raise ValueError(f"can only pool {H}×{W} down to a grid of at most that size, "
                         f"got {h}×{w}")
    if (h, w) == (H, W):
        return x
    ph = jnp.asarray(_pool_matrix(H, h), x.dtype)
    pw = jnp.asarray(_pool_matrix(W, w), x.dtype)
    return jnp.einsum("ph,bhwc,qw->bpqc", ph, x, pw)


def _attend(q, k, v, scale, mask=None):
    """softmax(q·kᵀ·scale)·v over `[..., T, N, D]` tokens; `mask` `[..., 1, 1, S]` bool."""
    logits = jnp.einsum("...tnd,...snd->...nts", q, k) * scale
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    return jnp.einsum("...nts,...sne->...tne", weights, v)


class AttentionAdapter(nn.Module):
    """Eq. 1 self-attention adaptation of one level: `[B,H,W,C_s]` → `[B,H,W,out_channels]`.

    Attributes:
      out_channels: the teacher's channel count (the value width); None: C_s.
      num_heads: attention heads (widths must divide by it).
      qk_channels: total query/key width; None: the output width.
      attention: `"pooled"` | `"window"` | `"full"` (module docstring).
      pool_tokens: about how many pooled key/value tokens (`"pooled"`).
      window: (h, w) window size (`"window"`), clamped to the map.
      scale: logit scale; None: 1/√(query head width).
    """
    out_channels: int | None = None
    num_heads: int = 1
    qk_channels: int | None = None
    attention: str = "pooled"
    pool_tokens: int = 256
    window: tuple[int, int] = (8, 8)
    scale: float | None = None

    @nn.compact
    def __call__(self, x):
        if self.attention not in ATTENTION_FORMS:
            raise ValueError(f"attention must be one of {ATTENTION_FORMS}, "
                             f"got {self.attention!r}")
        if x.ndim != 4:
            raise ValueError(f"AttentionAdapter expects a [B,H,W,C] feature map, "
                             f"got shape {x.shape}")
        b, h, w, _ = x.shape
        out = self.out_channels or x.shape[-1]
        qk = self.qk_channels or out
        n = self.num_heads
        if out % n or qk % n:
            raise ValueError(f"out_channels ({out}) and qk_channels ({qk}) must be "
                             f"divisible by num_heads ({n})")
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(qk // n)
        q_map = nn.Dense(qk, name="query")
        k_map = nn.Dense(qk, name="key")
        v_map = nn.Dense(out, name="value")

        def heads(t):
            return t.reshape(t.shape[:-1] + (n, t.shape[-1] // n))

        if self.attention == "full" or self.attention == "pooled":
            kv_in = x
            if self.attention == "pooled":
                kv_in = adaptive_avg_pool(x, pool_grid(h, w, self.pool_tokens))
            q = heads(q_map(x).reshape(b, h * w, qk))
            kv_tokens = kv_in.reshape(b, -1, kv_in.shape[-1])
            k, v = heads(k_map(kv_tokens)), heads(v_map(kv_tokens))
            return _attend(q, k, v, scale).reshape(b, h, w, out)

        wh, ww = min(self.window[0], h), min(self.window[1], w)
        if wh < 1 or ww < 1:
            raise ValueError(f"window must be positive (h, w), got {self.window}")
        hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
        xp = jnp.pad(x, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)))
        valid = np.zeros((hp, wp), bool)
        valid[:h, :w] = True

        def windows(t):  # [B,Hp,Wp,C] → [B, nW, wh·ww, C]
            t = t.reshape(t.shape[0], hp // wh, wh, wp // ww, ww, t.shape[-1])
            return t.transpose(0, 1, 3, 2, 4, 5).reshape(
                t.shape[0], (hp // wh) * (wp // ww), wh * ww, t.shape[-1])

        tokens = windows(xp)
        mask = windows(jnp.asarray(valid)[None, :, :, None])[:, :, None, None, :, 0]
        q, k, v = heads(q_map(tokens)), heads(k_map(tokens)), heads(v_map(tokens))
        y = _attend(q, k, v, scale, mask).reshape(b, hp // wh, wp // ww, wh, ww, out)
        y = y.transpose(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, out)
        return y[:, :h, :w]


class Restore(nn.Module):
    """Restoring function g(x; s) = x + W·[x, s] + b (1×1 conv, zero-initialised).

    `x` `[B,H,W,C]`, `s` the log-variance map `[B,H,W,1]` at the same resolution.
    """

    @nn.compact
    def __call__(self, x, s):
        if x.ndim != 4 or s.shape != x.shape[:-1] + (1,):
            raise ValueError(f"Restore expects x [B,H,W,C] and s [B,H,W,1], got "
                             f"{x.shape} and {s.shape}")
        delta = nn.Dense(x.shape[-1], kernel_init=nn.initializers.zeros,
                         name="conv")(jnp.concatenate([x, s.astype(x.dtype)], -1))
        return x + delta


class MultiLevelAdapter(nn.Module):
    """One `AttentionAdapter` per level (separate parameters), plus g if `restore="conv"`.

    Call with a sequence of `[B,H_l,W_l,C_l]` student features; returns the list of
    adapted features `[B,H_l,W_l,out_channels[l]]`. With `restore="conv"` pass
    `log_vars` (one `[B,H_l,W_l,1]` map per level, e.g. `adu.uncertainty_pyramid`) and
    get g(F̃; s) instead. Use one instance for the encoder and one for the decoder.
    """
    out_channels: Sequence[int]
    num_heads: int = 1
    attention: str = "pooled"
    pool_tokens: int = 256
    window: tuple[int, int] = (8, 8)
    scale: float | None = None
    restore: str = "identity"

    @nn.compact
    def __call__(self, feats, log_vars=None):
        if self.restore not in RESTORE_FORMS:
            raise ValueError(f"restore must be one of {RESTORE_FORMS}, got {self.restore!r}")
        if len(feats) != len(self.out_channels):
            raise ValueError(f"expected {len(self.out_channels)} feature levels "
                             f"(one per out_channels entry), got {len(feats)}")
        if self.restore == "conv" and (log_vars is None or len(log_vars) != len(feats)):
            raise ValueError("restore='conv' needs log_vars: one [B,H,W,1] map per level")
        adapted = [AttentionAdapter(c, self.num_heads, None, self.attention,
                                    self.pool_tokens, tuple(self.window), self.scale,
                                    name=f"level_{i}")(f)
                   for i, (c, f) in enumerate(zip(self.out_channels, feats))]
        if self.restore == "identity":
            return adapted
        return [Restore(name=f"restore_{i}")(a, s)
                for i, (a, s) in enumerate(zip(adapted, log_vars))]
