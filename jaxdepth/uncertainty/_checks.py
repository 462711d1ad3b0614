"""Input validation shared by the uncertainty functions (clear errors).

Shapes and dtypes are checked always (static, also under `jit`); values (finiteness,
the [0,1] range) only of concrete arrays: finiteness of NumPy and JAX arrays (a JAX
array costs one reduction and a sync), the range of NumPy arrays; traced arrays
(`jax.core.Tracer`, inside `jit` / `vmap` / `grad`) are not value-checked.
docs/reliability.md §"Bad input" lists what each kind of bad input gets."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def count_nonfinite(x) -> int | None:
    """The number of NaN / inf values of a concrete NumPy or JAX array; None for a traced
    array (its values are unknown) or anything else."""
    if isinstance(x, jax.core.Tracer):
        return None
    if isinstance(x, np.ndarray):
        return int(x.size - np.count_nonzero(np.isfinite(x)))
    if isinstance(x, jax.Array):
        with jax.ensure_compile_time_eval():  # maybe closed over by a traced fn
            return int(x.size - jnp.isfinite(x).sum())
    return None


def check_finite_images(images, name: str = "images") -> None:
    """ValueError naming how many values of a concrete `images` are NaN or inf."""
    n = count_nonfinite(images)
    if n:
        raise ValueError(f"{name} contain {n} non-finite pixel values (NaN or inf) of "
                         f"{int(np.prod(images.shape))}; images must be finite floats in [0,1]")


def check_images(images):
    """`images` must be `[B,H,W,3]` floating point in [0,1]: finite (checked for concrete
    NumPy / JAX arrays) and in range (checked for NumPy arrays); see the module doc."""
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"images must be a [B,H,W,3] array, got shape {shape}")
    if 0 in tuple(shape):
        raise ValueError(f"images must hold at least one image of at least 1×1 pixels "
                         f"([B,H,W,3] with B, H, W >= 1), got shape {tuple(shape)}")
    dtype = np.dtype(images.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"images must be float32 in [0,1], got dtype {dtype}"
                         + (" (divide uint8 images by 255)" if dtype == np.uint8 else ""))
    check_finite_images(images)
    if isinstance(images, np.ndarray) and images.size:
        lo, hi = float(np.nanmin(images)), float(np.nanmax(images))
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"images must lie in [0,1], got values in [{lo:.3g}, {hi:.3g}]")


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_outputs(outputs, *keys):
    """The model's output mapping must contain `keys`."""
    missing = [k for k in keys if k not in outputs]
    if missing:
        raise ValueError(f"apply_fn outputs lack {missing}; got keys {sorted(outputs)} "
                         "(see docs/design.md: depth/disp [B,H,W,1], features, log_sigma)")


def default_rng(rng):
    """`rng` or the fixed key 0 (documented default, keeps functions deterministic)."""
    return jax.random.PRNGKey(0) if rng is None else rng


def batched_default(batched) -> bool:
    """Whether a method runs its extra passes (the flipped / augmented references) in one
    batched forward with the original images: `batched` if given, else the faster form
    of the backend this process computes on — separate calls on CPU (XLA:CPU's
    convolutions gain nothing from the larger batch and the batched backward of Grad
    covers twice the images), one batched call on GPU / TPU (fewer, larger kernels).
    Measured: `experiments/bench_uncertainty.py`, docs/design.md §"Batched or separate"."""
    if batched is None:
        return jax.default_backend() != "cpu"
    return bool(batched)
