"""Evaluation harness: depth metrics and AUSE/AURG of uncertainty methods, per image
then averaged, under the KITTI / NYU protocols (docs/protocols.md), the one evaluation
loop over a test source, and the paper-style table.

    rows = [Row("Reg", "Grad", method("grad", model.apply, variables))]
    ev = Evaluator(KITTI_BENCHMARK)
    evaluate(rows, source, batch_size=8, add=lambda row, est, samples, idx: ev.add(
        row.model, row.method, est, np.stack([s["depth"] for s in samples])),
        timer=lambda row, s, n: ev.time(row.model, row.method, s, n))
    print(format_table(ev.rows()))                      # ev.rows(): the results.json layout
"""
from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdepth import metrics

SCALINGS = ("none", "median", "stereo")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How predictions are compared with ground truth.

    gt is valid where finite, > `gt_min` and (if set) < `gt_max`, inside the Garg
    crop if `garg_crop`; predictions (disparity and uncertainty) are resized
    bilinearly to the gt size, scaled (`median`: per-image median ratio;
    `stereo`: × `stereo_factor`), then clamped to [`min_depth`, `max_depth`].
    """
    name: str
    min_depth: float = 1e-3
    max_depth: float = 80.0
    gt_min: float = 0.0
    gt_max: float | None = None
    garg_crop: bool = False
    scaling: str = "none"
    stereo_factor: float = 5.4

    def __post_init__(self):
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")


KITTI_BENCHMARK = Protocol("kitti_eigen_benchmark")                       # improved gt, gt > 0
KITTI_EIGEN = Protocol("kitti_eigen", gt_min=1e-3, gt_max=80.0, garg_crop=True)
NYU = Protocol("nyu", max_depth=10.0, gt_min=1e-3, gt_max=10.0)
SYNTHETIC = Protocol("synthetic", gt_max=80.0)  # procedural scenes: metric gt, capped at 80 m


def prepare(estimate, gt, protocol: Protocol, mask=None):
    """Align one batch with its ground truth.

    Args: `estimate` with `depth`, `uncertainty` `[B,h,w,1]`; `gt` `[B,H,W,1]`
    (or `[B,H,W]`); optional extra `mask` `[B,H,W]`.
    Returns `(pred, uncertainty, valid)`, each `[B,H,W]`.
    """
    gt = jnp.asarray(gt)
    gt = gt[..., 0] if gt.ndim == 4 else gt
    b, h, w = gt.shape
    disp = 1.0 / jnp.asarray(estimate.depth)
    unc = jnp.asarray(estimate.uncertainty)
    if disp.shape[1:3] != (h, w):
        disp = jax.image.resize(disp, (b, h, w, 1), "bilinear")
        unc = jax.image.resize(unc, (b, h, w, 1), "bilinear")
    pred, unc = 1.0 / disp[..., 0], unc[..., 0]
    valid = jnp.isfinite(gt) & (gt > protocol.gt_min)
    if protocol.gt_max is not None:
        valid &= gt < protocol.gt_max
    if protocol.garg_crop:
        valid &= jnp.asarray(metrics.garg_crop_mask(h, w))[None]
    if mask is not None:
        valid &= jnp.asarray(mask, bool).reshape(b, h, w)
    if protocol.scaling == "median":
        ratio = jax.vmap(metrics.median_scale)(gt, pred, valid)
        pred = pred * ratio[:, None, None]
    elif protocol.scaling == "stereo":
        pred = pred * protocol.stereo_factor
    return metrics.clamp(pred, protocol.min_depth, protocol.max_depth), unc, valid


class Evaluator:
    """Accumulates per-image depth metrics, AUSE/AURG and sparsification curves per
    (model, method), and ms/image."""

    def __init__(self, protocol: Protocol, steps: int = 50):
        self.protocol, self.steps = protocol, steps
        self._depth = defaultdict(list)
        self._sparse = defaultdict(list)
        self._curves = defaultdict(list)
        self._time = defaultdict(lambda: [0.0, 0])
        self._order: list[tuple[str, str]] = []

    def add(self, model: str, method: str, estimate, gt, mask=None, protocol=None):
        """Add a batch; `protocol` overrides the evaluator's for this row (e.g. median
        scaling for a monocular model beside metric ones)."""
        key = (model, method)
        if key not in self._order:
            self._order.append(key)
        pred, unc, valid = prepare(estimate, gt, protocol or self.protocol, mask)
        gt2 = jnp.asarray(gt).reshape(pred.shape)
        self._depth[key].append(jax.device_get(metrics.batch_depth_metrics(gt2, pred, valid)))
        # One computation for AUSE/AURG and the curves (NumPy on CPU, jit elsewhere).
        sparse = metrics.sparsification.batch_sparsification(gt2, pred, unc, valid, self.steps)
        self._sparse[key].append(jax.device_get(
            {m: {"ause": sparse[m]["ause"], "aurg": sparse[m]["aurg"]}
             for m in metrics.SPARSIFICATION_METRICS}))
        self._curves[key].append(jax.device_get(metrics.sparsification.curves_of(sparse)))

    def time(self, model: str, method: str, seconds: float, n_images: int):
        entry = self._time[(model, method)]
        entry[0] += seconds
        entry[1] += n_images

    def rows(self) -> list[dict]:
        """One dict per (model, method), in the `results.json` layout."""
        out = []
        for key in self._order:
            depth = metrics.mean_over_images(
                {k: np.concatenate([np.atleast_1d(d[k]) for d in self._depth[key]])
                 for k in self._depth[key][0]})
            sparse = metrics.mean_ause_aurg(self._sparse[key])
            seconds, n = self._time.get(key, (float("nan"), 0))
            row = {"model": key[0], "method": key[1]}
            row.update({m: {"ause": sparse[m]["ause"], "aurg": sparse[m]["aurg"]}
                        for m in metrics.SPARSIFICATION_METRICS})
            row["ms_per_image"] = 1e3 * seconds / n if n else float("nan")
            row["depth"] = depth
            out.append(row)
        return out

    def curves(self) -> dict[str, dict]:
        """`{"Model: Method": {metric: {"x", "method", "oracle"} mean curves}}` for plots."""
        out = {}
        for key in self._order:
            parts = self._curves[key]
            entry = {}
            for m in metrics.SPARSIFICATION_METRICS:
                method = np.concatenate([np.asarray(p[m]["method"]) for p in parts])
                oracle = np.concatenate([np.asarray(p[m]["oracle"]) for p in parts])
                ok = ~(np.isnan(method).any(1) | np.isnan(oracle).any(1))
                entry[m] = {"x": np.asarray(parts[0]["x"]), "method": method[ok].mean(0),
                            "oracle": oracle[ok].mean(0)}
            out[f"{key[0]}: {key[1]}"] = entry
        return out


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table: `fn(images [B,H,W,3], key) -> Estimate`, labelled `model` /
    `method`; `protocol` overrides the evaluator's for this row (e.g. median scaling of a
    monocular model); `name` is the checkpoint it came from; `normalize`: the reference
    protocol min-max normalises this map before storing it; `inputs`: sample keys passed
    to `fn` as keyword arrays besides the images (e.g. `depth` for Grad's gt reference)."""
    model: str
    method: str
    fn: Callable
    protocol: Protocol | None = None
    name: str = ""
    normalize: bool = False
    inputs: tuple = ()


