"""Training augmentation in JAX, batched with per-image random parameters.

Monodepth2's recipe: horizontal flip with p = 0.5 (applied to the image and every
target), and colour jitter with p = 0.5 — brightness, contrast and saturation
factors in [0.8, 1.2], hue shift in [−0.1, 0.1] of a turn — fed to the network
only; the losses see the un-jittered images. Hue is rotated in YIQ space (a
linear approximation of torchvision's HSV hue shift).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

_GRAY = jnp.array([0.2989, 0.587, 0.114])
_RGB2YIQ = jnp.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = jnp.linalg.inv(_RGB2YIQ)


def random_flip(rng, *arrays, p: float = 0.5):
    """Flip each image of every `[B,H,W,C]` array left-right with probability `p`
    (the same draw for all arrays of an image). Returns the arrays and the flags `[B]`."""
    b = arrays[0].shape[0]
    flip = jax.random.bernoulli(rng, p, (b,))
    out = tuple(jnp.where(flip[:, None, None, None], a[:, :, ::-1], a) for a in arrays)
    return out, flip


def color_jitter(rng, images, *, brightness=0.2, contrast=0.2, saturation=0.2, hue=0.1,
                 p: float = 0.5):
    """Jitter `[B,H,W,3]` images in [0,1] with probability `p` each; result clipped to [0,1].

    Several images of one sample (e.g. frames −1, 0, +1 stacked on a leading
    axis `[B,T,H,W,3]`) share their draw when passed with that extra axis.
    """
    b = images.shape[0]
    keys = jax.random.split(rng, 5)
    bshape = (b,) + (1,) * (images.ndim - 1)
    u = lambda k, r: jax.random.uniform(k, bshape, minval=1 - r, maxval=1 + r)
    apply = jax.random.bernoulli(keys[0], p, bshape)
    x = images * u(keys[1], brightness)
    gray = x @ _GRAY
    mean = gray.mean(axis=tuple(range(1, images.ndim - 1)), keepdims=True)[..., None]
    x = (x - mean) * u(keys[2], contrast) + mean
    gray = (x @ _GRAY)[..., None]
    x = (x - gray) * u(keys[3], saturation) + gray
    theta = 2 * jnp.pi * jax.random.uniform(keys[4], bshape, minval=-hue, maxval=hue)
    yiq = x @ _RGB2YIQ.T
    i, q = yiq[..., 1:2], yiq[..., 2:3]
    c, s = jnp.cos(theta), jnp.sin(theta)
    yiq = jnp.concatenate([yiq[..., :1], c * i - s * q, s * i + c * q], -1)
    x = jnp.clip(yiq @ _YIQ2RGB.T, 0.0, 1.0)
    return jnp.where(apply, x, images)
