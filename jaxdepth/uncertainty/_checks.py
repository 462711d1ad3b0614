"""Input validation shared by the uncertainty functions (clear errors, no device sync)."""
from __future__ import annotations

import numpy as np
import jax


def check_images(images):
    """`images` must be `[B,H,W,3]` floating point in [0,1] (range checked for NumPy input)."""
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"images must be a [B,H,W,3] array, got shape {shape}")
    dtype = np.dtype(images.dtype)
    if not np.issubdtype(dtype, np.floating):
        raise ValueError(f"images must be float32 in [0,1], got dtype {dtype}"
                         + (" (divide uint8 images by 255)" if dtype == np.uint8 else ""))
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
