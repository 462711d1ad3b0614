"""Distillation from a frozen self-supervised teacher: Poggi et al.'s self-teaching (Self)
and SUB-Depth (Zhou et al., BMVC 2021), written from docs/training.md §4–5 and the paper.

    teacher_cfg = SelfSupConfig(mode="M", steps=1000)
    _, teacher = selfsup.train_or_load("teacher", teacher_cfg, "checkpoints")
    cfg = DistillConfig(method="sub_depth", teacher=teacher_cfg)
    apply_fn, variables = train_or_load("student", cfg, "checkpoints", teacher)

**Self** (`method="self"`): a DepthNet with log σ heads (σ = exp(u)) trained only on
|d_s − d_T|/σ_s + log σ_s, averaged over the 4 scales (each upsampled bilinearly to
full resolution) and pixels; d_T is the teacher's full-resolution sigmoid disparity on
the same (augmented) input. No pose network, no photometric loss.

**SUB-Depth** (`method="sub_depth"`): the student framework is the self-supervised one
of `student` (mode M by default: PoseNet, frames −1/+1, the same photometric terms as
`selfsup`), plus the distillation task (`losses.distill.sub_depth_loss`):
- `form="pixel"` (default, the released trainer): the student is a DepthNet whose σ
  head is a sigmoid (σ_reg ∈ (0,1), SUB-Depth's second output channel); a photometric
  `UncertNet` sees [target, source] (jittered, as the networks' inputs) per source and
  its σ_pho maps are averaged over the sources;
- `form="scalar"`: one learned log σ per task (Kendall et al.), a plain DepthNet;
- `form="manual"`: ω_pho·ℓ_pho + ω_reg·ℓ_reg with `w_pho`, `w_reg` (Table 1's grid is
  `losses.distill.TABLE1_WEIGHTS`; (0, 1) is the "ℓ_regression" row of Table 5,
  (0.5, 0.5) its "1:1 weighted" row).

**The teacher** is frozen and runs in inference mode (BatchNorm running averages) on the
student's augmented input (SUB-Depth feeds it `color_aug`). The released SUB-Depth
trainer put the teacher in train mode by mistake (`set_train`), so its BatchNorm used
batch statistics: `teacher_bn="batch"` reproduces that (the running averages are not
updated either way).

Optimisation as every trainer (`jaxdepth.train.state`: Adam, ×0.1 step; lr and the drop
step live in the state); the student's `run` is the distillation run. A MonoViT student
(`student.arch="monovit"`, either teacher) trains with the student's optimiser (MonoViT's
AdamW by default: its encoder at ½ `lr`, decoder, pose and uncertainty networks at `lr`).
The student, pose and uncertainty networks start from random weights (the paper starts
the depth encoder from ImageNet).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxdepth.losses.distill import FORMS, self_teaching_loss, sub_depth_loss
from jaxdepth.models import DepthNet, MonoViT, UncertNet
from jaxdepth.models.uncertnet import mean_sigma
from jaxdepth.train import arch as arch_
from jaxdepth.train import selfsup
from jaxdepth.train import state as train_state
from jaxdepth.train.selfsup import SelfSupConfig
from jaxdepth.train.state import new_state

METHODS = ("self", "sub_depth")
TEACHER_BN = ("inference", "batch")


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """A distillation run: `teacher` (the frozen model's config, which also keys the
    run: another teacher is another run) and `student` (sizes, steps, lr, augmentation
    and, for SUB-Depth, the photometric mode; default: the teacher's config)."""
    method: str = "sub_depth"
    teacher: SelfSupConfig = SelfSupConfig()
    student: SelfSupConfig | None = None
    form: str = "pixel"
    w_pho: float = 0.5
    w_reg: float = 0.5
    teacher_bn: str = "inference"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")
        if self.teacher_bn not in TEACHER_BN:
            raise ValueError(f"teacher_bn must be one of {TEACHER_BN}, got {self.teacher_bn!r}")
        if isinstance(self.teacher, dict):
            object.__setattr__(self, "teacher", SelfSupConfig.from_dict(self.teacher))
        if self.student is None:
            object.__setattr__(self, "student", self.teacher)
        elif isinstance(self.student, dict):
            object.__setattr__(self, "student", SelfSupConfig.from_dict(self.student))
        s, t = self.student.run, self.teacher.run
        if (s.height, s.image_width) != (t.height, t.image_width):
            raise ValueError("teacher and student must share the input size")

    @property
    def run(self):
        """The student's run: its sizes, steps, schedule, seeds and data."""
        return self.student.run

    def with_run(self, **changes) -> DistillConfig:
        return dataclasses.replace(self, student=self.student.with_run(**changes))

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**d, "teacher": self.teacher.to_dict(), "student": self.student.to_dict()}

    @classmethod
    def from_dict(cls, d) -> DistillConfig:
        return cls(**d)

    def compile_key(self) -> DistillConfig:
        return dataclasses.replace(self, teacher=self.teacher.compile_key(),
                                   student=self.student.compile_key())

    @property
    def has_pose(self) -> bool:
        return self.method == "sub_depth" and "M" in self.student.mode

    @property
    def has_uncertnet(self) -> bool:
        return self.method == "sub_depth" and self.form == "pixel"

    def model(self) -> DepthNet | MonoViT:
        """The student depth network, of the student's `arch` (σ: exp for Self, sigmoid
        for SUB-Depth's pixel form)."""
        s = self.student
        sigma = self.method == "self" or self.form == "pixel"
        return arch_.depth_model(s, log_sigma=sigma, min_depth=s.min_depth,
                                 max_depth=s.max_depth,
                                 sigma_activation="sigmoid" if self.method == "sub_depth"
                                 else "exp")

    def uncert_model(self) -> UncertNet:
        s = self.student
        return UncertNet(num_layers=s.num_layers,
                         width=s.width if s.pose_width is None else s.pose_width)

    @property
    def frame_ids(self) -> tuple:
        return self.student.frame_ids if self.method == "sub_depth" else ()


