"""Distillation losses: Poggi et al.'s self-teaching (Self) and SUB-Depth (Zhou et al.,
BMVC 2021), written from the formulas of docs/training.md §4–5 and the SUB-Depth paper.

Disparities here are the network's sigmoid outputs in (0, 1) (Monodepth2's `disp`,
i.e. `sigmoid(raw)`), the space both reference methods distil in.

- **Self**: per pixel |d − d_T|/σ + log σ with σ = exp(log_sigma) and the frozen
  teacher's disparity d_T held constant (`self_teaching_loss`).
- **SUB-Depth** (`sub_depth_loss`), with per scale s the per-pixel minimum
  reprojection error p_s (full resolution) and the edge-aware smoothness S_s:
  - `form="pixel"` (the released trainer): per-pixel Laplace NLLs,
    L = ¼Σ_s[mean(p_s/σ_pho + log σ_pho) + β·S_s/2^s] + mean(|d_0 − d_T|/σ_reg + log σ_reg),
    σ_pho from the photometric UncertNet, σ_reg from the student's second channel;
    the distillation term uses scale 0 only.
  - `form="scalar"` (the paper's "homoscedastic" wording, Kendall et al. 2018): one
    learned log σ per task, L = ℓ_pho/σ_pho + log σ_pho + ℓ_reg/σ_reg + log σ_reg with
    ℓ_pho = ¼Σ_s[mean(p_s) + β·S_s/2^s] (Eq. 4, smoothness inside the photometric
    task as in Eq. 9) and ℓ_reg = mean|d_0 − d_T|.
  - `form="manual"`: ℓ = ω_pho·ℓ_pho + ω_reg·ℓ_reg (Eq. 6; the grid of the paper's
    Table 1 is `TABLE1_WEIGHTS`).
Log σ values are clipped to ±`clip` inside the losses (as `laplace_nll`), so an
untrained head cannot overflow exp(−log σ); within the range the loss is exact.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxdepth.losses.nll import laplace_nll

__all__ = ["self_teaching_loss", "sub_depth_loss", "TABLE1_WEIGHTS", "FORMS"]

#: (ω_pho, ω_reg) pairs of SUB-Depth's Table 1 (manual weighting).
TABLE1_WEIGHTS = ((0.0, 1.0), (0.2, 0.8), (0.4, 0.6), (0.5, 0.5), (0.6, 0.4), (0.8, 0.2),
                  (1.0, 0.0))
FORMS = ("pixel", "scalar", "manual")


def self_teaching_loss(disp, disp_teacher, log_sigma, clip: float = 20.0):
    """Per-pixel Self loss `[B,H,W,1]`: |d − d_T|·exp(−u) + u, d_T without gradient."""
    return laplace_nll(disp, jax.lax.stop_gradient(disp_teacher), log_sigma, clip)


def _weighted(err, log_sigma, clip):
    """err·exp(−s) + s for an error err ≥ 0: the Laplace NLL of err around 0."""
    return laplace_nll(err, 0.0, log_sigma, clip)


def sub_depth_loss(reprojection: Sequence, smooth: Sequence, disp, disp_teacher, *,
                   form: str = "pixel", log_sigma_pho=None, log_sigma_reg=None,
                   task_log_sigma=None, weights: tuple[float, float] = (0.5, 0.5),
                   smoothness_weight: float = 1e-3, clip: float = 20.0):
    """SUB-Depth's objective; returns `(loss, terms)`.

    Args:
      reprojection: per scale, the per-pixel minimum reprojection error `[B,H,W,1]`.
      smooth: per scale, the (unweighted) edge-aware smoothness scalar; scale s is
        weighted by `smoothness_weight`/2^s.
      disp, disp_teacher: scale-0 sigmoid disparities `[B,H,W,1]` of student and
        frozen teacher (the teacher gets no gradient).
      form: `"pixel"` | `"scalar"` | `"manual"` (module docstring).
      log_sigma_pho, log_sigma_reg: log σ maps `[B,H,W,1]` (form `"pixel"`).
      task_log_sigma: `{"pho": scalar, "reg": scalar}` learned log σ (form `"scalar"`).
      weights: `(ω_pho, ω_reg)` (form `"manual"`).
    `terms`: the unweighted task losses `photometric` (ℓ_pho) and `regression`
    (ℓ_reg) and the weighted ones `reconstruction` and `distillation`.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    if len(reprojection) != len(smooth) or not reprojection:
        raise ValueError("reprojection and smooth need one entry per scale")
    target = jax.lax.stop_gradient(disp_teacher)
    residual = jnp.abs(disp - target)
    smooth_w = [smoothness_weight / 2 ** s * sm for s, sm in enumerate(smooth)]
    n = len(reprojection)
    photometric = sum(jnp.mean(p) + sw for p, sw in zip(reprojection, smooth_w)) / n
    regression = jnp.mean(residual)
    if form == "pixel":
        if log_sigma_pho is None or log_sigma_reg is None:
            raise ValueError("form 'pixel' needs log_sigma_pho and log_sigma_reg maps")
        reconstruction = sum(jnp.mean(_weighted(p, log_sigma_pho, clip)) + sw
                             for p, sw in zip(reprojection, smooth_w)) / n
        distillation = jnp.mean(_weighted(residual, log_sigma_reg, clip))
    elif form == "scalar":
        if task_log_sigma is None:
            raise ValueError("form 'scalar' needs task_log_sigma {'pho': s, 'reg': s}")
        reconstruction = _weighted(photometric, task_log_sigma["pho"], clip)
        distillation = _weighted(regression, task_log_sigma["reg"], clip)
    else:
        w_pho, w_reg = weights
        reconstruction, distillation = w_pho * photometric, w_reg * regression
    loss = reconstruction + distillation
    return loss, {"photometric": photometric, "regression": regression,
                  "reconstruction": reconstruction, "distillation": distillation}
