"""torchvision DeepLabV3 → jaxdepth (`jaxdepth.convert.deeplabv3`, `jaxdepth convert deeplabv3`).

torchvision's own `deeplabv3_resnet50` and `deeplabv3_mobilenet_v3_large` (random weights,
nothing downloaded) with BatchNorm statistics calibrated on random images and then
perturbed at random, saved with `torch.save(model.state_dict())`, converted through the
CLI and through the function, read back with `load_checkpoint`, and compared in eval
mode on an odd-sized image (logits, aux logits, and φ = the input of `classifier.4`,
taken with a forward hook). Needs torch and torchvision (the library itself only needs
torch to read `.pth` files).
"""
from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from flax import traverse_util

from jaxdepth.cli import main
from jaxdepth.cli.convert import _DEEPLABV3_BACKBONES, _class_names
from jaxdepth.convert import (VOC_CLASSES, ConversionError, convert_deeplabv3,
                              convert_deeplabv3_state_dict, deeplabv3_layout,
                              load_torch_state_dict)
from jaxdepth.export import load_checkpoint
from jaxdepth.models.segmentation import V3_BACKBONES

torch = pytest.importorskip("torch", reason="the DeepLabV3 converter tests need torch")
segmentation = pytest.importorskip("torchvision.models.segmentation",
                                   reason="the DeepLabV3 converter tests need torchvision")

H, W, C = 65, 97, 5
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BUILDERS = {"resnet50": "deeplabv3_resnet50", "mobilenet_v3_large": "deeplabv3_mobilenet_v3_large"}


def _build(backbone: str, num_classes: int = C, aux: bool = True):
    torch.manual_seed(0)
    return getattr(segmentation, BUILDERS.get(backbone, f"deeplabv3_{backbone}"))(
        weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)


def _residual_branch_ends(model):
    """The last BatchNorm of every residual branch (ResNet `bn3`, MobileNetV3 projection).

    A BatchNorm network at random initialisation amplifies small perturbations from
    layer to layer (torchvision's own float32 ResNet-50 ends ~5e-5 (relative) off its
    float64 result with unit-scale branches); scaling the branch ends down keeps the
    network well conditioned, so float32 rounding stays far below the tolerance."""
    for m in model.modules():
        if hasattr(m, "bn3"):
            yield m.bn3
        elif getattr(m, "use_res_connect", False):
            yield m.block[-1][1]


@functools.cache
def reference(backbone: str):
    """(state dict, image [1,H,W,3] in [0,1], torch outputs as NHWC NumPy arrays)."""
    model = _build(backbone)
    gen = torch.Generator().manual_seed(1)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    images = 0.5 * torch.rand(4, 3, H, W, generator=gen) + 0.5 * torch.rand(4, 3, 1, 1, generator=gen)
    with torch.no_grad():
        # random affine parameters; running statistics of a batch that holds the test
        # image (momentum 1: that batch's), so that activations stay O(1) through the
        # 50 layers (the ASPP pooling branch sees one value per image); then a random
        # perturbation of the statistics
        for bn in bns:
            n = bn.num_features
            bn.weight.copy_(0.5 + torch.rand(n, generator=gen))
            bn.bias.copy_(0.1 * torch.randn(n, generator=gen))
            bn.momentum = 1.0
        for bn in _residual_branch_ends(model):  # keep blocks near the identity
            bn.weight.mul_(0.2)
        model.train()((images - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])
        for bn in bns:
            n = bn.num_features
            bn.running_mean += 0.05 * torch.randn(n, generator=gen) * bn.running_var.sqrt()
            bn.running_var *= 0.9 + 0.2 * torch.rand(n, generator=gen)
    model.eval()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    image = images[:1]
    captured = {}
    model.classifier[4].register_forward_hook(lambda m, i, o: captured.update(phi=i[0]))
    with torch.no_grad():
        out = model((image - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None])
    nhwc = lambda t: t.permute(0, 2, 3, 1).numpy()  # noqa: E731
    want = {"logits": nhwc(out["out"]), "aux_logits": nhwc(out["aux"]),
            "final_in": nhwc(captured["phi"])}
    return sd, nhwc(image), want


def _converted(tmp_path_factory, backbone):
    sd, image, want = reference(backbone)
    path = tmp_path_factory.mktemp(backbone) / f"deeplabv3_{backbone}.pth"
    torch.save(sd, path)
    return path, image, want


def _compare(model, variables, image, want, atol=1e-4):
    """Max |jaxdepth − torchvision| of logits, aux logits and φ (`classifier.4`'s input)."""
    out = jax.jit(model.apply)(variables, image)
    got = {"logits": out["logits"], "aux_logits": out["aux_logits"],
           "final_in": out["features"]["final_in"]}
    for key, value in got.items():
        assert value.shape == want[key].shape and value.dtype == want[key].dtype, key
        np.testing.assert_allclose(np.asarray(value), want[key], rtol=0, atol=atol, err_msg=key)
    return out


