"""Gradient-based uncertainty (Hornauer & Belagiannis, ECCV 2022, Sec. 3; and the
"Revisiting" extension: other references, feature references, several layers).

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
   reference; mean, max, or the layer-robust `rank` / `zmean`, see `aggregate_maps`).

Feature references (`feature_noise`, `feature_dropout`; "Revisiting"): the reference
is the model's own output with the encoder feature `feature_tap` perturbed, through
the same offsets mechanism — the perturbation is an offset at `feature_tap`
(`transforms.feature_offset`). It needs the unperturbed feature, so these references
cost one extra plain forward of the B images (stage 1: read `f`, held constant), then
the usual forward + backward of `[x, x]` with the offset on the second half
(`batch_reference=True`), or a separate forward of the perturbed reference and a
forward + backward of `x` alone (`batch_reference=False`: the cheaper of the two here,
2 forwards + 1 forward/backward of B images instead of 1 forward of B + 1
forward/backward of 2B; same maps up to float rounding).

Differences from the reference implementation (GrUMoDepth), by design: maps are
normalised per image, not per batch, so an image's map does not depend on its
batch; the rotated reference leaves out pixels that have no back-rotated
prediction instead of giving them infinite depth.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdepth.uncertainty import _checks
from jaxdepth.uncertainty.maps import (AGGREGATIONS, REDUCTIONS, UPSAMPLING, Estimate,
                                       aggregate_maps, normalize_per_image, reduce_channels,
                                       resize)
from jaxdepth.uncertainty.transforms import (FEATURE_REFERENCES, IMAGE_REFERENCES,
                                             feature_offset, make_reference)

REFERENCES = IMAGE_REFERENCES + ("var", "gt") + FEATURE_REFERENCES
#: what `var` may combine (`var_members`), and its default (the four image references)
VAR_MEMBER_CHOICES = IMAGE_REFERENCES + FEATURE_REFERENCES
VAR_MEMBERS = ("flip", "gray", "noise", "rot")
DEFAULT_TAP = "dec6"


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


# ----------------------------------------------------------------------- options and checks

def _module(apply_fn):
    """The module `apply_fn` is a bound method of (`model.apply`), or None."""
    return getattr(apply_fn, "__self__", None)


def resolve_taps(apply_fn, taps=None) -> tuple[str, ...]:
    """`taps` as a tuple; None: the model's `default_tap` where `apply_fn` is a bound
    method of a module that has one (`DepthNet`: `dec6`, `MonoViT`: `X_13_Conv_0`),
    else `dec6`."""
    if taps is None:
        return (getattr(_module(apply_fn), "default_tap", None) or DEFAULT_TAP,)
    taps = (taps,) if isinstance(taps, str) else tuple(taps)
    if not taps:
        raise ValueError("taps must name at least one feature, e.g. ('dec6',), or be None "
                         "for the model's default tap")
    return taps


def reference_members(reference: str, var_members: Sequence[str] = VAR_MEMBERS) -> tuple:
    """The references `reference` is made of: itself, `var_members` for `var`, none for `gt`."""
    _checks.check_choice("reference", reference, REFERENCES)
    if reference == "gt":
        return ()
    if reference != "var":
        return (reference,)
    members = (var_members,) if isinstance(var_members, str) else tuple(var_members)
    if not members:
        raise ValueError(f"var_members must name at least one reference from "
                         f"{VAR_MEMBER_CHOICES}")
    for m in members:
        _checks.check_choice("var_members entry", m, VAR_MEMBER_CHOICES)
    return members


def check_feature_scale(members, feature_scale: float):
    """`feature_scale` must be a finite number > 0, and < 1 (a rate) for `feature_dropout`.
    A traced value (`feature_gradients` under `jax.jit` with the scale an argument) is
    passed through unchecked."""
    if isinstance(feature_scale, jax.core.Tracer):
        return feature_scale
    scale = float(feature_scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"feature_scale must be > 0 (the relative noise std / the dropout "
                         f"rate), got {feature_scale!r}")
    if "feature_dropout" in members and scale >= 1:
        raise ValueError(f"feature_scale is the dropout rate of feature_dropout and must be "
                         f"< 1, got {feature_scale!r}")
    return scale


def _feature_shapes(apply_fn, variables, images):
    def features(x):
        out = apply_fn(variables, x)
        _checks.check_outputs(out, "depth", "features")
        return out["features"]
    return jax.eval_shape(features, images)


def _known_taps(apply_fn, shapes, hint: bool = True) -> str:
    """The valid names: the module's `tap_names` where `apply_fn` is `model.apply` of a
    model that lists them, else the names in its `features`."""
    module = _module(apply_fn)
    names = getattr(module, "tap_names", None)
    if names:
        text = f"{type(module).__name__} takes {', '.join(names)}"
    else:
        text = f"the model's features are {', '.join(sorted(shapes))}"
    default = getattr(module, "default_tap", None)
    if default and hint:
        text += f" (its default_tap is {default!r}; taps=None picks it)"
    return text


def model_with_features(apply_fn, variables, images, taps, feature_taps=()):
    """`(apply_fn, feature shapes)` with every name in `taps` and `feature_taps` among
    the model's `features`; ValueError naming the valid taps otherwise.

    A `DepthNet.apply` (a module with `encoder_taps=False`) asked for an encoder tap
    it does not list is replaced by `module.clone(encoder_taps=True).apply` (same
    outputs, the encoder features listed too)."""
    shapes = _feature_shapes(apply_fn, variables, images)
    wanted = tuple(taps) + tuple(feature_taps)
    module = _module(apply_fn)
    if any(t not in shapes for t in wanted) and getattr(module, "encoder_taps", None) is False \
            and all(t in shapes or t in getattr(module, "tap_names", ()) for t in wanted):
        apply_fn = module.clone(encoder_taps=True).apply
        shapes = _feature_shapes(apply_fn, variables, images)
    missing = [t for t in taps if t not in shapes]
    if missing:
        raise ValueError(f"unknown tap(s) {missing}; {_known_taps(apply_fn, shapes)}")
    missing = [t for t in feature_taps if t not in shapes]
    if missing:
        raise ValueError(f"unknown feature_tap {missing[0]!r} (the feature that "
                         f"feature_noise / feature_dropout perturb); "
                         f"{_known_taps(apply_fn, shapes, hint=False)}")
    return apply_fn, shapes


# ------------------------------------------------------------------------------ gradients

class _Plan(NamedTuple):
    apply_fn: Callable          # the model (cloned to list `feature_tap` where needed)
    shapes: dict                # tap → ShapeDtypeStruct of the features at batch B
    refs: list                  # per member: its image `Reference`, or None (a feature one)
    ref_inputs: list            # per member: its input `[B,H,W,3]`
    perturb: jax.Array | None   # the `feature_tap` offsets of the members, `[k·B,h,w,c]`


def _plan(apply_fn, variables, images, taps, members, *, rng, rot_angle, noise_std,
          feature_tap, feature_scale) -> _Plan:
    """Every reference member's input and `feature_tap` offset (stage 1 for the feature
    references: one plain forward to read the unperturbed feature, held constant)."""
    features = any(n in FEATURE_REFERENCES for n in members)
    if features:
        feature_scale = check_feature_scale(members, feature_scale)
    apply_fn, shapes = model_with_features(apply_fn, variables, images, taps,
                                           (feature_tap,) if features else ())
    key = _checks.default_rng(rng)
    keys = [jax.random.fold_in(key, i) for i in range(len(members))]
    refs = [make_reference(n, keys[i], angle=rot_angle, noise_std=noise_std)
            if n in IMAGE_REFERENCES else None for i, n in enumerate(members)]
    ref_inputs = [r.transform(images) if r is not None else images for r in refs]
    perturb = None
    if features:
        f = jax.lax.stop_gradient(apply_fn(variables, images)["features"][feature_tap])
        perturb = jax.lax.stop_gradient(jnp.concatenate([
            feature_offset(n, f, keys[i], feature_scale) if refs[i] is None
            else jnp.zeros_like(f) for i, n in enumerate(members)]))
    return _Plan(apply_fn, dict(shapes), refs, ref_inputs, perturb)


def _ref_forward(plan: _Plan, variables, feature_tap):
    """The members' predictions on their inputs, one forward of `[k·B,...]`."""
    offsets = None if plan.perturb is None else {feature_tap: plan.perturb}
    return plan.apply_fn(variables, jnp.concatenate(plan.ref_inputs), offsets)["depth"]


