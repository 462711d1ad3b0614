"""Uncertainty for depth models: pure functions of `apply_fn`, variables and images.

    from jaxdepth.uncertainty import gradient_uncertainty
    est = gradient_uncertainty(model.apply, variables, images)   # Estimate(depth, uncertainty)

Every method returns `Estimate(depth, uncertainty)`, both `[B,H,W,1]`. The gradient
method takes image references (flip, gray, noise, rot), feature references
(`feature_noise`, `feature_dropout` at `feature_tap`), their variance (`var`), and
combines several taps with `aggregate` (std, mean, max, rank, zmean). Segmentation:
`pgn` (PGN's closed forms) and `segmentation` (its baselines and method table).
"""
from jaxdepth.uncertainty.baselines import (ensemble, in_drop, mc_drop, post,
                                            post_process_blend, predictive, var)
from jaxdepth.uncertainty.gradient import (REFERENCES, VAR_MEMBERS, auxiliary_loss,
                                           feature_gradients, gradient_uncertainty,
                                           reference_predictions)
from jaxdepth.uncertainty.maps import (AGGREGATIONS, Estimate, aggregate_maps,
                                       normalize_per_image, percentile_rank, reduce_channels,
                                       resize, zscore_per_image)
from jaxdepth.uncertainty.transforms import (FEATURE_REFERENCES, add_noise, feature_offset,
                                             grayscale, hflip, rotate)
from jaxdepth.uncertainty import pgn, segmentation  # noqa: E402

__all__ = [
    "pgn", "segmentation", "Estimate", "gradient_uncertainty", "feature_gradients", "auxiliary_loss", "REFERENCES",
    "VAR_MEMBERS", "FEATURE_REFERENCES", "AGGREGATIONS", "reference_predictions",
    "post", "var", "in_drop", "mc_drop", "ensemble", "predictive", "post_process_blend",
    "reduce_channels", "normalize_per_image", "resize", "aggregate_maps", "percentile_rank",
    "zscore_per_image", "hflip", "grayscale", "add_noise", "rotate", "feature_offset",
]