def _samples(source, idx):
    if hasattr(source, "get_batch"):
        batch = source.get_batch(np.asarray(idx))
        return [jax.tree.map(lambda x, j=j: x[j], batch) for j in range(len(idx))]
    return [source[i] for i in idx]


def evaluate(rows: Sequence[Row], source, *, batch_size: int, add, timer=None, seed: int = 0,
             batch_keys: bool = True, progress: bool = True):
    """The evaluation loop: run every row on every image of `source` (`len`, `source[i]`
    or `get_batch(indices)` with `image` `[H,W,3]`), in batches of `batch_size` (the last
    one padded by repeating its last image, so every call has one compiled shape).

    Per batch and row: `add(row, estimate, samples, indices)` with the estimate of the
    batch's real images (any pytree of `[B,...]` arrays, e.g. an `Estimate` of `[n,H,W,1]`
    depth and uncertainty, or a segmentation row's probabilities and score maps; host
    arrays, the padding cut off), their samples (a list of dicts) and
    source indices; `timer(row, seconds, n_images)` with the wall time of the call
    (`block_until_ready`; the first batch is run once untimed to compile, then timed).
    The PRNG key of batch `b` is `fold_in(PRNGKey(seed), b)`, or `PRNGKey(seed)` for
    every batch with `batch_keys=False`."""
    n = len(source)
    batch_size = max(1, min(int(batch_size), n))
    base = jax.random.PRNGKey(seed)
    for b, start in enumerate(range(0, n, batch_size)):
        idx = list(range(start, min(start + batch_size, n)))
        samples = _samples(source, idx)
        def stacked(name):
            x = np.stack([np.asarray(s[name], np.float32) for s in samples])
            if len(idx) < batch_size:
                x = np.concatenate([x] + [x[-1:]] * (batch_size - len(idx)))
            return jnp.asarray(x)

        images = stacked("image")
        key = jax.random.fold_in(base, b) if batch_keys else base
        for row in rows:
            extra = {name: stacked(name) for name in row.inputs}
            if b == 0:  # compile outside the timing
                jax.block_until_ready(row.fn(images, key, **extra))
            t0 = time.perf_counter()
            est = jax.block_until_ready(row.fn(images, key, **extra))
            if timer is not None:
                timer(row, time.perf_counter() - t0, images.shape[0])
            m = len(idx)
            add(row, jax.tree.map(lambda x: np.asarray(x)[:m], est), samples, idx)
        if progress:
            print(f"evaluated {idx[-1] + 1}/{n} test images", flush=True)


