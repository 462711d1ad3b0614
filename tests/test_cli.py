"""`jaxdepth predict` and `jaxdepth convert` on tiny models and images.

The predict tests build checkpoints from random Flax variables with
`save_checkpoint`, so they run without torch; the convert tests write random
Monodepth2-format `.pth` files (see test_convert.py) and need torch.
"""
from __future__ import annotations

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from jaxdepth.cli import collect_images, main
from jaxdepth.convert import load_checkpoint, save_checkpoint
from jaxdepth.models import DepthNet
from jaxdepth.uncertainty import gradient_uncertainty

H, W = 64, 96  # the checkpoints' training resolution
KW = {"num_layers": 18, "width": 0.125}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    plain = save_checkpoint(root / "plain", KW, DepthNet(**KW).init_variables(0, H, W), H, W)
    log_kw = dict(KW, log_sigma=True)
    log = save_checkpoint(root / "log", log_kw, DepthNet(**log_kw).init_variables(1, H, W), H, W)
    boot = save_checkpoint(root / "boot", KW, [DepthNet(**KW).init_variables(s, H, W) for s in (2, 3)],
                           H, W)
    return {"plain": plain, "log": log, "boot": boot}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two images of their own sizes (one at the checkpoint's size) and a JPEG."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    sizes = {"a.png": (H, W), "b.png": (50, 70), "c.jpg": (81, 123)}
    for name, (h, w) in sizes.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / name)
    (d / "notes.txt").write_text("not an image")
    return d, sizes


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow
def test_predict_grad_writes_maps_at_each_image_size(ckpts, images, tmp_path, capsys):
    d, sizes = images
    rc, out, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], "--out", tmp_path, d)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3 and all("depth" in line and "mean uncertainty" in line for line in lines)
    for name, (h, w) in sizes.items():
        stem = tmp_path / name.rsplit(".", 1)[0]
        depth = np.load(f"{stem}_depth.npy")
        unc = np.load(f"{stem}_uncertainty.npy")
        assert depth.shape == unc.shape == (h, w) and depth.dtype == unc.dtype == np.float32
        assert np.all(depth >= 0.1 - 1e-4) and np.all(depth <= 100 + 1e-2)
        assert unc.min() >= -1e-6 and unc.max() <= 1 + 1e-6
        panel = Image.open(f"{stem}_panel.png")
        assert panel.width > 3 * w and panel.height > h
    # an image at the training size gets exactly the library's result
    model, variables, _ = load_checkpoint(ckpts["plain"])
    x = np.asarray(Image.open(d / "a.png").convert("RGB"), np.float32)[None] / 255.0
    est = gradient_uncertainty(model.apply, variables, jnp.asarray(x))
    np.testing.assert_allclose(np.load(tmp_path / "a_uncertainty.npy"), np.asarray(est.uncertainty)[0, ..., 0],
                               atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "a_depth.npy"), np.asarray(est.depth)[0, ..., 0],
                               rtol=1e-4)


@pytest.mark.parametrize("ckpt,method,extra", [
    ("plain", "post", []), ("plain", "var", []), ("plain", "in_drop", ["--samples", "3"]),
    ("log", "log", []), ("log", "grad", ["--reduce", "norm", "--taps", "dec6,dec7", "dec8"]),
    ("boot", "boot", []), ("boot", "grad", ["--member", "1"])])
def test_predict_methods(ckpts, images, tmp_path, capsys, ckpt, method, extra):
    d, sizes = images
    rc, out, err = _run(capsys, "predict", "--checkpoint", ckpts[ckpt], "--method", method,
                        "--out", tmp_path, "--no-panel", "--batch-size", "2", *extra, d / "b.png")
    assert rc == 0, err
    assert len(out.strip().splitlines()) == 1
    unc = np.load(tmp_path / "b_uncertainty.npy")
    assert unc.shape == sizes["b.png"] and np.isfinite(unc).all()
    assert not (tmp_path / "b_panel.png").exists()
    if ckpt == "boot" and method == "grad":
        assert "member 1" in err


@pytest.mark.slow
def test_globs_progress_bar_and_repeated_stems(ckpts, tmp_path, capsys):
    rng = np.random.default_rng(1)
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(
                tmp_path / sub / f"im{i}.png")
    pattern = str(tmp_path / "*" / "im*.png")
    assert len(collect_images([pattern])) == 6
    out_dir = tmp_path / "out"
    rc, out, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], "--method", "post",
                        "--out", out_dir, "--no-panel", pattern)
    assert rc == 0, err
    assert "predict (post)" in err and "6/6" in err  # the progress bar
    assert len([l for l in out.splitlines() if "mean uncertainty" in l]) == 6
    names = sorted(p.name for p in out_dir.glob("*_depth.npy"))
    assert names == sorted([f"im{i}_depth.npy" for i in range(3)] + [f"im{i}_1_depth.npy" for i in range(3)])


