"""NeWCRFs' supervised trainer and ADU-Depth's stereo teacher and distilled student
(Yuan et al., CVPR 2022; Wu et al., CoRL 2022), as a loss and a config over the shared
skeleton (`jaxdepth.train.state.make_step`, `jaxdepth.train.runs.train_or_load`).

    teacher = NeWCRFsConfig(encoder="micro", crf_scale=1 / 16, stereo=True, run=run)
    cfg = AduConfig(teacher=teacher)                      # student: the teacher's network + UEM
    apply_fn, variables = recipes.train_or_load(cfg, "checkpoints")   # trains the teacher first

**Base training** (`NeWCRFsConfig`; recipes `newcrfs`, and `adu-teacher` with
`stereo=True`): NeWCRFs (`jaxdepth.models.NeWCRFs`) trained with the SILog loss L_b =
10·sqrt(mean d² − 0.85·mean(d)²), d = log pred − log gt over the valid pixels of the
whole batch (gt finite, > `gt_min` = 1 m — NeWCRFs' KITTI mask — and ≤ `max_depth`),
with NeWCRFs' optimiser: Adam (β 0.9 / 0.999, ε 1e-8, no weight decay) and polynomial
decay (power 0.9) from `lr` to 0.1·`lr` over the run, updated every step (`"newcrfs"` in
`jaxdepth.train.state`). The stereo teacher (`stereo=True`) is the same network with a
6-channel patch embedding, fed the left and right views concatenated on channels.
The Swin's stochastic depth (`drop_path_rate`, 0.3 as released) is on in training.

**Augmentation** (`run.augment`): horizontal flip p = 0.5 and, with p = 0.5, NeWCRFs'
colour augmentation — gamma U[0.9, 1.1], brightness U[0.9, 1.1], a colour factor
U[0.9, 1.1] per channel, clipped to [0, 1] — the same draw for both views of a pair. A
stereo pair is flipped as a mirrored rig: the new target is the flipped *right* view with
the right view's depth, the new right view the flipped left one (so the other camera stays
on the right, the arrangement the teacher reads; `depth_right` is in every stereo
sample). NeWCRFs' ±1° rotation is not done (KITTI's random crop is the loader's:
`jaxdepth.data.training`, `needs="stereo_depth"`).

**ADU student** (`AduConfig`, recipe `adu-student`): NeWCRFs with the UEM (`uem=True`,
by default the teacher's encoder and CRF sizes), trained with Eq. 9 of ADU-Depth
(`jaxdepth.losses.adu.adu_total_loss`, switches and weights in `loss`, an
`AduLossConfig`): L = L_b + λ1·L_umr + λ2·L_umf + λ3·L_focal against the frozen
teacher, which runs in inference mode (BatchNorm running averages, no drop path) on the
same augmented pair and whose outputs carry no gradient. Features: the four encoder
stages `enc0`…`enc3` and the four CRF outputs `crf0`…`crf3` (the "multi-level decoded
features"), each student level mapped to the teacher's channels by Eq. 1's self-attention
(`jaxdepth.models.adapter.MultiLevelAdapter`, one for the encoder and one for the
decoder, `attention` / `pool_tokens` / `num_heads`; g = identity unless
`restore="conv"`). The adapters' parameters live in the train state beside the student's
(`params["adapter_enc"]`, `params["adapter_dec"]`), train with the same optimiser and are
not exported: at inference the student is a plain NeWCRFs (+ the UEM head). With every
module off (`AduLossConfig.baseline()`) the teacher is not run and the step is the base
trainer's on the student network (the Table 4 baseline).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxdepth.losses import adu as adu_losses
from jaxdepth.losses.adu import AduLossConfig
from jaxdepth.models import swin
from jaxdepth.models.adapter import ATTENTION_FORMS, RESTORE_FORMS, MultiLevelAdapter
from jaxdepth.models.newcrfs import ENCODER_TAPS, NeWCRFs
from jaxdepth.train import state as train_state
from jaxdepth.train.config import RunConfig, flat_dict

__all__ = ["NeWCRFsConfig", "AduConfig", "ENCODERS", "DECODER_LEVELS", "init_state",
           "make_step", "variables_of", "base_loss_fn", "adu_loss_fn", "stereo_augment",
           "check_batch", "check_teacher", "data_keys"]

ENCODERS = tuple(swin.SIZES)
#: the "multi-level decoded features" distilled: the CRF outputs at 1/4 … 1/32
DECODER_LEVELS = ("crf0", "crf1", "crf2", "crf3")
STEREO_KEYS = ("image", "image_right", "depth", "depth_right")


@dataclasses.dataclass(frozen=True)
class NeWCRFsConfig:
    """A NeWCRFs run (base training: recipe `newcrfs`; `stereo=True`: ADU-Depth's stereo
    teacher, recipe `adu-teacher`). `encoder`: Swin size (`large` as released, `micro`
    for tests and CPU runs); `crf_scale`: width multiplier of the CRFs and PSP head;
    `window`: the Swin window; `uem`: the uncertainty module (the ADU student's network);
    `gt_min`: valid ground truth is > `gt_min` (NeWCRFs' KITTI mask, 1 m)."""
    encoder: str = "large"
    crf_scale: float = 1.0
    window: int = 7
    max_depth: float = 80.0
    stereo: bool = False
    uem: bool = False
    drop_path_rate: float = 0.3
    gt_min: float = 1.0
    variance_focus: float = 0.85
    silog_scale: float = 10.0
    run: RunConfig = RunConfig(height=352, image_width=1120, batch_size=8, steps=1000, lr=2e-5)

    def __post_init__(self):
        if isinstance(self.run, dict):
            object.__setattr__(self, "run", RunConfig.from_dict(self.run))
        swin.swin_size(self.encoder)  # a clear error for an unknown size
        if not self.crf_scale > 0:
            raise ValueError(f"crf_scale must be > 0, got {self.crf_scale!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if self.run.data == "nyu" and self.stereo:
            raise ValueError("NYU holds single frames: the stereo teacher needs the right view "
                             "(train it on data='kitti' or 'synthetic')")

    @property
    def in_channels(self) -> int:
        return 6 if self.stereo else 3

    def model(self) -> NeWCRFs:
        return NeWCRFs(encoder=self.encoder, window=self.window, max_depth=self.max_depth,
                       in_channels=self.in_channels, uem=self.uem, crf_scale=self.crf_scale,
                       drop_path_rate=self.drop_path_rate)

    def with_run(self, **changes) -> NeWCRFsConfig:
        return dataclasses.replace(self, run=dataclasses.replace(self.run, **changes))

    def to_dict(self) -> dict[str, Any]:
        return {"net": "newcrfs", **flat_dict(self)}

    @classmethod
    def from_dict(cls, d) -> NeWCRFsConfig:
        names = {f.name for f in dataclasses.fields(cls)} - {"run"}
        return cls(run=RunConfig.from_dict(d), **{k: v for k, v in d.items() if k in names})

    def compile_key(self) -> NeWCRFsConfig:
        return dataclasses.replace(self, run=self.run.compile_key())

    optimizer_name = "newcrfs"


@dataclasses.dataclass(frozen=True)
class AduConfig:
    """An ADU-Depth student run: the frozen `teacher` (a stereo `NeWCRFsConfig`, which
    also keys the run), the `student` network and run (default: the teacher's network
    with the UEM and without the stereo input, on the teacher's run), the loss (`loss`,
    Eq. 9's switches and weights) and the adapters (`attention`, `pool_tokens`,
    `num_heads`, `restore`: `jaxdepth.models.adapter`)."""
    teacher: NeWCRFsConfig = NeWCRFsConfig(stereo=True)
    student: NeWCRFsConfig | None = None
    loss: AduLossConfig = AduLossConfig()
    attention: str = "pooled"
    pool_tokens: int = 256
    num_heads: int = 1
    restore: str = "identity"

    def __post_init__(self):
        if isinstance(self.teacher, dict):
            object.__setattr__(self, "teacher", NeWCRFsConfig.from_dict(self.teacher))
        if isinstance(self.student, dict):
            object.__setattr__(self, "student", NeWCRFsConfig.from_dict(self.student))
        if isinstance(self.loss, dict):
            object.__setattr__(self, "loss", AduLossConfig(**self.loss))
        if not isinstance(self.teacher, NeWCRFsConfig):
            raise ValueError(f"the ADU-Depth teacher must be a NeWCRFs stereo config, got "
                             f"{type(self.teacher).__name__}")
        if not self.teacher.stereo:
            raise ValueError("the ADU-Depth teacher must be the stereo NeWCRFs (in_channels 6, "
                             "recipe adu-teacher); this one takes 3 channels")
        if self.student is None:
            object.__setattr__(self, "student", dataclasses.replace(
                self.teacher, stereo=False, uem=True))
        if self.student.stereo or not self.student.uem:
            raise ValueError("the ADU-Depth student is a monocular NeWCRFs with the UEM "
                             "(stereo=False, uem=True)")
        s, t = self.student.run, self.teacher.run
        if (s.height, s.image_width) != (t.height, t.image_width):
            raise ValueError(f"teacher ({t.height}×{t.image_width}) and student "
                             f"({s.height}×{s.image_width}) must share the input size")
        if self.attention not in ATTENTION_FORMS:
            raise ValueError(f"attention must be one of {ATTENTION_FORMS}, got {self.attention!r}")
        if self.restore not in RESTORE_FORMS:
            raise ValueError(f"restore must be one of {RESTORE_FORMS}, got {self.restore!r}")

    @property
    def run(self) -> RunConfig:
        return self.student.run

    @property
    def uses_teacher(self) -> bool:
        c = self.loss
        return c.feature_distill or c.focal_depth or c.soft_label

    @property
    def has_sigma(self) -> bool:
        """Whether the UEM is trained (an uncertainty-weighted term is on)."""
        c = self.loss
        return c.uncertainty and (c.feature_distill or c.soft_label)

    def with_run(self, **changes) -> AduConfig:
        return dataclasses.replace(self, student=self.student.with_run(**changes))

    def model(self) -> NeWCRFs:
        return self.student.model()

    def adapters(self) -> tuple[MultiLevelAdapter, MultiLevelAdapter]:
        """The encoder and decoder adapters (student levels → the teacher's channels)."""
        enc, dec = level_channels(self.teacher)
        kw = dict(num_heads=self.num_heads, attention=self.attention,
                  pool_tokens=self.pool_tokens, restore=self.restore)
        return MultiLevelAdapter(out_channels=enc, **kw), MultiLevelAdapter(out_channels=dec, **kw)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"net": "adu", **d, "teacher": self.teacher.to_dict(),
                "student": self.student.to_dict(), "loss": dataclasses.asdict(self.loss)}

    @classmethod
    def from_dict(cls, d) -> AduConfig:
        return cls(**{k: v for k, v in d.items() if k != "net"})

    def compile_key(self) -> AduConfig:
        return dataclasses.replace(self, teacher=self.teacher.compile_key(),
                                   student=self.student.compile_key())

    optimizer_name = "newcrfs"


def level_channels(cfg: NeWCRFsConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(encoder channels of enc0…enc3, decoder channels of crf0…crf3) of a network."""
    shapes = feature_shapes(cfg)
    return (tuple(shapes[t][-1] for t in ENCODER_TAPS),
            tuple(shapes[t][-1] for t in DECODER_LEVELS))


@functools.lru_cache(maxsize=None)
def feature_shapes(cfg: NeWCRFsConfig) -> dict[str, tuple]:
    """Tap → shape of a batch of one at the run's size (`jax.eval_shape`, nothing runs)."""
    model = cfg.model()
    x = jax.ShapeDtypeStruct((1, cfg.run.height, cfg.run.image_width, cfg.in_channels),
                             jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    out = jax.eval_shape(model.apply, variables, x)
    return {k: tuple(v.shape) for k, v in out["features"].items()}


def data_keys(cfg) -> tuple[str, ...]:
    """Sample keys the step reads (`jaxdepth.data.training` needs)."""
    if isinstance(cfg, NeWCRFsConfig) and not cfg.stereo:
        return ("image", "depth")
    return STEREO_KEYS


# ----------------------------------------------------------------------------- checks

def check_batch(cfg, batch) -> None:
    """A clear error for a batch that lacks what the step reads (a stereo sample without
    its right view, depth of another size, ...)."""
    keys = data_keys(cfg)
    missing = [k for k in keys if k not in batch]
    what = ("the ADU-Depth student (its teacher reads the stereo pair)" if isinstance(cfg, AduConfig)
            else "the stereo teacher" if cfg.stereo else "NeWCRFs")
    if missing:
        hint = (" — a stereo sample needs its right view (image_right) and the depth of both "
                "views (training_data(..., needs='stereo_depth'))" if "image_right" in keys else "")
        raise ValueError(f"{what} needs batch keys {list(keys)}; missing {missing}{hint}")
    b, h, w = jnp.shape(batch["image"])[:3]
    run = cfg.run
    for k in keys:
        shape = tuple(jnp.shape(batch[k]))
        want = (b, h, w, 1 if k.startswith("depth") else 3)
        if shape != want:
            raise ValueError(f"batch[{k!r}] must be {list(want)}, got {list(shape)}")
    if (h, w) != (run.height, run.image_width):
        raise ValueError(f"the run trains at {run.height}×{run.image_width}, the batch is {h}×{w}")


def check_teacher(cfg: AduConfig, teacher_variables) -> None:
    """The teacher's variables must be those of `cfg.teacher`'s network (a 6-channel
    stereo NeWCRFs of that size); otherwise a ValueError naming the difference."""
    from flax import traverse_util

    from jaxdepth.export import check_variables

    params = teacher_variables.get("params", {}) if isinstance(teacher_variables, dict) else {}
    kernel = (((params.get("backbone") or {}).get("patch_embed") or {}).get("proj") or {}).get(
        "kernel")
    if kernel is None:
        raise ValueError("the teacher's variables are not a NeWCRFs network's (no "
                         "backbone/patch_embed/proj/kernel): ADU-Depth distils a stereo NeWCRFs "
                         "teacher (recipe adu-teacher)")
    if kernel.shape[2] != 6:
        raise ValueError(f"the teacher's patch embedding takes {kernel.shape[2]} input channels; "
                         "ADU-Depth's teacher is the stereo NeWCRFs (left ‖ right: 6 channels, "
                         "recipe adu-teacher)")
    model = cfg.teacher.model()
    x = jax.ShapeDtypeStruct((1, 64, 64, 6), jnp.float32)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    abstract = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    flat = traverse_util.flatten_dict({"params": params,
                                       "batch_stats": teacher_variables.get("batch_stats", {})})
    check_variables(flat, abstract, "the teacher's variables", error=ValueError)


# ----------------------------------------------------------------------------- augmentation

def _color_aug(key, images, p: float = 0.5):
    """NeWCRFs' colour augmentation of `[B,H,W,C]` (C = 3 or a pair's 6, one draw per
    sample): gamma, brightness, per-channel colour U[0.9, 1.1], clipped to [0, 1]."""
    b = images.shape[0]
    k_apply, k_g, k_b, k_c = jax.random.split(key, 4)
    gamma = jax.random.uniform(k_g, (b, 1, 1, 1), minval=0.9, maxval=1.1)
    bright = jax.random.uniform(k_b, (b, 1, 1, 1), minval=0.9, maxval=1.1)
    colour = jax.random.uniform(k_c, (b, 1, 1, 3), minval=0.9, maxval=1.1)
    colour = jnp.tile(colour, (1, 1, 1, images.shape[-1] // 3))
    x = jnp.clip((jnp.clip(images, 0.0, 1.0) ** gamma) * bright * colour, 0.0, 1.0)
    apply = jax.random.bernoulli(k_apply, p, (b, 1, 1, 1))
    return jnp.where(apply, x, images)


def stereo_augment(key, batch, stereo: bool):
    """`(image, image_right or None, depth)` after the flip and colour augmentation (module
    doc): a flipped pair swaps its views (the flipped right view with its depth becomes
    the target)."""
    k_flip, k_col = jax.random.split(key)
    image, depth = batch["image"], batch["depth"]
    b = image.shape[0]
    flip = jax.random.bernoulli(k_flip, 0.5, (b,))[:, None, None, None]
    mirror = lambda a: a[:, :, ::-1]
    if not stereo:
        image = jnp.where(flip, mirror(image), image)
        depth = jnp.where(flip, mirror(depth), depth)
        return _color_aug(k_col, image), None, depth
    right = batch["image_right"]
    new_image = jnp.where(flip, mirror(right), image)
    new_right = jnp.where(flip, mirror(image), right)
    depth = jnp.where(flip, mirror(batch["depth_right"]), depth)
    pair = _color_aug(k_col, jnp.concatenate([new_image, new_right], -1))
    return pair[..., :3], pair[..., 3:], depth


def _inputs(cfg, batch, key, stereo: bool):
    if cfg.run.augment:
        return stereo_augment(key, batch, stereo)
    return batch["image"], batch.get("image_right") if stereo else None, batch["depth"]


def valid_mask(depth, cfg: NeWCRFsConfig):
    return jnp.isfinite(depth) & (depth > cfg.gt_min) & (depth <= cfg.max_depth)


# ----------------------------------------------------------------------------- losses

def base_loss_fn(cfg: NeWCRFsConfig):
    """`loss_fn(params, batch_stats, batch, key)` of base training (SILog, L_b)."""
    model = cfg.model()

    def loss_fn(params, batch_stats, batch, key):
        k_aug, k_drop = jax.random.split(key)
        image, right, depth = _inputs(cfg, batch, k_aug, cfg.stereo)
        x = jnp.concatenate([image, right], -1) if cfg.stereo else image
        out, upd = model.apply({"params": params["depth"], "batch_stats": batch_stats["depth"]},
                               x, train=True, mutable=["batch_stats"], dropout_rng=k_drop)
        loss = adu_losses.silog_loss(out["depth"], depth, valid_mask(depth, cfg),
                                     cfg.variance_focus, cfg.silog_scale)
        return loss, ({"depth": upd["batch_stats"]}, {})

    return loss_fn


def adu_loss_fn(cfg: AduConfig):
    """`loss_fn(params, batch_stats, batch, key, teacher_variables)` of the ADU student
    (Eq. 9; `parts` of `adu_total_loss` as metrics)."""
    s = cfg.student
    model, teacher = s.model(), cfg.teacher.model()
    enc_adapter, dec_adapter = cfg.adapters()
    c = cfg.loss
    loss_cfg = dataclasses.replace(c, variance_focus=s.variance_focus, silog_scale=s.silog_scale)

    def loss_fn(params, batch_stats, batch, key, teacher_vars):
        k_aug, k_drop = jax.random.split(key)
        image, right, depth = _inputs(s, batch, k_aug, True)
        mask = valid_mask(depth, s)
        out, upd = model.apply({"params": params["depth"], "batch_stats": batch_stats["depth"]},
                               image, train=True, mutable=["batch_stats"], dropout_rng=k_drop)
        kw = {}
        if cfg.uses_teacher:
            t_out = jax.lax.stop_gradient(
                teacher.apply(teacher_vars, jnp.concatenate([image, right], -1)))
            kw["teacher_depth"] = t_out["depth"]
            if c.feature_distill:
                f = out["features"]
                enc = [f[t] for t in ENCODER_TAPS]
                dec = [f[t] for t in DECODER_LEVELS]
                lv_enc = lv_dec = None
                if cfg.restore == "conv":
                    lv_enc = adu_losses.uncertainty_pyramid(out["log_var"], enc)
                    lv_dec = adu_losses.uncertainty_pyramid(out["log_var"], dec)
                kw["student_feats"] = (
                    enc_adapter.apply({"params": params["adapter_enc"]}, enc, lv_enc)
                    + dec_adapter.apply({"params": params["adapter_dec"]}, dec, lv_dec))
                kw["teacher_feats"] = ([t_out["features"][t] for t in ENCODER_TAPS]
                                       + [t_out["features"][t] for t in DECODER_LEVELS])
        total, parts = adu_losses.adu_total_loss(out["depth"], depth, mask,
                                                 log_var=out.get("log_var"), config=loss_cfg, **kw)
        metrics = {k: v for k, v in parts.items() if k != "total"}
        return total, ({"depth": upd["batch_stats"]}, metrics)

    return loss_fn


# ----------------------------------------------------------------------------- state, step

def _network_variables(cfg: NeWCRFsConfig):
    return cfg.model().init_variables(jax.random.PRNGKey(cfg.run.seed), cfg.run.height,
                                      cfg.run.image_width)


def init_state(cfg):
    """The train state of a fresh run: `params` / `batch_stats` under `depth`, and for an
    ADU student with feature distillation the adapters under `adapter_enc`, `adapter_dec`."""
    net = cfg.student if isinstance(cfg, AduConfig) else cfg
    v = _network_variables(net)
    params, stats = {"depth": v["params"]}, {"depth": v.get("batch_stats", {})}
    if isinstance(cfg, AduConfig) and cfg.loss.feature_distill:
        shapes = feature_shapes(cfg.student)
        enc_adapter, dec_adapter = cfg.adapters()
        for name, adapter, taps, seed in (("adapter_enc", enc_adapter, ENCODER_TAPS, 101),
                                          ("adapter_dec", dec_adapter, DECODER_LEVELS, 202)):
            feats = [jnp.zeros(shapes[t]) for t in taps]
            lv = [jnp.zeros(shapes[t][:-1] + (1,)) for t in taps] if cfg.restore == "conv" else None
            params[name] = adapter.init(jax.random.PRNGKey(cfg.run.seed + seed), feats, lv)["params"]
    return train_state.new_state(cfg.run, params, stats, optimizer="newcrfs")


def make_step(cfg, teacher_variables=None):
    """`step(state, batch) -> (state, metrics)`; an `AduConfig` needs the frozen teacher's
    variables (checked against `cfg.teacher`, replicated once over the devices)."""
    if isinstance(cfg, AduConfig):
        from jaxdepth.train.loop import data_mesh, replicate

        if teacher_variables is None:
            raise ValueError("the ADU-Depth student needs its teacher's variables "
                             "(recipes.train_or_load trains or loads the teacher first)")
        check_teacher(cfg, teacher_variables)
        teacher = replicate({"params": teacher_variables["params"],
                             "batch_stats": teacher_variables.get("batch_stats", {})},
                            data_mesh())
        compiled = _adu_step(cfg.compile_key())

        def step(state, batch):
            check_batch(cfg, batch)
            return compiled(state, batch, teacher)
        return step
    compiled = _base_step(cfg.compile_key())

    def step(state, batch):
        check_batch(cfg, batch)
        return compiled(state, batch)
    return step


@functools.lru_cache(maxsize=None)
def _base_step(cfg: NeWCRFsConfig):
    # NeWCRFs' window attention reshapes the batch-sharded maps: Auto sharding mode
    return train_state.make_step(base_loss_fn(cfg), auto_sharding=True)


@functools.lru_cache(maxsize=None)
def _adu_step(cfg: AduConfig):
    return train_state.make_step(adu_loss_fn(cfg), auto_sharding=True)


def variables_of(state):
    """The depth network's variables (`params`, `batch_stats`) of a train state."""
    return {"params": state["params"]["depth"], "batch_stats": state["batch_stats"]["depth"]}
