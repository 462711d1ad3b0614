"""The `jaxdepth` command.

    jaxdepth convert monodepth2 --encoder encoder.pth --depth depth.pth --out DIR
                                [--pose-encoder pose_encoder.pth --pose pose.pth]
    jaxdepth convert monodepth2 --folder FOLDER --out DIR [--weights weights_19]
                                [--snapshots 12-19]
    jaxdepth predict --checkpoint DIR [--method grad] [--taps dec6 ...] IMAGE|DIR|GLOB ...

`convert monodepth2` turns released Monodepth2-format PyTorch weights into a jaxdepth
checkpoint (see `jaxdepth.convert.monodepth2` for the variants and the format); a
`--folder` is one model (with its pose network if `pose_encoder.pth` and `pose.pth` are
there) or N of them (`boot_*/weights_19/`, or `--snapshots`), saved as an ensemble.

`predict` resizes every image to the checkpoint's training resolution, runs the chosen
uncertainty method, brings depth (through disparity, bilinear) and uncertainty back to
the image's own size and writes `<stem>_depth.npy`, `<stem>_uncertainty.npy` (float32
`[h, w]`) and `<stem>_panel.png` (image | depth shown as 1/depth | uncertainty) into
`--out`, printing one line per image.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import sys
import time
from pathlib import Path

from jaxdepth import runtime

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
METHODS = {
    "grad": "gradient uncertainty (Hornauer & Belagiannis): --taps, --reference, --reduce",
    "post": "|d - flip(d_flip)| and Monodepth post-processed depth",
    "var": "variance over flip/gray/noise/rotation test-time augmentations",
    "in_drop": "inference-only channel dropout (--samples, --dropout)",
    "drop": "MC dropout of a model trained with dropout (--samples)",
    "log": "the model's own sigma = exp(log_sigma) (uncertconv/Log/Self models)",
    "boot": "mean and variance over an ensemble checkpoint (Boot/Snap)",
}
PROGRESS_MIN = 6  # a progress bar from this many images on


class CLIError(Exception):
    """A user error: printed as `jaxdepth: error: ...`, exit status 2."""


# --------------------------------------------------------------------------- parser

def _snapshots(text: str) -> list[int]:
    """`12-19` or `12,14,19` → list of ints."""
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return list(range(int(lo), int(hi) + 1))
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'A-B' or 'A,B,...', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jaxdepth", description=(
        "Post hoc gradient-based uncertainty for monocular depth networks."))
    sub = p.add_subparsers(dest="command", required=True, metavar="{convert,predict}")

    conv = sub.add_parser("convert", help="convert PyTorch weights into a jaxdepth checkpoint")
    conv_sub = conv.add_subparsers(dest="format", required=True, metavar="{monodepth2}")
    m = conv_sub.add_parser(
        "monodepth2", help="Monodepth2-format encoder.pth + depth.pth (plain, uncertconv, NYU metric)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Convert Monodepth2-format weights (Monodepth2; Poggi et al.'s uncertconv Log/Self\n"
            "models; GrUMoDepth's NYU metric decoder). The variant is read from the state dict;\n"
            "metric vs. sigmoid disparity cannot be, so give --metric or --disparity (without\n"
            "either, a file or folder named with NYU as a word, e.g. nyu_resnet18/, means\n"
            "metric). Needs torch to read .pth files (read with weights_only=True: a file\n"
            "cannot run code)."))
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--encoder", type=Path, help="encoder.pth")
    src.add_argument("--folder", type=Path, help="a model folder, or one with boot_*/weights_19/ "
                     "members (an ensemble), or a run's folder with --snapshots")
    m.add_argument("--depth", type=Path, help="depth.pth (with --encoder)")
    m.add_argument("--pose-encoder", type=Path, help="pose_encoder.pth (optional, with --pose)")
    m.add_argument("--pose", type=Path, help="pose.pth (optional)")
    m.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    m.add_argument("--weights", default="weights_19",
                   help="with --folder: the weights subfolder of each member (default weights_19)")
    m.add_argument("--snapshots", type=_snapshots, metavar="A-B",
                   help="with --folder: convert weights_A..weights_B of one run as an ensemble (Snap)")
    m.add_argument("--no-pose", action="store_true", help="with --folder: skip pose files")
    kind = m.add_mutually_exclusive_group()
    kind.add_argument("--metric", dest="metric", action="store_true", default=None,
                      help="heads output metric depth, no sigmoid (NYU supervised models)")
    kind.add_argument("--disparity", dest="metric", action="store_false",
                      help="heads output sigmoid disparity (Monodepth2, KITTI)")
    m.add_argument("--height", type=int, help="training height, if the encoder file stores none")
    m.add_argument("--width", type=int, help="training width, if the encoder file stores none")
    m.add_argument("--min-depth", type=float, default=0.1, help="disp_to_depth minimum (0.1)")
    m.add_argument("--max-depth", type=float, default=100.0, help="disp_to_depth maximum (100)")
    m.add_argument("--overwrite", action="store_true", help="replace a checkpoint at --out")

    pr = sub.add_parser(
        "predict", help="depth and uncertainty for your own images",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Methods:\n" + "\n".join(f"  {k:8s} {v}" for k, v in METHODS.items()))
    pr.add_argument("images", nargs="*", metavar="IMAGE",
                    help="image files, directories (their images) or glob patterns")
    pr.add_argument("--checkpoint", type=Path, required=True,
                    help="a jaxdepth checkpoint directory (or a jaxdepth trainer's)")
    pr.add_argument("--method", default="grad", choices=list(METHODS))
    pr.add_argument("--out", type=Path, default=Path("predictions"), help="output directory")
    pr.add_argument("--taps", nargs="+", default=["dec6"],
                    help="grad: decoder taps dec0..dec10, space- or comma-separated (dec6)")
    pr.add_argument("--reference", default="flip", choices=["flip", "gray", "noise", "rot", "var"],
                    help="grad: reference prediction (flip)")
    pr.add_argument("--reduce", default="max", choices=["max", "sum", "mean", "norm"],
                    help="grad: channel reduction (max)")
    pr.add_argument("--aggregate", default="std", choices=["std", "mean", "max"],
                    help="grad: combination of several taps (std)")
    pr.add_argument("--upsample", default="bilinear", choices=["bilinear", "nearest"],
                    help="grad: resizing of the maps (bilinear)")
    pr.add_argument("--variance-weight", type=float, default=None,
                    help="grad: λ of the σ² term (default 2.0 for log σ models, else 0)")
    pr.add_argument("--samples", type=int, default=8, help="in_drop/drop: passes (8)")
    pr.add_argument("--dropout", type=float, default=0.2, help="in_drop: dropout rate (0.2)")
    pr.add_argument("--space", choices=["disp", "depth"], default=None,
                    help="post/var/in_drop/drop/boot: spread of disparity or depth "
                         "(default: depth for metric models, else disp)")
    pr.add_argument("--bayesian", action="store_true", help="boot: add Σ σ² of log σ members")
    pr.add_argument("--member", type=int, default=0,
                    help="ensemble checkpoints, methods other than boot: which member (0)")
    pr.add_argument("--batch-size", type=int, default=4, help="images per call (4)")
    pr.add_argument("--seed", type=int, default=0, help="noise/dropout seed")
    pr.add_argument("--no-panel", action="store_true", help="do not write the PNG panels")
    return p


# --------------------------------------------------------------------------- convert

def _convert(args) -> int:
    from jaxdepth.convert import convert_monodepth2, convert_monodepth2_folder, load_checkpoint
    common = dict(metric=args.metric, height=args.height, width=args.width,
                  min_depth=args.min_depth, max_depth=args.max_depth, overwrite=args.overwrite)
    if args.encoder is not None:
        if args.depth is None:
            raise CLIError("--encoder needs --depth")
        if (args.pose_encoder is None) != (args.pose is None):
            raise CLIError("give both --pose-encoder and --pose, or neither")
        if args.snapshots:
            raise CLIError("--snapshots goes with --folder")
        out = convert_monodepth2(args.encoder, args.depth, args.out, args.pose_encoder,
                                 args.pose, **common)
    else:
        if args.depth is not None or args.pose is not None or args.pose_encoder is not None:
            raise CLIError("--depth/--pose/--pose-encoder go with --encoder, not --folder")
        out = convert_monodepth2_folder(args.folder, args.out, weights=args.weights,
                                        snapshots=args.snapshots, pose=not args.no_pose, **common)
    import json
    meta = json.loads((Path(out) / "meta.json").read_text())
    members = meta["ensemble"]["members"] if meta["ensemble"] else 1
    m = meta["model"]
    print(f"wrote {out}")
    print(f"  model:  ResNet-{m['num_layers']} encoder, {meta['variant']} decoder"
          + (" (log σ heads)" if meta["variant"] == "uncertconv" else "")
          + f", input {meta['height']}x{meta['width']}, use_stereo={meta['use_stereo']}")
    print(f"  output: {'metric depth' if meta['metric'] else 'sigmoid disparity'} "
          f"[{meta['metric_source']}]")
    if members > 1:
        print(f"  ensemble of {members}: {', '.join(meta['ensemble']['names'])}")
    if meta["pose"]:
        print(f"  pose network: ResNet-{meta['pose']['num_layers']}, "
              f"{meta['pose']['num_input_images']} input images")
    load_checkpoint(out)  # read back once: the checkpoint is usable
    return 0


# --------------------------------------------------------------------------- predict

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


def _make_method(args, model, variables, meta):
    """A function `images [B,H,W,3] → Estimate` for the chosen method."""
    import jax
    from jaxdepth import uncertainty as U

    ensemble = isinstance(variables, list)
    space = args.space or ("depth" if meta.get("metric") else "disp")
    key = jax.random.PRNGKey(args.seed)
    if args.method == "boot":
        if not ensemble:
            raise CLIError(f"--method boot needs an ensemble checkpoint (convert a folder of "
                           f"boot_*/ models); {args.checkpoint} holds one model")
        return lambda x: U.ensemble(model.apply, variables, x, space=space, bayesian=args.bayesian)
    if ensemble:
        if not 0 <= args.member < len(variables):
            raise CLIError(f"--member {args.member}: the ensemble has {len(variables)} members")
        print(f"note: {args.checkpoint} is an ensemble of {len(variables)}; --method {args.method} "
              f"uses member {args.member} (--method boot uses all)", file=sys.stderr)
        variables = variables[args.member]
    if args.method in ("log",) or (args.method == "grad" and (args.variance_weight or 0) > 0):
        if not model.log_sigma:
            raise CLIError(f"--method {args.method}"
                           + (" with --variance-weight" if args.method == "grad" else "")
                           + f" needs a model with a log σ head; {args.checkpoint} is a "
                           f"{meta.get('variant', 'plain')} model")
    if args.method == "grad":
        from jaxdepth.models import TAPS
        bad = [t for t in args.taps if t not in TAPS]
        if bad:
            raise CLIError(f"unknown tap(s) {bad}; choose from {', '.join(TAPS)}")
        vw = args.variance_weight
        vw = (2.0 if model.log_sigma else 0.0) if vw is None else vw
        return lambda x: U.gradient_uncertainty(
            model.apply, variables, x, taps=tuple(args.taps), reference=args.reference,
            reduce=args.reduce, aggregate=args.aggregate, variance_weight=vw,
            upsample=args.upsample, rng=key)
    if args.method == "post":
        return lambda x: U.post(model.apply, variables, x, space=space)
    if args.method == "var":
        return lambda x: U.var(model.apply, variables, x, rng=key, space=space)
    if args.method == "in_drop":
        return lambda x: U.in_drop(model.apply, variables, x, rng=key, n=args.samples,
                                   p=args.dropout, space=space)
    if args.method == "drop":
        return lambda x: U.mc_drop(model.apply, variables, x, rng=key, n=args.samples, space=space)
    if args.method == "log":
        return lambda x: U.predictive(model.apply, variables, x)
    raise CLIError(f"unknown method {args.method!r}")  # pragma: no cover - argparse checks


def _split_taps(args):
    """`--taps dec6 dec8 img.png` swallows the image: give such paths back to IMAGE,
    and accept comma-separated taps."""
    taps, moved = [], []
    for item in args.taps:
        if not re.fullmatch(r"[A-Za-z_]*\d*(,[A-Za-z_]*\d*)*", item) or Path(item).exists():
            moved.append(item)
        else:
            taps += [t for t in item.split(",") if t]
    args.taps, args.images = taps or ["dec6"], moved + list(args.images)


def _predict(args) -> int:
    _split_taps(args)
    if not args.images:
        raise CLIError("no IMAGE given (files, directories or glob patterns)")
    if args.batch_size < 1:
        raise CLIError("--batch-size must be at least 1")
    if args.samples < 2 and args.method in ("in_drop", "drop"):
        raise CLIError("--samples must be at least 2")
    paths = collect_images(args.images)
    if not args.checkpoint.exists():
        raise CLIError(f"checkpoint directory {args.checkpoint} does not exist")

    import numpy as np
    from PIL import Image
    from tqdm.auto import tqdm

    from jaxdepth.convert import load_checkpoint
    from jaxdepth.viz import colorize, save_panel
    try:
        model, variables, meta = load_checkpoint(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
    height, width = int(meta["height"]), int(meta["width"])
    run = _make_method(args, model, variables, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    stems = _stems(paths)
    bar = tqdm(total=len(paths), desc=f"predict ({args.method})", unit="img",
               disable=len(paths) < PROGRESS_MIN, file=sys.stderr, dynamic_ncols=True)
    say = tqdm.write if not bar.disable else print
    t0 = time.perf_counter()
    for start in range(0, len(paths), args.batch_size):
        chunk = list(range(start, min(start + args.batch_size, len(paths))))
        originals, batch = [], []
        for i in chunk:
            try:
                img = Image.open(paths[i]).convert("RGB")
            except OSError as e:
                raise CLIError(f"{paths[i]}: cannot read image ({e})") from None
            originals.append(np.asarray(img))
            batch.append(np.asarray(img.resize((width, height), Image.Resampling.LANCZOS),
                                    np.float32) / 255.0)
        while len(batch) < args.batch_size:  # one compiled shape for every call
            batch.append(batch[-1])
        est = run(np.clip(np.stack(batch), 0.0, 1.0))
        depth, unc = np.asarray(est.depth)[..., 0], np.asarray(est.uncertainty)[..., 0]
        for k, i in enumerate(chunk):
            h, w = originals[k].shape[:2]
            with np.errstate(divide="ignore"):
                disp = _resize_map(1.0 / depth[k], h, w)
                d = (1.0 / disp).astype(np.float32)
            u = _resize_map(unc[k], h, w)
            stem = args.out / stems[i]
            np.save(f"{stem}_depth.npy", d)
            np.save(f"{stem}_uncertainty.npy", u)
            if not args.no_panel:
                with np.errstate(divide="ignore", invalid="ignore"):
                    save_panel(f"{stem}_panel.png",
                               [originals[k], colorize(1.0 / d, "magma"), colorize(u, "hot")],
                               titles=["image", "depth (shown as 1/depth)",
                                       f"uncertainty ({args.method})"], ncols=3)
            say(f"{paths[i]}: {w}x{h}, depth {np.nanmin(d):.3g}-{np.nanmax(d):.3g} "
                f"(median {np.nanmedian(d):.3g}), mean uncertainty {np.nanmean(u):.3g} "
                f"-> {stem}_{{depth,uncertainty}}.npy")
            bar.update(1)
    bar.close()
    if len(paths) >= PROGRESS_MIN:
        wall = time.perf_counter() - t0
        print(f"{len(paths)} images in {wall:.1f} s ({args.method}), outputs in {args.out}")
    return 0


# --------------------------------------------------------------------------- entry point

def main(argv=None) -> int:
    """Run the `jaxdepth` command; returns the exit status (0 ok, 2 usage or input error)."""
    runtime.configure_cpu()  # before JAX starts
    args = build_parser().parse_args(argv)
    try:
        if args.command == "convert":
            return _convert(args)
        return _predict(args)
    except CLIError as e:
        print(f"jaxdepth: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        # ConversionError is a ValueError: wrong files, missing keys, shape mismatches
        print(f"jaxdepth: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
