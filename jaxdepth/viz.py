"""Figures: colour maps, labelled image panels, sparsification-error plots.

Everything renders through matplotlib's object API (``Figure`` + ``FigureCanvasAgg``):
no ``pyplot``, so no global figure state and no backend switch leaks into the caller.
PNG sizes are exact: ``save_panel`` lays images out pixel for pixel (see its docstring).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["colorize", "save_panel", "plot_sparsification", "save_depth_uncertainty_png",
           "save_prediction_panel"]

GREY = (128, 128, 128)
TITLE_PX = 24  # title strip above each panel, pixels
PAD_PX = 4  # gap between and around panels, pixels
MIN_PANEL_PX = 192  # small images are enlarged by an integer factor up to this width
METRIC_LABELS = {"abs_rel": "Abs Rel", "rmse": "RMSE", "a1": "δ ≥ 1.25"}


def _as_2d(name: str, x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape [H, W] or [H, W, 1], got {x.shape}")
    return x


def colorize(x, cmap: str = "magma", vmin=None, vmax=None, mask=None,
             percentiles: tuple[float, float] = (2.0, 98.0)) -> np.ndarray:
    """Colour-map ``x: [H, W]`` to ``uint8 [H, W, 3]``; masked or non-finite pixels grey.

    Values are mapped linearly from ``[vmin, vmax]`` (clipped) to ``cmap``. A missing bound
    defaults to the ``percentiles`` of the valid pixels (``mask & isfinite(x)``), which
    ignores outliers. ``mask: [H, W]`` bool, True = show.
    """
    x = _as_2d("colorize: x", x)
    valid = np.isfinite(x)
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if mask.shape != x.shape:
            raise ValueError(f"colorize: mask shape {mask.shape} != x shape {x.shape} [H, W]")
        valid &= mask
    if valid.any():
        lo, hi = np.percentile(x[valid], percentiles)
    else:
        lo, hi = 0.0, 1.0
    lo = lo if vmin is None else float(vmin)
    hi = hi if vmax is None else float(vmax)
    t = np.clip((np.where(valid, x, lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = matplotlib.colormaps[cmap](t, bytes=True)[..., :3]
    rgb[~valid] = GREY
    return rgb


def _as_rgb(i: int, img) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] == 1):
        return colorize(a)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"save_panel: images[{i}] must have shape [H, W, 3] or [H, W], "
                         f"got {a.shape}")
    if a.dtype == np.uint8:
        return a
    return np.round(np.clip(np.nan_to_num(a.astype(np.float64)), 0, 1) * 255).astype(np.uint8)


def save_panel(path, images: Sequence, titles: Sequence[str] | None = None,
               ncols: int | None = None, scale: int | None = None, dpi: int = 100):
    """Save a grid of labelled images as a PNG; returns ``path``.

    ``images``: ``[H, W, 3]`` (uint8, or float in [0, 1]) or ``[H, W]`` (colour-mapped by
    ``colorize``). Images are drawn pixel for pixel, enlarged by the integer ``scale``
    (default: the smallest factor making the widest image at least 192 px wide). With
    cell size ``h × w`` = scale × (largest H, largest W), ``rows = ceil(n / ncols)``
    (``ncols`` default ``ceil(sqrt(n))``), the PNG is
    ``ncols·(w + 4) + 4`` px wide and ``rows·(h + t + 4) + 4`` px high, ``t`` = 24 with
    titles, else 0.
    """
    rgbs = [_as_rgb(i, im) for i, im in enumerate(images)]
    n = len(rgbs)
    if n == 0:
        raise ValueError("save_panel: no images given")
    if titles is not None and len(titles) != n:
        raise ValueError(f"save_panel: {len(titles)} titles for {n} images")
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    max_h = max(r.shape[0] for r in rgbs)
    max_w = max(r.shape[1] for r in rgbs)
    scale = scale or max(1, math.ceil(MIN_PANEL_PX / max_w))
    title_px = TITLE_PX if titles is not None else 0
    cell_w, cell_h = max_w * scale, max_h * scale
    fig_w = ncols * (cell_w + PAD_PX) + PAD_PX
    fig_h = nrows * (cell_h + title_px + PAD_PX) + PAD_PX

    fig = Figure(figsize=(fig_w / dpi, fig_h / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    for i, rgb in enumerate(rgbs):
        row, col = divmod(i, ncols)
        left = PAD_PX + col * (cell_w + PAD_PX)
        top = PAD_PX + row * (cell_h + title_px + PAD_PX)  # from the top edge, pixels
        h, w = rgb.shape[0] * scale, rgb.shape[1] * scale
        ax = fig.add_axes((left / fig_w, 1 - (top + title_px + h) / fig_h, w / fig_w, h / fig_h))
        ax.imshow(rgb, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        if titles is not None:
            fig.text((left + cell_w / 2) / fig_w, 1 - (top + title_px / 2) / fig_h, titles[i],
                     ha="center", va="center", fontsize=10)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def _mean_curve(name: str, key: str, y) -> np.ndarray:
    """A ``[S+1]`` curve, or the mean over images of ``[B, S+1]`` skipping NaN rows."""
    y = np.asarray(y, np.float64)
    if y.ndim == 2:
        y = y[~np.isnan(y).any(axis=1)]
        if len(y) == 0:
            raise ValueError(f"plot_sparsification: {name}[{key!r}] has no image without NaN")
        y = y.mean(axis=0)
    if y.ndim != 1:
        raise ValueError(f"plot_sparsification: {name}[{key!r}] must have shape [S+1] or "
                         f"[B, S+1], got {y.shape}")
    return y


def plot_sparsification(path, curves: Mapping[str, Mapping], metric_name: str,
                        show_raw: bool = False, dpi: int = 100):
    """Plot the sparsification error ``method − oracle`` of several methods on one axis.

    ``curves``: ``{method name: {"x": [S+1], "method": [S+1] or [B, S+1],
    "oracle": same}}`` (e.g. from ``sparsification_curves``; ``[B, S+1]`` is averaged over
    the images without NaN, as Fig. 2 of the gradient-uncertainty paper averages over the
    test set). The legend gives each method's AUSE of the mean curves. ``show_raw`` adds a
    second axis with the raw curves (method solid, oracle dashed). PNG: 600×400 px, or
    1100×400 with ``show_raw`` (at ``dpi`` 100); with more than 10 methods the colours
    come from ``tab20`` (dashed after the first 20) and the legend sits right of the
    plot: 4 inches wider per legend column (a second one above 20 methods), taller when
    its entries need it. Returns ``path``.
    """
    if not curves:
        raise ValueError("plot_sparsification: no curves given")
    label = METRIC_LABELS.get(metric_name, metric_name)
    n = len(curves)
    many = n > 10
    ncol = 1 + (n > 20)
    height = max(4.0, 0.2 * -(-n // ncol) + 0.6) if many else 4.0
    fig = Figure(figsize=((11 if show_raw else 6) + 4 * ncol * many, height), dpi=dpi,
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if show_raw else 1, squeeze=False)[0]
    if many:
        for ax in axes:
            ax.set_prop_cycle(color=[matplotlib.colormaps["tab20"](i % 20) for i in range(n)],
                              linestyle=["-" if i < 20 else "--" for i in range(n)])
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    for name, c in curves.items():
        x = _mean_curve(name, "x", c["x"])
        method = _mean_curve(name, "method", c["method"])
        oracle = _mean_curve(name, "oracle", c["oracle"])
        err = method - oracle
        (line,) = axes[0].plot(x, err, label=f"{name} (AUSE {trapezoid(err, x=x):.3g})")
        if show_raw:
            axes[1].plot(x, method, color=line.get_color(), label=name)
            axes[1].plot(x, oracle, color=line.get_color(), linestyle="--")
    axes[0].set_title(f"Sparsification error ({label})")
    axes[0].set_ylabel(f"{label}: method − oracle")
    if show_raw:
        axes[1].set_title(f"Sparsification curves ({label}); dashed: oracle")
        axes[1].set_ylabel(label)
    for ax in axes:
        ax.set_xlabel("fraction of removed pixels")
        ax.set_xlim(0, 1)
        ax.grid(alpha=0.3)
        if many:
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=ncol)
        else:
            ax.legend(fontsize=8)
    fig.savefig(path, dpi=dpi)
    return path


def save_depth_uncertainty_png(path, image, depth, uncertainty, error=None, gt=None,
                               ncols: int = 1):
    """Save image, depth, uncertainty (and error, ground truth) as one labelled panel.

    ``image: [H, W, 3]``; ``depth, uncertainty, error, gt: [H, W]`` (or ``[H, W, 1]``).
    Depth and gt are shown as inverse depth (``magma``, near = bright; gt pixels ≤ 0 or
    non-finite grey); uncertainty and error with ``hot``. With ``gt``, the error panel shows
    only the valid gt pixels, and defaults to ``|depth − gt|``. Returns ``path``.
    """
    depth = _as_2d("depth", depth)
    panels = {"image": image}
    with np.errstate(divide="ignore", invalid="ignore"):
        panels["depth (shown as 1/depth)"] = colorize(1.0 / depth, "magma")
    panels["uncertainty"] = colorize(_as_2d("uncertainty", uncertainty), "hot")
    valid = None
    if gt is not None:
        gt = _as_2d("gt", gt)
        if gt.shape != depth.shape:
            raise ValueError(f"gt shape {gt.shape} != depth shape {depth.shape} [H, W]")
        valid = np.isfinite(gt) & (gt > 0)
        if error is None:
            error = np.where(valid, np.abs(depth - gt), np.nan)
    if error is not None:
        panels["error"] = colorize(_as_2d("error", error), "hot", mask=valid)
    if gt is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            panels["ground truth (1/depth)"] = colorize(1.0 / gt, "magma", mask=valid)
    return save_panel(path, list(panels.values()), titles=list(panels), ncols=ncols)



def save_prediction_panel(path, image, depth, uncertainty, *, depth_label: str = "depth [m]",
                          uncertainty_label: str = "uncertainty", title: str | None = None,
                          bound=None, bound_label: str = "error bound [m]", dpi: int = 100):
    """Image | depth | uncertainty [| bound] with colour bars: depth on a logarithmic scale
    (near = bright, ``magma_r``; ``depth_label`` names its unit), uncertainty linear
    (``hot``; ``uncertainty_label`` names its scale), and optionally a calibrated error
    ``bound`` in metres (``bound_label``). ``image: [H, W, 3]``; ``depth, uncertainty,
    bound: [H, W]``. Returns ``path``."""
    import textwrap

    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import FormatStrFormatter, LogLocator

    depth, unc = _as_2d("depth", depth), _as_2d("uncertainty", uncertainty)
    rgb = _as_rgb(0, image)
    h, w = rgb.shape[:2]
    scale = max(1.0, MIN_PANEL_PX / w)
    cell_w, cell_h = w * scale / dpi, h * scale / dpi
    n = 3 + (bound is not None)
    fig = Figure(figsize=(n * cell_w + 1.2 * n, cell_h + 0.9), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, gridspec_kw={"wspace": 0.75})
    wrap = lambda text: "\n".join(textwrap.wrap(text, 26))  # noqa: E731
    axes[0].imshow(rgb, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    ok = np.isfinite(depth) & (depth > 0)
    lo, hi = (np.percentile(depth[ok], (2, 98)) if ok.any() else (0.1, 100.0))
    hi = max(hi, lo * 1.01)
    im = axes[1].imshow(np.where(ok, depth, np.nan), cmap="magma_r", interpolation="nearest",
                        norm=LogNorm(vmin=lo, vmax=hi))
    axes[1].set_title("depth", fontsize=9)
    bar = fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03)
    bar.set_label(wrap(depth_label), fontsize=8)
    bar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    bar.ax.yaxis.set_minor_formatter(FormatStrFormatter(""))
    fin = np.isfinite(unc)
    ulo, uhi = (np.percentile(unc[fin], (2, 98)) if fin.any() else (0.0, 1.0))
    im = axes[2].imshow(unc, cmap="hot", interpolation="nearest",
                        norm=Normalize(vmin=ulo, vmax=max(uhi, ulo + 1e-12)))
    axes[2].set_title("uncertainty", fontsize=9)
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.03).set_label(wrap(uncertainty_label),
                                                                     fontsize=8)
    if bound is not None:
        bound = _as_2d("bound", bound)
        fin = np.isfinite(bound)
        bhi = float(np.percentile(bound[fin], 98)) if fin.any() else 1.0
        im = axes[3].imshow(bound, cmap="viridis", interpolation="nearest",
                            norm=Normalize(vmin=0.0, vmax=max(bhi, 1e-6)))
        axes[3].set_title("± bound", fontsize=9)
        fig.colorbar(im, ax=axes[3], fraction=0.046, pad=0.03).set_label(wrap(bound_label),
                                                                         fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def plot_reliability(path, coverage: Mapping[str, Mapping[str, float]], *,
                     title: str = "Error-bound reliability", dpi: int = 100):
    """Reliability diagram of calibrated error bounds: observed coverage (share of test
    pixels whose error is within the bound) against the nominal level, one line per
    method, and the diagonal (perfect calibration). ``coverage``: ``{name: {"0.9":
    observed, ...}}`` (`jaxdepth.calibration.evaluate`'s level keys). Returns ``path``."""
    if not coverage:
        raise ValueError("plot_reliability: no coverage given")
    n = len(coverage)
    fig = Figure(figsize=(6 + 3 * (n > 8), 4.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if n > 10:
        ax.set_prop_cycle(color=[matplotlib.colormaps["tab20"](i % 20) for i in range(n)])
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="ideal")
    for name, cov in coverage.items():
        levels = sorted(cov, key=float)
        ax.plot([float(k) for k in levels], [cov[k] for k in levels], marker="o",
                markersize=3, label=name)
    ax.set_xlabel("nominal coverage (level)")
    ax.set_ylabel("observed coverage on the test split")
    ax.set_xlim(0.4, 1.0)
    ax.set_ylim(0.4, 1.0)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left" if n > 8 else "lower right",
              bbox_to_anchor=(1.01, 0.5) if n > 8 else None)
    fig.savefig(path, dpi=dpi)
    return path


def plot_ablation(path, rows: Sequence[Mapping], *, metric: str = "rmse",
                  title: str = "Ablation", dpi: int = 100):
    """Grouped bars of AUSE (↓) per variant (x axis, in the rows' order) and model (one
    colour each) for ``metric``. ``rows``: dicts with ``model``, ``method`` (the variant's
    label) and ``{metric: {"ause", ...}}``. Returns ``path``."""
    if not rows:
        raise ValueError("plot_ablation: no rows given")
    models = list(dict.fromkeys(r["model"] for r in rows))
    labels = list(dict.fromkeys(r["method"] for r in rows))
    value = {(r["model"], r["method"]): r[metric]["ause"] for r in rows}
    width = 0.8 / len(models)
    fig = Figure(figsize=(max(6.0, 0.45 * len(labels) * max(1, len(models) / 2) + 2), 4.5),
                 dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = np.arange(len(labels))
    for k, m in enumerate(models):
        ax.bar(x + (k - (len(models) - 1) / 2) * width,
               [value.get((m, lab), np.nan) for lab in labels], width, label=m)
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(f"AUSE ({METRIC_LABELS.get(metric, metric)}) ↓")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=dpi)
    return path


def save_error_bar_panel(path, image, depth, bound, error, *, level: float,
                         title: str | None = None, dpi: int = 100):
    """Image | depth [m] | the calibrated error bound at ``level`` [m] | the true error
    |d − d_gt| [m] (grey: no ground truth), bound and error on one colour scale, with the
    share of valid pixels the bound covers in the title. ``image: [H, W, 3]``; the others
    ``[H, W]``. Returns ``path``."""
    from matplotlib.colors import LogNorm, Normalize

    depth, bound, error = (_as_2d(n, x) for n, x in (("depth", depth), ("bound", bound),
                                                      ("error", error)))
    rgb = _as_rgb(0, image)
    h, w = rgb.shape[:2]
    scale = max(1.0, MIN_PANEL_PX / w)
    cell_w, cell_h = w * scale / dpi, h * scale / dpi
    fig = Figure(figsize=(4 * cell_w + 4.4, cell_h + 1.0), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4, gridspec_kw={"wspace": 0.6})
    axes[0].imshow(rgb, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    ok = np.isfinite(depth) & (depth > 0)
    lo, hi = (np.percentile(depth[ok], (2, 98)) if ok.any() else (0.1, 100.0))
    im = axes[1].imshow(np.where(ok, depth, np.nan), cmap="magma_r", interpolation="nearest",
                        norm=LogNorm(vmin=lo, vmax=max(hi, lo * 1.01)))
    axes[1].set_title("depth", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.03).set_label("depth [m]", fontsize=8)
    valid = np.isfinite(error)
    both = np.concatenate([bound[np.isfinite(bound)], error[valid]])
    vmax = float(np.percentile(both, 98)) if both.size else 1.0
    norm = Normalize(vmin=0.0, vmax=max(vmax, 1e-6))
    covered = float((error[valid] <= bound[valid]).mean()) if valid.any() else float("nan")
    for ax, x, name in ((axes[2], bound, f"bound at {level:g} [m]"),
                        (axes[3], np.where(valid, error, np.nan), "true error [m]")):
        cmap = matplotlib.colormaps["hot"].with_extremes(bad="0.6")
        im = ax.imshow(x, cmap=cmap, interpolation="nearest", norm=norm)
        ax.set_title(name, fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).set_label("metres", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle((title + "; " if title else "") + f"bound covers {covered:.1%} of the "
                 "pixels with ground truth", fontsize=9)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def save_segmentation_panel(path, image, labels, uncertainty, *, palette, class_names=None,
                            uncertainty_label: str = "uncertainty", extra=None,
                            title: str | None = None, dpi: int = 100):
    """Image | predicted classes (``palette`` ``[C,3]`` uint8 colours, a legend of
    ``class_names``) | uncertainty (``hot``, colour bar named ``uncertainty_label``), then
    optional ``extra`` ``[(title, [H, W] map or [H, W, 3] image)]`` panels (e.g. the anomaly
    ground truth). ``image``: ``[H, W, 3]``; ``labels``: ``[H, W]`` class ids (255 black).
    Returns ``path``."""
    import textwrap

    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    labels = np.asarray(labels)
    unc = _as_2d("uncertainty", uncertainty)
    rgb = _as_rgb(0, image)
    palette = np.asarray(palette, np.uint8)
    seg = np.zeros(labels.shape + (3,), np.uint8)
    known = labels < len(palette)
    seg[known] = palette[labels[known]]
    extra = list(extra or [])
    h, w = rgb.shape[:2]
    scale = max(1.0, MIN_PANEL_PX / w)
    n = 3 + len(extra)
    cell_w, cell_h = w * scale / dpi, h * scale / dpi
    fig = Figure(figsize=(n * cell_w + 1.2 * n, cell_h + 1.4), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, gridspec_kw={"wspace": 0.45})
    axes[0].imshow(rgb, interpolation="nearest")
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(seg, interpolation="nearest")
    axes[1].set_title("prediction", fontsize=9)
    if class_names is not None:
        shown = sorted(set(np.unique(labels[known]).tolist()))
        axes[1].legend(handles=[Patch(color=palette[c] / 255.0, label=class_names[c])
                                for c in shown], fontsize=6, loc="upper center",
                       bbox_to_anchor=(0.5, -0.02), ncol=min(4, max(1, len(shown))),
                       frameon=False)
    fin = np.isfinite(unc)
    ulo, uhi = (np.percentile(unc[fin], (2, 98)) if fin.any() else (0.0, 1.0))
    im = axes[2].imshow(unc, cmap="hot", interpolation="nearest",
                        norm=Normalize(vmin=ulo, vmax=max(uhi, ulo + 1e-12)))
    axes[2].set_title("uncertainty", fontsize=9)
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.03).set_label(
        "\n".join(textwrap.wrap(uncertainty_label, 26)), fontsize=8)
    for ax, (name, x) in zip(axes[3:], extra):
        x = np.asarray(x)
        ax.imshow(x, cmap=None if x.ndim == 3 else "gray", interpolation="nearest")
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
