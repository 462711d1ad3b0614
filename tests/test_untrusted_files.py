"""Untrusted input files run no code and fail with a clear error (issue 17, item 4).

* `.pth` files: every `torch.load` in `jaxdepth/` passes `weights_only=True` (checked on
  the source); a pickle whose unpickling would write a marker file is refused by every
  `jaxdepth convert` format with a one-line `jaxdepth: error:` naming the file, exit 2,
  the marker not written and nothing written at `--out`. A control test shows the same
  file *does* write the marker under `torch.load(weights_only=False)`, so the payload
  is live and the refusal is what stops it.
* Malformed PNG (`jaxdepth predict`), JSON calibration (`Calibration.load`,
  `predict --calibration`) and HDF5 (the NYU loader) inputs give a `ValueError` /
  `jaxdepth: error:` naming the file.
"""
from __future__ import annotations

import ast
import json
import pathlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from jaxdepth.cli import main

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers

class _WritesMarker:
    """Unpickling this calls `Path.write_text(marker, "pwned")`: code run by a load."""

    def __init__(self, marker: Path):
        self.marker = Path(marker)

    def __reduce__(self):
        return (pathlib.Path.write_text, (self.marker, "pwned"))


def _torch():
    return pytest.importorskip("torch", reason="reading .pth files needs torch: "
                               "pip install -e '.[dev]'")


def _malicious(path: Path, marker: Path, kind: str = "zip") -> Path:
    """A `.pth` whose unpickling writes `marker`: torch's zip format (what `torch.save`
    writes), torch's legacy format, or a bare pickle."""
    torch = _torch()
    obj = {"state_dict": {"conv1.weight": torch.zeros(2)}, "payload": _WritesMarker(marker)}
    if kind == "zip":
        torch.save(obj, path)
    elif kind == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(obj, protocol=2))  # torch's own protocol
    return path


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_refused(rc, err, evil: Path, marker: Path, out: Path):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxdepth: error: "), err
    assert str(evil) in lines[0] and "weights_only" in lines[0], err
    assert not marker.exists(), "unpickling ran the payload"
    assert not out.exists() or not any(out.iterdir()), f"{out} was written"


# --------------------------------------------------------------------------- .pth files

