"""Peak memory of `jaxdepth predict` against the number of images (issue 17, item 6).

    python experiments/bench_predict_memory.py                      # 100 vs 1000 images
    python experiments/bench_predict_memory.py --counts 100 300 --no-panel

Writes `--counts` random 64×192 PNGs and a tiny random DepthNet checkpoint (width 0.125,
trained resolution 64×192) into a temporary directory, runs `python -m jaxdepth.cli
predict` on the first N of them in a child process per count (CPU, `--batch-size 4`,
`--method grad`, panels unless `--no-panel`), and prints each child's peak resident set
size (`ru_maxrss` from `os.wait4`) and wall time, and the ratio of the peak RSS of the
largest count to the smallest: streaming predictions keep it near 1 (what grows is the
imported libraries' caches, not one array per image).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _prepare(root: Path, n: int, height: int, width: int):
    import numpy as np
    from PIL import Image

    from jaxdepth.export import save_checkpoint
    from jaxdepth.models import DepthNet

    kw = {"num_layers": 18, "width": 0.125}
    ckpt = save_checkpoint(root / "ckpt", kw, DepthNet(**kw).init_variables(0, height, width),
                           height, width)
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            images / f"im{i:05d}.png")
    return ckpt, sorted(images.iterdir())


def _child(argv, env) -> tuple[int, float, int]:
    """(exit status, wall seconds, peak RSS in bytes) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.stderr.write(err.decode()[-3000:])
    # ru_maxrss: kilobytes on Linux, bytes on macOS
    rss = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return proc.returncode, time.perf_counter() - t0, rss


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--method", default="grad")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--no-panel", action="store_true")
    args = p.parse_args(argv)
    counts = sorted(set(args.counts))
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    with tempfile.TemporaryDirectory(prefix="bench_predict_memory_") as tmp:
        root = Path(tmp)
        ckpt, images = _prepare(root, counts[-1], args.height, args.width)
        results = {}
        for n in counts:
            listed = root / f"first{n}"
            listed.mkdir()
            for path in images[:n]:  # a directory of the first n images (links)
                (listed / path.name).symlink_to(path)
            cmd = [sys.executable, "-m", "jaxdepth.cli", "predict", "--checkpoint", str(ckpt),
                   "--method", args.method, "--batch-size", str(args.batch_size),
                   "--out", str(root / f"out{n}"), str(listed)]
            if args.no_panel:
                cmd.append("--no-panel")
            rc, wall, rss = _child(cmd, env)
            if rc:
                print(f"{n} images: jaxdepth predict failed (exit {rc})")
                return rc
            outputs = len(list((root / f"out{n}").glob("*_depth.npy")))
            assert outputs == n, (outputs, n)
            results[n] = rss
            print(f"{n:6d} images: peak RSS {rss / 2**20:8.1f} MiB, {wall:6.1f} s "
                  f"({wall / n * 1000:.0f} ms/image incl. start-up)", flush=True)
    lo, hi = counts[0], counts[-1]
    print(f"peak RSS {hi} / {lo} images: {results[hi] / results[lo]:.3f} "
          f"(+{(results[hi] - results[lo]) / 2**20:.1f} MiB for {hi - lo} more images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
