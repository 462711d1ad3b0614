"""Converter and checkpoint format.

The PyTorch half checks `jaxdepth.convert` against an independent PyTorch
implementation of Monodepth2's ResnetEncoder and DepthDecoder written below (module
names chosen so that `state_dict()` has the key names of the released files), with
random weights and random BatchNorm statistics, saved as the released `encoder.pth`
(with `height`, `width`, `use_stereo`) and `depth.pth`. It runs wherever torch is
installed and is skipped elsewhere; to run it:

    pip install torch==2.13.0      # CPU build, or: pip install -e ".[dev]"
    python -m pytest -q tests/test_convert.py
"""
from __future__ import annotations

import functools
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth.convert import (ConversionError, convert_monodepth2, convert_monodepth2_folder,
                              detect_variant, find_models, load_checkpoint,
                              load_pose, save_checkpoint)
from jaxdepth.export import CheckpointError
from jaxdepth.models import DepthNet
from jaxdepth.uncertainty import gradient_uncertainty, predictive
from torch_helpers import randomize

TORCH_REASON = ("the PyTorch equivalence tests of the converter need torch: "
                "pip install torch==2.13.0 (CPU build) or pip install -e '.[dev]'")
H, W, B = 64, 128, 2  # full-width ResNet-18 + decoder at a small input


def _torch():
    return pytest.importorskip("torch", reason=TORCH_REASON)


# --------------------------------------------------------------------------- PyTorch reference

