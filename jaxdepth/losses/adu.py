"""ADU-Depth's losses (Wu et al., "ADU-Depth: Attention-based Distillation with
Uncertainty Modeling for Depth Estimation", CoRL 2022, Eq. 1–9), written from the
paper's formulas, plus NeWCRFs' SILog base loss L_b (Yuan et al., CVPR 2022).

Shapes: feature maps `[B,H,W,C]`, depths and log-variance maps `[B,H,W,1]`, `mask`
`[B,H,W,1]` bool of valid ground-truth pixels (invalid pixels are masked out, never
averaged in). Teacher inputs get no gradient (`stop_gradient`): the teacher is frozen.
All functions are pure and jit-able; options are static Python values.

- `silog_loss` (L_b): d = log pred − log gt over the valid pixels of the whole batch,
  L = scale·sqrt(mean d² − λ·mean(d)²), λ = `variance_focus` = 0.85, scale 10.
- `feature_distillation_loss` (Eq. 2–3): (1/N)‖Fᵗ − Fˢ‖²₂ per level, averaged over
  levels.
- `distillation_score` / `focal_depth_loss` (Eq. 4–5): p_d = 1 − mean|(dᵗ − dˢ)/dᵗ| per
  image, L = −α_d(1 − p_d)^γ log p_d, averaged over the batch.
- `soft_label_loss` (Eq. 6): Σᵢ|dᵢᵗ − dᵢˢ| per image (or the mean), averaged over images.
- `uncertainty_feature_loss` (Eq. 7, L_umf, Gaussian) and `uncertainty_response_loss`
  (Eq. 8, L_umr, Laplace).
- `adu_total_loss` (Eq. 9): L = L_b + λ1·L_umr + λ2·L_umf + λ3·L_focal, every module
  switchable through `AduLossConfig`.

Choices for what the paper leaves unspecified (the alternative is an option):

- **N** (Eq. 2, 3, 7) is the number of pixels, as in Eq. 4, and ‖·‖²₂ is over the channel
  vector of a pixel: `reduction="pixel"`. `reduction="element"` also averages over
  channels. Levels are averaged (the loss is the mean of the per-level losses).
- **s** (Eq. 7–8). The paper calls the UEM output s = log σ², which Eq. 7 is the
  Gaussian NLL of (½e^{−s}r² + ½s), but Eq. 8 (√2e^{−s}|r| + s) is the Laplace NLL in
  s = log σ (scale b = σ/√2). Each loss takes `sigma_param="log_var"|"log_std"`:
  Gaussian: log_var ½e^{−s}r² + ½s (Eq. 7 as printed), log_std ½e^{−2s}r² + s;
  Laplace: log_std √2e^{−s}|r| + s (Eq. 8 as printed), log_var √2e^{−s/2}|r| + ½s.
  `AduLossConfig.sigma_param`: `"paper"` (default: both equations as printed, the same
  s in both), `"log_var"` or `"log_std"` (s means the same in both losses). s is
  clipped to ±`clip` (20) inside the losses, as in `jaxdepth.losses.nll`.
- **s per feature level**: the map `[B,H,W,1]` at depth resolution is area-averaged
  (adaptive average pooling) to each level's size (`uncertainty_pyramid`); a list of
  per-level maps can be passed instead.
- **g** (restoring function): applied by the caller; `jaxdepth.models.adapter` offers
  identity (default) and a zero-initialised 1×1 conv over [F̃, s] (`Restore`). The losses
  take the restored features / depth.
- **Pixels of the response terms** (Eq. 4–6, 8): all pixels by default (the teacher's
  depth is dense, KITTI's ground truth is not); pass `mask` (config
  `response_pixels="valid"`) for the valid-GT pixels only.
- **α_d, γ** (Eq. 5): 0.25 and 2, the focal loss' values (Lin et al., ICCV 2017), which
  Eq. 5 adapts. p_d is clamped to [`eps`, 1] (eps 1e-6) before the log: p_d ≤ 0 when the
  mean relative error to the teacher is ≥ 1.
- **Encoder and decoder levels** form one list: L_umf (and the plain L2) is the mean
  over all given levels, so Eq. 9 has a single feature term.
- **Without the UEM** (`uncertainty=False`), the feature term is the plain L2 of
  Eq. 2–3 over the same levels and the response term the L1 of Eq. 6 as a per-pixel
  mean (`soft_label_reduction`), in the same weight slots λ2 and λ1.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdepth.models.adapter import adaptive_avg_pool

__all__ = ["silog_loss", "feature_distillation_loss", "distillation_score",
           "focal_depth_loss", "soft_label_loss", "uncertainty_feature_loss",
           "uncertainty_response_loss", "uncertainty_pyramid", "adu_total_loss",
           "AduLossConfig", "SIGMA_PARAMS", "REDUCTIONS"]

SIGMA_PARAMS = ("log_var", "log_std")
REDUCTIONS = ("pixel", "element")
_CONFIG_SIGMA = ("paper", "log_var", "log_std")


# ----------------------------------------------------------------------------- checks

def _check_map(name, x, channels=1):
    if x.ndim != 4 or (channels is not None and x.shape[-1] != channels):
        want = "[B,H,W,1]" if channels == 1 else "[B,H,W,C]"
        raise ValueError(f"{name} must be {want}, got shape {x.shape}")


def _check_mask(mask, shape):
    if mask is None:
        return
    if mask.dtype != jnp.bool_:
        raise ValueError(f"mask must be a bool array (valid pixels), got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"mask must be [B,H,W,1] of shape {shape}, got {mask.shape}")


def _check_pair(a_name, a, b_name, b, channels=1):
    _check_map(a_name, a, channels)
    _check_map(b_name, b, channels)
    if a.shape != b.shape:
        raise ValueError(f"{a_name} and {b_name} must have the same shape, got "
                         f"{a.shape} and {b.shape}")


def _check_option(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def _check_levels(student, teacher):
    if isinstance(student, jax.Array | np.ndarray) or isinstance(teacher, jax.Array | np.ndarray):
        raise ValueError("features must be sequences of [B,H,W,C] maps, one per level")
    if len(student) != len(teacher) or not student:
        raise ValueError(f"need the same non-zero number of student and teacher levels, "
                         f"got {len(student)} and {len(teacher)}")
    for i, (s, t) in enumerate(zip(student, teacher)):
        _check_pair(f"student feature {i}", s, f"teacher feature {i}", t, channels=None)


def _masked_mean(x, mask, axis=None):
    """Mean of x over the True pixels of mask (all pixels if mask is None); 0 if none."""
    if mask is None:
        return jnp.mean(x, axis=axis)
    m = mask.astype(x.dtype)
    return jnp.sum(x * m, axis=axis) / jnp.maximum(jnp.sum(m, axis=axis), 1.0)


def _safe_sqrt(x):
    """sqrt with value 0 and gradient 0 at x ≤ 0 (the exact fit), instead of inf/NaN."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1.0)), 0.0)


