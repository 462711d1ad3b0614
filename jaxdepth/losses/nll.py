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


def laplace_nll(mu, y, log_sigma, clip: float = 20.0):
    """Per-pixel Laplace NLL |y − μ|·exp(−s) + s with s = clip(log_sigma)."""
    s = jnp.clip(log_sigma, -clip, clip)
    return jnp.abs(y - mu) * jnp.exp(-s) + s


def gaussian_nll(mu, y, log_sigma, clip: float = 20.0):
    """Per-pixel Gaussian NLL (y − μ)²·exp(−2s)/2 + s with s = clip(log_sigma)."""
    s = jnp.clip(log_sigma, -clip, clip)
    return 0.5 * (y - mu) ** 2 * jnp.exp(-2.0 * s) + s