@functools.cache
def reference():
    """Monodepth2's networks in plain torch.nn (written for this test)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def sc(c, width):
        return max(1, int(round(c * width)))

    class BasicBlock(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None
            if stride != 1 or cin != planes:
                self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes))

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            skip = x if self.downsample is None else self.downsample(x)
            return F.relu(y + skip)

    class ResNet18(nn.Module):  # torchvision layout
        def __init__(self, in_ch, width):
            super().__init__()
            self.conv1 = nn.Conv2d(in_ch, sc(64, width), 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(sc(64, width))
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            cin = sc(64, width)
            for k in range(4):
                planes, stride = sc(64 * 2 ** k, width), 1 if k == 0 else 2
                setattr(self, f"layer{k + 1}", nn.Sequential(BasicBlock(cin, planes, stride),
                                                             BasicBlock(planes, planes, 1)))
                cin = planes
            self.fc = nn.Linear(cin, 1000)  # in the released files, unused

    class ResnetEncoder(nn.Module):
        def __init__(self, in_ch=3, width=1.0):
            super().__init__()
            self.encoder = ResNet18(in_ch, width)
            self.channels = [sc(c, width) for c in (64, 64, 128, 256, 512)]

        def forward(self, x):
            e = self.encoder
            f = [e.relu(e.bn1(e.conv1((x - 0.45) / 0.225)))]
            f.append(e.layer1(e.maxpool(f[-1])))
            for k in (2, 3, 4):
                f.append(getattr(e, f"layer{k}")(f[-1]))
            return f

    class Conv3x3(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.pad = nn.ReflectionPad2d(1)
            self.conv = nn.Conv2d(cin, cout, 3)

        def forward(self, x):
            return self.conv(self.pad(x))

    class ConvBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = Conv3x3(cin, cout)
            self.nonlin = nn.ELU()

    class DepthDecoder(nn.Module):
        """`kind`: plain | uncert (Poggi: dispconv/uncertconv alternate) | uncert_blocked
        (all disp heads, then all uncert heads) | metric (no sigmoid)."""

        def __init__(self, enc_ch, width=1.0, kind="plain"):
            super().__init__()
            self.kind = kind
            dec = [sc(c, width) for c in (16, 32, 64, 128, 256)]
            mods = []
            for i in range(4, -1, -1):
                mods.append(ConvBlock(enc_ch[-1] if i == 4 else dec[i + 1], dec[i]))
                mods.append(ConvBlock(dec[i] + (enc_ch[i - 1] if i > 0 else 0), dec[i]))
            self.disp_idx, self.unc_idx = {}, {}
            uncert = kind.startswith("uncert")
            for s in range(4):
                self.disp_idx[s] = len(mods)
                mods.append(Conv3x3(dec[s], 1))
                if kind == "uncert":
                    self.unc_idx[s] = len(mods)
                    mods.append(Conv3x3(dec[s], 1))
            if kind == "uncert_blocked":
                for s in range(4):
                    self.unc_idx[s] = len(mods)
                    mods.append(Conv3x3(dec[s], 1))
            self.uncert = uncert
            self.decoder = nn.ModuleList(mods)

        def forward(self, feats):
            taps, out, x, k = [], {}, feats[-1], 0
            for i in range(4, -1, -1):
                for j in range(2):
                    blk = self.decoder[k]
                    a = blk.conv(x)
                    taps.append(a)
                    x = blk.nonlin(a)
                    k += 1
                    if j == 0:
                        x = [F.interpolate(x, scale_factor=2, mode="nearest")]
                        x = torch.cat(x + ([feats[i - 1]] if i > 0 else []), 1)
                if i < 4:
                    raw = self.decoder[self.disp_idx[i]](x)
                    if self.kind == "metric":
                        out[("depth", i)] = raw
                    else:
                        sig = torch.sigmoid(raw)
                        scaled = 1 / 100 + (1 / 0.1 - 1 / 100) * sig  # disp_to_depth
                        out[("sigmoid", i)], out[("disp", i)] = sig, scaled
                        out[("depth", i)] = 1 / scaled
                    if self.uncert:
                        out[("log_sigma", i)] = self.decoder[self.unc_idx[i]](x)
            out["taps"] = taps
            return out

    class PoseDecoder(nn.Module):
        def __init__(self, c_enc, frames=2):
            super().__init__()
            self.net = nn.ModuleList([nn.Conv2d(c_enc, 256, 1), nn.Conv2d(256, 256, 3, 1, 1),
                                      nn.Conv2d(256, 256, 3, 1, 1), nn.Conv2d(256, 6 * frames, 1)])

    return types.SimpleNamespace(torch=torch, F=F, ResnetEncoder=ResnetEncoder,
                                 DepthDecoder=DepthDecoder, PoseDecoder=PoseDecoder,
                                 randomize=randomize)


def write_released(folder, kind="plain", width=1.0, seed=0, height=H, image_width=W,
                   stored_resolution=True):
    """Random Monodepth2-format `encoder.pth` + `depth.pth` in `folder`; returns the
    torch (encoder, decoder) in eval mode."""
    R = reference()
    torch = R.torch
    torch.manual_seed(seed)
    enc = R.randomize(R.ResnetEncoder(3, width), seed)
    dec = R.randomize(R.DepthDecoder(enc.channels, width, kind), seed + 1)
    folder.mkdir(parents=True, exist_ok=True)
    sd = enc.state_dict()
    if stored_resolution:
        sd["height"], sd["width"], sd["use_stereo"] = height, image_width, False
    torch.save(sd, folder / "encoder.pth")
    torch.save(dec.state_dict(), folder / "depth.pth")
    return enc, dec


def _images(seed=0, b=B, h=H, w=W):
    return np.random.default_rng(seed).uniform(0, 1, (b, h, w, 3)).astype(np.float32)


def torch_forward(enc, dec, images):
    x = reference().torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    return dec(enc(x))


def _nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def torch_gradient_map(enc, dec, images, variance_weight=0.0, tap=6):
    """The gradient uncertainty of the paper's reference code, in PyTorch autograd."""
    R = reference()
    torch, F = R.torch, R.F
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        d_ref = torch.flip(dec(enc(torch.flip(x, [3])))[("depth", 0)], [3])
    out = dec(enc(x))
    loss = ((out[("depth", 0)] - d_ref) ** 2).mean()
    if variance_weight:
        loss = loss + variance_weight * (torch.exp(out[("log_sigma", 0)]) ** 2).mean()
    (g,) = torch.autograd.grad(loss, out["taps"][tap])
    u = g.max(1, keepdim=True).values
    lo, hi = u.amin((1, 2, 3), keepdim=True), u.amax((1, 2, 3), keepdim=True)
    u = (u - lo) / (hi - lo)
    u = F.interpolate(u, size=images.shape[1:3], mode="bilinear", align_corners=False)
    return _nhwc(u)