# ----------------------------------------------------------------------------- L_b

def silog_loss(pred, gt, mask, variance_focus: float = 0.85, scale: float = 10.0):
    """NeWCRFs' SILog loss over the valid pixels of the whole batch (a scalar).

    `pred`, `gt` `[B,H,W,1]` depths (pred > 0 at valid pixels), `mask` `[B,H,W,1]` bool.
    d = log pred − log gt at valid pixels; L = scale·sqrt(mean d² − λ·mean(d)²).
    Invalid pixels never enter (values there may be anything, even 0 or NaN). With no
    valid pixel the loss is 0.
    """
    _check_pair("pred", pred, "gt", gt)
    if mask is None:
        raise ValueError("silog_loss needs a [B,H,W,1] bool mask of valid pixels")
    _check_mask(mask, pred.shape)
    one = jnp.ones((), pred.dtype)
    d = jnp.where(mask, jnp.log(jnp.where(mask, pred, one)) - jnp.log(jnp.where(mask, gt, one)),
                  0.0)
    mean_d = _masked_mean(d, mask)
    mean_d2 = _masked_mean(d * d, mask)
    return scale * _safe_sqrt(mean_d2 - variance_focus * mean_d ** 2)


# ----------------------------------------------------------------------------- Eq. 2–3

def _level_l2(student, teacher, reduction):
    sq = (jax.lax.stop_gradient(teacher) - student) ** 2
    return jnp.sum(sq, -1) if reduction == "pixel" else jnp.mean(sq, -1)   # [B,H,W]


def feature_distillation_loss(adapted_student_feats: Sequence, teacher_feats: Sequence,
                              reduction: str = "pixel"):
    """Eq. 2–3: mean over levels of (1/N)‖Fᵗ − Fˢ‖²₂ (a scalar).

    Both sequences hold one `[B,H_l,W_l,C_l]` map per level, in the same order (the
    attention-adapted student features and the frozen teacher's). `reduction="pixel"`:
    squared L2 over channels, mean over the N = B·H_l·W_l pixels; `"element"`: mean
    over channels too.
    """
    _check_option("reduction", reduction, REDUCTIONS)
    _check_levels(adapted_student_feats, teacher_feats)
    per_level = [jnp.mean(_level_l2(s, t, reduction))
                 for s, t in zip(adapted_student_feats, teacher_feats)]
    return sum(per_level) / len(per_level)


