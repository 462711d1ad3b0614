"""NeWCRFs (Yuan et al., "Neural Window Fully-connected CRFs for Monocular Depth
Estimation", CVPR 2022; official code aliyun/NeWCRFs) in Flax, with the jaxdepth apply
contract of `DepthNet`, and the student / teacher options of ADU-Depth (Wu et al., CoRL
2023).

    model = NeWCRFs()                                   # Swin-L, window 7, KITTI (80 m)
    variables = model.init_variables(0, 352, 1120)
    out = model.apply(variables, images)                # images [B,H,W,3] in [0,1], H, W % 32 == 0

    teacher = NeWCRFs(in_channels=6)                    # left ‖ right on channels
    student = NeWCRFs(uem=True)                         # + the uncertainty module
    tiny = NeWCRFs(encoder="micro", crf_scale=1 / 16)   # tests and CPU training

Architecture (module names follow the PyTorch state dict, `.` → `/`, list index i → `_i`):

- Inputs in [0, 1] are normalised with the ImageNet mean / std (the NeWCRFs data loader
  does it; each RGB triple of a 6-channel input alike), `normalize=False` skips it.
- `backbone`: `SwinTransformer` (jaxdepth.models.swin), four LayerNorm'd stage outputs
  f0…f3 at 1/4 … 1/32 (Swin-L: 192, 384, 768, 1536 channels).
- `decoder` (PSP head on f3): adaptive average pooling to 1, 2, 3, 6 (PyTorch's bins,
  overlapping when the size does not divide), each branch `psp_modules_i` a 1×1 conv
  without bias → 512, GroupNorm(256 groups) and ReLU — GroupNorm in *all four* branches,
  as in the reference, whose config switch for the 1×1 branch is never reset — bilinear
  upsampling back (align_corners=False), concat [f3, b1, b2, b3, b6], `bottleneck` 3×3
  conv → 512 + BatchNorm + ReLU: the initial prediction at 1/32.
- `crf3` … `crf0`, neural-window FC-CRFs (`NewCRF`): 3×3 convs `proj_x` (image feature
  → D; left out when the feature already has D channels, as the reference does) and
  `proj_v` (prediction → D), two CRF blocks `crf_layer/blocks_0` (unshifted) and
  `blocks_1` (shifted by 3) with window 7 whatever the Swin window, and LayerNorm
  `norm_crf`. A block is `x += proj(softmax(QKᵀ/√d + bias + mask)·V)` with Q, K from
  the fused `qk` Linear of LN(x), V the raw window of the prediction v (head-major
  split, the same v for both blocks), a 13×13 relative-position bias, then
  `x += MLP(LN(x))` (D → 4D → D, exact GELU). D = 1024, 512, 256, 128 with 32, 16, 8, 4
  heads at 1/32 … 1/4. Between levels PixelShuffle(2) (PyTorch channel order).
- `disp_head1`: 3×3 conv `conv1` (128 → 1), sigmoid, bilinear ×4 upsampling
  (align_corners=False), depth = d·max_depth ∈ (0, max_depth).

Why H and W must be multiples of 32: Swin pads to multiples of 4 and halves with ceil,
so the levels are ⌈H/4⌉, ⌈H/8⌉, …; PixelShuffle(2) of a level must give the next finer
one exactly, which needs ⌈H/4⌉ divisible by 8, and the ×4 head must give back H, which
needs H divisible by 4: together H ≡ 0 (mod 32). The windows pad inside, so any multiple
of 32 works (KITTI 352×1120, NYU 480×640).

UEM (ADU-Depth's uncertainty estimation module, `uem=True`; the paper says only "a
convolution layer, a sigmoid and a scaling layer" predicting s = log σ², "rearranged" to
1/4 … 1/32). Choices made here: `uem_head/conv1` is a 3×3 conv (128 → 1, bias) on crf0's
output, beside the depth head; s = lo + (hi − lo)·sigmoid(conv) with (lo, hi) =
`uem_range` = (−6, 6), so s can be negative and starts near 0 (σ² ≈ 1); s lives at 1/4
like the prediction. Outputs: `log_var` (s upsampled bilinearly to `[B,H,W,1]`),
`log_sigma` = `log_var`/2 (the contract's log σ), and `log_var_levels`, s at 1/4, 1/8,
1/16, 1/32 (the sizes of enc0…enc3 / crf0…crf3) by 2^l×2^l average pooling of s
(`uem_pool="avg"`, the mean log variance of the cell) or max pooling (`"max"`, the
cell's largest uncertainty). `uem_stop_gradient=True` keeps the UEM's gradient out of the
depth network. Nothing is detached by default.

Taps (`features`, and the names `offsets` takes; `offsets[name]` is added to that
activation where it is produced, so ∂L/∂offset at zero is ∂L/∂activation):

- `enc0`…`enc3`: the normed Swin stage outputs as the decoder receives them (the offset
  is added after the encoder; its later stages see the unperturbed tokens); listed in
  `features` with `encoder_taps=True` (default), offsets work either way;
- `ppm` (PSP output, 1/32), `crf3`, `crf2`, `crf1`, `crf0` (each CRF module's output
  after `norm_crf`, before the pixel shuffle), `disp_head` (the head conv at 1/4, before
  the sigmoid).

`NeWCRFs.default_tap` is `crf0`: the last decoder feature (128 channels at 1/4) from
which the head predicts, the analogue of Monodepth2's `dec6` at H/4 that the gradient
method taps.

Parameters (window 7, 3 input channels; buffers excluded): large 270,444,877 (Swin
194,998,164, PSP 19,665,920, CRFs 55,779,640, head 1,153), base 139,981,297 (the base
CRFs have no `proj_x`: Swin-B's channels equal the CRF dims), tiny 88,455,283; a
6-channel teacher adds 9,216.
"""
from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxdepth.models import swin
from jaxdepth.models.contract import add_offset, check_images, check_offsets, random_variables
from jaxdepth.models.init import _seed, torch_like_init

