"""MetaSeg features against a naive pixel loop with its own flood fill, the IoU adjustment
on a hand-worked case, and the meta models against direct scikit-learn calls."""
import math
from collections import deque

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import mean_squared_error, r2_score, roc_auc_score

from jaxdepth.metrics import metaseg as ms

NEIGHBOURS = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]

CLASS_MAP = np.array([
    [0, 0, 0, 0, 1, 1, 1, 1],
    [0, 0, 0, 0, 1, 1, 1, 1],
    [0, 0, 0, 0, 1, 1, 2, 1],
    [0, 0, 0, 0, 1, 1, 1, 1],
    [2, 2, 0, 0, 1, 1, 1, 1],
    [2, 2, 2, 2, 2, 2, 2, 2],
    [0, 2, 2, 2, 2, 2, 2, 0],
])


@pytest.fixture(scope="module")
def image():
    """Probabilities whose argmax is CLASS_MAP, a label with void pixels and errors, and
    one gradient-like heatmap."""
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=CLASS_MAP.shape)
    probs[np.arange(7)[:, None], np.arange(8), CLASS_MAP] += 2.0
    probs /= probs.sum(-1, keepdims=True)
    label = CLASS_MAP.copy()
    label[0, 0] = label[3, 5] = 255
    label[2, 6] = 1                       # the class-2 island is wrong
    label[6, 0] = 2                       # so is the corner
    label[0, 4:6] = 0                     # part of the class-1 region is class 0
    grad = rng.random(CLASS_MAP.shape) * 3
    return probs, label, {"G": grad}


def flood_fill(mask):
    """8-connected components of a boolean mask, as pixel lists in BFS order."""
    h, w = mask.shape
    seen, comps = set(), []
    for i in range(h):
        for j in range(w):
            if mask[i, j] and (i, j) not in seen:
                comp, todo = [], deque([(i, j)])
                seen.add((i, j))
                while todo:
                    a, b = todo.popleft()
                    comp.append((a, b))
                    for di, dj in NEIGHBOURS:
                        p = (a + di, b + dj)
                        if 0 <= p[0] < h and 0 <= p[1] < w and mask[p] and p not in seen:
                            seen.add(p)
                            todo.append(p)
                comps.append(comp)
    return comps


def components_by_class(classes, valid):
    comps = [(c, set(comp)) for c in np.unique(classes[valid])
             for comp in flood_fill(valid & (classes == c))]
    return sorted(comps, key=lambda cc: min(cc[1]))   # raster order of the first pixel


def naive_features(probs, label, heatmaps, reference):
    h, w, n_cls = probs.shape
    pred = probs.argmax(-1)
    valid = label != 255
    segs = components_by_class(pred, valid)
    pn = probs / probs.sum(-1, keepdims=True)
    maps = {"E": np.array([[-sum(p * math.log(p) for p in pn[i, j]) for j in range(w)]
                           for i in range(h)]),
            "M": np.array([[1 - np.sort(probs[i, j])[-1] + np.sort(probs[i, j])[-2]
                            for j in range(w)] for i in range(h)]), **heatmaps}
    rows = []
    for c, seg in segs:
        bd = [p for p in seg if any(0 <= p[0] + di < h and 0 <= p[1] + dj < w
                                    and (p[0] + di, p[1] + dj) not in seg
                                    for di, dj in NEIGHBOURS)]
        if not bd:
            bd = list(seg)
        inner = [p for p in seg if p not in bd]
        s, s_in, s_bd = len(seg), len(inner), len(bd)
        row = {"S": s, "S_in": s_in, "S_bd": s_bd, "S_rel": s / s_bd, "S_rel_in": s_in / s_bd}
        for name, m in maps.items():
            mean = sum(m[p] for p in seg) / s
            mean_in = sum(m[p] for p in inner) / s_in if s_in else 0.0
            mean_bd = sum(m[p] for p in bd) / s_bd
            row.update({name: mean, f"{name}_in": mean_in, f"{name}_bd": mean_bd,
                        f"{name}_rel": mean * s / s_bd, f"{name}_rel_in": mean_in * s_in / s_bd})
            if name in ("E", "M"):
                continue
            if reference:
                sq_in = sum(m[p] ** 2 for p in inner)
                var_in = (sq_in / s_in if s_in else 0.0) - mean_in ** 2
                var_bd = sq_in / s_bd - mean_bd ** 2
                var = 2 * sq_in / s - mean ** 2
            else:
                var = sum((m[p] - mean) ** 2 for p in seg) / s
                var_in = sum((m[p] - mean_in) ** 2 for p in inner) / s_in if s_in else 0.0
                var_bd = sum((m[p] - mean_bd) ** 2 for p in bd) / s_bd
            row.update({f"{name}_var": var, f"{name}_var_in": var_in, f"{name}_var_bd": var_bd,
                        f"{name}_var_rel": var * s / s_bd,
                        f"{name}_var_rel_in": var_in * s_in / s_bd})
        for k in range(n_cls):
            row[f"cprob{k}"] = sum(probs[p][k] for p in seg) / s
        row["class"] = c
        gts = [g for gc, g in components_by_class(label, valid) if gc == c and g & seg]
        union = set().union(*gts)
        inter = len(seg & union)
        others = set().union(*[o for oc, o in segs if o is not seg
                               and (reference or oc == c)])
        adjust = len(union & others)
        row["iou"] = inter / (len(union) + s - inter - adjust)
        row["iou0"] = inter == 0
        rows.append(row)
    return rows