@pytest.mark.slow
def test_resnet50_through_the_cli_matches_torchvision(tmp_path_factory, capsys):
    path, image, want = _converted(tmp_path_factory, "resnet50")
    out_dir = path.parent / "ckpt"
    assert main(["convert", "deeplabv3", "--weights", str(path), "--out", str(out_dir),
                 "--height", str(H), "--width", str(W)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote") and "resnet50" in lines[0]
    model, variables, meta = load_checkpoint(out_dir)
    assert (meta["task"], meta["architecture"], meta["num_classes"]) == ("segmentation", "DeepLabV3", C)
    assert (meta["height"], meta["width"], meta["class_names"]) == (H, W, None)
    assert (model.backbone, model.aux, meta["source"]["kind"]) == ("resnet50", True,
                                                                   "torchvision-deeplabv3")
    out = _compare(model, variables, image, want)
    assert out["decoder_logits"].shape == (1, 9, 13, C)              # output stride 8
    # a second conversion into the same directory needs --overwrite: one line, exit 2
    assert main(["convert", "deeplabv3", "--weights", str(path), "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--overwrite" in err[0]


def test_mobilenet_v3_through_the_function_matches_torchvision(tmp_path_factory):
    path, image, want = _converted(tmp_path_factory, "mobilenet_v3_large")
    names = [f"class{i}" for i in range(C)]
    out_dir = convert_deeplabv3(path, path.parent / "ckpt", class_names=names)
    model, variables, meta = load_checkpoint(out_dir)
    assert (meta["class_names"], meta["height"], meta["width"]) == (names, 520, 520)
    assert (model.backbone, model.aux, model.num_classes) == ("mobilenet_v3_large", True, C)
    out = _compare(model, variables, image, want)
    assert out["decoder_logits"].shape == (1, 5, 7, C)               # output stride 16


def _torch_pixel_gradients(backbone: str, pixels, label: str):
    """PyTorch: ∇ of each listed decoder pixel's own cross-entropy (against the one-hot
    of its argmax, or the uniform label) w.r.t. `classifier.4`'s weight and bias, and
    w.r.t. the penultimate 3×3 `classifier.1` weight, by autograd, one backward pass per
    pixel. Returns `{(a, b): (last-layer gradient, penultimate gradient)}` as flat arrays."""
    sd, image, _ = reference(backbone)
    model = _build(backbone)
    model.load_state_dict(sd)
    model.eval()
    x = (torch.from_numpy(image).permute(0, 3, 1, 2) - torch.tensor(MEAN)[:, None, None]) \
        / torch.tensor(STD)[:, None, None]
    final, pen = model.classifier[4], model.classifier[1]
    out = {}
    for a, b in pixels:
        model.zero_grad()
        z = model.classifier(model.backbone(x)["out"])[0, :, a, b]  # decoder logits [C]
        logp = torch.log_softmax(z, 0)
        y = (torch.nn.functional.one_hot(z.argmax(), C).double() if label == "onehot"
             else torch.full((C,), 1.0 / C, dtype=torch.float64))
        (-(y * logp.double()).sum()).backward()
        last = torch.cat([final.weight.grad.flatten(), final.bias.grad.flatten()])
        out[(a, b)] = (last.double().numpy(), pen.weight.grad.flatten().double().numpy())
    return out


@pytest.mark.parametrize("label", ["onehot", pytest.param("uniform", marks=pytest.mark.slow)])
def test_pgn_on_the_converted_model_matches_pytorch_autograd(tmp_path_factory, label):
    """PGN's closed forms (`exact` mode) on the converted model against PyTorch's own
    per-pixel backward passes through torchvision's head (a bias on the last layer: its
    gradient term is included; BatchNorm in eval mode), for p = 0.5, 1 and 2."""
    from jaxdepth.uncertainty.pgn import head_of, pgn, pgn_penultimate

    path, image, _ = _converted(tmp_path_factory, "mobilenet_v3_large")
    model, variables, _ = load_checkpoint(convert_deeplabv3(path, path.parent / f"pgn_{label}"))
    out = jax.jit(model.apply)(variables, image)
    z, feats = out["decoder_logits"], out["features"]
    pixels = [(0, 0), (2, 3), (4, 6), (1, 5)]
    want = _torch_pixel_gradients("mobilenet_v3_large", pixels, label)
    head = head_of(variables)
    for p in (0.5, 1.0, 2.0):
        last = np.asarray(pgn(z, feats["final_in"], label=label, p=p, bias=True))[0]
        pen = np.asarray(pgn_penultimate(z, feats["final_in"], feats["penultimate_in"], head,
                                         label=label, p=p))[0]
        for (a, b), (g_last, g_pen) in want.items():
            ref_last = np.sum(np.abs(g_last) ** p) ** (1 / p)
            ref_pen = np.sum(np.abs(g_pen) ** p) ** (1 / p)
            np.testing.assert_allclose(last[a, b], ref_last, rtol=1e-4, atol=1e-4 * ref_last)
            np.testing.assert_allclose(pen[a, b], ref_pen, rtol=1e-4, atol=1e-4 * ref_pen)


def _mobilenet_sd():
    return {k: v.numpy() for k, v in reference("mobilenet_v3_large")[0].items()}


def test_layout_is_read_from_the_keys():
    sd = _mobilenet_sd()
    assert deeplabv3_layout(sd) == {"backbone": "mobilenet_v3_large", "num_classes": C, "aux": True}
    r101 = {k: v.numpy() for k, v in _build("resnet101", num_classes=3, aux=False).state_dict().items()}
    model, variables = convert_deeplabv3_state_dict(r101)
    assert (model.backbone, model.num_classes, model.aux) == ("resnet101", 3, False)
    np.testing.assert_array_equal(variables["params"]["head"]["final"]["kernel"],
                                  r101["classifier.4.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables["batch_stats"]["backbone"]["layer3_22"]["bn2"]["var"],
                                  r101["backbone.layer3.22.bn2.running_var"])


def test_wrapped_and_prefixed_state_dicts_are_accepted(tmp_path):
    sd = reference("mobilenet_v3_large")[0]
    torch.save({"model_state": {f"module.{k}": v for k, v in sd.items()}, "cur_itrs": 3},
               tmp_path / "wrapped.pth")
    torch.save(sd, tmp_path / "plain.pth")
    a = traverse_util.flatten_dict(convert_deeplabv3_state_dict(
        load_torch_state_dict(tmp_path / "wrapped.pth"))[1])
    b = traverse_util.flatten_dict(convert_deeplabv3_state_dict(
        load_torch_state_dict(tmp_path / "plain.pth"))[1])
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    # depthwise OIHW [C,1,k,k] → HWIO [k,k,1,C]; BN running_var → batch_stats var
    np.testing.assert_array_equal(a[("params", "backbone", "features_4", "block_1", "conv", "kernel")],
                                  sd["backbone.4.block.1.0.weight"].numpy().transpose(2, 3, 1, 0))
    assert a[("params", "backbone", "features_4", "block_1", "conv", "kernel")].shape == (5, 5, 1, 72)
    np.testing.assert_array_equal(a[("batch_stats", "aspp", "pool", "bn", "var")],
                                  sd["classifier.0.convs.4.2.running_var"].numpy())


def test_wrong_keys_and_shapes_are_listed():
    sd = _mobilenet_sd()
    missing = {k: v for k, v in sd.items() if k != "classifier.2.running_var"}
    with pytest.raises(ConversionError, match=r"missing: batch_stats/head/penultimate_bn/var"):
        convert_deeplabv3_state_dict(missing)
    with pytest.raises(ConversionError, match=r"unexpected: .*classifier\.9\.weight"):
        convert_deeplabv3_state_dict({**sd, "classifier.9.weight": np.zeros((1, 1, 1, 1))})
    bad = {**sd, "classifier.1.weight": np.zeros((256, 256, 1, 1), np.float32)}
    with pytest.raises(ConversionError, match=r"shape mismatches: params/head/penultimate/kernel: "
                                              r"got \(1, 1, 256, 256\), expected \(3, 3, 256, 256\)"):
        convert_deeplabv3_state_dict(bad)
    with pytest.raises(ConversionError, match="not a torchvision DeepLabV3"):
        convert_deeplabv3_state_dict({"encoder.conv1.weight": np.zeros((64, 3, 7, 7))})
    with pytest.raises(ConversionError, match="backbone='resnet50' was given"):
        convert_deeplabv3_state_dict(sd, backbone="resnet50")
    with pytest.raises(ConversionError, match="num_classes=21 was given"):
        convert_deeplabv3_state_dict(sd, num_classes=21)


def test_files_that_are_no_state_dict_are_refused(tmp_path, capsys):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    torch.save({"epoch": 3}, tmp_path / "notensors.pth")
    (tmp_path / "junk.pth").write_bytes(b"this is not a torch file")
    for name, match in (("list.pth", "expected a state dict"), ("notensors.pth", "no tensors"),
                        ("junk.pth", "could not be read")):
        with pytest.raises(ConversionError, match=match):
            convert_deeplabv3(tmp_path / name, tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        convert_deeplabv3(tmp_path / "absent.pth", tmp_path / "out")
    assert main(["convert", "deeplabv3", "--weights", str(tmp_path / "junk.pth"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxdepth: error:") and "junk.pth" in err[0]
    assert not (tmp_path / "out").exists()


def test_class_names_must_fit_the_classes(tmp_path):
    path = tmp_path / "m.pth"
    torch.save(reference("mobilenet_v3_large")[0], path)
    with pytest.raises(ValueError, match=f"list of {C} strings"):
        convert_deeplabv3(path, tmp_path / "out", class_names="voc")
    with pytest.raises(ValueError, match="'voc'"):
        convert_deeplabv3(path, tmp_path / "out", class_names="cityscapes")
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[0] == "__background__"
    assert not (tmp_path / "out").exists()
    # the CLI's --class-names and --backbone
    assert _class_names("VOC") == "voc" and _class_names("road, car") == ["road", "car"]
    assert _DEEPLABV3_BACKBONES == tuple(sorted(V3_BACKBONES))