def test_every_torch_load_in_the_package_passes_weights_only_true():
    calls = []
    for py in sorted((ROOT / "jaxdepth").rglob("*.py")):
        for node in ast.walk(ast.parse(py.read_text(), str(py))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"):
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and \
                    kw["weights_only"].value is True
                calls.append((f"{py.relative_to(ROOT)}:{node.lineno}", ok))
    assert calls, "no torch.load found: the check looks for `torch.load(...)` calls"
    assert all(ok for _, ok in calls), [c for c, ok in calls if not ok]
    # nothing in the package unpickles files by other means
    for py in (ROOT / "jaxdepth").rglob("*.py"):
        text = py.read_text()
        assert "pickle.load" not in text and "weights_only=False" not in text, py


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle"])
def test_the_payload_is_live_without_weights_only(tmp_path, kind):
    torch = _torch()
    marker = tmp_path / "pwned"
    evil = _malicious(tmp_path / "evil.pth", marker, kind)
    if kind == "pickle":
        pickle.loads(evil.read_bytes())
    else:
        torch.load(evil, map_location="cpu", weights_only=False)
    assert marker.read_text() == "pwned"


@pytest.mark.parametrize("kind", ["zip", "legacy", "pickle"])
def test_convert_monodepth2_refuses_code_carrying_files(tmp_path, capsys, kind):
    marker, out = tmp_path / "pwned", tmp_path / "out"
    evil = _malicious(tmp_path / "encoder.pth", marker, kind)
    rc, _, err = _run(capsys, "convert", "monodepth2", "--encoder", evil, "--depth", evil,
                      "--out", out)
    _assert_refused(rc, err, evil, marker, out)


def test_convert_monodepth2_folder_and_pose_refuse_code_carrying_files(tmp_path, capsys):
    _torch()
    from test_convert import write_released
    marker, out = tmp_path / "pwned", tmp_path / "out"
    folder = tmp_path / "model"
    folder.mkdir()
    _malicious(folder / "encoder.pth", marker)
    _malicious(folder / "depth.pth", marker)
    rc, _, err = _run(capsys, "convert", "monodepth2", "--folder", folder, "--out", out)
    _assert_refused(rc, err, folder / "encoder.pth", marker, out)
    # good encoder/depth, a code-carrying pose file: refused before anything is written
    write_released(tmp_path / "good", width=0.125, height=32, image_width=64)
    evil = _malicious(tmp_path / "pose.pth", marker)
    rc, _, err = _run(capsys, "convert", "monodepth2", "--encoder", tmp_path / "good" / "encoder.pth",
                      "--depth", tmp_path / "good" / "depth.pth", "--pose-encoder", evil,
                      "--pose", evil, "--out", out)
    _assert_refused(rc, err, evil, marker, out)


def test_convert_deeplabv3_and_monovit_refuse_code_carrying_files(tmp_path, capsys):
    marker, out = tmp_path / "pwned", tmp_path / "out"
    evil = _malicious(tmp_path / "weights.pth", marker)
    rc, _, err = _run(capsys, "convert", "deeplabv3", "--weights", evil, "--out", out)
    _assert_refused(rc, err, evil, marker, out)
    rc, _, err = _run(capsys, "convert", "monovit", "--encoder", evil, "--depth", evil,
                      "--out", out)
    _assert_refused(rc, err, evil, marker, out)


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04broken zip"])
def test_convert_junk_pth_is_a_clear_error(tmp_path, capsys, content):
    _torch()
    junk = tmp_path / "encoder.pth"
    junk.write_bytes(content)
    out = tmp_path / "out"
    rc, _, err = _run(capsys, "convert", "monodepth2", "--encoder", junk, "--depth", junk,
                      "--out", out)
    assert rc == 2 and err.startswith("jaxdepth: error: ") and str(junk) in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


# --------------------------------------------------------------------------- PNG, JSON

H, W = 32, 64


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from jaxdepth.convert import save_checkpoint
    from jaxdepth.models import DepthNet
    kw = {"num_layers": 18, "width": 0.125}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "plain", kw,
                           DepthNet(**kw).init_variables(0, H, W), H, W)


