"""Depth and uncertainty metrics: pure functions of arrays. Segmentation, OoD
(SegmentMeIfYouCan) and MetaSeg metrics live in the submodules `segmentation`, `ood` and
`metaseg` (host NumPy)."""
from jaxdepth.metrics.depth import (
    METRIC_NAMES,
    a1,
    a2,
    a3,
    abs_rel,
    batch_depth_metrics,
    clamp,
    depth_metrics,
    garg_crop_mask,
    masked_percentile,
    mean_over_images,
    median_scale,
    rmse,
    rmse_log,
    silog,
    sq_rel,
    valid_mask,
)
from jaxdepth.metrics.sparsification import (
    SPARSIFICATION_METRICS,
    ause_aurg,
    batch_ause_aurg,
    mean_ause_aurg,
    sparsification_curves,
)

from jaxdepth.metrics import metaseg, ood, segmentation  # noqa: E402

__all__ = [
    "segmentation", "ood", "metaseg", "METRIC_NAMES", "SPARSIFICATION_METRICS",
    "abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3", "silog",
    "depth_metrics", "batch_depth_metrics", "mean_over_images", "valid_mask",
    "masked_percentile", "median_scale", "garg_crop_mask", "clamp",
    "ause_aurg", "batch_ause_aurg", "sparsification_curves", "mean_ause_aurg",
]