ENCODER_TAPS = tuple(f"enc{i}" for i in range(4))
DECODER_TAPS = ("ppm", "crf3", "crf2", "crf1", "crf0", "disp_head")
#: every tap name of `NeWCRFs`, in the order they are computed
TAPS = ENCODER_TAPS + DECODER_TAPS

#: the reference's CRF widths D (1/4 … 1/32), heads, and the PSP width (and its GN groups)
CRF_DIMS = (128, 256, 512, 1024)
CRF_HEADS = (4, 8, 16, 32)
PSP_CHANNELS, PSP_GROUPS = 512, 256
POOL_SCALES = (1, 2, 3, 6)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UEM_POOLS = ("avg", "max")


def crf_config(crf_scale: float = 1.0):
    """(CRF dims D, heads, v dims, PSP channels, GN groups) at a width multiplier. The
    heads scale too (at least 1) and D stays a multiple of 4·heads; v dims follow from
    the chain: v_i = D_{i+1}/4 (pixel shuffle), v_3 = PSP channels."""
    if not crf_scale > 0:
        raise ValueError(f"crf_scale must be > 0, got {crf_scale!r}")
    heads = tuple(max(1, round(h * crf_scale)) for h in CRF_HEADS)
    dims = tuple(4 * h * max(1, round(d * crf_scale / (4 * h))) for d, h in zip(CRF_DIMS, heads))
    psp = max(2, 2 * round(PSP_CHANNELS * crf_scale / 2))
    v_dims = tuple(d // 4 for d in dims[1:]) + (psp,)
    return dims, heads, v_dims, psp, psp * PSP_GROUPS // PSP_CHANNELS


# --------------------------------------------------------------------------- helpers

def pixel_shuffle(x, r: int = 2):
    """PyTorch `PixelShuffle(r)` on NHWC: input channel c·r² + i·r + j → output pixel
    (h·r + i, w·r + j), channel c. `[B,H,W,C·r²]` → `[B,H·r,W·r,C]`."""
    b, h, w, c = x.shape
    x = x.reshape(b, h, w, c // (r * r), r, r)
    return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * r, w * r, c // (r * r))


def adaptive_pool_matrix(n: int, s: int) -> np.ndarray:
    """`[s, n]` averaging weights of PyTorch's adaptive pooling bins:
    bin i covers [⌊i·n/s⌋, ⌈(i+1)·n/s⌉)."""
    m = np.zeros((s, n), np.float32)
    for i in range(s):
        start, end = (i * n) // s, -(-((i + 1) * n) // s)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x, size: int):
    """`torch.nn.functional.adaptive_avg_pool2d` of `[B,H,W,C]` to `[B,size,size,C]`."""
    ph = adaptive_pool_matrix(x.shape[1], size)
    pw = adaptive_pool_matrix(x.shape[2], size)
    return jnp.einsum("ih,bhwc,jw->bijc", ph, x, pw, precision=jax.lax.Precision.HIGHEST)


def resize_bilinear(x, height: int, width: int):
    """`F.interpolate(mode="bilinear", align_corners=False)` (half-pixel centres, edge
    clamping, no antialiasing) of `[B,h,w,C]` → `[B,height,width,C]`."""
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), "bilinear",
                            antialias=False)


