"""Segmentation metrics against scikit-learn, naive per-pixel loops and hand-worked cases."""
import numpy as np
import pytest
from sklearn.metrics import accuracy_score, jaccard_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from jaxdepth.metrics import segmentation as sg

C = 4


def _trapezoid(y, x):
    return sum(0.5 * (y[i] + y[i + 1]) * (x[i + 1] - x[i]) for i in range(len(x) - 1))


@pytest.fixture(scope="module")
def data():
    """Two 9×8 images (144 pixels), C = 4, a few void pixels, softmax-like probabilities."""
    rng = np.random.default_rng(0)
    label = rng.integers(0, C, (2, 9, 8))
    label[0, 0, :5] = 255
    label[1, 3, 2] = 255
    probs = rng.dirichlet(np.full(C, 0.7), size=label.shape)
    pred = probs.argmax(-1)
    return label, pred, probs


# ----------------------------------------------------------------------------- IoU
def test_confusion_matrix_matches_sklearn_and_accumulates(data):
    label, pred, _ = data
    valid = label != 255
    conf = sg.confusion_matrix(pred, label, C)
    np.testing.assert_array_equal(
        conf, sk_confusion_matrix(label[valid], pred[valid], labels=range(C)))
    state = np.zeros((C, C), np.int64)
    for b in range(2):
        state = sg.update_confusion(state, pred[b], label[b])
    np.testing.assert_array_equal(state, conf)
    # what is predicted on a void pixel is never counted
    other = pred.copy()
    other[~valid] = (other[~valid] + 1) % C
    np.testing.assert_array_equal(sg.confusion_matrix(other, label, C), conf)


def test_iou_and_accuracy_match_sklearn(data):
    label, pred, _ = data
    valid = label != 255
    conf = sg.confusion_matrix(pred, label, C)
    np.testing.assert_allclose(
        sg.class_iou(conf),
        jaccard_score(label[valid], pred[valid], labels=range(C), average=None), rtol=1e-12)
    assert sg.pixel_accuracy(conf) == pytest.approx(accuracy_score(label[valid], pred[valid]))


def test_iou_nan_rule_hand_worked():
    # class 0: TP 2, FN 1; class 1: only predicted (FP 1) -> 0; class 2 absent -> NaN
    label = np.array([[0, 0, 0, 255]])
    pred = np.array([[0, 0, 1, 2]])
    iou = sg.class_iou(sg.confusion_matrix(pred, label, 3))
    np.testing.assert_allclose(iou[:2], [2 / 3, 0.0])
    assert np.isnan(iou[2])
    assert sg.miou(sg.confusion_matrix(pred, label, 3)) == pytest.approx((2 / 3 + 0) / 2)
    assert np.isnan(sg.miou(np.zeros((3, 3))))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="same shape"):
        sg.confusion_matrix(np.zeros((2, 3), int), np.zeros((3, 2), int), 2)
    with pytest.raises(ValueError, match=r"label values .* \[0, 2\)"):
        sg.confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 5), 2)
    with pytest.raises(ValueError, match="pred values"):
        sg.confusion_matrix(np.full((2, 2), 3), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match="integer"):
        sg.confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sg.ece(np.full((2, 2), 1.5), np.zeros((2, 2), int), np.zeros((2, 2), int))
    with pytest.raises(ValueError, match="constant"):
        sg.minmax_normalize(np.ones(3))
    with pytest.raises(ValueError, match="mode"):
        sg.ece(np.zeros((2, 2)), np.zeros((2, 2), int), np.zeros((2, 2), int), mode="x")
    with pytest.raises(ValueError, match="100 valid pixels"):
        sg.ause_brier(np.zeros((5, 5)), np.full((5, 5, 2), 0.5), np.zeros((5, 5), int))


# ----------------------------------------------------------------------------- ECE
def naive_ece(conf, pred, label, include_one, bins=10):
    """ECE written out per bin with the reference's comparisons b/10 <= c < (b+1)/10."""
    conf, pred, label = (np.ravel(a) for a in (conf, pred, label))
    total, weighted = 0, 0.0
    for b in range(bins):
        members = [i for i in range(conf.size) if label[i] != 255
                   and (b / bins <= conf[i] < (b + 1) / bins
                        or (include_one and b == bins - 1 and conf[i] == 1.0))]
        if not members:
            continue
        acc = sum(pred[i] == label[i] for i in members) / len(members)
        mean_conf = sum(conf[i] for i in members) / len(members)
        total += len(members)
        weighted += len(members) * abs(acc - mean_conf)
    return weighted / total


