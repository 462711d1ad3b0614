"""Self-supervised Monodepth2 training (modes M, S, MS) and Poggi et al.'s Log and Drop
variants, written from the recipe of docs/training.md §3–4.

    cfg = SelfSupConfig(mode="M", steps=1000)
    apply_fn, variables = train_or_load("m", cfg, "checkpoints")   # DepthNet.apply contract

**Sources.** Target frame 0; M: frames −1 and +1 with PoseNet transforms (pairs in
temporal order, the −1 transform inverted); S: the right view with the scene's known
transform `stereo_T` (no pose network); MS: all three.

**Loss** (per scale s = 0..3, then the mean over scales):
- the scale's disparity is upsampled bilinearly to the input size, and every source is
  warped at full resolution with `geometry.warp` (border padding; pixel centres at
  integer coordinates, `jaxdepth.geometry`'s documented convention) and the full-size K;
- photometric error 0.85·clip((1−SSIM)/2, 0, 1) + 0.15·L1 (`losses.photometric`);
  per-pixel minimum over [identity errors of the unwarped sources + 1e-5·N(0,1),
  reprojection errors] — the auto-mask — averaged over pixels;
- edge-aware smoothness of the mean-normalised sigmoid disparity at the scale's own
  resolution, with the target image average-pooled to that resolution (Monodepth2's
  pyramid is PIL-antialiased halving), weighted `smoothness`/2^s;
- Log (`variant="log"`): the photometric term is the Laplace likelihood
  p/σ + log σ with σ = exp(u), u the scale's log σ head upsampled to full resolution
  (Poggi et al., issues #16/#23 of mono-uncertainty); smoothness unchanged.
- Drop (`variant="drop"`): the loss is unchanged and the depth decoder trains with
  channel dropout at rate `dropout` after every block (the model behind MC dropout,
  `uncertainty.mc_drop`; Poggi et al.'s Drop, p = 0.2).

**Augmentation** (`augment=True`): a horizontal flip (p = 0.5) of every frame of a
sample and colour jitter (p = 0.5; brightness, contrast, saturation 0.8–1.2, hue ±0.1,
one draw for all frames of a sample). The jittered frames feed only the networks; the
losses see the un-jittered (but flipped) frames. A flip mirrors the world (x → −x), so
it is handled exactly rather than by Monodepth2's sign convention: the known stereo
transform becomes M·T·M with M = diag(−1, 1, 1, 1) (t_x = −b → +b) and the principal
point c_x → W − 1 − c_x (pixel centres at integers); the pose network sees the flipped
frames and predicts the mirrored motion, consistently with the flipped images it warps.

**Metric scale.** S / MS warp with the scene's stereo transform with its |t_x| replaced
by `stereo_baseline` (default 0.1, Monodepth2's KITTI convention), so a stereo model's
depth is true depth × 0.1 / baseline and `stereo_scale_factor(cfg)` = baseline / 0.1
turns it into metres (5.4 for KITTI's 0.54 m rig, and for the procedural scenes, whose
rig is 0.54 m too: the ×5.4 of the KITTI stereo evaluation). `stereo_baseline=None`
uses the metric transform as is (the model then predicts metres); from random weights
that stalls on the procedural scenes at 64×192: the initial disparity (sigmoid 0.5 →
depth ≈ 0.2 units) shifts every pixel by more than the image width, all samples hit the
clamped border, and the photometric loss has no gradient. M models have no scale:
evaluate them with per-image median scaling.

**Starting from random weights** (Monodepth2 starts both encoders from ImageNet; there
is none here), two settings differ from the reference, each measured on the procedural
scenes at 64×192 (width 0.25, lr 1e-3):
- `init_depth` = 10 (units): the disparity heads' bias starts at that depth, as the
  supervised trainer's. With the reference's sigmoid 0.5 (depth ≈ 0.2 units) the stereo
  shift f·0.1/0.2 ≈ 55 px sends every sample to the clamped border and S / MS collapse
  to the near limit; from 10 units S reaches abs_rel 0.15 (×5.4) in 200 steps.
- `pose_scale` = 0.1 (the reference: 0.01): PoseNet's output factor. With 0.01 a random
  pose decoder predicts translations ≈ 0.005 units, the depth that matches them lies
  below `min_depth`, and M drives every disparity to the near limit (sigmoid → 1);
  with 0.1 the predicted translation reaches the true direction (cosine 0.92–0.97)
  and ≈ 85 % of its length within 300 steps. `pose_scale=0.01, init_depth=None` is
  the reference.
**M needs longer.** An M run must find the camera motion before depth can follow: with
the true poses the same depth network learns in 25 steps, with PoseNet the predicted
translation wobbles (cosine 0.6–0.98 with the true one) until ≈ 900 steps, and only
then does depth structure appear (64×192, width 0.25, lr 1e-3; abs_rel after median
scaling on 16 test images 0.36 at step 600, 0.26 at 1000, 0.23 at 1500; on the 64 of
`experiments/selfsup_baseline.py` 0.239 after 1500 steps against 0.467 for a constant
depth). S and MS, anchored by the known stereo transform, learn in ≈ 200 steps. The
experiments therefore train M runs for `steps_for("M", steps)` = `M_STEPS_FACTOR` × the
S / MS steps.

**M's Log and Drop start from the plain model.** Poggi et al.'s variants start, as every
Monodepth2 model, from ImageNet weights. From random weights an M model's free scale
lets them drift into the saturated sigmoid: trained from scratch for 1250 steps
(64×192, width 0.25), M Drop collapsed to the near limit (mean sigmoid 1.0, every depth
at `min_depth`, abs_rel 0.467 = a constant depth) and M Log drifted to mean sigmoid 0.81
(abs_rel 0.385 vs 0.264 for plain M). Dropout noise and a learned σ both push the
decoder towards the near limit, where the output no longer reacts to them and the
pose translation shrinks with the depth. So `variant_config` fine-tunes M's variants:
`fine_tune_config(plain, variant)` sets `start_from` = the finished plain run (its
weights; a Log run's σ heads random) and trains the same number of steps again at
`FINE_TUNE_LR` = 0.1 × its learning rate (Monodepth2's 1e-4 from pretrained weights
against our 1e-3 from random ones). Then neither collapses: on 64 test images M Drop
reaches abs_rel 0.271 (MC mean) and M Log 0.358, against 0.264 for plain M
(`experiments/kitti_grad_unc.py --selfsup M S`). S and MS, whose scale the stereo
baseline fixes, train their variants from random weights: fine-tuned, S Drop's depth
got worse (deterministic abs_rel on 32 test images 0.288 against 0.215 from scratch and
0.134 for plain S; the small decoder trained without dropout adapts badly to it at the
low rate).

**MonoViT** (`arch="monovit"`, `monovit_size`): the depth network is MonoViT
(`jaxdepth.train.arch`) with the same heads, losses and initialisation; PoseNet stays the
ResNet of `num_layers`, as in MonoViT's released trainer. It trains by default with
MonoViT's optimiser: AdamW (weight decay 0.01), depth encoder at ½ `lr`, depth decoder and
PoseNet at `lr`, ×0.9 per epoch (`jaxdepth.train.state`, `"monovit"`).

**Optimisation.** Adam (β = 0.9, 0.999), learning rate `lr` with one ×0.1 step at
`lr_drop_at`·steps (Monodepth2: 1e-4 for 14 of 20 epochs from ImageNet weights; from
random weights, as here, 1e-3 trains in a few hundred steps). The learning rate and its
drop step live in the train state, so runs differing only in seeds, steps, lr or data size
share one compiled step. BatchNorm of depth and pose networks uses batch statistics in
training (both pose pairs in one batched call) and running averages for inference.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxdepth import geometry
from jaxdepth.losses.nll import laplace_nll
from jaxdepth.losses.photometric import min_reprojection, photometric_error, smoothness
from jaxdepth.models import DepthNet, MonoViT, PoseNet
from jaxdepth.train import arch as arch_
from jaxdepth.train import state as train_state
from jaxdepth.train.augment import color_jitter, random_flip
from jaxdepth.train.config import RunConfig, flat_dict, method_from_dict
from jaxdepth.train.runs import run_dir  # noqa: F401  (public name of the earlier API)
from jaxdepth.train.state import new_state, overlay
from jaxdepth.train.supervised import with_head_bias

MODES = ("M", "S", "MS")
VARIANTS = ("plain", "log", "drop")
#: Steps of a monocular (M) run per step of an S / MS run (see "M needs longer").
M_STEPS_FACTOR = 2.5
#: Learning rate of a variant fine-tuned from its plain model, relative to the plain run's.
FINE_TUNE_LR = 0.1
_MIRROR = jnp.diag(jnp.array([-1.0, 1.0, 1.0, 1.0], jnp.float32))


@dataclasses.dataclass(frozen=True)
class SelfSupConfig:
    """Everything that decides a self-supervised run's result (saved with its checkpoints):
    the method's fields and the embedded `run` (`jaxdepth.train.config.RunConfig`)."""
    mode: str = "M"
    variant: str = "plain"
    dropout: float = 0.2  # channel-dropout rate of the "drop" variant (training and MC)
    num_layers: int = 18
    width: float = 0.25
    pose_width: float | None = None  # None: same as `width`
    pose_scale: float = 0.1
    init_depth: float | None = 10.0
    alpha: float = 0.85
    smoothness: float = 1e-3
    num_scales: int = 4
    automask: bool = True
    stereo_baseline: float | None = 0.1  # Monodepth2's |t_x|; None: the scene's own stereo_T
    min_depth: float = 0.1
    max_depth: float = 100.0
    moving_objects: bool = False
    arch: str = "monodepth2"       # or "monovit" (jaxdepth.train.arch)
    monovit_size: str = "small"
    optimizer: str | None = None   # None: the arch's ("adam" / "monovit")
    start_from: SelfSupConfig | None = None  # a run whose final weights start this one
    run: RunConfig = RunConfig(height=64, image_width=192, steps=1000, lr=1e-3)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if not 1 <= self.num_scales <= 4:
            raise ValueError(f"num_scales must be 1..4, got {self.num_scales}")
        arch_.check(self)
        start = self.start_from
        if isinstance(start, dict):
            object.__setattr__(self, "start_from", SelfSupConfig.from_dict(start))
            start = self.start_from
        if start is not None:
            fields = ("mode", "num_layers", "width", "pose_width", "min_depth", "max_depth",
                      "arch", "monovit_size")
            differ = [f for f in fields if getattr(start, f) != getattr(self, f)]
            differ += [f for f in ("height", "image_width")
                       if getattr(start.run, f) != getattr(self.run, f)]
            if differ:
                raise ValueError(f"start_from must share the networks and mode of the run it "
                                 f"starts; it differs in {differ}")

    def with_run(self, **changes) -> SelfSupConfig:
        return dataclasses.replace(self, run=dataclasses.replace(self.run, **changes))

    def to_dict(self) -> dict[str, Any]:
        d = flat_dict(self)
        if self.variant != "drop":
            del d["dropout"]  # configs written before the field existed stay equal
        if self.start_from is None:
            del d["start_from"]
        else:
            d["start_from"] = self.start_from.to_dict()
        return arch_.drop_defaults(self, d)

    @classmethod
    def from_dict(cls, d) -> SelfSupConfig:
        start = d.get("start_from")
        return method_from_dict(cls, d, start_from=None if start is None
                                else cls.from_dict(start))

    def compile_key(self) -> SelfSupConfig:
        """The config with the fields that only enter the state or the data zeroed: runs
        differing only in them share one compiled step."""
        return dataclasses.replace(self, run=self.run.compile_key(), start_from=None)

    @property
    def optimizer_name(self) -> str:
        """The optimiser the run trains with (`jaxdepth.train.state.OPTIMIZERS`)."""
        return arch_.optimizer_of(self)

    def model(self) -> DepthNet | MonoViT:
        return arch_.depth_model(
            self, log_sigma=self.variant == "log", min_depth=self.min_depth,
            max_depth=self.max_depth,
            **({"dropout_rate": self.dropout} if self.variant == "drop" else {}))

    def pose_model(self) -> PoseNet | None:
        if "M" not in self.mode:
            return None
        return PoseNet(num_layers=self.num_layers,
                       width=self.width if self.pose_width is None else self.pose_width,
                       scale=self.pose_scale)

    @property
    def frame_ids(self) -> tuple:
        """Source ids: −1, +1 (temporal) and/or "s" (stereo)."""
        return ((-1, 1) if "M" in self.mode else ()) + (("s",) if "S" in self.mode else ())


