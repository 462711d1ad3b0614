"""Negative log-likelihoods with a predicted log σ (Log models, Poggi et al. 2020).

Both take the prediction `mu`, target `y` and `log_sigma`, all `[B,H,W,1]`, and
return the per-pixel loss (average it over valid pixels yourself):

- Laplace:  |y − μ| / σ + log σ          (log 2 dropped), σ = exp(log_sigma);
- Gaussian: (y − μ)² / (2σ²) + log σ     (½ log 2π dropped).

`log_sigma` stays unbounded in the model, as in the reference; inside the loss
it is clipped to ±`clip` (default 20) so that exp(−log σ) can't overflow to
inf/NaN early in training, when the head's output is arbitrary. Within the clip
range the loss and its gradients are exact.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def _check_shapes(fn: str, mu, y, log_sigma):
    """ValueError unless `mu`, `y`, `log_sigma` broadcast to the shape of one of them
    (a scalar target is fine; `[B,H,W,1]` against `[B,H,W]` would silently give
    `[B,H,W,W]`)."""
    shapes = [tuple(np.shape(a)) for a in (mu, y, log_sigma)]
    try:
        out = np.broadcast_shapes(*shapes)
    except ValueError:
        out = None
    if out is None or out not in shapes:
        raise ValueError(f"{fn}: mu, y and log_sigma must have one shape (e.g. [B,H,W,1]; "
                         f"scalars broadcast), got {shapes[0]}, {shapes[1]} and {shapes[2]}")


def laplace_nll(mu, y, log_sigma, clip: float = 20.0):
    """Per-pixel Laplace NLL |y − μ|·exp(−s) + s with s = clip(log_sigma)."""
    _check_shapes("laplace_nll", mu, y, log_sigma)
    s = jnp.clip(log_sigma, -clip, clip)
    return jnp.abs(y - mu) * jnp.exp(-s) + s


def gaussian_nll(mu, y, log_sigma, clip: float = 20.0):
    """Per-pixel Gaussian NLL (y − μ)²·exp(−2s)/2 + s with s = clip(log_sigma)."""
    _check_shapes("gaussian_nll", mu, y, log_sigma)
    s = jnp.clip(log_sigma, -clip, clip)
    return 0.5 * (y - mu) ** 2 * jnp.exp(-2.0 * s) + s