# ----------------------------------------------------------------------------- Eq. 4–6

def distillation_score(student_depth, teacher_depth, mask=None):
    """Eq. 4: p_d = 1 − (1/N)Σᵢ|(dᵢᵗ − dᵢˢ)/dᵢᵗ| per image, `[B]` (unclamped).

    Depths `[B,H,W,1]` (teacher > 0); N is the number of pixels of the image (of its
    True `mask` pixels if a `[B,H,W,1]` bool mask is given).
    """
    _check_pair("student_depth", student_depth, "teacher_depth", teacher_depth)
    _check_mask(mask, student_depth.shape)
    t = jax.lax.stop_gradient(teacher_depth)
    if mask is not None:
        t = jnp.where(mask, t, 1.0)
    rel = jnp.abs((t - student_depth) / t)
    if mask is not None:
        rel = jnp.where(mask, rel, 0.0)
    return 1.0 - _masked_mean(rel, mask, axis=(1, 2, 3))


def focal_depth_loss(student_depth, teacher_depth, mask=None, alpha_d: float = 0.25,
                     gamma: float = 2.0, eps: float = 1e-6):
    """Eq. 5: −α_d(1 − p_d)^γ log p_d per image, averaged over the batch (a scalar).

    p_d from `distillation_score`, clamped to [eps, 1] before the log. γ ≥ 0.
    """
    if gamma < 0:
        raise ValueError(f"gamma must be ≥ 0, got {gamma}")
    p = jnp.clip(distillation_score(student_depth, teacher_depth, mask), eps, 1.0)
    weight = jnp.power(jnp.maximum(1.0 - p, 1e-12), gamma) if gamma > 0 else 1.0
    return jnp.mean(-alpha_d * weight * jnp.log(p))


def soft_label_loss(student_depth, teacher_depth, mask=None, reduction: str = "sum"):
    """Eq. 6: Σᵢ|dᵢᵗ − dᵢˢ| per image (`"sum"`, as printed) or the per-pixel mean
    (`"mean"`), averaged over the batch (a scalar). Pixels: all, or the True `mask` ones.
    """
    _check_option("reduction", reduction, ("sum", "mean"))
    _check_pair("student_depth", student_depth, "teacher_depth", teacher_depth)
    _check_mask(mask, student_depth.shape)
    err = jnp.abs(jax.lax.stop_gradient(teacher_depth) - student_depth)
    if mask is not None:
        err = jnp.where(mask, err, 0.0)
    if reduction == "sum":
        return jnp.mean(jnp.sum(err, axis=(1, 2, 3)))
    return _masked_mean(err, mask)


# ----------------------------------------------------------------------------- Eq. 7–8

def uncertainty_pyramid(log_var, shapes: Sequence):
    """Area-average the `[B,H,W,1]` log-variance map to each `(h, w)` (or `[B,h,w,C]`
    feature map's size) in `shapes`; returns the list of `[B,h,w,1]` maps."""
    _check_map("log_var", log_var)
    sizes = [tuple(s.shape[1:3]) if hasattr(s, "shape") else tuple(s) for s in shapes]
    return [adaptive_avg_pool(log_var, hw) for hw in sizes]


def _gaussian(sq_err, s, sigma_param):
    if sigma_param == "log_var":
        return 0.5 * jnp.exp(-s) * sq_err + 0.5 * s
    return 0.5 * jnp.exp(-2.0 * s) * sq_err + s


def _laplace(abs_err, s, sigma_param):
    if sigma_param == "log_std":
        return jnp.sqrt(2.0) * jnp.exp(-s) * abs_err + s
    return jnp.sqrt(2.0) * jnp.exp(-0.5 * s) * abs_err + 0.5 * s


