"""What every jaxdepth model checks of its input (the apply contract, docs/design.md),
and how it builds random variables for an input size, written once for all of them."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp

__all__ = ["add_offset", "check_images", "check_offsets", "random_variables"]


def check_images(images, channels: int = 3, multiple: int = 32, *, name: str = "images",
                 why: str = "") -> None:
    """ValueError unless `images` is `[B,H,W,channels]` with H and W multiples of
    `multiple` (1: any size); `why` is added to the size message."""
    if images.ndim != 4 or images.shape[-1] != channels:
        raise ValueError(f"{name} must be [B,H,W,{channels}], got shape {images.shape}")
    if multiple > 1 and (images.shape[1] % multiple or images.shape[2] % multiple):
        raise ValueError(f"image height and width must be multiples of {multiple}"
                         f"{f' ({why})' if why else ''}, got {images.shape[1]}×{images.shape[2]}")


def check_offsets(offsets: Mapping | None, names: Iterable[str]) -> dict:
    """`offsets` as a dict; ValueError naming the valid taps for an unknown one."""
    offsets = dict(offsets or {})
    names = tuple(names)
    unknown = set(offsets) - set(names)
    if unknown:
        raise ValueError(f"unknown tap(s) {sorted(unknown)}; expected names from {names}")
    return offsets


def add_offset(a, tap: str, offsets: Mapping):
    """`a + offsets[tap]` (the activation of tap `tap`), or `a` where no offset is given;
    ValueError for an offset of another shape."""
    if tap not in offsets:
        return a
    off = offsets[tap]
    if tuple(off.shape) != tuple(a.shape):
        raise ValueError(f"offsets[{tap!r}] must have the tap's shape {a.shape}, got {off.shape}")
    return a + off


def random_variables(module, rng, height: int, width: int, channels: int = 3, *,
                     init: Callable | None = None):
    """Random variables of `module` for a `[1,height,width,channels]` input: the
    structure from `jax.eval_shape(module.init, …)` (nothing is compiled), the values
    drawn by `init(abstract, rng)` (default `init.torch_like_init`); `rng` is a JAX key
    or an int seed."""
    if init is None:
        from jaxdepth.models.init import torch_like_init as init
    abstract = jax.eval_shape(module.init, jax.random.PRNGKey(0),
                              jnp.zeros((1, height, width, channels), jnp.float32))
    return init(abstract, rng)
