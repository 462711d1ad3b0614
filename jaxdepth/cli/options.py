"""Flag sets shared by the commands and the experiment scripts, and their conversion into
the library's configs (the library itself takes only configs)."""
from __future__ import annotations

import argparse

from jaxdepth.uncertainty.gradient import VAR_MEMBER_CHOICES
from jaxdepth.uncertainty.maps import AGGREGATIONS, REDUCTIONS, UPSAMPLING
from jaxdepth.uncertainty.methods import MethodOptions

GRAD_REFERENCES = ("flip", "gray", "noise", "rot", "var", "feature_noise", "feature_dropout")


def _add(parser, *flags, **kwargs):
    if not any(f in parser._option_string_actions for f in flags):
        parser.add_argument(*flags, **kwargs)


def _members(text) -> str:
    """`--var-members`: comma-separated reference names (one word, so it never swallows
    the images that follow)."""
    names = [m for m in str(text).split(",") if m]
    bad = [m for m in names if m not in VAR_MEMBER_CHOICES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"{text!r}: choose references from "
                                         f"{', '.join(VAR_MEMBER_CHOICES)}")
    return str(text)


def add_method_arguments(parser: argparse.ArgumentParser, *, variance_weight=None) -> None:
    """The options of the uncertainty methods (`jaxdepth.uncertainty.methods.MethodOptions`)."""
    d = MethodOptions()
    _add(parser, "--taps", nargs="+", default=list(d.taps),
         help="grad: decoder taps dec0..dec10, space- or comma-separated (dec6)")
    _add(parser, "--reference", default=d.reference, choices=GRAD_REFERENCES,
         help="grad: reference prediction (flip)")
    _add(parser, "--feature-tap", default=d.feature_tap,
         help="grad, feature_noise / feature_dropout: the perturbed feature (enc4)")
    _add(parser, "--feature-scale", type=float, default=d.feature_scale,
         help="grad, feature_noise: noise std relative to the feature's std; "
              "feature_dropout: the channel-dropout rate (0.1)")
    _add(parser, "--var-members", type=_members, default=",".join(d.var_members),
         metavar="REF[,REF...]",
         help="grad, --reference var: the references it combines, comma-separated, from "
              f"{', '.join(VAR_MEMBER_CHOICES)} (flip,gray,noise,rot)")
    _add(parser, "--reduce", default=d.reduce, choices=REDUCTIONS,
         help="grad: channel reduction (max)")
    _add(parser, "--aggregate", default=d.aggregate, choices=AGGREGATIONS,
         help="grad: combination of several taps (std; rank / zmean: layer-robust)")
    _add(parser, "--upsample", default=d.upsample, choices=UPSAMPLING,
         help="grad: resizing of the maps (bilinear)")
    _add(parser, "--variance-weight", type=float, default=variance_weight,
         help="grad: λ of the σ² term (Eq. 5) for models with log σ heads (default 2.0)")
    _add(parser, "--samples", type=int, default=d.samples, help="in_drop / drop: passes (8)")
    _add(parser, "--in-drop-p", "--dropout", dest="in_drop_p", type=float, default=d.in_drop_p,
         help="in_drop: dropout rate (0.2)")


def split_taps(taps) -> tuple:
    return tuple(t for item in taps for t in str(item).split(",") if t)


def _split_members(members) -> tuple:
    if isinstance(members, str):
        members = [members]
    return split_taps(members) or MethodOptions().var_members


def method_options(args) -> MethodOptions:
    """`MethodOptions` from the flags of `add_method_arguments` (absent ones: defaults)."""
    d = MethodOptions()
    get = lambda name, default: default if getattr(args, name, None) is None else getattr(args, name)  # noqa: E731
    return MethodOptions(taps=split_taps(get("taps", d.taps)) or d.taps,
                         reference=get("reference", d.reference), reduce=get("reduce", d.reduce),
                         aggregate=get("aggregate", d.aggregate),
                         feature_tap=get("feature_tap", d.feature_tap),
                         feature_scale=float(get("feature_scale", d.feature_scale)),
                         var_members=_split_members(get("var_members", d.var_members)),
                         upsample=get("upsample", d.upsample),
                         variance_weight=getattr(args, "variance_weight", None),
                         samples=int(get("samples", d.samples)),
                         in_drop_p=float(get("in_drop_p", d.in_drop_p)),
                         space=getattr(args, "space", None),
                         bayesian=bool(getattr(args, "bayesian", False)))


