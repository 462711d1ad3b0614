"""SUB-Depth's photometric UncertNet: σ_pho ∈ (0, 1) at full resolution from the target
frame and one source frame.

    net = UncertNet(width=0.25)
    out = net.apply(variables, jnp.concatenate([target, source], -1))
    out["sigma"], out["log_sigma"]                  # [B,H,W,1] each

A ResNet encoder on the 6-channel pair (input normalised as the depth encoder) and a
decoder of the Monodepth2 depth-decoder design (upconv blocks: reflection pad + 3×3
conv + ELU, nearest ×2 upsampling, skip concatenation) with a single sigmoid head at
full resolution (`uncertconv_0`). SUB-Depth runs it once per source frame and averages
σ (`mean_sigma`). `log_sigma` is `log_sigmoid(head)`, exact where σ underflows.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdepth.models.depth_decoder import DECODER_CHANNELS, ReflectConv3x3, upsample2x
from jaxdepth.models.contract import check_images, random_variables
from jaxdepth.models.resnet import ResNetEncoder, scaled

__all__ = ["UncertNet", "mean_sigma"]


class UncertNet(nn.Module):
    """Photometric uncertainty network; call with `[B,H,W,3·num_input_images]` pairs."""
    num_layers: int = 18
    width: float = 1.0
    num_input_images: int = 2

    @nn.compact
    def __call__(self, images, train: bool = False):
        want = 3 * self.num_input_images
        check_images(images, want, name="UncertNet's images")
        features = ResNetEncoder(self.num_layers, self.width, name="encoder")(images, train=train)
        channels = [scaled(c, self.width) for c in DECODER_CHANNELS]
        x = features[-1]
        for i in range(4, -1, -1):
            x = nn.elu(ReflectConv3x3(channels[i], name=f"upconv_{i}_0")([x]))
            xs = [upsample2x(x)] + ([features[i - 1]] if i > 0 else [])
            x = nn.elu(ReflectConv3x3(channels[i], name=f"upconv_{i}_1")(xs))
        head = ReflectConv3x3(1, name="uncertconv_0")([x])
        return {"sigma": jax.nn.sigmoid(head), "log_sigma": jax.nn.log_sigmoid(head),
                "raw": head}

    def init_variables(self, rng, height: int = 192, width: int = 640):
        """PyTorch-style random variables for an input of the given size."""
        return random_variables(self, rng, height, width, 3 * self.num_input_images)


def mean_sigma(log_sigmas):
    """log of the mean σ over sources, from a list of log σ maps (stable logsumexp)."""
    stacked = jnp.stack(list(log_sigmas), axis=0)
    return jax.nn.logsumexp(stacked, axis=0) - jnp.log(stacked.shape[0])