def data_keys(cfg: DistillConfig) -> tuple[str, ...]:
    return selfsup.data_keys(cfg.student.mode) if cfg.method == "sub_depth" else ("image", "K")


def init_state(cfg: DistillConfig):
    """The train state (`jaxdepth.train.state`) of a fresh student: networks `depth`,
    `pose` (SUB-Depth, M / MS), `uncert` (SUB-Depth's pixel form) and
    `task_log_sigma` (its scalar form)."""
    s = cfg.student
    run = s.run
    depth = selfsup.init_depth_variables(s, cfg.model())
    params, stats = {"depth": depth["params"]}, {"depth": depth["batch_stats"]}
    if cfg.has_pose:
        pose = s.pose_model().init_variables(jax.random.PRNGKey(run.seed + 7919), run.height,
                                             run.image_width)
        params["pose"], stats["pose"] = pose["params"], pose["batch_stats"]
    if cfg.has_uncertnet:
        unc = cfg.uncert_model().init_variables(jax.random.PRNGKey(run.seed + 104729),
                                                run.height, run.image_width)
        params["uncert"], stats["uncert"] = unc["params"], unc["batch_stats"]
    if cfg.method == "sub_depth" and cfg.form == "scalar":
        params["task_log_sigma"] = {"pho": jnp.zeros((), jnp.float32),
                                    "reg": jnp.zeros((), jnp.float32)}
    return new_state(run, params, stats, optimizer=s.optimizer_name)


def make_step(cfg: DistillConfig, teacher_variables):
    """`step(state, batch) -> (state, metrics)` with the frozen teacher's variables bound
    (passed to one jit-compiled program, replicated over the devices once)."""
    from jaxdepth.train.loop import data_mesh, replicate

    teacher = replicate(teacher_variables, data_mesh())
    compiled = _make_step(cfg.compile_key())
    return lambda state, batch: compiled(state, batch, teacher)


def _upsample(x, h, w):
    return jax.image.resize(x, (x.shape[0], h, w, x.shape[-1]), "bilinear")