def _map_back(refs, others, b):
    return [r.inverse(others[k * b:(k + 1) * b]) if r is not None
            else (others[k * b:(k + 1) * b], None) for k, r in enumerate(refs)]


def reference_predictions(apply_fn, variables, images, *, reference: str = "flip", rng=None,
                          rot_angle: float = 10.0, noise_std: float = 0.01,
                          feature_tap: str = "enc4", feature_scale: float = 0.1,
                          var_members: Sequence[str] = VAR_MEMBERS):
    """The reference depths `d_ref` the auxiliary loss compares with: a list of
    `(d_ref [B,H,W,1], valid or None)`, one per member of `reference` (one; the
    `var_members` for `var`), in the original frame, as constants. Options and random
    draws as `gradient_uncertainty` (`gt` has no predicted reference: an empty list)."""
    members = reference_members(reference, var_members)
    if not members:
        return []
    plan = _plan(apply_fn, variables, images, (), members, rng=rng, rot_angle=rot_angle,
                 noise_std=noise_std, feature_tap=feature_tap, feature_scale=feature_scale)
    others = jax.lax.stop_gradient(_ref_forward(plan, variables, feature_tap))
    return _map_back(plan.refs, others, images.shape[0])


def feature_gradients(apply_fn, variables, images, *, taps: Sequence[str] | None = None,
                      reference: str = "flip", variance_weight: float = 0.0, depth_gt=None,
                      rng=None, rot_angle: float = 10.0, noise_std: float = 0.01,
                      batch_reference: bool | None = None, feature_tap: str = "enc4",
                      feature_scale: float = 0.1,
                      var_members: Sequence[str] = VAR_MEMBERS):
    """Gradients of the auxiliary loss w.r.t. the tapped activations (steps 1–4).

    Returns `(depth [B,H,W,1], grads {tap: [B,h,w,c]}, loss [B])`: the gradients
    w.r.t. the taps of the plain (unperturbed) pass; every reference is held constant
    (`reference_predictions` gives them). `batch_reference=False` runs the reference
    forward as a separate call, so the backward pass covers only the original images
    (fewer FLOPs, same maps). Options as `gradient_uncertainty`. Reference member `i`
    (0 for a single reference; the position in `var_members` for `var`) draws with
    `jax.random.fold_in(rng, i)`.
    """
    taps = resolve_taps(apply_fn, taps)
    members = reference_members(reference, var_members)
    plan = _plan(apply_fn, variables, images, taps, members, rng=rng, rot_angle=rot_angle,
                 noise_std=noise_std, feature_tap=feature_tap, feature_scale=feature_scale)
    apply_fn, shapes, refs = plan.apply_fn, plan.shapes, plan.refs
    b = images.shape[0]
    batched = _checks.batched_default(batch_reference) and bool(members)
    batch = jnp.concatenate([images] + plan.ref_inputs) if batched else images
    const = {}  # constant offsets added in the differentiated pass
    if batched and plan.perturb is not None:
        const[feature_tap] = jnp.concatenate([
            jnp.zeros((b,) + plan.perturb.shape[1:], plan.perturb.dtype), plan.perturb])
    ref_depth = None
    if members and not batched:
        ref_depth = _ref_forward(plan, variables, feature_tap)

    def loss_fn(offsets):
        offsets = dict(offsets)
        for t, c in const.items():
            offsets[t] = offsets[t] + c if t in offsets else c
        out = apply_fn(variables, batch, offsets)
        _checks.check_outputs(out, "depth", "features")
        depth = out["depth"]
        if reference == "gt":
            valid = jnp.isfinite(depth_gt) & (depth_gt > 0)
            pairs = [(jnp.where(valid, depth_gt, 0.0), valid)]
        else:
            others = jax.lax.stop_gradient(depth[b:] if batched else ref_depth)
            pairs = _map_back(refs, others, b)
        loss = auxiliary_loss(depth[:b], pairs, variance=reference == "var")
        if variance_weight:
            _checks.check_outputs(out, "log_sigma")
            loss = loss + variance_weight * jnp.mean(jnp.exp(out["log_sigma"][:b]) ** 2, (1, 2, 3))
        return loss.sum(), (depth[:b], loss)

    n = batch.shape[0]
    offsets = {t: jnp.zeros((n,) + shapes[t].shape[1:], shapes[t].dtype) for t in taps}
    grads, (depth, loss) = jax.grad(loss_fn, has_aux=True)(offsets)
    return depth, {t: g[:b] for t, g in grads.items()}, loss


