"""`jaxdepth convert monodepth2 ...`: released Monodepth2-format PyTorch weights → a
jaxdepth checkpoint (`jaxdepth.convert.monodepth2`; written through `jaxdepth.export`).
`jaxdepth convert deeplabv3 --weights FILE.pth --out DIR`: a torchvision DeepLabV3 state
dict → a segmentation checkpoint (`jaxdepth.convert.deeplabv3`).
`jaxdepth convert monovit --encoder encoder.pth --depth depth.pth --out DIR`: released MonoViT
weights → a MonoViT checkpoint (`jaxdepth.convert.monovit`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from jaxdepth.cli.errors import CLIError


def _snapshots(text: str) -> list[int]:
    """`12-19` or `12,14,19` → list of ints."""
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            return list(range(int(lo), int(hi) + 1))
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'A-B' or 'A,B,...', got {text!r}") from None


def _add_depth_head_arguments(parser) -> None:
    """The flags of a converted depth network's input size and disparity range (the
    Monodepth2 and MonoViT converters)."""
    parser.add_argument("--height", type=int,
                        help="training height, if the encoder file stores none")
    parser.add_argument("--width", type=int, help="training width, if the encoder file stores none")
    parser.add_argument("--min-depth", type=float, default=0.1, help="disp_to_depth minimum (0.1)")
    parser.add_argument("--max-depth", type=float, default=100.0,
                        help="disp_to_depth maximum (100)")
    parser.add_argument("--overwrite", action="store_true", help="replace a checkpoint at --out")


def add_parser(sub) -> None:
    conv = sub.add_parser("convert", help="convert PyTorch weights into a jaxdepth checkpoint")
    conv_sub = conv.add_subparsers(dest="format", required=True,
                                   metavar="{monodepth2,deeplabv3,monovit}")
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
    _add_depth_head_arguments(m)
    _add_deeplabv3_parser(conv_sub)
    _add_monovit_parser(conv_sub)


def _class_names(text: str):
    """`voc` or `a,b,c` → what `convert_deeplabv3(class_names=...)` takes."""
    if text.strip().lower() == "voc":
        return "voc"
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected 'voc' or comma-separated names, got {text!r}")
    return names


# = sorted(jaxdepth.models.segmentation.V3_BACKBONES), spelled out so that `--help` imports no Flax
_DEEPLABV3_BACKBONES = ("mobilenet_v3_large", "resnet101", "resnet50")


def _add_deeplabv3_parser(conv_sub) -> None:
    d = conv_sub.add_parser(
        "deeplabv3", help="torchvision DeepLabV3 state dict (ResNet-50/101, MobileNetV3-Large)",
        description=(
            "Convert the state dict of torchvision's deeplabv3_resnet50 / _resnet101 /\n"
            "_mobilenet_v3_large (with or without aux head) into a jaxdepth segmentation\n"
            "checkpoint. Backbone and class count are read from the keys. Needs torch to\n"
            "read the file (weights_only=True: a file cannot run code)."),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--weights", type=Path, required=True, help="the .pth state dict")
    d.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    d.add_argument("--backbone", choices=_DEEPLABV3_BACKBONES,
                   help="expected backbone (default: read from the keys)")
    d.add_argument("--num-classes", type=int, help="expected class count (default: from the keys)")
    d.add_argument("--class-names", type=_class_names, metavar="voc|A,B,...",
                   help="class names to record: 'voc' (torchvision's released weights) or a "
                        "comma-separated list")
    d.add_argument("--height", type=int, default=520, help="input height to record (520)")
    d.add_argument("--width", type=int, default=520, help="input width to record (520)")
    d.add_argument("--overwrite", action="store_true", help="replace a checkpoint at --out")


def _run_deeplabv3(args) -> int:
    from jaxdepth.convert import convert_deeplabv3
    out = convert_deeplabv3(args.weights, args.out, backbone=args.backbone,
                            num_classes=args.num_classes, class_names=args.class_names,
                            height=args.height, width=args.width, overwrite=args.overwrite)
    meta = json.loads((Path(out) / "meta.json").read_text())
    m = meta["model"]
    print(f"wrote {out}: DeepLabV3 {m['backbone']}, {m['num_classes']} classes"
          + (" + aux head" if m["aux"] else "") + f", input {meta['height']}x{meta['width']}")
    return 0


# = sorted(jaxdepth.models.monovit.SIZES), spelled out so that `--help` imports no Flax
_MONOVIT_SIZES = ("mpvit_tiny", "small", "tiny", "xsmall")


def _add_monovit_parser(conv_sub) -> None:
    v = conv_sub.add_parser(
        "monovit", help="MonoViT encoder.pth + depth.pth (MPViT encoder, HR-Depth decoder)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Convert the released MonoViT weights (zxcqlf/MonoViT: an MPViT-small encoder and\n"
            "the HR-Depth decoder) into a jaxdepth MonoViT checkpoint. The size is read from the\n"
            "tensor shapes (the released files: small); duplicated tensors are checked to be\n"
            "equal. Needs torch to read .pth files (weights_only=True: a file cannot run code)."))
    v.add_argument("--encoder", type=Path, required=True, help="encoder.pth")
    v.add_argument("--depth", type=Path, required=True, help="depth.pth")
    v.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    v.add_argument("--size", choices=_MONOVIT_SIZES,
                   help="model size (default: read from the shapes)")
    v.add_argument("--model-width", type=float,
                   help="channel multiplier of the size (default: read from the shapes)")
    _add_depth_head_arguments(v)


def _run_monovit(args) -> int:
    from jaxdepth.convert.monovit import convert_monovit
    from jaxdepth.export import load_checkpoint
    out = convert_monovit(args.encoder, args.depth, args.out, size=args.size,
                          model_width=args.model_width, height=args.height, width=args.width,
                          min_depth=args.min_depth, max_depth=args.max_depth,
                          overwrite=args.overwrite)
    meta = json.loads((Path(out) / "meta.json").read_text())
    m = meta["model"]
    print(f"wrote {out}: MonoViT {m['size']} (width {m['width']:g}), {meta['variant']} decoder"
          f", input {meta['height']}x{meta['width']}, use_stereo={meta['use_stereo']}")
    load_checkpoint(out)  # read back once: the checkpoint is usable
    return 0


def run(args) -> int:
    if args.format == "deeplabv3":
        return _run_deeplabv3(args)
    if args.format == "monovit":
        return _run_monovit(args)
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
