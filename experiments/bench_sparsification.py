"""AUSE/AURG at scale: the metric forms on KITTI-size images, timed and compared.

    python experiments/bench_sparsification.py               # 652 images of 375×1242
    python experiments/bench_sparsification.py --quick       # a few images, a smoke run
    python experiments/bench_sparsification.py --images 64 --naive-images 8 --jit-images 32

Random depth / prediction / uncertainty with a fixed seed (uncertainty rounded to 2¹²
levels, so ties at the thresholds occur), generated chunk by chunk (``--chunk`` images;
generation is not timed), for two masks: dense (every pixel valid) and 5 % valid pixels
(about KITTI's velodyne density). Forms, each timed on the same images:

* ``default``: ``batch_ause_aurg`` as the public API dispatches it on this backend;
* ``per-image``: ``ause_aurg`` image by image (float64 NumPy);
* ``jit``: ``batch_ause_aurg(..., backend="jax")``, the jit-compiled vmapped form (float32
  unless x64; the compiling call is excluded);
* ``naive``: the protocol written out literally, ``np.percentile`` per removal step and a
  boolean subset per step (float64), the independent reference. It takes seconds per
  dense image, so it is timed on the first ``--naive-images`` images of each mask and
  reported per image (labelled with its image count).

Prints ms/image, each form's speed-up over naive (naive ms/image ÷ form ms/image), and
the largest |difference| of every AUSE/AURG number against the naive reference (on the
images naive ran on) and against the per-image form (on all images).
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdepth.metrics import SPARSIFICATION_METRICS, ause_aurg, batch_ause_aurg  # noqa: E402

H, W = 375, 1242
KEYS = [(m, a) for m in SPARSIFICATION_METRICS for a in ("ause", "aurg")]
trapezoid = getattr(np, "trapezoid", None) or np.trapz


def naive_ause_aurg(gt, pred, unc, mask, steps=50):
    """The protocol literally: per step a percentile threshold and a boolean subset."""
    g, p, u = (np.asarray(a, np.float64).ravel() for a in (gt, pred, unc))
    valid = np.isfinite(g) & (g > 0) & np.asarray(mask, bool).ravel()
    g, p, u = g[valid], p[valid], u[valid]
    if g.size == 0:
        return {k: np.nan for k in KEYS}
    err = {"abs_rel": np.abs(g - p) / g, "rmse": (g - p) ** 2, "a1": np.maximum(g / p, p / g)}

    def metric(name, keep):
        e = err[name][keep]
        if name == "abs_rel":
            return np.mean(e)
        if name == "rmse":
            return np.sqrt(np.mean(e))
        return np.mean(e >= 1.25)

    def curve(name, rank):
        ys = []
        for k in range(steps):
            thr = np.percentile(rank, 100 - 100.0 * k / steps)
            # The float64 percentile position can land one ulp below an integer and put
            # the threshold a few ulps below the value that IS the percentile; 64 ulps
            # restore the inclusive rule and are far below the gaps of distinct values.
            ys.append(metric(name, rank <= thr + 64 * np.spacing(abs(thr))))
        return np.array(ys + [0.0])

    x = np.linspace(0, 1, steps + 1)
    out = {}
    for name in SPARSIFICATION_METRICS:
        method = trapezoid(curve(name, u), x=x)
        oracle = trapezoid(curve(name, err[name]), x=x)
        full = metric(name, np.ones(g.size, bool))
        out[(name, "ause")], out[(name, "aurg")] = method - oracle, full - method
    return out


def make_chunk(seed, n, density):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(1.0, 80.0, (n, H, W)).astype(np.float32)
    pred = (gt * rng.uniform(0.7, 1.4, gt.shape)).astype(np.float32)
    unc = (np.round(rng.uniform(0, 1, gt.shape) * 4096) / 4096).astype(np.float32)
    mask = np.ones(gt.shape, bool) if density >= 1 else rng.uniform(size=gt.shape) < density
    return gt, pred, unc, mask


def as_table(res):
    """``{metric: {ause, aurg}}`` of [B] arrays -> [B, 6] float64."""
    return np.stack([np.asarray(res[m][a], np.float64) for m, a in KEYS], axis=-1)


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args, **kwargs))
    return out, time.perf_counter() - t


def per_image(fn, gt, pred, unc, mask, n):
    return [fn(gt[i], pred[i], unc[i], mask[i]) for i in range(n)]


def run_mask(label, density, args):
    has_backend = "backend" in inspect.signature(batch_ause_aurg).parameters
    jit_kw = {"backend": "jax"} if has_backend else {}
    secs = {"default": 0.0, "per-image": 0.0, "jit": 0.0, "naive": 0.0}
    count = dict.fromkeys(secs, 0)
    tables = {k: [] for k in secs}
    compiled = set()  # batch sizes the jit form has been compiled for
    for start in range(0, args.images, args.chunk):
        n = min(args.chunk, args.images - start)
        gt, pred, unc, mask = make_chunk(args.seed + start, n, density)
        if ("default", n) not in compiled:  # a jit-compiled default compiles here, untimed
            jax.block_until_ready(batch_ause_aurg(gt, pred, unc, mask))
            compiled.add(("default", n))
        res, s = timed(batch_ause_aurg, gt, pred, unc, mask)
        secs["default"] += s
        count["default"] += n
        tables["default"].append(as_table(res))
        rows, s = timed(per_image, ause_aurg, gt, pred, unc, mask, n)
        secs["per-image"] += s
        count["per-image"] += n
        tables["per-image"].append(np.array([[r[m][a] for m, a in KEYS] for r in rows]))
        n_jit = min(n, args.jit_images - count["jit"])
        if n_jit > 0:
            sub = (gt[:n_jit], pred[:n_jit], unc[:n_jit], mask[:n_jit])
            if n_jit not in compiled:  # compile at this batch size, outside the timing
                jax.block_until_ready(batch_ause_aurg(*sub, **jit_kw))
                compiled.add(n_jit)
            res, s = timed(batch_ause_aurg, *sub, **jit_kw)
            secs["jit"] += s
            count["jit"] += n_jit
            tables["jit"].append(as_table(res))
        n_naive = min(n, args.naive_images - count["naive"])
        if n_naive > 0:
            rows, s = timed(per_image, naive_ause_aurg, gt, pred, unc, mask, n_naive)
            secs["naive"] += s
            count["naive"] += n_naive
            tables["naive"].append(np.array([[r[k] for k in KEYS] for r in rows]))
    tables = {k: np.concatenate(v) for k, v in tables.items() if v}
    ms = {k: 1e3 * secs[k] / count[k] for k in secs if count[k]}
    naive = tables["naive"]
    report = {"mask": label, "images": args.images, "counts": count, "ms_per_image": ms,
              "speedup_vs_naive": {k: ms["naive"] / v for k, v in ms.items()},
              "max_abs_diff_vs_naive": {k: float(np.max(np.abs(t[:len(naive)] - naive)))
                                        for k, t in tables.items()},
              "max_abs_diff_vs_per_image": {
                  k: float(np.max(np.abs(t - tables["per-image"][:len(t)])))
                  for k, t in tables.items()}}
    print(f"\n{label}: {args.images} images of {H}×{W}, {jax.default_backend()} backend")
    print(f"{'form':<10}{'images':>8}{'ms/image':>11}{'× naive':>10}"
          f"{'max|Δ| naive':>15}{'max|Δ| per-img':>16}")
    for k in ms:
        print(f"{k:<10}{count[k]:>8}{ms[k]:>11.2f}{report['speedup_vs_naive'][k]:>10.1f}"
              f"{report['max_abs_diff_vs_naive'][k]:>15.2e}"
              f"{report['max_abs_diff_vs_per_image'][k]:>16.2e}")
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=652)
    ap.add_argument("--naive-images", type=int, default=8,
                    help="images the naive reference is timed on (per mask)")
    ap.add_argument("--jit-images", type=int, default=64,
                    help="images the jit form is timed on (per mask)")
    ap.add_argument("--chunk", type=int, default=16, help="images per generated batch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="4 images, naive and jit on 2")
    ap.add_argument("--json", help="write the report here")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.naive_images, args.jit_images, args.chunk = 4, 2, 2, 2
    args.naive_images = min(args.naive_images, args.images)
    args.jit_images = min(args.jit_images, args.images)
    reports = [run_mask("dense", 1.0, args), run_mask("5 % valid", 0.05, args)]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(reports, f, indent=2)


if __name__ == "__main__":
    main()
