"""Monodepth2's PoseNet (`separate_resnet`): a ResNet encoder on two frames concatenated
along channels, and the pose decoder to axis-angle + translation.

    net = PoseNet(width=0.25)
    variables = net.init_variables(0, 64, 192)
    axisangle, translation = net.apply(variables, jnp.concatenate([a, b], -1))  # [B,F,3] each
    T = pose_vec_to_mat(axisangle[:, 0], translation[:, 0])                   # a → b camera

Pairs go in temporal order (earlier frame first). For a target frame 0 and source
frame +1 the input is `[I_0, I_1]` and the transform maps frame-0 points into camera
+1; for source −1 it is `[I_{-1}, I_0]` and the transform is inverted (`invert=True`).

Decoder (names as `jaxdepth.convert.monodepth2.convert_pose` writes them, so converted
Monodepth2 `pose_encoder.pth` + `pose.pth` load unchanged, see `from_converted`):
`squeeze` 1×1 C_enc→256 + ReLU, `pose_0` 3×3 256→256 + ReLU, `pose_1` 3×3 256→256 +
ReLU, `pose_2` 1×1 256→6·num_frames, mean over space, ×0.01, reshaped `[B,F,6]`:
axis-angle `[..., :3]`, translation `[..., 3:]`. 3×3 convs zero-pad by 1 (PyTorch's
`Conv2d(..., padding=1)`). Monodepth2 predicts `num_frames=2` transforms and uses the
first; that is the default here too. Monodepth2 starts from ImageNet weights with the
conv1 kernel tiled ×2 and halved; jaxdepth starts from random (PyTorch-style) weights.
"""
from __future__ import annotations

import flax.linen as nn

from jaxdepth.models.contract import random_variables
from jaxdepth.models.resnet import ResNetEncoder, scaled

__all__ = ["PoseNet", "PoseDecoder", "from_converted"]


class PoseDecoder(nn.Module):
    """Encoder's last feature map `[B,h,w,C]` → `(axisangle, translation)`, `[B,F,3]` each."""
    num_frames: int = 2
    width: float = 1.0
    scale: float = 0.01

    @nn.compact
    def __call__(self, feature):
        c = scaled(256, self.width)
        pad = ((1, 1), (1, 1))
        x = nn.relu(nn.Conv(c, (1, 1), name="squeeze")(feature))
        x = nn.relu(nn.Conv(c, (3, 3), padding=pad, name="pose_0")(x))
        x = nn.relu(nn.Conv(c, (3, 3), padding=pad, name="pose_1")(x))
        x = nn.Conv(6 * self.num_frames, (1, 1), name="pose_2")(x)
        x = self.scale * x.mean(axis=(1, 2))
        x = x.reshape(x.shape[0], self.num_frames, 6)
        return x[..., :3], x[..., 3:]


class PoseNet(nn.Module):
    """ResNet pose encoder on `num_input_images` frames + `PoseDecoder`.

    Attributes: `num_layers` (18/34/50), `width` (encoder channel multiplier),
    `decoder_width` (decoder multiplier; default = `width`; converted Monodepth2
    weights always have 256 decoder channels, i.e. 1.0), `num_frames` (transforms
    predicted; Monodepth2: 2, the first used), `num_input_images` (2), `scale` (the
    output factor; Monodepth2: 0.01).
    Call with `images` `[B,H,W,3·num_input_images]` in [0,1] (frames concatenated
    along channels, temporal order) and `train` (BatchNorm batch statistics; then
    `mutable=["batch_stats"]`).
    """
    num_layers: int = 18
    width: float = 1.0
    decoder_width: float | None = None
    num_frames: int = 2
    num_input_images: int = 2
    scale: float = 0.01

    def setup(self):
        self.pose_encoder = ResNetEncoder(self.num_layers, self.width)
        dw = self.width if self.decoder_width is None else self.decoder_width
        self.pose_decoder = PoseDecoder(self.num_frames, dw, self.scale)

    def __call__(self, images, train: bool = False):
        want = 3 * self.num_input_images
        if images.ndim != 4 or images.shape[-1] != want:
            raise ValueError(f"PoseNet takes [B,H,W,{want}] ({self.num_input_images} frames "
                             f"concatenated along channels), got {images.shape}")
        features = self.pose_encoder(images, train=train)
        return self.pose_decoder(features[-1])

    def init_variables(self, rng, height: int = 192, width: int = 640):
        """PyTorch-style random variables (`models.init.torch_like_init`) for an input of
        the given size; `rng` is a JAX key or an int seed."""
        return random_variables(self, rng, height, width, 3 * self.num_input_images)


def from_converted(tree, info) -> tuple[PoseNet, dict]:
    """`(PoseNet, variables)` for a pose network converted from Monodepth2
    (`jaxdepth.convert.monodepth2.load_pose(dir)` returns `(tree, info)`)."""
    nif = int(info.get("num_input_features") or 1)
    if nif != 1:
        raise ValueError(f"only separate-ResNet pose networks (num_input_features=1) are "
                         f"supported, got {nif}")
    net = PoseNet(num_layers=int(info["num_layers"]), width=float(info["width"]),
                  decoder_width=1.0, num_frames=int(info["num_frames_to_predict_for"]),
                  num_input_images=int(info["num_input_images"]))
    return net, {"params": tree["params"], "batch_stats": tree["batch_stats"]}
