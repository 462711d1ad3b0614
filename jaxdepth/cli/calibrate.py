"""`jaxdepth calibrate --checkpoint DIR --method NAME --data synthetic|kitti|nyu ... --out FILE`

Fits a `jaxdepth.calibration.Calibration` (error bars in metres with a coverage
guarantee, docs/calibration.md) for one checkpoint and one uncertainty method on a split
with ground truth: the model runs over the split with the evaluation loop of
`jaxdepth.evaluation.evaluate` (the method from the method table, as `jaxdepth predict`
builds it), every image is aligned with its ground truth by `jaxdepth.evaluation.prepare`
under the dataset's protocol (docs/protocols.md: resizing to the gt size, the valid-pixel
rules, median / stereo scaling from the checkpoint's `scaling`), and the scores and
errors `|d − d_gt|` (or `|d − d_gt| / d` with `--relative`) of all valid pixels are
pooled. The file records the method with its options (`method_signature`) and the model
(`model_signature`: architecture and a hash of the weights), so that it is refused for
another method or model. `--holdout F` keeps the last fraction F of the images out of
the fit and reports the coverage the bounds reach on them.

Splits (calibrate on images the model was not trained on, and not on the test set you
report): synthetic `val` (default), `test`, `train`; KITTI `eigen_zhou` (default: its
4424 validation frames), `eigen_full` (validation frames), `eigen_benchmark`, `eigen`
(the test sets) or a split file of `<folder> <frame> <side>` lines; NYU `val` (the 654
test images, the only held-out NYU frames: use `--images` / `--holdout` to keep
evaluation images apart) or `train`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jaxdepth.cli import options
from jaxdepth.cli.errors import CLIError

DATA = ("synthetic", "kitti", "nyu")
DEFAULT_SPLIT = {"synthetic": "val", "kitti": "eigen_zhou", "nyu": "val"}
DEFAULT_IMAGES = {"synthetic": 200}  # kitti, nyu: the whole split
SYNTHETIC_SPLITS = ("val", "test", "train")
NYU_SPLITS = ("val", "train")
NYU_SIZE = (224, 288)
PROGRESS_MIN = 6


def add_parser(sub) -> None:
    from jaxdepth.calibration import DEFAULT_LEVELS
    from jaxdepth.cli.predict import _method_names

    names = _method_names()
    pr = sub.add_parser(
        "calibrate", help="error bars in metres with a coverage guarantee for a method's "
                          "uncertainty (fit on a split with ground truth)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fit a score -> error-bound map (binned split-conformal, "
                    "docs/calibration.md) for one checkpoint and method.\n\nMethods:\n"
        + "\n".join(f"  {k:10s} {v}" for k, v in names.items()))
    pr.add_argument("--checkpoint", type=Path, required=True,
                    help="a jaxdepth depth checkpoint (an export, a `jaxdepth train --out` "
                         "directory or a trainer's run directory)")
    pr.add_argument("--method", required=True, choices=list(names),
                    help="the uncertainty method whose scores are calibrated")
    pr.add_argument("--data", required=True, choices=DATA,
                    help="the calibration data (synthetic: the procedural scenes)")
    pr.add_argument("--data-root", type=Path,
                    help="KITTI raw root / NYU FastDepth folder (not for synthetic)")
    pr.add_argument("--split", help="synthetic: val (default), test, train; KITTI: "
                    "eigen_zhou (default, its val frames), eigen_full, eigen_benchmark, eigen "
                    "or a split file; NYU: val (default) or train")
    pr.add_argument("--gt", choices=("velodyne", "improved"), default=None,
                    help="KITTI ground truth (default: improved for eigen_benchmark, else "
                         "velodyne with the Garg crop)")
    pr.add_argument("--gt-root", type=Path, help="KITTI improved gt folder, if not inside the "
                    "raw tree")
    pr.add_argument("--image-ext", default=".png", help="KITTI image extension (.png)")
    pr.add_argument("--images", type=int, default=None,
                    help="use the first N images (default: synthetic 200, else all)")
    pr.add_argument("--levels", type=float, nargs="+", default=list(DEFAULT_LEVELS),
                    metavar="LEVEL", help="coverage levels in (0, 1) (0.5 0.8 0.9 0.95)")
    pr.add_argument("--relative", action="store_true",
                    help="calibrate |d - d_gt| / d: bounds are fractions of the predicted "
                         "depth (required for monocular, median-scaled models)")
    pr.add_argument("--bins", default="auto",
                    help="score-quantile bins: auto (default) or a number")
    pr.add_argument("--monotone", choices=("cummax", "isotonic"), default="cummax",
                    help="cummax: per-bin coverage guarantee (default); isotonic: normalised "
                         "split conformal, marginal guarantee, no over-coverage where the "
                         "error is not monotone in the score")
    pr.add_argument("--pixel-fraction", type=float, default=1.0,
                    help="keep each valid pixel with this probability (memory; 1.0)")
    pr.add_argument("--holdout", type=float, default=0.0,
                    help="fraction of the images (the last ones) left out of the fit to "
                         "measure the bounds' coverage (0)")
    pr.add_argument("--out", type=Path, required=True, help="the calibration file (.json)")
    options.add_method_arguments(pr)
    pr.add_argument("--space", choices=["disp", "depth"], default=None,
                    help="post/var/in_drop/drop/boot: spread of disparity or depth "
                         "(default: depth for metric models, else disp)")
    pr.add_argument("--sigma-to-depth", dest="to_depth", action="store_true", default=None,
                    help="predictive: propagate a disparity σ to depth")
    pr.add_argument("--bayesian", action="store_true", help="boot: add Σ σ² of log σ members")
    pr.add_argument("--member", type=int, default=0,
                    help="ensemble checkpoints, methods other than boot: which member (0)")
    pr.add_argument("--batch-size", type=int, default=4, help="images per call (4)")
    pr.add_argument("--seed", type=int, default=0,
                    help="noise/dropout, synthetic scenes and pixel subsampling seed")


def _protocol(base, meta):
    """`base` with the scaling a checkpoint's depth needs (`meta["scaling"]`)."""
    import dataclasses
    if meta.get("scaling") == "median":
        return dataclasses.replace(base, scaling="median")
    if meta.get("scaling") == "stereo" or meta.get("use_stereo"):
        return dataclasses.replace(base, scaling="stereo",
                                   stereo_factor=float(meta.get("stereo_scale") or 5.4))
    return base


