"""The baselines of the gradient-uncertainty paper, as pure jit-compiled functions.

Each takes `apply_fn(variables, images, offsets=None, ...) -> Mapping`, `variables`
and `images` `[B,H,W,3]` in [0,1] and returns `Estimate(depth, uncertainty)`,
both `[B,H,W,1]`. `space` picks the quantity whose spread is the uncertainty:
`disp` (KITTI protocol: scaled disparity) or `depth` (NYU protocol).

- `post`: Monodepth's flip post-processing; uncertainty |p − flip(p_flip)|, not
  normalised; depth from the blended disparity (Godard et al. 2017).
- `var`: variance over the prediction and its flip, gray, noise and rotation
  references (each mapped back; rotation pixels without a prediction are left
  out of that pixel's variance); min-max normalised per image.
- `in_drop`: depth from a dropout-free pass; variance of `n` passes with channel
  dropout rate `p` after every decoder block; min-max normalised.
- `mc_drop`: `n` dropout passes of a model trained with dropout; depth from the
  mean, uncertainty the unbiased variance.
- `ensemble`: the same over a sequence of variable sets (Boot / Snap);
  `bayesian=True` adds Σ_m σ_m² of Log members (Poggi et al.).
- `predictive`: σ = exp(log_sigma) of a Log/Self model (`to_depth`: a disparity σ
  propagated to depth).

Sampling methods call `apply_fn(variables, images, dropout_rng=key)` (and
`dropout_rate=p` for `in_drop`); the samples are a `vmap` over keys, so the
encoder, which does not depend on the key, runs once and only the decoder runs
`n` times.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxdepth.uncertainty import _checks
from jaxdepth.uncertainty.maps import Estimate, normalize_per_image
from jaxdepth.uncertainty.transforms import hflip, make_reference

SPACES = ("disp", "depth")


def _to_depth(x, space):
    return 1.0 / x if space == "disp" else x


def post_process_blend(pred, pred_flipped_back):
    """Monodepth v1 post-processing of `[B,H,W,1]` maps: the left 5 % of columns
    come from the flipped pass, the right 5 % from the original, the rest is the
    mean, with 20×-steep linear ramps."""
    w = pred.shape[2]
    x = jnp.linspace(0.0, 1.0, w)
    left = (1.0 - jnp.clip(20.0 * (x - 0.05), 0.0, 1.0))[None, None, :, None]
    right = left[:, :, ::-1]
    mean = 0.5 * (pred + pred_flipped_back)
    return right * pred + left * pred_flipped_back + (1.0 - left - right) * mean


def _jit(*static):
    return functools.partial(jax.jit, static_argnames=("apply_fn",) + static)


def _forwards(apply_fn, variables, inputs, key, batched):
    """`apply_fn(variables, x)[key]` of each of `inputs` (same shapes): one forward of
    their concatenation (`batched`) or one forward each."""
    if batched:
        out = apply_fn(variables, jnp.concatenate(inputs))
        _checks.check_outputs(out, key)
        return jnp.split(out[key], len(inputs))
    outs = [apply_fn(variables, x) for x in inputs]
    _checks.check_outputs(outs[0], key)
    return [o[key] for o in outs]


@_jit("space", "batched")
def _post(apply_fn, variables, images, *, space, batched):
    p, p_flip = _forwards(apply_fn, variables, [images, hflip(images)], space, batched)
    p_back = hflip(p_flip)
    return Estimate(_to_depth(post_process_blend(p, p_back), space), jnp.abs(p - p_back))


def post(apply_fn, variables, images, *, space: str = "disp",
         batched: bool | None = None) -> Estimate:
    """Post: |p − flip(f(flip x))| and the post-processed depth (two passes: one batched
    forward of 2B or two of B; `batched=None`: the backend's faster form,
    `_checks.batched_default`)."""
    _checks.check_images(images)
    _checks.check_choice("space", space, SPACES)
    return _post(apply_fn, variables, images, space=space,
                 batched=_checks.batched_default(batched))


def _masked_variance(preds, masks):
    """Unbiased variance across the leading axis, counting only valid entries."""
    n = masks.sum(0)
    mean = jnp.sum(jnp.where(masks, preds, 0.0), 0) / n
    return jnp.sum(jnp.where(masks, (preds - mean) ** 2, 0.0), 0) / jnp.maximum(n - 1, 1)


@_jit("space", "rot_angle", "noise_std", "normalize", "batched")
def _var(apply_fn, variables, images, rng, *, space, rot_angle, noise_std, normalize, batched):
    refs = [make_reference(n, rng, angle=rot_angle, noise_std=noise_std)
            for n in ("flip", "gray", "noise", "rot")]
    p, *p_refs = _forwards(apply_fn, variables, [images] + [r.transform(images) for r in refs],
                           space, batched)
    preds, masks = [p], [jnp.ones_like(p, bool)]
    for r, p_ref in zip(refs, p_refs):
        back, valid = r.inverse(p_ref)
        preds.append(back)
        masks.append(jnp.ones_like(back, bool) if valid is None
                     else jnp.broadcast_to(valid, back.shape))
    u = _masked_variance(jnp.stack(preds), jnp.stack(masks))
    return Estimate(_to_depth(p, space), normalize_per_image(u) if normalize else u)


def var(apply_fn, variables, images, *, rng=None, space: str = "disp", rot_angle: float = 10.0,
        noise_std: float = 0.01, normalize: bool = True,
        batched: bool | None = None) -> Estimate:
    """Var: variance over 5 test-time augmentations (one batched forward of 5B, or five of
    B; `batched=None`: the backend's faster form, `_checks.batched_default`)."""
    _checks.check_images(images)
    _checks.check_choice("space", space, SPACES)
    return _var(apply_fn, variables, images, _checks.default_rng(rng), space=space,
                rot_angle=float(rot_angle), noise_std=float(noise_std), normalize=bool(normalize),
                batched=_checks.batched_default(batched))


def _dropout_samples(apply_fn, variables, images, rng, n, space, rate):
    kwargs = {} if rate is None else {"dropout_rate": rate}

    def one(key):
        out = apply_fn(variables, images, dropout_rng=key, **kwargs)
        _checks.check_outputs(out, space)
        return out[space]

    return jax.vmap(one)(jax.random.split(rng, n))


@_jit("n", "p", "space", "normalize")
def _in_drop(apply_fn, variables, images, rng, *, n, p, space, normalize):
    base = apply_fn(variables, images)[space]
    u = jnp.var(_dropout_samples(apply_fn, variables, images, rng, n, space, p), 0, ddof=1)
    return Estimate(_to_depth(base, space), normalize_per_image(u) if normalize else u)


def in_drop(apply_fn, variables, images, *, rng=None, n: int = 8, p: float | None = 0.2,
            space: str = "disp", normalize: bool = True) -> Estimate:
    """In-Drop (Mi et al.): inference-only dropout on a model trained without it.

    `p` is passed as `dropout_rate` to `apply_fn`; None uses the model's own rate.
    """
    _checks.check_images(images)
    _checks.check_choice("space", space, SPACES)
    if n < 2:
        raise ValueError(f"n must be >= 2 samples for a variance, got {n}")
    if p is not None and not 0.0 <= float(p) < 1.0:
        raise ValueError(f"p (the dropout rate) must lie in [0, 1) or be None, got {p!r}")
    return _in_drop(apply_fn, variables, images, _checks.default_rng(rng), n=int(n),
                    p=None if p is None else float(p), space=space, normalize=bool(normalize))


@_jit("n", "space", "normalize")
def _mc_drop(apply_fn, variables, images, rng, *, n, space, normalize):
    s = _dropout_samples(apply_fn, variables, images, rng, n, space, None)
    u = jnp.var(s, 0, ddof=1)
    return Estimate(_to_depth(s.mean(0), space), normalize_per_image(u) if normalize else u)


def mc_drop(apply_fn, variables, images, *, rng=None, n: int = 8, space: str = "disp",
            normalize: bool = False) -> Estimate:
    """Drop (MC dropout): mean and unbiased variance of `n` dropout passes."""
    _checks.check_images(images)
    _checks.check_choice("space", space, SPACES)
    if n < 2:
        raise ValueError(f"n must be >= 2 samples for a variance, got {n}")
    return _mc_drop(apply_fn, variables, images, _checks.default_rng(rng), n=int(n),
                    space=space, normalize=bool(normalize))


@_jit("space", "normalize", "bayesian")
def _ensemble(apply_fn, stacked, images, *, space, normalize, bayesian):
    def one(v):
        out = apply_fn(v, images)
        _checks.check_outputs(out, space, *(("log_sigma",) if bayesian else ()))
        return out[space], (jnp.exp(out["log_sigma"]) ** 2 if bayesian else 0.0)

    s, sigma2 = jax.vmap(one)(stacked)
    u = jnp.var(s, 0, ddof=1)
    if bayesian:
        u = u + sigma2.sum(0)
    return Estimate(_to_depth(s.mean(0), space), normalize_per_image(u) if normalize else u)


def ensemble(apply_fn, variables_seq: Sequence, images, *, space: str = "disp",
             normalize: bool = False, bayesian: bool = False) -> Estimate:
    """Boot / Snap: mean and unbiased variance over models with the same structure.

    `bayesian=True` (Log members): uncertainty = Var_m(p_m) + Σ_m exp(log_sigma_m)².
    """
    _checks.check_images(images)
    _checks.check_choice("space", space, SPACES)
    if len(variables_seq) < 2:
        raise ValueError(f"ensemble needs at least 2 variable sets, got {len(variables_seq)}")
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *variables_seq)
    return _ensemble(apply_fn, stacked, images, space=space, normalize=bool(normalize),
                     bayesian=bool(bayesian))


