"""Calibrated error bars in metres from any uncertainty score (binned split-conformal).

Every uncertainty method of jaxdepth returns a per-pixel score that only *ranks* pixels
(Grad's map is min-max normalised to [0, 1] per image, Var is a variance of disparity,
…). This module turns such a score into an error bound in metres with a coverage
guarantee, from a held-out calibration set with ground truth:

    cal = fit(scores, np.abs(depth - gt), mask=valid)          # [B,H,W,1] each, metres
    bound = cal.error_bound(new_scores, 0.9)                   # metres, like new_scores
    # |d - d_gt| <= bound on >= 90 % of (exchangeable) new pixels
    cal.save("grad.calibration.json"); cal = Calibration.load("grad.calibration.json")
    evaluate(cal, test_scores, test_errors, mask=test_valid)["0.9"]["coverage"]

**Method** (Mondrian / binned split-conformal prediction):

1. The valid calibration pixels (`mask`, finite score and error; masked or non-finite
   pixels are dropped, never averaged in) are split into `B` bins by the *quantiles of
   their scores*: the interior bin edges are order statistics of the scores (actual
   score values, never interpolated between two scores), bin `k` is
   `edges[k-1] <= s < edges[k]` (bin 0: `s < edges[0]`, the last bin: `s >= edges[-1]`).
   Ties never straddle an edge; bins that come out smaller than the minimum size (many
   tied scores, e.g. the zeros of a min-max normalised map) are merged with their right
   neighbour (the last one with its left neighbour).
2. In bin `k`, with `n_k` calibration errors `e_(1) <= … <= e_(n_k)`, the bound at level
   `α` is the split-conformal quantile

       q_k(α) = e_(r),   r = ⌈(n_k + 1)·α⌉

   (the finite-sample correction: for a new pixel exchangeable with the calibration
   pixels of its bin, `P(e <= q_k(α)) >= α`). It is finite only if `r <= n_k`, i.e.
   `n_k >= α / (1 − α)` (`min_calibration_size`: 1, 4, 9, 19 for α = 0.5, 0.8, 0.9, 0.95).
3. Monotone in the score: `bound_k = max(q_0, …, q_k)` (a cumulative maximum over the
   bins). It only raises bounds, so every bin keeps coverage `>= α`.

   `monotone="isotonic"` instead (normalised split-conformal prediction): the pixels are
   split at random (seeded) into halves A and B; on A the per-bin empirical α-quantiles
   are made monotone by weighted isotonic regression (scikit-learn), giving a scale
   `σ_k`; on B the conformal quantile `q̂` (rank ⌈(n_B + 1)·α⌉) of `e / σ_bin(e)` gives
   `bound_k = q̂·σ_k`. The guarantee is then marginal only (`>= α` over all pixels, at
   most `α + 1/(n_B + 1)`), per-bin coverage is close to `α` where σ's shape is right,
   and scores whose error is not monotone in them are no longer over-covered by the
   cumulative maximum (the default's per-bin guarantee costs width there).

A new score gets the bound of the bin it falls into (piecewise constant: an
interpolation between bins could lower a bin's bound and lose its guarantee); scores
below / above the calibration range clamp to the first / last bin; a NaN score gets a
NaN bound. Because the bins are defined by ranks of the scores and the bound only by the
bin, any strictly increasing transform of the scores (`exp`, `3s + 1`, …) gives
identical bounds.

**Guarantee** (assumption: the new pixels are exchangeable with the calibration pixels,
e.g. images drawn from the same distribution, same model, same method and options):
coverage `>= α` in every bin (conditional on the score's bin: "per-bin coverage") and
hence marginally; it is at most `α + 1/(n_k + 1)` per bin when the errors have no ties.
Pixels of one image are correlated, so the guarantee holds in expectation over images;
the realised coverage on a finite test set fluctuates around it.

**Relative mode** (`relative=True`): fit on relative errors `|d − d_gt| / d` (relative to
the *prediction*, known at test time); `error_bound(scores, α, depth=d)` returns
`bound · d` in metres. For models without metric scale (monocular, median-scaled) it is
the meaningful choice: `|d − d_gt/s| <= b·d` holds in the model's own units for any
per-image scale `s`.

**Bins**: `bins="auto"` (default) uses `B = clip(n // m, 1, 50)` bins with
`m = ⌈50 / (1 − max level)⌉` (1000 pixels per bin for 0.95: about 50 errors above the
highest quantile in every bin) and merges bins below `min(m, n)` pixels; an integer
`bins` asks for that many quantile bins and merges only those below the conformal
minimum of the highest level. If the whole calibration set is below that minimum
`fit` raises a ValueError naming the level, the number of pixels and the minimum.

Pure NumPy (JAX arrays are accepted through `np.asarray`), vectorised (`np.searchsorted`,
`np.lexsort`, `np.bincount`; no loop over pixels).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Calibration", "CalibrationMismatch", "fit", "evaluate", "conformal_rank",
           "min_calibration_size", "level_key", "DEFAULT_LEVELS", "FORMAT", "FORMAT_VERSION",
           "method_signature", "model_signature", "signatures"]

DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)
FORMAT = "jaxdepth-calibration"
FORMAT_VERSION = 1
MAX_AUTO_BINS = 50
#: `bins="auto"`: every bin holds at least AUTO_TAIL / (1 - max level) pixels
AUTO_TAIL = 50
_TOL = 1e-9  # decimal levels (0.8 = 0.80000000000000004) must not raise the rank by one


class CalibrationMismatch(ValueError):
    """A calibration used with another method or model than it was fitted for."""


# ----------------------------------------------------------------------------- helpers

def level_key(level: float) -> str:
    """The string key of a level in `evaluate`'s result and the JSON file (`"0.9"`)."""
    return f"{float(level):.10g}"


