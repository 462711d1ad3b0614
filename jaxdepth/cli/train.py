"""`jaxdepth train --recipe NAME --data synthetic|kitti|nyu|cityscapes ... --out DIR`

One command for every recipe (`jaxdepth.train.recipes.RECIPES`) and data source
(`jaxdepth.data.training`). `--out DIR` holds the resumable orbax run (the same command
after a kill resumes it; another config in the same DIR is refused) and, when it ends,
an exported checkpoint that `jaxdepth predict --checkpoint DIR` loads. `--arch monovit`
trains MonoViT instead of Monodepth2's DepthNet in every depth recipe (MonoViT's AdamW:
encoder at half the --lr, ×0.9 per epoch; `jaxdepth.train.arch`). The NeWCRFs recipes
(`newcrfs`, `adu-teacher`, `adu-student --teacher DIR`; `jaxdepth.train.adu`) are sized by
`--encoder` (Swin size) and `--crf-scale` instead of `--arch` / `--model-width`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from jaxdepth.cli.errors import CLIError

#: input size, model width and learning rate by data kind (procedural scenes: small and
#: from random weights; KITTI and NYU: Monodepth2's / the NYU recipe's)
DEFAULTS = {"synthetic": dict(height=64, width=192, model_width=0.25, lr=1e-3),
            "kitti": dict(height=192, width=640, model_width=1.0, lr=1e-4),
            "nyu": dict(height=224, width=288, model_width=1.0, lr=1e-4),
            "cityscapes": dict(height=512, width=1024, model_width=1.0, lr=1e-3)}
#: the NeWCRFs recipes' defaults by --data: the released Swin-L at NeWCRFs' KITTI crop and
#: lr; on the procedural scenes the reduced `micro` network from random weights
#: (experiments/adu_depth.py's settings)
NEWCRFS_DEFAULTS = {"synthetic": dict(height=64, width=192, encoder="micro", crf_scale=1 / 16,
                                      lr=3e-4),
                    "kitti": dict(height=352, width=1120, encoder="large", crf_scale=1.0,
                                  lr=2e-5)}


def add_parser(sub) -> None:
    from jaxdepth.train.arch import ARCHS, MONOVIT_SIZES
    from jaxdepth.train.recipes import RECIPES
    recipes = "\n".join(f"  {k:18s} {r.help}" for k, r in RECIPES.items())
    tr = sub.add_parser(
        "train", help="train a model (every recipe; synthetic / KITTI / NYU / Cityscapes data)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Recipes:\n" + recipes + "\n\nDefaults by --data: " + "; ".join(
            f"{k} {d['height']}x{d['width']}, model width {d['model_width']}, lr {d['lr']:g}"
            for k, d in DEFAULTS.items()) + ".\n\nArchitectures (--arch, every depth recipe): "
        "monodepth2 (DepthNet: ResNet encoder, Adam, lr x0.1 after 75 % of the steps) or "
        "monovit (MonoViT: MPViT encoder + HR-Depth decoder, --monovit-size; MonoViT's AdamW, "
        "weight decay 0.01, encoder lr = lr/2, decoder and pose lr = lr, x0.9 per epoch of "
        "training-set size / batch size steps; --model-width scales it as it does DepthNet).")
    tr.add_argument("--recipe", required=True, choices=list(RECIPES), metavar="NAME",
                    help="what to train (see the list above)")
    tr.add_argument("--data", default="synthetic", choices=list(DEFAULTS),
                    help="training data (synthetic: the procedural street scenes)")
    tr.add_argument("--data-root", type=Path, help="KITTI raw root / NYU FastDepth folder / "
                    "Cityscapes root (leftImg8bit/, gtFine/)")
    tr.add_argument("--split", help="KITTI: a shipped list (eigen_zhou, eigen_full) or a split "
                    "file of 'folder frame side' lines (default: eigen_zhou for M/MS, "
                    "eigen_full for S and supervised)")
    tr.add_argument("--gt", default="velodyne", choices=("velodyne", "improved"),
                    help="KITTI supervised depth: projected velodyne or the improved gt")
    tr.add_argument("--image-ext", default=".png", help="KITTI image extension (.png)")
    tr.add_argument("--teacher", type=Path, help="a selfsup run's --out (self, sub-depth: the "
                    "teacher; selfsup-*-log/-drop: the plain run to fine-tune); adu-student: "
                    "an adu-teacher run's --out")
    tr.add_argument("--height", type=int, help="input height (see the defaults)")
    tr.add_argument("--width", type=int, help="input width (see the defaults)")
    tr.add_argument("--model-width", type=float, help="channel multiplier (see the defaults)")
    tr.add_argument("--arch", choices=list(ARCHS), help="depth network: monodepth2 (DepthNet, "
                    "the default) or monovit (MonoViT); fine-tuning and distillation default "
                    "to the teacher's")
    tr.add_argument("--monovit-size", choices=list(MONOVIT_SIZES), help="MonoViT size with "
                    "--arch monovit: small (as released, the default), xsmall, mpvit_tiny, or "
                    "tiny (a reduced one for tests and CPU runs)")
    tr.add_argument("--encoder", choices=("large", "base", "tiny", "micro"),
                    help="NeWCRFs recipes: the Swin size (large as released: the default on "
                    "KITTI; micro, a reduced one for tests and CPU runs: the default on "
                    "synthetic; adu-student: the teacher's)")
    tr.add_argument("--crf-scale", type=float, help="NeWCRFs recipes: width multiplier of the "
                    "CRFs and PSP head (1 as released on KITTI, 1/16 on synthetic; "
                    "adu-student: the teacher's)")
    tr.add_argument("--num-layers", type=int, default=18, choices=(18, 34, 50),
                    help="ResNet encoder depth (18); with --arch monovit the pose network's")
    tr.add_argument("--steps", type=int, default=1000, help="training steps (1000)")
    tr.add_argument("--batch-size", type=int, default=8, help="batch size (8)")
    tr.add_argument("--lr", type=float, help="learning rate: Adam, ×0.1 after 75 %% of the "
                    "steps; monovit: the decoder's (encoder lr/2), ×0.9 per epoch")
    tr.add_argument("--limit", type=int, help="train on the first N frames only (synthetic: "
                    "N scenes, default 4000)")
    tr.add_argument("--seed", type=int, default=0, help="initialisation, augmentation, data order")
    tr.add_argument("--out", type=Path, required=True, help="run directory (resumable)")


def _teacher(path: Path):
    """`(config, variables, start_state)` of a teacher run directory."""
    import json

    from jaxdepth.export import load_checkpoint
    from jaxdepth.train import runs
    from jaxdepth.train.recipes import config_from_dict

    if not path.is_dir():
        raise CLIError(f"--teacher {path}: no such directory (a `jaxdepth train ... --out` "
                       "directory)")
    _, variables, meta = load_checkpoint(path)
    source = meta.get("source") or {}
    if source.get("kind") != "jaxdepth-train":
        raise CLIError(f"--teacher {path}: not a jaxdepth training run (it came from "
                       f"{json.dumps(source)[:80]}); train the teacher with `jaxdepth train`")
    cfg = config_from_dict(source["config"], where=str(path))
    start = None
    try:
        start = runs.restore_variables(path, int(source["step"]))
    except (FileNotFoundError, KeyError, ValueError):
        pass
    return cfg, variables, start


def _check_newcrfs_args(args) -> None:
    """The NeWCRFs recipes' flags: their own sizes, stereo data (KITTI or synthetic)."""
    if args.arch is not None or args.monovit_size is not None or args.model_width is not None:
        raise CLIError(f"--recipe {args.recipe} trains NeWCRFs: size it with --encoder and "
                       "--crf-scale (not --arch / --monovit-size / --model-width)")
    if args.data not in NEWCRFS_DEFAULTS:
        raise CLIError(f"--recipe {args.recipe} trains on --data synthetic or kitti"
                       + (" (NYU holds single frames: no right view for the stereo teacher)"
                          if args.data == "nyu" else ""))
    if args.crf_scale is not None and not args.crf_scale > 0:
        raise CLIError(f"--crf-scale must be > 0, got {args.crf_scale}")


