"""Gradient-based uncertainty (Hornauer & Belagiannis, ECCV 2022, Sec. 3; and the
"Revisiting" extension: other references, several layers).

1. `d = f(x)` and `d' = f(T(x))` in one batched forward of `[x, T(x)]`.
2. `d_ref = T⁻¹(d')`, held constant.
3. Per image `L = mean_valid (d − d_ref)²` (Eq. 4) `+ λ·mean σ²` for predictive
   models (Eq. 5, λ = `variance_weight`, 2.0 in the paper, σ = exp(log_sigma)).
4. `g_i = ∂L/∂a_i` for each tap (Eq. 1): the gradient w.r.t. a zero offset added
   to the activation, for the *sum* of per-image losses — with inference-mode
   BatchNorm images don't interact, so this is each image's own gradient.
5. Per tap: reduce over channels (signed max by default, Eq. 2), min-max per
   image (Eq. 3), resize to the input size (bilinear as the reference code; the
   paper text says nearest).
6. Several taps: combine per pixel (population std across layers as the
   reference; mean or max).

Differences from the reference implementation (GrUMoDepth), by design: maps are
normalised per image, not per batch, so an image's map does not depend on its
batch; the rotated reference leaves out pixels that have no back-rotated
prediction instead of giving them infinite depth.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxdepth.uncertainty import _checks
from jaxdepth.uncertainty.maps import (AGGREGATIONS, REDUCTIONS, UPSAMPLING, Estimate,
                                       aggregate_maps, normalize_per_image, reduce_channels,
                                       resize)
from jaxdepth.uncertainty.transforms import make_reference

REFERENCES = ("flip", "gray", "noise", "rot", "var", "gt")
_VAR_MEMBERS = ("flip", "gray", "noise", "rot")


def _masked_mean(x, valid):
    """Per-image mean of `[B,H,W,1]` over `valid` pixels (all if None) → `[B]`."""
    if valid is None:
        return x.mean(axis=(1, 2, 3))
    valid = jnp.broadcast_to(valid, x.shape)
    return jnp.sum(jnp.where(valid, x, 0.0), (1, 2, 3)) / jnp.maximum(valid.sum((1, 2, 3)), 1)


def auxiliary_loss(depth, references, *, variance: bool = False):
    """Per-image auxiliary loss `[B]` of `depth` `[B,H,W,1]` against references.

    `references` is a list of `(d_ref, valid)` with `valid` a boolean mask
    broadcastable to `[B,H,W,1]` or None. Default: mean squared difference to the
    single reference (Eq. 4). `variance=True`: mean over pixels of the unbiased
    variance across `[depth, *refs]`, counting at each pixel only the valid ones.
    """
    if not variance:
        (ref, valid), = references
        return _masked_mean((depth - ref) ** 2, valid)
    preds = [depth] + [r for r, _ in references]
    masks = [jnp.ones_like(depth, bool)] + [
        jnp.ones_like(depth, bool) if v is None else jnp.broadcast_to(v, depth.shape)
        for _, v in references]
    p, m = jnp.stack(preds), jnp.stack(masks)
    n = m.sum(0)
    mean = jnp.sum(jnp.where(m, p, 0.0), 0) / n
    var = jnp.sum(jnp.where(m, (p - mean) ** 2, 0.0), 0) / jnp.maximum(n - 1, 1)
    return var.mean(axis=(1, 2, 3))


def _zero_offsets(apply_fn, variables, batch, taps):
    shapes = jax.eval_shape(lambda x: apply_fn(variables, x)["features"], batch)
    missing = [t for t in taps if t not in shapes]
    if missing:
        raise ValueError(f"taps {missing} not among the model's features {sorted(shapes)}")
    return {t: jnp.zeros(shapes[t].shape, shapes[t].dtype) for t in taps}


def feature_gradients(apply_fn, variables, images, *, taps: Sequence[str] = ("dec6",),
                      reference: str = "flip", variance_weight: float = 0.0, depth_gt=None,
                      rng=None, rot_angle: float = 10.0, noise_std: float = 0.01,
                      batch_reference: bool = True):
    """Gradients of the auxiliary loss w.r.t. the tapped activations (steps 1–4).

    Returns `(depth [B,H,W,1], grads {tap: [B,h,w,c]}, loss [B])`.
    `batch_reference=False` runs the reference forward as a separate call, so
    the backward pass covers only the original images (fewer FLOPs, same maps).
    """
    b = images.shape[0]
    members = _VAR_MEMBERS if reference == "var" else (() if reference == "gt" else (reference,))
    refs = [make_reference(n, jax.random.fold_in(_checks.default_rng(rng), i),
                           angle=rot_angle, noise_std=noise_std) for i, n in enumerate(members)]
    ref_inputs = [r.transform(images) for r in refs]
    batched = batch_reference and bool(refs)
    batch = jnp.concatenate([images] + ref_inputs) if batched else images
    ref_depth = None
    if refs and not batched:
        ref_depth = apply_fn(variables, jnp.concatenate(ref_inputs))["depth"]

    def loss_fn(offsets):
        out = apply_fn(variables, batch, offsets)
        _checks.check_outputs(out, "depth", "features")
        depth = out["depth"]
        others = depth[b:] if batched else ref_depth
        if reference == "gt":
            valid = jnp.isfinite(depth_gt) & (depth_gt > 0)
            pairs = [(jnp.where(valid, depth_gt, 0.0), valid)]
        else:
            others = jax.lax.stop_gradient(others)
            pairs = [r.inverse(others[k * b:(k + 1) * b]) for k, r in enumerate(refs)]
        loss = auxiliary_loss(depth[:b], pairs, variance=reference == "var")
        if variance_weight:
            _checks.check_outputs(out, "log_sigma")
            loss = loss + variance_weight * jnp.mean(jnp.exp(out["log_sigma"][:b]) ** 2, (1, 2, 3))
        return loss.sum(), (depth[:b], loss)

    offsets = _zero_offsets(apply_fn, variables, batch, taps)
    grads, (depth, loss) = jax.grad(loss_fn, has_aux=True)(offsets)
    return depth, {t: g[:b] for t, g in grads.items()}, loss


@functools.partial(jax.jit, static_argnames=(
    "apply_fn", "taps", "reference", "reduce", "aggregate", "variance_weight", "upsample",
    "normalize", "absolute", "rot_angle", "noise_std", "batch_reference"))
def _gradient_uncertainty(apply_fn, variables, images, depth_gt, rng, *, taps, reference,
                          reduce, aggregate, variance_weight, upsample, normalize, absolute,
                          rot_angle, noise_std, batch_reference):
    depth, grads, _ = feature_gradients(
        apply_fn, variables, images, taps=taps, reference=reference,
        variance_weight=variance_weight, depth_gt=depth_gt, rng=rng, rot_angle=rot_angle,
        noise_std=noise_std, batch_reference=batch_reference)
    h, w = images.shape[1:3]
    maps = []
    for tap in taps:
        g = jnp.abs(grads[tap]) if absolute else grads[tap]
        u = reduce_channels(g, reduce)
        if normalize:
            u = normalize_per_image(u)
        maps.append(resize(u, h, w, upsample))
    return Estimate(depth, aggregate_maps(maps, aggregate))


def gradient_uncertainty(apply_fn, variables, images, *, taps: Sequence[str] = ("dec6",),
                         reference: str = "flip", reduce: str = "max", aggregate: str = "std",
                         variance_weight: float = 0.0, upsample: str = "bilinear",
                         normalize: bool = True, depth_gt=None, rng=None,
                         absolute: bool = False, rot_angle: float = 10.0,
                         noise_std: float = 0.01, batch_reference: bool = True) -> Estimate:
    """Post hoc gradient uncertainty of a fixed depth model.

    Args:
      apply_fn: `apply_fn(variables, images, offsets=None) -> Mapping` with `depth`
        `[B,H,W,1]`, `features` {tap: `[B,h,w,c]`} (and `log_sigma` if
        `variance_weight` > 0); `offsets[tap]` is added to that activation.
      variables: the model's variables (any pytree).
      images: `[B,H,W,3]` float32 in [0,1].
      taps: feature names to differentiate (paper: `dec6`).
      reference: `flip` (default) | `gray` | `noise` (σ = `noise_std`, uses `rng`)
        | `rot` (`rot_angle` degrees; pixels without back-rotated prediction are
        left out of the loss) | `var` (variance across the prediction and all
        four references) | `gt` (`depth_gt` `[B,H,W,1]`; invalid where ≤ 0/NaN).
      reduce: channel reduction `max` | `sum` | `mean` | `norm` of the gradient.
      aggregate: per-pixel combination of several taps' maps: `std` | `mean` | `max`.
      variance_weight: λ of Eq. 5 (2.0 for Log/Self models in the paper).
      upsample: `bilinear` (reference code) | `nearest` (paper text).
      normalize: per-image min-max of each tap's map (Eq. 3).
      rng: PRNG key for `noise`/`var` (None: key 0).
      absolute: take |g| before reducing (the paper and reference use signed g).
      batch_reference: run the reference forward batched with the original
        (one call, default) or as a separate call.
    Returns:
      `Estimate(depth, uncertainty)`, both `[B,H,W,1]`; uncertainty in [0,1]
      when normalised.
    """
    _checks.check_images(images)
    taps = (taps,) if isinstance(taps, str) else tuple(taps)
    if not taps:
        raise ValueError("taps must name at least one feature, e.g. ('dec6',)")
    _checks.check_choice("reference", reference, REFERENCES)
    _checks.check_choice("reduce", reduce, REDUCTIONS)
    _checks.check_choice("aggregate", aggregate, AGGREGATIONS)
    _checks.check_choice("upsample", upsample, UPSAMPLING)
    if reference == "gt":
        if depth_gt is None:
            raise ValueError("reference='gt' needs depth_gt [B,H,W,1]")
        if tuple(depth_gt.shape) != tuple(images.shape[:3]) + (1,):
            raise ValueError(f"depth_gt must be [B,H,W,1] = {tuple(images.shape[:3]) + (1,)}, "
                             f"got {tuple(depth_gt.shape)}")
    return _gradient_uncertainty(
        apply_fn, variables, images, depth_gt, rng, taps=taps, reference=reference,
        reduce=reduce, aggregate=aggregate, variance_weight=float(variance_weight),
        upsample=upsample, normalize=bool(normalize), absolute=bool(absolute),
        rot_angle=float(rot_angle), noise_std=float(noise_std),
        batch_reference=bool(batch_reference))
