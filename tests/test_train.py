import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdepth.losses import gaussian_nll, laplace_nll
from jaxdepth.train import supervised
from jaxdepth.train.config import RunConfig
from jaxdepth.train.augment import color_jitter, random_flip
from jaxdepth.train.checkpoint import Checkpointer, ConfigMismatch

WORKER = Path(__file__).parent / "workers" / "train_worker.py"


def _run_worker(workdir, steps, slow=False, kill_after_step=None):
    cmd = [sys.executable, str(WORKER), str(workdir), str(steps)] + (["--slow"] if slow else [])
    # the three runs share one persistent compilation cache: only the first compiles
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
               JAX_COMPILATION_CACHE_DIR=str(Path(workdir).parent / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if kill_after_step is None:
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out.decode()[-3000:]
        return
    deadline = time.time() + 300
    while not (Path(workdir) / str(kill_after_step)).exists():
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        assert time.time() < deadline, "worker never wrote its checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_killed_run_resumes_to_identical_parameters(tmp_path):
    steps = 8
    _run_worker(tmp_path / "straight", steps)
    _run_worker(tmp_path / "killed", steps, slow=True, kill_after_step=3)
    assert not (tmp_path / "killed" / "final.npz").exists()
    assert not (tmp_path / "killed" / str(steps)).exists()
    _run_worker(tmp_path / "killed", steps)
    a = np.load(tmp_path / "straight" / "final.npz")
    b = np.load(tmp_path / "killed" / "final.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 50
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_checkpoint_of_another_config_is_refused(tmp_path):
    with Checkpointer(tmp_path, {"lr": 1e-4, "steps": 10}, asynchronous=False) as ckpt:
        ckpt.save(1, {"w": jnp.ones(3)}, {"epoch": 0, "position": 1}, force=True)
    with pytest.raises(ConfigMismatch, match="lr: saved 0.0001 vs now 0.001"):
        Checkpointer(tmp_path, {"lr": 1e-3, "steps": 10})
    with Checkpointer(tmp_path, {"steps": 10, "lr": 1e-4}) as ckpt:  # same config, any order
        state, data, step = ckpt.restore_or({"w": jnp.zeros(3)})
    assert step == 1 and data == {"epoch": 0, "position": 1}
    np.testing.assert_array_equal(state["w"], np.ones(3))


def test_checkpoint_interval_rule_and_time_floor(tmp_path):
    """Steps on the `save_every` grid are saved; with a time floor a grid
    step closer than `min_interval_s` to the last save is skipped, a forced one never;
    the trainers' rule is 20 per run and, for runs keeping one step, at most one a
    minute."""
    state = {"w": jnp.ones(2)}
    saved = {}
    for floor in (0.0, 3600.0):
        d = tmp_path / str(floor)
        with Checkpointer(d, {}, save_every=2, keep=None, asynchronous=False,
                          min_interval_s=floor) as ckpt:
            for step in range(1, 7):
                ckpt.save(step, state, force=step == 6)
            saved[floor] = ckpt.all_steps()
    # (orbax also saves a run's first step)
    assert saved == {0.0: [1, 2, 4, 6], 3600.0: [6]}
    assert RunConfig(steps=1000).save_every == 50 and RunConfig(steps=7).save_every == 1
    from jaxdepth.train.config import SAVE_MIN_SECONDS
    assert SAVE_MIN_SECONDS == 60.0


@pytest.fixture(scope="module")
def log_run():
    """One compiled Log-variant train step shared by the training tests."""
    cfg = supervised.SupervisedConfig(variant="log", width=0.125, run=RunConfig(
        height=32, image_width=64, steps=25, lr=2e-3, augment=False))
    return cfg, supervised.make_step(cfg)


@pytest.mark.slow
def test_supervised_training_reduces_the_loss(log_run):
    cfg, step = log_run
    rng = np.random.default_rng(0)
    depth = (2.0 + np.linspace(0, 20, 32)[None, :, None, None] * np.ones((8, 1, 64, 1)))
    depth = depth * rng.uniform(0.8, 1.2, (8, 1, 1, 1))
    batch = {"image": jnp.asarray(np.clip(np.repeat(3.0 / depth, 3, -1), 0, 1), jnp.float32),
             "depth": jnp.asarray(depth, jnp.float32)}
    state = supervised.init_state(cfg)
    losses = []
    for _ in range(cfg.run.steps):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 1.0  # Laplace NLL in log-depth: ≈ 3.9 → ≈ 0.9
    before = supervised.init_state(cfg)["batch_stats"]["depth"]["encoder"]["bn1"]["mean"]
    assert not np.allclose(state["batch_stats"]["depth"]["encoder"]["bn1"]["mean"], before)


@pytest.mark.slow
def test_log_variant_stays_finite_with_extreme_log_sigma(log_run):
    cfg, step = log_run
    state = supervised.init_state(cfg)
    dec = state["params"]["depth"]["decoder"]
    for s in range(4):  # an arbitrary head: σ = exp(−80), i.e. 1/σ overflows float32
        dec[f"uncertconv_{s}"]["bias"] = jnp.full_like(dec[f"uncertconv_{s}"]["bias"], -80.0)
    batch = {"image": jnp.full((8, 32, 64, 3), 0.5), "depth": jnp.full((8, 32, 64, 1), 20.0)}
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))


def test_nll_losses_against_formulas():
    mu, y, s = jnp.array([1.0, 2.0]), jnp.array([1.5, 0.0]), jnp.array([0.3, -1.0])
    np.testing.assert_allclose(laplace_nll(mu, y, s), np.abs([0.5, 2.0]) / np.exp([0.3, -1.0])
                               + np.array([0.3, -1.0]), rtol=1e-6)
    np.testing.assert_allclose(gaussian_nll(mu, y, s), 0.5 * np.array([0.25, 4.0]) /
                               np.exp(2 * np.array([0.3, -1.0])) + np.array([0.3, -1.0]), rtol=1e-6)
    assert np.isfinite(float(laplace_nll(0.0, 80.0, -1e4)))


def test_augmentation_flips_all_targets_together_and_jitters_only_images():
    key = jax.random.PRNGKey(0)
    image = jax.random.uniform(key, (16, 8, 12, 3))
    depth = jax.random.uniform(jax.random.PRNGKey(1), (16, 8, 12, 1))
    (fi, fd), flags = random_flip(key, image, depth)
    for i in range(16):
        want_i = image[i, :, ::-1] if flags[i] else image[i]
        want_d = depth[i, :, ::-1] if flags[i] else depth[i]
        np.testing.assert_array_equal(fi[i], want_i)
        np.testing.assert_array_equal(fd[i], want_d)
    assert 0 < int(flags.sum()) < 16
    jittered = color_jitter(key, image)
    changed = np.asarray(jnp.abs(jittered - image).max(axis=(1, 2, 3)) > 0)
    assert 0 < changed.sum() < 16
    assert float(jittered.min()) >= 0 and float(jittered.max()) <= 1