@pytest.mark.parametrize("reference", [False, True])
def test_features_match_naive_loop(image, reference):
    probs, label, heatmaps = image
    features, targets = ms.segment_features(probs, label, heatmaps, reference=reference)
    rows = naive_features(probs, label, heatmaps, reference)
    assert len(rows) == 6 and len(features["S"]) == 6
    assert set(features) == set(rows[0]) - {"iou", "iou0"}
    for name, values in features.items():
        np.testing.assert_allclose(values, [r[name] for r in rows], rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    np.testing.assert_allclose(targets["iou"], [r["iou"] for r in rows], rtol=1e-12)
    np.testing.assert_array_equal(targets["iou0"], [r["iou0"] for r in rows])
    assert features["S_in"].max() > 0 and features["S_in"].min() == 0   # both kinds occur


def test_segments_and_boundary_hand_worked():
    ids, classes = ms.segment_components(CLASS_MAP)
    # raster order: big 0 region, class-1 region, class-2 island, class-2 band, 2 corners
    np.testing.assert_array_equal(classes, [0, 1, 2, 2, 0, 0])
    assert ids[2, 6] == 3 and ids[4, 0] == 4 and ids[6, 0] == 5 and ids[6, 7] == 6
    boundary = ms.inner_boundary(ids)
    big = ids == 1
    # interior of the 0 region: rows 0-2 × columns 0-2 (the image border is no boundary;
    # row 3 touches the class-2 block diagonally or directly, column 3 the class-1 region)
    np.testing.assert_array_equal(np.argwhere(big & ~boundary),
                                  [[r, c] for r in range(3) for c in range(3)])
    assert boundary[2, 6] and boundary[2, 5] and not boundary[0, 7]
    # one segment filling the image has no neighbour: all boundary
    whole = np.ones((3, 4), int)
    assert ms.inner_boundary(whole).all()
    probs = np.full((3, 4, 2), 0.25)
    probs[..., 0] = 0.75
    grad = np.arange(12.0).reshape(3, 4)
    f, t = ms.segment_features(probs, None, {"G": grad}, reference=True)
    assert t is None and f["S_in"][0] == 0 and f["S_bd"][0] == 12
    assert f["G_var"][0] == pytest.approx(-grad.mean() ** 2)   # the reference bug
    f, _ = ms.segment_features(probs, None, {"G": grad})
    assert f["G_var"][0] == pytest.approx(grad.var())


def test_adjusted_iou_hand_worked():
    label = np.array([[0, 0, 0, 0, 0, 0],
                      [1, 1, 1, 1, 1, 1]])
    pred = np.array([[0, 0, 0, 1, 0, 0],
                     [1, 1, 1, 1, 1, 2]])
    probs = np.eye(3)[pred] * 0.8 + 0.2 / 3
    # segments: s1 = (0,0..2) class 0, s2 = (0,3) + (1,0..4) class 1, s3 = (0,4..5)
    # class 0, s4 = (1,5) class 2; GT: g0 = row 0, g1 = row 1
    _, t = ms.segment_features(probs, label)
    # MetaSeg: s1: I 3, |g0| 6, A = |s3| = 2 -> 3 / (6 + 3 - 3 - 2); s2: 5 / (6 + 6 - 5)
    np.testing.assert_allclose(t["iou"], [3 / 4, 5 / 7, 2 / 3, 0.0])
    np.testing.assert_array_equal(t["iou0"], [False, False, False, True])
    # reference: any other segment is removed, so IoU = I / |s|
    _, t = ms.segment_features(probs, label, reference=True)
    np.testing.assert_allclose(t["iou"], [1.0, 5 / 6, 1.0, 0.0])


def test_feature_errors_and_groups(image):
    probs, label, heatmaps = image
    with pytest.raises(ValueError, match="built-in"):
        ms.segment_features(probs, label, {"E": heatmaps["G"]})
    with pytest.raises(ValueError, match="already exist"):
        ms.segment_features(probs, label, {"cprob1": heatmaps["G"]})
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        ms.segment_features(probs, label, {"G": heatmaps["G"][:3]})
    with pytest.raises(ValueError, match="label values"):
        ms.segment_features(probs, np.full(label.shape, 7))
    features, _ = ms.segment_features(probs, label, heatmaps)
    pgn = ms.select_features(features, "pgn", gradient_maps=["G"])
    assert list(pgn) == list(ms.heatmap_feature_names("G", variance=True))
    metaseg = ms.select_features(features, "metaseg", gradient_maps=["G"])
    assert set(metaseg) == set(features) - set(pgn) - {"class"}
    assert set(ms.select_features(features, "all", gradient_maps=["G"])) == \
        set(features) - {"class"}
    assert list(ms.select_features(features, "entropy")) == ["E"]


# ----------------------------------------------------------------------------- meta models
@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    n = 240
    feats = {"a": rng.normal(size=n), "b": rng.normal(size=n) * 5 + 3,
             "c": rng.exponential(size=n)}
    logit = 1.5 * feats["a"] - 0.3 * feats["b"] + 1.0
    iou0 = rng.random(n) < 1 / (1 + np.exp(-logit))
    iou = np.clip(0.5 + 0.2 * feats["a"] - 0.1 * feats["c"] + 0.1 * rng.normal(size=n), 0, 1)
    return feats, iou0, iou


def reference_splits(n, runs):
    out = []
    for run in range(runs):
        np.random.seed(run)
        out.append(np.random.rand(n) < 0.2)
    return out


def test_meta_models_match_direct_sklearn(table):
    feats, iou0, iou = table
    x = np.stack(list(feats.values()), 1)
    z = (x - x.mean(0)) / (x.std(0) + 1e-10)
    auroc, acc, r2, rmse = [], [], [], []
    for val in reference_splits(len(iou), 3):
        clf = LogisticRegression(C=np.inf, max_iter=3000, tol=1e-3).fit(z[~val], iou0[~val])
        auroc.append(roc_auc_score(iou0[val], clf.predict_proba(z[val])[:, 1]))
        acc.append(np.mean(clf.predict(z[val]) == iou0[val]))
        pred = np.clip(LinearRegression().fit(z[~val], iou[~val]).predict(z[val]), 0, 1)
        r2.append(r2_score(iou[val], pred))
        rmse.append(math.sqrt(mean_squared_error(iou[val], pred)))
    cls = ms.meta_classification(feats, iou0, runs=3)
    reg = ms.meta_regression(x, iou, runs=3)
    np.testing.assert_allclose(cls["auroc_runs"], auroc, rtol=1e-6)
    np.testing.assert_allclose(cls["accuracy_runs"], acc)
    assert cls["auroc"] == pytest.approx(np.mean(auroc), rel=1e-6)
    assert cls["auroc_std"] == pytest.approx(np.std(auroc), rel=1e-4, abs=1e-9)
    np.testing.assert_allclose(reg["r2_runs"], r2, rtol=1e-9)
    np.testing.assert_allclose(reg["rmse_runs"], rmse, rtol=1e-9)
    assert reg["r2"] == pytest.approx(np.mean(r2))
    for run, val in enumerate(reference_splits(len(iou), 3)):
        np.testing.assert_array_equal(ms.validation_split(len(iou), run), val)
    with pytest.raises(ValueError, match="targets"):
        ms.meta_regression(x, iou[:10])