def record(name: str, diff: float) -> float:
    """Print a measured max |jaxdepth − PyTorch| (shown with `pytest -s`)."""
    print(f"\nmax |jaxdepth - pytorch| {name}: {diff:.3g}", end="")
    return diff


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    _torch()
    folder = tmp_path_factory.mktemp("mono_640x192")
    enc, dec = write_released(folder, "plain", seed=1)
    out = convert_monodepth2(folder / "encoder.pth", folder / "depth.pth",
                             tmp_path_factory.mktemp("ckpt") / "plain")
    return enc, dec, load_checkpoint(out)


@pytest.mark.slow
def test_plain_disparity_matches_pytorch(plain):
    enc, dec, (model, variables, meta) = plain
    assert meta["variant"] == "plain" and meta["metric"] is False
    assert (meta["height"], meta["width"], meta["use_stereo"]) == (H, W, False)
    assert meta["model"]["num_layers"] == 18 and meta["model"]["width"] == 1.0
    images = _images(1)
    ref = torch_forward(enc, dec, images)
    out = jax.jit(model.apply)(variables, jnp.asarray(images))
    assert np.std(_nhwc(ref[("disp", 0)])) > 1e-2, "degenerate random model"
    for s in range(4):
        diff = float(np.abs(np.asarray(out["scales"][s]["disp"]) - _nhwc(ref[("disp", s)])).max())
        record(f"plain disp scale {s}", diff)
        assert diff <= 1e-5, (s, diff)
    record("plain sigmoid scale 0", float(np.abs(
        np.asarray(jax.nn.sigmoid(out["features"]["dec10"])) - _nhwc(ref[("sigmoid", 0)])).max()))
    for i in range(10):  # every decoder tap, relative to its scale
        a, r = np.asarray(out["features"][f"dec{i}"]), _nhwc(ref["taps"][i])
        assert np.abs(a - r).max() <= 1e-4 * max(1.0, np.abs(r).max()), i


@pytest.mark.slow
def test_plain_gradient_uncertainty_matches_pytorch(plain):
    enc, dec, (model, variables, _) = plain
    images = _images(2)
    want = torch_gradient_map(enc, dec, images)
    got = gradient_uncertainty(model.apply, variables, jnp.asarray(images))
    diff = float(np.abs(np.asarray(got.uncertainty) - want).max())
    record("plain gradient map dec6", diff)
    assert want.std() > 0.05
    assert diff <= 1e-4, diff


@pytest.mark.slow
def test_uncertconv_log_sigma_and_gradient_match_pytorch(tmp_path):
    _torch()
    enc, dec = write_released(tmp_path / "log", "uncert", seed=3)
    out_dir = convert_monodepth2(tmp_path / "log" / "encoder.pth", tmp_path / "log" / "depth.pth",
                                 tmp_path / "ckpt")
    model, variables, meta = load_checkpoint(out_dir)
    assert meta["variant"] == "uncertconv" and model.log_sigma
    assert "uncertconv_3" in variables["params"]["decoder"]
    images = _images(3)
    ref = torch_forward(enc, dec, images)
    out = jax.jit(model.apply)(variables, jnp.asarray(images))
    for s in range(4):
        diff = float(np.abs(np.asarray(out["scales"][s]["log_sigma"]) - _nhwc(ref[("log_sigma", s)])).max())
        record(f"uncertconv log_sigma scale {s}", diff)
        assert diff <= 1e-5, (s, diff)
    diff = float(np.abs(np.asarray(out["disp"]) - _nhwc(ref[("disp", 0)])).max())
    record("uncertconv disp scale 0", diff)
    assert diff <= 1e-5
    sigma = np.asarray(predictive(model.apply, variables, jnp.asarray(images)).uncertainty)
    want_sigma = np.exp(_nhwc(ref[("log_sigma", 0)]))
    record("uncertconv predictive sigma (rel)", float(np.abs(sigma / want_sigma - 1).max()))
    np.testing.assert_allclose(sigma, want_sigma, rtol=1e-5)
    want = torch_gradient_map(enc, dec, images, variance_weight=2.0)
    got = gradient_uncertainty(model.apply, variables, jnp.asarray(images), variance_weight=2.0)
    diff = float(np.abs(np.asarray(got.uncertainty) - want).max())
    record("uncertconv gradient map dec6 (λ=2)", diff)
    assert diff <= 1e-4, diff


