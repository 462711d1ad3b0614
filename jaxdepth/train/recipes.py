"""The recipes of `jaxdepth train`: a name, a one-line description and a config builder
over the shared run configuration; and the reverse, a saved config back to its recipe.

    cfg = build("selfsup-ms", RunConfig(height=192, image_width=640, data="kitti"))
    name = recipe_of(cfg)                     # "selfsup-ms"
    cfg == config_from_dict(cfg.to_dict())    # run directories rebuild their model

A recipe is a method config: training it is `jaxdepth.train.runs.train_or_load` with
the trainer's `init_state` and `make_step` (`trainer_of(cfg)`). Recipes `self` and
`sub-depth` distil a self-supervised teacher (`teacher=` its config); the self-supervised
Log / Drop recipes fine-tune from a plain run when `teacher=` gives one (M's variants
drift from random weights: see `jaxdepth.train.selfsup`).

Every depth recipe builds Monodepth2's DepthNet or, with `arch="monovit"`, MonoViT
(`monovit_size`; `jaxdepth.train.arch`), trained by default with MonoViT's optimiser;
`arch=None` is Monodepth2, or the teacher's architecture where a teacher's config is
the base (fine-tuning, where it must match, and distillation's student).

The NeWCRFs recipes (`task="newcrfs"`, `jaxdepth.train.adu`) build their own network,
sized by `encoder` (Swin size) and `crf_scale` instead of `model_width` / `arch`:
`newcrfs` (monocular, SILog), `adu-teacher` (the stereo teacher, left ‖ right) and
`adu-student` (ADU-Depth's distillation from an `adu-teacher` run given as `teacher=`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

from jaxdepth.train import adu, distill, segmentation, selfsup, supervised
from jaxdepth.train.arch import ARCHS
from jaxdepth.train.arch import suffix as arch_suffix
from jaxdepth.train.config import RunConfig

__all__ = ["RECIPES", "Recipe", "build", "recipe_of", "run_name", "config_from_dict",
           "export_meta", "needs_of", "trainer_of", "train_or_load"]


class Recipe(NamedTuple):
    help: str
    build: Callable[..., Any]    # build(run, *, teacher, model_width, num_layers, arch,
                                 #       monovit_size) -> config
    teacher: str                 # "none" | "optional" | "required"
    task: str = "depth"          # "depth" | "segmentation" | "newcrfs" (own network:
                                 # encoder / crf_scale, jaxdepth.train.adu)


def _arch(arch, monovit_size, base=None) -> dict:
    """The architecture fields of a new config: given, else those of `base` (a teacher's
    config), else Monodepth2's."""
    if arch is None:
        arch = getattr(base, "arch", "monodepth2")
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if arch != "monovit":
        if monovit_size is not None:
            raise ValueError("a MonoViT size applies to arch 'monovit' only")
        return {"arch": arch}
    if monovit_size is None:
        monovit_size = base.monovit_size if getattr(base, "arch", None) == "monovit" else "small"
    return {"arch": arch, "monovit_size": monovit_size}


def _supervised(variant):
    def build(run, *, teacher=None, model_width=None, num_layers=18, arch=None,
              monovit_size=None):
        kw = dict(variant=variant, num_layers=num_layers, run=run, **_arch(arch, monovit_size))
        if model_width is not None:
            kw["width"] = model_width
        if run.data == "nyu":  # metric heads, L1 / NLL on metres (Table 3's models)
            kw.update(metric=True, loss_space="depth", max_depth=10.0, init_depth=None)
        return supervised.SupervisedConfig(**kw)
    return build


def _selfsup(mode, variant="plain"):
    def build(run, *, teacher=None, model_width=None, num_layers=18, arch=None,
              monovit_size=None):
        kw = dict(mode=mode, num_layers=num_layers, run=run)
        if model_width is not None:
            kw["width"] = model_width
        kw.update(_arch(arch, monovit_size, teacher))
        if teacher is not None:  # fine-tune the plain run `teacher` (same networks)
            if (not isinstance(teacher, selfsup.SelfSupConfig) or teacher.mode != mode
                    or teacher.variant != "plain"):
                raise ValueError(f"selfsup-{mode.lower()}-{variant} fine-tunes a plain "
                                 f"selfsup-{mode.lower()} run; the teacher is "
                                 f"{recipe_of(teacher)}")
            if (kw["arch"], kw.get("monovit_size", "small")) != (teacher.arch,
                                                                 teacher.monovit_size):
                raise ValueError(f"selfsup-{mode.lower()}-{variant} fine-tunes its teacher's "
                                 f"network: the teacher is {_describe(teacher)}, not "
                                 f"{kw['arch']} {kw.get('monovit_size', '')}".rstrip())
            tuned = selfsup.fine_tune_config(teacher, variant)  # lr × FINE_TUNE_LR
            return dataclasses.replace(tuned, run=dataclasses.replace(
                tuned.run, steps=run.steps, batch_size=run.batch_size, seed=run.seed,
                data=run.data, split=run.split, train_size=run.train_size))
        return selfsup.SelfSupConfig(variant=variant, **kw)
    return build


