"""The segmentation protocols of the PGN paper, on any source: pixel-wise uncertainty
(ECE, AuSE with the Brier error; Table 1), out-of-distribution segmentation as
SegmentMeIfYouCan scores it (pixel AuPRC / AuROC / FPR95, component sIoU / PPV / F̄1;
Tables 2–3) and MetaSeg's segment-wise meta classification / regression (Fig. 3).

    maps = collect(rows, source, model_of, batch_size=8)   # per method / model, labels
    pixel_rows(maps)                                 # [{"method", "ece", "ause", ...}]
    ood_rows(maps_of_ood_split, track=scaled_track(h, w))

A row is a `jaxdepth.evaluation.Row` whose `fn(images, key)` returns
`{"probs": {model: [B,H,W,C]}, "maps": {method: [B,H,W]}}` — one forward pass per model
yields every method's map — and `model_of[method]` names the model whose probabilities
are that method's prediction. Everything is pooled over the
dataset on the host (AuSE sorts all pixels; ECE of an uncertainty min-max normalises it
over the dataset, as the reference does), so very large test sets should be evaluated on
a subset of frames. No printing, no plots: the experiments draw them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from jaxdepth.metrics import ood as ood_metrics
from jaxdepth.metrics import segmentation as seg_metrics

#: SMIYC's component size limits are for 1024×2048 frames: `scaled_track` keeps the same
#: fraction of the image for smaller inputs.
REFERENCE_PIXELS = 1024 * 2048


@dataclasses.dataclass
class Collected:
    """Host arrays of one split: `probs[model]` `[N,H,W,C]`, `maps[method]` `[N,H,W]`,
    `model_of[method]` (whose probabilities the method's prediction is), `label` `[N,H,W]`
    (train ids, 255 void) and `ood` `[N,H,W]` (0/1/255) when the source has it."""
    probs: dict
    maps: dict
    model_of: dict
    label: np.ndarray | None
    ood: np.ndarray | None


def collect(rows: Sequence, source, model_of: Mapping[str, str], *, batch_size: int,
            seed: int = 0, progress: bool = False) -> Collected:
    """Run every row over `source` (`jaxdepth.evaluation.evaluate`) and keep its outputs."""
    from jaxdepth.evaluation import evaluate

    probs, maps, labels, oods, seen = {}, {}, [], [], set()

    def add(row, est, samples, idx):
        for model, p in est["probs"].items():
            probs.setdefault(model, []).append(np.asarray(p, np.float32))
        for method, m in est["maps"].items():
            maps.setdefault(method, []).append(np.asarray(m, np.float32))
        if tuple(idx) not in seen:
            seen.add(tuple(idx))
            if "label" in samples[0]:
                labels.extend(np.asarray(s["label"]) for s in samples)
            if "ood" in samples[0]:
                oods.extend(np.asarray(s["ood"]) for s in samples)

    evaluate(rows, source, batch_size=batch_size, add=add, seed=seed, progress=progress)
    cat = lambda d: {k: np.concatenate(v) for k, v in d.items()}  # noqa: E731
    return Collected(cat(probs), cat(maps), dict(model_of),
                     np.stack(labels) if labels else None, np.stack(oods) if oods else None)


def miou_of(probs, label, num_classes: int) -> float:
    """mIoU of the argmax of `probs` `[N,H,W,C]` against `label` (255 ignored)."""
    conf = seg_metrics.confusion_matrix(probs.argmax(-1), label, num_classes)
    return float(seg_metrics.miou(conf))


def confidence_of(method: str, maps: Collected) -> np.ndarray:
    """The confidence ECE bins: the maximum softmax probability for `softmax` (its map is
    1 − it), else 1 − the map min-max normalised over the dataset (the reference's rule)."""
    if method == "softmax":
        return 1.0 - maps.maps[method]
    return seg_metrics.uncertainty_to_confidence(maps.maps[method])


def pixel_rows(maps: Collected, methods: Sequence[str] | None = None) -> list[dict]:
    """Table 1 rows: ECE (10 bins) and AuSE of the Brier error per method, in the standard
    forms and the reference code's (`ece_reference`, `ause_reference`), on the labelled
    pixels of `maps` (an in-distribution split)."""
    if maps.label is None:
        raise ValueError("pixel_rows needs a labelled split (samples with 'label')")
    rows = []
    for method in methods or list(maps.maps):
        probs = maps.probs[maps.model_of[method]]
        pred, u = probs.argmax(-1), maps.maps[method]
        conf = confidence_of(method, maps)
        ause = seg_metrics.ause_brier(u, probs, maps.label)
        ause_ref = seg_metrics.ause_brier(u, probs, maps.label, mode="reference")
        rows.append({"method": method,
                     "ece": seg_metrics.ece(conf, pred, maps.label),
                     "ause": float(ause["ause"]),
                     "ece_reference": seg_metrics.ece(conf, pred, maps.label, mode="reference"),
                     "ause_reference": float(ause_ref["ause"]),
                     "curves": {k: ause[k] for k in ("fractions", "uncertainty", "oracle")
                                if k in ause}})
    return rows


def scaled_track(height: int, width: int, track=ood_metrics.ANOMALY_TRACK):
    """SMIYC's size limits scaled from 1024×2048 to `height × width` (at least 1 pixel)."""
    f = height * width / REFERENCE_PIXELS
    return ood_metrics.Track(min_pred=max(1, round(track.min_pred * f)),
                             min_gt=max(1, round(track.min_gt * f)))


def ood_rows(maps: Collected, methods: Sequence[str] | None = None, *, track=None,
             bins: str = "percentiles") -> list[dict]:
    """Tables 2–3 rows on an OoD split (`maps.ood`): pixel AuPRC, AuROC, FPR at 95 % TPR
    (SMIYC's binned curves), then sIoU, PPV and mean F1 of the components at each
    method's best-F1 pixel threshold (`track`: the size limits, default
    `scaled_track` of the frames). Also returns the PR curves (`curves`)."""
    if maps.ood is None:
        raise ValueError("ood_rows needs an OoD split (samples with 'ood')")
    n, h, w = maps.ood.shape
    track = track or scaled_track(h, w)
    rows = []
    for method in methods or list(maps.maps):
        scores = maps.maps[method]
        counts = [ood_metrics.pixel_counts(scores[i], maps.ood[i], bins=bins) for i in range(n)]
        pix = ood_metrics.pixel_metrics(counts)
        comps = ood_metrics.aggregate_components(
            [ood_metrics.component_metrics(scores[i], maps.ood[i], pix["best_threshold"],
                                           min_pred=track.min_pred, min_gt=track.min_gt)
             for i in range(n)])
        rows.append({"method": method, "auprc": pix["auprc"], "auroc": pix["auroc"],
                     "fpr95": pix["fpr95"], "siou": comps["siou"], "ppv": comps["ppv"],
                     "f1": comps["f1_mean"],
                     "curves": {"recall": pix["curves"]["recall"],
                                "precision": pix["curves"]["precision"]}})
    return rows


def segment_rows(maps: Collected, model: str, gradient_methods: Sequence[str], *,
                 runs: int = 5, seed: int = 0) -> list[dict]:
    """Fig. 3: MetaSeg's segment-wise meta classification (IoU = 0 vs > 0: AuROC) and
    regression (IoU: R²) with the MetaSeg features (`metaseg`: entropy, M and the size /
    class-probability features), the gradient-map features alone (`pgn`) and both
    (`metaseg+pgn`), over the segments of `model`'s predictions on a labelled split."""
    from jaxdepth.metrics import metaseg

    if maps.label is None:
        raise ValueError("segment_rows needs a labelled split (samples with 'label')")
    probs = maps.probs[model]
    tables = [metaseg.segment_features(probs[i], maps.label[i],
                                       {m: maps.maps[m][i] for m in gradient_methods})
              for i in range(len(probs))]
    features = {k: np.concatenate([f[k] for f, _ in tables]) for k in tables[0][0]}
    targets = {k: np.concatenate([t[k] for _, t in tables]) for k in tables[0][1]}
    rows = []
    for name, group in (("metaseg", "metaseg"), ("pgn", "pgn"), ("metaseg+pgn", "all")):
        x = metaseg.select_features(features, group, gradient_maps=tuple(gradient_methods))
        cls = metaseg.meta_classification(x, targets["iou0"], runs=runs, seed=seed)
        reg = metaseg.meta_regression(x, targets["iou"], runs=runs, seed=seed)
        rows.append({"method": name, "meta_auroc": cls["auroc"], "meta_auroc_std": cls["auroc_std"],
                     "meta_accuracy": cls["accuracy"], "meta_r2": reg["r2"],
                     "meta_r2_std": reg["r2_std"], "segments": int(len(targets["iou"]))})
    return rows


def format_rows(rows: Sequence[Mapping], columns: Sequence[tuple[str, str]], title: str,
                digits: int = 4) -> str:
    """A plain-text table of `rows` (`columns`: (key, heading))."""
    head = f"{'method':16s}" + "".join(f"{h:>12s}" for _, h in columns)
    lines = [title, head, "-" * len(head)]
    for r in rows:
        cells = "".join(f"{r[k]:>12.{digits}f}" if isinstance(r[k], float) else f"{r[k]!s:>12s}"
                        for k, _ in columns)
        lines.append(f"{r['method']:16s}{cells}")
    return "\n".join(lines)