@_jit("normalize", "disp_range")
def _predictive(apply_fn, variables, images, *, normalize, disp_range):
    out = apply_fn(variables, images)
    _checks.check_outputs(out, "depth", "log_sigma")
    sigma = jnp.exp(out["log_sigma"])
    if disp_range is not None:  # σ of the sigmoid disparity s → depth, to first order
        lo, hi = disp_range
        sigma = sigma * (1.0 / lo - 1.0 / hi) * out["depth"] ** 2
    return Estimate(out["depth"], normalize_per_image(sigma) if normalize else sigma)


def predictive(apply_fn, variables, images, *, normalize: bool = False,
               to_depth: tuple[float, float] | None = None) -> Estimate:
    """Log / Self: the model's own σ = exp(log_sigma) (one pass).

    `to_depth=(min_depth, max_depth)`: the σ is one of the sigmoid disparity s (Self,
    SUB-Depth), propagated to depth to first order, σ_d = |∂d/∂s|·σ =
    (1/min − 1/max)·d²·σ, where d = 1/(1/max + (1/min − 1/max)·s) (Monodepth2's
    `disp_to_depth`): far pixels, whose depth errors are largest, get a small σ in
    disparity space.
    """
    _checks.check_images(images)
    if to_depth is not None:
        lo, hi = (float(v) for v in to_depth)
        if not 0 < lo < hi:
            raise ValueError(f"to_depth must be (min_depth, max_depth) with 0 < min < max, "
                             f"got {to_depth}")
        to_depth = (lo, hi)
    return _predictive(apply_fn, variables, images, normalize=bool(normalize),
                       disp_range=to_depth)