@pytest.mark.slow
def test_metric_decoder_forward_and_nyu_inference(tmp_path):
    _torch()
    folder = tmp_path / "nyu_supervised"
    enc, dec = write_released(folder, "metric", seed=5)
    out_dir = convert_monodepth2(folder / "encoder.pth", folder / "depth.pth", tmp_path / "ckpt")
    model, variables, meta = load_checkpoint(out_dir)
    assert meta["metric"] is True and "NYU" in meta["metric_source"] and model.metric
    assert "depthconv_0" in variables["params"]["decoder"]
    images = _images(4)
    ref = torch_forward(enc, dec, images)
    out = jax.jit(model.apply)(variables, jnp.asarray(images))
    for s in range(4):
        diff = float(np.abs(np.asarray(out["scales"][s]["depth"]) - _nhwc(ref[("depth", s)])).max())
        record(f"metric depth scale {s}", diff)
        assert diff <= 1e-5, diff
    # the flag wins over the path
    out2 = convert_monodepth2(folder / "encoder.pth", folder / "depth.pth", tmp_path / "c2",
                              metric=False)
    assert json.loads((out2 / "meta.json").read_text())["metric"] is False


def test_head_order_is_read_from_channels():
    _torch()
    R = reference()
    enc_ch = (64, 64, 128, 256, 512)
    for kind in ("uncert", "uncert_blocked"):
        sd = {k: v.numpy() for k, v in R.DepthDecoder(enc_ch, 1.0, kind).state_dict().items()}
        layout = detect_variant(sd)
        assert layout["variant"] == "uncertconv"
        dec = R.DepthDecoder(enc_ch, 1.0, kind)
        for s in range(4):
            assert layout["heads"][dec.disp_idx[s]] == ("disp", s)
            assert layout["heads"][dec.unc_idx[s]] == ("uncert", s)
    sd = {k: v.numpy() for k, v in R.DepthDecoder(enc_ch, 1.0, "plain").state_dict().items()}
    assert detect_variant(sd)["variant"] == "plain"
    sd["decoder.14.conv.weight"] = sd["decoder.13.conv.weight"]
    sd["decoder.14.conv.bias"] = sd["decoder.13.conv.bias"]
    with pytest.raises(ConversionError, match="expected 4 heads"):
        detect_variant(sd)


def test_bootstrap_folder_and_snapshots(tmp_path):
    _torch()
    nets = [write_released(tmp_path / "boot" / f"boot_{i}" / "weights_19", "plain", width=0.125,
                           seed=10 * i, height=64, image_width=64) for i in (1, 2, 10)]
    assert [p.parent.name for p in find_models(tmp_path / "boot")] == ["boot_1", "boot_2", "boot_10"]
    out = convert_monodepth2_folder(tmp_path / "boot", tmp_path / "ckpt")
    model, members, meta = load_checkpoint(out)
    assert isinstance(members, list) and len(members) == 3
    assert meta["ensemble"]["members"] == 3 and meta["ensemble"]["names"][2].startswith("boot_10")
    assert (meta["height"], meta["width"], model.width) == (64, 64, 0.125)
    images, apply = _images(5, h=64, w=64), jax.jit(model.apply)
    for (enc, dec), v in zip(nets, members):
        ref = _nhwc(torch_forward(enc, dec, images)[("disp", 0)])
        np.testing.assert_allclose(np.asarray(apply(v, jnp.asarray(images))["disp"]), ref,
                                   atol=1e-5)
    for k in (18, 19):  # snapshots of one run
        write_released(tmp_path / "run" / f"weights_{k}", "plain", width=0.125, seed=k,
                       height=64, image_width=64)
    out = convert_monodepth2_folder(tmp_path / "run", tmp_path / "snap", snapshots=[18, 19])
    assert len(load_checkpoint(out)[1]) == 2