def conformal_rank(n, level: float):
    """The split-conformal rank `r = ⌈(n + 1)·level⌉` (1-based) of `n` calibration errors;
    the bound is the `r`-th smallest error (infinite if `r > n`). Vectorised over `n`."""
    n = np.asarray(n, np.int64)
    return np.ceil((n + 1) * float(level) - _TOL).astype(np.int64)


def min_calibration_size(level: float) -> int:
    """The smallest `n` with a finite conformal quantile at `level`: `r = ⌈(n+1)·level⌉ <= n`,
    i.e. `n >= level / (1 − level)` (1, 4, 9, 19 for 0.5, 0.8, 0.9, 0.95)."""
    level = float(level)
    n = max(1, math.ceil(level / (1.0 - level) - _TOL))
    while int(conformal_rank(n, level)) > n:
        n += 1
    while n > 1 and int(conformal_rank(n - 1, level)) <= n - 1:
        n -= 1
    return n


def _check_levels(levels) -> tuple[float, ...]:
    if isinstance(levels, (int, float, np.floating, np.integer)):
        levels = (levels,)
    try:
        out = [float(v) for v in levels]
    except (TypeError, ValueError):
        raise ValueError(f"levels must be numbers in (0, 1), got {levels!r}") from None
    if not out:
        raise ValueError("levels must hold at least one coverage level in (0, 1)")
    bad = [v for v in out if not (math.isfinite(v) and 0.0 < v < 1.0)]
    if bad:
        raise ValueError(f"coverage levels must lie in (0, 1) (e.g. 0.9 for 90 %), got "
                         f"{', '.join(f'{v:g}' for v in bad)}")
    return tuple(sorted(set(out)))


def _as_float(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.floating)
                               or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a numeric array, got dtype {a.dtype}")
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float64)


def _pixels(scores, errors, mask, *, depth=None, relative=False):
    """Flat float arrays of the valid pixels: `(scores, errors, depth or None)`.

    Valid: `mask` (if given), finite score and error (and finite positive depth if given).
    Raises ValueError for shape mismatches and negative valid errors."""
    s, e = _as_float(scores, "scores"), _as_float(errors, "errors")
    if s.shape != e.shape:
        raise ValueError(f"scores {s.shape} and errors {e.shape} must have the same shape")
    valid = np.isfinite(s) & np.isfinite(e)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != s.shape:
            raise ValueError(f"mask {m.shape} must have the shape of the scores {s.shape}")
        valid &= m.astype(bool)
    d = None
    if depth is not None:
        d = _as_float(depth, "depth")
        if d.shape != s.shape:
            raise ValueError(f"depth {d.shape} must have the shape of the scores {s.shape}")
        valid &= np.isfinite(d) & (d > 0)
    s, e = s[valid], e[valid]
    if e.size and e.min() < 0:
        k = int((e < 0).sum())
        raise ValueError(f"errors must be non-negative (|d - d_gt| or |d - d_gt| / d); "
                         f"{k} valid pixels are negative (min {float(e.min()):g})")
    return s, e, (None if d is None else d[valid])


