"""The depth network a trainer config builds: Monodepth2's `DepthNet` (ResNet encoder)
or `MonoViT` (MPViT encoder, HR-Depth decoder), and the optimiser it trains with.

    cfg = SupervisedConfig(arch="monovit", monovit_size="small", width=1.0)
    cfg.model()          # MonoViT(size="small", width=1.0, log_sigma=..., ...)
    cfg.optimizer_name   # "monovit": AdamW, encoder lr = ½ decoder lr, ×0.9 per epoch

The depth configs (`supervised.SupervisedConfig`, `selfsup.SelfSupConfig`, and through
its student `distill.DistillConfig`) carry three fields:
- `arch`: `"monodepth2"` (default) or `"monovit"`;
- `monovit_size`: MonoViT's size (`jaxdepth.models.monovit.SIZES`: `small` as released,
  `tiny` for tests and CPU runs); `width` multiplies MonoViT's widths as it does
  DepthNet's, and `num_layers` stays the depth of the ResNet pose / uncertainty networks;
- `optimizer`: None = the architecture's (`DEFAULT_OPTIMIZER`: Adam with one step decay
  for Monodepth2, MonoViT's two-group AdamW with per-epoch decay for MonoViT;
  `jaxdepth.train.state`), or `"adam"` / `"monovit"` explicitly. An explicit value equal to
  the architecture's default is stored as None, so equal runs have one config.

`to_dict()` leaves `arch` and `monovit_size` out for Monodepth2 and `optimizer` while it
is the architecture's default: configs (and run digests) of Monodepth2 runs written
before these fields existed stay as they were.
"""
from __future__ import annotations

from jaxdepth.models import DepthNet, MonoViT
from jaxdepth.models.monovit import SIZES as MONOVIT_SIZES
from jaxdepth.train.state import OPTIMIZERS

ARCHS = ("monodepth2", "monovit")
DEFAULT_OPTIMIZER = {"monodepth2": "adam", "monovit": "monovit"}
DEFAULT_MONOVIT_SIZE = "small"

__all__ = [
    "ARCHS",
    "DEFAULT_OPTIMIZER",
    "MONOVIT_SIZES",
    "check",
    "depth_model",
    "drop_defaults",
    "optimizer_of",
    "suffix",
]


def check(cfg, *, uses_num_layers: bool = True) -> None:
    """Validate a config's `arch`, `monovit_size`, `optimizer` (and normalise an explicit
    default optimiser to None); `uses_num_layers`: whether `num_layers` still sizes a
    network of a MonoViT run (the pose network), else it must stay 18."""
    if cfg.arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {cfg.arch!r}")
    if cfg.monovit_size not in MONOVIT_SIZES:
        raise ValueError(f"monovit_size must be one of {sorted(MONOVIT_SIZES)}, got "
                         f"{cfg.monovit_size!r}")
    if cfg.arch != "monovit" and cfg.monovit_size != DEFAULT_MONOVIT_SIZE:
        raise ValueError(f"monovit_size={cfg.monovit_size!r} applies to arch='monovit' only")
    if cfg.arch == "monovit" and not uses_num_layers and cfg.num_layers != 18:
        raise ValueError("num_layers is the ResNet encoder's depth; arch='monovit' is sized "
                         "by monovit_size")
    if cfg.optimizer is not None and cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS} or None, got {cfg.optimizer!r}")
    if cfg.optimizer == DEFAULT_OPTIMIZER[cfg.arch]:
        object.__setattr__(cfg, "optimizer", None)


def optimizer_of(cfg) -> str:
    """The optimiser a config trains with (`jaxdepth.train.state.OPTIMIZERS`)."""
    return cfg.optimizer or DEFAULT_OPTIMIZER[cfg.arch]


def drop_defaults(cfg, d: dict) -> dict:
    """`d` (the config's flat dict) without the architecture fields at their defaults."""
    if cfg.arch == "monodepth2":
        del d["arch"], d["monovit_size"]
    if cfg.optimizer is None:
        del d["optimizer"]
    return d


def depth_model(cfg, **kwargs) -> DepthNet | MonoViT:
    """The depth network of a config (its `arch`, `width`, `num_layers` /
    `monovit_size`) with the method's `kwargs` (log_sigma, dropout_rate, metric, …)."""
    if cfg.arch == "monovit":
        return MonoViT(size=cfg.monovit_size, width=cfg.width, **kwargs)
    return DepthNet(num_layers=cfg.num_layers, width=cfg.width, **kwargs)


def suffix(cfg) -> str:
    """The run-name suffix of a config's architecture: "" for Monodepth2, `_monovit`
    (`_monovit_<size>` for sizes other than `small`)."""
    if cfg.arch != "monovit":
        return ""
    return "_monovit" + ("" if cfg.monovit_size == DEFAULT_MONOVIT_SIZE else f"_{cfg.monovit_size}")
