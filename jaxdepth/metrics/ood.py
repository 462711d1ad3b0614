"""Out-of-distribution segmentation metrics of the SegmentMeIfYouCan benchmark (SMIYC; Chan
et al. 2021), pixel level and component level, as its evaluation code computes them.

Inputs per frame: ``score [H, W]`` ("higher = anomaly") and ``label [H, W]`` in SMIYC's
convention, 0 = in-distribution (road, on the obstacle track), 1 = anomaly / obstacle,
255 = void (ignored everywhere). SMIYC stores the score maps as float16 before
evaluating: pass ``score.astype(np.float16)`` to reproduce that rounding (the arithmetic
here is float64).

Version. This follows the benchmark code of Aug 2023 (commit 1c7804e; same pixel code
since 5a08be0 / 6bc8f37). Up to Oct 2022 (commit 0555238) the pixel metrics differed:
AP was ``trapz(precision, recall)`` after dropping the leading steps without predictions
(``pixel_metrics(..., ap="trapz")``), the percentile bin edges had fixed guards [0, 1]
instead of ``vmin − eps`` / ``vmax + eps``, the uniform bins spanned [0, 1], and repeated
thresholds were not collapsed (those three are not reproduced). Which version produced the
numbers of a published table is often unstated (the PGN paper, March 2023, does not say).
The component metrics have not changed since Oct 2021.

**Pixel level** (:func:`pixel_counts` per frame, :func:`pixel_metrics` over frames):

* per frame, on the ROI (``label < 255``), the scores of positives and negatives are
  histogrammed into bins, either 768 "percentile" bins (default; the official
  ``PixBinaryClass``): edges ``unique([vmin − eps, vmax + eps] ∪ quantile(s_pos,
  linspace(0, 1, min(384, n_pos))) ∪ quantile(s_neg, linspace(0, 1, min(384, n_neg))))``
  with ``eps = max(0.01 (vmax − vmin), 0.01)``, which adapts to any score range; or 4096
  uniform bins on [−0.01, 1.01] (``PixBinaryClass-uniThr``), which silently drops scores
  outside that range, so scores must lie in [0, 1]. Each bin's threshold is its lower edge
  and the rule is "anomaly if score ≥ threshold";
* over frames, percentile bins are pooled by concatenating every frame's (threshold,
  counts) and ordering by ``np.argsort(thr)[::-1]`` (not a stable sort, reproduced as is);
  uniform bins are summed bin by bin;
* curves from the cumulative counts (:func:`curves_from_counts`): repeated thresholds are
  collapsed to their last occurrence (index 0 always kept), a (0, 0) point is prepended
  when the first one is not (0, 0) and a (P, N) point appended when the last one is not;
  precision = 1 where nothing is predicted; AuPRC = Σ ΔRecall · Precision (the sklearn
  average precision), AuROC = trapezoid of TPR over FPR, FPR95 = FPR at the first point
  with TPR ≥ 0.95 (left ``searchsorted``; 1.0 if none), and the best-F1 threshold.

**Component level** (:func:`component_metrics` per frame, :func:`aggregate_components`):
see :func:`component_metrics`. The pixel threshold is the best-F1 threshold of the pixel
evaluation of the same method and dataset.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage, sparse

__all__ = [
    "VOID", "SIOU_THRESHOLDS", "Track", "ANOMALY_TRACK", "OBSTACLE_TRACK", "PixelCounts",
    "pixel_counts", "curves_from_counts", "pixel_metrics", "ComponentStats",
    "component_metrics", "aggregate_components",
]

VOID = 255
#: sIoU / PPV thresholds of the component F1: 0.25, 0.30, …, 0.75.
SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11)
PERCENTILE_BINS = 768
UNIFORM_BINS = 4096
UNIFORM_RANGE = (-0.01, 1.01)

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class Track(NamedTuple):
    """Component-size rules of a SMIYC track: predicted components smaller than
    ``min_pred`` pixels are dropped, GT components smaller than ``min_gt`` become void."""
    min_pred: int
    min_gt: int


#: ``SegEval-AnomalyTrack``: RoadAnomaly21, Fishyscapes LostAndFound.
ANOMALY_TRACK = Track(min_pred=500, min_gt=100)
#: ``SegEval-ObstacleTrack``: RoadObstacle21, LostAndFound-NoKnown.
OBSTACLE_TRACK = Track(min_pred=50, min_gt=10)


def _check_frame(fn: str, score, label) -> tuple[np.ndarray, np.ndarray]:
    score, label = np.asarray(score), np.asarray(label)
    if label.ndim != 2 or score.shape != label.shape:
        raise ValueError(f"{fn}: score and label must be one frame [H, W] of the same "
                         f"shape, got score {score.shape} and label {label.shape}")
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"{fn}: label must be an integer map (0/1/255), got {label.dtype}")
    bad = ~np.isin(label, (0, 1, VOID))
    if bad.any():
        raise ValueError(f"{fn}: label values must be 0 (in-distribution), 1 (anomaly) or "
                         f"255 (void); found {np.unique(label[bad])[:5].tolist()}")
    return score, label


# ============================================================================ pixel level
class PixelCounts(NamedTuple):
    """Binned confusion counts of one frame (or of summed uniform-bin frames).

    ``thresholds [K]`` descending (each bin's lower edge), ``tp [K]`` / ``fp [K]`` the
    positives / negatives falling in each bin (not cumulative), ``num_pos`` / ``num_neg``
    all ROI positives / negatives (scores dropped by the uniform range count as never
    detected), ``bins`` the strategy, ``"percentiles"`` or ``"uniform"``.
    """
    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    num_pos: int
    num_neg: int
    bins: str


def _percentile_edges(scores: np.ndarray, positive: np.ndarray, num_bins: int) -> np.ndarray:
    vmin, vmax = scores.min(), scores.max()
    eps = max(0.01 * (vmax - vmin), 0.01)
    parts = [np.array([vmin - eps, vmax + eps])]
    for s in (scores[positive], scores[~positive]):
        if s.size:
            parts.append(np.quantile(s, np.linspace(0.0, 1.0, min(num_bins // 2, s.size))))
    return np.unique(np.concatenate(parts))


def pixel_counts(score, label, *, bins: str = "percentiles",
                 num_bins: int | None = None) -> PixelCounts:
    """Per-frame binned counts of ``score [H, W]`` against ``label [H, W]`` (0/1/255).

    ``bins="percentiles"`` (default, ``num_bins=768``) or ``"uniform"`` (``num_bins=4096``
    on [−0.01, 1.01]); see the module docstring for the edges. A frame without ROI pixels
    gives empty counts.
    """
    fn = "pixel_counts"
    if bins not in ("percentiles", "uniform"):
        raise ValueError(f"{fn}: bins must be 'percentiles' or 'uniform', got {bins!r}")
    if num_bins is None:
        num_bins = PERCENTILE_BINS if bins == "percentiles" else UNIFORM_BINS
    if not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
        raise ValueError(f"{fn}: num_bins must be an int >= 2, got {num_bins!r}")
    score, label = _check_frame(fn, score, label)
    roi = label != VOID
    s = score[roi].astype(np.float64)
    y = label[roi] == 1
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{fn}: score must be finite on the ROI (label != 255)")
    if bins == "uniform":
        edges = np.histogram_bin_edges(s, bins=num_bins, range=UNIFORM_RANGE)
    elif s.size:
        edges = _percentile_edges(s, y, num_bins)
    else:
        edges = np.zeros(1)
    tp = np.histogram(s[y], bins=edges)[0] if edges.size > 1 else np.zeros(0, np.int64)
    fp = np.histogram(s[~y], bins=edges)[0] if edges.size > 1 else np.zeros(0, np.int64)
    return PixelCounts(thresholds=edges[:-1][::-1], tp=tp[::-1], fp=fp[::-1],
                       num_pos=int(y.sum()), num_neg=int((~y).sum()), bins=bins)


def curves_from_counts(thresholds, tp, fp, num_pos: int, num_neg: int, *,
                       ap: str = "sum") -> dict:
    """Curves and scores from cumulative confusion counts ordered by descending threshold.

    ``thresholds, tp, fp: [K]`` with ``tp[j]``, ``fp[j]`` the positives / negatives with
    score ≥ ``thresholds[j]``. Applies SMIYC's collapsing, prepend/append and precision
    rules (module docstring). ``ap="sum"``: AuPRC = Σ ΔR·P (Aug 2023); ``"trapz"``: the
    Oct 2022 ``trapz(precision, recall)`` after dropping the leading points without
    predictions. Returns ``{"auprc", "auroc", "fpr95", "best_f1", "best_threshold"}`` as
    floats and ``"curves"``: ``{"thresholds", "tp", "fp", "tpr", "fpr", "precision",
    "recall", "f1"}`` arrays.
    """
    fn = "curves_from_counts"
    if ap not in ("sum", "trapz"):
        raise ValueError(f"{fn}: ap must be 'sum' or 'trapz', got {ap!r}")
    thr = np.asarray(thresholds, np.float64)
    tp, fp = np.asarray(tp, np.float64), np.asarray(fp, np.float64)
    if not (thr.ndim == tp.ndim == fp.ndim == 1 and thr.shape == tp.shape == fp.shape
            and thr.size):
        raise ValueError(f"{fn}: thresholds, tp, fp must be non-empty 1-D arrays of one "
                         f"length, got {thr.shape}, {tp.shape}, {fp.shape}")
    if num_pos <= 0 or num_neg <= 0:
        raise ValueError(f"{fn}: needs at least one anomaly and one in-distribution pixel, "
                         f"got num_pos={num_pos}, num_neg={num_neg}")
    # 1. last occurrence of every threshold, index 0 always kept (duplicates change nothing)
    keep = np.unique(np.concatenate([[0], np.flatnonzero(thr[:-1] != thr[1:]), [thr.size - 1]]))
    thr, tp, fp = thr[keep], tp[keep], fp[keep]
    # 2. start at nothing predicted, end at everything predicted
    if tp[0] != 0 or fp[0] != 0:
        thr, tp, fp = (np.concatenate([[a], b]) for a, b in
                       ((thr[0] + 1, thr), (0.0, tp), (0.0, fp)))
    if tp[-1] != num_pos or fp[-1] != num_neg:
        thr, tp, fp = (np.concatenate([b, [a]]) for a, b in
                       ((thr[-1] - 1, thr), (num_pos, tp), (num_neg, fp)))
    fn_ = num_pos - tp
    tpr, fpr = tp / num_pos, fp / num_neg
    predicted = tp + fp
    precision = np.divide(tp, predicted, out=np.ones_like(tp), where=predicted > 0)
    recall = tpr
    if ap == "sum":
        auprc = np.sum(np.diff(recall) * precision[1:])
    else:
        first = int(np.argmax(predicted > 0))
        auprc = _trapezoid(precision[first:], recall[first:])
    i = int(np.searchsorted(tpr, 0.95))
    fpr95 = fpr[i] if i < tpr.size else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn_)
    best = int(np.nanargmax(f1))
    return {"auprc": float(auprc), "auroc": float(_trapezoid(tpr, fpr)), "fpr95": float(fpr95),
            "best_f1": float(f1[best]), "best_threshold": float(thr[best]),
            "curves": {"thresholds": thr, "tp": tp, "fp": fp, "tpr": tpr, "fpr": fpr,
                       "precision": precision, "recall": recall, "f1": f1}}


def pixel_metrics(counts: Sequence[PixelCounts], *, ap: str = "sum") -> dict:
    """Pixel-level SMIYC metrics of a dataset from its frames' :func:`pixel_counts`.

    Percentile bins are pooled as ``aggregate_dynamic_bins`` does, uniform bins summed;
    all frames must use one strategy. Returns :func:`curves_from_counts`'s dict (AuPRC,
    AuROC, FPR95, best F1 and its threshold, curves); ``best_threshold`` is the pixel
    threshold of :func:`component_metrics`.
    """
    fn = "pixel_metrics"
    counts = list(counts)
    if not counts or not all(isinstance(c, PixelCounts) for c in counts):
        raise ValueError(f"{fn}: expects a non-empty sequence of PixelCounts")
    strategies = {c.bins for c in counts}
    if len(strategies) != 1:
        raise ValueError(f"{fn}: all frames must use one bin strategy, got {sorted(strategies)}")
    num_pos = sum(c.num_pos for c in counts)
    num_neg = sum(c.num_neg for c in counts)
    counts = [c for c in counts if c.thresholds.size]
    if not counts:
        raise ValueError(f"{fn}: no frame has ROI pixels")
    if strategies == {"uniform"}:
        thr = counts[0].thresholds
        if any(c.thresholds.shape != thr.shape or np.any(c.thresholds != thr) for c in counts):
            raise ValueError(f"{fn}: uniform-bin frames must share their bins (num_bins)")
        tp_rel = np.sum([c.tp for c in counts], axis=0)
        fp_rel = np.sum([c.fp for c in counts], axis=0)
    else:
        thr = np.concatenate([c.thresholds for c in counts])
        tp_rel = np.concatenate([c.tp for c in counts])
        fp_rel = np.concatenate([c.fp for c in counts])
        order = np.argsort(thr)[::-1]
        thr, tp_rel, fp_rel = thr[order], tp_rel[order], fp_rel[order]
    return curves_from_counts(thr, np.cumsum(tp_rel), np.cumsum(fp_rel), num_pos, num_neg,
                              ap=ap)


# ======================================================================== component level
class ComponentStats(NamedTuple):
    """Component-level results of one frame.

    ``siou [K]`` per GT component, ``ppv [Q]`` and ``siou_pred [Q]`` per predicted
    component, ``tp, fn, fp [T]`` counts per sIoU threshold ``thresholds [T]``.
    """
    siou: np.ndarray
    ppv: np.ndarray
    siou_pred: np.ndarray
    tp: np.ndarray
    fn: np.ndarray
    fp: np.ndarray
    thresholds: np.ndarray


def _relabel(instances: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Map component ids with ``keep[id]`` to 1…n in order, the others to 0."""
    lut = np.zeros(keep.size, np.int64)
    lut[keep] = np.arange(1, keep.sum() + 1)
    return lut[instances]


