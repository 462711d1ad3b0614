"""MetaSeg: segment-wise features, adjusted-IoU targets and meta models (Rottmann et al.
2020, "Prediction error meta classification in semantic segmentation"), as the PGN paper
(Maag & Riedlinger, §4 "Segment-wise prediction quality estimation", Fig. 3) uses them
with its gradient maps as extra heatmaps.

Segments (:func:`segment_features`) are the connected components (8-connectivity) of the
argmax map, numbered in raster order of their first pixel; where a label is given, void
ground-truth pixels (255) are masked out of the prediction first, as the PGN evaluation
does. A segment pixel is on its (inner) boundary when one of its 8 neighbours inside the
image belongs to another segment or to void; a segment without boundary pixel (only a
segment covering the whole image) counts as all boundary. With ``S_in`` interior and
``S_bd`` boundary pixels, ``S = S_in + S_bd``, the features of a segment are

* sizes ``S, S_in, S_bd, S_rel = S / S_bd, S_rel_in = S_in / S_bd``;
* for every heatmap ``m`` (the built-in entropy ``E = −Σ p log p``, natural log, not
  divided by log C, and ``M = 1 − p₍₁₎ + p₍₂₎`` with p₍₁₎ ≥ p₍₂₎ the two largest
  probabilities, then each given map): the mean ``m`` over the segment, ``m_in`` over the
  interior (0 if there is none), ``m_bd`` over the boundary, ``m_rel = m · S_rel``,
  ``m_rel_in = m_in · S_rel_in``;
* for the given maps only (the gradient maps), variances ``m_var, m_var_in, m_var_bd``
  (population variances over the segment / interior / boundary, 0 without interior) and
  ``m_var_rel = m_var · S_rel``, ``m_var_rel_in = m_var_in · S_rel_in``;
* ``cprob{c}`` the mean probability of class c, and ``class`` the predicted class (kept in
  the table, not used as a meta-model input).

Targets: the adjusted IoU of segment s of class c. With K the ground-truth components of
class c (connected components of the label map, 8-connectivity) meeting s, I = |s ∩ ∪K|
and A = |∪K ∩ other predicted segments of class c|: ``IoU_adj = I / (|∪K| + |s| − I − A)``
(MetaSeg's rule: pixels of ∪K predicted as another class stay in the union), and
``iou0 = (I == 0)`` is the meta-classification target.

``reference=True`` reproduces the PGN evaluation code instead: (1) the adjustment removes
pixels of any other segment, of any class, and since every non-void pixel belongs to some
segment this reduces IoU_adj to I / |s|; (2) the boundary and total variances use the
interior sum of squares, ``m_var_bd = Σ_in x² / S_bd − m_bd²`` and
``m_var = 2 Σ_in x² / S − m²`` (negative for segments without interior).

Meta models (:func:`meta_classification`, :func:`meta_regression`) follow the reference:
features z-scored over all segments (std + 1e-10), 5 runs, run r seeding NumPy's legacy
generator with ``seed + r`` and sending each segment to validation with probability 0.2
(``rand(N) < 0.2``), an unpenalised logistic regression (lbfgs, max_iter 3000, tol 1e-3)
for ``iou0`` and a linear regression with predictions clipped to [0, 1] for the IoU;
mean ± std (ddof 0) over the runs of the validation scores. scikit-learn is required.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage, sparse, stats

__all__ = [
    "IGNORE", "SIZE_FEATURES", "FEATURE_GROUPS", "entropy_map", "margin_map",
    "segment_components", "inner_boundary", "heatmap_feature_names", "segment_features",
    "select_features", "feature_matrix", "standardize", "validation_split",
    "meta_classification", "meta_regression",
]

IGNORE = 255
SIZE_FEATURES = ("S", "S_in", "S_bd", "S_rel", "S_rel_in")
FEATURE_GROUPS = ("metaseg", "pgn", "all", "entropy")
_BUILTIN = ("E", "M")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# ----------------------------------------------------------------------------- heatmaps
def _check_probs(fn: str, probs) -> np.ndarray:
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 3 or probs.shape[-1] < 2:
        raise ValueError(f"{fn}: probs must be [H, W, C] with C >= 2, got {probs.shape}")
    return probs


def entropy_map(probs) -> np.ndarray:
    """Softmax entropy ``[H, W]`` of ``probs [H, W, C]``: natural log, unnormalised
    (``scipy.stats.entropy``, which rescales each pixel's probabilities to sum 1)."""
    return stats.entropy(_check_probs("entropy_map", probs), axis=-1)


def margin_map(probs) -> np.ndarray:
    """Probability margin ``M = 1 − p₍₁₎ + p₍₂₎`` ``[H, W]`` of ``probs [H, W, C]``."""
    top2 = np.partition(_check_probs("margin_map", probs), -2, axis=-1)[..., -2:]
    return 1.0 - top2[..., 1] + top2[..., 0]


# ----------------------------------------------------------------------------- segments
def _components_by_class(classes: np.ndarray, valid: np.ndarray):
    """8-connected components of equal class inside ``valid``; ``[H, W]`` ids (0 = not
    valid) numbered in raster order of their first pixel, and each component's class."""
    ids = np.zeros(classes.shape, np.int64)
    comp_class, offset = [], 0
    for c in np.unique(classes[valid]):
        lab, n = ndimage.label(valid & (classes == c), structure=_EIGHT_CONNECTED)
        ids[lab > 0] = lab[lab > 0] + offset
        comp_class.append(np.full(n, c, np.int64))
        offset += n
    comp_class = np.concatenate(comp_class) if comp_class else np.zeros(0, np.int64)
    flat = ids.ravel()
    found, first = np.unique(flat, return_index=True)
    found, first = found[found > 0], first[found > 0]
    raster = found[np.argsort(first)]          # old ids in raster order
    lut = np.zeros(offset + 1, np.int64)
    lut[raster] = np.arange(1, raster.size + 1)
    return lut[ids], comp_class[raster - 1]


def segment_components(pred, valid=None) -> tuple[np.ndarray, np.ndarray]:
    """Segments of a class map ``pred [H, W]``: 8-connected components of equal class
    inside ``valid [H, W]`` (default everywhere). Returns ``ids [H, W]`` (1…n in raster
    order of the first pixel, 0 outside ``valid``) and ``classes [n]``."""
    pred = np.asarray(pred)
    if pred.ndim != 2 or not np.issubdtype(pred.dtype, np.integer):
        raise ValueError(f"segment_components: pred must be an integer [H, W] map, got "
                         f"{pred.dtype} {pred.shape}")
    valid = np.ones(pred.shape, bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != pred.shape:
        raise ValueError(f"segment_components: valid {valid.shape} must match pred "
                         f"{pred.shape}")
    return _components_by_class(pred, valid)


def inner_boundary(segments) -> np.ndarray:
    """Inner boundary ``[H, W]`` bool of a segment-id map (0 = void): pixels of a segment
    with a different id among their 8 neighbours inside the image (the image border
    itself is no boundary). A segment with no such pixel is all boundary."""
    segments = np.asarray(segments)
    if segments.ndim != 2:
        raise ValueError(f"inner_boundary: segments must be [H, W], got {segments.shape}")
    differs = (ndimage.maximum_filter(segments, size=3, mode="nearest")
               != ndimage.minimum_filter(segments, size=3, mode="nearest"))
    boundary = differs & (segments != 0)
    n = int(segments.max(initial=0))
    has_boundary = np.bincount(segments[boundary], minlength=n + 1) > 0
    has_boundary[0] = True
    return boundary | ~has_boundary[segments]


# ----------------------------------------------------------------------------- features
def heatmap_feature_names(name: str, *, variance: bool) -> tuple[str, ...]:
    """The feature names of one heatmap: ``name, name_in, name_bd, name_rel, name_rel_in``
    and, with ``variance``, ``name_var, name_var_in, name_var_bd, name_var_rel,
    name_var_rel_in``."""
    names = (name, f"{name}_in", f"{name}_bd", f"{name}_rel", f"{name}_rel_in")
    if variance:
        names += (f"{name}_var", f"{name}_var_in", f"{name}_var_bd", f"{name}_var_rel",
                  f"{name}_var_rel_in")
    return names


def _check_heatmap_names(names: Sequence[str], num_classes: int) -> None:
    reserved = set(SIZE_FEATURES) | {"class"} | {f"cprob{c}" for c in range(num_classes)}
    seen = set(reserved)
    for name in _BUILTIN:
        seen |= set(heatmap_feature_names(name, variance=False))
    for name in names:
        if not isinstance(name, str) or not name or name in _BUILTIN:
            raise ValueError(f"segment_features: heatmap names must be non-empty strings "
                             f"other than the built-in 'E' and 'M', got {name!r}")
        generated = set(heatmap_feature_names(name, variance=True))
        clash = generated & seen
        if clash:
            raise ValueError(f"segment_features: heatmap {name!r} gives feature names that "
                             f"already exist: {sorted(clash)}")
        seen |= generated


def _safe_div(num, den):
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def segment_features(probs, label=None, heatmaps: Mapping[str, np.ndarray] | None = None, *,
                     reference: bool = False, ignore: int = IGNORE):
    """Per-segment MetaSeg features and targets of one image (module docstring).

    ``probs [H, W, C]`` softmax probabilities, ``label [H, W]`` ground truth (255 void) or
    None at inference, ``heatmaps`` name → ``[H, W]`` extra maps (e.g. the PGN gradient
    norms). Returns ``(features, targets)``: ``features`` a dict name → ``[n]`` (float64;
    ``class`` int64) with the sizes, the E and M features, the features of each heatmap
    (with variances), ``cprob0…`` and ``class``; ``targets`` = ``{"iou": [n], "iou0": [n]
    bool}`` or None without a label. ``reference=True``: the PGN code's adjustment and
    variance bug.
    """
    fn = "segment_features"
    probs = _check_probs(fn, probs)
    h, w, num_classes = probs.shape
    heatmaps = dict(heatmaps or {})
    _check_heatmap_names(list(heatmaps), num_classes)
    maps = {}
    for name, m in heatmaps.items():
        m = np.asarray(m, np.float64)
        if m.shape != (h, w):
            raise ValueError(f"{fn}: heatmap {name!r} must be [H, W] = {(h, w)}, got {m.shape}")
        maps[name] = m
    pred = np.argmax(probs, axis=-1)
    if label is None:
        valid = np.ones((h, w), bool)
    else:
        label = np.asarray(label)
        if label.shape != (h, w) or not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{fn}: label must be an integer [H, W] = {(h, w)} map, got "
                             f"{label.dtype} {label.shape}")
        valid = label != ignore
        bad = label[valid]
        if bad.size and (bad.min() < 0 or bad.max() >= num_classes):
            raise ValueError(f"{fn}: label values must lie in [0, {num_classes}) or be "
                             f"{ignore} (void), got [{bad.min()}, {bad.max()}]")

    segments, seg_class = _components_by_class(pred, valid)
    n = seg_class.size
    boundary = inner_boundary(segments)
    inside = segments > 0
    ids = segments[inside]
    is_bd = boundary[inside]
    ids_in, ids_bd = ids[~is_bd], ids[is_bd]

    def per_segment(idx, weights=None):
        return np.bincount(idx, weights, minlength=n + 1)[1:].astype(np.float64)

    size_in, size_bd = per_segment(ids_in), per_segment(ids_bd)
    size = size_in + size_bd
    rel, rel_in = size / size_bd, size_in / size_bd
    features = {"S": size, "S_in": size_in, "S_bd": size_bd, "S_rel": rel, "S_rel_in": rel_in}

    all_maps = {"E": entropy_map(probs), "M": margin_map(probs), **maps}
    for name, m in all_maps.items():
        x = m[inside]
        x_in, x_bd = x[~is_bd], x[is_bd]
        mean = per_segment(ids, x) / size
        mean_in = _safe_div(per_segment(ids_in, x_in), size_in)
        mean_bd = per_segment(ids_bd, x_bd) / size_bd
        features.update(zip(heatmap_feature_names(name, variance=False),
                            (mean, mean_in, mean_bd, mean * rel, mean_in * rel_in)))
        if name in _BUILTIN:
            continue
        if reference:
            sq_in = per_segment(ids_in, x_in ** 2)
            var_in = _safe_div(sq_in, size_in) - mean_in ** 2
            var_bd = sq_in / size_bd - mean_bd ** 2
            var = 2 * sq_in / size - mean ** 2
        else:  # two-pass population variances
            var = per_segment(ids, (x - mean[ids - 1]) ** 2) / size
            var_in = _safe_div(per_segment(ids_in, (x_in - mean_in[ids_in - 1]) ** 2),
                               size_in)
            var_bd = per_segment(ids_bd, (x_bd - mean_bd[ids_bd - 1]) ** 2) / size_bd
        features.update(zip(heatmap_feature_names(name, variance=True)[5:],
                            (var, var_in, var_bd, var * rel, var_in * rel_in)))

    flat_probs = probs[inside]
    for c in range(num_classes):
        features[f"cprob{c}"] = per_segment(ids, flat_probs[:, c]) / size
    features["class"] = seg_class
    targets = None if label is None else _adjusted_iou(segments, seg_class, label, valid,
                                                       size, reference)
    return features, targets


def _adjusted_iou(segments, seg_class, label, valid, seg_size, reference: bool) -> dict:
    """``{"iou": [n], "iou0": [n]}`` of the segments against the GT components."""
    gt, gt_class = _components_by_class(label, valid)
    s, k = segments[valid] - 1, gt[valid] - 1   # every valid pixel: one segment, one comp
    n, m = seg_class.size, gt_class.size
    same = (seg_class[s] == gt_class[k]).astype(np.float64)
    overlap = sparse.coo_matrix((np.ones(s.size), (s, k)), shape=(n, m)).tocsr()
    matched = sparse.coo_matrix((same, (s, k)), shape=(n, m)).tocsr()  # same class only
    inter = np.asarray(matched.sum(axis=1)).ravel()              # I = |s ∩ ∪K|
    gt_size = np.bincount(k, minlength=m).astype(np.float64)
    # |∪K| − A − I = pixels of ∪K not covered by the segments the adjustment removes
    covered = overlap if reference else matched                  # any class / same class
    uncovered = gt_size - np.asarray(covered.sum(axis=0)).ravel()
    meets = (matched > 0).astype(np.float64)
    iou = inter / (seg_size + meets @ uncovered) if n else np.zeros(0)
    return {"iou": iou, "iou0": inter == 0}


# ----------------------------------------------------------------------------- meta models
def select_features(features: Mapping[str, np.ndarray], group: str, *,
                    gradient_maps: Sequence[str] = ()) -> dict:
    """A feature group of a :func:`segment_features` table (order kept).

    ``"metaseg"``: every feature not derived from ``gradient_maps`` (sizes, E, M, class
    probabilities); ``"pgn"``: only the features of ``gradient_maps``; ``"all"``: both;
    ``"entropy"``: the mean entropy ``E`` alone. ``class`` is never selected.
    """
    if group not in FEATURE_GROUPS:
        raise ValueError(f"select_features: group must be one of {FEATURE_GROUPS}, got {group!r}")
    gradient = {f for g in gradient_maps for f in heatmap_feature_names(g, variance=True)}
    missing = [g for g in gradient_maps if g not in features]
    if missing:
        raise ValueError(f"select_features: gradient maps {missing} are not in the features")
    names = [f for f in features if f != "class"]
    if group == "entropy":
        names = [f for f in names if f == "E"]
    elif group == "pgn":
        names = [f for f in names if f in gradient]
    elif group == "metaseg":
        names = [f for f in names if f not in gradient]
    return {f: features[f] for f in names}


def feature_matrix(features) -> np.ndarray:
    """``[N, F]`` float64 matrix of a feature dict (columns in its order) or an array."""
    if isinstance(features, Mapping):
        if not features:
            raise ValueError("feature_matrix: no features selected")
        cols = [np.asarray(v, np.float64).ravel() for v in features.values()]
        if len({c.size for c in cols}) != 1:
            raise ValueError("feature_matrix: all features must have the same length")
        return np.stack(cols, axis=1)
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
        raise ValueError(f"feature_matrix: expected a dict of [N] arrays or [N, F], got {x.shape}")
    return x


def standardize(x) -> np.ndarray:
    """Z-score the columns of ``x [N, F]`` over all rows: ``(x − mean) / (std + 1e-10)``."""
    x = feature_matrix(x)
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-10)


