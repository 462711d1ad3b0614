"""The reference (uint16 storage) mode of the KITTI protocol (`KittiConfig(
reproduce_reference=True)`): the storage quirks of Poggi et al.'s `generate_maps.py` /
`evaluate.py` (which GrUMoDepth reuses), so that numbers compare one for one with the
published tables; and the reference's Var (`reference_var`), which the NYU protocol's
reference mode uses too. docs/protocols.md lists every place where the reference departs
from the papers.

Reproduced, per image:

1. disparity stored at the network size as uint16 ``trunc(d·(0.58·W_gt)·256/10)``
   (stereo) or ``trunc(d·(0.58·W_gt)·256/r/10)`` (mono), in float32 with 0.58 as
   float32; ``r = median(gt[gt>0]) / median(resize(1/d)[gt>0])`` — the *depth*, not
   the disparity, is resized, and gt > 0 is used even for `eigen` (no crop, no cap);
   values outside [0, 65535] wrap modulo 2^16 like NumPy's float->uint16 cast on x86
   (`to_uint16`, `store_disparity`, `mono_ratio`);
2. uncertainty stored as uint16 ``trunc(u·65535)`` (float32, `store_uncertainty`), where
   u is min-max normalised per image at the network size for the Base rows of
   Log/Self/Drop/Boot, comes normalised from Var and In-Drop, is the bilinearly resized
   normalised gradient map for Grad, and is the RAW |Δdisparity| (not normalised; values
   above 1 wrap) for Post's Base row;
3. the PNGs are written to ``OUT/reference/<model>_<method>/raw/{disp,uncert}/
   %06d_10.png`` (the layout `evaluate.py --ext_disp_to_eval .../raw/` reads, so the
   reference's own script can evaluate them too) and read back: disparity
   ``v/256/(0.58·W_gt)·10``, uncertainty ``v/256`` (`write_png16`, `read_png16`,
   `load_disparity`, `load_uncertainty`);
4. both resized to the gt size with OpenCV's INTER_LINEAR arithmetic in float64
   (`resize_bilinear`: float32 weights, horizontal then vertical pass — it decides
   the ties among the quantised values); depth = 1/disparity (inf where the stored
   value is 0); no median scaling at evaluation (mono: the ratio is baked in; stereo:
   ×5.4); clamp [1e-3, 80];
5. masks (`reference_mask`): `eigen_benchmark` gt > 0; `eigen` 1e-3 < gt < 80 and the
   Garg crop;
6. AUSE/AURG as `compute_aucs` (`reference_sparsification`): thresholds
   ``np.percentile(-u, 2k)`` in float64 with NumPy's own rounding, pixels with
   ``-u >= t`` kept, 0 appended, trapezoidal areas; depth metrics as
   `compute_eigen_errors` (`reference_depth_errors`); plain means over images
   (`ReferenceEvaluator`);
7. Var (`reference_var`): pixels that the back-rotation leaves empty take the disparity
   of a zero sigmoid (1/max_depth; torchvision's zero fill of the sigmoid output; on NYU
   depth 0) instead of being left out.

Not reproduced, so those rows are close but not number for number: random draws
(Var's noise, In-Drop/Drop dropout masks) come from JAX's PRNG, not PyTorch's; the
rotation samples bilinearly (torchvision: nearest); OpenCV's SIMD/IPP kernels may
round float32 resizes (the mono ratio) in the last bit. Shared with the default mode:
images loaded with PIL and resized with LANCZOS to the network size, as Monodepth2
(`image_ext=".jpg"` reads Monodepth2's jpg-converted KITTI); per-image normalisation
of the gradient map (the reference normalises per batch, of size 1).
"""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxdepth.uncertainty.maps import Estimate, normalize_per_image
from jaxdepth.uncertainty.transforms import make_reference

__all__ = ["FX_NORM", "STEREO_FACTOR", "MIN_DEPTH", "MAX_DEPTH", "SPARSE_METRICS", "to_uint16",
           "resize_bilinear", "mono_ratio", "store_disparity", "load_disparity",
           "store_uncertainty", "load_uncertainty", "reference_mask", "reference_depth_errors",
           "reference_sparsification", "ReferenceEvaluator", "write_png16", "read_png16",
           "reference_var"]

FX_NORM = 0.58          #: Monodepth2's normalised focal length, used by the reference's storage
STEREO_FACTOR = 5.4     #: KITTI baseline 0.54 m / Monodepth2's 0.1
MIN_DEPTH, MAX_DEPTH = 1e-3, 80.0
SPARSE_METRICS = ("abs_rel", "rmse", "a1")


# ----------------------------------------------------------------------------- Var

