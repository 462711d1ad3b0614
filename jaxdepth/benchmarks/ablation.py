"""Ablations of the gradient method on the procedural scenes ("Revisiting"): Monodepth2 and
MonoViT models trained self-supervised (M: monocular with a pose network, S: stereo),
each scored with many variants of `gradient_uncertainty`, with its mode's protocol
(per-image median scaling for M, the known baseline's ×5.4 for S).

    cfg = AblationConfig()                        # or QUICK
    results = run(cfg, variants, checkpoints)     # variants(model_name, model) -> [Variant]

`experiments/ablation_references.py` (ECCV Table 5: the reference) and
`experiments/ablation_layers.py` (single taps, layer sets × aggregates) are short scripts
over it. Returns result rows (the `Evaluator.rows` layout plus each variant's `meta`);
draws nothing.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping

import numpy as np

from jaxdepth import runtime
from jaxdepth.data.synthetic import SyntheticSource
from jaxdepth.evaluation import SYNTHETIC, Evaluator, Row, evaluate
from jaxdepth.train import recipes, selfsup
from jaxdepth.train.config import RunConfig
from jaxdepth.uncertainty import gradient_uncertainty

#: `"<architecture> <mode>"`: Monodepth2 (DepthNet ResNet-18) and MonoViT, M and S
MODELS = ("Monodepth2 M", "Monodepth2 S", "MonoViT M", "MonoViT S")
ARCHS = {"Monodepth2": "monodepth2", "MonoViT": "monovit"}


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """The models (their size and training) and the evaluation of an ablation."""
    height: int = 64
    width: int = 192
    model_width: float = 0.25      # DepthNet's channel multiplier
    monovit_size: str = "tiny"     # MonoViT's size (`jaxdepth.models.monovit.SIZES`)
    monovit_width: float = 1.0
    steps: int = 500               # per model; M runs: selfsup.M_STEPS_FACTOR × as many
    batch_size: int = 8
    lr: float = 1e-3
    test_images: int = 64
    eval_batch: int = 8
    seed: int = 0
    models: tuple = MODELS


QUICK = AblationConfig(height=32, width=96, model_width=0.125, monovit_width=0.5, steps=3,
                       test_images=4, eval_batch=4)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row: `label`, the `gradient_uncertainty` keyword arguments, and `meta`, the
    keys it adds to its result row (e.g. `{"reference": "flip"}`)."""
    label: str
    kwargs: Mapping
    meta: Mapping


def model_config(cfg: AblationConfig, name: str) -> selfsup.SelfSupConfig:
    """The self-supervised config of one of `MODELS`."""
    try:
        arch, mode = name.split()
        arch = ARCHS[arch]
    except (ValueError, KeyError):
        raise ValueError(f"model must be one of {MODELS}, got {name!r}") from None
    if mode not in ("M", "S"):
        raise ValueError(f"model must be one of {MODELS}, got {name!r}")
    run = RunConfig(height=cfg.height, image_width=cfg.width, batch_size=cfg.batch_size,
                    steps=selfsup.steps_for(mode, cfg.steps), lr=cfg.lr, seed=cfg.seed,
                    data_seed=cfg.seed)
    if arch == "monovit":
        return selfsup.SelfSupConfig(mode=mode, arch="monovit", monovit_size=cfg.monovit_size,
                                     width=cfg.monovit_width, run=run)
    return selfsup.SelfSupConfig(mode=mode, width=cfg.model_width, run=run)


def mode_protocol(cfg: selfsup.SelfSupConfig):
    """The synthetic protocol of a self-supervised mode: per-image median scaling for M,
    the known baseline's scale (×5.4) for S / MS."""
    if cfg.mode == "M":
        return dataclasses.replace(SYNTHETIC, name="synthetic_median", scaling="median")
    return dataclasses.replace(SYNTHETIC, name="synthetic_stereo", scaling="stereo",
                               stereo_factor=selfsup.stereo_scale_factor(cfg))


def grad_row(model: str, label: str, apply_fn, variables, kwargs, protocol=None) -> Row:
    """A table row of `gradient_uncertainty(apply_fn, variables, …, **kwargs)`; the `gt`
    reference gets the sample's ground truth (0 where it has none)."""
    if kwargs.get("reference") == "gt":
        def fn(x, key, depth):
            return gradient_uncertainty(apply_fn, variables, x, rng=key,
                                        depth_gt=depth * (depth > 0), **kwargs)
        return Row(model, label, fn, protocol, inputs=("depth",))
    return Row(model, label, lambda x, key: gradient_uncertainty(apply_fn, variables, x,
                                                                 rng=key, **kwargs), protocol)


def run(cfg: AblationConfig, variants: Callable, checkpoints, *, train: bool = True):
    """Train (or reuse from `checkpoints`, keyed by config) every model of `cfg.models`,
    score the test split with each of `variants(name, model) -> [Variant]` (`model`: the
    Flax module, for its `tap_names` / `default_tap`), and return `(rows, curves)`:
    `Evaluator.rows()` with each variant's `meta` merged in, and the sparsification curves
    (`{"Model: label": …}`). A model whose depth collapsed (`selfsup.collapsed`, on the
    first test images) is warned about and its rows carry `"collapsed": True`."""
    rows, meta = [], {}
    source = SyntheticSource("test", seed=cfg.seed, height=cfg.height, width=cfg.width,
                             length=cfg.test_images, keys=("image", "depth"))
    first = source.get_batch(np.arange(min(cfg.eval_batch, len(source))))["image"]
    for name in cfg.models:
        c = model_config(cfg, name)
        apply_fn, variables = recipes.train_or_load(c, checkpoints, train=train)
        runtime.release_compiled_programs()  # the training programs, before many more
        protocol = mode_protocol(c)
        dead = selfsup.collapsed(apply_fn(variables, first)["depth"], c.model().min_depth)
        if dead:
            warnings.warn(f"{name}: its depth collapsed (constant, or at the near limit); "
                          "its rows measure a constant-depth model", stacklevel=2)
        for v in variants(name, c.model()):
            rows.append(grad_row(name, v.label, apply_fn, variables, v.kwargs, protocol))
            meta[(name, v.label)] = {**v.meta, "collapsed": dead}
    ev = Evaluator(SYNTHETIC)

    def add(row, est, samples, idx):
        ev.add(row.model, row.method, est, np.stack([s["depth"] for s in samples]),
               protocol=row.protocol)

    evaluate(rows, source, batch_size=cfg.eval_batch, seed=cfg.seed, batch_keys=False, add=add,
             timer=lambda row, s, n: ev.time(row.model, row.method, s, n))
    results = [{**r, **meta[(r["model"], r["method"])]} for r in ev.rows()]
    return results, ev.curves()


def collapsed_note(rows) -> str | None:
    """The line under a table naming the models whose depth collapsed (None: none)."""
    dead = list(dict.fromkeys(r["model"] for r in rows if r.get("collapsed")))
    return ("collapsed (constant depth; their rows are not meaningful): " + ", ".join(dead)
            if dead else None)
