"""DepthNet: Monodepth2 (ResNet encoder + depth decoder) with the jaxdepth apply contract.

    outputs = DepthNet().apply(variables, images, offsets=None, dropout_rng=None)

`images` `[B,H,W,3]` float32 in [0,1], H and W multiples of 32. `outputs`:
  - `disp`  `[B,H,W,1]`: scaled disparity 1/depth (Monodepth2's `disp_to_depth`,
    min 0.1 / max 100) — for metric models 1/depth as well;
  - `depth` `[B,H,W,1]`: depth in model units;
  - `log_sigma` `[B,H,W,1]` when the model has `uncertconv` heads (unbounded, as the
    reference; σ = exp(log_sigma)); with `sigma_activation="sigmoid"` (SUB-Depth's
    σ_reg channel) the head is a sigmoid, σ ∈ (0,1), and `log_sigma = log_sigmoid(head)`;
  - `scales`: tuple over s = 0..3 of dicts with `disp`, `depth`, `raw` (the head
    output before its activation: sigmoid input, or metric depth) and
    `log_sigma`, each `[B,H/2^s,W/2^s,1]`;
  - `features`: tap name (`dec0`…`dec10`) → activation (see `depth_decoder`), and
    with `encoder_taps=True` also `enc0`…`enc4`, the five encoder outputs (strides 2…32)
    as the decoder receives them.

`offsets` takes every tap name, `enc0`…`enc4` included (whatever `encoder_taps` says):
an encoder offset is added to that encoder output before the decoder uses it (the
encoder's later stages see the unperturbed feature), a decoder offset where the tap is
produced; so the gradient w.r.t. a zero offset is the gradient w.r.t. the activation.
"""
from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdepth.models.depth_decoder import TAPS, DepthDecoder
from jaxdepth.models.contract import add_offset, check_images, check_offsets, random_variables
from jaxdepth.models.resnet import ResNetEncoder

#: the five encoder outputs (ResNet: conv1 after ReLU, layer1 … layer4)
ENCODER_TAPS = tuple(f"enc{i}" for i in range(5))


def disp_to_depth(sigmoid, min_depth: float = 0.1, max_depth: float = 100.0):
    """Monodepth2's conversion: scaled = 1/max + (1/min − 1/max)·σ; depth = 1/scaled."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled_disp = min_disp + (max_disp - min_disp) * sigmoid
    return scaled_disp, 1.0 / scaled_disp


class DepthNet(nn.Module):
    """Monodepth2-equivalent depth network.

    Attributes:
      num_layers: ResNet depth (18 or 50; 34 works too).
      width: channel multiplier for tiny test models (1.0 = the reference).
      log_sigma: add an `uncertconv` log σ head per scale (Log / Self models).
      dropout_rate: channel-dropout rate used when `dropout_rng` is passed
        (Drop training and In-Drop / MC-Drop inference share the weights).
      metric: NYU style — the head outputs metric depth, no sigmoid.
      min_depth, max_depth: the disparity range of `disp_to_depth`.
      sigma_activation: `"exp"` (default; the head is log σ, Poggi's Log / Self) or
        `"sigmoid"` (SUB-Depth's student: σ = sigmoid(head), the second sigmoid
        channel of its DepthDecoderV2 — a 2-channel 3×3 conv is the same function as
        the two 1-channel heads here). `log_sigma` is log σ either way.
      encoder_taps: also return `enc0`…`enc4` in `features` (off by default, so the
        `features` of existing models stay the decoder taps; offsets for them work either
        way). Turn it on to differentiate w.r.t. an encoder feature, e.g.
        `gradient_uncertainty(model.clone(encoder_taps=True).apply, ..., taps=("enc4",))`.
    """
    num_layers: int = 18
    width: float = 1.0
    log_sigma: bool = False
    dropout_rate: float = 0.2
    metric: bool = False
    min_depth: float = 0.1
    max_depth: float = 100.0
    sigma_activation: str = "exp"
    encoder_taps: bool = False

    #: the tap of the paper (Hornauer & Belagiannis): upconv(1,0) at H/4
    default_tap = "dec6"
    #: every name `offsets` takes (`features` holds the encoder ones with `encoder_taps`)
    tap_names = ENCODER_TAPS + TAPS

    def setup(self):
        self.encoder = ResNetEncoder(self.num_layers, self.width)
        self.decoder = DepthDecoder(self.width, self.log_sigma, self.dropout_rate,
                                    head_name="depthconv" if self.metric else "dispconv")

    def __call__(self, images, offsets: Mapping[str, jax.Array] | None = None, *,
                 dropout_rng: jax.Array | None = None, dropout_rate: float | None = None,
                 train: bool = False):
        """`offsets`: tap → array added to that activation; `dropout_rng`: turns on
        channel dropout at `dropout_rate` (default: the attribute); `train`:
        BatchNorm batch statistics (call with `mutable=["batch_stats"]`)."""
        check_images(images)
        offsets = check_offsets(offsets, self.tap_names)
        features = list(self.encoder(images, train=train))
        enc = {}
        for k, name in enumerate(ENCODER_TAPS):
            features[k] = add_offset(features[k], name, offsets)
            enc[name] = features[k]
        dec = self.decoder(tuple(features), {k: v for k, v in offsets.items() if k not in enc},
                           dropout_rng, dropout_rate)
        scales = []
        for s, raw in enumerate(dec["heads"]):
            if self.metric:
                depth = raw
                disp = 1.0 / jnp.maximum(raw, 1e-3)
            else:
                disp, depth = disp_to_depth(jax.nn.sigmoid(raw), self.min_depth, self.max_depth)
            entry = {"disp": disp, "depth": depth, "raw": raw}
            if self.log_sigma:
                head = dec["log_sigma_heads"][s]
                if self.sigma_activation == "sigmoid":
                    head = jax.nn.log_sigmoid(head)
                elif self.sigma_activation != "exp":
                    raise ValueError(f"sigma_activation must be 'exp' or 'sigmoid', got "
                                     f"{self.sigma_activation!r}")
                entry["log_sigma"] = head
            scales.append(entry)
        taps = {**enc, **dec["features"]} if self.encoder_taps else dec["features"]
        out = {"disp": scales[0]["disp"], "depth": scales[0]["depth"],
               "scales": tuple(scales), "features": taps}
        if self.log_sigma:
            out["log_sigma"] = scales[0]["log_sigma"]
        return out

    def init_variables(self, rng: jax.Array, height: int = 192, width: int = 640):
        """PyTorch-style random variables (see `init.torch_like_init`) for an
        input of the given size; `rng` is a JAX key or an int seed."""
        return random_variables(self, rng, height, width)
