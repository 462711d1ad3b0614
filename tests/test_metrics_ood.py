"""SMIYC pixel and component metrics against scikit-learn (where binning is lossless), naive
threshold loops, a pure-python component evaluation with its own flood fill, and
hand-worked cases."""
import bisect
from collections import deque

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from jaxdepth.metrics import ood

TRAPZ = getattr(np, "trapezoid", None) or np.trapz


# ============================================================================ pixel level
def sklearn_reference(scores, positive):
    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    return {"auprc": average_precision_score(positive, scores),
            "auroc": roc_auc_score(positive, scores),
            "fpr95": fpr[np.argmax(tpr >= 0.95)]}


def naive_best_f1(scores, positive):
    best = 0.0
    for t in np.unique(scores):
        hit = scores >= t
        tp, fp, fn = np.sum(hit & positive), np.sum(hit & ~positive), np.sum(~hit & positive)
        best = max(best, 2 * tp / (2 * tp + fp + fn))
    return best


def f1_at(scores, positive, thr):
    hit = scores >= thr
    tp = np.sum(hit & positive)
    return 2 * tp / (2 * tp + np.sum(hit & ~positive) + np.sum(~hit & positive))


def bin_lower_edge(counts, value):
    """The threshold (lower edge) of the bin holding ``value``, found by bisection."""
    ascending = counts.thresholds[::-1]
    return ascending[bisect.bisect_right(list(ascending), value) - 1]


def assert_lossless(counts, scores):
    """Precondition of a comparison with sklearn: every bin holds one distinct score,
    and that score is the bin's threshold (so pooled frames stay exact)."""
    values = np.unique(scores)
    lower = [bin_lower_edge(counts, v) for v in values]
    np.testing.assert_array_equal(lower, values, err_msg="test data is not losslessly binned")


