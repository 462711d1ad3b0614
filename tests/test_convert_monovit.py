"""The MonoViT converter against an independent PyTorch MonoViT written below from the
architecture description (docs/monovit.md), in the tiny configuration (paths 2,3,3,3; one
block per stage; dims 16,32,48,64; MLP ratio 2; decoder at a quarter width), with random
weights and random BatchNorm / LayerNorm parameters, saved in the released layout
(`encoder.pth` with the shared modules under all their names and `height`, `width`,
`use_stereo`; `depth.pth` with every tensor as `convs.<name>.*` and `decoder.<k>.*`).
Skipped where torch is not installed:

    pip install torch==2.14.1      # CPU build, or: pip install -e ".[dev]"
    python -m pytest -q -n 0 tests/test_convert_monovit.py
"""
from __future__ import annotations

import functools
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth.convert.monodepth2 import ConversionError
from jaxdepth.convert.monovit import RELEASED_DECODER_ORDER, convert_monovit
from jaxdepth.export import load_checkpoint
from jaxdepth.uncertainty.gradient import feature_gradients
from torch_helpers import randomize

TORCH_REASON = ("the PyTorch equivalence tests of the MonoViT converter need torch: "
                "pip install torch==2.14.1 (CPU build) or pip install -e '.[dev]'")
H, W, B = 64, 64, 2
DIMS, PATHS, LAYERS, MLP = (16, 32, 48, 64), (2, 3, 3, 3), (1, 1, 1, 1), 2
DEC_ENC, DEC = (16, 16, 32, 64, 128), (4, 8, 16, 32, 64)  # num_ch_enc (X_00 = stem), num_ch_dec


