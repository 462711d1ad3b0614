"""The preview command: a grid of samples, ``python -m jaxdepth.data.synthetic --preview
out.png`` (rows: train samples with moving cars and one ood sample; columns: image,
depth, labels, right view, next frame, anomaly / moving masks)."""
from __future__ import annotations

import numpy as np

from .layout import CLASS_COLORS
from .source import sample


def _preview(path, n: int = 3, seed: int = 0, height: int = 96, width: int = 320):
    """Grid: rows = samples (``n`` train with moving cars + 1 ood), columns = image, depth,
    labels, right view, next frame, anomaly mask."""
    from jaxdepth import viz

    rows = [sample(i, seed=seed, height=height, width=width, split="train", moving_objects=True)
            for i in range(n)]
    rows.append(sample(0, seed=seed, height=height, width=width, split="ood"))
    images, titles = [], []
    for r, s in enumerate(rows):
        d = s["depth"][..., 0]
        split = "ood" if r == n else "train"
        disp = viz.colorize(np.where(d > 0, 1.0 / np.maximum(d, 1e-3), np.nan), cmap="magma",
                            vmin=0.0, vmax=1.0 / 4.0)
        lab = CLASS_COLORS[s["labels"]]
        amask = (s["image"] * 0.35 * 255).astype(np.uint8)
        amask[s["anomaly"]] = (255, 40, 40)
        amask[s["moving"]] = (40, 200, 255)
        images += [s["image"], disp, lab, s["image_right"], s["frames"][1], amask]
        titles += [f"{split} #{r if r < n else 0} image", "depth (1/z)", "labels",
                   "right view", "frame +1", "anomaly (red) / moving (blue)"]
    return viz.save_panel(path, images, titles=titles, ncols=6)


def _main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m jaxdepth.data.synthetic",
                                 description="Procedural street scenes: save a preview grid.")
    ap.add_argument("--preview", metavar="OUT.png", required=True,
                    help="write a grid of samples (image, depth, labels, right, next, anomaly)")
    ap.add_argument("--samples", type=int, default=3, help="train samples (+1 ood sample)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--width", type=int, default=320)
    a = ap.parse_args(argv)
    path = _preview(a.preview, a.samples, a.seed, a.height, a.width)
    print(f"wrote {path}")