def _describe(cfg) -> str:
    return "monodepth2" if cfg.arch == "monodepth2" else f"monovit {cfg.monovit_size}"


def _distill(method):
    def build(run, *, teacher=None, model_width=None, num_layers=18, arch=None,
              monovit_size=None):
        if not isinstance(teacher, selfsup.SelfSupConfig):
            raise ValueError(f"recipe {method!r} distils a self-supervised teacher: give "
                             f"--teacher DIR of a selfsup-* run (got {recipe_of(teacher)})")
        a = _arch(arch, monovit_size, teacher)  # the student: the teacher's network by default
        student = dataclasses.replace(teacher, variant="plain", start_from=None, run=run,
                                      arch=a["arch"], optimizer=teacher.optimizer
                                      if a["arch"] == teacher.arch else None,
                                      monovit_size=a.get("monovit_size", "small"))
        if model_width is not None:
            student = dataclasses.replace(student, width=model_width)
        return distill.DistillConfig(method=method.replace("-", "_"), teacher=teacher,
                                     student=student)
    return build


RECIPES: dict[str, Recipe] = {
    "supervised": Recipe("DepthNet on ground-truth depth, L1 on log depth (metric L1 on "
                         "NYU)", _supervised("reg"), "none"),
    "log": Recipe("supervised with log σ heads, Laplace NLL (Poggi's Log)", _supervised("log"),
                  "none"),
    "drop": Recipe("supervised with channel dropout p=0.2 (the model behind MC dropout)",
                   _supervised("drop"), "none"),
}
for _m in selfsup.MODES:
    _k = _m.lower()
    RECIPES[f"selfsup-{_k}"] = Recipe(
        {"M": "Monodepth2 monocular: frames -1/+1 with PoseNet", "S": "Monodepth2 stereo: "
         "the other camera", "MS": "Monodepth2 monocular + stereo"}[_m], _selfsup(_m), "none")
for _m in selfsup.MODES:
    _k = _m.lower()
    RECIPES[f"selfsup-{_k}-log"] = Recipe(
        f"selfsup-{_k} + log σ, Laplace photometric NLL (Poggi's Log); --teacher fine-tunes",
        _selfsup(_m, "log"), "optional")
    RECIPES[f"selfsup-{_k}-drop"] = Recipe(
        f"selfsup-{_k} + decoder dropout p=0.2 (Poggi's Drop); --teacher fine-tunes",
        _selfsup(_m, "drop"), "optional")
RECIPES["self"] = Recipe("Poggi's self-teaching: log σ student of a frozen selfsup teacher "
                         "(--teacher)", _distill("self"), "required")
RECIPES["sub-depth"] = Recipe("SUB-Depth self-distillation from a frozen selfsup teacher "
                              "(--teacher)", _distill("sub-depth"), "required")


def _segmentation(dropout):
    def build(run, *, teacher=None, model_width=None, num_layers=18, arch=None,
              monovit_size=None):
        if (arch or "monodepth2") != "monodepth2" or monovit_size is not None:
            raise ValueError("the segmentation recipes train DeepLabV3+ (ResNet); MonoViT is "
                             "a depth network (--arch applies to the depth recipes)")
        if run.data == "cityscapes":
            from jaxdepth.data.cityscapes import TRAIN_CLASSES as names
        else:
            from jaxdepth.data.segmentation import SYNTHETIC_CLASSES as names
        kw = dict(num_classes=len(names), class_names=tuple(names),
                  backbone=f"resnet{num_layers}", dropout=dropout, run=run)
        if model_width is not None:
            kw["width"] = model_width
        return segmentation.SegmentationConfig(**kw)
    return build


def _newcrfs(stereo):
    def build(run, *, teacher=None, encoder=None, crf_scale=None, **_):
        return adu.NeWCRFsConfig(encoder=encoder or "large",
                                 crf_scale=1.0 if crf_scale is None else crf_scale,
                                 stereo=stereo, run=run)
    return build


