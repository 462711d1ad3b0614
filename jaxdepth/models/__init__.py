"""Flax Linen depth models with the jaxdepth apply contract (see docs/design.md)."""
from jaxdepth.models.depth_decoder import DECODER_CHANNELS, TAPS, DepthDecoder
from jaxdepth.models.depthnet import DepthNet, disp_to_depth
from jaxdepth.models.pose import PoseDecoder, PoseNet
from jaxdepth.models.resnet import ENCODER_CHANNELS, ResNetEncoder, encoder_channels
from jaxdepth.models.uncertnet import UncertNet

__all__ = ["DepthNet", "DepthDecoder", "ResNetEncoder", "TAPS", "DECODER_CHANNELS",
           "ENCODER_CHANNELS", "disp_to_depth", "encoder_channels", "PoseNet", "PoseDecoder",
           "UncertNet"]
