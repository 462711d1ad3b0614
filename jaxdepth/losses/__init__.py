"""Training losses: pure functions of `[B,H,W,C]` arrays."""
from jaxdepth.losses.nll import gaussian_nll, laplace_nll

__all__ = ["laplace_nll", "gaussian_nll"]
