"""What every jaxdepth model checks of its input (the apply contract, docs/design.md),
and how it builds random variables for an input size, written once for all of them."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["add_offset", "check_finite", "check_images", "check_offsets", "random_variables"]


def check_finite(images, name: str = "images") -> None:
    """ValueError naming how many values of a concrete (NumPy or JAX, not traced) `images`
    are NaN or inf. Traced images (inside `jit`, `eval_shape`, `grad`: values unknown) are
    not checked; a concrete JAX array costs one reduction and a device sync."""
    if isinstance(images, jax.core.Tracer):
        return
    if isinstance(images, np.ndarray):
        n = int(images.size - np.count_nonzero(np.isfinite(images)))
    elif isinstance(images, jax.Array):
        with jax.ensure_compile_time_eval():  # maybe closed over by a traced fn
            n = int(images.size - jnp.isfinite(images).sum())
    else:
        return
    if n:
        raise ValueError(f"{name} contain {n} non-finite pixel values (NaN or inf) of "
                         f"{images.size}; images must be finite floats")


def check_images(images, channels: int = 3, multiple: int = 32, *, name: str = "images",
                 why: str = "") -> None:
    """ValueError unless `images` is a floating-point `[B,H,W,channels]` array (B, H, W
    >= 1) with H and W multiples of `multiple` (1: any size), and, when concrete, finite
    (`check_finite`); `why` is added to the size message. The [0,1] range is not checked
    here (the uncertainty functions check it of NumPy input)."""
    shape = tuple(getattr(images, "shape", ()) or ())
    if getattr(images, "ndim", None) != 4 or shape[-1] != channels:
        raise ValueError(f"{name} must be [B,H,W,{channels}], got shape "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    if 0 in shape:
        raise ValueError(f"{name} must hold at least one image of at least 1×1 pixels "
                         f"([B,H,W,{channels}] with B, H, W >= 1), got shape {shape}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point (float32 in [0,1]), got dtype "
                         f"{images.dtype}" + (" (divide uint8 images by 255)"
                                              if images.dtype == np.uint8 else ""))
    if multiple > 1 and (images.shape[1] % multiple or images.shape[2] % multiple):
        raise ValueError(f"image height and width must be multiples of {multiple}"
                         f"{f' ({why})' if why else ''}, got {images.shape[1]}×{images.shape[2]}")
    check_finite(images, name)


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