def _conv(features, kernel, bias=True, name=None):
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                   use_bias=bias, name=name)


# --------------------------------------------------------------------------- PSP head

class ConvNormReLU(nn.Module):
    """mmcv `ConvModule`: conv without bias `conv` → `gn` (GroupNorm) or `bn` → ReLU."""
    features: int
    kernel: int = 1
    groups: int | None = None   # GroupNorm groups; None: BatchNorm

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = _conv(self.features, self.kernel, bias=False, name="conv")(x)
        if self.groups is None:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                             name="bn")(x)
        else:
            x = nn.GroupNorm(num_groups=self.groups, epsilon=1e-5, use_fast_variance=False,
                             name="gn")(x)
        return nn.relu(x)


class PSPHead(nn.Module):
    """Pyramid pooling on the top feature `[B,h,w,C3]` → `[B,h,w,channels]` (module doc)."""
    channels: int = PSP_CHANNELS
    groups: int = PSP_GROUPS
    pool_scales: tuple[int, ...] = POOL_SCALES

    @nn.compact
    def __call__(self, x, train: bool = False):
        h, w = x.shape[1], x.shape[2]
        outs = [x]
        for i, s in enumerate(self.pool_scales):
            y = ConvNormReLU(self.channels, 1, self.groups, name=f"psp_modules_{i}")(
                adaptive_avg_pool(x, s), train)
            outs.append(resize_bilinear(y, h, w))
        return ConvNormReLU(self.channels, 3, None, name="bottleneck")(
            jnp.concatenate(outs, -1), train)


# --------------------------------------------------------------------------- FC-CRFs

class CRFAttention(nn.Module):
    """Window attention of the CRF: Q, K from the fused `qk` Linear of x `[B·nW,N,D]`,
    V = the prediction windows v `[B·nW,N,D]` as they are (head-major split),
    relative-position bias, optional shift mask, `proj` Linear."""
    heads: int
    window: int

    @nn.compact
    def __call__(self, x, v, mask=None):
        bn, n, d = x.shape
        hd = d // self.heads
        table = self.param("relative_position_bias_table", nn.initializers.truncated_normal(0.02),
                           ((2 * self.window - 1) ** 2, self.heads))
        qk = nn.Dense(2 * d, name="qk")(x).reshape(bn, n, 2, self.heads, hd)
        q, k = qk[:, :, 0] * hd ** -0.5, qk[:, :, 1]
        out = swin.windowed_attention(q, k, v.reshape(bn, n, self.heads, -1),
                                      swin.gather_bias(table, self.window),
                                      None if mask is None else jnp.asarray(mask))
        return nn.Dense(v.shape[-1], name="proj")(out)


class CRFBlock(nn.Module):
    """`x += attn(LN(x), v)` over (shifted) windows, then `x += MLP(LN(x))`; x, v `[B,H,W,D]`."""
    heads: int
    window: int = 7
    shift: int = 0
    mlp_ratio: int = 4

    @nn.compact
    def __call__(self, x, v, mask=None):
        _, h, w, d = x.shape
        y = swin.pad_to_multiple(swin.layer_norm("norm1")(x), self.window)
        vp = swin.pad_to_multiple(v, self.window)
        hp, wp = y.shape[1], y.shape[2]
        if self.shift:
            y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
            vp = jnp.roll(vp, (-self.shift, -self.shift), axis=(1, 2))
        out = CRFAttention(self.heads, self.window, name="attn")(
            swin.window_partition(y, self.window), swin.window_partition(vp, self.window),
            mask if self.shift else None)
        out = swin.window_reverse(out, self.window, hp, wp)
        if self.shift:
            out = jnp.roll(out, (self.shift, self.shift), axis=(1, 2))
        x = x + out[:, :h, :w]
        return x + swin.Mlp(self.mlp_ratio * d, name="mlp")(swin.layer_norm("norm2")(x))


