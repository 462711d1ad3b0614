"""Pixel-wise uncertainty baselines for semantic segmentation models.

Models follow the segmentation contract of `jaxdepth.models.segmentation`:
`apply_fn(variables, images, offsets=None, *, dropout_rng=None, train=False)` returns
{`logits` `[B,H,W,C]` (input resolution), `decoder_logits` `[B,h,w,C]`, `features`}.
Every score is higher = more uncertain, except `max_softmax` (a confidence).

- `max_softmax`: max_c s_c (Hendrycks & Gimpel 2017); `max_softmax_uncertainty` = 1 − it.
- `entropy`: −Σ_c s_c log s_c, natural log; `normalise=True` divides by log C (∈ [0,1]).
- `sampling_uncertainty`: from S sampled predictions, the mean probabilities p̄, the
  predictive entropy H(p̄) and the mutual information H(p̄) − mean_i H(s_i) (Gal 2016;
  BALD), used by `mc_dropout` (S dropout passes) and `ensemble` (one pass per member).
- `per_pixel_gradients` / `gradient_norm`: the gradient of each decoder pixel's own loss
  w.r.t. one layer's parameters by plain autodiff (a Jacobian: B·h·w backward passes), the
  slow reference for the closed forms in `jaxdepth.uncertainty.pgn`; small images only.

These functions take no labels; ground truth, and so void pixels (label 255), enter only
in the evaluation, which masks them.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from jaxdepth.uncertainty import _checks
from jaxdepth.uncertainty.pgn import LABELS, MODES, log_pnorm


class SampledUncertainty(NamedTuple):
    """What `mc_dropout` and `ensemble` return: `probs` `[B,H,W,C]` (mean softmax),
    `entropy` `[B,H,W]` (predictive entropy H(p̄)) and `mutual_information` `[B,H,W]`."""
    probs: jax.Array
    entropy: jax.Array
    mutual_information: jax.Array


def _check_logits(logits, name: str = "logits"):
    if getattr(logits, "ndim", 0) < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{name} must be an array [...,C] with C >= 1 classes, got shape "
                         f"{getattr(logits, 'shape', None)}")


def max_softmax(logits):
    """Maximum softmax probability max_c s_c of `[...,C]` logits → `[...]` (a confidence)."""
    _check_logits(logits)
    return jnp.exp(jnp.max(logits, axis=-1) - jax.nn.logsumexp(logits, axis=-1))


def max_softmax_uncertainty(logits):
    """1 − max_c s_c of `[...,C]` logits → `[...]` (higher = more uncertain)."""
    return 1.0 - max_softmax(logits)


def _normaliser(c: int, normalise: bool) -> float:
    if not normalise:
        return 1.0
    if c < 2:
        raise ValueError(f"normalise=True divides by log C and needs C >= 2 classes, got C = {c}")
    return math.log(c)


def entropy(logits, normalise: bool = False):
    """Softmax entropy −Σ_c s_c log s_c (natural log) of `[...,C]` logits → `[...]`.

    `normalise`: divide by log C, so the uniform distribution scores 1. Classes with
    logit −inf contribute 0.
    """
    _check_logits(logits)
    log_s = jax.nn.log_softmax(logits, axis=-1)
    s = jnp.exp(log_s)
    h = -jnp.sum(jnp.where(s > 0, s * log_s, 0.0), axis=-1)
    return h / _normaliser(logits.shape[-1], normalise)


def probs_entropy(probs, normalise: bool = False):
    """Entropy −Σ_c p_c log p_c of probability vectors `[...,C]` → `[...]` (0 log 0 = 0)."""
    _check_logits(probs, "probs")
    return -jnp.sum(xlogy(probs, probs), axis=-1) / _normaliser(probs.shape[-1], normalise)


def sampling_uncertainty(sample_logits) -> SampledUncertainty:
    """From S sampled logits `[S,...,C]`: mean softmax p̄ `[...,C]`, predictive entropy
    H(p̄) and mutual information H(p̄) − mean_i H(softmax(z_i)) `[...]` (clipped at 0
    against rounding)."""
    _check_logits(sample_logits, "sample_logits")
    if sample_logits.ndim < 2:
        raise ValueError(f"sample_logits must be [S,...,C], got shape {sample_logits.shape}")
    probs = jnp.mean(jax.nn.softmax(sample_logits, axis=-1), axis=0)
    predictive = probs_entropy(probs)
    expected = jnp.mean(entropy(sample_logits), axis=0)
    return SampledUncertainty(probs, predictive, jnp.maximum(predictive - expected, 0.0))


def _logits_of(out):
    _checks.check_outputs(out, "logits")
    return out["logits"]


@functools.partial(jax.jit, static_argnames=("apply_fn", "samples"))
def _mc_dropout(apply_fn, variables, images, rng, *, samples):
    keys = jax.random.split(rng, samples)
    logits = jax.vmap(lambda key: _logits_of(apply_fn(variables, images, dropout_rng=key)))(keys)
    return sampling_uncertainty(logits)


def mc_dropout(apply_fn, variables, images, rng=None, *, samples: int = 8) -> SampledUncertainty:
    """MC dropout (Gal & Ghahramani 2016): `samples` passes with dropout on.

    Sample i calls `apply_fn(variables, images, dropout_rng=jax.random.split(rng,
    samples)[i])` (`rng` None: key 0); the passes are a `vmap` over the keys, so work
    that does not depend on the key (the encoder, when dropout sits near the head) runs
    once. `images` `[B,H,W,3]` in [0,1]. Returns `SampledUncertainty` of the
    input-resolution `logits`.
    """
    _checks.check_images(images)
    if int(samples) < 2:
        raise ValueError(f"samples must be >= 2 dropout passes, got {samples}")
    return _mc_dropout(apply_fn, variables, images, _checks.default_rng(rng),
                       samples=int(samples))


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _ensemble(apply_fn, stacked, images):
    return sampling_uncertainty(jax.vmap(lambda v: _logits_of(apply_fn(v, images)))(stacked))


def ensemble(apply_fn, members_variables: Sequence, images) -> SampledUncertainty:
    """Deep ensemble (Lakshminarayanan et al. 2017): one pass per member's variables
    (same structure), `images` `[B,H,W,3]` in [0,1]. Returns `SampledUncertainty`."""
    _checks.check_images(images)
    members = list(members_variables)
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members' variables, got {len(members)}")
    try:
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
    except ValueError as err:
        raise ValueError(f"ensemble members must share one variable structure: {err}") from None
    return _ensemble(apply_fn, stacked, images)


# ----------------------------------------------------------------------------- autodiff
def _layer_path(layer) -> tuple[str, ...]:
    path = tuple(layer.split("/")) if isinstance(layer, str) else tuple(layer)
    if path and path[-1] == "kernel":
        path = path[:-1]
    if not path or not all(isinstance(k, str) for k in path):
        raise ValueError(f"layer must be a path into params, e.g. ('head', 'final') or "
                         f"'head/final', got {layer!r}")
    return path


def _layer(variables, path):
    node = variables["params"] if isinstance(variables, Mapping) and "params" in variables else None
    if node is None:
        raise ValueError("variables must be a mapping with 'params' (Flax variables)")
    for i, key in enumerate(path):
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(f"params have no layer {'/'.join(path[:i + 1])!r}")
        node = node[key]
    if not isinstance(node, Mapping) or "kernel" not in node:
        raise ValueError(f"params/{'/'.join(path)} must be a layer with a 'kernel'")
    return node


def _replace(tree, path, value):
    """A copy of nested mapping `tree` with `tree[path]` set to `value`."""
    if not path:
        return value
    out = dict(tree)
    out[path[0]] = _replace(tree[path[0]], path[1:], value)
    return out


@functools.partial(jax.jit, static_argnames=("apply_fn", "layer", "label", "mode", "bias"))
def _per_pixel_gradients(apply_fn, variables, images, *, layer, label, mode, bias):
    names = ("kernel", "bias") if bias else ("kernel",)
    module = _layer(variables, layer)
    out = apply_fn(variables, images)
    _checks.check_outputs(out, "decoder_logits")
    z0 = jax.lax.stop_gradient(out["decoder_logits"])
    c = z0.shape[-1]
    y = (jax.nn.one_hot(jnp.argmax(z0, -1), c, dtype=z0.dtype) if label == "onehot"
         else jnp.full_like(z0, 1.0 / c))
    w_reference = jax.nn.softmax(z0, -1) * (1.0 - y)

    def pixel_losses(params):
        v = _replace(variables, ("params",) + layer, {**module, **params})
        z = apply_fn(v, images)["decoder_logits"]
        if mode == "exact":   # cross-entropy against the auxiliary label
            return -jnp.sum(y * jax.nn.log_softmax(z, -1), -1)
        return jnp.sum(w_reference * z, -1)   # gradient w.r.t. z: s ⊙ (1 − y)

    jac = jax.jacrev(pixel_losses)({n: module[n] for n in names})
    lead = z0.shape[:-1]
    return jnp.concatenate([jac[n].reshape(lead + (-1,)) for n in names], axis=-1)


def per_pixel_gradients(apply_fn, variables, images, *, layer, label: str = "onehot",
                        mode: str = "exact", bias: bool = False):
    """∇_θ L_ab of every decoder pixel's own loss by autodiff → `[B,h,w,N]`.

    θ: the kernel (then, with `bias`, the bias) of `layer`, a path into `params` such as
    `("head", "final")`, flattened to N entries. L_ab: `exact` the cross-entropy
    −Σ_c y_c log s_c of pixel (a, b)'s decoder logits against the auxiliary label y
    (`onehot` of the unperturbed argmax, or `uniform` 1/C, held fixed); `reference` the
    surrogate Σ_c w_c z_c with fixed w = s ⊙ (1 − y), whose gradient w.r.t. the logits is
    the published PGN code's. BatchNorm in inference mode. Slow (B·h·w backward passes):
    a reference for small images.
    """
    _checks.check_images(images)
    _checks.check_choice("label", label, LABELS)
    _checks.check_choice("mode", mode, MODES)
    path = _layer_path(layer)
    module = _layer(variables, path)
    if bias and "bias" not in module:
        raise ValueError(f"bias=True but params/{'/'.join(path)} has no 'bias'")
    return _per_pixel_gradients(apply_fn, variables, images, layer=path, label=label,
                                mode=mode, bias=bool(bias))


def gradient_norm(apply_fn, variables, images, *, layer, label: str = "onehot", p: float = 2.0,
                  mode: str = "exact", bias: bool = False, log: bool = False):
    """Entrywise ‖∇_θ L_ab‖_p `[B,h,w]` of `per_pixel_gradients` (decoder resolution).

    For `layer=("head", "final")` this is `pgn.pgn` and for `("head", "penultimate")`
    `pgn.pgn_penultimate` (in `exact` mode), computed the slow way. `log`: log-norm.
    """
    try:
        p = float(p)
    except TypeError:
        raise ValueError(f"p must be a number > 0 (static), got {p!r}") from None
    if not (p > 0 and math.isfinite(p)):
        raise ValueError(f"p must be a number > 0, got {p!r}")
    g = per_pixel_gradients(apply_fn, variables, images, layer=layer, label=label, mode=mode,
                            bias=bias)
    out = log_pnorm(g, p)
    return out if log else jnp.exp(out)


# --------------------------------------------------------------------------- method table

class SegmentationEstimate(NamedTuple):
    """What every segmentation method returns: `probs` `[B,H,W,C]` (the method's predictive
    probabilities) and `uncertainty` `[B,H,W]` (higher = less trustworthy / more anomalous)."""
    probs: jax.Array
    uncertainty: jax.Array


class SegmentationMethod(NamedTuple):
    help: str
    needs: str   # "" | "dropout" | "ensemble"


#: The segmentation methods, named once (`jaxdepth predict` and the experiments use these).
SEGMENTATION_METHODS = {
    "softmax": SegmentationMethod("1 − maximum softmax probability", ""),
    "entropy": SegmentationMethod("softmax entropy / log C", ""),
    "pgn": SegmentationMethod("PGN: ‖∇L‖_p of the last 1×1 conv for an auxiliary label "
                              "(--label onehot|uniform, --p), closed form", ""),
    "pgn_penultimate": SegmentationMethod("PGN of the k×k conv before it", ""),
    "mc_dropout": SegmentationMethod("predictive entropy of --samples dropout passes "
                                     "(dropout-trained models)", "dropout"),
    "ensemble": SegmentationMethod("predictive entropy over the members (an ensemble "
                                   "checkpoint)", "ensemble"),
}


def segmentation_method(name: str, apply_fn, variables, *, label: str = "onehot",
                        p: float = 0.5, mode: str = "exact", samples: int = 8):
    """`fn(images [B,H,W,3], key) -> SegmentationEstimate` of method `name` (see
    `SEGMENTATION_METHODS`), jit-compiled once. `variables`: a list of member variables for
    `ensemble`. PGN maps are resized bilinearly (half-pixel centres) to the input."""
    from jaxdepth.uncertainty import pgn as _pgn

    _checks.check_choice("method", name, tuple(SEGMENTATION_METHODS))
    if name == "ensemble":
        members = list(variables)
        if len(members) < 2:
            raise ValueError(f"ensemble needs at least 2 members' variables, got {len(members)}")
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
        fn = jax.jit(lambda x, key: _ensemble(apply_fn, stacked, x))
        return lambda x, key: SegmentationEstimate(*fn(x, key)[:2])
    if name == "mc_dropout":
        if int(samples) < 2:
            raise ValueError(f"samples must be >= 2 dropout passes, got {samples}")
        def mc(x, key):
            s = _mc_dropout(apply_fn, variables, x, key, samples=int(samples))
            return SegmentationEstimate(s.probs, s.entropy)
        return jax.jit(mc)
    head = _pgn.head_of(variables) if name.startswith("pgn") else None

    def one(x, key):
        out = apply_fn(variables, x)
        probs = jax.nn.softmax(out["logits"], axis=-1)
        if name == "softmax":
            return SegmentationEstimate(probs, 1.0 - probs.max(-1))
        if name == "entropy":
            return SegmentationEstimate(probs, probs_entropy(probs, normalise=True))
        z, feats = out["decoder_logits"], out["features"]
        if name == "pgn":
            u = _pgn.pgn(z, feats["final_in"], label=label, p=p, mode=mode,
                         bias=head.final_bias is not None)
        else:
            u = _pgn.pgn_penultimate(z, feats["final_in"], feats["penultimate_in"], head,
                                     label=label, p=p, mode=mode)
        b, h, w = x.shape[:3]
        u = jax.image.resize(u[..., None], (b, h, w, 1), "bilinear", antialias=False)[..., 0]
        return SegmentationEstimate(probs, u)

    return jax.jit(one)
