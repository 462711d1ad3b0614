"""Training losses: pure functions of `[B,H,W,C]` arrays."""
from jaxdepth.losses import adu
from jaxdepth.losses.distill import TABLE1_WEIGHTS, self_teaching_loss, sub_depth_loss
from jaxdepth.losses.nll import gaussian_nll, laplace_nll
from jaxdepth.losses.photometric import (min_reprojection, photometric_error, smoothness,
                                         ssim)

__all__ = ["laplace_nll", "gaussian_nll", "ssim", "photometric_error", "min_reprojection",
           "smoothness", "self_teaching_loss", "sub_depth_loss", "TABLE1_WEIGHTS"]
__all__ += ["adu"]