def calibration_source(args, meta, height: int, width: int):
    """`(source, protocol, split, description)` of the calibration data."""
    from jaxdepth import evaluation as E

    split = args.split or DEFAULT_SPLIT[args.data]
    limit = args.images if args.images is not None else DEFAULT_IMAGES.get(args.data)
    if args.data == "synthetic":
        from jaxdepth.data.synthetic import SyntheticSource
        if split not in SYNTHETIC_SPLITS:
            raise CLIError(f"--split {split}: the procedural scenes have the splits "
                           f"{', '.join(SYNTHETIC_SPLITS)}")
        source = SyntheticSource(split, seed=args.seed, height=height, width=width,
                                 length=limit, keys=("image", "depth"))
        return (source, _protocol(E.SYNTHETIC, meta), split,
                f"procedural scenes ({split}, seed {args.seed})")
    if args.data == "kitti":
        from jaxdepth.data.kitti import KittiTest
        gt = args.gt or ("improved" if split == "eigen_benchmark" else "velodyne")
        kw = dict(height=height, width=width, gt_root=args.gt_root, gt=gt,
                  crop="garg" if gt == "velodyne" else "none", image_ext=args.image_ext)
        source = KittiTest(str(args.data_root), split, **kw)
        if limit is not None and limit < len(source):
            source = KittiTest(str(args.data_root), split, entries=source.entries[:limit], **kw)
        base = E.KITTI_EIGEN if gt == "velodyne" else E.KITTI_BENCHMARK
        return source, _protocol(base, meta), split, f"KITTI {split} ({gt} gt)"
    from jaxdepth.benchmarks.nyu import nyu_test_source
    from jaxdepth.data.nyu import NyuV2, nyu_files
    if split not in NYU_SPLITS:
        raise CLIError(f"--split {split}: NYU has the subsets {', '.join(NYU_SPLITS)}")
    if (height, width) != NYU_SIZE:
        raise CLIError(f"NYU images come at {NYU_SIZE[0]}x{NYU_SIZE[1]} (the evaluation crop); "
                       f"{args.checkpoint} takes {height}x{width}")
    if split == "val":
        source = nyu_test_source(args.data_root, limit)
    else:
        files = nyu_files(str(args.data_root), "train")
        source = NyuV2(str(args.data_root), "train", files=files[:limit] if limit else files)
    return source, _protocol(E.NYU, meta), split, f"NYU {split}"