def _png_bytes():
    import io

    from PIL import Image
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _corrupt_pngs():
    good = _png_bytes()
    short_ihdr = bytearray(good)
    short_ihdr[8:12] = (2).to_bytes(4, "big")  # IHDR length 2: PIL raises ValueError
    zero_idat = bytearray(good)
    zero_idat[60:80] = bytes(20)
    return {"truncated": good[: len(good) // 2], "header_only": good[:20], "empty": b"",
            "short_ihdr": bytes(short_ihdr), "broken_idat": bytes(zero_idat)}


def test_predict_malformed_png_is_a_clear_error(checkpoint, tmp_path, capsys):
    from jaxdepth.cli.errors import CLIError
    from jaxdepth.cli.predict import image_batches
    bad = {}
    for name, content in _corrupt_pngs().items():
        bad[name] = tmp_path / f"{name}.png"
        bad[name].write_bytes(content)
    for name, path in bad.items():  # the reading step of `jaxdepth predict`
        with pytest.raises(CLIError) as e:
            list(image_batches([path], 1, W, H, 0))
        assert str(e.value).startswith(f"{path}: cannot read image"), (name, e.value)
    for name in ("short_ihdr",):  # and the whole command (PIL raises ValueError here)
        rc, _, err = _run(capsys, "predict", "--checkpoint", checkpoint, "--out",
                          tmp_path / "pred", "--no-panel", bad[name])
        assert rc == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith(f"jaxdepth: error: {bad[name]}: cannot read image"), err
        assert not list((tmp_path / "pred").glob("*.npy"))


def _valid_calibration():
    from jaxdepth.calibration import Calibration
    return Calibration(levels=(0.9,), edges=(0.5,), bounds=((0.1, 0.2),)).to_dict()


def _bad_calibrations():
    good = _valid_calibration()
    return {
        "not_json": b"{levels: [0.9]",
        "empty": b"",
        "binary": b"\xff\xfe\x00\x01\x89PNG",
        "a_list": b"[1, 2, 3]",
        "null": b"null",
        "wrong_format": json.dumps(dict(good, format="something-else")).encode(),
        "version_not_int": json.dumps(dict(good, version="two")).encode(),
        "level_not_number": json.dumps(dict(good, levels=["high"])).encode(),
        "missing_bounds": json.dumps({k: v for k, v in good.items() if k != "bounds"}).encode(),
        "decreasing_bounds": json.dumps(dict(good, bounds={k: [0.2, 0.1] for k in
                                                           good["bounds"]})).encode(),
        "bounds_not_list": json.dumps(dict(good, bounds={k: 3 for k in good["bounds"]})).encode(),
    }


@pytest.mark.parametrize("name", sorted(_bad_calibrations()))
def test_malformed_calibration_is_a_value_error_naming_the_file(tmp_path, name):
    from jaxdepth.calibration import Calibration
    path = tmp_path / f"{name}.json"
    path.write_bytes(_bad_calibrations()[name])
    with pytest.raises(ValueError) as e:
        Calibration.load(path)
    assert str(e.value).startswith(f"{path}: "), e.value
    assert len(str(e.value).splitlines()) == 1


def test_valid_calibration_round_trips(tmp_path):
    from jaxdepth.calibration import Calibration
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(_valid_calibration()))
    assert Calibration.load(path).levels == (0.9,)


def test_predict_with_malformed_calibration_is_a_clear_error(checkpoint, tmp_path, capsys):
    img = tmp_path / "img.png"
    img.write_bytes(_png_bytes())
    for name in ("binary",):
        cal = tmp_path / f"{name}.json"
        cal.write_bytes(_bad_calibrations()[name])
        rc, _, err = _run(capsys, "predict", "--checkpoint", checkpoint, "--out",
                          tmp_path / "pred", "--no-panel", "--calibration", cal, img)
        assert rc == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"jaxdepth: error: --calibration {cal}")
        assert not list((tmp_path / "pred").glob("*.npy"))


# --------------------------------------------------------------------------- HDF5 (NYU)

def _nyu_h5(path, compression=None, rgb_group=False):
    import h5py
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        if rgb_group:
            f.create_group("rgb")
        else:
            f.create_dataset("rgb", data=rng.integers(0, 256, (3, 480, 640), dtype=np.uint8),
                             compression=compression, chunks=(3, 60, 80) if compression else None)
        f.create_dataset("depth", data=rng.uniform(0.5, 9, (480, 640)).astype(np.float32),
                         compression=compression)
    return path


def test_nyu_malformed_hdf5_is_a_value_error_naming_the_file(tmp_path):
    from jaxdepth.data.nyu import read_nyu_h5
    good = _nyu_h5(tmp_path / "good.h5", compression="gzip")
    rgb, depth = read_nyu_h5(str(good))
    assert rgb.shape == (480, 640, 3) and depth.shape == (480, 640)
    data = good.read_bytes()
    corrupt = bytearray(data)
    mid = len(data) // 3
    corrupt[mid:mid + 4000] = bytes(b ^ 0x5A for b in corrupt[mid:mid + 4000])
    cases = {"truncated.h5": data[: len(data) // 2], "header_only.h5": data[:64],
             "empty.h5": b"", "corrupt_chunk.h5": bytes(corrupt)}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    _nyu_h5(tmp_path / "group.h5", rgb_group=True)
    for name in [*cases, "group.h5"]:
        path = str(tmp_path / name)
        with pytest.raises(ValueError) as e:
            read_nyu_h5(path)
        assert str(e.value).startswith(f"{path}: "), (name, e.value)
