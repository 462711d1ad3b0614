"""Damaged checkpoints and unwritable output directories (issue 17, item 2).

Training steps (`jaxdepth.train.checkpoint.Checkpointer`): a damaged newest step is
warned about, set aside as `<step>.damaged`, and the run resumes from the newest intact
one (or from scratch when none is left); a state of another structure is refused.
Exports (`jaxdepth.export.load_checkpoint`, `jaxdepth predict`): a damaged file gives a
`CheckpointError` / one-line CLI error naming it. Orbax saves cost ~0.5 s each: the
module writes few and copies directories to damage them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth.cli import main
from jaxdepth.export import CheckpointError, load_checkpoint, save_checkpoint
from jaxdepth.models import DepthNet
from jaxdepth.train import checkpoint as ckpt_mod
from jaxdepth.train.checkpoint import (Checkpointer, OutputNotWritable, StateMismatch,
                                       probe_writable)
from jaxdepth.train.config import RunConfig


def _state(scale):  # incompressible: the array's file is the step's largest
    return {"params": {"depth": {"w": jnp.asarray(_W * scale)}},
            "batch_stats": {"depth": {"m": jnp.ones(4) * scale}}, "step": jnp.int32(scale)}


_W = np.random.default_rng(0).standard_normal(4096).astype(np.float32)


def _largest(directory: Path) -> Path:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def _truncate(step_dir):
    f = _largest(step_dir / "state")
    os.truncate(f, f.stat().st_size // 3)


def _zero(step_dir):
    f = _largest(step_dir / "state")
    f.write_bytes(bytes(f.stat().st_size))


def _flip(step_dir, item="state"):  # orbax reads a bit flip back silently: checksums don't
    f = _largest(step_dir / item)
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 0xFF
    f.write_bytes(bytes(b))


def _delete_state(step_dir):
    shutil.rmtree(step_dir / "state")


def _corrupt_config(step_dir):
    (step_dir / "config" / "metadata").write_text('{"lr": ')


DAMAGE = {"truncated": _truncate, "zeroed": _zero, "bit flip": _flip,
          "deleted": _delete_state, "config": _corrupt_config}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Steps 1, 2, 3 of a run with keep=1: two are kept while it trains."""
    d = tmp_path_factory.mktemp("ckpt") / "run"
    with Checkpointer(d, {"lr": 1e-3}, keep=1, save_every=1, asynchronous=False) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, _state(step), {"position": step})
        assert ckpt.all_steps() == [2, 3]
    return d


def test_damaged_latest_step_falls_back_to_the_newest_intact_one(run_dir, tmp_path):
    like = _state(0)
    for kind, damage in DAMAGE.items():
        d = tmp_path / kind.replace(" ", "_")
        shutil.copytree(run_dir, d)
        damage(d / "3")
        with pytest.warns(RuntimeWarning) as record:
            with Checkpointer(d, {"lr": 1e-3}, keep=1, asynchronous=False) as ckpt:
                state, data, step = ckpt.restore_or(like)
                assert ckpt.all_steps() == [2], kind
        text = " ".join(str(w.message) for w in record)
        assert str(d / "3") in text and "damaged" in text, (kind, text)
        assert "resuming from step 2" in text, (kind, text)
        assert step == 2 and data == {"position": 2}, kind
        np.testing.assert_array_equal(state["params"]["depth"]["w"], _W * 2)
        assert (d / "3.damaged").is_dir() and not (d / "3").exists(), kind
    # the run goes on: step 3 is saved again beside the damaged copy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Checkpointer(d, {"lr": 1e-3}, keep=1, asynchronous=False) as ckpt:
            ckpt.save(3, _state(3), {"position": 3}, force=True)
        with Checkpointer(d, {"lr": 1e-3}, keep=1, asynchronous=False) as ckpt:
            state, data, step = ckpt.restore_or(like)
            ckpt.trim()
            assert ckpt.all_steps() == [3]
    assert step == 3 and (d / "3.damaged").is_dir()


def test_no_intact_step_restarts_and_another_structure_is_refused(run_dir, tmp_path):
    d = tmp_path / "both"
    shutil.copytree(run_dir, d)
    _truncate(d / "3")
    _zero(d / "2")
    like = _state(0)
    with pytest.warns(RuntimeWarning, match="training restarts from step 0"):
        with Checkpointer(d, {"lr": 1e-3}, keep=1) as ckpt:
            state, data, step = ckpt.restore_or(like, {"position": 0})
    assert step == 0 and data == {"position": 0} and state is like
    assert sorted(p.name for p in d.iterdir() if p.name[0].isdigit()) == ["2.damaged", "3.damaged"]

    d = tmp_path / "other"
    shutil.copytree(run_dir, d)
    other = {**like, "params": {"depth": {"w": jnp.zeros(4095)}}}
    with Checkpointer(d, {"lr": 1e-3}) as ckpt:
        with pytest.raises(StateMismatch, match="another structure"):
            ckpt.restore_or(other)
        with pytest.raises(StateMismatch):
            ckpt.restore_or({**like, "extra": jnp.zeros(1)})
        assert ckpt.all_steps() == [2, 3]  # a mismatch is no damage: nothing is moved