def test_pose_network_shapes(tmp_path):
    _torch()
    R = reference()
    torch = R.torch
    folder = tmp_path / "mono_640x192"
    write_released(folder, "plain", width=0.125, height=32, image_width=64)
    penc = R.randomize(R.ResnetEncoder(6, 1.0), 7)
    torch.save(penc.state_dict(), folder / "pose_encoder.pth")
    torch.save(R.randomize(R.PoseDecoder(512, 2), 8).state_dict(), folder / "pose.pth")
    out = convert_monodepth2_folder(folder, tmp_path / "ckpt")  # picks up the pose files
    tree, info = load_pose(out)
    assert info == {"num_layers": 18, "width": 1.0, "num_input_images": 2,
                    "num_input_features": 1, "num_frames_to_predict_for": 2}
    p = tree["params"]
    assert p["pose_encoder"]["conv1"]["kernel"].shape == (7, 7, 6, 64)
    assert p["pose_encoder"]["layer4_0"]["downsample_0"]["kernel"].shape == (1, 1, 256, 512)
    assert tree["batch_stats"]["pose_encoder"]["bn1"]["var"].shape == (64,)
    assert p["pose_decoder"]["squeeze"]["kernel"].shape == (1, 1, 512, 256)
    assert p["pose_decoder"]["pose_0"]["kernel"].shape == (3, 3, 256, 256)
    assert p["pose_decoder"]["pose_1"]["bias"].shape == (256,)
    assert p["pose_decoder"]["pose_2"]["kernel"].shape == (1, 1, 256, 12)
    np.testing.assert_array_equal(np.asarray(p["pose_encoder"]["conv1"]["kernel"]),
                                  penc.encoder.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))


def test_refuses_files_that_run_code_and_reports_missing_resolution(tmp_path):
    _torch()
    torch = reference().torch
    torch.save({"weights": types.SimpleNamespace(a=1)}, tmp_path / "evil.pth")
    with pytest.raises(ConversionError, match="weights_only"):
        convert_monodepth2(tmp_path / "evil.pth", tmp_path / "evil.pth", tmp_path / "out")
    write_released(tmp_path / "m", width=0.125, stored_resolution=False)
    with pytest.raises(ConversionError, match="--height"):
        convert_monodepth2(tmp_path / "m" / "encoder.pth", tmp_path / "m" / "depth.pth",
                           tmp_path / "out")
    out = convert_monodepth2(tmp_path / "m" / "encoder.pth", tmp_path / "m" / "depth.pth",
                             tmp_path / "out", height=32, width=64)
    assert load_checkpoint(out)[2]["height"] == 32
    with pytest.raises(FileExistsError, match="overwrite"):
        convert_monodepth2(tmp_path / "m" / "encoder.pth", tmp_path / "m" / "depth.pth",
                           tmp_path / "out", height=32, width=64)


# --------------------------------------------------------------------------- torch-free

def _tiny(log_sigma=False, seed=0, h=32, w=64):
    kwargs = {"num_layers": 18, "width": 0.125, "log_sigma": log_sigma}
    return kwargs, DepthNet(**kwargs).init_variables(seed, h, w)


def test_save_load_roundtrip_single_and_ensemble(tmp_path):
    kwargs, v = _tiny(log_sigma=True)
    out = save_checkpoint(tmp_path / "one", kwargs, v, 32, 64, {"source": {"kind": "test"}})
    model, loaded, meta = load_checkpoint(out)
    assert model == DepthNet(**kwargs)
    assert meta["variant"] == "uncertconv" and meta["ensemble"] is None and meta["format"] == "jaxdepth"
    assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(a, b), v, loaded))
    members = [_tiny(seed=s)[1] for s in (1, 2)]
    model, loaded, meta = load_checkpoint(save_checkpoint(tmp_path / "ens", _tiny()[0], members, 32, 64))
    assert isinstance(loaded, list) and meta["ensemble"]["members"] == 2
    for a, b in zip(members, loaded):
        assert jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(x, y), a, b))


