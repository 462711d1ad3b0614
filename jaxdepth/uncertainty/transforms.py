"""Image transforms that make the reference prediction, and their inverses.

All act on `[B,H,W,C]` arrays. A `Reference` bundles the transform of the input,
the map that brings the prediction on the transformed input back into the
original frame, and the validity of the mapped-back pixels:

- `flip`: horizontal flip; its own inverse; every pixel valid.
- `gray`: 3-channel grayscale (ITU-R 601 weights, as torchvision's `Grayscale`);
  the prediction needs no mapping.
- `noise`: additive Gaussian noise, σ = 0.01 on [0,1] images, not clipped (as the
  reference); needs an rng.
- `rot`: rotation by `angle` degrees counter-clockwise about the image centre with
  bilinear sampling and zero fill (torchvision's `rotate` uses nearest sampling);
  the prediction is rotated back by −angle. Pixels whose back-rotated prediction
  would come from outside the image have **no** reference: they are marked
  invalid and left out of every loss and variance (the reference code instead
  fills them with disparity 0, i.e. infinite depth).

Feature references ("Revisiting" gradient uncertainty) perturb an intermediate feature
`f` `[B,h,w,c]` instead of the image; they are *offsets* added to that feature through
the models' `offsets` mechanism, so the perturbed pass is the reference and needs no
inverse:

- `feature_noise`: `offset = scale · std(f) · ε`, ε ~ N(0, 1) of `f`'s shape, std the
  population std of each image's feature over H, W and C (so `scale` is relative to
  the feature's own spread);
- `feature_dropout`: channel dropout at rate `scale` (PyTorch `dropout2d`: whole
  channels zeroed per image, kept ones scaled by 1/(1 − rate)), i.e. `offset =
  f · (mask / (1 − rate) − 1)` with `mask ~ Bernoulli(1 − rate)` of shape `[B,1,1,c]`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
IMAGE_REFERENCES = ("flip", "gray", "noise", "rot")
FEATURE_REFERENCES = ("feature_noise", "feature_dropout")


def hflip(x):
    """Mirror `[B,H,W,C]` left-right."""
    return x[:, :, ::-1]


def grayscale(images):
    """`[B,H,W,3]` → `[B,H,W,3]` luminance replicated over the three channels."""
    gray = images @ jnp.asarray(GRAY_WEIGHTS, images.dtype)
    return jnp.repeat(gray[..., None], 3, axis=-1)


def add_noise(images, rng, std: float = 0.01):
    """Additive Gaussian noise N(0, std²), not clipped."""
    return images + std * jax.random.normal(rng, images.shape, images.dtype)


def _rotation_coords(h: int, w: int, angle: float):
    """Source pixel coords of a content rotation by `angle`° counter-clockwise."""
    theta = jnp.deg2rad(angle)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    v, u = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
    du, dv = u - cx, v - cy
    # output (du', dv') = (c·du + s·dv, −s·du + c·dv)  ⇔  source = R⁻¹ · output
    src_u = jnp.cos(theta) * du - jnp.sin(theta) * dv + cx
    src_v = jnp.sin(theta) * du + jnp.cos(theta) * dv + cy
    return src_u, src_v


def rotate(x, angle: float):
    """Rotate `[B,H,W,C]` by `angle`° counter-clockwise (bilinear, zero fill).

    Returns `(rotated, valid)` with `valid` `[1,H,W,1]` true where the sample came
    from inside the input.
    """
    h, w = x.shape[1:3]
    su, sv = _rotation_coords(h, w, angle)
    valid = (su >= 0) & (su <= w - 1) & (sv >= 0) & (sv <= h - 1)
    u0 = jnp.clip(jnp.floor(su), 0, w - 1)
    v0 = jnp.clip(jnp.floor(sv), 0, h - 1)
    u1 = jnp.clip(u0 + 1, 0, w - 1)
    v1 = jnp.clip(v0 + 1, 0, h - 1)
    fu = jnp.clip(su - u0, 0, 1)[None, ..., None]
    fv = jnp.clip(sv - v0, 0, 1)[None, ..., None]
    u0, u1, v0, v1 = (a.astype(jnp.int32) for a in (u0, u1, v0, v1))
    top = x[:, v0, u0] * (1 - fu) + x[:, v0, u1] * fu
    bottom = x[:, v1, u0] * (1 - fu) + x[:, v1, u1] * fu
    out = top * (1 - fv) + bottom * fv
    valid = valid[None, ..., None]
    return jnp.where(valid, out, 0.0), valid


class Reference(NamedTuple):
    """How one reference prediction is made and mapped back."""
    transform: Callable  # images → transformed images
    inverse: Callable    # prediction on transformed images → (mapped back, valid)


def make_reference(name: str, rng=None, *, angle: float = 10.0,
                   noise_std: float = 0.01) -> Reference:
    """The `Reference` for `flip`, `gray`, `noise` (needs `rng`) or `rot`."""
    if name == "flip":
        return Reference(hflip, lambda d: (hflip(d), None))
    if name == "gray":
        return Reference(grayscale, lambda d: (d, None))
    if name == "noise":
        if rng is None:
            raise ValueError("reference 'noise' needs an rng (a jax.random key)")
        return Reference(lambda x: add_noise(x, rng, noise_std), lambda d: (d, None))
    if name == "rot":
        return Reference(lambda x: rotate(x, angle)[0], lambda d: rotate(d, -angle))
    raise ValueError(f"unknown reference {name!r}; expected flip, gray, noise or rot")


def feature_noise_offset(f, rng, scale: float):
    """`scale · std(f) · ε`: Gaussian noise relative to each image's feature std
    (population std over H, W, C); ε = `jax.random.normal(rng, f.shape, f.dtype)`."""
    std = jnp.std(f, axis=tuple(range(1, f.ndim)), keepdims=True)
    return scale * std * jax.random.normal(rng, f.shape, f.dtype)


def feature_dropout_offset(f, rng, rate: float):
    """`f · (mask/(1 − rate) − 1)`, so `f + offset` is `f` with channel dropout:
    `mask = jax.random.bernoulli(rng, 1 − rate, [B,1,1,c])` (per image and channel)."""
    shape = (f.shape[0],) + (1,) * (f.ndim - 2) + (f.shape[-1],)
    keep = jax.random.bernoulli(rng, 1.0 - rate, shape).astype(f.dtype)
    return f * (keep / (1.0 - rate) - 1.0)


def feature_offset(name: str, f, rng, scale: float):
    """The offset of feature reference `name` (`feature_noise` | `feature_dropout`) for
    the unperturbed feature `f`; `scale` is the relative noise std or the dropout rate."""
    if rng is None:
        raise ValueError(f"reference {name!r} needs an rng (a jax.random key)")
    if name == "feature_noise":
        return feature_noise_offset(f, rng, scale)
    if name == "feature_dropout":
        return feature_dropout_offset(f, rng, scale)
    raise ValueError(f"unknown feature reference {name!r}; expected one of {FEATURE_REFERENCES}")