@functools.partial(jax.jit, static_argnames=(
    "apply_fn", "taps", "reference", "reduce", "aggregate", "variance_weight", "upsample",
    "normalize", "absolute", "rot_angle", "noise_std", "batch_reference", "feature_tap",
    "feature_scale", "var_members"))
def _gradient_uncertainty(apply_fn, variables, images, depth_gt, rng, *, taps, reference,
                          reduce, aggregate, variance_weight, upsample, normalize, absolute,
                          rot_angle, noise_std, batch_reference, feature_tap, feature_scale,
                          var_members):
    depth, grads, _ = feature_gradients(
        apply_fn, variables, images, taps=taps, reference=reference,
        variance_weight=variance_weight, depth_gt=depth_gt, rng=rng, rot_angle=rot_angle,
        noise_std=noise_std, batch_reference=batch_reference, feature_tap=feature_tap,
        feature_scale=feature_scale, var_members=var_members)
    h, w = images.shape[1:3]
    maps = []
    for tap in taps:
        g = jnp.abs(grads[tap]) if absolute else grads[tap]
        u = reduce_channels(g, reduce)
        if normalize:
            u = normalize_per_image(u)
        maps.append(resize(u, h, w, upsample))
    return Estimate(depth, aggregate_maps(maps, aggregate))