def _bin_edges(s: np.ndarray, bins, levels) -> np.ndarray:
    """Interior bin edges (sorted, unique order statistics of `s`) of the quantile bins,
    with bins below the minimum size merged into their neighbours."""
    n = s.size
    need = min_calibration_size(levels[-1])
    if isinstance(bins, str):
        if bins != "auto":
            raise ValueError(f"bins must be 'auto' or a positive integer, got {bins!r}")
        per_bin = max(need, math.ceil(AUTO_TAIL / (1.0 - levels[-1]) - _TOL))
        count = int(np.clip(n // per_bin, 1, MAX_AUTO_BINS))
        smallest = min(per_bin, n)
    else:
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(f"bins must be 'auto' or a positive integer, got {bins!r}")
        count, smallest = int(bins), need
    if count == 1:
        return np.empty(0, s.dtype)
    ordered = np.sort(s)
    cand = np.unique(ordered[(np.arange(1, count) * n) // count])
    counts = np.bincount(np.searchsorted(cand, s, side="right"), minlength=cand.size + 1)
    keep, acc = [], 0  # greedy left to right: close a bin once it holds `smallest` pixels
    for k, c in enumerate(counts):
        acc += int(c)
        if acc >= smallest and k < cand.size:
            keep.append(k)
            acc = 0
    if acc < smallest and keep:  # a short last bin joins the one before it
        keep.pop()
    return cand[np.asarray(keep, np.int64)]


# ----------------------------------------------------------------------------- the map

@dataclasses.dataclass(frozen=True)
class Calibration:
    """A fitted score → error-bound map (see the module docstring).

    `levels`: the coverage levels, sorted, in (0, 1); `edges`: the `B − 1` interior bin
    edges (score values, strictly increasing; bin `k` = `[edges[k-1], edges[k])`);
    `bounds[i][k]`: the bound of bin `k` at `levels[i]` (metres, or a fraction of the
    predicted depth if `relative`), non-decreasing in `k`; `counts[k]`: calibration pixels
    of bin `k`; `method`, `model`: what the scores came from (`method_signature`,
    `model_signature`; None: not recorded, not checked); `info`: free JSON-ready metadata
    (data, split, checkpoint path, …)."""
    levels: tuple
    edges: tuple
    bounds: tuple
    relative: bool = False
    counts: tuple = ()
    method: str | None = None
    model: str | None = None
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        levels = _check_levels(self.levels)
        if list(levels) != [float(v) for v in self.levels]:
            raise ValueError(f"levels must be sorted and unique, got {self.levels}")
        edges = tuple(float(v) for v in self.edges)
        bounds = tuple(tuple(float(v) for v in b) for b in self.bounds)
        counts = tuple(int(c) for c in self.counts)
        if len(bounds) != len(levels):
            raise ValueError(f"{len(bounds)} rows of bounds for {len(levels)} levels")
        n_bins = len(edges) + 1
        if any(len(b) != n_bins for b in bounds) or (counts and len(counts) != n_bins):
            raise ValueError(f"every level needs one bound per bin ({n_bins} bins for "
                             f"{len(edges)} edges)")
        if not all(math.isfinite(v) for v in edges) or any(
                b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("bin edges must be finite and strictly increasing")
        for lvl, b in zip(levels, bounds):
            if not all(math.isfinite(v) and v >= 0 for v in b) or any(
                    y < x for x, y in zip(b, b[1:])):
                raise ValueError(f"the bounds of level {lvl:g} must be finite, >= 0 and "
                                 "non-decreasing over the bins")
        object.__setattr__(self, "levels", levels)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "bounds", bounds)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "relative", bool(self.relative))
        object.__setattr__(self, "info", dict(self.info or {}))

    @property
    def n_bins(self) -> int:
        return len(self.edges) + 1

    def _level_index(self, level) -> int:
        try:
            x = float(level)
        except (TypeError, ValueError):
            x = float("nan")
        for i, v in enumerate(self.levels):
            if abs(v - x) <= _TOL:
                return i
        raise ValueError(f"level {level!r} is not calibrated; this calibration has levels "
                         f"{', '.join(level_key(v) for v in self.levels)}")

    def bounds_at(self, level) -> np.ndarray:
        """The per-bin bounds `[B]` at a calibrated level."""
        return np.asarray(self.bounds[self._level_index(level)], np.float64)

    def bin_of(self, scores) -> np.ndarray:
        """The bin index (int64, shape of `scores`) of every score; NaN scores → last bin
        (`error_bound` gives them NaN)."""
        s = _as_float(scores, "scores")
        return np.searchsorted(np.asarray(self.edges, np.float64), s, side="right")

    def error_bound(self, scores, level, depth=None) -> np.ndarray:
        """The error bound (float64, shape of `scores`, e.g. `[B,H,W,1]`) at a calibrated
        `level`: in metres, `bound(s)` of the score's bin, times `depth` (metres, shape of
        `scores`, required) for a relative calibration. NaN where the score is NaN (or
        depth is not finite)."""
        s = _as_float(scores, "scores")
        i = self._level_index(level)
        if depth is not None:
            d = _as_float(depth, "depth")
            if d.shape != s.shape:
                raise ValueError(f"depth {d.shape} must have the shape of the scores {s.shape}")
        elif self.relative:
            raise ValueError("this calibration is relative (bounds are fractions of the "
                             "predicted depth): pass depth=... (metres, shape of the scores)")
        out = np.asarray(self.bounds[i], np.float64)[self.bin_of(s)]
        out = np.where(np.isnan(s), np.nan, out)
        if self.relative:
            out = out * d
        return out

    # ----------------------------------------------------------------- metadata, files

    def check(self, *, method: str | None = None, model: str | None = None) -> Calibration:
        """Raise `CalibrationMismatch` if `method` / `model` (`method_signature`,
        `model_signature`) differ from those the calibration was fitted for (entries not
        recorded in the calibration, or not given, are not compared); returns self."""
        for what, given, stored in (("method", method, self.method),
                                    ("model", model, self.model)):
            if given is not None and stored is not None and str(given) != stored:
                where = self.info.get("checkpoint")
                raise CalibrationMismatch(
                    f"this calibration was fitted for {what} {stored!r}"
                    + (f" ({where})" if what == "model" and where else "")
                    + f", not {given!r}: its bounds do not apply; fit one for this {what} "
                    "(`jaxdepth calibrate`)")
        return self

    def to_dict(self) -> dict:
        """The JSON layout (see `save`)."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "method": self.method,
                "model": self.model, "relative": self.relative,
                "levels": list(self.levels), "edges": list(self.edges),
                "counts": list(self.counts),
                "bounds": {level_key(v): list(b) for v, b in zip(self.levels, self.bounds)},
                "info": self.info}

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "calibration") -> Calibration:
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise ValueError(f"{where}: not a jaxdepth calibration (no \"format\": "
                             f"\"{FORMAT}\")")
        try:
            version = int(d.get("version", 0))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: malformed calibration (version {d.get('version')!r} "
                             "is not an integer)") from None
        if version > FORMAT_VERSION:
            raise ValueError(f"{where}: calibration format version {d['version']} is newer "
                             f"than this jaxdepth's ({FORMAT_VERSION})")
        try:
            levels = [float(v) for v in d["levels"]]
            bounds = [d["bounds"][level_key(v)] for v in levels]
            return cls(levels=tuple(levels), edges=tuple(d["edges"]), bounds=tuple(bounds),
                       relative=bool(d.get("relative", False)),
                       counts=tuple(d.get("counts") or ()), method=d.get("method"),
                       model=d.get("model"), info=dict(d.get("info") or {}))
        except (KeyError, TypeError, ValueError) as e:  # ValueError: a non-number, or
            # what the constructor's checks refuse (unsorted levels, decreasing bounds, …)
            raise ValueError(f"{where}: malformed calibration ({type(e).__name__}: {e})") from None

    def save(self, path) -> Path:
        """Write the calibration as strict JSON (floats written exactly: the round trip
        through `load` gives an equal object; NaN / infinite numbers in `info`, e.g. the
        coverage of an empty bin, are written as null); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        d = dict(self.to_dict(), info=_finite(self.info))
        path.write_text(json.dumps(d, indent=2, default=_json_default, allow_nan=False) + "\n")
        return path

    @classmethod
    def load(cls, path) -> Calibration:
        """Read a file written by `save` (FileNotFoundError if missing, ValueError if it is
        not a calibration)."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not a calibration file (invalid JSON: {e})") from None
        except UnicodeDecodeError as e:  # a binary file: the message would not name it
            raise ValueError(f"{path}: not a calibration file (not UTF-8 text: {e})") from None
        return cls.from_dict(d, str(path))


def _finite(x):
    """`x` with NaN / ±inf floats (also NumPy scalars and arrays) replaced by None."""
    if isinstance(x, Mapping):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.ndarray):
        return _finite(x.tolist())
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


# ----------------------------------------------------------------------------- fit

def fit(scores, errors, *, levels=DEFAULT_LEVELS, relative: bool = False, mask=None,
        bins: int | str = "auto", monotone: str = "cummax", seed: int = 0,
        method: str | None = None, model: str | None = None,
        info: Mapping[str, Any] | None = None) -> Calibration:
    """Fit the score → error-bound map on a held-out calibration set.

    Args:
      scores: uncertainty scores, any shape (e.g. `[B,H,W,1]`); only their order matters.
      errors: same shape; `|d − d_gt|` in metres, or `|d − d_gt| / d` with `relative`.
      levels: coverage levels in (0, 1) (sorted and de-duplicated).
      relative: the errors are relative to the predicted depth (see the module doc).
      mask: bool, same shape: the valid pixels (ground truth exists); pixels with a
        non-finite score or error are dropped as well.
      bins: `"auto"` or the number of score-quantile bins (see the module docstring).
      monotone: `"cummax"` (per-bin guarantee) or `"isotonic"` (normalised split
        conformal, marginal guarantee; `seed` draws its A/B split), module docstring.
      method, model, info: metadata stored with the map (`Calibration.check`).

    Per bin `k` with `n_k` errors, the bound at level `α` is the `⌈(n_k + 1)·α⌉`-th
    smallest error, then the cumulative maximum over the bins (monotone in the score).

    Raises ValueError for levels outside (0, 1), shape mismatches, negative errors, and
    fewer valid pixels than the highest level needs (`min_calibration_size`).
    """
    levels = _check_levels(levels)
    if monotone not in ("cummax", "isotonic"):
        raise ValueError(f"monotone must be 'cummax' or 'isotonic', got {monotone!r}")
    s, e, _ = _pixels(scores, errors, mask)
    n = s.size
    if monotone == "isotonic":
        n //= 2  # the conformal step sees half the pixels
    for lvl in reversed(levels):
        need = min_calibration_size(lvl)
        if n < need:
            raise ValueError(
                f"too few calibration pixels for level {lvl:g}: {n} valid pixel(s) in one "
                f"bin, the conformal quantile (rank ⌈(n+1)·{lvl:g}⌉ <= n) needs at least "
                f"{need}; add calibration images or drop the level")
    edges = _bin_edges(s, bins, levels)
    b = np.searchsorted(edges, s, side="right")
    counts = np.bincount(b, minlength=edges.size + 1)
    if monotone == "isotonic":
        bounds = _isotonic_bounds(b, e, counts.size, levels, seed)
        return Calibration(levels=levels, edges=tuple(edges.astype(np.float64).tolist()),
                           bounds=bounds, relative=relative, counts=tuple(counts.tolist()),
                           method=method, model=model,
                           info={"monotone": "isotonic", **dict(info or {})})
    order = np.lexsort((e, b))  # by bin, then by error
    e_sorted = e[order].astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    bounds = []
    for lvl in levels:
        r = conformal_rank(counts, lvl)  # <= counts: every bin holds >= min size
        q = e_sorted[starts + r - 1]
        bounds.append(tuple(np.maximum.accumulate(q).tolist()))
    return Calibration(levels=levels, edges=tuple(edges.astype(np.float64).tolist()),
                       bounds=tuple(bounds), relative=relative, counts=tuple(counts.tolist()),
                       method=method, model=model, info=dict(info or {}))


def _isotonic_bounds(b, e, n_bins: int, levels, seed: int):
    """`monotone="isotonic"`: per level, σ_k from the weighted isotonic regression of
    half A's per-bin α-quantiles, times the conformal quantile of e/σ on half B."""
    from sklearn.isotonic import IsotonicRegression

    in_a = np.random.default_rng(seed).permutation(b.size) < b.size - b.size // 2
    ba, ea, bb, eb = b[in_a], e[in_a], b[~in_a], e[~in_a]
    count_a = np.bincount(ba, minlength=n_bins)
    order = np.lexsort((ea, ba))
    ea_sorted = ea[order].astype(np.float64)
    starts = np.concatenate([[0], np.cumsum(count_a)[:-1]])
    filled = count_a > 0
    k = np.arange(n_bins)
    bounds = []
    for lvl in levels:
        rank = np.maximum(np.ceil(count_a * lvl - _TOL).astype(np.int64), 1)
        q = np.where(filled, ea_sorted[np.minimum(starts + rank - 1, ea.size - 1)], np.nan)
        iso = IsotonicRegression(increasing=True, out_of_bounds="clip")
        sigma = iso.fit(k[filled], q[filled], sample_weight=count_a[filled]).predict(k)
        floor = max(float(np.max(sigma)) * 1e-6, 1e-12)
        sigma = np.maximum(sigma, floor)
        r = np.sort(eb / sigma[bb])
        qhat = float(r[int(conformal_rank(r.size, lvl)) - 1])
        bounds.append(tuple((qhat * sigma).tolist()))
    return tuple(bounds)


# ----------------------------------------------------------------------------- evaluate

def evaluate(calibration: Calibration, scores, errors, *, mask=None, depth=None) -> dict:
    """How well a calibration's bounds hold on (test) data with ground truth.

    Args: `scores`, `errors` (`|d − d_gt|` in **metres**, also for a relative
    calibration), optional `mask` (bool) and `depth` (the predicted depth in metres;
    required for a relative calibration), all of one shape.

    Returns `{level_key(α): {...}}` for every calibrated level `α` (keys `"0.5"`, `"0.9"`,
    …), over the `n` valid pixels:
      `coverage`: share of pixels with error <= bound;
      `mean_bound`, `median_bound`: sharpness of the bound (metres);
      `constant_coverage`: coverage of the constant bound with the same mean width;
      `constant_bound`: the narrowest constant bound at level α on these data (their
        conformal quantile, rank ⌈(n+1)·α⌉; an oracle, it sees the test errors) and
        `constant_bound_coverage` its coverage; `width_ratio` = `mean_bound /
        constant_bound` (< 1: the calibrated bound is sharper at the same level);
      `bin_coverage`, `bin_count`: coverage and pixel count in each calibration bin
        (NaN where a bin is empty); `n`.
    """
    s, e, d = _pixels(scores, errors, mask, depth=depth)
    if calibration.relative and depth is None:
        raise ValueError("this calibration is relative: pass depth=... (the predicted depth "
                         "in metres) to turn its bounds into metres")
    n = s.size
    if n == 0:
        raise ValueError("no valid pixels to evaluate (mask, finite scores and errors)")
    bins = calibration.bin_of(s)
    count = np.bincount(bins, minlength=calibration.n_bins)
    e_sorted = np.sort(e.astype(np.float64))
    out = {}
    for i, lvl in enumerate(calibration.levels):
        bound = np.asarray(calibration.bounds[i], np.float64)[bins]
        if calibration.relative:
            bound = bound * d
        covered = e <= bound
        mean = float(bound.mean())
        r = int(conformal_rank(n, lvl))
        const = float(e_sorted[r - 1]) if r <= n else float("inf")
        with np.errstate(invalid="ignore", divide="ignore"):
            per_bin = np.bincount(bins, weights=covered, minlength=calibration.n_bins) / count
        out[level_key(lvl)] = {
            "coverage": float(covered.mean()), "mean_bound": mean,
            "median_bound": float(np.median(bound)),
            "constant_coverage": float((e <= mean).mean()),
            "constant_bound": const, "constant_bound_coverage": float((e <= const).mean()),
            "width_ratio": mean / const if const > 0 else float("inf"),
            "bin_coverage": [float(v) for v in per_bin], "bin_count": count.tolist(), "n": n}
    return out


# ----------------------------------------------------------------------------- signatures

#: the options of each method (`jaxdepth.uncertainty.methods.MethodOptions`) that change
#: its scores
_METHOD_OPTIONS = {
    "grad": ("taps", "reference", "reduce", "aggregate", "upsample", "variance_weight"),
    "post": ("space",), "var": ("space", "rot_angle", "noise_std"),
    "in_drop": ("samples", "in_drop_p", "space"), "mc_drop": ("samples", "space"),
    "ensemble": ("space", "bayesian"), "predictive": ("to_depth",)}


def method_signature(name: str, options=None, info=None) -> str:
    """A method and the options that change its scores, as one string: e.g.
    `grad(aggregate=std,reduce=max,reference=flip,taps=dec6,upsample=bilinear,
    variance_weight=0)`. `options`: a `MethodOptions` (None: defaults); `info`: the
    model's `ModelInfo` (resolves the defaults that depend on the model: λ, space,
    to_depth), as `jaxdepth.uncertainty.methods` does."""
    from jaxdepth.uncertainty.methods import MethodOptions, canonical

    key = canonical(name)
    opts = options if options is not None else MethodOptions()
    log_sigma = bool(getattr(info, "log_sigma", False))
    metric = bool(getattr(info, "metric", False))
    values = {}
    for field in _METHOD_OPTIONS[key]:
        v = getattr(opts, field)
        if field == "variance_weight":
            v = (2.0 if log_sigma else 0.0) if v is None else float(v)
        elif field == "space":
            v = v or ("depth" if metric else "disp")
        elif field == "to_depth":
            v = v if v is not None else getattr(info, "sigma_space", None) == "disp"
        elif field == "reference" and v in ("rot", "noise"):
            values["rot_angle" if v == "rot" else "noise_std"] = getattr(
                opts, "rot_angle" if v == "rot" else "noise_std")
        elif field == "reference" and v in ("feature_noise", "feature_dropout"):
            values.update(feature_tap=opts.feature_tap, feature_scale=float(opts.feature_scale))
        elif field == "reference" and v == "var":
            values["var_members"] = tuple(opts.var_members)
        values[field] = v
    fmt = lambda v: "+".join(map(str, v)) if isinstance(v, (list, tuple)) else (  # noqa: E731
        f"{v:g}" if isinstance(v, float) else str(v))
    return f"{key}(" + ",".join(f"{k}={fmt(values[k])}" for k in sorted(values)) + ")"


def _leaves(tree, path=""):
    if isinstance(tree, Mapping):
        for k in sorted(tree, key=str):
            yield from _leaves(tree[k], f"{path}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from _leaves(v, f"{path}/{i}")
    else:
        yield path, tree


def model_signature(meta: Mapping, variables) -> str:
    """`<architecture>-<16 hex>`: a SHA-256 of what decides a model's depth in metres
    (`meta.json`'s architecture, model kwargs, input size, scaling) and of its weights
    (every variable's path, dtype, shape and bytes); the same for a copy of the
    checkpoint, different for another training run or member."""
    h = hashlib.sha256()
    keys = ("architecture", "model", "height", "width", "scaling", "stereo_scale",
            "use_stereo")
    h.update(json.dumps({k: meta.get(k) for k in keys}, sort_keys=True,
                        default=str).encode())
    for path, leaf in _leaves(variables):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{path}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    return f"{meta.get('architecture', 'DepthNet')}-{h.hexdigest()[:16]}"


def signatures(meta: Mapping, variables, name: str, options=None, info=None, *,
               member: int = 0) -> tuple[str, str]:
    """`(method_signature, model_signature)` of method `name` on a loaded checkpoint, as
    `jaxdepth calibrate` records them (`Calibration.check(method=..., model=...)`): for an
    ensemble checkpoint (a list of variable sets) used by a single-model method, the
    signature of member `member`'s weights with `#member<m>` appended."""
    from jaxdepth.uncertainty.methods import canonical

    sig = method_signature(name, options, info)
    if isinstance(variables, (list, tuple)) and canonical(name) != "ensemble":
        return sig, model_signature(meta, variables[member]) + f"#member{member}"
    return sig, model_signature(meta, variables)