def uncertainty_feature_loss(student_feats: Sequence, teacher_feats: Sequence, log_var,
                             sigma_param: str = "log_var", reduction: str = "pixel",
                             clip: float = 20.0):
    """Eq. 7 (L_umf): per level (1/N)Σᵢ[½e^{−sᵢ}‖Fᵢᵗ − g(F̃ᵢˢ; sᵢ)‖²₂ + ½sᵢ], averaged
    over levels (a scalar).

    `student_feats`: the restored student features g(F̃ˢ; s), one `[B,H_l,W_l,C_l]` map
    per level (encoder and decoder levels together); `teacher_feats` likewise.
    `log_var`: the UEM map s `[B,H,W,1]` (pooled to each level by
    `uncertainty_pyramid`) or a sequence of per-level `[B,H_l,W_l,1]` maps.
    `sigma_param`: what s is (`"log_var"` = Eq. 7 as printed; module docstring);
    `reduction` as in `feature_distillation_loss`.
    """
    _check_option("sigma_param", sigma_param, SIGMA_PARAMS)
    _check_option("reduction", reduction, REDUCTIONS)
    _check_levels(student_feats, teacher_feats)
    if hasattr(log_var, "shape"):
        log_vars = uncertainty_pyramid(log_var, student_feats)
    else:
        log_vars = list(log_var)
        if len(log_vars) != len(student_feats):
            raise ValueError(f"need one log_var map per level ({len(student_feats)}), "
                             f"got {len(log_vars)}")
    per_level = []
    for i, (f_s, f_t, s) in enumerate(zip(student_feats, teacher_feats, log_vars)):
        if s.shape != f_s.shape[:-1] + (1,):
            raise ValueError(f"log_var of level {i} must be {f_s.shape[:-1] + (1,)}, "
                             f"got {s.shape}")
        s = jnp.clip(s[..., 0], -clip, clip)
        per_level.append(jnp.mean(_gaussian(_level_l2(f_s, f_t, reduction), s, sigma_param)))
    return sum(per_level) / len(per_level)


def uncertainty_response_loss(student_depth, teacher_depth, log_var, mask=None,
                              sigma_param: str = "log_std", clip: float = 20.0):
    """Eq. 8 (L_umr): (1/N)Σᵢ[√2e^{−sᵢ}|dᵢᵗ − g(d̃ᵢˢ; sᵢ)| + sᵢ] (a scalar).

    `student_depth` = g(d̃ˢ; s), `teacher_depth`, `log_var` s: `[B,H,W,1]`; N: the pixels
    of the batch (the True `mask` pixels if given). `sigma_param="log_std"` is Eq. 8 as
    printed; `"log_var"` the Laplace NLL in s = log σ² (module docstring).
    """
    _check_option("sigma_param", sigma_param, SIGMA_PARAMS)
    _check_pair("student_depth", student_depth, "teacher_depth", teacher_depth)
    _check_pair("student_depth", student_depth, "log_var", log_var)
    _check_mask(mask, student_depth.shape)
    err = jnp.abs(jax.lax.stop_gradient(teacher_depth) - student_depth)
    nll = _laplace(err, jnp.clip(log_var, -clip, clip), sigma_param)
    if mask is not None:
        nll = jnp.where(mask, nll, 0.0)
    return _masked_mean(nll, mask)


# ----------------------------------------------------------------------------- Eq. 9

@dataclasses.dataclass(frozen=True)
class AduLossConfig:
    """Switches and weights of Eq. 9 (hashable: pass as a static argument to jit).

    `AduLossConfig.baseline()` turns every module off (L = L_b, the ablation baseline).
    `lambda1` weighs the response term (L_umr, or Eq. 6's L1 without the UEM),
    `lambda2` the feature term (L_umf, or Eq. 2–3's L2 without the UEM), `lambda3`
    L_focal; KITTI values 0.9, 0.6, 0.8. `sigma_param`: `"paper"` | `"log_var"` |
    `"log_std"`; `response_pixels`: `"all"` | `"valid"`; `feature_reduction`:
    `"pixel"` | `"element"`; `soft_label_reduction` (Eq. 6 without the UEM):
    `"mean"` | `"sum"` (module docstring).
    """
    feature_distill: bool = True
    focal_depth: bool = True
    soft_label: bool = True
    uncertainty: bool = True
    lambda1: float = 0.9
    lambda2: float = 0.6
    lambda3: float = 0.8
    alpha_d: float = 0.25
    gamma: float = 2.0
    variance_focus: float = 0.85
    silog_scale: float = 10.0
    sigma_param: str = "paper"
    response_pixels: str = "all"
    feature_reduction: str = "pixel"
    soft_label_reduction: str = "mean"
    clip: float = 20.0
    eps: float = 1e-6

    def __post_init__(self):
        _check_option("sigma_param", self.sigma_param, _CONFIG_SIGMA)
        _check_option("response_pixels", self.response_pixels, ("all", "valid"))
        _check_option("feature_reduction", self.feature_reduction, REDUCTIONS)
        _check_option("soft_label_reduction", self.soft_label_reduction, ("sum", "mean"))
        if self.gamma < 0:
            raise ValueError(f"gamma must be ≥ 0, got {self.gamma}")

    @classmethod
    def baseline(cls, **kw):
        """All distillation modules off: the loss is L_b only."""
        off = dict(feature_distill=False, focal_depth=False, soft_label=False,
                   uncertainty=False)
        return cls(**{**off, **kw})

    def sigma_params(self) -> tuple[str, str]:
        """(Gaussian, Laplace) `sigma_param` of L_umf and L_umr."""
        if self.sigma_param == "paper":
            return "log_var", "log_std"
        return self.sigma_param, self.sigma_param