@functools.cache
def reference():
    """MonoViT in plain torch.nn (written for this test; module names give the released
    state-dict keys)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class ConvBN(nn.Module):  # Conv2d_BN
        def __init__(self, cin, cout, k=1, stride=1, act=False):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.act = nn.Hardswish() if act else nn.Identity()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

    class DWConvBN(nn.Module):
        def __init__(self, c, stride):
            super().__init__()
            self.dwconv = nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)
            self.pwconv = nn.Conv2d(c, c, 1, bias=False)
            self.bn = nn.BatchNorm2d(c)
            self.act = nn.Hardswish()

        def forward(self, x):
            return self.act(self.bn(self.pwconv(self.dwconv(x))))

    class PatchEmbed(nn.Module):
        def __init__(self, c, stride):
            super().__init__()
            self.patch_conv = DWConvBN(c, stride)

    class PatchEmbedStage(nn.Module):
        def __init__(self, c, paths):
            super().__init__()
            self.patch_embeds = nn.ModuleList([PatchEmbed(c, 2 if j == 0 else 1)
                                               for j in range(paths)])

        def forward(self, x):
            outs = []
            for pe in self.patch_embeds:
                x = pe.patch_conv(x)
                outs.append(x)
            return outs

    class CPE(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.proj = nn.Conv2d(c, c, 3, 1, 1, groups=c)

        def forward(self, tokens, hw):  # [B,N,C]
            b, _, c = tokens.shape
            img = tokens.transpose(1, 2).reshape(b, c, *hw)
            return (img + self.proj(img)).flatten(2).transpose(1, 2)

    class CRPE(nn.Module):
        def __init__(self, ch, windows=((3, 2), (5, 3), (7, 3))):
            super().__init__()
            self.splits = [heads * ch for _, heads in windows]
            self.conv_list = nn.ModuleList([nn.Conv2d(s, s, k, 1, k // 2, groups=s)
                                            for (k, _), s in zip(windows, self.splits)])

        def forward(self, q, v, hw):  # [B,h,N,Ch]
            b, h, n, ch = v.shape
            img = v.permute(0, 1, 3, 2).reshape(b, h * ch, *hw)  # head-major channels
            parts = torch.split(img, self.splits, 1)
            conv = torch.cat([c(p) for c, p in zip(self.conv_list, parts)], 1)
            conv = conv.reshape(b, h, ch, n).permute(0, 1, 3, 2)
            return q * conv

    class FactorAtt(nn.Module):
        def __init__(self, c, crpe, heads=8):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(c, 3 * c)
            self.proj = nn.Linear(c, c)
            self.crpe = crpe

        def forward(self, x, hw):
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            kv = k.softmax(dim=2).transpose(-1, -2) @ v
            out = (c // self.heads) ** -0.5 * (q @ kv) + self.crpe(q, v, hw)
            return self.proj(out.transpose(1, 2).reshape(b, n, c))

    class Mlp(nn.Module):
        def __init__(self, c, hidden):
            super().__init__()
            self.fc1 = nn.Linear(c, hidden)
            self.fc2 = nn.Linear(hidden, c)

        def forward(self, x):
            return self.fc2(F.gelu(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self, c, ratio, cpe, crpe):
            super().__init__()
            self.cpe, self.crpe = cpe, crpe  # shared: also stored under these names
            self.factoratt_crpe = FactorAtt(c, crpe)
            self.mlp = Mlp(c, c * ratio)
            self.norm1 = nn.LayerNorm(c, eps=1e-6)
            self.norm2 = nn.LayerNorm(c, eps=1e-6)

        def forward(self, x, hw):
            x = self.cpe(x, hw)
            x = x + self.factoratt_crpe(self.norm1(x), hw)
            return x + self.mlp(self.norm2(x))

    class Encoder(nn.Module):  # MHCAEncoder
        def __init__(self, c, layers, ratio):
            super().__init__()
            self.cpe = CPE(c)
            self.crpe = CRPE(c // 8)
            self.MHCA_layers = nn.ModuleList([Block(c, ratio, self.cpe, self.crpe)
                                              for _ in range(layers)])

        def forward(self, x):
            b, c, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)
            for blk in self.MHCA_layers:
                t = blk(t, (h, w))
            return t.transpose(1, 2).reshape(b, c, h, w)

    class ResBlock(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = ConvBN(c, c, act=True)
            self.dwconv = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
            self.norm = nn.BatchNorm2d(c)
            self.act = nn.Hardswish()
            self.conv2 = ConvBN(c, c)

        def forward(self, x):
            return x + self.conv2(self.act(self.norm(self.dwconv(self.conv1(x)))))

    class Stage(nn.Module):
        def __init__(self, c, cout, layers, ratio, paths):
            super().__init__()
            self.mhca_blks = nn.ModuleList([Encoder(c, layers, ratio) for _ in range(paths)])
            self.InvRes = ResBlock(c)
            self.aggregate = ConvBN(c * (paths + 1), cout, act=True)

        def forward(self, inputs):
            outs = [self.InvRes(inputs[0])] + [e(x) for e, x in zip(self.mhca_blks, inputs)]
            return self.aggregate(torch.cat(outs, 1))

    class MPViT(nn.Module):
        def __init__(self, dims=DIMS, paths=PATHS, layers=LAYERS, ratio=MLP):
            super().__init__()
            self.stem = nn.Sequential(ConvBN(3, dims[0] // 2, 3, 2, act=True),
                                      ConvBN(dims[0] // 2, dims[0], 3, 1, act=True))
            self.patch_embed_stages = nn.ModuleList([PatchEmbedStage(dims[i], paths[i])
                                                     for i in range(4)])
            self.mhca_stages = nn.ModuleList([
                Stage(dims[i], dims[min(i + 1, 3)], layers[i], ratio, paths[i]) for i in range(4)])

        def forward(self, x):
            x = self.stem(x)
            outs = [x]
            for pe, st in zip(self.patch_embed_stages, self.mhca_stages):
                x = st(pe(x))
                outs.append(x)
            return outs

    # ------------------------------------------------------------------ decoder

    def up(x):
        return F.interpolate(x, scale_factor=2, mode="nearest")

    class Conv3x3(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.pad = nn.ReflectionPad2d(1)
            self.conv = nn.Conv2d(int(cin), int(cout), 3)

        def forward(self, x):
            return self.conv(self.pad(x))

    class ConvBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = Conv3x3(cin, cout)
            self.nonlin = nn.ELU()

        def forward(self, x):
            self.pre = self.conv(x)  # the tap: the conv output before the ELU
            return self.nonlin(self.pre)

    class Conv1x1(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(int(cin), int(cout), 1, bias=False)

        def forward(self, x):
            return self.conv(x)

    def se_fc(c):
        r = max(1, c // 16)
        return nn.Sequential(nn.Linear(c, r, bias=False), nn.ReLU(), nn.Linear(r, c, bias=False))

    class ChannelAttention(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.fc = se_fc(c)

        def forward(self, x):
            return x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]

    class Adapter(nn.Module):  # Attention_Module
        def __init__(self, cin, cout):
            super().__init__()
            self.ca = ChannelAttention(cin)
            self.conv_se = nn.Conv2d(cin, cout, 3, 1, 1)

        def forward(self, x):
            return F.relu(self.conv_se(self.ca(x)))

    class FSE(nn.Module):
        def __init__(self, high, low):
            super().__init__()
            c = high + low
            self.fc = se_fc(c)
            self.conv_se = nn.Conv2d(c, high, 1)

        def forward(self, high, lows):
            x = torch.cat([up(high)] + lows, 1)
            x = x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]
            return F.relu(self.conv_se(x))

    class HRDecoder(nn.Module):
        def __init__(self, enc=DIMS[:1] + DIMS[1:] + DIMS[3:], ch=DEC_ENC, dec=DEC):
            super().__init__()
            self.ch, self.dec = ch, dec
            convs = {}
            for i in (4, 3, 2, 1):
                convs[f"f{i}"] = Adapter(enc[i], ch[i])
            for j in range(5):
                for i in range(5 - j):
                    cin = ch[i] / 2 if i == 0 and j != 0 else ch[i]
                    convs[f"X_{i}{j}_Conv_0"] = ConvBlock(cin, cin / 2)
                    if i == 0 and j == 4:
                        convs["X_04_Conv_1"] = ConvBlock(cin / 2, dec[0])
            self.attention = ("31", "22", "13", "04")
            for n in self.attention:
                r, c = int(n[0]), int(n[1])
                convs[f"X_{n}_attention"] = FSE(ch[r + 1] // 2, ch[r] + dec[r + 1] * (c - 1))
            for n in ("01", "11", "21", "02", "12", "03"):
                r, c = int(n[0]), int(n[1])
                if c == 1:
                    convs[f"X_{r + 1}{c - 1}_Conv_1"] = ConvBlock(ch[r + 1] // 2 + ch[r], dec[r + 1])
                else:
                    convs[f"X_{n}_downsample"] = Conv1x1(
                        ch[r + 1] // 2 + ch[r] + dec[r + 1] * (c - 1), 2 * dec[r + 1])
                    convs[f"X_{r + 1}{c - 1}_Conv_1"] = ConvBlock(2 * dec[r + 1], dec[r + 1])
            for i in range(4):
                convs[f"dispconv{i}"] = Conv3x3(dec[i], 1)
            self.convs = nn.ModuleDict(convs)
            self.decoder = nn.ModuleList(list(self.convs.values()))  # the released duplicate

        def forward(self, feats):
            cv = self.convs
            X = {(0, 0): feats[0]}
            for i in (1, 2, 3, 4):
                X[(i, 0)] = cv[f"f{i}"](feats[i])
            for n in ("01", "11", "21", "31", "02", "12", "22", "03", "13", "04"):
                r, c = int(n[0]), int(n[1])
                high = cv[f"X_{r + 1}{c - 1}_Conv_0"](X[(r + 1, c - 1)])
                lows = [X[(r, j)] for j in range(c)]
                if n in self.attention:
                    X[(r, c)] = cv[f"X_{n}_attention"](high, lows)
                else:
                    x = torch.cat([up(high)] + lows, 1)
                    if c > 1:
                        x = cv[f"X_{n}_downsample"](x)
                    X[(r, c)] = cv[f"X_{r + 1}{c - 1}_Conv_1"](x)
            x = cv["X_04_Conv_1"](up(cv["X_04_Conv_0"](X[(0, 4)])))
            out = {}
            for s, inp in enumerate((x, X[(0, 4)], X[(1, 3)], X[(2, 2)])):
                sig = torch.sigmoid(cv[f"dispconv{s}"](inp))
                disp = 1 / 100 + (1 / 0.1 - 1 / 100) * sig  # disp_to_depth
                out[("disp", s)], out[("depth", s)] = disp, 1 / disp
            return out

    return types.SimpleNamespace(torch=torch, MPViT=MPViT, HRDecoder=HRDecoder,
                                 randomize=randomize)


def write_released(folder, seed=0):
    """Random tiny MonoViT `encoder.pth` + `depth.pth` in the released layout; returns the
    torch (encoder, decoder) in eval mode."""
    R = reference()
    # the decoder with gain 2: PyTorch's default bound shrinks the signal at every conv
    enc, dec = R.randomize(R.MPViT(), seed), R.randomize(R.HRDecoder(), seed + 1, gain=2.0)
    folder.mkdir(parents=True, exist_ok=True)
    sd = enc.state_dict()
    sd["height"], sd["width"], sd["use_stereo"] = H, W, False
    R.torch.save(sd, folder / "encoder.pth")
    R.torch.save(dec.state_dict(), folder / "depth.pth")
    return enc, dec


def _images(seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (B, H, W, 3)).astype(np.float32)


def _torch_in(images):
    return reference().torch.from_numpy(images.transpose(0, 3, 1, 2).copy())


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    pytest.importorskip("torch", reason=TORCH_REASON)
    folder = tmp_path_factory.mktemp("MonoViT_tiny")
    enc, dec = write_released(folder, seed=1)
    out = convert_monovit(folder / "encoder.pth", folder / "depth.pth",
                          tmp_path_factory.mktemp("ckpt") / "monovit")
    return folder, enc, dec, load_checkpoint(out)


def test_released_layout_is_deduplicated_and_disparity_matches_pytorch(released):
    folder, enc, dec, (model, variables, meta) = released
    torch = reference().torch
    depth_sd = torch.load(folder / "depth.pth", weights_only=True)
    enc_sd = torch.load(folder / "encoder.pth", weights_only=True)
    assert len(depth_sd) == 2 * len([k for k in depth_sd if k.startswith("convs.")]) == 174
    assert list(dict.fromkeys(k.split(".")[1] for k in depth_sd if k.startswith("convs."))) == \
        list(RELEASED_DECODER_ORDER)
    assert "mhca_stages.1.mhca_blks.2.MHCA_layers.0.factoratt_crpe.crpe.conv_list.2.weight" in enc_sd
    assert type(model).__name__ == "MonoViT" and model.default_tap == "X_13_Conv_0"
    assert (meta["model"]["size"], meta["model"]["width"], meta["model"]["unused_convs"]) == \
        ("tiny", 1.0, True)
    assert (meta["height"], meta["width"], meta["use_stereo"], meta["architecture"]) == \
        (H, W, False, "MonoViT")
    images = _images(1)
    with torch.no_grad():
        ref = dec(enc(_torch_in(images)))
    out = jax.jit(model.apply)(variables, jnp.asarray(images))
    assert np.std(ref[("disp", 0)].numpy()) > 1e-2, "degenerate random model"
    for s in range(4):
        want = ref[("disp", s)].numpy().transpose(0, 2, 3, 1)
        diff = float(np.abs(np.asarray(out["scales"][s]["disp"]) - want).max())
        print(f"\nmax |jaxdepth - pytorch| MonoViT disp scale {s}: {diff:.3g}", end="")
        assert diff <= 1e-5, (s, diff)
    for tap in ("X_13_Conv_0", "X_04_Conv_1", "X_10_Conv_1"):
        want = dec.convs[tap].pre.numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(np.asarray(out["features"][tap]), want, atol=1e-4, rtol=1e-4)


def test_gradient_at_default_tap_matches_pytorch_autograd(released):
    """∂L/∂(X_13_Conv_0 before its ELU) of L = Σ_images mean (d − d_ref)², d_ref =
    flip(f(flip(x))) held constant: the per-pixel L2 norm over channels in both."""
    _, enc, dec, (model, variables, _) = released
    torch = reference().torch
    images = _images(2)
    x = _torch_in(images)
    with torch.no_grad():
        d_ref = torch.flip(dec(enc(torch.flip(x, [3])))[("depth", 0)], [3])
    d = dec(enc(x))[("depth", 0)]
    loss = ((d - d_ref) ** 2).mean((1, 2, 3)).sum()
    (g,) = torch.autograd.grad(loss, dec.convs["X_13_Conv_0"].pre)
    want = torch.linalg.vector_norm(g, dim=1).numpy()
    grads = jax.jit(lambda v, x: feature_gradients(model.apply, v, x, taps=(model.default_tap,))[1])(
        variables, jnp.asarray(images))
    got = np.linalg.norm(np.asarray(grads["X_13_Conv_0"]), axis=-1)
    assert got.shape == want.shape == (B, H // 4, W // 4)
    diff = float(np.abs(got - want).max() / want.max())
    print(f"\nmax |jaxdepth - pytorch| / max, gradient norm map X_13_Conv_0: {diff:.3g}", end="")
    assert want.std() > 0.05 * want.max()
    assert diff <= 1e-4, diff


@pytest.mark.slow
def test_cli_and_bad_files(released, tmp_path, capsys):
    from jaxdepth.cli import main
    folder = released[0]
    torch = reference().torch
    rc = main(["convert", "monovit", "--encoder", str(folder / "encoder.pth"),
               "--depth", str(folder / "depth.pth"), "--out", str(tmp_path / "cli")])
    assert rc == 0 and "MonoViT tiny" in capsys.readouterr().out
    meta = json.loads((tmp_path / "cli" / "meta.json").read_text())
    assert meta["architecture"] == "MonoViT" and meta["source"]["kind"] == "monovit"
    from PIL import (
        Image,  # jaxdepth predict rebuilds the MonoViT; grad at its default tap
    )
    Image.fromarray(np.uint8(255 * _images(3)[0, :50, :60])).save(tmp_path / "photo.png")
    rc = main(["predict", "--checkpoint", str(tmp_path / "cli"), "--out", str(tmp_path / "pred"),
               "--no-panel", "--batch-size", "1", str(tmp_path / "photo.png")])
    assert rc == 0 and np.load(tmp_path / "pred" / "photo_uncertainty.npy").shape == (50, 60)
    capsys.readouterr()

    sd = torch.load(folder / "depth.pth", weights_only=True)
    k = RELEASED_DECODER_ORDER.index("X_13_Conv_0")
    del sd["convs.X_13_Conv_0.conv.conv.bias"], sd[f"decoder.{k}.conv.conv.bias"]
    torch.save(sd, tmp_path / "missing.pth")
    rc = main(["convert", "monovit", "--encoder", str(folder / "encoder.pth"),
               "--depth", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("jaxdepth: error:") and len(err.strip().splitlines()) == 1
    assert "missing: params/decoder/X_13_Conv_0/bias" in err

    sd = torch.load(folder / "depth.pth", weights_only=True)
    sd[f"decoder.{k}.conv.conv.bias"] = sd[f"decoder.{k}.conv.conv.bias"] + 1
    torch.save(sd, tmp_path / "tampered.pth")
    with pytest.raises(ConversionError, match=rf"decoder\.{k}\.conv\.conv\.bias.*differs"):
        convert_monovit(folder / "encoder.pth", tmp_path / "tampered.pth", tmp_path / "bad2")
    sd = torch.load(folder / "encoder.pth", weights_only=True)
    key = "mhca_stages.0.mhca_blks.1.MHCA_layers.0.cpe.proj.bias"
    sd[key] = sd[key] + 1  # a new tensor: the loaded copies share their storage
    torch.save(sd, tmp_path / "enc_tampered.pth")
    with pytest.raises(ConversionError, match="shared module"):
        convert_monovit(tmp_path / "enc_tampered.pth", folder / "depth.pth", tmp_path / "bad3")