class BasicCRFLayer(nn.Module):
    """`depth` CRF blocks, even ones unshifted, odd ones shifted by ⌊w/2⌋, sharing v."""
    heads: int
    window: int = 7
    depth: int = 2

    @nn.compact
    def __call__(self, x, v):
        w = self.window
        hp, wp = -(-x.shape[1] // w) * w, -(-x.shape[2] // w) * w
        mask = swin.shifted_window_mask(hp, wp, w, w // 2)
        for j in range(self.depth):
            x = CRFBlock(self.heads, w, w // 2 if j % 2 else 0, name=f"blocks_{j}")(x, v, mask)
        return x


class NewCRF(nn.Module):
    """One neural-window FC-CRF: image feature x `[B,h,w,Cx]`, prediction v
    `[B,h,w,Cv]` → `[B,h,w,embed_dim]`."""
    embed_dim: int
    heads: int
    window: int = 7

    @nn.compact
    def __call__(self, x, v):
        if x.shape[-1] != self.embed_dim:
            x = _conv(self.embed_dim, 3, name="proj_x")(x)
        if v.shape[-1] != self.embed_dim:
            v = _conv(self.embed_dim, 3, name="proj_v")(v)
        x = BasicCRFLayer(self.heads, self.window, name="crf_layer")(x, v)
        return swin.layer_norm("norm_crf")(x)


class Head(nn.Module):
    """3×3 conv `conv1` (→ 1 channel, bias): the logits of `DispHead` / the UEM."""

    @nn.compact
    def __call__(self, x):
        return _conv(1, 3, name="conv1")(x)


# --------------------------------------------------------------------------- the model

class NeWCRFs(nn.Module):
    """NeWCRFs depth network with the `DepthNet` apply contract (module doc).

        out = NeWCRFs(encoder="micro", crf_scale=1 / 16).apply(variables, images, offsets=None)

    `out`: `depth` `[B,H,W,1]` in (0, max_depth), `disp` = 1/max(depth, 1e-3), `scales`
    (one entry, full resolution: `disp`, `depth`, and `log_sigma` with the UEM),
    `features` (tap → `[B,h,w,c]`); with `uem=True` also `log_sigma`, `log_var`
    `[B,H,W,1]` and `log_var_levels` (s at 1/4, 1/8, 1/16, 1/32).

    Attributes:
      encoder: Swin size `large` (the released models), `base`, `tiny`, or `micro`
        (reduced, for tests and CPU training).
      window: the Swin window (7 or 12); the CRF window is `crf_window`.
      max_depth: 80 (KITTI) or 10 (NYU).
      in_channels: 3, or 6 for ADU-Depth's stereo teacher (left ‖ right on channels).
      uem: add ADU-Depth's uncertainty estimation module (module doc).
      crf_scale: width multiplier of the CRF dims, heads and PSP head (1 = the reference:
        D 128…1024, v 64…512, PSP 512 / GN 256); e.g. 1/16 with `micro`.
      crf_window: the CRF window (7 in the reference).
      drop_path_rate: the Swin's largest stochastic-depth rate (0.3 as the reference).
      normalize: ImageNet mean / std normalisation of the [0, 1] inputs.
      encoder_taps: list `enc0`…`enc3` in `features` (offsets take them either way).
      uem_range: (lo, hi) of the UEM scaling, s = lo + (hi − lo)·sigmoid.
      uem_pool: `avg` (default) or `max`: how s at 1/4 is pooled to 1/8 … 1/32.
      uem_stop_gradient: feed the UEM a stop-gradient copy of crf0's output.
    """
    encoder: str = "large"
    window: int = 7
    max_depth: float = 80.0
    in_channels: int = 3
    uem: bool = False
    crf_scale: float = 1.0
    crf_window: int = 7
    drop_path_rate: float = 0.3
    normalize: bool = True
    encoder_taps: bool = True
    uem_range: tuple[float, float] = (-6.0, 6.0)
    uem_pool: str = "avg"
    uem_stop_gradient: bool = False

    #: the last CRF output (128 channels at 1/4), from which the depth head predicts
    default_tap = "crf0"
    #: every name `offsets` takes (`features` holds the encoder ones with `encoder_taps`)
    tap_names = TAPS

    @property
    def log_sigma(self) -> bool:
        """Whether the output carries `log_sigma` (the UEM): the flag the uncertainty
        methods (`jaxdepth.uncertainty.methods.ModelInfo`) read from every depth model."""
        return self.uem

    def _check(self, images, offsets):
        check_images(images, self.in_channels,
                     why="the pixel-shuffle chain needs ⌈H/4⌉ divisible by 8 and the ×4 "
                         "head H divisible by 4")
        if self.normalize and self.in_channels % 3:
            raise ValueError(f"normalize=True needs RGB triples (in_channels a multiple of 3), "
                             f"got {self.in_channels}")
        if self.uem_pool not in UEM_POOLS:
            raise ValueError(f"uem_pool must be one of {UEM_POOLS}, got {self.uem_pool!r}")
        check_offsets(offsets, TAPS)

    @nn.compact
    def __call__(self, images, offsets: Mapping[str, jax.Array] | None = None, *,
                 train: bool = False, dropout_rng: jax.Array | None = None,
                 dropout_rate: float | None = None):
        """`offsets`: tap → array added to that activation; `train`: BatchNorm batch
        statistics (call with `mutable=["batch_stats"]`); `dropout_rng`: turns on the
        Swin's stochastic depth (drop path) at `dropout_rate` (default `drop_path_rate`)
        — pass it when training, and for sampling at inference."""
        offsets = dict(offsets or {})
        self._check(images, offsets)
        swin.swin_size(self.encoder)  # validates the name
        dims, heads, _, psp, groups = crf_config(self.crf_scale)
        h, w = images.shape[1], images.shape[2]
        x = images
        if self.normalize:
            reps = self.in_channels // 3
            mean = jnp.asarray(IMAGENET_MEAN * reps, x.dtype)
            std = jnp.asarray(IMAGENET_STD * reps, x.dtype)
            x = (x - mean) / std
        feats = list(swin.SwinTransformer(self.encoder, self.window, self.drop_path_rate,
                                          name="backbone")(x, dropout_rng, dropout_rate))
        taps = {}
        for i, name in enumerate(ENCODER_TAPS):
            feats[i] = add_offset(feats[i], name, offsets)
            taps[name] = feats[i]

        def tap(name, a):
            a = add_offset(a, name, offsets)
            taps[name] = a
            return a

        e = tap("ppm", PSPHead(psp, groups, name="decoder")(feats[3], train))
        for i in (3, 2, 1, 0):
            crf = NewCRF(dims[i], heads[i], self.crf_window, name=f"crf{i}")
            e = tap(f"crf{i}", crf(feats[i], e))
            if i:
                e = pixel_shuffle(e, 2)
        logits = tap("disp_head", Head(name="disp_head1")(e))
        d = resize_bilinear(jax.nn.sigmoid(logits), h, w)
        depth = d * self.max_depth
        disp = 1.0 / jnp.maximum(depth, 1e-3)
        entry = {"disp": disp, "depth": depth}
        out = {"disp": disp, "depth": depth}
        if self.uem:
            lo, hi = self.uem_range
            inp = jax.lax.stop_gradient(e) if self.uem_stop_gradient else e
            s = lo + (hi - lo) * jax.nn.sigmoid(Head(name="uem_head")(inp))   # [B,H/4,W/4,1]
            levels = [s]
            for _ in range(3):
                bb, hh, ww, _c = levels[-1].shape
                cells = levels[-1].reshape(bb, hh // 2, 2, ww // 2, 2, 1)
                levels.append(cells.mean((2, 4)) if self.uem_pool == "avg" else cells.max((2, 4)))
            log_var = resize_bilinear(s, h, w)
            entry["log_sigma"] = out["log_sigma"] = 0.5 * log_var
            out["log_var"] = log_var
            out["log_var_levels"] = tuple(levels)
        if not self.encoder_taps:
            taps = {k: v for k, v in taps.items() if k not in ENCODER_TAPS}
        out["scales"] = (entry,)
        out["features"] = taps
        return out

    def init_variables(self, rng: jax.Array, height: int = 352, width: int = 1120):
        """Random variables for an input of the given size (see `newcrfs_init`); `rng` is
        a JAX key or an int seed."""
        return random_variables(self, rng, height, width, self.in_channels, init=newcrfs_init)


def newcrfs_init(abstract, rng):
    """Fill the `jax.ShapeDtypeStruct` tree of a `NeWCRFs` with the reference's random
    initialisation, drawn in NumPy: the Swin's Linear layers and every
    `relative_position_bias_table` N(0, 0.02²) (timm's `trunc_normal_`, cut at ±2) with
    zero biases; everything else as `init.torch_like_init` (PyTorch's default for convs
    and Linear layers with bias, mmcv's Kaiming fan-out normal for the bias-free convs of
    the PSP head, norms 1 / 0)."""
    gen = np.random.default_rng(_seed(rng) + [1])
    flat = traverse_util.flatten_dict(abstract)
    special, rest = {}, {}
    for path, leaf in flat.items():
        swin_dense = ("backbone" in path and path[-1] in ("kernel", "bias")
                      and flat.get(path[:-1] + ("kernel",), leaf).ndim == 2)
        if path[-1] == "relative_position_bias_table" or swin_dense:
            special[path] = leaf
        else:
            rest[path] = leaf
    out = traverse_util.flatten_dict(torch_like_init(traverse_util.unflatten_dict(rest), rng))
    for path in sorted(special):
        leaf = special[path]
        if path[-1] == "bias":
            value = np.zeros(leaf.shape)
        else:
            value = np.clip(gen.normal(0.0, 0.02, leaf.shape), -2.0, 2.0)
        out[path] = jnp.asarray(value, leaf.dtype)
    return traverse_util.unflatten_dict(out)