def component_metrics(score, label, threshold: float, *, min_pred: int = 500,
                      min_gt: int = 100, siou_thresholds=SIOU_THRESHOLDS,
                      background_quirk: bool = False) -> ComponentStats:
    """SMIYC component-level counts of one frame (``default_instancer`` + ``segment_metrics``).

    ``score, label: [H, W]``; ``threshold`` is the dataset's best-F1 pixel threshold.

    1. prediction = ``score > threshold`` (strict), void pixels removed; GT = ``label == 1``;
    2. components of both by ``scipy.ndimage.label`` with a 3×3 structure (8-connectivity;
       dataset instance ids are not used);
    3. predicted components of fewer than ``min_pred`` pixels are dropped;
    4. GT components of fewer than ``min_gt`` pixels become void (label 255), so predicted
       pixels on them leave their components; on the ROI that remains (``label < 255``):
    5. for GT component k with K̂ the predicted components meeting it, I = |k ∩ ∪K̂| and
       A = |∪K̂ ∩ (other GT components)|: **sIoU(k) = I / (|∪K̂| + |k| − I − A)** (0 if
       nothing meets k); for a predicted component q, **PPV(q) = |q ∩ GT components| / |q|**
       and ``siou_pred(q)`` the same adjusted IoU with the roles swapped (reported only);
    6. per threshold t: TP_t = #{k: sIoU ≥ t}, FN_t = #{k: sIoU < t}, FP_t = #{q: PPV < t}.

    A predicted component left with no ROI pixel after step 4 (possible only if
    ``min_pred < min_gt``) is dropped. ``background_quirk=True`` reproduces the reference's
    size loops over ``range(n + 1)``, which also size-test component 0: when fewer than
    ``min_gt`` pixels lie outside every GT component (tiny images only), all of them become
    void; for the prediction that test is a no-op. Default off. Presets:
    ``**ANOMALY_TRACK._asdict()`` (500, 100), ``**OBSTACLE_TRACK._asdict()`` (50, 10).
    """
    fn = "component_metrics"
    score, label = _check_frame(fn, score, label)
    for name, v in (("min_pred", min_pred), ("min_gt", min_gt)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{fn}: {name} must be a non-negative int, got {v!r}")
    thresholds = np.asarray(siou_thresholds, np.float64)
    if thresholds.ndim != 1 or not thresholds.size:
        raise ValueError(f"{fn}: siou_thresholds must be a non-empty 1-D sequence")

    pred = (score > threshold) & (label != VOID)
    pred_inst, n_pred = ndimage.label(pred, structure=_EIGHT_CONNECTED)
    pred_size = np.bincount(pred_inst.ravel(), minlength=n_pred + 1)
    keep_pred = pred_size >= min_pred
    keep_pred[0] = False
    pred_inst = _relabel(pred_inst, keep_pred)

    gt_inst, n_gt = ndimage.label(label == 1, structure=_EIGHT_CONNECTED)
    gt_size = np.bincount(gt_inst.ravel(), minlength=n_gt + 1)
    small_gt = gt_size < min_gt
    if not background_quirk:
        small_gt[0] = False
    roi = (label != VOID) & ~small_gt[gt_inst]
    small_gt[0] = False
    gt_inst = _relabel(gt_inst, ~small_gt & (np.arange(n_gt + 1) > 0))

    g, q = gt_inst[roi], pred_inst[roi]
    n_g, n_q = int(g.max(initial=0)), int(q.max(initial=0))
    overlap = sparse.coo_matrix((np.ones(g.size), (g, q)), shape=(n_g + 1, n_q + 1)).tocsr()
    q_size = np.asarray(overlap.sum(axis=0)).ravel()
    present = q_size > 0
    present[0] = True  # column 0 = not predicted
    overlap = overlap[:, np.flatnonzero(present)]
    q_size = q_size[present][1:]
    k_size = np.asarray(overlap.sum(axis=1)).ravel()[1:]

    both = overlap[1:, 1:]                      # GT component × predicted component
    meets = (both > 0).astype(np.float64)
    inter_k = np.asarray(both.sum(axis=1)).ravel()   # |k ∩ ∪K̂|
    inter_q = np.asarray(both.sum(axis=0)).ravel()   # |q ∩ ∪K|
    # |∪K̂| + |k| − I − A = |k| + (pixels of ∪K̂ outside every GT component)
    outside_k = meets @ np.asarray(overlap[0, 1:].todense()).ravel()
    outside_q = meets.T @ np.asarray(overlap[1:, 0].todense()).ravel()
    siou = inter_k / (k_size + outside_k) if n_g else np.zeros(0)
    ppv = inter_q / q_size if q_size.size else np.zeros(0)
    siou_pred = inter_q / (q_size + outside_q) if q_size.size else np.zeros(0)

    tp = (siou[:, None] >= thresholds).sum(axis=0)
    return ComponentStats(siou=siou, ppv=ppv, siou_pred=siou_pred, tp=tp, fn=siou.size - tp,
                          fp=(ppv[:, None] < thresholds).sum(axis=0), thresholds=thresholds)


def aggregate_components(stats: Sequence[ComponentStats]) -> dict:
    """Dataset component metrics from the frames' :func:`component_metrics`.

    ``F1_t = 2ΣTP / (2ΣTP + ΣFN + ΣFP)`` per threshold (NaN where the denominator is 0),
    ``f1_mean`` = mean of F1_t over the thresholds (the paper's F̄1); ``siou`` = mean sIoU
    over all GT components of all frames and ``ppv`` = mean PPV over all predicted
    components (pooled; computed once at the pixel threshold, not averaged over t;
    NaN without components); ``siou_pred`` likewise. Also returns the summed
    ``tp, fn, fp [T]``, ``f1 [T]`` and ``thresholds [T]``.
    """
    stats = list(stats)
    if not stats or not all(isinstance(s, ComponentStats) for s in stats):
        raise ValueError("aggregate_components: expects a non-empty sequence of ComponentStats")
    thresholds = stats[0].thresholds
    if any(s.thresholds.shape != thresholds.shape or np.any(s.thresholds != thresholds)
           for s in stats):
        raise ValueError("aggregate_components: all frames must use the same siou_thresholds")
    tp, fn, fp = (np.sum([getattr(s, k) for s in stats], axis=0) for k in ("tp", "fn", "fp"))
    denom = 2 * tp + fn + fp
    f1 = np.divide(2.0 * tp, denom, out=np.full(tp.shape, np.nan), where=denom > 0)

    def pooled(name):
        values = np.concatenate([getattr(s, name) for s in stats])
        return float(values.mean()) if values.size else float("nan")

    return {"siou": pooled("siou"), "ppv": pooled("ppv"), "siou_pred": pooled("siou_pred"),
            "f1_mean": float(np.mean(f1)), "f1": f1, "tp": tp, "fn": fn, "fp": fp,
            "thresholds": thresholds}
