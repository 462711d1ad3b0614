"""PGN: pixel-wise gradient norms for semantic segmentation (Maag & Riedlinger, 2023).

The score of a decoder pixel is the entrywise p-norm of the gradient of that pixel's own
cross-entropy loss w.r.t. a convolution kernel, with an auxiliary label in place of the
ground truth: the one-hot vector of the predicted class (`onehot`) or the uniform
distribution 1/C (`uniform`). Higher = more uncertain / more likely out of distribution.

    maps = pgn_maps(model.apply, variables, images)   # [B,H,W,20], names PGN_NAMES

Closed forms, per decoder pixel (z the logits `[C]`, s = softmax(z), φ the input of the
final 1×1 conv `[D]`, ψ the input of the k×k conv before it):

- Weights (the gradient w.r.t. the logits). `exact`: w = s − y, the true gradient of
  −Σ_c y_c log s_c. `reference`: w = s ⊙ (1 − y), eq. 2 of the paper and what the
  published code builds (it sets the predicted class's entry to 0 where the exact value is
  s_k − 1, and gives (C−1)/C·s instead of s − 1/C for the uniform label; eqs. 5, 6).
- Last layer (1×1 kernel K `[D,C]`): ∇_K L = φ ⊗ w, and for the entrywise p-"norm"
  Σ|φ_j w_i|^p factorises, so ‖∇_K L‖_p = ‖w‖_p·‖φ‖_p. For p < 1 this is the quasi-norm
  (Σ|x|^p)^{1/p}. A bias b has ∇_b L = w, so the norm over [∇_K L, ∇_b L] is
  ‖w‖_p·‖[φ, 1]‖_p.
- Penultimate layer (k×k kernel K' `[k,k,Din,D]`, stride 1, zero padding (k−1)/2, then
  BatchNorm in inference mode, ReLU): ∇_{K'} L = patch ⊗ δ with
  δ = γ/√(σ² + ε) ⊙ 1[φ > 0] ⊙ (K w) `[D]` and patch the k×k×Din neighbourhood of ψ,
  so the norm is ‖δ‖_p·‖patch‖_p. The published code departs from this in three ways,
  reproduced by `mode="reference"`: ‖δ‖ always with p = 0.5; the ReLU mask taken as
  BN(ψ) ≥ 0 (its BatchNorm applied to the conv's *input*, only possible when Din = D);
  and the BN derivative γ alone, without 1/√(σ² + ε).

Numerics: norms are computed in log space after rescaling by the largest |x|, so small p
(0.1 raises sums to the 10th power) neither overflows nor underflows before the end;
`log=True` returns log-norms, which stay finite where the norm itself exceeds float32.
The patch norm never materialises the k²·Din patch: log Σ_c|ψ_c|^p is one scalar per pixel
and the k×k window sum is a log-sum-exp over k² shifted copies of that map.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdepth.uncertainty import _checks

LABELS = ("onehot", "uniform")
MODES = ("exact", "reference")
#: the p values of the paper and the published code, in its map order
DEFAULT_PS = (0.1, 0.3, 0.5, 1.0, 2.0)
#: the p the published code uses for ‖δ‖ of the penultimate layer, whatever p is
REFERENCE_DELTA_P = 0.5
_SHORT = {"onehot": "oh", "uniform": "uni"}


class PgnHead(NamedTuple):
    """The parameters of the classifier head that PGN differentiates.

    `final_kernel` `[D,C]` (the 1×1 conv), `final_bias` `[C]` or None; the k×k conv before
    it `penultimate_kernel` `[k,k,Din,D]` and its BatchNorm `bn_scale`, `bn_bias`,
    `bn_mean`, `bn_var` `[D]`, `bn_eps` (None where the model has no such layer).
    """
    final_kernel: jax.Array
    final_bias: jax.Array | None = None
    penultimate_kernel: jax.Array | None = None
    bn_scale: jax.Array | None = None
    bn_bias: jax.Array | None = None
    bn_mean: jax.Array | None = None
    bn_var: jax.Array | None = None
    bn_eps: float = 1e-5


def _lookup(tree, path, what):
    node = tree
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            have = sorted(node) if isinstance(node, Mapping) else type(node).__name__
            raise ValueError(f"{what} has no entry {'/'.join(path[:i + 1])!r} (found {have}); "
                             "expected the head layout head/{penultimate,penultimate_bn,final}")
        node = node[key]
    return node


def head_of(variables, path: Sequence[str] = ("head",), bn_eps: float = 1e-5) -> PgnHead:
    """Read a `PgnHead` from Flax variables.

    Layout (under `variables["params"][*path]`): `final/kernel` `[1,1,D,C]` (optional
    `final/bias` `[C]`); `penultimate/kernel` `[k,k,Din,D]`; `penultimate_bn/{scale,bias}`
    and `variables["batch_stats"][*path]["penultimate_bn"]/{mean,var}` `[D]`. The
    penultimate fields are None when `penultimate` is absent (last-layer PGN only); a
    BatchNorm without scale or bias gets ones / zeros. `bn_eps`: the BatchNorm's epsilon
    (1e-5 = PyTorch's default; torchvision's MobileNetV3 uses 1e-3).
    """
    path = (path,) if isinstance(path, str) else tuple(path)
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError("variables must be a mapping with 'params' (Flax variables)")
    head = _lookup(variables["params"], path, "variables['params']")
    final = _lookup(head, ("final",), f"variables['params'][{'/'.join(path)}]")
    kernel = jnp.asarray(_lookup(final, ("kernel",), "the final layer"))
    if kernel.ndim != 4 or kernel.shape[:2] != (1, 1):
        raise ValueError(f"final/kernel must be a 1×1 conv kernel [1,1,D,C], got {kernel.shape}")
    d, c = kernel.shape[2:]
    bias = final.get("bias")
    if bias is not None and tuple(bias.shape) != (c,):
        raise ValueError(f"final/bias must be [C] = ({c},), got {tuple(bias.shape)}")
    fields = {"final_kernel": kernel.reshape(d, c),
              "final_bias": None if bias is None else jnp.asarray(bias), "bn_eps": float(bn_eps)}
    if "penultimate" in head:
        pk = jnp.asarray(_lookup(head, ("penultimate", "kernel"), "the head"))
        if pk.ndim != 4 or pk.shape[3] != d:
            raise ValueError(f"penultimate/kernel must be [k,k,Din,D] with D = {d}, "
                             f"got {pk.shape}")
        bn = _lookup(head, ("penultimate_bn",), "the head")
        stats = _lookup(variables.get("batch_stats", {}), path + ("penultimate_bn",),
                        "variables['batch_stats']")
        fields.update(
            penultimate_kernel=pk,
            bn_scale=jnp.asarray(bn["scale"]) if "scale" in bn else jnp.ones(d, pk.dtype),
            bn_bias=jnp.asarray(bn["bias"]) if "bias" in bn else jnp.zeros(d, pk.dtype),
            bn_mean=jnp.asarray(_lookup(stats, ("mean",), "penultimate_bn batch_stats")),
            bn_var=jnp.asarray(_lookup(stats, ("var",), "penultimate_bn batch_stats")))
        for name in ("bn_scale", "bn_bias", "bn_mean", "bn_var"):
            if tuple(fields[name].shape) != (d,):
                raise ValueError(f"penultimate_bn {name[3:]} must be [D] = ({d},), "
                                 f"got {tuple(fields[name].shape)}")
    return PgnHead(**fields)


# ----------------------------------------------------------------------------- norms
def log_pnorm(x, p: float, axis: int = -1):
    """log ‖x‖_p = log (Σ|x|^p)^{1/p} over `axis` (any p > 0; a quasi-norm for p < 1).

    Stable: log m + (1/p)·log Σ (|x|/m)^p with m = max|x|; −inf for an all-zero vector.
    """
    a = jnp.abs(x)
    m = jnp.max(a, axis=axis, keepdims=True)
    scale = jnp.where(m > 0, m, 1.0)
    r = a / scale
    # p is static: the usual exponents without a per-entry pow (exp ∘ log), which costs
    # more than the rest of PGN on a CPU
    powered = {1.0: lambda: r, 2.0: lambda: r * r, 0.5: lambda: jnp.sqrt(r)}.get(
        float(p), lambda: r ** p)()
    total = jnp.sum(powered, axis=axis)
    m, scale = jnp.squeeze(m, axis), jnp.squeeze(scale, axis)
    return jnp.where(m > 0, jnp.log(scale) + jnp.log(total) / p, -jnp.inf)


def pnorm(x, p: float, axis: int = -1):
    """‖x‖_p = (Σ|x|^p)^{1/p} over `axis`, via `log_pnorm` (no intermediate overflow)."""
    return jnp.exp(log_pnorm(x, p, axis))


def _log_patch_norm(x, p: float, k: int):
    """log ‖patch‖_p of every k×k×Din neighbourhood of `x` `[N,h,w,Din]` (zero padding
    (k−1)/2) → `[N,h,w]`: a log-sum-exp over the window of log Σ_c|x_c|^p."""
    r = (k - 1) // 2
    h, w = x.shape[1:3]
    t = p * log_pnorm(x, p)                                   # log Σ_c |x_c|^p, [N,h,w]
    t = jnp.pad(t, ((0, 0), (r, r), (r, r)), constant_values=-jnp.inf)
    window = jnp.stack([t[:, i:i + h, j:j + w] for i in range(k) for j in range(k)], -1)
    return jax.nn.logsumexp(window, axis=-1) / p


# ----------------------------------------------------------------------------- checks
def _check_p(p, name: str = "p") -> float:
    try:
        value = float(p)
    except TypeError:  # includes jax.errors.ConcretizationTypeError (a traced p)
        raise ValueError(f"{name} must be a positive Python number (static), got {p!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {p!r}")
    return value


def _check_finite(name: str, x, check: bool):
    """Non-finite values: always checked for NumPy input; for concrete JAX arrays only with
    `check=True` (a device sync); never inside jit (tracers)."""
    if isinstance(x, jax.core.Tracer) or not (isinstance(x, np.ndarray) or check):
        return
    if not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} must be finite; it has NaN or inf values")


def _check_features(logits, final_in):
    if getattr(logits, "ndim", 0) < 1 or getattr(final_in, "ndim", 0) < 1:
        raise ValueError("logits [...,C] and final_in [...,D] must be arrays with a channel axis")
    if tuple(logits.shape[:-1]) != tuple(final_in.shape[:-1]):
        raise ValueError(f"logits [B,h,w,C] and final_in [B,h,w,D] must share [B,h,w]; got "
                         f"{tuple(logits.shape)} and {tuple(final_in.shape)} (pass the "
                         "decoder-resolution logits, not the upsampled ones)")


# ----------------------------------------------------------------------------- PGN
def label_weights(logits, *, label: str = "onehot", mode: str = "exact"):
    """Gradient w.r.t. the logits `[...,C]` → `[...,C]`: `exact` s − y (cross-entropy),
    `reference` s ⊙ (1 − y) (paper eq. 2, published code); y = one-hot of the argmax or 1/C."""
    _checks.check_choice("label", label, LABELS)
    _checks.check_choice("mode", mode, MODES)
    logits = jax.lax.stop_gradient(logits)
    s = jax.nn.softmax(logits, axis=-1)
    c = logits.shape[-1]
    if label == "onehot":
        y = jax.nn.one_hot(jnp.argmax(logits, axis=-1), c, dtype=s.dtype)
    else:
        y = jnp.full_like(s, 1.0 / c)
    return s - y if mode == "exact" else s * (1.0 - y)


def pgn(logits, final_in, *, label: str = "onehot", p: float = 0.5, mode: str = "exact",
        bias: bool = False, log: bool = False, check: bool = False):
    """Last-layer PGN (paper eqs. 2, 5, 6): ‖∇_K L‖_p = ‖w‖_p·‖φ‖_p per pixel.

    Args:
      logits: `[B,h,w,C]` decoder logits (any leading axes `[...,C]`).
      final_in: `[B,h,w,D]` φ, the input of the final 1×1 conv (same leading axes).
      label: `onehot` (predicted class) | `uniform` (1/C).
      p: the exponent, > 0 (static).
      mode: `exact` (w = s − y) | `reference` (w = s ⊙ (1 − y)).
      bias: include the final bias's gradient (= w): the norm over [w ⊗ φ, w].
      log: return log ‖·‖_p (−inf where the gradient is 0).
      check: also check concrete JAX inputs for NaN/inf (NumPy input always is).
    Returns:
      `[B,h,w]`.
    """
    _check_features(logits, final_in)
    p = _check_p(p)
    _check_finite("logits", logits, check)
    _check_finite("final_in", final_in, check)
    w = label_weights(logits, label=label, mode=mode)
    log_phi = log_pnorm(final_in, p)
    if bias:  # ‖[φ, 1]‖_p^p = ‖φ‖_p^p + 1
        log_phi = jnp.logaddexp(p * log_phi, 0.0) / p
    out = log_pnorm(w, p) + log_phi
    return out if log else jnp.exp(out)


def _check_head(head, logits, final_in, penultimate_in, mode):
    if not isinstance(head, PgnHead):
        raise ValueError(f"head must be a PgnHead (see head_of), got {type(head).__name__}")
    if head.penultimate_kernel is None:
        raise ValueError("head has no penultimate layer (penultimate_kernel is None)")
    if getattr(penultimate_in, "ndim", 0) < 3 or logits.ndim < 3:
        raise ValueError(f"logits, final_in and penultimate_in must be [B,h,w,·], got "
                         f"{tuple(logits.shape)} and {tuple(getattr(penultimate_in, 'shape', ()))}")
    if tuple(penultimate_in.shape[:-1]) != tuple(logits.shape[:-1]):
        raise ValueError(f"penultimate_in [B,h,w,Din] must share [B,h,w] with logits; got "
                         f"{tuple(penultimate_in.shape)} and {tuple(logits.shape)}")
    k, k2, din, d = head.penultimate_kernel.shape
    c = logits.shape[-1]
    if k != k2 or k % 2 == 0:
        raise ValueError(f"penultimate_kernel must be an odd square k×k kernel [k,k,Din,D], "
                         f"got {tuple(head.penultimate_kernel.shape)}")
    if tuple(head.final_kernel.shape) != (d, c):
        raise ValueError(f"final_kernel must be [D,C] = ({d}, {c}), got "
                         f"{tuple(head.final_kernel.shape)}")
    if final_in.shape[-1] != d or penultimate_in.shape[-1] != din:
        raise ValueError(f"final_in must have D = {d} and penultimate_in Din = {din} channels "
                         f"(from the kernel), got {final_in.shape[-1]} and "
                         f"{penultimate_in.shape[-1]}")
    if mode == "reference" and din != d:
        raise ValueError(f"mode='reference' applies the BatchNorm to penultimate_in, which "
                         f"needs Din == D, got Din = {din}, D = {d}; use mode='exact'")


def pgn_penultimate(logits, final_in, penultimate_in, head: PgnHead, *, label: str = "onehot",
                    p: float = 0.5, mode: str = "exact", log: bool = False,
                    check: bool = False):
    """Penultimate-layer PGN: ‖∇_{K'} L‖_p = ‖δ‖_p·‖patch‖_p per pixel (module doc).

    Args:
      logits: `[B,h,w,C]` decoder logits.
      final_in: `[B,h,w,D]` φ = relu(BN(conv_{K'}(ψ))).
      penultimate_in: `[B,h,w,Din]` ψ, the input of the k×k conv.
      head: `PgnHead` (`head_of(variables)`).
      label, p, log, check: as `pgn`.
      mode: `exact` | `reference` (the published code: w = s ⊙ (1 − y), ‖δ‖ with p = 0.5,
        ReLU mask BN(ψ) ≥ 0, BN derivative γ only).
    Returns:
      `[B,h,w]`.
    """
    _check_features(logits, final_in)
    _checks.check_choice("mode", mode, MODES)
    _check_head(head, logits, final_in, penultimate_in, mode)
    p = _check_p(p)
    for name, x in (("logits", logits), ("final_in", final_in),
                    ("penultimate_in", penultimate_in)):
        _check_finite(name, x, check)
    w = label_weights(logits, label=label, mode=mode)
    grad_phi = jnp.einsum("...c,dc->...d", w, head.final_kernel)   # ∂L/∂φ = K w
    if mode == "exact":
        gain = head.bn_scale * jax.lax.rsqrt(head.bn_var + head.bn_eps)
        mask = final_in > 0
        delta_p = p
    else:
        bn_of_input = ((penultimate_in - head.bn_mean) * jax.lax.rsqrt(head.bn_var + head.bn_eps)
                       * head.bn_scale + head.bn_bias)
        gain, mask, delta_p = head.bn_scale, bn_of_input >= 0, REFERENCE_DELTA_P
    delta = jnp.where(mask, gain * grad_phi, 0.0)
    lead, (h, wd, din) = penultimate_in.shape[:-3], penultimate_in.shape[-3:]
    k = head.penultimate_kernel.shape[0]
    log_patch = _log_patch_norm(penultimate_in.reshape((-1, h, wd, din)), p, k)
    out = log_pnorm(delta, delta_p) + log_patch.reshape(lead + (h, wd))
    return out if log else jnp.exp(out)


# ----------------------------------------------------------------------------- all maps
def _checked_ps(ps) -> tuple[float, ...]:
    ps = (ps,) if isinstance(ps, (int, float)) else tuple(ps)
    if not ps:
        raise ValueError("ps must name at least one p, e.g. (0.1, 0.3, 0.5, 1, 2)")
    return tuple(_check_p(p, "every p in ps") for p in ps)


def pgn_names(ps: Sequence[float] = DEFAULT_PS, penultimate: bool = True) -> tuple[str, ...]:
    """Names of the `pgn_maps` channels, in order: `pgn_oh_p{p}` …, `pgn_uni_p{p}` …, then
    `pgn_pen_oh_p{p}` …, `pgn_pen_uni_p{p}` … (p printed with `%g`: 0.1, 1, 2)."""
    ps = _checked_ps(ps)
    layers = ("pgn", "pgn_pen") if penultimate else ("pgn",)
    return tuple(f"{layer}_{_SHORT[label]}_p{p:g}" for layer in layers for label in LABELS
                 for p in ps)


#: the 20 maps of the published code (its evaluation calls them G0–G9 and ntl_G0–G9)
PGN_NAMES = pgn_names()


@functools.partial(jax.jit, static_argnames=("apply_fn", "ps", "mode", "penultimate", "log"))
def _pgn_maps(apply_fn, variables, images, head, *, ps, mode, penultimate, log):
    out = apply_fn(variables, images)
    _checks.check_outputs(out, "decoder_logits", "features")
    feats = out["features"]
    needed = ("final_in", "penultimate_in") if penultimate else ("final_in",)
    missing = [n for n in needed if n not in feats]
    if missing:
        raise ValueError(f"apply_fn's features lack {missing}; got {sorted(feats)}")
    z, phi = out["decoder_logits"], feats["final_in"]
    bias = head.final_bias is not None
    maps = [pgn(z, phi, label=label, p=p, mode=mode, bias=bias, log=log)
            for label in LABELS for p in ps]
    if penultimate:
        maps += [pgn_penultimate(z, phi, feats["penultimate_in"], head, label=label, p=p,
                                 mode=mode, log=log) for label in LABELS for p in ps]
    maps = jnp.stack(maps, axis=-1)
    b, height, width = images.shape[:3]
    maps = jax.image.resize(maps, (b, height, width, maps.shape[-1]), "bilinear",
                            antialias=False)
    return maps, jnp.all(jnp.isfinite(z))


def pgn_maps(apply_fn, variables, images, *, ps: Sequence[float] = DEFAULT_PS,
             mode: str = "exact", head: PgnHead | None = None, penultimate: bool = True,
             log: bool = False, check: bool = False):
    """All PGN maps of a segmentation model, in the published code's order (`pgn_names`).

    One forward pass; the maps are computed at decoder resolution and resized bilinearly
    (half-pixel centres, PyTorch `align_corners=False`) to the input size, as the
    reference code upsamples them with the logits.

    Args:
      apply_fn: `apply_fn(variables, images)` → {`decoder_logits` `[B,h,w,C]`, `features`
        with `final_in` `[B,h,w,D]` and `penultimate_in` `[B,h,w,Din]`}.
      variables: the model's variables.
      images: `[B,H,W,3]` float32 in [0,1].
      ps: the exponents (paper: 0.1, 0.3, 0.5, 1, 2).
      mode: `exact` | `reference`.
      head: `PgnHead`; default `head_of(variables)`. The bias term is included when the
        head's final conv has a bias.
      penultimate: also the penultimate-layer maps.
      log: log-maps (interpolated in log space), finite where p = 0.1 overflows float32.
      check: raise if the logits have NaN/inf (one device sync).
    Returns:
      `[B,H,W,n]`, n = 4·len(ps) (2·len(ps) without `penultimate`).
    """
    _checks.check_images(images)
    _checks.check_choice("mode", mode, MODES)
    ps = _checked_ps(ps)
    head = head_of(variables) if head is None else head
    if not isinstance(head, PgnHead):
        raise ValueError(f"head must be a PgnHead (see head_of), got {type(head).__name__}")
    if penultimate and head.penultimate_kernel is None:
        raise ValueError("the head has no penultimate layer; pass penultimate=False")
    maps, finite = _pgn_maps(apply_fn, variables, images, head, ps=ps, mode=mode,
                             penultimate=bool(penultimate), log=bool(log))
    if check and not bool(finite):
        raise ValueError("the model's decoder logits have NaN or inf values")
    return maps