def validation_split(n: int, run: int, *, seed: int = 0, fraction: float = 0.2) -> np.ndarray:
    """Validation mask ``[n]`` of a run: ``RandomState(seed + run).rand(n) < fraction``
    (the reference's ``np.random.seed(run); rand(N) < 0.2`` for ``seed=0``)."""
    return np.random.RandomState(seed + run).rand(n) < fraction


def _prepare(fn: str, features, target, runs: int):
    x = standardize(features)
    y = np.asarray(target).ravel()
    if y.size != x.shape[0]:
        raise ValueError(f"{fn}: {x.shape[0]} feature rows but {y.size} targets")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{fn}: features must be finite")
    if not isinstance(runs, (int, np.integer)) or runs < 1:
        raise ValueError(f"{fn}: runs must be a positive int, got {runs!r}")
    return x, y


def _summary(scores: dict) -> dict:
    out = {}
    for name, values in scores.items():
        values = np.asarray(values)
        out[name] = float(values.mean())
        out[f"{name}_std"] = float(values.std())
        out[f"{name}_runs"] = values
    return out


def meta_classification(features, iou0, *, runs: int = 5, seed: int = 0,
                        fraction: float = 0.2) -> dict:
    """Meta classification IoU = 0 vs > 0 by logistic regression (module docstring).

    ``features``: dict name → ``[N]`` (e.g. :func:`select_features`) or ``[N, F]``;
    ``iou0 [N]`` bool. Returns ``{"auroc", "auroc_std", "auroc_runs", "accuracy",
    "accuracy_std", "accuracy_runs"}`` on the validation segments.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import auc, roc_curve

    x, y = _prepare("meta_classification", features, iou0, runs)
    y = y.astype(bool)
    scores = {"auroc": [], "accuracy": []}
    for run in range(runs):
        val = validation_split(y.size, run, seed=seed, fraction=fraction)
        if len(np.unique(y[~val])) < 2 or len(np.unique(y[val])) < 2:
            raise ValueError(f"meta_classification: run {run}: training and validation sets "
                             "need both classes of iou0")
        model = LogisticRegression(C=np.inf, solver="lbfgs", max_iter=3000, tol=1e-3)
        model.fit(x[~val], y[~val])
        proba = model.predict_proba(x[val])
        scores["accuracy"].append(np.mean(model.classes_[proba.argmax(1)] == y[val]))
        fpr, tpr, _ = roc_curve(y[val], proba[:, list(model.classes_).index(True)])
        scores["auroc"].append(auc(fpr, tpr))
    return _summary(scores)


def meta_regression(features, iou, *, runs: int = 5, seed: int = 0,
                    fraction: float = 0.2) -> dict:
    """Meta regression of the adjusted IoU by linear regression, predictions clipped to
    [0, 1]. Returns ``{"r2", "r2_std", "r2_runs", "rmse", "rmse_std", "rmse_runs"}``."""
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import mean_squared_error, r2_score

    x, y = _prepare("meta_regression", features, iou, runs)
    y = y.astype(np.float64)
    scores = {"r2": [], "rmse": []}
    for run in range(runs):
        val = validation_split(y.size, run, seed=seed, fraction=fraction)
        if val.sum() < 2 or (~val).sum() < 2:
            raise ValueError(f"meta_regression: run {run}: too few segments to split")
        pred = np.clip(LinearRegression().fit(x[~val], y[~val]).predict(x[val]), 0.0, 1.0)
        scores["r2"].append(r2_score(y[val], pred))
        scores["rmse"].append(np.sqrt(mean_squared_error(y[val], pred)))
    return _summary(scores)