def test_predict_errors(ckpts, images, tmp_path, capsys):
    d, _ = images
    rc, _, err = _run(capsys, "predict", "--checkpoint", tmp_path / "missing", d)
    assert rc == 2 and "does not exist" in err
    (tmp_path / "empty").mkdir()
    rc, _, err = _run(capsys, "predict", "--checkpoint", tmp_path / "empty", d)
    assert rc == 2 and "meta.json" in err
    rc, _, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], tmp_path / "empty")
    assert rc == 2 and "no images matched" in err
    rc, _, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], str(tmp_path / "*.png"))
    assert rc == 2 and "no images matched" in err
    rc, _, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], tmp_path / "nope.png")
    assert rc == 2 and "no such file" in err
    rc, _, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], "--method", "log", d)
    assert rc == 2 and "log σ head" in err
    rc, _, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], "--method", "boot", d)
    assert rc == 2 and "ensemble" in err
    rc, _, err = _run(capsys, "predict", "--checkpoint", ckpts["plain"], "--taps", "dec42", d)
    assert rc == 2 and "unknown tap" in err
    with pytest.raises(SystemExit) as e:
        main(["predict", "--checkpoint", str(ckpts["plain"]), "--method", "magic", str(d)])
    assert e.value.code == 2
    assert "invalid choice: 'magic'" in capsys.readouterr().err


@pytest.mark.slow
def test_entry_point_help_runs_without_jax_work():
    r = subprocess.run([sys.executable, "-m", "jaxdepth.cli", "predict", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--checkpoint" in r.stdout and "boot" in r.stdout
    r = subprocess.run([sys.executable, "-m", "jaxdepth.cli", "convert", "monodepth2", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--metric" in r.stdout and "--snapshots" in r.stdout


def test_convert_without_torch_says_how_to_install(tmp_path, capsys, monkeypatch):
    (tmp_path / "encoder.pth").write_bytes(b"x")
    (tmp_path / "depth.pth").write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    rc, _, err = _run(capsys, "convert", "monodepth2", "--encoder", tmp_path / "encoder.pth",
                      "--depth", tmp_path / "depth.pth", "--out", tmp_path / "ckpt")
    assert rc == 2 and "jaxdepth[torch]" in err


@pytest.mark.slow
def test_convert_cli_then_predict(tmp_path, capsys):
    pytest.importorskip("torch", reason="converting .pth files needs torch: pip install "
                        "torch==2.13.0 (CPU build) or pip install -e '.[dev]'")
    from test_convert import write_released
    write_released(tmp_path / "m", "uncert", width=0.125, height=64, image_width=64)
    rc, out, err = _run(capsys, "convert", "monodepth2", "--encoder", tmp_path / "m" / "encoder.pth",
                        "--depth", tmp_path / "m" / "depth.pth", "--out", tmp_path / "ckpt")
    assert rc == 0, err
    assert "uncertconv" in out and "64x64" in out and "sigmoid disparity" in out
    rc, _, err = _run(capsys, "convert", "monodepth2", "--encoder", tmp_path / "m" / "encoder.pth",
                      "--depth", tmp_path / "m" / "depth.pth", "--out", tmp_path / "ckpt")
    assert rc == 2 and "--overwrite" in err
    for i in (1, 2):
        write_released(tmp_path / "boot" / f"boot_{i}" / "weights_19", width=0.125, seed=i,
                       height=64, image_width=64)
    rc, out, err = _run(capsys, "convert", "monodepth2", "--folder", tmp_path / "boot",
                        "--out", tmp_path / "boot_ckpt")
    assert rc == 0 and "ensemble of 2" in out, err
    Image.fromarray(np.zeros((30, 40, 3), np.uint8) + 100).save(tmp_path / "img.png")
    rc, out, err = _run(capsys, "predict", "--checkpoint", tmp_path / "ckpt", "--method", "log",
                        "--out", tmp_path / "pred", tmp_path / "img.png")
    assert rc == 0, err
    assert np.load(tmp_path / "pred" / "img_uncertainty.npy").shape == (30, 40)