def add_kitti_arguments(parser: argparse.ArgumentParser) -> None:
    """The KITTI protocol's options (`jaxdepth.benchmarks.kitti.KittiConfig`)."""
    _add(parser, "--kitti-root", default=None,
         help="KITTI raw root (<root>/<date>/<drive>_sync/...): run the paper's KITTI "
              "protocol (Tables 1/2) instead of the procedural-scene job")
    _add(parser, "--weights", default=None,
         help="converted checkpoint, or a folder with post/ log/ self/ drop/ boot/ checkpoints")
    _add(parser, "--supervision", choices=("mono", "stereo"), default=None,
         help="mono: per-image median scaling; stereo: ×5.4 (default: the checkpoints' "
              "use_stereo)")
    _add(parser, "--split", choices=("eigen_benchmark", "eigen"), default="eigen_benchmark",
         help="eigen_benchmark (improved gt, 652 images) or eigen (velodyne, Garg crop, 697)")
    _add(parser, "--split-file", default=None,
         help="test list to use instead of the packaged one (lines '<folder> <frame> <side>'); "
              "--split still decides the ground truth and masks")
    _add(parser, "--gt-root", default=None,
         help="folder of the improved gt in the depth-completion layout ({train,val}/<drive>/"
              "proj_depth/groundtruth/...) if it is not inside the raw tree")
    _add(parser, "--image-ext", default=".png",
         help="KITTI image extension (.png, or .jpg for Monodepth2's converted copy)")
    _add(parser, "--reproduce-reference", action="store_true",
         help="copy the reference's uint16 storage round trip and evaluation rules")
    _add(parser, "--limit", type=int, default=None, help="evaluate only the first N test images")
    _add(parser, "--models", nargs="+", default=None, metavar="MODEL",
         help="evaluate only these models (subfolders of --weights)")


def kitti_config(args):
    """`KittiConfig` from the flags of `add_kitti_arguments` and `add_method_arguments`."""
    from jaxdepth.benchmarks.kitti import KittiConfig

    opts = method_options(args)
    if opts.variance_weight is None:
        import dataclasses
        opts = dataclasses.replace(opts, variance_weight=2.0)
    return KittiConfig(
        kitti_root=args.kitti_root, weights=args.weights, supervision=args.supervision,
        split=args.split, split_file=args.split_file, gt_root=args.gt_root,
        image_ext=args.image_ext, reproduce_reference=bool(args.reproduce_reference),
        models=tuple(args.models) if args.models else None, limit=args.limit,
        eval_batch=int(getattr(args, "eval_batch", None) or 1),
        seed=int(getattr(args, "seed", None) or 0), methods=opts,
        out=str(getattr(args, "out", None) or "runs/kitti_protocol"))


def add_ablation_arguments(parser: argparse.ArgumentParser, *, out: str) -> None:
    """The flags every ablation script shares (`jaxdepth.benchmarks.ablation`): the
    models, their training and test size, the output and checkpoint folders."""
    from jaxdepth.benchmarks.ablation import MODELS

    _add(parser, "--quick", action="store_true", help="tiny smoke run")
    _add(parser, "--models", nargs="+", choices=MODELS)
    _add(parser, "--steps", type=int, help="training steps per model (M: 2.5× as many)")
    _add(parser, "--test-images", type=int)
    _add(parser, "--seed", type=int)
    _add(parser, "--out", default=out, help="results directory")
    _add(parser, "--checkpoints", default="checkpoints",
         help="where the models are kept (shared by the ablation scripts)")


def ablation_config(args):
    """`AblationConfig` (`QUICK` with `--quick`) with the flags of `add_ablation_arguments`."""
    import dataclasses

    from jaxdepth.benchmarks import ablation

    base = ablation.QUICK if args.quick else ablation.AblationConfig()
    changes = {k: getattr(args, k) for k in ("steps", "test_images", "seed")
               if getattr(args, k) is not None}
    if args.models:
        changes["models"] = tuple(args.models)
    return dataclasses.replace(base, **changes)
