"""`jaxdepth predict --checkpoint DIR [--method grad] IMAGE|DIR|GLOB ...`

Loads any checkpoint the project writes or converts (`jaxdepth.export.load_checkpoint`:
an export, a `jaxdepth train --out` directory, a trainer run under `checkpoints/`),
offers the methods of `jaxdepth.uncertainty.methods` that the model supports, resizes
every image to the checkpoint's training resolution, brings depth (through disparity,
bilinear) and uncertainty back to the image's own size and writes `<stem>_depth.npy`,
`<stem>_uncertainty.npy` (float32 `[h, w]`) and `<stem>_panel.png` (image | depth |
uncertainty with colour bars) into `--out`, one line per image. Depth is in metres for
metric and supervised models, metres via the stereo scale (×5.4 for KITTI's rig) for
stereo-trained ones, and in the model's own units (no metric scale) for monocular ones.

Long runs: images are read, predicted and written one batch at a time (memory does not
grow with the number of images), a progress bar goes to stderr from `PROGRESS_MIN`
images on, every output file is written under a temporary name and renamed, and
`--skip-existing` skips the images whose outputs (`output_names`) all exist, so a run
that was stopped resumes where it stopped — with the same batches (and noise) as an
uninterrupted run, so the same outputs. `--out` is probed for writing before the
checkpoint is loaded.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import time
from pathlib import Path

from jaxdepth.cli import options
from jaxdepth.cli.errors import CLIError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
PROGRESS_MIN = 6  # a progress bar from this many images on


def _method_names():
    from jaxdepth.uncertainty.methods import ALIASES, METHODS
    return {**{k: m.help for k, m in METHODS.items()},
            **{k: f"= {v}" for k, v in ALIASES.items()}}


def _segmentation_names():
    from jaxdepth.uncertainty.segmentation import SEGMENTATION_METHODS
    return {k: m.help for k, m in SEGMENTATION_METHODS.items()}


def add_parser(sub) -> None:
    names, seg = _method_names(), _segmentation_names()
    pr = sub.add_parser(
        "predict", help="depth (or classes) and uncertainty for your own images",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Methods of depth checkpoints (default grad):\n"
        + "\n".join(f"  {k:10s} {v}" for k, v in names.items())
        + "\n\nMethods of segmentation checkpoints (default pgn):\n"
        + "\n".join(f"  {k:16s} {v}" for k, v in seg.items()))
    pr.add_argument("images", nargs="*", metavar="IMAGE",
                    help="image files, directories (their images) or glob patterns")
    pr.add_argument("--checkpoint", type=Path, required=True,
                    help="a jaxdepth checkpoint directory (an export, a `jaxdepth train "
                         "--out` directory or a trainer's run directory)")
    pr.add_argument("--method", default=None, choices=list(dict.fromkeys([*names, *seg])),
                    help="the uncertainty method (default: grad, or pgn for segmentation)")
    pr.add_argument("--out", type=Path, default=Path("predictions"), help="output directory")
    options.add_method_arguments(pr)
    pr.add_argument("--space", choices=["disp", "depth"], default=None,
                    help="post/var/in_drop/drop/boot: spread of disparity or depth "
                         "(default: depth for metric models, else disp)")
    pr.add_argument("--sigma-to-depth", dest="to_depth", action="store_true", default=None,
                    help="predictive: propagate a disparity σ to depth (default for "
                         "Self / SUB-Depth models)")
    pr.add_argument("--bayesian", action="store_true", help="boot: add Σ σ² of log σ members")
    pr.add_argument("--member", type=int, default=0,
                    help="ensemble checkpoints, methods other than boot: which member (0)")
    pr.add_argument("--batch-size", type=int, default=4, help="images per call (4)")
    pr.add_argument("--seed", type=int, default=0, help="noise/dropout seed")
    pr.add_argument("--no-panel", action="store_true", help="do not write the PNG panels")
    pr.add_argument("--skip-existing", action="store_true",
                    help="skip images whose outputs (depth, uncertainty, bounds, panel unless "
                         "--no-panel) are all in --out already: resume a stopped run")
    pr.add_argument("--calibration", type=Path, default=None, metavar="FILE",
                    help="a `jaxdepth calibrate` file of this checkpoint and method: also "
                         "write <stem>_bound<level>.npy, the error bound in metres")
    pr.add_argument("--levels", type=float, nargs="+", default=None,
                    help="--calibration: the levels to write (default: every level of the "
                         "file; the panel shows 0.9 if written, else the highest)")
    pr.add_argument("--label", default="onehot", choices=("onehot", "uniform"),
                    help="pgn: auxiliary label (onehot)")
    pr.add_argument("--p", type=float, default=0.5, help="pgn: exponent of the p-norm (0.5)")
    pr.add_argument("--pgn-mode", default="exact", choices=("exact", "reference"),
                    help="pgn: the exact cross-entropy gradient, or the published code's weights")


def collect_images(specs) -> list[Path]:
    """Files, directories (their image files, sorted) and glob patterns → paths."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found += sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        elif any(c in spec for c in "*?["):
            found += sorted(Path(p) for p in glob.glob(spec, recursive=True)
                            if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        else:
            raise CLIError(f"{spec}: no such file or directory")
    seen, unique = set(), []
    for p in found:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    if not unique:
        raise CLIError(f"no images matched {' '.join(specs)} (extensions: "
                       f"{', '.join(IMAGE_EXTENSIONS)})")
    return unique


def _stems(paths) -> list[str]:
    """Output stems, unique: a repeated stem gets `_1`, `_2`, …"""
    count, out = {}, []
    for p in paths:
        stem = p.stem
        n = count.get(stem, 0)
        count[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}_{n}")
    return out


def _resize_map(x, h: int, w: int):
    """Bilinear resize of a float `[H, W]` map (PIL, float32) to `[h, w]`."""
    import numpy as np
    from PIL import Image
    if x.shape == (h, w):
        return x.astype(np.float32)
    return np.asarray(Image.fromarray(np.ascontiguousarray(x, np.float32)).resize(
        (w, h), Image.Resampling.BILINEAR), np.float32)


def image_batches(paths, batch_size: int, width: int, height: int, resample, skip=()):
    """`(indices, originals, batch)` per chunk of `paths`, read lazily (one chunk in
    memory at a time): the images as read (uint8 `[h, w, 3]`) and resized to
    `width × height` with PIL's `resample`, in [0, 1], `[batch_size, height, width, 3]`
    (the last chunk padded by repeating its last image, so every call has one compiled
    shape). Chunks whose indices are all in `skip` are not read; the chunks are the same
    whatever `skip` is."""
    import numpy as np
    from PIL import Image

    skip = set(skip)
    for start in range(0, len(paths), batch_size):
        chunk = list(range(start, min(start + batch_size, len(paths))))
        if all(i in skip for i in chunk):
            continue
        originals, batch = [], []
        for i in chunk:
            try:
                img = Image.open(paths[i]).convert("RGB")
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                # OSError: truncated / unidentified; PIL's plugins also raise ValueError
                # (a truncated IHDR chunk) and SyntaxError (broken chunks)
                raise CLIError(f"{paths[i]}: cannot read image ({e})") from None
            originals.append(np.asarray(img))
            batch.append(np.asarray(img.resize((width, height), resample), np.float32) / 255.0)
        batch += [batch[-1]] * (batch_size - len(batch))
        yield chunk, originals, np.clip(np.stack(batch), 0.0, 1.0)


def output_names(stem: str, levels=(), panel: bool = True) -> list[str]:
    """The files `jaxdepth predict` writes for one image of output stem `stem`; with
    `--skip-existing` an image is done when all of them exist."""
    return ([f"{stem}_depth.npy", f"{stem}_uncertainty.npy"]
            + [f"{stem}_bound{lvl:g}.npy" for lvl in levels]
            + ([f"{stem}_panel.png"] if panel else []))


def _partial(path: Path) -> Path:
    """The temporary name an output is written under before it is renamed into place
    (hidden, and not ending as any output does)."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def save_npy(path, array) -> None:
    """`np.save` under a temporary name, then renamed: a killed run leaves no truncated
    output."""
    import numpy as np
    path = Path(path)
    tmp = _partial(path)
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def _split_taps(args):
    """`--taps dec6 dec8 img.png` swallows the image: give such paths back to IMAGE,
    and accept comma-separated taps."""
    taps, moved = [], []
    for item in args.taps:
        if not re.fullmatch(r"\w*(,\w*)*", item) or Path(item).exists():
            moved.append(item)
        else:
            taps += [t for t in item.split(",") if t]
    args.taps, args.images = taps or ["dec6"], moved + list(args.images)


def depth_scale(meta) -> tuple[float, str]:
    """The factor that turns a checkpoint's depth into metres, and the depth's unit."""
    if meta.get("scaling") == "median":
        return 1.0, "depth [model units: monocular, no metric scale]"
    if meta.get("scaling") == "stereo" or meta.get("use_stereo"):
        factor = float(meta.get("stereo_scale") or 5.4)
        return factor, f"depth [m] (stereo scale ×{factor:g})"
    return 1.0, "depth [m]"


def uncertainty_label(key: str, opts, info, scale: float) -> str:
    """What a method's map measures, for the colour bar."""
    space = opts.space or ("depth" if info.metric else "disp")
    spread = "depth [m]" if space == "depth" else "disparity [1/model units]"
    if key == "grad":
        return "gradient uncertainty (per-image min-max, 0-1)"
    if key in ("var", "in_drop"):
        return f"variance of {space} (per-image min-max, 0-1)"
    if key == "post":
        return f"|Δ {spread}| (flip)"
    if key in ("mc_drop", "ensemble"):
        return f"variance of {spread}" + ("²" if space == "depth" else "")
    to_depth = opts.to_depth if opts.to_depth is not None else info.sigma_space == "disp"
    if to_depth:
        return "σ of depth [m]" if scale != 1.0 or info.metric else "σ of depth [model units]"
    return {"disp": "σ of sigmoid disparity", "log_depth": "σ of log depth",
            "depth": "σ of depth [m]", "photometric": "σ of the photometric error"}.get(
                info.sigma_space, "σ = exp(log σ)")


def _make_method(args, model, variables, meta):
    """`(fn images [B,H,W,3] → Estimate, method key, options, model info)`."""
    import dataclasses

    import jax

    from jaxdepth.uncertainty import methods as M

    key = M.canonical(args.method)
    ensemble = isinstance(variables, list)
    if ensemble and key != "ensemble":
        if not 0 <= args.member < len(variables):
            raise CLIError(f"--member {args.member}: the ensemble has {len(variables)} members")
        print(f"note: {args.checkpoint} is an ensemble of {len(variables)}; --method "
              f"{args.method} uses member {args.member} (--method boot uses all)",
              file=sys.stderr)
        variables = variables[args.member]
    info = M.ModelInfo.of(model, variables, meta)
    opts = options.method_options(args)
    opts = dataclasses.replace(opts, to_depth=args.to_depth)
    if key == "grad":
        model, opts = _grad_taps(model, opts)
    reason = M.unsupported(key, info, opts)
    if reason:
        offered = ", ".join(M.supported_methods(info))
        raise CLIError(f"--method {args.method} {reason}; {args.checkpoint} offers: {offered}")
    rng = jax.random.PRNGKey(args.seed)
    fn = M.method(key, model.apply, variables, opts, info=info)
    return (lambda x: fn(x, rng)), key, opts, info


def _grad_taps(model, opts):
    """Check `--taps` against the model's tap names; the default (`dec6`, Monodepth2's)
    becomes the model's own `default_tap` (MonoViT: `X_13_Conv_0`); a DepthNet asked for
    an encoder tap (`enc0`…`enc4`) is cloned with `encoder_taps=True`."""
    from jaxdepth.models import TAPS
    from jaxdepth.uncertainty.methods import for_model
    names = tuple(getattr(model, "tap_names", TAPS))
    opts = for_model(opts, model)
    bad = [t for t in opts.taps if t not in names]
    if bad:
        raise CLIError(f"unknown tap(s) {bad}; choose from {', '.join(names)}")
    if hasattr(model, "encoder_taps") and not model.encoder_taps and any(
            t.startswith("enc") for t in opts.taps):
        model = model.clone(encoder_taps=True)
    return model, opts


def _calibration(args, meta, variables, key, opts, info):
    """`(Calibration | None, levels)` of `--calibration`, checked against this checkpoint
    and method (`jaxdepth.calibration.signatures`, as `jaxdepth calibrate` recorded them)."""
    if args.calibration is None:
        if args.levels:
            raise CLIError("--levels needs --calibration FILE")
        return None, ()
    from jaxdepth.calibration import Calibration, signatures
    try:
        cal = Calibration.load(args.calibration)
        m_sig, mod_sig = signatures(meta, variables, key, opts, info, member=args.member)
        cal.check(method=m_sig, model=mod_sig)
    except (OSError, ValueError) as e:
        raise CLIError(f"--calibration {args.calibration}: {e}") from None
    levels = tuple(cal.levels) if args.levels is None else tuple(args.levels)
    missing = [lvl for lvl in levels if not any(abs(lvl - c) < 1e-9 for c in cal.levels)]
    if missing:
        raise CLIError(f"--levels {missing}: not calibrated in {args.calibration} (levels "
                       f"{', '.join(f'{c:g}' for c in cal.levels)})")
    return cal, levels


def run(args) -> int:
    _split_taps(args)
    if not args.images:
        raise CLIError("no IMAGE given (files, directories or glob patterns)")
    if args.batch_size < 1:
        raise CLIError("--batch-size must be at least 1")
    if args.samples < 2 and args.method in ("in_drop", "drop", "mc_drop", "mc_dropout"):
        raise CLIError("--samples must be at least 2")
    paths = collect_images(args.images)
    if not args.checkpoint.exists():
        raise CLIError(f"checkpoint directory {args.checkpoint} does not exist")
    from jaxdepth.train.checkpoint import OutputNotWritable, probe_writable
    try:
        probe_writable(args.out, 1 << 20, "--out")
    except OutputNotWritable as e:
        raise CLIError(str(e)) from None

    import numpy as np
    from PIL import Image
    from tqdm.auto import tqdm

    from jaxdepth.export import load_checkpoint
    from jaxdepth.viz import save_prediction_panel
    try:
        model, variables, meta = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
    if meta.get("task") == "segmentation":
        if args.skip_existing:
            raise CLIError("--skip-existing applies to depth checkpoints; "
                           f"{args.checkpoint} is a segmentation model")
        from jaxdepth.cli import predict_segmentation
        return predict_segmentation.run(args, paths, model, variables, meta)
    if args.method is None:
        args.method = "grad"
    elif args.method not in _method_names():
        raise CLIError(f"--method {args.method} is a segmentation method; {args.checkpoint} "
                       "is a depth model")
    channels = int(getattr(model, "in_channels", 3))
    if channels != 3:
        raise CLIError(f"{args.checkpoint} is a model of {channels} input channels (an "
                       "ADU-Depth stereo teacher takes left ‖ right); jaxdepth predict reads "
                       "single RGB images: predict with a monocular model (e.g. the "
                       "adu-student run distilled from it)")
    height, width = int(meta["height"]), int(meta["width"])
    run_fn, key, opts, info = _make_method(args, model, variables, meta)
    cal, levels = _calibration(args, meta, variables, key, opts, info)
    scale, depth_label = depth_scale(meta)
    unc_label = uncertainty_label(key, opts, info, scale)
    args.out.mkdir(parents=True, exist_ok=True)
    stems = _stems(paths)
    done = set()
    if args.skip_existing:
        done = {i for i, st in enumerate(stems)
                if all((args.out / n).is_file() for n in output_names(st, levels, not args.no_panel))}
        if done:
            print(f"--skip-existing: {len(done)} of {len(paths)} images have their outputs in "
                  f"{args.out} already", file=sys.stderr)
    bar = tqdm(total=len(paths), initial=len(done), desc=f"predict ({args.method})",
               unit="img", disable=len(paths) < PROGRESS_MIN, file=sys.stderr,
               dynamic_ncols=True)
    say = tqdm.write if not bar.disable else print
    t0 = time.perf_counter()
    for chunk, originals, batch in image_batches(paths, args.batch_size, width, height,
                                                 Image.Resampling.LANCZOS, skip=done):
        est = run_fn(batch)
        depth, unc = np.asarray(est.depth)[..., 0], np.asarray(est.uncertainty)[..., 0]
        del est
        for k, i in enumerate(chunk):
            if i in done:  # a chunk is predicted whole, so its noise is an uninterrupted run's
                continue
            h, w = originals[k].shape[:2]
            with np.errstate(divide="ignore"):
                disp = _resize_map(1.0 / depth[k], h, w)
                d = (scale / disp).astype(np.float32)
            u = _resize_map(unc[k], h, w)
            stem = args.out / stems[i]
            save_npy(f"{stem}_depth.npy", d)
            save_npy(f"{stem}_uncertainty.npy", u)
            bounds = {lvl: cal.error_bound(u, lvl, depth=d if cal.relative else None)
                      .astype(np.float32) for lvl in levels}
            for lvl, b in bounds.items():
                save_npy(f"{stem}_bound{lvl:g}.npy", b)
            if not args.no_panel:
                shown = 0.9 if 0.9 in bounds else max(bounds, default=None)
                panel = Path(f"{stem}_panel.png")
                with np.errstate(divide="ignore", invalid="ignore"):
                    save_prediction_panel(
                        _partial(panel), originals[k], d, u, depth_label=depth_label,
                        uncertainty_label=f"{args.method}: {unc_label}",
                        bound=None if shown is None else bounds[shown],
                        bound_label=f"error bound at {shown:g} [m]" if shown else "")
                os.replace(_partial(panel), panel)
            say(f"{paths[i]}: {w}x{h}, depth {np.nanmin(d):.3g}-{np.nanmax(d):.3g} "
                f"(median {np.nanmedian(d):.3g}), mean uncertainty {np.nanmean(u):.3g} "
                f"-> {stem}_{{depth,uncertainty}}.npy")
            bar.update(1)
    bar.close()
    if len(paths) >= PROGRESS_MIN:
        wall = time.perf_counter() - t0
        print(f"{len(paths) - len(done)} images in {wall:.1f} s ({args.method})"
              + (f", {len(done)} skipped (--skip-existing)" if done else "")
              + f", outputs in {args.out}")
    return 0