@functools.partial(jax.jit, static_argnames=("apply_fn", "space", "fill", "rot_angle",
                                             "noise_std"))
def _reference_var(apply_fn, variables, images, rng, *, space, fill, rot_angle, noise_std):
    b = images.shape[0]
    refs = [make_reference(n, rng, angle=rot_angle, noise_std=noise_std)
            for n in ("flip", "gray", "noise", "rot")]
    p = apply_fn(variables, jnp.concatenate([images] + [r.transform(images) for r in refs]))[space]
    preds = [p[:b]]
    for k, r in enumerate(refs):
        back, valid = r.inverse(p[(k + 1) * b:(k + 2) * b])
        preds.append(back if valid is None else jnp.where(valid, back, fill))
    u = jnp.var(jnp.stack(preds), 0, ddof=1)
    return Estimate(1.0 / p[:b] if space == "disp" else p[:b], normalize_per_image(u))


def reference_var(apply_fn, variables, images, *, rng, space="disp", fill=0.01,
                  rot_angle=10.0, noise_std=0.01) -> Estimate:
    """Var as the reference computes it: unbiased variance over the prediction and its
    flip / gray / noise / rotation references, where pixels the back-rotation leaves
    empty take the value `fill` (disparity of a zero sigmoid on KITTI, depth 0 on NYU)
    instead of being left out (`jaxdepth.uncertainty.var`); min-max normalised."""
    return _reference_var(apply_fn, variables, images, rng, space=space, fill=float(fill),
                          rot_angle=float(rot_angle), noise_std=float(noise_std))



# ----------------------------------------------------------------------------- storage

def to_uint16(x) -> np.ndarray:
    """`np.asarray(x).astype(np.uint16)` as NumPy does it on x86-64, made explicit:
    truncation toward zero, then wrap-around modulo 2^16 (-1.5 -> 65535, 70000.7 -> 4464);
    NaN, ±inf and |x| >= 2^63 give 0."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x) & (np.abs(x) < 2.0 ** 63)
    t = np.trunc(np.where(ok, x, 0.0)).astype(np.int64)
    return (t & 0xFFFF).astype(np.uint16)


def _cv2_axis(n_in: int, n_out: int, clamp_weights: bool):
    """OpenCV's INTER_LINEAR taps along one axis (resize.cpp, generic path): source
    position ``(float)((i+0.5)·scale − 0.5)`` with ``scale = 1/(n_out/n_in)`` in double,
    ``s = floor``, weight ``a = pos − s`` and ``1.f − a`` in float32. Columns clamp the
    position into the image (weight 0 at the borders); rows keep the weight and clip the
    row indices instead, as OpenCV does."""
    scale = 1.0 / (n_out / n_in)
    pos = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(pos).astype(np.int64)
    a = (pos - i0.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        low = i0 < 0
        i0[low], a[low] = 0, 0.0
        high = i0 >= n_in - 1
        i0[high], a[high] = n_in - 1, 0.0
    i1 = np.clip(i0 + 1, 0, n_in - 1)
    i0 = np.clip(i0, 0, n_in - 1)
    return i0, i1, (np.float32(1.0) - a).astype(np.float32), a


def resize_bilinear(x, height: int, width: int) -> np.ndarray:
    """`cv2.resize(x, (width, height))` (INTER_LINEAR) of a 2-D float map, re-derived:
    half-pixel centres, float32 weights, a horizontal then a vertical pass, each
    ``v0·w0 + v1·w1`` in the input's precision (float32 maps in float32, others in
    float64). Equal to OpenCV's generic C++ path; OpenCV's SIMD/IPP kernels may round
    float32 maps differently in the last bit."""
    x = np.asarray(x)
    dtype = np.float32 if x.dtype == np.float32 else np.float64
    x = x.astype(dtype)
    if x.shape == (height, width):
        return x.copy()
    c0, c1, cw0, cw1 = _cv2_axis(x.shape[1], width, clamp_weights=True)
    r0, r1, rw0, rw1 = _cv2_axis(x.shape[0], height, clamp_weights=False)
    cw0, cw1, rw0, rw1 = (w.astype(dtype) for w in (cw0, cw1, rw0, rw1))
    rows = x[:, c0] * cw0[None] + x[:, c1] * cw1[None]
    return rows[r0] * rw0[:, None] + rows[r1] * rw1[:, None]


def mono_ratio(disp, gt) -> np.float32:
    """The reference's per-image median ratio: ``median(gt[gt>0]) / median(resize(1/disp,
    gt size)[gt>0])`` in float32 (the depth, not the disparity, is resized)."""
    gt = np.asarray(gt, np.float32)
    mask = gt > 0
    depth = resize_bilinear(1.0 / np.asarray(disp, np.float32), *gt.shape).astype(np.float32)
    return np.float32(np.median(gt[mask]) / np.median(depth[mask]))


def store_disparity(disp, gt, supervision: str) -> np.ndarray:
    """uint16 PNG content of a network-size scaled disparity (`generate_maps.py`)."""
    d = np.asarray(disp, np.float32)
    scale = np.float32(FX_NORM) * np.float32(np.asarray(gt).shape[1])
    v = d * scale * np.float32(256.0)
    if supervision == "mono":
        v = v / mono_ratio(d, gt)
    v = v / np.float32(10.0)
    return to_uint16(v.astype(np.float32))


def load_disparity(stored, gt_width: int) -> np.ndarray:
    """Disparity read back from the uint16 PNG (`evaluate.py`): ``v/256/(0.58·W)·10``."""
    return np.asarray(stored).astype(np.float64) / 256.0 / (FX_NORM * gt_width) * 10


def store_uncertainty(u) -> np.ndarray:
    """uint16 PNG content of an uncertainty map: ``trunc(u·65535)`` in float32."""
    return to_uint16((np.asarray(u, np.float32) * np.float32(256 * 256 - 1)).astype(np.float32))


def load_uncertainty(stored) -> np.ndarray:
    """Uncertainty read back as `evaluate.py` does: ``v/256`` (only its ranking matters)."""
    return np.asarray(stored).astype(np.float64) / 256.0


def _normalize(u) -> np.ndarray:
    u = np.asarray(u, np.float32)
    lo, hi = u.min(), u.max()
    return (u - lo) / (hi - lo) if hi > lo else np.zeros_like(u)


def reference_mask(gt, split: str, max_depth: float = MAX_DEPTH) -> np.ndarray:
    """`evaluate.py`'s mask: `eigen` 1e-3 < gt < max_depth and the Garg crop; else gt > 0."""
    gt = np.asarray(gt)
    if split != "eigen":
        return gt > 0
    h, w = gt.shape
    mask = (gt > MIN_DEPTH) & (gt < max_depth)
    crop = np.array([0.40810811 * h, 0.99189189 * h, 0.03594771 * w,
                     0.96405229 * w]).astype(np.int32)
    crop_mask = np.zeros(mask.shape)
    crop_mask[crop[0]:crop[1], crop[2]:crop[3]] = 1
    return mask & (crop_mask > 0)