def timed(fn: Callable, *args, repeats: int = 1):
    """`(result, seconds per call)` of `fn(*args)` after one untimed warm-up call
    (which compiles); blocks until the result is ready."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        result = jax.block_until_ready(fn(*args))
    return result, (time.perf_counter() - start) / repeats


COLUMNS = (("abs_rel", "Abs Rel"), ("rmse", "RMSE"), ("a1", "δ≥1.25"))


def format_table(rows: Sequence[dict], title: str | None = None) -> str:
    """The layout of Table 1 of the gradient-uncertainty paper, plus the depth
    metrics of each row's depth (abs_rel, rmse, a1). The model and method columns widen
    for names longer than 7 and 11 characters."""
    mw = max([8] + [len(r["model"]) + 1 for r in rows])
    tw = max([12] + [len(r["method"]) + 1 for r in rows])
    head1 = f"{'Model':<{mw}}{'Method':<{tw}}" + "".join(f"{label:^18}" for _, label in COLUMNS)
    head1 += f"{'Inf':>9}  {'depth':^24}"
    head2 = f"{'':<{mw + tw}}" + "".join(f"{'AUSE↓':>9}{'AURG↑':>9}" for _ in COLUMNS)
    head2 += f"{'[ms]':>9}  {'AbsRel':>8}{'RMSE':>8}{'δ<1.25':>8}"
    lines = ([title] if title else []) + [head1, head2, "-" * len(head2)]
    previous = None
    for r in rows:
        model = r["model"] if r["model"] != previous else ""
        previous = r["model"]
        line = f"{model:<{mw}}{r['method']:<{tw}}"
        for key, _ in COLUMNS:
            line += f"{r[key]['ause']:>9.3f}{r[key]['aurg']:>9.3f}"
        d = r["depth"]
        ms = r["ms_per_image"]
        line += f"{ms:>9.2f}" if ms == ms else f"{'—':>9}"
        line += f"  {d['abs_rel']:>8.3f}{d['rmse']:>8.3f}{d['a1']:>8.3f}"
        lines.append(line)
    return "\n".join(lines)


DEPTH_KEYS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
DEPTH_LABELS = ("Abs Rel", "Sq Rel", "RMSE", "RMSE log", "δ1", "δ2", "δ3")
UNCERTAINTY_COLUMNS = (("abs_rel", "Abs Rel"), ("rmse", "RMSE"), ("a1", "δ1"))


def format_depth_table(rows: Sequence[dict], title: str, improvement=None) -> str:
    """The depth-metric layout of the SUB-Depth / Monodepth2 tables (`row["depth"]`);
    `improvement=(baseline_row, row)` adds their difference (> 0: `row` is better)."""
    head = f"{'Method':<28}" + "".join(f"{lab:>10}" for lab in DEPTH_LABELS)
    lines = [title, head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<28}" + "".join(f"{r['depth'][k]:>10.4f}" for k in DEPTH_KEYS))
    if improvement is not None:
        a, b = improvement
        diff = [(b["depth"][k] - a["depth"][k]) if k in ("a1", "a2", "a3")
                else (a["depth"][k] - b["depth"][k]) for k in DEPTH_KEYS]
        lines.append(f"{'Improvement':<28}" + "".join(f"{d:>10.4f}" for d in diff))
    return "\n".join(lines)


def format_uncertainty_table(rows: Sequence[dict], title: str) -> str:
    """AUSE / AURG per error measure, one row per model (`row[metric]["ause" | "aurg"]`)."""
    head1 = f"{'Method':<28}" + "".join(f"{lab:^20}" for _, lab in UNCERTAINTY_COLUMNS)
    head2 = f"{'':<28}" + "".join(f"{'AUSE↓':>10}{'AURG↑':>10}" for _ in UNCERTAINTY_COLUMNS)
    lines = [title, head1, head2, "-" * len(head2)]
    for r in rows:
        lines.append(f"{r['model']:<28}" + "".join(
            f"{r[k]['ause']:>10.4f}{r[k]['aurg']:>10.4f}" for k, _ in UNCERTAINTY_COLUMNS))
    return "\n".join(lines)