def adu_total_loss(pred, gt, mask, *, teacher_depth=None, log_var=None,
                   restored_depth=None, student_feats: Sequence | None = None,
                   teacher_feats: Sequence | None = None,
                   config: AduLossConfig = AduLossConfig()):
    """Eq. 9: L = L_b + λ1·L_umr + λ2·L_umf + λ3·L_focal; returns `(total, parts)`.

    Args:
      pred, gt, mask: student depth, ground truth `[B,H,W,1]` and the bool valid-GT
        mask `[B,H,W,1]` (L_b; `pred` also enters L_focal and L_rd).
      teacher_depth: frozen teacher depth `[B,H,W,1]` (focal_depth, soft_label).
      log_var: the UEM map s `[B,H,W,1]` at the depth's resolution; pooled to each
        feature level with `uncertainty_pyramid` (uncertainty).
      restored_depth: g(d̃ˢ; s) `[B,H,W,1]` for L_umr (e.g. `adapter.Restore`); None:
        g = identity, `pred` itself.
      student_feats, teacher_feats: the adapted (restored) student features and the
        teacher's, one `[B,H_l,W_l,C_l]` map per level, encoder and decoder levels
        together (feature_distill).
      config: `AduLossConfig` (static).
    `parts` (unweighted, 0 where a module is off): `base` (L_b), `feature` (L_umf, or
    the plain L2 of Eq. 2–3 without the UEM), `response` (L_umr, or L_rd of Eq. 6), `focal` (L_focal) and `p_d` (batch mean
    of Eq. 4, diagnostics only, 0 when no teacher depth is given); `total` = L.
    """
    c = config
    if not isinstance(c, AduLossConfig):
        raise ValueError(f"config must be an AduLossConfig, got {type(c).__name__}")
    needs_teacher = c.focal_depth or c.soft_label
    if needs_teacher and teacher_depth is None:
        raise ValueError("focal_depth / soft_label need teacher_depth [B,H,W,1]")
    if c.uncertainty and (c.feature_distill or c.soft_label) and log_var is None:
        raise ValueError("uncertainty needs log_var [B,H,W,1] (the UEM's log variance)")
    if c.feature_distill and (student_feats is None or teacher_feats is None):
        raise ValueError("feature_distill needs student_feats and teacher_feats "
                         "(sequences of [B,H,W,C] maps)")
    _check_pair("pred", pred, "gt", gt)
    _check_mask(mask, pred.shape)
    if c.uncertainty and log_var is not None:
        _check_pair("pred", pred, "log_var", log_var)
    if restored_depth is None:
        restored_depth = pred
    _check_pair("pred", pred, "restored_depth", restored_depth)
    if c.feature_distill:
        _check_levels(student_feats, teacher_feats)
    base = silog_loss(pred, gt, mask, c.variance_focus, c.silog_scale)
    zero = jnp.zeros((), base.dtype)
    parts = {"base": base, "feature": zero, "response": zero, "focal": zero, "p_d": zero}
    gauss, laplace = c.sigma_params()
    rmask = mask if c.response_pixels == "valid" else None
    if teacher_depth is not None:
        _check_pair("pred", pred, "teacher_depth", teacher_depth)
        parts["p_d"] = jnp.mean(distillation_score(pred, teacher_depth, rmask))
    if c.feature_distill:
        if c.uncertainty:
            parts["feature"] = uncertainty_feature_loss(
                student_feats, teacher_feats, log_var, gauss, c.feature_reduction, c.clip)
        else:
            parts["feature"] = feature_distillation_loss(student_feats, teacher_feats,
                                                         c.feature_reduction)
    if c.soft_label:
        if c.uncertainty:
            parts["response"] = uncertainty_response_loss(restored_depth, teacher_depth,
                                                          log_var, rmask, laplace, c.clip)
        else:
            parts["response"] = soft_label_loss(pred, teacher_depth, rmask,
                                                c.soft_label_reduction)
    if c.focal_depth:
        parts["focal"] = focal_depth_loss(pred, teacher_depth, rmask, c.alpha_d, c.gamma,
                                          c.eps)
    total = (base + c.lambda1 * parts["response"] + c.lambda2 * parts["feature"]
             + c.lambda3 * parts["focal"])
    parts["total"] = total
    return total, parts