def _check_args(args):
    from jaxdepth.calibration import _check_levels
    if args.batch_size < 1:
        raise CLIError("--batch-size must be at least 1")
    if args.samples < 2 and args.method in ("in_drop", "drop", "mc_drop", "mc_dropout"):
        raise CLIError("--samples must be at least 2")
    if args.images is not None and args.images < 1:
        raise CLIError("--images must be at least 1")
    if not 0.0 < args.pixel_fraction <= 1.0:
        raise CLIError(f"--pixel-fraction must lie in (0, 1], got {args.pixel_fraction:g}")
    if not 0.0 <= args.holdout < 1.0:
        raise CLIError(f"--holdout must lie in [0, 1), got {args.holdout:g}")
    try:
        args.levels = list(_check_levels(args.levels))
    except ValueError as e:
        raise CLIError(f"--levels: {e}") from None
    if args.bins != "auto":
        try:
            args.bins = int(args.bins)
        except ValueError:
            raise CLIError(f"--bins must be auto or a positive number, got {args.bins!r}") from None
        if args.bins < 1:
            raise CLIError(f"--bins must be auto or a positive number, got {args.bins}")
    if args.data == "synthetic" and args.data_root is not None:
        raise CLIError("--data synthetic renders its scenes: no --data-root")
    if args.data != "synthetic" and args.data_root is None:
        raise CLIError(f"--data {args.data} needs --data-root (the dataset folder)")
    if args.data != "kitti" and (args.gt or args.gt_root):
        raise CLIError("--gt and --gt-root are for --data kitti")
    if not args.checkpoint.exists():
        raise CLIError(f"checkpoint directory {args.checkpoint} does not exist")


def collect_pixels(fn, source, protocol, *, batch_size: int, seed: int = 0,
                   pixel_fraction: float = 1.0, label: str = "calibrate"):
    """Run `fn(images [B,H,W,3], key) -> Estimate` (a `jaxdepth.evaluation.Row`'s `fn`)
    over `source` with the evaluation loop (`evaluation.evaluate`, batch keys
    `fold_in(PRNGKey(seed), b)`) and return `(scores, errors [m], depth [m], image
    index)`: flat float32 / int32 arrays of the valid pixels of every image under
    `protocol` (`evaluation.prepare`: resized to the gt, scaled, clamped), each kept with
    probability `pixel_fraction`. The input of `calibration.fit` / `evaluate`."""
    import numpy as np
    from tqdm.auto import tqdm

    from jaxdepth.benchmarks.protocol import per_image
    from jaxdepth.evaluation import Row, evaluate, prepare

    rng = np.random.default_rng(seed)
    parts = {"s": [], "e": [], "d": [], "i": []}
    bar = tqdm(total=len(source), desc=label, unit="img", disable=len(source) < PROGRESS_MIN,
               file=sys.stderr, dynamic_ncols=True)

    def add(row, est, sample, i):
        gt = np.asarray(sample["depth"], np.float32)[None]
        mask = sample.get("mask")
        pred, unc, valid = prepare(est, gt, protocol,
                                   None if mask is None else np.asarray(mask)[None])
        pred, unc, valid = np.asarray(pred)[0], np.asarray(unc)[0], np.asarray(valid)[0]
        valid = valid & np.isfinite(unc)
        if pixel_fraction < 1.0:
            valid &= rng.random(valid.shape) < pixel_fraction
        d = pred[valid]
        parts["s"].append(unc[valid].astype(np.float32))
        parts["e"].append(np.abs(d - gt[0, ..., 0][valid]).astype(np.float32))
        parts["d"].append(d.astype(np.float32))
        parts["i"].append(np.full(d.shape, i, np.int32))
        bar.update(1)

    evaluate([Row("model", label, fn)], source, batch_size=batch_size,
             add=per_image(add), seed=seed, progress=False)
    bar.close()
    return tuple(np.concatenate(parts[k]) for k in ("s", "e", "d", "i"))