def test_save_checkpoint_validates_and_protects(tmp_path):
    kwargs, v = _tiny()
    bad = jax.tree.map(lambda x: x, v)
    bad["params"]["decoder"]["upconv_1_0"]["kernel"] = np.zeros((3, 3, 1, 1), np.float32)
    del bad["batch_stats"]["encoder"]["bn1"]
    with pytest.raises(CheckpointError, match="missing: batch_stats/encoder/bn1/mean.*shape "
                                              "mismatches: params/decoder/upconv_1_0/kernel"):
        save_checkpoint(tmp_path / "bad", kwargs, bad, 32, 64)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        save_checkpoint(tmp_path / "foreign", kwargs, v, 32, 64, overwrite=True)
    assert (tmp_path / "foreign" / "notes.txt").exists()
    save_checkpoint(tmp_path / "ok", kwargs, v, 32, 64)
    save_checkpoint(tmp_path / "ok", kwargs, v, 32, 64, overwrite=True)


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        load_checkpoint(tmp_path / "empty")


@pytest.mark.slow
def test_load_checkpoint_reads_trainer_directories(tmp_path):
    """A run directory without an export (unfinished, or written by an earlier jaxdepth,
    whose supervised states held the depth network at the top level) is read from its
    orbax steps, the model rebuilt from the saved config."""
    from jaxdepth.train import supervised
    from jaxdepth.train.checkpoint import Checkpointer
    from jaxdepth.train.config import RunConfig
    cfg = supervised.SupervisedConfig(variant="log", width=0.125,
                                      run=RunConfig(height=32, image_width=64, steps=4))
    state = supervised.init_state(cfg)
    with Checkpointer(tmp_path / "run", cfg.to_dict(), save_every=1, asynchronous=False) as ckpt:
        ckpt.save(3, state, {})
        state4 = dict(state, params=jax.tree.map(lambda x: x + 1, state["params"]))
        ckpt.save(4, state4, {}, force=True)
    model, v, meta = load_checkpoint(tmp_path / "run")
    assert model == cfg.model() and meta["source"]["step"] == 4
    assert (meta["height"], meta["width"], meta["variant"]) == (32, 64, "uncertconv")
    assert meta["source"]["recipe"] == "log" and meta["sigma_space"] == "log_depth"
    assert jax.tree.all(jax.tree.map(np.array_equal, v["params"], state4["params"]["depth"]))
    _, v3, _ = load_checkpoint(tmp_path / "run" / "3")
    assert jax.tree.all(jax.tree.map(np.array_equal, v3["params"], state["params"]["depth"]))
    assert jax.tree.all(jax.tree.map(np.array_equal, v3["batch_stats"],
                                     state["batch_stats"]["depth"]))
    legacy = {"params": state["params"]["depth"], "batch_stats": state["batch_stats"]["depth"],
              "step": state["step"]}
    with Checkpointer(tmp_path / "old", cfg.to_dict(), save_every=1, asynchronous=False) as ckpt:
        ckpt.save(4, legacy, {}, force=True)
    _, v_old, _ = load_checkpoint(tmp_path / "old")
    assert jax.tree.all(jax.tree.map(np.array_equal, v_old["params"], legacy["params"]))


def test_metric_inference_from_paths(tmp_path):
    from jaxdepth.convert.monodepth2 import _decide_metric
    assert _decide_metric(None, [tmp_path / "NYU-resnet18" / "weights_19" / "depth.pth"])[0]
    assert _decide_metric(None, [tmp_path / "models" / "nyu_log" / "depth.pth"])[0]
    assert not _decide_metric(None, [tmp_path / "sonyuser" / "mono_640x192" / "depth.pth"])[0]
    assert _decide_metric(False, [tmp_path / "nyu" / "depth.pth"]) == (False, "given")
