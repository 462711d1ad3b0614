"""Uncertainty for depth models: pure functions of `apply_fn`, variables and images.

    from jaxdepth.uncertainty import gradient_uncertainty
    est = gradient_uncertainty(model.apply, variables, images)   # Estimate(depth, uncertainty)

Every method returns `Estimate(depth, uncertainty)`, both `[B,H,W,1]`. Segmentation:
`pgn` (PGN's closed forms) and `segmentation` (its baselines and method table).
"""
from jaxdepth.uncertainty.baselines import (ensemble, in_drop, mc_drop, post,
                                            post_process_blend, predictive, var)
from jaxdepth.uncertainty.gradient import (REFERENCES, auxiliary_loss, feature_gradients,
                                           gradient_uncertainty)
from jaxdepth.uncertainty.maps import (Estimate, aggregate_maps, normalize_per_image,
                                       reduce_channels, resize)
from jaxdepth.uncertainty.transforms import add_noise, grayscale, hflip, rotate
from jaxdepth.uncertainty import pgn, segmentation  # noqa: E402

__all__ = [
    "pgn", "segmentation", "Estimate", "gradient_uncertainty", "feature_gradients", "auxiliary_loss", "REFERENCES",
    "post", "var", "in_drop", "mc_drop", "ensemble", "predictive", "post_process_blend",
    "reduce_channels", "normalize_per_image", "resize", "aggregate_maps",
    "hflip", "grayscale", "add_noise", "rotate",
]