def reference_depth_errors(gt, pred) -> dict[str, float]:
    """`compute_eigen_errors` on the masked pixels (float64)."""
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    thresh = np.maximum(gt / pred, pred / gt)
    return {"abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
            "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
            "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
            "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
            "a1": float((thresh < 1.25).mean()), "a2": float((thresh < 1.25 ** 2).mean()),
            "a3": float((thresh < 1.25 ** 3).mean())}


_trapezoid = getattr(np, "trapezoid", None) or np.trapz


def reference_sparsification(gt, pred, unc, steps: int = 50) -> dict:
    """`compute_aucs` of one image's masked pixels: `{metric: {"ause", "aurg", "method",
    "oracle"}}` (curves of length steps+1).

    Removal order and thresholds as the reference: ``t_q = np.percentile(-u, q)`` for
    ``q = 100/steps·k`` (NumPy's float64 rounding), keep ``-u >= t_q``; the oracle ranks by
    the true error (the δ column by the continuous ratio). The kept set is a suffix of the
    ascending order of ``-u``, so subset means come from suffix sums."""
    gt, pred = np.asarray(gt, np.float64), np.asarray(pred, np.float64)
    unc = np.asarray(unc, np.float64)
    n = gt.size
    quants = [100.0 / steps * t for t in range(steps)]
    x = [1.0 / steps * t for t in range(steps + 1)]
    abs_rel = np.abs(gt - pred) / gt
    sq = (gt - pred) ** 2
    ratio = np.maximum(gt / pred, pred / gt)
    values = {"abs_rel": abs_rel, "rmse": sq, "a1": (ratio >= 1.25).astype(np.float64)}
    oracle_score = {"abs_rel": -abs_rel, "rmse": -sq, "a1": -ratio}

    def curve(score, name):
        order = np.argsort(score, kind="stable")
        thr = np.percentile(score, quants)
        keep = n - np.searchsorted(score[order], thr, side="left")
        suffix = np.concatenate([[0.0], np.cumsum(values[name][order][::-1])])
        c = suffix[keep] / keep
        c = np.sqrt(c) if name == "rmse" else c
        return np.append(c, 0.0)

    out = {}
    for name in SPARSE_METRICS:
        full = values[name].mean()
        full = np.sqrt(full) if name == "rmse" else full
        method, oracle = curve(-unc, name), curve(oracle_score[name], name)
        area = _trapezoid(method, x=x)
        out[name] = {"ause": float(area - _trapezoid(oracle, x=x)), "aurg": float(full - area),
                     "method": method, "oracle": oracle}
    return out