class _Source:
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return {"image": np.full((2, 2, 3), i / 16, np.float32)}


@dataclasses.dataclass(frozen=True)
class _Cfg:
    run: RunConfig

    def to_dict(self):
        return {"recipe": "toy", "run": dataclasses.asdict(self.run)}


def _toy_step(state, batch):
    w = state["params"]["depth"]["w"] * 0.5 + batch["image"].mean()
    return {**state, "params": {"depth": {"w": w}}, "step": state["step"] + 1}, {"w": w.sum()}


def test_finished_run_with_damaged_final_step_is_trained_again(tmp_path):
    from jaxdepth.train.runs import train_or_load

    cfg = _Cfg(RunConfig(steps=3, batch_size=8))
    kw = dict(init_state=lambda c: {"params": {"depth": {"w": jnp.zeros(3)}},
                                    "batch_stats": {}, "step": jnp.int32(0)},
              step=jax.jit(_toy_step), data=SimpleNamespace(source=_Source(), transform=None),
              directory=tmp_path / "toy", export=False, progress=False)
    first = train_or_load("toy", cfg, **kw)
    assert sorted(p.name for p in (tmp_path / "toy").iterdir() if p.name.isdigit()) == ["3"]
    _truncate(tmp_path / "toy" / "3")
    with pytest.warns(RuntimeWarning, match=r"toy/3 is damaged"):
        again = train_or_load("toy", cfg, **kw)
    np.testing.assert_array_equal(first["params"]["depth"]["w"], again["params"]["depth"]["w"])
    assert (tmp_path / "toy" / "3.damaged").is_dir()
    reused = train_or_load("toy", cfg, **kw)  # finished and intact again: reused
    np.testing.assert_array_equal(reused["params"]["depth"]["w"], first["params"]["depth"]["w"])


def _unwritable(tmp_path) -> Path:
    """A directory nobody may write into: chmod 0o500, or (root writes anyway) a path
    below a regular file."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        (tmp_path / "a_file").write_text("")
        return tmp_path / "a_file" / "out"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return d


def test_unwritable_or_full_output_directory(tmp_path, monkeypatch, capsys):
    bad = _unwritable(tmp_path)
    with pytest.raises(OutputNotWritable, match="not writable"):
        probe_writable(bad)
    rc = main(["train", "--recipe", "supervised", "--steps", "1", "--out", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("jaxdepth: error: --out") and str(bad) in err, err
    assert err.count("\n") == 1
    # a full disk: no room for one checkpoint, before training and before each save
    ok = tmp_path / "full"
    ckpt = Checkpointer(ok, {}, asynchronous=False)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(ckpt_mod.shutil, "disk_usage",
                        lambda p: usage._replace(free=1000))
    with pytest.raises(OutputNotWritable, match="MB free"):
        ckpt.restore_or(_state(0))
    with pytest.raises(OutputNotWritable, match="resumes from step 0"):
        ckpt.save(1, _state(1), force=True)
    ckpt.close()
    assert ckpt.all_steps() == []


H, W = 64, 96
KW = {"num_layers": 18, "width": 0.125}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("export") / "plain"
    return save_checkpoint(d, KW, DepthNet(**KW).init_variables(0, H, W), H, W)


def test_damaged_export_is_named_by_load_checkpoint_and_predict(export_dir, tmp_path, capsys):
    from PIL import Image
    image = tmp_path / "im.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(image)
    assert "checksum" in json.loads((export_dir / "meta.json").read_text())

    def damaged(kind, fn):
        d = tmp_path / kind
        shutil.copytree(export_dir, d)
        fn(d)
        return d

    cases = {
        "truncated": (lambda d: os.truncate(_largest(d / "variables"), 100), "is damaged"),
        "deleted": (lambda d: shutil.rmtree(d / "variables"), "variables is missing"),
        "bit flip": (lambda d: _flip(d, "variables"), "does not match the checksum"),
        "meta json": (lambda d: os.truncate(d / "meta.json", 40), "meta.json is not valid JSON"),
        "meta keys": (lambda d: (d / "meta.json").write_text(json.dumps(
            {"format": "jaxdepth", "version": 1, "architecture": "DepthNet"})),
            "meta.json is damaged or incomplete"),
        "other architecture": (lambda d: (d / "meta.json").write_text(json.dumps(
            {**json.loads((d / "meta.json").read_text()), "model": dict(KW, width=0.25)})),
            "does not fit the model"),
    }
    for kind, (fn, message) in cases.items():
        d = damaged(kind.replace(" ", "_"), fn)
        with pytest.raises(CheckpointError, match=message) as e:
            load_checkpoint(d)
        assert str(d) in str(e.value), (kind, e.value)
        rc = main(["predict", "--checkpoint", str(d), "--out", str(tmp_path / "o"), str(image)])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("jaxdepth: error: ") and str(d) in err, (kind, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (kind, err)
    # an unwritable --out is refused before the checkpoint is even loaded
    bad = _unwritable(tmp_path / "p")
    rc = main(["predict", "--checkpoint", str(export_dir), "--out", str(bad), str(image)])
    err = capsys.readouterr().err
    assert rc == 2 and "not writable" in err and str(bad) in err, err