def frame(rng, levels, n_pos, n_neg, n_void, shape):
    """A frame with the given class counts, scores drawn from ``levels`` (anomalies
    higher on average), each class holding its lowest and highest level."""
    pos = np.concatenate([[levels[0], levels[-1]], rng.choice(levels[len(levels) // 3:],
                                                               n_pos - 2)])
    neg = np.concatenate([[levels[0], levels[-1]], rng.choice(levels[:2 * len(levels) // 3],
                                                               n_neg - 2)])
    score = np.concatenate([pos, neg, rng.random(n_void)])
    label = np.concatenate([np.ones(n_pos), np.zeros(n_neg), np.full(n_void, 255)])
    order = rng.permutation(score.size)
    return score[order].reshape(shape), label[order].astype(np.uint8).reshape(shape)


def pooled(frames):
    s = np.concatenate([f[0][f[1] != 255] for f in frames])
    y = np.concatenate([f[1][f[1] != 255] == 1 for f in frames])
    return s, y


def check_against_sklearn(result, scores, positive):
    ref = sklearn_reference(scores, positive)
    for key in ("auprc", "auroc", "fpr95"):
        assert result[key] == pytest.approx(ref[key], rel=1e-12), key
    assert result["best_f1"] == pytest.approx(naive_best_f1(scores, positive), rel=1e-12)
    assert f1_at(scores, positive, result["best_threshold"]) == pytest.approx(result["best_f1"])


def test_percentile_bins_single_frame_continuous_scores():
    # fewer than 384 pixels per class, and n - 1 a power of 2 (exact quantile positions):
    # every score is a quantile, hence a bin edge
    rng = np.random.default_rng(0)
    label = rng.permutation(np.repeat(np.array([1, 0, 255], np.uint8), [33, 129, 6]))
    label = label.reshape(12, 14)
    score = rng.normal(size=label.shape) + 1.5 * (label == 1)
    counts = ood.pixel_counts(score, label)
    s, y = pooled([(score, label)])
    assert_lossless(counts, s)
    assert (counts.num_pos, counts.num_neg) == (y.sum(), (~y).sum())
    check_against_sklearn(ood.pixel_metrics([counts]), s, y)


def test_percentile_bins_pooled_frames_with_ties():
    # 33 / 129 pixels per class (n - 1 a power of 2: exact quantile positions), six score
    # levels shared by the frames, one frame alone holding the top score
    rng = np.random.default_rng(1)
    levels = np.array([0.1, 0.2, 0.35, 0.5, 0.7, 0.8])
    frames = [frame(rng, levels, 33, 129, 34, (14, 14)) for _ in range(3)]
    top = frames[0][0]
    top[np.argwhere(frames[0][1] == 1)[0][0], np.argwhere(frames[0][1] == 1)[0][1]] = 0.95
    counts = [ood.pixel_counts(*f) for f in frames]
    for c, f in zip(counts, frames):
        assert_lossless(c, f[0][f[1] != 255])
    check_against_sklearn(ood.pixel_metrics(counts), *pooled(frames))


def test_uniform_bins_pooled_frames():
    edges = np.linspace(-0.01, 1.01, ood.UNIFORM_BINS + 1)
    levels = edges[[20, 400, 1000, 2047, 2500, 3100, 4000]]   # scores on bin edges
    rng = np.random.default_rng(2)
    frames = [frame(rng, levels, 20, 40, 5, (5, 13)) for _ in range(2)]
    counts = [ood.pixel_counts(*f, bins="uniform") for f in frames]
    for c, f in zip(counts, frames):
        assert_lossless(c, f[0][f[1] != 255])
    check_against_sklearn(ood.pixel_metrics(counts), *pooled(frames))
    # a score outside [-0.01, 1.01] is never detected: like the lowest score of all
    score, label = frames[0][0].copy(), frames[0][1]
    i = tuple(np.argwhere(label == 1)[0])
    score[i] = 1.5
    result = ood.pixel_metrics([ood.pixel_counts(score, label, bins="uniform")])
    assert result["curves"]["tp"][-2] == (label == 1).sum() - 1  # appended (P, N) point
    score[i] = -1.0
    check_against_sklearn(result, *pooled([(score, label)]))


def naive_binned_metrics(frames, num_bins):
    """The binned protocol as a threshold loop: per frame, edges from the quantile rule;
    a pixel counts as detected at threshold t when its bin's lower edge is >= t."""
    per_frame = []
    for score, label in frames:
        s, y = score[label != 255], label[label != 255] == 1
        vmin, vmax = s.min(), s.max()
        eps = max(0.01 * (vmax - vmin), 0.01)
        edges = {vmin - eps, vmax + eps}
        for part in (s[y], s[~y]):
            edges |= set(np.quantile(part, np.linspace(0, 1, min(num_bins // 2, part.size))))
        edges = sorted(edges)
        lower = [edges[bisect.bisect_right(edges, v) - 1] for v in s]
        per_frame.append((edges[:-1], lower, y))
    thresholds = sorted({t for e, _, _ in per_frame for t in e}, reverse=True)
    P = sum(y.sum() for _, _, y in per_frame)
    N = sum((~y).sum() for _, _, y in per_frame)
    tp, fp = [0], [0]
    for t in thresholds:
        tp.append(sum(int(lo >= t and pos) for _, low, y in per_frame for lo, pos in zip(low, y)))
        fp.append(sum(int(lo >= t and not pos) for _, low, y in per_frame
                      for lo, pos in zip(low, y)))
    tpr, fpr = [a / P for a in tp], [b / N for b in fp]
    prec = [a / (a + b) if a + b else 1.0 for a, b in zip(tp, fp)]
    ap = sum((tpr[i] - tpr[i - 1]) * prec[i] for i in range(1, len(tp)))
    auroc = sum((fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2 for i in range(1, len(tp)))
    fpr95 = next(f for r, f in zip(tpr, fpr) if r >= 0.95)
    f1 = [2 * a / (2 * a + b + P - a) for a, b in zip(tp, fp)]
    best = int(np.argmax(f1))
    return {"auprc": ap, "auroc": auroc, "fpr95": fpr95, "best_f1": f1[best],
            "best_threshold": ([thresholds[0] + 1] + thresholds)[best]}


def test_lossy_percentile_bins_match_naive_threshold_loop():
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(3):
        label = (rng.random((9, 11)) < 0.3).astype(np.uint8)
        label[0, :3] = 255
        frames.append((rng.normal(size=label.shape) + (label == 1), label))
    counts = [ood.pixel_counts(*f, num_bins=16) for f in frames]   # 8 quantiles per class
    result = ood.pixel_metrics(counts)
    expected = naive_binned_metrics(frames, 16)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, rel=1e-12), key


def test_curves_hand_worked():
    # repeated threshold 1.0: index 0 is kept (the reference's rule), then its last
    # occurrence; a (0, 0) point is prepended
    r = ood.curves_from_counts([1.0, 1.0, 0.5], [1, 3, 4], [0, 1, 2], 4, 2)
    np.testing.assert_allclose(r["curves"]["recall"], [0, 0.25, 0.75, 1])
    np.testing.assert_allclose(r["curves"]["precision"], [1, 1, 0.75, 4 / 6])
    assert r["auprc"] == pytest.approx(0.25 * 1 + 0.5 * 0.75 + 0.25 * 4 / 6)
    assert r["auroc"] == pytest.approx(0.5 * (0.25 + 0.75) / 2 + 0.5 * (0.75 + 1) / 2)
    assert r["fpr95"] == 1.0
    assert (r["best_f1"], r["best_threshold"]) == (pytest.approx(0.8), 0.5)
    np.testing.assert_allclose(r["curves"]["thresholds"], [2.0, 1.0, 1.0, 0.5])
    old = ood.curves_from_counts([1.0, 1.0, 0.5], [1, 3, 4], [0, 1, 2], 4, 2, ap="trapz")
    assert old["auprc"] == pytest.approx(0.5 * (1 + 0.75) / 2 + 0.25 * (0.75 + 4 / 6) / 2)
    # the end is not (P, N): append it; precision 1 where nothing is predicted
    r = ood.curves_from_counts([0.9, 0.4], [2, 3], [0, 1], 4, 3)
    np.testing.assert_allclose(r["curves"]["tp"], [0, 2, 3, 4])
    np.testing.assert_allclose(r["curves"]["thresholds"], [1.9, 0.9, 0.4, -0.6])
    assert r["auprc"] == pytest.approx(0.5 + 0.25 * 0.75 + 0.25 * 4 / 7)
    r = ood.curves_from_counts([0.9, 0.5], [0, 2], [0, 1], 2, 1)   # no prepend needed
    np.testing.assert_allclose(r["curves"]["precision"], [1, 2 / 3])
    assert r["auprc"] == pytest.approx(2 / 3)


def test_pixel_bad_inputs_raise():
    label = np.zeros((3, 3), np.uint8)
    with pytest.raises(ValueError, match="0 .* 1 .* 255"):
        ood.pixel_counts(np.zeros((3, 3)), label + 2)
    with pytest.raises(ValueError, match="same shape"):
        ood.pixel_counts(np.zeros((3, 4)), label)
    with pytest.raises(ValueError, match="one anomaly"):
        ood.pixel_metrics([ood.pixel_counts(np.random.rand(3, 3), label)])
    label[0, 0] = 1
    a = ood.pixel_counts(np.random.rand(3, 3), label)
    b = ood.pixel_counts(np.random.rand(3, 3), label, bins="uniform")
    with pytest.raises(ValueError, match="one bin strategy"):
        ood.pixel_metrics([a, b])


# ======================================================================== component level
NEIGHBOURS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]


def flood_fill(mask):
    """8-connected components of a boolean mask as a list of pixel sets."""
    h, w = len(mask), len(mask[0])
    seen, comps = set(), []
    for i in range(h):
        for j in range(w):
            if mask[i][j] and (i, j) not in seen:
                comp, todo = set(), deque([(i, j)])
                seen.add((i, j))
                while todo:
                    a, b = todo.popleft()
                    comp.add((a, b))
                    for di, dj in NEIGHBOURS:
                        p = (a + di, b + dj)
                        if 0 <= p[0] < h and 0 <= p[1] < w and mask[p[0]][p[1]] \
                                and p not in seen:
                            seen.add(p)
                            todo.append(p)
                comps.append(comp)
    return comps


def naive_components(score, label, threshold, min_pred, min_gt, quirk=False):
    h, w = label.shape
    pixels = [(i, j) for i in range(h) for j in range(w)]
    void = {p for p in pixels if label[p] == 255}
    pred = flood_fill([[score[i, j] > threshold and (i, j) not in void for j in range(w)]
                       for i in range(h)])
    pred = [q for q in pred if len(q) >= min_pred]
    gt = flood_fill([[label[i, j] == 1 for j in range(w)] for i in range(h)])
    for k in gt:
        if len(k) < min_gt:
            void |= k
    if quirk:
        background = set(pixels) - set().union(*gt)
        if len(background) < min_gt:
            void |= background
    gt = [k - void for k in gt if len(k) >= min_gt]
    pred = [q - void for q in pred if q - void]
    siou = []
    for k in gt:
        union = set().union(*[q for q in pred if q & k])
        inter = len(k & union)
        adjust = len(union & set().union(*[o for o in gt if o is not k]))
        siou.append(inter / (len(union) + len(k) - inter - adjust))
    ppv, siou_pred = [], []
    for q in pred:
        union = set().union(*[k for k in gt if k & q])
        ppv.append(len(q & union) / len(q))
        inter = len(q & union)
        adjust = len(union & set().union(*[o for o in pred if o is not q]))
        siou_pred.append(inter / (len(union) + len(q) - inter - adjust))
    t = ood.SIOU_THRESHOLDS
    tp = np.array([sum(s >= x for s in siou) for x in t])
    return {"siou": siou, "ppv": ppv, "siou_pred": siou_pred, "tp": tp,
            "fn": len(siou) - tp, "fp": np.array([sum(p < x for p in ppv) for x in t])}


def blob_frame(rng, h=22, w=22):
    """Random rectangles of anomaly and void on a background, a smooth-ish noisy score."""
    label = np.zeros((h, w), np.uint8)
    for value, count in ((1, 5), (255, 2)):
        for _ in range(count):
            i, j = rng.integers(0, h - 2), rng.integers(0, w - 2)
            a, b = rng.integers(1, 6, size=2)
            label[i:i + a, j:j + b] = value
    noise = rng.random((h, w))
    score = 0.55 * (label == 1) + 0.5 * (noise + np.roll(noise, 1, 0) + np.roll(noise, 1, 1)) / 3
    return score, label


@pytest.mark.parametrize("seed", range(6))
def test_components_match_naive(seed):
    rng = np.random.default_rng(seed)
    score, label = blob_frame(rng)
    threshold = float(np.quantile(score, 0.7))
    got = ood.component_metrics(score, label, threshold, min_pred=4, min_gt=3)
    want = naive_components(score, label, threshold, 4, 3)
    for key in ("siou", "ppv", "siou_pred", "tp", "fn", "fp"):
        np.testing.assert_allclose(getattr(got, key), want[key], rtol=1e-12, err_msg=key)


def test_background_quirk_on_a_tiny_image():
    label = np.ones((4, 4), np.uint8)
    label[0, :3] = 0                  # 3 background pixels < min_gt = 5
    score = np.where(label == 1, 0.9, 0.95)
    plain = ood.component_metrics(score, label, 0.5, min_pred=1, min_gt=5)
    quirk = ood.component_metrics(score, label, 0.5, min_pred=1, min_gt=5,
                                  background_quirk=True)
    for got, flag in ((plain, False), (quirk, True)):
        want = naive_components(score, label, 0.5, 1, 5, quirk=flag)
        np.testing.assert_allclose(got.siou, want["siou"])
        np.testing.assert_allclose(got.ppv, want["ppv"])
    assert plain.siou[0] == pytest.approx(13 / 16) and quirk.siou[0] == 1.0


def test_components_hand_worked_and_aggregated():
    t = ood.SIOU_THRESHOLDS
    # A: GT 2×2 block, prediction 2×3 over it: sIoU = PPV = 4 / 6
    label_a = np.zeros((6, 8), np.uint8)
    label_a[1:3, 1:3] = 1
    score_a = np.zeros((6, 8))
    score_a[1:3, 1:4] = 1.0
    a = ood.component_metrics(score_a, label_a, 0.5, min_pred=1, min_gt=1)
    np.testing.assert_allclose([a.siou[0], a.ppv[0]], [4 / 6, 4 / 6])
    np.testing.assert_array_equal(a.tp, t <= 4 / 6)
    np.testing.assert_array_equal(a.fp, t > 4 / 6)
    # B: two GT blocks joined by one predicted component (2×5): the other block's pixels
    # are not held against each, sIoU = 4 / (10 + 4 - 4 - 4); PPV = 8 / 10
    label_b = np.zeros((6, 8), np.uint8)
    label_b[1:3, 1:3] = 1
    label_b[1:3, 4:6] = 1
    score_b = np.zeros((6, 8))
    score_b[1:3, 1:6] = 1.0
    b = ood.component_metrics(score_b, label_b, 0.5, min_pred=1, min_gt=1)
    np.testing.assert_allclose(b.siou, [4 / 6, 4 / 6])
    np.testing.assert_allclose(b.ppv, [0.8])
    # strict threshold: a score equal to it predicts nothing; small components dropped
    c = ood.component_metrics(score_b, label_b, 1.0, min_pred=1, min_gt=1)
    assert c.ppv.size == 0 and np.all(c.siou == 0)
    d = ood.component_metrics(score_b, label_b, 0.5, min_pred=11, min_gt=1)
    assert d.ppv.size == 0
    # a GT component under min_gt turns void: the prediction over it loses those pixels
    e = ood.component_metrics(score_a, label_a, 0.5, min_pred=1, min_gt=5)
    assert e.siou.size == 0 and e.ppv[0] == 0.0 and np.all(e.fp == 1)

    agg = ood.aggregate_components([a, b])
    f1 = np.where(t <= 4 / 6, 1.0, 0.0)          # above 2/3: TP 0, FN 3, FP 1 -> F1 0
    np.testing.assert_allclose(agg["f1"], f1)
    assert agg["f1_mean"] == pytest.approx(9 / 11)
    assert agg["siou"] == pytest.approx(2 / 3)
    assert agg["ppv"] == pytest.approx((4 / 6 + 0.8) / 2)
    assert ood.ANOMALY_TRACK == (500, 100) and ood.OBSTACLE_TRACK == (50, 10)
    assert ood.component_metrics(score_a, label_a, 0.5,
                                 **ood.OBSTACLE_TRACK._asdict()).ppv.size == 0
