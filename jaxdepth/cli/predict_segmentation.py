"""`jaxdepth predict` on a segmentation checkpoint (`"task": "segmentation"`: a
`jaxdepth train --recipe segmentation[-drop]` run, a converted torchvision DeepLabV3):
the methods of `jaxdepth.uncertainty.segmentation.SEGMENTATION_METHODS`; per image
`<stem>_labels.npy` (uint8 class ids `[h, w]`), `<stem>_uncertainty.npy` (float32 `[h, w]`)
and `<stem>_panel.png` (image | classes | uncertainty with its colour bar)."""
from __future__ import annotations

import sys
import time

from jaxdepth.cli.errors import CLIError

DEFAULT_METHOD = "pgn"


def offered(meta, variables) -> list[str]:
    from jaxdepth.uncertainty.segmentation import SEGMENTATION_METHODS
    out = []
    for name, m in SEGMENTATION_METHODS.items():
        if m.needs == "ensemble" and not isinstance(variables, list):
            continue
        if m.needs == "dropout" and not meta.get("dropout_trained"):
            continue
        out.append(name)
    return out


def _label_of(method: str, args) -> str:
    if method.startswith("pgn"):
        layer = "last layer" if method == "pgn" else "penultimate layer"
        return f"‖∇L‖_p, {args.label} label, p={args.p:g}, {layer}"
    return {"softmax": "1 − max softmax", "entropy": "entropy / log C (0-1)",
            "mc_dropout": f"predictive entropy, {args.samples} passes [nats]",
            "ensemble": "predictive entropy over members [nats]"}[method]


def run(args, paths, model, variables, meta) -> int:
    import numpy as np
    from PIL import Image
    from tqdm.auto import tqdm

    from jaxdepth.cli.predict import PROGRESS_MIN, _resize_map, _stems, image_batches
    from jaxdepth.uncertainty.segmentation import segmentation_method
    from jaxdepth.viz import save_segmentation_panel

    method = args.method or DEFAULT_METHOD
    offers = offered(meta, variables)
    if method not in offers:
        raise CLIError(f"--method {method} does not apply to the segmentation checkpoint "
                       f"{args.checkpoint}; it offers: {', '.join(offers)}")
    if method == "mc_dropout" and args.samples < 2:
        raise CLIError("--samples must be at least 2")
    if args.p <= 0:
        raise CLIError(f"--p must be > 0, got {args.p:g}")
    members = variables if isinstance(variables, list) else None
    if members is not None and method != "ensemble":
        variables = members[args.member]
    import jax
    fn = segmentation_method(method, model.apply, members if method == "ensemble" else variables,
                             label=args.label, p=args.p, mode=args.pgn_mode,
                             samples=args.samples)
    key = jax.random.PRNGKey(args.seed)
    names = meta.get("class_names")
    from jaxdepth.data.segmentation import palette_of
    palette = palette_of(int(meta["num_classes"]), names)
    height, width = int(meta["height"]), int(meta["width"])
    label = f"{method}: {_label_of(method, args)}"
    args.out.mkdir(parents=True, exist_ok=True)
    stems = _stems(paths)
    bar = tqdm(total=len(paths), desc=f"predict ({method})", unit="img",
               disable=len(paths) < PROGRESS_MIN, file=sys.stderr, dynamic_ncols=True)
    say = tqdm.write if not bar.disable else print
    t0 = time.perf_counter()
    for chunk, originals, batch in image_batches(paths, args.batch_size, width, height,
                                                 Image.Resampling.BILINEAR):
        est = fn(batch, key)
        probs, unc = np.asarray(est.probs), np.asarray(est.uncertainty)
        for k, i in enumerate(chunk):
            h, w = originals[k].shape[:2]
            # class scores bilinear to the image's size, then the argmax
            scores = np.stack([_resize_map(probs[k, ..., c], h, w)
                               for c in range(probs.shape[-1])], -1)
            labels = scores.argmax(-1).astype(np.uint8)
            u = _resize_map(unc[k], h, w)
            stem = args.out / stems[i]
            np.save(f"{stem}_labels.npy", labels)
            np.save(f"{stem}_uncertainty.npy", u)
            if not args.no_panel:
                save_segmentation_panel(f"{stem}_panel.png", originals[k], labels, u,
                                        palette=palette, class_names=names,
                                        uncertainty_label=label)
            counts = np.bincount(labels.ravel(), minlength=len(palette))
            top = int(counts.argmax())
            say(f"{paths[i]}: {w}x{h}, most pixels {names[top] if names else top} "
                f"({100 * counts[top] / labels.size:.0f} %), mean uncertainty {np.mean(u):.3g} "
                f"-> {stem}_{{labels,uncertainty}}.npy")
            bar.update(1)
    bar.close()
    if len(paths) >= PROGRESS_MIN:
        print(f"{len(paths)} images in {time.perf_counter() - t0:.1f} s ({method}), "
              f"outputs in {args.out}")
    return 0
