"""Semantic-segmentation metrics on the host (NumPy): confusion matrix, IoU, pixel accuracy,
expected calibration error (ECE) and the Brier-score sparsification error (AuSE).

Conventions. ``pred`` and ``label`` are integer class maps of one shape (``[H, W]``, a
batch ``[B, H, W]`` or a whole stacked dataset ``[N, H, W]``: every function here pools
all the pixels it is given); ``probs`` has one more trailing axis ``[..., C]``. Label 255
(``IGNORE``) is void: void pixels are masked out of every count and mean, never averaged
in. Other label values must lie in ``[0, C)``; predictions on valid pixels too.

Scores follow the PGN evaluation (Maag & Riedlinger, "Pixel-wise gradient uncertainty for
convolutional neural networks applied to out-of-distribution segmentation", §4 "Pixel-wise
uncertainty evaluation", Table 1): a *confidence* is "higher = more likely correct" (max-softmax), an
*uncertainty* "higher = more likely wrong" (entropy, gradient norms). The reference turns
an uncertainty into a confidence by ``1 − minmax(u)``, the min-max taken over the whole
stacked dataset, void pixels included (:func:`uncertainty_to_confidence`), and min-max
normalises the max-softmax the same way.

Dataset-wide numbers come from per-batch accumulators that are pure functions
``(state, batch) -> state`` (:func:`update_confusion`, :func:`update_calibration`); ECE
pools its bins, so it accumulates exactly. AuSE ranks all pixels at once and needs them
stacked.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "IGNORE", "AUSE_FRACTIONS", "confusion_matrix", "update_confusion", "class_iou", "miou",
    "pixel_accuracy", "minmax_normalize", "uncertainty_to_confidence", "CalibrationBins",
    "calibration_bins", "update_calibration", "ece_from_bins", "ece", "brier_error",
    "ause_brier",
]

IGNORE = 255
#: Fractions of pixels removed by the sparsification curves: 0, 0.01, …, 0.99 (100 values).
AUSE_FRACTIONS = np.arange(0.0, 1.0, 0.01)

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz


# ----------------------------------------------------------------------------- checks
def _as_class_maps(fn: str, pred, label, num_classes: int | None, ignore: int):
    """Validate ``pred, label`` (same shape, integer) and return them with the valid mask."""
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(f"{fn}: pred {pred.shape} and label {label.shape} must have the "
                         "same shape ([H, W] or [B, H, W])")
    for name, x in (("pred", pred), ("label", label)):
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{fn}: {name} must be an integer class map, got {x.dtype}")
    valid = label != ignore
    if num_classes is not None:
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"{fn}: num_classes must be a positive int, got {num_classes!r}")
        for name, x in (("label", label[valid]), ("pred", pred[valid])):
            if x.size and (x.min() < 0 or x.max() >= num_classes):
                raise ValueError(f"{fn}: {name} values on valid pixels must lie in "
                                 f"[0, {num_classes}) (void = {ignore}); got "
                                 f"[{x.min()}, {x.max()}]")
    return pred, label, valid


def _same_shape(fn: str, ref_name: str, ref: np.ndarray, **arrays) -> list[np.ndarray]:
    out = []
    for name, x in arrays.items():
        x = np.asarray(x)
        if x.shape != ref.shape:
            raise ValueError(f"{fn}: {name} {x.shape} must have the shape of {ref_name} "
                             f"{ref.shape}")
        out.append(x)
    return out


# ----------------------------------------------------------------------------- IoU
def confusion_matrix(pred, label, num_classes: int, *, ignore: int = IGNORE) -> np.ndarray:
    """Pixel confusion matrix ``[C, C]`` (int64), rows = ground truth, columns = prediction.

    ``pred, label: [...]`` integer maps of one shape; pixels with ``label == ignore`` are
    not counted. ``conf[i, j]`` = #pixels of class i predicted as j.
    """
    pred, label, valid = _as_class_maps("confusion_matrix", pred, label, num_classes, ignore)
    flat = label[valid].astype(np.int64) * num_classes + pred[valid]
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def update_confusion(conf, pred, label, *, ignore: int = IGNORE) -> np.ndarray:
    """Accumulator step ``conf, batch -> conf + confusion_matrix(batch)``; start from
    ``np.zeros((C, C), np.int64)``. Pure: returns a new array."""
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"update_confusion: conf must be a [C, C] matrix, got {conf.shape}")
    return conf + confusion_matrix(pred, label, conf.shape[0], ignore=ignore)


def _check_conf(fn: str, conf) -> np.ndarray:
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"{fn}: conf must be a [C, C] confusion matrix, got {conf.shape}")
    return conf.astype(np.float64)


def class_iou(conf) -> np.ndarray:
    """Per-class IoU ``[C]`` = TP / (TP + FP + FN) from a confusion matrix (Jaccard index).

    NaN rule: a class that is neither in the ground truth nor predicted anywhere in the
    evaluated pixels (TP + FP + FN = 0) has IoU NaN, i.e. "not present"; a class that is
    only predicted (FP > 0, no GT) has IoU 0 and counts (as in the Cityscapes scripts).
    """
    conf = _check_conf("class_iou", conf)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou(conf) -> float:
    """Mean IoU over the classes present (non-NaN entries of :func:`class_iou`); NaN if none."""
    iou = class_iou(conf)
    present = ~np.isnan(iou)
    return float(iou[present].mean()) if present.any() else float("nan")


def pixel_accuracy(conf) -> float:
    """Fraction of valid pixels classified correctly, trace / sum; NaN without pixels."""
    conf = _check_conf("pixel_accuracy", conf)
    total = conf.sum()
    return float(np.trace(conf) / total) if total > 0 else float("nan")


# ----------------------------------------------------------------------------- scores
def minmax_normalize(x) -> np.ndarray:
    """``(x − min x) / (max x − min x)`` over every entry of ``x`` (float64).

    The PGN evaluation normalises each score over the whole stacked dataset this way, void
    pixels included. Idempotent exactly (an array with min 0 and max 1 is returned
    unchanged). Raises ValueError for a constant or non-finite score.
    """
    x = np.asarray(x, np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("minmax_normalize: the score must be a non-empty finite array")
    lo, hi = x.min(), x.max()
    if hi == lo:
        raise ValueError(f"minmax_normalize: the score is constant ({lo}); cannot normalise")
    return (x - lo) / (hi - lo)


def uncertainty_to_confidence(uncertainty) -> np.ndarray:
    """The reference's confidence of an uncertainty map: ``1 − minmax(u)``, the min-max
    over every pixel given (pass the whole stacked dataset, void included). ``[...]``."""
    return 1.0 - minmax_normalize(uncertainty)


# ----------------------------------------------------------------------------- ECE
class CalibrationBins(NamedTuple):
    """Per-bin sums of valid pixels, ``[bins]`` each: pixel count, correct predictions, and
    the sum of the confidences. Add two of them entrywise to pool (``update_calibration``)."""
    count: np.ndarray
    correct: np.ndarray
    confidence_sum: np.ndarray


def _check_mode(fn: str, mode: str) -> None:
    if mode not in ("standard", "reference"):
        raise ValueError(f"{fn}: mode must be 'standard' or 'reference', got {mode!r}")


def calibration_bins(confidence, pred, label, *, bins: int = 10, include_one: bool = True,
                     ignore: int = IGNORE) -> CalibrationBins:
    """Bin the valid pixels by confidence into ``bins`` equal bins ``[b/bins, (b+1)/bins)``.

    ``confidence, pred, label: [...]`` of one shape, ``confidence`` in [0, 1] on the valid
    pixels. ``include_one=True`` puts ``confidence == 1.0`` in the last bin (the standard
    ECE); ``False`` is the PGN reference, where 1.0 lies in no bin and is left out.
    Bin membership compares against the edges ``arange(bins + 1) / bins``, as the
    reference's ``b/10 ≤ c < (b+1)/10`` does.
    """
    fn = "calibration_bins"
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"{fn}: bins must be a positive int, got {bins!r}")
    pred, label, valid = _as_class_maps(fn, pred, label, None, ignore)
    (conf,) = _same_shape(fn, "label", label, confidence=confidence)
    conf = conf[valid].astype(np.float64)
    if conf.size and not (np.all(np.isfinite(conf)) and conf.min() >= 0 and conf.max() <= 1):
        raise ValueError(f"{fn}: confidence must lie in [0, 1] on the valid pixels, got "
                         f"[{np.nanmin(conf)}, {np.nanmax(conf)}] (normalise it first, e.g. "
                         "minmax_normalize / uncertainty_to_confidence)")
    correct = (pred[valid] == label[valid]).astype(np.float64)
    edges = np.arange(bins + 1) / bins
    index = np.searchsorted(edges, conf, side="right") - 1  # b with edges[b] <= c < edges[b+1]
    if include_one:
        index = np.minimum(index, bins - 1)
    inside = index < bins
    index, correct, conf = index[inside], correct[inside], conf[inside]
    return CalibrationBins(count=np.bincount(index, minlength=bins).astype(np.int64),
                           correct=np.bincount(index, correct, minlength=bins),
                           confidence_sum=np.bincount(index, conf, minlength=bins))


def update_calibration(state: CalibrationBins | None, confidence, pred, label, *,
                       bins: int = 10, include_one: bool = True,
                       ignore: int = IGNORE) -> CalibrationBins:
    """Accumulator step ``state, batch -> state + calibration_bins(batch)``; ``state=None``
    starts a new one. Only valid for confidences already normalised (standard use)."""
    new = calibration_bins(confidence, pred, label, bins=bins, include_one=include_one,
                           ignore=ignore)
    if state is None:
        return new
    if len(state.count) != bins:
        raise ValueError(f"update_calibration: state has {len(state.count)} bins, not {bins}")
    return CalibrationBins(*(a + b for a, b in zip(state, new)))


def ece_from_bins(stats: CalibrationBins) -> float:
    """ECE = Σ_b n_b |acc_b − conf_b| / Σ_b n_b (Guo et al. 2017, PGN §4) with
    ``acc_b = correct_b / n_b``, ``conf_b = confidence_sum_b / n_b``; empty bins contribute
    0 (the reference's NaN → 0). NaN if no pixel lies in any bin."""
    count = np.asarray(stats.count, np.float64)
    total = count.sum()
    if total == 0:
        return float("nan")
    gap = np.abs(np.asarray(stats.correct) - np.asarray(stats.confidence_sum))
    return float(gap.sum() / total)  # n_b |acc_b − conf_b| = |correct_b − conf_sum_b|


def ece(confidence, pred, label, *, bins: int = 10, mode: str = "standard",
        ignore: int = IGNORE) -> float:
    """Expected calibration error of the valid pixels of ``confidence, pred, label: [...]``.

    ``mode="standard"``: ``confidence`` must already lie in [0, 1] (normalising is the
    caller's job); 1.0 falls in the last bin. ``mode="reference"`` reproduces the PGN
    evaluation code: ``confidence`` is min-max normalised over every pixel given, void
    included (pass the whole stacked dataset: the max-softmax, or
    :func:`uncertainty_to_confidence` of an uncertainty, on which the normalisation is an
    exact no-op), and the pixels at exactly 1.0 (at least the maximum) fall in no bin.
    """
    _check_mode("ece", mode)
    if mode == "reference":
        confidence = minmax_normalize(confidence)
    return ece_from_bins(calibration_bins(confidence, pred, label, bins=bins,
                                          include_one=mode == "standard", ignore=ignore))


# ----------------------------------------------------------------------------- AuSE
def brier_error(probs, label, *, ignore: int = IGNORE) -> np.ndarray:
    """Per-pixel Brier error ``Σ_c (onehot(label)_c − p_c)²``: ``probs [..., C]``,
    ``label [...]`` -> ``[...]`` float64, NaN on void pixels."""
    probs, label = np.asarray(probs, np.float64), np.asarray(label)
    if probs.ndim != label.ndim + 1 or probs.shape[:-1] != label.shape:
        raise ValueError(f"brier_error: probs must have shape label.shape + (C,) = "
                         f"{label.shape} + (C,), got {probs.shape}")
    _, label, valid = _as_class_maps("brier_error", label, label, probs.shape[-1], ignore)
    target = np.where(valid, label, 0)  # void -> class 0 (then masked), as the reference
    onehot = target[..., None] == np.arange(probs.shape[-1])
    err = np.sum((onehot - probs) ** 2, axis=-1)
    return np.where(valid, err, np.nan)


def _tie_averaged_prefix_means(key: np.ndarray, values: np.ndarray,
                               keep: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over the ``keep[k]`` pixels of lowest ``key``, ties in ``key``
    shared out evenly: a tie group cut by the prefix contributes its mean value per kept
    pixel (the expectation over random tie-breaking), so the result does not depend on
    pixel order and a constant ``key`` gives the mean of all values."""
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    csum = np.concatenate([[0.0], np.cumsum(values[order])])
    last = sorted_key[keep - 1]
    start = np.searchsorted(sorted_key, last, side="left")
    stop = np.searchsorted(sorted_key, last, side="right")
    group_mean = (csum[stop] - csum[start]) / (stop - start)
    return (csum[start] + (keep - start) * group_mean) / keep


def ause_brier(uncertainty, probs, label, *, mode: str = "standard",
               ignore: int = IGNORE) -> dict:
    """Area under the sparsification error of the per-pixel Brier error (PGN §4, Table 1).

    ``uncertainty: [...]`` (higher = less reliable), ``probs: [..., C]``, ``label: [...]``;
    all the pixels given are pooled (one image, or a stacked dataset). With ``N`` the valid
    pixels and fractions ``f = 0, 0.01, …, 0.99`` (:data:`AUSE_FRACTIONS`), each curve keeps
    the ``int((1 − f)·N)`` lowest-ranked pixels:

    * oracle: mean Brier error of the pixels of lowest Brier error;
    * ``mode="standard"`` (Ilg et al. 2018): mean Brier error of the pixels of lowest
      uncertainty; ties in the uncertainty are shared out evenly (expected value under
      random tie-breaking), so a constant uncertainty gives a flat curve;
    * ``mode="reference"`` (PGN evaluation code): the uncertainty is first min-max
      normalised over every pixel given, void included (pass the stacked dataset; for the
      max-softmax the reference's uncertainty is ``1 − minmax(msp)``: pass
      ``1 - minmax_normalize(msp)``, on which this normalisation is an exact no-op), and
      the curve is the mean of the *uncertainty values themselves* of the lowest-
      uncertainty pixels, not their Brier error. The reference maps void labels to class 0 before dropping the
      void pixels, which changes no number.

    Each curve is divided by its value at ``f = 0``; AuSE = trapezoid of (uncertainty curve
    − oracle curve) over ``f`` in [0, 0.99]. Needs ``N ≥ 100`` so every fraction keeps a
    pixel. Returns ``{"ause": float, "fractions": [100], "uncertainty": [100],
    "oracle": [100], "error": [100]}`` (``error`` = uncertainty − oracle, for plots); NaN
    curves if every valid pixel has zero Brier error.
    """
    fn = "ause_brier"
    _check_mode(fn, mode)
    label = np.asarray(label)
    (unc,) = _same_shape(fn, "label", label, uncertainty=uncertainty)
    unc = unc.astype(np.float64)
    se = brier_error(probs, label, ignore=ignore)
    valid = label != ignore
    if mode == "reference":
        unc = minmax_normalize(unc)
    elif not np.all(np.isfinite(unc[valid])):
        raise ValueError(f"{fn}: uncertainty must be finite on the valid pixels")
    unc, se = unc[valid], se[valid]
    n = se.size
    keep = ((1.0 - AUSE_FRACTIONS) * n).astype(np.int64)
    if keep.min() < 1:
        raise ValueError(f"{fn}: needs at least 100 valid pixels so that every fraction "
                         f"keeps one, got {n}")
    oracle = (np.cumsum(np.sort(se))[keep - 1]) / keep
    if mode == "reference":
        curve = np.cumsum(np.sort(unc))[keep - 1] / keep
    else:
        curve = _tie_averaged_prefix_means(unc, se, keep)
    with np.errstate(invalid="ignore", divide="ignore"):
        oracle, curve = oracle / oracle[0], curve / curve[0]
    error = curve - oracle
    return {"ause": float(_trapezoid(error, x=AUSE_FRACTIONS)), "fractions": AUSE_FRACTIONS,
            "uncertainty": curve, "oracle": oracle, "error": error}