def _adu_student(run, *, teacher=None, encoder=None, crf_scale=None, **_):
    if not isinstance(teacher, adu.NeWCRFsConfig) or not teacher.stereo:
        what = (f"a {recipe_of(teacher)} run" if teacher is not None else "none")
        raise ValueError(f"recipe 'adu-student' distils the stereo NeWCRFs teacher (recipe "
                         f"adu-teacher, in_channels 6): give --teacher DIR of an adu-teacher run "
                         f"(got {what})")
    student = dataclasses.replace(teacher, stereo=False, uem=True, run=run)
    if encoder is not None:
        student = dataclasses.replace(student, encoder=encoder)
    if crf_scale is not None:
        student = dataclasses.replace(student, crf_scale=crf_scale)
    return adu.AduConfig(teacher=teacher, student=student)


RECIPES["newcrfs"] = Recipe("NeWCRFs (Swin + neural-window FC-CRFs) on ground-truth depth, SILog "
                            "loss, Adam + poly decay (--encoder)", _newcrfs(False), "none",
                            "newcrfs")
RECIPES["adu-teacher"] = Recipe("ADU-Depth's stereo teacher: NeWCRFs on left ‖ right (6 channels), "
                                "SILog", _newcrfs(True), "none", "newcrfs")
RECIPES["adu-student"] = Recipe("ADU-Depth: monocular NeWCRFs + UEM distilled from an adu-teacher "
                                "(--teacher)", _adu_student, "required", "newcrfs")

RECIPES["segmentation"] = Recipe("DeepLabV3+ semantic segmentation, pixel-wise cross entropy "
                                 "(the model of PGN; synthetic or cityscapes)",
                                 _segmentation(0.0), "none", "segmentation")
RECIPES["segmentation-drop"] = Recipe("segmentation with dropout p=0.2 before the head (the "
                                      "model behind MC dropout)", _segmentation(0.2), "none",
                                      "segmentation")


