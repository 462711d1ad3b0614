"""The `jaxdepth` command.

    jaxdepth train --recipe NAME --data synthetic|kitti|nyu|cityscapes [--data-root DIR] [--split NAME|FILE]
                   [--teacher DIR] [--height H] [--width W] [--steps N] [--batch-size B]
                   [--seed S] --out DIR
    jaxdepth predict --checkpoint DIR [--method grad] [--taps dec6 ...] IMAGE|DIR|GLOB ...
    jaxdepth convert monodepth2 --encoder encoder.pth --depth depth.pth --out DIR
                                [--pose-encoder pose_encoder.pth --pose pose.pth]
    jaxdepth convert monodepth2 --folder FOLDER --out DIR [--weights weights_19]
                                [--snapshots 12-19]
    jaxdepth convert deeplabv3 --weights FILE.pth --out DIR [--class-names voc]
    jaxdepth convert monovit --encoder encoder.pth --depth depth.pth --out DIR
    jaxdepth calibrate --checkpoint DIR --method NAME --data synthetic|kitti|nyu
                       [--data-root DIR] [--split NAME|FILE] [--images N] [--levels ...]
                       [--relative] [--holdout F] --out FILE

`train` (`jaxdepth.cli.train`) trains any recipe on the procedural scenes, KITTI raw,
NYU or Cityscapes and exports the model into its run directory; `predict`
(`jaxdepth.cli.predict`) writes depth (or class) and uncertainty maps for your images with
any checkpoint; `convert` (`jaxdepth.cli.convert`) turns released Monodepth2-format,
MonoViT or torchvision DeepLabV3 PyTorch weights into a checkpoint; `calibrate`
(`jaxdepth.cli.calibrate`) fits error bars in metres with a coverage guarantee for a
method's uncertainty (docs/calibration.md). A user error prints one line `jaxdepth: error: ...` and exits with 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from jaxdepth import runtime
from jaxdepth.cli import calibrate, convert, predict, train
from jaxdepth.cli.errors import CLIError
from jaxdepth.cli.options import (ablation_config, add_ablation_arguments, add_kitti_arguments,
                                  add_method_arguments, kitti_config, method_options)
from jaxdepth.cli.predict import IMAGE_EXTENSIONS, collect_images

__all__ = ["main", "build_parser", "CLIError", "collect_images", "IMAGE_EXTENSIONS",
           "add_method_arguments", "method_options", "add_kitti_arguments", "kitti_config",
           "add_ablation_arguments", "ablation_config"]

_COMMANDS = {"train": train, "predict": predict, "convert": convert, "calibrate": calibrate}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, `jaxdepth: error: …` (exit 2),
    like every other user error (the subcommands' parsers inherit it)."""

    def error(self, message):
        self.exit(2, f"jaxdepth: error: {_one_line(message)} (see `{self.prog} --help`)\n")


def _one_line(message) -> str:
    """`message` on one line: its non-empty lines joined with '; '."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaxdepth", description=(
        "Post hoc gradient-based uncertainty for monocular depth networks."))
    sub = p.add_subparsers(dest="command", required=True,
                           metavar="{train,predict,convert,calibrate}")
    for module in _COMMANDS.values():
        module.add_parser(sub)
    return p


def main(argv=None) -> int:
    """Run the `jaxdepth` command; returns the exit status (0 ok, 2 input error); a usage
    error (argparse) raises SystemExit(2). Either way stderr gets one line
    `jaxdepth: error: …`, never a traceback (docs/reliability.md §"Bad input")."""
    runtime.configure_cpu()  # before JAX starts
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command].run(args)
    except (CLIError, OSError, ValueError, TypeError, ImportError) as e:
        # ConversionError / CheckpointError are ValueErrors: wrong files, missing keys,
        # shapes; OSError: missing / unreadable / unwritable paths (FileNotFoundError,
        # IsADirectoryError, PermissionError, …)
        print(f"jaxdepth: error: {_one_line(e) or type(e).__name__}", file=sys.stderr)
        return 2


def _entry():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