def _describe(cal, result, relative: bool) -> list[str]:
    import numpy as np

    from jaxdepth.calibration import level_key
    lines = []
    for lvl, b in zip(cal.levels, cal.bounds):
        key = level_key(lvl)
        lo, hi = float(np.min(b)), float(np.max(b))
        rng = (f"{100 * lo:.3g}-{100 * hi:.3g} % of depth" if relative
               else f"{lo:.3g}-{hi:.3g} m")
        line = f"  level {key}: bound {rng} over {cal.n_bins} bins"
        r = result.get("calibration", {}).get(key)
        if r:
            line += (f"; mean {r['mean_bound']:.3g} m vs {r['constant_bound']:.3g} m for a "
                     "constant bound")
        h = result.get("holdout", {}).get(key)
        if h:
            line += (f"; held-out coverage {h['coverage']:.3f} (a constant bound of the same "
                     f"mean: {h['constant_coverage']:.3f})")
        lines.append(line)
    return lines


def run(args) -> int:
    _check_args(args)
    import datetime

    import jaxdepth
    from jaxdepth import calibration as C
    from jaxdepth.cli.predict import _make_method
    from jaxdepth.export import load_checkpoint
    from jaxdepth.uncertainty.methods import canonical
    try:
        model, variables, meta = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
    if meta.get("task") == "segmentation":
        raise CLIError(f"{args.checkpoint} is a segmentation model; `jaxdepth calibrate` "
                       "calibrates depth errors")
    height, width = int(meta["height"]), int(meta["width"])
    run_fn, key, opts, info = _make_method(args, model, variables, meta)
    method_sig, model_sig = C.signatures(meta, variables, key, opts, info, member=args.member)
    try:
        source, protocol, split, desc = calibration_source(args, meta, height, width)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    if protocol.scaling == "median" and not args.relative:
        raise CLIError(f"{args.checkpoint} is a monocular model (median scaling: its depth "
                       "has no metric scale); calibrate relative errors with --relative")
    n_images = len(source)
    n_hold = round(args.holdout * n_images) if args.holdout > 0 else 0
    if args.holdout > 0:
        n_hold = max(1, n_hold)
        if n_hold >= n_images:
            raise CLIError(f"--holdout {args.holdout:g} leaves no calibration image of "
                           f"{n_images}")
    if split in ("test", "eigen", "eigen_benchmark") or (args.data, split) == ("nyu", "val"):
        print(f"note: calibrating on the test split {split}: evaluate the bounds on other "
              "images", file=sys.stderr)
    print(f"jaxdepth calibrate {args.method} ({method_sig}) on {desc}: {n_images} images"
          + (f", the last {n_hold} held out" if n_hold else "") + f" -> {args.out}",
          flush=True)
    s, e, d, idx = collect_pixels(lambda x, _key: run_fn(x), source, protocol, batch_size=args.batch_size,
                                  seed=args.seed, pixel_fraction=args.pixel_fraction,
                                  label=f"calibrate ({args.method})")
    fit_px = idx < n_images - n_hold
    target = e / d if args.relative else e
    info_meta = {
        "checkpoint": str(args.checkpoint), "checkpoint_name": args.checkpoint.resolve().name,
        "method_name": canonical(args.method), "data": args.data, "split": split,
        "data_root": None if args.data_root is None else str(args.data_root),
        "images": n_images - n_hold, "pixels": int(fit_px.sum()),
        "pixel_fraction": args.pixel_fraction, "seed": args.seed,
        "protocol": protocol.name, "scaling": protocol.scaling,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "jaxdepth_version": jaxdepth.__version__}
    cal = C.fit(s[fit_px], target[fit_px], levels=args.levels, relative=args.relative,
                bins=args.bins, monotone=args.monotone, seed=args.seed, method=method_sig,
                model=model_sig, info=info_meta)
    result = {"calibration": C.evaluate(cal, s[fit_px], e[fit_px], depth=d[fit_px])}
    info = dict(cal.info, calibration_set=result["calibration"])
    if n_hold:
        hold = ~fit_px
        if not hold.any():
            raise CLIError(f"the {n_hold} held-out image(s) have no valid ground-truth pixel")
        result["holdout"] = C.evaluate(cal, s[hold], e[hold], depth=d[hold])
        info["holdout"] = {"images": n_hold, "pixels": int(hold.sum()),
                           "evaluation": result["holdout"]}
    import dataclasses
    cal = dataclasses.replace(cal, info=info)
    cal.save(args.out)
    print(f"{n_images - n_hold} images, {int(fit_px.sum())} valid pixels"
          + (" (relative errors)" if args.relative else "") + f"; model {model_sig}")
    print("\n".join(_describe(cal, result, args.relative)))
    print(f"wrote {args.out}")
    return 0