def gradient_uncertainty(apply_fn, variables, images, *, taps: Sequence[str] | None = None,
                         reference: str = "flip", reduce: str = "max", aggregate: str = "std",
                         variance_weight: float = 0.0, upsample: str = "bilinear",
                         normalize: bool = True, depth_gt=None, rng=None,
                         absolute: bool = False, rot_angle: float = 10.0,
                         noise_std: float = 0.01, batch_reference: bool | None = None,
                         feature_tap: str = "enc4", feature_scale: float = 0.1,
                         var_members: Sequence[str] = VAR_MEMBERS) -> Estimate:
    """Post hoc gradient uncertainty of a fixed depth model.

    Args:
      apply_fn: `apply_fn(variables, images, offsets=None) -> Mapping` with `depth`
        `[B,H,W,1]`, `features` {tap: `[B,h,w,c]`} (and `log_sigma` if
        `variance_weight` > 0); `offsets[tap]` is added to that activation.
      variables: the model's variables (any pytree).
      images: `[B,H,W,3]` float32 in [0,1] (a size the model takes: DepthNet and
        MonoViT need multiples of 32).
      taps: feature names to differentiate. None (default): the model's
        `default_tap` when `apply_fn` is a bound method of a module that has one
        (`model.apply`: DepthNet `dec6`, the paper's; MonoViT `X_13_Conv_0`), else
        `dec6`. A name the model does not have raises a ValueError listing its taps.
      reference: `flip` (default) | `gray` | `noise` (σ = `noise_std`, uses `rng`)
        | `rot` (`rot_angle` degrees; pixels without back-rotated prediction are
        left out of the loss) | `var` (unbiased variance across the prediction and
        the `var_members` references) | `gt` (`depth_gt` `[B,H,W,1]`; invalid
        where ≤ 0/NaN) | `feature_noise` | `feature_dropout` (the model's own output
        with the feature `feature_tap` perturbed; see `feature_scale`).
      reduce: channel reduction `max` | `sum` | `mean` | `norm` of the gradient.
      aggregate: per-pixel combination of several taps' maps (`aggregate_maps`):
        `std` (population std across layers, the public ECCV code's rule) | `mean` |
        `max` | `rank` (per-layer per-image percentile ranks averaged, ties averaged;
        invariant to any strictly increasing transform of a layer's map) | `zmean`
        (per-layer per-image z-scores averaged; invariant to positive affine maps of
        a layer; not in [0,1]). One tap: its map whatever `aggregate`.
      variance_weight: λ of Eq. 5 (2.0 for Log/Self models in the paper).
      upsample: `bilinear` (reference code) | `nearest` (paper text).
      normalize: per-image min-max of each tap's map (Eq. 3).
      rng: PRNG key for `noise`, the feature references and `var` (None: key 0);
        member i of the references draws with `fold_in(rng, i)`.
      absolute: take |g| before reducing (the paper and reference use signed g).
      batch_reference: run the reference forward batched with the original (one call)
        or as a separate call (the backward then covers only the original images; for
        the feature references also fewer forwards, see the module doc); None (default):
        separate on CPU, batched on GPU / TPU (`_checks.batched_default`).
      feature_tap: the feature the feature references perturb (`enc4`, the deepest
        encoder output, by default; any name in the model's `features` — a DepthNet
        `model.apply` is cloned with `encoder_taps=True` to read it).
      feature_scale: `feature_noise`: noise std relative to the feature's own std
        (population std of each image's feature over H, W, C): `offset = scale ·
        std(f) · ε`; `feature_dropout`: the channel-dropout rate (whole channels
        zeroed per image, kept ones ×1/(1 − rate)): `offset = f · (mask/(1 − rate) −
        1)`. Must be > 0 (and < 1 for dropout).
      var_members: the references `var` combines, any of flip, gray, noise, rot,
        feature_noise, feature_dropout (default: the four image references).
    Returns:
      `Estimate(depth, uncertainty)`, both `[B,H,W,1]`; uncertainty in [0,1]
      when normalised (except `aggregate="zmean"` over several taps).
    """
    _checks.check_images(images)
    taps = resolve_taps(apply_fn, taps)
    members = reference_members(reference, var_members)
    _checks.check_choice("reduce", reduce, REDUCTIONS)
    _checks.check_choice("aggregate", aggregate, AGGREGATIONS)
    _checks.check_choice("upsample", upsample, UPSAMPLING)
    if any(m in FEATURE_REFERENCES for m in members):
        feature_scale = check_feature_scale(members, feature_scale)
        if not isinstance(feature_tap, str) or not feature_tap:
            raise ValueError(f"feature_tap must be a tap name, got {feature_tap!r}")
    else:  # unused: keep them out of the compilation cache key
        feature_tap, feature_scale = "enc4", 0.1
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
        batch_reference=_checks.batched_default(batch_reference), feature_tap=str(feature_tap),
        feature_scale=float(feature_scale),
        var_members=members if reference == "var" else VAR_MEMBERS)
