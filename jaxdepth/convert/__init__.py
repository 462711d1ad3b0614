"""PyTorch weights (Monodepth2 format, torchvision DeepLabV3) → jaxdepth checkpoints, and
the checkpoint loader.

    from jaxdepth.convert import convert_monodepth2, load_checkpoint
    convert_monodepth2("encoder.pth", "depth.pth", "ckpt/mono_640x192")
    model, variables, meta = load_checkpoint("ckpt/mono_640x192")

See `jaxdepth.convert.monodepth2` for the variants, the on-disk format and the CLI
(`jaxdepth convert monodepth2 ...`), and `jaxdepth.convert.deeplabv3` for torchvision's
DeepLabV3 segmentation models (`convert_deeplabv3`, `jaxdepth convert deeplabv3 ...`).
Only reading `.pth` files needs torch.
"""
from jaxdepth.convert.monodepth2 import (FORMAT, FORMAT_VERSION, ConversionError,
                                         convert_monodepth2, convert_monodepth2_folder,
                                         convert_pose, convert_state_dicts, detect_variant,
                                         encoder_layout, find_models, is_checkpoint,
                                         load_checkpoint, load_pose, load_state_dict,
                                         save_checkpoint)
from jaxdepth.convert.deeplabv3 import (VOC_CLASSES, convert_deeplabv3,
                                        convert_deeplabv3_state_dict, deeplabv3_layout,
                                        load_torch_state_dict)

__all__ = [
    "FORMAT", "FORMAT_VERSION", "ConversionError", "convert_monodepth2",
    "convert_monodepth2_folder", "convert_pose", "convert_state_dicts", "detect_variant",
    "encoder_layout", "find_models", "is_checkpoint", "load_checkpoint", "load_pose",
    "load_state_dict", "save_checkpoint", "VOC_CLASSES", "convert_deeplabv3",
    "convert_deeplabv3_state_dict", "deeplabv3_layout", "load_torch_state_dict",
]