@functools.lru_cache(maxsize=None)
def _make_step(cfg: DistillConfig):
    s = cfg.student
    model, teacher_model = cfg.model(), cfg.teacher.model()
    pose_net = s.pose_model() if cfg.has_pose else None
    uncert = cfg.uncert_model() if cfg.has_uncertnet else None
    ids = cfg.frame_ids
    h, w = s.run.height, s.run.image_width

    def teacher_disp(teacher_vars, images):
        if cfg.teacher_bn == "batch":  # the reference trainer's teacher-in-train-mode
            out, _ = teacher_model.apply(teacher_vars, images, train=True, mutable=["batch_stats"])
        else:
            out = teacher_model.apply(teacher_vars, images)
        return jax.lax.stop_gradient(jax.nn.sigmoid(out["scales"][0]["raw"]))

    def loss_fn(params, batch_stats, batch, key, teacher_vars):
        k_aug, key = jax.random.split(key)
        inputs = selfsup.prepare_inputs(batch, k_aug, frame_ids=ids, augment=s.run.augment,
                                        stereo_baseline=s.stereo_baseline)
        d_teacher = teacher_disp(teacher_vars, inputs["target_aug"])
        out, upd = model.apply({"params": params["depth"], "batch_stats": batch_stats["depth"]},
                               inputs["target_aug"], train=True, mutable=["batch_stats"])
        new_stats = {"depth": upd["batch_stats"]}
        scales = out["scales"][:s.num_scales]
        if cfg.method == "self":
            per_scale = [jnp.mean(self_teaching_loss(
                _upsample(jax.nn.sigmoid(e["raw"]), h, w), d_teacher,
                _upsample(e["log_sigma"], h, w))) for e in scales]
            loss = sum(per_scale) / len(per_scale)
            residual = jnp.mean(jnp.abs(jax.nn.sigmoid(scales[0]["raw"]) - d_teacher))
            return loss, (new_stats, {"regression": residual})
        pose_vars = None
        if pose_net is not None:
            pose_vars = {"params": params["pose"], "batch_stats": batch_stats["pose"]}
        transforms, pose_upd = selfsup.pose_transforms(
            pose_net.apply if pose_net else None, pose_vars, inputs, ids, train=True)
        if pose_upd is not None:
            new_stats["pose"] = pose_upd
        terms = selfsup.photometric_terms(scales, inputs, transforms, key, alpha=s.alpha,
                                          automask=s.automask)
        log_sigma_pho = None
        if uncert is not None:
            pairs = jnp.concatenate([jnp.concatenate([inputs["target_aug"], src], -1)
                                     for src in inputs["sources_aug"]], axis=0)
            u_out, u_upd = uncert.apply({"params": params["uncert"],
                                         "batch_stats": batch_stats["uncert"]},
                                        pairs, train=True, mutable=["batch_stats"])
            new_stats["uncert"] = u_upd["batch_stats"]
            b = inputs["target"].shape[0]
            log_sigma_pho = mean_sigma([u_out["log_sigma"][i * b:(i + 1) * b]
                                        for i in range(len(ids))])
        loss, parts = sub_depth_loss(
            terms["min_reprojection"], terms["smoothness"], jax.nn.sigmoid(scales[0]["raw"]),
            d_teacher, form=cfg.form, log_sigma_pho=log_sigma_pho,
            log_sigma_reg=scales[0].get("log_sigma"), task_log_sigma=params.get("task_log_sigma"),
            weights=(cfg.w_pho, cfg.w_reg), smoothness_weight=s.smoothness)
        return loss, (new_stats, parts)

    return train_state.make_step(loss_fn)


def variables_of(state):
    """The student DepthNet's variables of a train state."""
    return selfsup.variables_of(state)


def train_or_load(name: str | None, cfg: DistillConfig, checkpoints, teacher_variables=None,
                  *, data=None, no_train: bool = False, progress: bool = True):
    """`(apply_fn, variables)` of the finished student (trained or resumed first if
    needed) in `checkpoints/<name>-<config hash>`; `teacher_variables` must be those of
    `cfg.teacher` (None: the teacher run is trained or reused first)."""
    from jaxdepth.train import recipes

    return recipes.train_or_load(cfg, checkpoints, name=name, data=data,
                                 teacher_variables=teacher_variables, train=not no_train,
                                 progress=progress)