def write_png16(path, array) -> None:
    """A uint16 single-channel PNG (lossless, as cv2.imwrite of a uint16 array)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array, np.uint16)).save(path)


def read_png16(path) -> np.ndarray:
    """uint16 [h, w] from a 16-bit PNG (as `cv2.imread(path, -1)`)."""
    with Image.open(path) as im:
        return np.asarray(im).astype(np.uint16)


class ReferenceEvaluator:
    """Accumulates rows under the reference's storage and evaluation rules (module doc)."""

    def __init__(self, split: str, supervision: str, maps_dir, *, steps: int = 50,
                 max_depth: float = MAX_DEPTH, keep_maps: bool = True):
        self.split, self.supervision, self.steps = split, supervision, steps
        self.max_depth, self.keep_maps = max_depth, keep_maps
        self.maps_dir = Path(maps_dir)
        self._depth, self._sparse, self._curves = {}, {}, {}
        self._time: dict = {}
        self._order: list = []
        self.skipped = 0

    def folder(self, model: str, method: str) -> Path:
        return self.maps_dir / f"{model.lower()}_{method.lower()}" / "raw"

    def add(self, model: str, method: str, disp, unc, gt, index: int, normalize: bool):
        """One image: `disp`/`unc` at the network size, `gt` [H, W] metres at native size."""
        key = (model, method)
        if key not in self._order:
            self._order.append(key)
            for d in (self._depth, self._sparse, self._curves):
                d[key] = []
        gt = np.asarray(gt, np.float32)
        h, w = gt.shape
        u = _normalize(unc) if normalize else np.asarray(unc, np.float32)
        stored_d = store_disparity(disp, gt, self.supervision)
        stored_u = store_uncertainty(u)
        if self.keep_maps:
            folder = self.folder(model, method)
            write_png16(folder / "disp" / f"{index:06d}_10.png", stored_d)
            write_png16(folder / "uncert" / f"{index:06d}_10.png", stored_u)
            stored_d = read_png16(folder / "disp" / f"{index:06d}_10.png")
            stored_u = read_png16(folder / "uncert" / f"{index:06d}_10.png")
        disp_r = resize_bilinear(load_disparity(stored_d, w), h, w)
        with np.errstate(divide="ignore"):
            depth = 1.0 / disp_r
        unc_r = resize_bilinear(load_uncertainty(stored_u), h, w)
        mask = reference_mask(gt, self.split, self.max_depth)
        if not mask.any():
            self.skipped += 1
            return
        g = gt[mask].astype(np.float64)
        p = depth[mask] * (STEREO_FACTOR if self.supervision == "stereo" else 1.0)
        p = np.clip(p, MIN_DEPTH, self.max_depth)
        self._depth[key].append(reference_depth_errors(g, p))
        s = reference_sparsification(g, p, unc_r[mask], self.steps)
        self._sparse[key].append({m: (s[m]["ause"], s[m]["aurg"]) for m in SPARSE_METRICS})
        self._curves[key].append({m: (s[m]["method"], s[m]["oracle"]) for m in SPARSE_METRICS})

    def time(self, model: str, method: str, seconds: float, n_images: int):
        entry = self._time.setdefault((model, method), [0.0, 0])
        entry[0] += seconds
        entry[1] += n_images

    def rows(self) -> list[dict]:
        out = []
        for key in self._order:
            row = {"model": key[0], "method": key[1]}
            for m in SPARSE_METRICS:
                vals = np.array([s[m] for s in self._sparse[key]], np.float64)
                row[m] = {"ause": float(vals[:, 0].mean()), "aurg": float(vals[:, 1].mean())}
            seconds, n = self._time.get(key, (float("nan"), 0))
            row["ms_per_image"] = 1e3 * seconds / n if n else float("nan")
            depth = self._depth[key]
            row["depth"] = {k: float(np.mean([d[k] for d in depth])) for k in depth[0]}
            out.append(row)
        return out

    def curves(self) -> dict:
        out = {}
        for key in self._order:
            entry = {}
            for m in SPARSE_METRICS:
                method = np.mean([c[m][0] for c in self._curves[key]], 0)
                oracle = np.mean([c[m][1] for c in self._curves[key]], 0)
                entry[m] = {"x": np.linspace(0, 1, self.steps + 1), "method": method,
                            "oracle": oracle}
            out[f"{key[0]}: {key[1]}"] = entry
        return out