def build(name: str, run: RunConfig, *, teacher=None, model_width=None, num_layers=18,
          arch: str | None = None, monovit_size: str | None = None,
          encoder: str | None = None, crf_scale: float | None = None):
    """The config of recipe `name` over `run` (see `RECIPES`); `arch` / `monovit_size`:
    the depth network (`jaxdepth.train.arch`; None: Monodepth2, or the teacher's);
    `encoder` / `crf_scale`: the NeWCRFs recipes' Swin size (default `large`, or the
    teacher's) and CRF width multiplier (default 1, or the teacher's)."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if recipe.teacher == "required" and teacher is None:
        what = "an adu-teacher run" if recipe.task == "newcrfs" else "a selfsup run"
        raise ValueError(f"recipe {name!r} needs a teacher (--teacher DIR of {what})")
    if recipe.teacher == "none" and teacher is not None:
        raise ValueError(f"recipe {name!r} takes no teacher")
    if recipe.task == "newcrfs":
        if arch not in (None, "newcrfs") or monovit_size is not None or model_width is not None:
            raise ValueError(f"recipe {name!r} trains NeWCRFs: size it with encoder / crf_scale, "
                             "not arch / monovit_size / model_width")
        return recipe.build(run, teacher=teacher, encoder=encoder, crf_scale=crf_scale)
    if encoder is not None or crf_scale is not None:
        raise ValueError(f"encoder / crf_scale size the NeWCRFs recipes (newcrfs, adu-teacher, "
                         f"adu-student), not {name!r}")
    return recipe.build(run, teacher=teacher, model_width=model_width, num_layers=num_layers,
                        arch=arch, monovit_size=monovit_size)


def recipe_of(cfg) -> str:
    """The recipe name of a config."""
    if isinstance(cfg, supervised.SupervisedConfig):
        return {"reg": "supervised", "log": "log", "drop": "drop"}[cfg.variant]
    if isinstance(cfg, selfsup.SelfSupConfig):
        suffix = "" if cfg.variant == "plain" else f"-{cfg.variant}"
        return f"selfsup-{cfg.mode.lower()}{suffix}"
    if isinstance(cfg, distill.DistillConfig):
        return cfg.method.replace("_", "-")
    if isinstance(cfg, segmentation.SegmentationConfig):
        return "segmentation" if cfg.dropout == 0 else "segmentation-drop"
    if isinstance(cfg, adu.NeWCRFsConfig):
        return "adu-teacher" if cfg.stereo else "newcrfs"
    if isinstance(cfg, adu.AduConfig):
        return "adu-student"
    return type(cfg).__name__


def run_name(cfg) -> str:
    """The run-directory name of a config (its digest follows): `reg` / `log` / `drop`
    (supervised), `selfsup_<mode>[_<variant>]`, `selfsup_<teacher mode>_self` (Self),
    `sub_depth_<form>` (SUB-Depth), the names the experiments have always used; MonoViT
    runs add `_monovit` (`jaxdepth.train.arch.suffix`)."""
    if isinstance(cfg, supervised.SupervisedConfig):
        return cfg.variant + arch_suffix(cfg)
    if isinstance(cfg, selfsup.SelfSupConfig):
        return (f"selfsup_{cfg.mode.lower()}" + ("" if cfg.variant == "plain" else f"_{cfg.variant}")
                + arch_suffix(cfg))
    if isinstance(cfg, distill.DistillConfig):
        if cfg.method == "self":
            return f"selfsup_{cfg.teacher.mode.lower()}_self" + arch_suffix(cfg.student)
        return f"sub_depth_{cfg.form}" + arch_suffix(cfg.student)
    if isinstance(cfg, segmentation.SegmentationConfig):
        return "seg" if cfg.dropout == 0 else "seg_drop"
    if isinstance(cfg, adu.NeWCRFsConfig):
        return ("adu_teacher_" if cfg.stereo else "newcrfs_") + cfg.encoder
    if isinstance(cfg, adu.AduConfig):
        return "adu_student_" + cfg.student.encoder
    return type(cfg).__name__.lower()


def config_from_dict(d, where: str = "the config"):
    """The method config of a saved `to_dict()` (the run directories' `config`)."""
    try:
        if d.get("net") == "newcrfs":
            return adu.NeWCRFsConfig.from_dict(d)
        if d.get("net") == "adu":
            return adu.AduConfig.from_dict(d)
        if "num_classes" in d and "backbone" in d:
            return segmentation.SegmentationConfig.from_dict(d)
        if "method" in d and "teacher" in d:
            return distill.DistillConfig.from_dict(d)
        if "mode" in d:
            return selfsup.SelfSupConfig.from_dict(d)
        if "variant" in d:
            return supervised.SupervisedConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot rebuild the trainer config ({e})") from None
    raise ValueError(f"{where}: not a jaxdepth trainer config (keys {sorted(d)[:8]}…) — "
                     "cannot tell which model it trained")


def needs_of(cfg):
    """What a config's training data must hold (`jaxdepth.data.training.training_data`'s
    `needs`): `depth` (supervised), its mode (self-supervised), the student's keys
    (distillation)."""
    if isinstance(cfg, selfsup.SelfSupConfig):
        return cfg.mode
    if isinstance(cfg, distill.DistillConfig):
        return distill.data_keys(cfg)
    if isinstance(cfg, segmentation.SegmentationConfig):
        return "segmentation"
    if isinstance(cfg, (adu.NeWCRFsConfig, adu.AduConfig)):
        return "depth" if adu.data_keys(cfg) == ("image", "depth") else "stereo_depth"
    return "depth"


def trainer_of(cfg):
    """The trainer module of a config (`init_state`, `make_step`, `variables_of`)."""
    for module, cls in ((supervised, supervised.SupervisedConfig),
                        (selfsup, selfsup.SelfSupConfig), (distill, distill.DistillConfig),
                        (segmentation, segmentation.SegmentationConfig),
                        (adu, adu.NeWCRFsConfig), (adu, adu.AduConfig)):
        if isinstance(cfg, cls):
            return module
    raise TypeError(f"no trainer for {type(cfg).__name__}")


def export_meta(cfg) -> dict[str, Any]:
    """What an export of a run's model records besides the weights: the recipe, how its
    depth becomes metres (`scaling`, `stereo_scale`, `use_stereo`), whether it was
    trained with dropout, and the space its σ lives in (`sigma_space`)."""
    name = recipe_of(cfg)
    if isinstance(cfg, (adu.NeWCRFsConfig, adu.AduConfig)):  # metric depth, σ of the UEM
        net = cfg.student if isinstance(cfg, adu.AduConfig) else cfg
        return {"recipe": name, "use_stereo": None, "scaling": "none", "dropout_trained": False,
                "stereo_input": net.stereo, "sigma_space": "depth" if net.uem else None}
    if isinstance(cfg, segmentation.SegmentationConfig):
        return {"recipe": name, "class_names": list(cfg.class_names or []) or None,
                "dropout_trained": cfg.dropout > 0}
    if isinstance(cfg, supervised.SupervisedConfig):
        return {"recipe": name, "use_stereo": None, "scaling": "none",
                "dropout_trained": cfg.variant == "drop",
                "sigma_space": ("log_depth" if cfg.loss_space == "log" else "depth")
                if cfg.variant == "log" else None}
    if isinstance(cfg, distill.DistillConfig):  # the student learns the teacher's scale
        ss, stereo, sigma = cfg.student, "S" in cfg.teacher.mode, "disp"
    else:
        ss, stereo = cfg, "S" in cfg.mode
        sigma = "photometric" if cfg.variant == "log" else None
    return {"recipe": name, "use_stereo": stereo, "scaling": "stereo" if stereo else "median",
            "stereo_scale": selfsup.stereo_scale_factor(ss) if stereo else None,
            "dropout_trained": getattr(cfg, "variant", None) == "drop", "sigma_space": sigma}


def train_or_load(cfg, root=None, *, name: str | None = None, directory=None, data=None,
                  teacher_variables=None, start_state=None, train: bool = True,
                  progress: bool = True, keep: int = 1):
    """`(apply_fn, variables)` of the finished run of any recipe config, training (or
    resuming) it first if needed (`jaxdepth.train.runs`). What a config builds on is
    trained or reused first under its own derived name in `root`: the start run of a
    fine-tuned self-supervised variant, the teacher of a distillation (unless
    `teacher_variables` are given), the start of a fine-tuned run (unless `start_state`,
    `runs.restore_variables` of that run, is given). `data`: a
    `jaxdepth.data.training.TrainData` (default: the procedural scenes)."""
    from jaxdepth.train import runs

    kw = dict(data=data, train=train, progress=progress)
    if isinstance(cfg, supervised.SupervisedConfig):
        state = runs.train_or_load(name, cfg, root, init_state=supervised.init_state,
                                   step=supervised.make_step(cfg), needs=needs_of(cfg), keep=keep,
                                   directory=directory, **kw)
    elif isinstance(cfg, selfsup.SelfSupConfig):
        start = start_state
        if cfg.start_from is not None and start is None:
            start = _start_state(cfg.start_from, root, kw)
        state = runs.train_or_load(
            name, cfg, root, init_state=lambda c: selfsup.init_state(c, start_state=start),
            step=selfsup.make_step(cfg), needs=needs_of(cfg), moving_objects=cfg.moving_objects,
            keep=keep, directory=directory, **kw)
    elif isinstance(cfg, segmentation.SegmentationConfig):
        state = runs.train_or_load(name, cfg, root, init_state=segmentation.init_state,
                                   step=segmentation.make_step(cfg), needs=needs_of(cfg),
                                   keep=keep, directory=directory, **kw)
    elif isinstance(cfg, adu.NeWCRFsConfig):
        state = runs.train_or_load(name, cfg, root, init_state=adu.init_state,
                                   step=adu.make_step(cfg), needs=needs_of(cfg), keep=keep,
                                   directory=directory, **kw)
    elif isinstance(cfg, adu.AduConfig):
        if teacher_variables is None:
            _, teacher_variables = train_or_load(cfg.teacher, root, **kw)
        state = runs.train_or_load(name, cfg, root, init_state=adu.init_state,
                                   step=adu.make_step(cfg, teacher_variables),
                                   needs=needs_of(cfg), keep=keep, directory=directory, **kw)
    elif isinstance(cfg, distill.DistillConfig):
        if teacher_variables is None:
            _, teacher_variables = train_or_load(cfg.teacher, root, **kw)
        state = runs.train_or_load(
            name, cfg, root, init_state=distill.init_state,
            step=distill.make_step(cfg, teacher_variables), needs=needs_of(cfg),
            moving_objects=cfg.student.moving_objects, keep=keep, directory=directory, **kw)
    else:
        raise TypeError(f"no trainer for {type(cfg).__name__}")
    return cfg.model().apply, runs.depth_variables(state)


def _start_state(cfg, root, kw):
    """The final variables of the run a fine-tuned run starts from (trained first)."""
    from jaxdepth.train import runs

    train_or_load(cfg, root, **kw)
    return runs.restore_variables(runs.run_dir(root, None, cfg), cfg.run.steps)
