"""A tiny supervised training run for the kill-and-resume test.

    python tests/workers/train_worker.py WORKDIR STEPS [--slow]

Trains a width-0.125 DepthNet on an in-memory source of planar scenes and saves
its final parameters to WORKDIR/final.npz.
"""
import sys
import time

import numpy as np

from jaxdepth import runtime

runtime.configure_cpu()

import jax  # noqa: E402

from jaxdepth.data.pipeline import Loader  # noqa: E402
from jaxdepth.train import supervised  # noqa: E402
from jaxdepth.train.config import RunConfig  # noqa: E402
from jaxdepth.train.checkpoint import Checkpointer  # noqa: E402
from jaxdepth.train.loop import fit  # noqa: E402


class PlaneSource:
    """Images whose brightness encodes the depth of a tilted plane."""

    def __init__(self, n, h, w):
        rng = np.random.default_rng(0)
        self.items = []
        for _ in range(n):
            slope = rng.uniform(0.5, 2.0)
            depth = (2.0 + slope * np.linspace(0, 10, h)[:, None] * np.ones((1, w)))[..., None]
            image = np.repeat(1.0 / depth, 3, -1) + 0.05 * rng.standard_normal((h, w, 3))
            self.items.append({"image": np.clip(image, 0, 1).astype(np.float32),
                               "depth": depth.astype(np.float32)})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def main(workdir, steps, slow):
    cfg = supervised.SupervisedConfig(variant="drop", width=0.125, run=RunConfig(
        height=32, image_width=64, batch_size=8, steps=steps, lr=1e-3))
    loader = Loader(PlaneSource(20, 32, 64), cfg.run.batch_size, seed=cfg.run.seed)
    step = supervised.make_step(cfg)
    if slow:  # give the test time to kill us between checkpoints
        fast = step

        def step(state, batch):
            time.sleep(0.3)
            return fast(state, batch)

    with Checkpointer(workdir, cfg.to_dict(), save_every=3, keep=2) as ckpt:
        state = fit(step, supervised.init_state(cfg), loader, steps=steps, checkpointer=ckpt,
                    progress=False)
    flat = {"/".join(str(k.key) for k in path): np.asarray(leaf) for path, leaf in
            jax.tree_util.tree_flatten_with_path(supervised.variables_of(jax.device_get(state)))[0]}
    np.savez(f"{workdir}/final.npz", **flat)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), "--slow" in sys.argv)
