"""Flax Linen depth and segmentation models with the jaxdepth apply contract (see docs/design.md)."""
from jaxdepth.models.depth_decoder import DECODER_CHANNELS, TAPS, DepthDecoder
from jaxdepth.models.depthnet import ENCODER_TAPS, DepthNet, disp_to_depth
from jaxdepth.models.mobilenetv3 import MobileNetV3Large
from jaxdepth.models.monovit import TAPS as MONOVIT_TAPS
from jaxdepth.models.monovit import MonoViT
from jaxdepth.models.newcrfs import NeWCRFs
from jaxdepth.models.pose import PoseDecoder, PoseNet
from jaxdepth.models.resnet import ENCODER_CHANNELS, ResNetEncoder, encoder_channels
from jaxdepth.models.segmentation import DeepLabV3, DeepLabV3Plus
from jaxdepth.models.swin import SwinTransformer
from jaxdepth.models.uncertnet import UncertNet

__all__ = ["DepthNet", "DepthDecoder", "ResNetEncoder", "TAPS", "DECODER_CHANNELS",
           "ENCODER_CHANNELS", "disp_to_depth", "encoder_channels", "PoseNet", "PoseDecoder",
           "UncertNet", "DeepLabV3", "DeepLabV3Plus", "MobileNetV3Large", "MonoViT",
           "MONOVIT_TAPS", "ENCODER_TAPS"]
__all__ += ["NeWCRFs", "SwinTransformer"]