def _check_adu_teacher(path, cfg, variables) -> None:
    """adu-student's --teacher: an adu-teacher run (a 6-channel NeWCRFs)."""
    from jaxdepth.train import adu, recipes

    if not isinstance(cfg, adu.NeWCRFsConfig):
        arch = getattr(cfg, "arch", None) or type(cfg).__name__
        raise CLIError(f"--teacher {path} is a {recipes.recipe_of(cfg)} run ({arch}); "
                       "--recipe adu-student distils the stereo NeWCRFs teacher: train it with "
                       "`jaxdepth train --recipe adu-teacher`")
    if not cfg.stereo:
        raise CLIError(f"--teacher {path} is a NeWCRFs with in_channels 3 (recipe "
                       f"{recipes.recipe_of(cfg)}); ADU-Depth's teacher takes the stereo pair "
                       "(in_channels 6): train it with `jaxdepth train --recipe adu-teacher`")
    try:
        adu.check_teacher(adu.AduConfig(teacher=cfg), variables)
    except ValueError as e:
        raise CLIError(f"--teacher {path}: {e}") from None


def run(args) -> int:
    from jaxdepth.data.training import training_data
    from jaxdepth.train import recipes
    from jaxdepth.train.config import RunConfig
    from jaxdepth.train.selfsup import SelfSupConfig

    d = DEFAULTS[args.data]
    if args.data != "synthetic" and args.data_root is None:
        raise CLIError(f"--data {args.data} needs --data-root (the dataset folder)")
    if args.data == "synthetic" and (args.data_root or args.split):
        raise CLIError("--data synthetic renders its scenes: no --data-root or --split")
    teacher_cfg = teacher_vars = start = None
    recipe = recipes.RECIPES[args.recipe]
    newcrfs = recipe.task == "newcrfs"
    if newcrfs:
        _check_newcrfs_args(args)
    elif args.encoder is not None or args.crf_scale is not None:
        raise CLIError(f"--encoder / --crf-scale size the NeWCRFs recipes (newcrfs, adu-teacher, "
                       f"adu-student), not --recipe {args.recipe}")
    if args.teacher is not None:
        if recipe.teacher == "none":
            raise CLIError(f"--recipe {args.recipe} takes no --teacher")
        teacher_cfg, teacher_vars, start = _teacher(args.teacher)
        if newcrfs:
            _check_adu_teacher(args.teacher, teacher_cfg, teacher_vars)
        elif not isinstance(teacher_cfg, SelfSupConfig):
            raise CLIError(f"--teacher {args.teacher} is a {recipes.recipe_of(teacher_cfg)} run; "
                           f"--recipe {args.recipe} needs a self-supervised (selfsup-*) teacher")
    elif recipe.teacher == "required":
        parent = "adu-teacher" if newcrfs else "selfsup-..."
        raise CLIError(f"--recipe {args.recipe} distils a teacher: give --teacher DIR (the "
                       f"--out of a `jaxdepth train --recipe {parent}` run)")
    if newcrfs:
        d = {**d, **NEWCRFS_DEFAULTS[args.data]}
    size = (teacher_cfg.run.height, teacher_cfg.run.image_width) if teacher_cfg else (
        d["height"], d["width"])
    height, width = args.height or size[0], args.width or size[1]
    if args.steps < 1 or args.batch_size < 1:
        raise CLIError("--steps and --batch-size must be at least 1")
    if args.recipe.startswith("selfsup") and args.data == "nyu":
        raise CLIError("NYU holds single RGB-D frames: the self-supervised recipes need "
                       "--data kitti or synthetic")
    if args.recipe in ("self", "sub-depth") and args.data == "nyu":
        raise CLIError(f"--recipe {args.recipe} distils a self-supervised teacher on its data: "
                       "use --data kitti or synthetic")
    if args.recipe.startswith("segmentation") != (args.data == "cityscapes") and \
            args.data != "synthetic":
        raise CLIError(f"--recipe {args.recipe} cannot train on --data {args.data}: "
                       + ("segmentation trains on --data synthetic or cityscapes"
                          if args.recipe.startswith("segmentation") else
                          "Cityscapes has semantic labels only (--recipe segmentation[-drop])"))
    if newcrfs and (height % 32 or width % 32 or height <= 0 or width <= 0):
        raise CLIError(f"NeWCRFs needs --height and --width positive multiples of 32 (the Swin "
                       f"and CRF window partitions and the pixel-shuffle chain: ⌈H/4⌉ divisible "
                       f"by 8), got {height}x{width}")
    run = RunConfig(height=height, image_width=width, batch_size=args.batch_size,
                    steps=args.steps, lr=args.lr or d["lr"], seed=args.seed,
                    data_seed=args.seed, data=args.data, split=args.split,
                    augment=args.data not in ("nyu", "cityscapes"),  # their transforms augment
                    train_size=args.limit if args.limit else 4000)
    if args.monovit_size is not None and (args.arch or getattr(teacher_cfg, "arch", None)) \
            != "monovit":
        raise CLIError("--monovit-size applies to --arch monovit")
    if args.arch not in (None, "monodepth2") and recipe.task != "depth":
        raise CLIError(f"--recipe {args.recipe} trains DeepLabV3+ (segmentation): --arch "
                       "applies to the depth recipes")
    from jaxdepth.train.checkpoint import OutputNotWritable, probe_writable
    try:  # before any work: an unwritable --out would lose the whole run at its first save
        probe_writable(args.out, 1 << 20, "--out")
    except OutputNotWritable as e:
        raise CLIError(str(e)) from None
    try:
        if newcrfs:
            if teacher_cfg is not None:  # the student: the teacher's sizes unless given
                size = dict(encoder=args.encoder, crf_scale=args.crf_scale)
            else:
                size = dict(encoder=args.encoder or d["encoder"],
                            crf_scale=d["crf_scale"] if args.crf_scale is None else args.crf_scale)
            cfg = recipes.build(args.recipe, run, teacher=teacher_cfg, **size)
        else:
            cfg = recipes.build(args.recipe, run, teacher=teacher_cfg,
                                num_layers=args.num_layers,
                                model_width=args.model_width or d["model_width"],
                                arch=args.arch, monovit_size=args.monovit_size)
        if getattr(cfg, "start_from", None) is not None and start is None:
            raise CLIError(f"--teacher {args.teacher} keeps no training state to fine-tune "
                           "from (its orbax steps are gone)")
        needs = recipes.needs_of(cfg)
        data = training_data(args.data, needs=needs, height=height, width=width,
                             root=args.data_root, split=args.split,
                             length=args.limit if args.data != "synthetic" else run.train_size,
                             seed=args.seed, gt=args.gt, image_ext=args.image_ext)
    except FileNotFoundError as e:
        raise CLIError(str(e)) from None
    depth_cfg = getattr(cfg, "student", cfg)
    monovit_opt = getattr(depth_cfg, "optimizer_name", "adam") == "monovit"
    if monovit_opt and args.data != "synthetic" and not args.limit:
        # MonoViT decays per epoch: an epoch of real data is its number of training frames
        cfg = cfg.with_run(train_size=len(data))
        run = cfg.run
    net = "" if getattr(depth_cfg, "arch", "monodepth2") == "monodepth2" else \
        f" MonoViT-{depth_cfg.monovit_size} (width {depth_cfg.width:g}),"
    if newcrfs:
        net = (f" NeWCRFs-{depth_cfg.encoder} (crf_scale {depth_cfg.crf_scale:g}"
               + (", stereo input" if depth_cfg.stereo else "")
               + (", UEM" if depth_cfg.uem else "") + "),")
    from jaxdepth.train.state import MONOVIT_ENCODER_LR, MONOVIT_GAMMA
    lr = (f"AdamW lr {run.lr:g} (encoder {run.lr * MONOVIT_ENCODER_LR:g}), x{MONOVIT_GAMMA:g} "
          f"every {run.epoch_steps} steps" if monovit_opt else f"lr {run.lr:g}")
    if newcrfs:
        lr = f"Adam lr {run.lr:g}, poly decay (0.9) to {run.lr * 0.1:g}"
    print(f"jaxdepth train {args.recipe}:{net} {data.description}; "
          f"{run.steps} steps of {run.batch_size}, {lr} -> {args.out}", flush=True)
    from jaxdepth.train.checkpoint import ConfigMismatch
    try:
        recipes.train_or_load(cfg, directory=args.out, data=data,
                              teacher_variables=teacher_vars, start_state=start,
                              name=args.recipe)
    except (ConfigMismatch, OutputNotWritable) as e:
        raise CLIError(f"{e}") from None
    print(f"exported {args.out}: jaxdepth predict --checkpoint {args.out} IMAGE ...")
    return 0