def steps_for(mode: str, steps: int) -> int:
    """Training steps of a `mode` run in an experiment whose S / MS runs take `steps`:
    `M_STEPS_FACTOR` × `steps` for M (PoseNet has to learn the motion first)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return round(steps * M_STEPS_FACTOR) if mode == "M" else steps


def fine_tune_config(base: SelfSupConfig, variant: str, **changes) -> SelfSupConfig:
    """The `variant` run that starts from the finished plain run `base` and trains
    `base.steps` more steps at `FINE_TUNE_LR`·`base.lr` (see "M's Log and Drop start
    from the plain model")."""
    return dataclasses.replace(base, variant=variant, start_from=base,
                               run=dataclasses.replace(base.run, lr=base.run.lr * FINE_TUNE_LR),
                               **changes)


def variant_config(base: SelfSupConfig, variant: str) -> SelfSupConfig:
    """The experiments' `variant` ("log" | "drop") run of plain `base`'s recipe: M runs
    are fine-tuned from `base` (`fine_tune_config`; from random weights their free scale
    drifts), S / MS runs train from random weights as `base` (fine-tuning S Drop made its
    depth worse: see "M's Log and Drop start from the plain model")."""
    if base.mode == "M":
        return fine_tune_config(base, variant)
    return dataclasses.replace(base, variant=variant)


def data_keys(mode: str) -> tuple[str, ...]:
    """The `SyntheticSource` keys a mode needs."""
    keys = ["image", "K"]
    if "M" in mode:
        keys.append("frames")
    if "S" in mode:
        keys += ["image_right", "stereo_T"]
    return tuple(keys)


def stereo_scale_factor(cfg: SelfSupConfig, true_baseline: float = 0.54) -> float:
    """Factor turning an S/MS model's depth into metres: true baseline / the one trained
    with (5.4 for the 0.1 convention on a 0.54 m rig; 1 with `stereo_baseline=None`)."""
    return 1.0 if cfg.stereo_baseline is None else true_baseline / cfg.stereo_baseline


# ----------------------------------------------------------------------------- inputs
def prepare_inputs(batch, key, *, frame_ids, augment: bool, stereo_baseline=None):
    """Flip / jitter a batch once for every frame of a sample.

    Returns a dict: `target` `[B,H,W,3]` and `sources` (list, in `frame_ids` order) as
    the losses see them (flipped, not jittered); `target_aug`, `sources_aug` for the
    networks; `K` `[B,3,3]` and `stereo_T` `[B,4,4]` (if stereo) adjusted for the flip;
    `flip` `[B]` bool.
    """
    target = jnp.asarray(batch["image"])
    sources = []
    for f in frame_ids:
        sources.append(jnp.asarray(batch["image_right"] if f == "s" else batch["frames"][f]))
    b, _, w, _ = target.shape
    K = jnp.asarray(batch["K"])[:, :3, :3].astype(jnp.float32)
    stereo_T = None
    if "s" in frame_ids:
        stereo_T = jnp.asarray(batch["stereo_T"]).astype(jnp.float32)
        if stereo_baseline is not None:
            sign = jnp.sign(stereo_T[:, 0, 3])
            stereo_T = stereo_T.at[:, 0, 3].set(sign * stereo_baseline)
    k_flip, k_color = jax.random.split(key)
    flip = jnp.zeros((b,), bool)
    if augment:
        (target, *sources), flip = random_flip(k_flip, target, *sources)
        f = flip.astype(K.dtype)[:, None, None]
        K = K + f * (K.at[:, 0, 2].set(w - 1 - K[:, 0, 2]) - K)
        if stereo_T is not None:
            stereo_T = stereo_T + f * (_MIRROR @ stereo_T @ _MIRROR - stereo_T)
        stack = jnp.stack([target] + sources, axis=1)  # [B,T,H,W,3]: one draw per sample
        jittered = color_jitter(k_color, stack)
        target_aug = jittered[:, 0]
        sources_aug = [jittered[:, i + 1] for i in range(len(sources))]
    else:
        target_aug, sources_aug = target, list(sources)
    return {"target": target, "sources": sources, "target_aug": target_aug,
            "sources_aug": sources_aug, "K": K, "stereo_T": stereo_T, "flip": flip}


def pose_transforms(pose_apply, pose_variables, inputs, frame_ids, *, train: bool = True):
    """Target → source transforms `[B,4,4]`, one per frame id (PoseNet for ±1, the known
    stereo transform for "s"), and the pose network's batch-stat updates (or None)."""
    temporal = [f for f in frame_ids if f != "s"]
    transforms, updates = {}, None
    if temporal:
        t_aug = inputs["target_aug"]
        srcs = dict(zip(frame_ids, inputs["sources_aug"]))
        pairs = [jnp.concatenate([srcs[f], t_aug] if f < 0 else [t_aug, srcs[f]], -1)
                 for f in temporal]
        x = jnp.concatenate(pairs, axis=0)  # both pairs in one call
        if train:
            (axisangle, translation), updates = pose_apply(pose_variables, x, train=True,
                                                           mutable=["batch_stats"])
            updates = updates["batch_stats"]
        else:
            axisangle, translation = pose_apply(pose_variables, x)
        T = geometry.pose_vec_to_mat(axisangle[:, 0], translation[:, 0])
        b = inputs["target"].shape[0]
        for i, f in enumerate(temporal):
            Ti = T[i * b:(i + 1) * b]
            transforms[f] = geometry.invert_pose(Ti) if f < 0 else Ti
    if "s" in frame_ids:
        transforms["s"] = inputs["stereo_T"]
    return [transforms[f] for f in frame_ids], updates


def downsample2x(x):
    """2×2 average pooling of `[B,h,w,C]` (h, w even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def photometric_terms(scales, inputs, transforms, key, *, alpha: float = 0.85,
                      automask: bool = True):
    """Per-scale minimum reprojection maps and smoothness values.

    `scales`: the DepthNet's `scales` outputs (s = 0..S−1). Returns a dict with
    `min_reprojection` (list of `[B,H,W,1]`, full resolution), `automask` (list of bool
    maps: a reprojection won), `smoothness` (list of unweighted scalars).
    """
    target, sources = inputs["target"], inputs["sources"]
    b, h, w, _ = target.shape
    n_src, n_sc = len(sources), len(scales)
    # every (scale, source) warp in one batched call: [S·N·B, ...]
    disp_up = jnp.stack([jax.image.resize(e["disp"], (b, h, w, 1), "bilinear") for e in scales])
    depth = jnp.repeat(1.0 / disp_up[:, None], n_src, axis=1).reshape(-1, h, w, 1)
    src = jnp.stack(sources)  # [N,B,H,W,3]
    src_all = jnp.broadcast_to(src[None], (n_sc,) + src.shape).reshape(-1, h, w, 3)
    T = jnp.stack(transforms)  # [N,B,4,4]
    T_all = jnp.broadcast_to(T[None], (n_sc,) + T.shape).reshape(-1, 4, 4)
    K_all = jnp.tile(inputs["K"], (n_sc * n_src, 1, 1))
    warped, _ = geometry.warp(src_all, depth, K_all, T_all, padding="border")
    # the target broadcasts: its SSIM window statistics are computed once
    reproj = photometric_error(warped.reshape(n_sc * n_src, b, h, w, 3), target, alpha)
    reproj = reproj.reshape(n_sc, n_src, b, h, w)
    reproj = jnp.moveaxis(reproj, 1, -1).reshape(n_sc * b, h, w, n_src)
    identity = None
    if automask:
        ident = photometric_error(src, target, alpha).reshape(n_src, b, h, w)
        ident = jnp.moveaxis(ident, 0, -1)
        identity = jnp.tile(ident, (n_sc, 1, 1, 1))  # fresh noise per scale below
    mins, masks = min_reprojection(reproj, identity, key)
    mins = mins.reshape(n_sc, b, h, w, 1)
    masks = masks.reshape(n_sc, b, h, w, 1)
    smooth, image = [], target
    for s, entry in enumerate(scales):
        if s > 0:
            image = downsample2x(image)
        smooth.append(smoothness(jax.nn.sigmoid(entry["raw"]), image))
    return {"min_reprojection": list(mins), "automask": list(masks), "smoothness": smooth}


def upsample_to(x, h, w):
    return jax.image.resize(x, (x.shape[0], h, w, x.shape[-1]), "bilinear")


def selfsup_loss(scales, terms, *, variant: str, smoothness_weight: float, height: int,
                 width: int):
    """Mean over scales of the (Laplace-weighted for Log) photometric term + smoothness."""
    total = 0.0
    for s, entry in enumerate(scales):
        p = terms["min_reprojection"][s]
        if variant == "log":
            u = upsample_to(entry["log_sigma"], height, width)
            photo = jnp.mean(laplace_nll(p, 0.0, u))
        else:
            photo = jnp.mean(p)
        total = total + photo + smoothness_weight / 2 ** s * terms["smoothness"][s]
    return total / len(scales)


# ----------------------------------------------------------------------------- state / step
def init_depth_variables(cfg: SelfSupConfig, model: DepthNet | MonoViT | None = None):
    """Random depth-network variables with the disparity heads' bias at `cfg.init_depth`."""
    model = cfg.model() if model is None else model
    variables = model.init_variables(jax.random.PRNGKey(cfg.run.seed), cfg.run.height,
                                     cfg.run.image_width)
    if cfg.init_depth is not None:
        variables = with_head_bias(variables, cfg.init_depth, model.min_depth, model.max_depth)
    return variables


def init_state(cfg: SelfSupConfig, start_state=None):
    """The train state (`jaxdepth.train.state`) of a fresh run, networks `depth` and (M,
    MS) `pose`; with `start_state` (the final state of the run `cfg.start_from`) its
    parameters and statistics replace the random ones wherever both have them (a Log
    run's σ heads stay random)."""
    run = cfg.run
    depth = init_depth_variables(cfg)
    params, stats = {"depth": depth["params"]}, {"depth": depth["batch_stats"]}
    pose_net = cfg.pose_model()
    if pose_net is not None:
        pose = pose_net.init_variables(jax.random.PRNGKey(run.seed + 7919), run.height,
                                       run.image_width)
        params["pose"], stats["pose"] = pose["params"], pose["batch_stats"]
    if start_state is not None:
        params = overlay(params, start_state["params"])
        stats = overlay(stats, start_state["batch_stats"])
    return new_state(run, params, stats, optimizer=cfg.optimizer_name)


def make_step(cfg: SelfSupConfig):
    """A jit-compiled `step(state, batch) -> (state, metrics)` (metrics: `loss`,
    `photometric`, `smoothness`, `automask` = fraction of pixels a reprojection won,
    `sigmoid` = mean sigmoid disparity at scale 0, which shows a collapse to the near or
    far limit)."""
    return _make_step(cfg.compile_key())


def train_outputs(cfg: SelfSupConfig, model: DepthNet, variables, images, dropout_rng=None):
    """The DepthNet outputs of a training step (BatchNorm batch statistics; channel
    dropout from `dropout_rng` for the "drop" variant, ignored otherwise) and the new
    batch statistics."""
    kw = {"dropout_rng": dropout_rng} if cfg.variant == "drop" else {}
    out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"], **kw)
    return out, updates["batch_stats"]


@functools.lru_cache(maxsize=None)
def _make_step(cfg: SelfSupConfig):
    model, pose_net = cfg.model(), cfg.pose_model()
    ids = cfg.frame_ids

    def loss_fn(params, batch_stats, batch, key):
        k_aug, key = jax.random.split(key)
        inputs = prepare_inputs(batch, k_aug, frame_ids=ids, augment=cfg.run.augment,
                                stereo_baseline=cfg.stereo_baseline)
        key, k_drop = jax.random.split(key) if cfg.variant == "drop" else (key, None)
        out, new_stats = train_outputs(cfg, model, {"params": params["depth"],
                                                    "batch_stats": batch_stats["depth"]},
                                       inputs["target_aug"], k_drop)
        new_stats = {"depth": new_stats}
        pose_vars = None
        if pose_net is not None:
            pose_vars = {"params": params["pose"], "batch_stats": batch_stats["pose"]}
        transforms, pose_upd = pose_transforms(pose_net.apply if pose_net else None, pose_vars,
                                               inputs, ids, train=True)
        if pose_upd is not None:
            new_stats["pose"] = pose_upd
        scales = out["scales"][:cfg.num_scales]
        terms = photometric_terms(scales, inputs, transforms, key, alpha=cfg.alpha,
                                  automask=cfg.automask)
        loss = selfsup_loss(scales, terms, variant=cfg.variant,
                            smoothness_weight=cfg.smoothness, height=cfg.run.height,
                            width=cfg.run.image_width)
        n = len(scales)
        metrics = {"photometric": sum(jnp.mean(p) for p in terms["min_reprojection"]) / n,
                   "smoothness": sum(terms["smoothness"]) / n,
                   "automask": jnp.mean(terms["automask"][0].astype(jnp.float32)),
                   "sigmoid": jnp.mean(jax.nn.sigmoid(scales[0]["raw"]))}
        return loss, (new_stats, metrics)

    return train_state.make_step(loss_fn)


def collapsed(depth, min_depth: float, *, share: float = 0.9, rtol: float = 1e-3) -> bool:
    """Whether a model's depth `[B,H,W,1]` has collapsed: at least `share` of its pixels
    within 5 % of `min_depth` (the scale drift of an M run, whose scale nothing anchors,
    into the saturated sigmoid), or one constant depth everywhere (std below `rtol` of the
    mean: a decoder whose head sees only dead features). Such a model predicts a
    constant depth, and every uncertainty of it scores alike."""
    depth = jnp.asarray(depth)
    at_limit = float(jnp.mean(depth <= 1.05 * min_depth)) >= share
    return at_limit or float(jnp.std(depth)) <= rtol * float(jnp.abs(jnp.mean(depth)))


def variables_of(state):
    """The depth model's variables (`params`, `batch_stats`) of a train state."""
    return {"params": state["params"]["depth"], "batch_stats": state["batch_stats"]["depth"]}


def pose_variables_of(state):
    """The pose network's variables of an M / MS train state."""
    return {"params": state["params"]["pose"], "batch_stats": state["batch_stats"]["pose"]}


# ----------------------------------------------------------------------------- runs
def train_or_load(name: str | None, cfg: SelfSupConfig, checkpoints, *, data=None,
                  no_train: bool = False, progress: bool = True):
    """`(apply_fn, variables)` of a finished self-supervised run, training (or resuming)
    it in `checkpoints/<name>-<config hash>` first if needed (`name` None: derived from
    the config); a run with `cfg.start_from` first trains or reuses that run
    (`jaxdepth.train.recipes.train_or_load`). `apply_fn` follows the DepthNet contract
    (`depth`, `disp`, `log_sigma` for Log, `features`)."""
    from jaxdepth.train import recipes

    return recipes.train_or_load(cfg, checkpoints, name=name, data=data, train=not no_train,
                                 progress=progress)