def test_ece_hand_worked():
    conf = np.array([[0.05, 0.15, 0.95, 1.0, 0.5]])
    pred = np.array([[1, 0, 2, 3, 0]])
    label = np.array([[1, 1, 2, 3, 255]])          # correct, wrong, correct, correct, void
    # bins 0, 1, 9: |1 - .05| + |0 - .15| + 2 |1 - .975| over 4 pixels
    assert sg.ece(conf, pred, label) == pytest.approx((0.95 + 0.15 + 0.05) / 4)
    # the reference leaves 1.0 out: bin 9 holds only 0.95
    stats = sg.calibration_bins(conf, pred, label, include_one=False)
    assert sg.ece_from_bins(stats) == pytest.approx((0.95 + 0.15 + 0.05) / 3)
    np.testing.assert_array_equal(stats.count, [1, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    # a confidence exactly on an edge (0.3) opens the upper bin
    assert sg.calibration_bins(np.array([0.3]), np.array([0]), np.array([0])).count[3] == 1


def test_ece_matches_naive_loop_both_modes(data):
    label, pred, probs = data
    conf = probs.max(-1)
    assert sg.ece(conf, pred, label) == pytest.approx(naive_ece(conf, pred, label, True))
    # reference: min-max over every pixel incl. void; put the extremes on void pixels so
    # that leaving them out would change the result
    raw = conf.copy()
    raw[0, 0, 0], raw[0, 0, 1] = -0.5, 2.0
    normalised = (raw - raw.min()) / (raw.max() - raw.min())
    assert sg.ece(raw, pred, label, mode="reference") == pytest.approx(
        naive_ece(normalised, pred, label, False))
    # uncertainty -> confidence = 1 - minmax(u); re-normalising it changes nothing
    unc = -np.log(conf)
    expected = 1 - (unc - unc.min()) / (unc.max() - unc.min())
    np.testing.assert_allclose(sg.uncertainty_to_confidence(unc), expected, atol=1e-15)
    c = sg.uncertainty_to_confidence(unc)
    assert sg.ece(c, pred, label, mode="reference") == pytest.approx(
        naive_ece(c, pred, label, False))
    # the accumulator pools exactly
    state = None
    for b in range(2):
        state = sg.update_calibration(state, conf[b], pred[b], label[b])
    assert sg.ece_from_bins(state) == pytest.approx(sg.ece(conf, pred, label))


# ----------------------------------------------------------------------------- AuSE
def naive_brier(probs, label):
    out = np.full(label.shape, np.nan)
    for idx in np.ndindex(label.shape):
        if label[idx] != 255:
            out[idx] = sum(((c == label[idx]) - probs[idx][c]) ** 2 for c in range(C))
    return out


def naive_curve(rank, values, n_keep):
    """Mean of ``values`` over the n_keep lowest ``rank``; tie groups cut by the prefix
    contribute their mean value per kept pixel."""
    groups = {}
    for r, v in zip(rank, values):
        groups.setdefault(r, []).append(v)
    total, left = 0.0, n_keep
    for r in sorted(groups):
        take = min(left, len(groups[r]))
        total += take * sum(groups[r]) / len(groups[r])
        left -= take
        if left == 0:
            break
    return total / n_keep


def naive_ause(unc, probs, label, reference):
    se = naive_brier(probs, label)
    u = np.asarray(unc, float)
    if reference:
        u = (u - u.min()) / (u.max() - u.min())   # over all pixels, void included
    valid = label != 255
    u, se = u[valid], se[valid]
    fracs = [k / 100 for k in range(100)]
    oracle, curve = [], []
    for f in fracs:
        m = int((1 - f) * se.size)
        oracle.append(naive_curve(se, se, m))
        curve.append(naive_curve(u, u if reference else se, m))
    oracle = [o / oracle[0] for o in oracle]
    curve = [c / curve[0] for c in curve]
    return _trapezoid([c - o for c, o in zip(curve, oracle)], fracs), curve, oracle


def test_brier_error_matches_naive(data):
    label, _, probs = data
    np.testing.assert_allclose(sg.brier_error(probs, label), naive_brier(probs, label),
                               rtol=1e-12)


@pytest.mark.parametrize("mode", ["standard", "reference"])
def test_ause_matches_naive(data, mode):
    label, _, probs = data
    rng = np.random.default_rng(1)
    unc = 1 - probs.max(-1) + 0.1 * rng.random(label.shape)
    unc[0, 0, 0] = 3.0                              # a void pixel sets the max
    out = sg.ause_brier(unc, probs, label, mode=mode)
    ause, curve, oracle = naive_ause(unc, probs, label, mode == "reference")
    assert out["ause"] == pytest.approx(ause, rel=1e-10)
    np.testing.assert_allclose(out["uncertainty"], curve, rtol=1e-10)
    np.testing.assert_allclose(out["oracle"], oracle, rtol=1e-10)
    np.testing.assert_allclose(out["fractions"], np.arange(100) / 100, atol=1e-12)


def test_ause_ties_are_shared_out(data):
    label, _, probs = data
    # four distinct uncertainty levels: every prefix cuts a tie group
    unc = np.round(1 - probs.max(-1), 1)
    out = sg.ause_brier(unc, probs, label)
    ause, curve, _ = naive_ause(unc, probs, label, False)
    assert out["ause"] == pytest.approx(ause, rel=1e-10)
    np.testing.assert_allclose(out["uncertainty"], curve, rtol=1e-10)
    # a constant uncertainty is a flat curve: the error is 1 - oracle
    flat = sg.ause_brier(np.zeros(label.shape), probs, label)
    np.testing.assert_allclose(flat["uncertainty"], 1.0)
    np.testing.assert_allclose(flat["error"], 1.0 - flat["oracle"])
