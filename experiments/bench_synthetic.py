"""Benchmark: frames/s of the procedural street-scene renderer (jaxdepth.data.synthetic).

    python experiments/bench_synthetic.py [--batch 32 --repeats 5 --sizes 96x320 192x640]

For each resolution it times ``sample_batch`` (after compilation and one warm-up call;
median of ``--repeats`` calls) for four key sets: image + depth + labels ("base"), base +
the stereo view, base + the ±1 neighbour frames, and everything. It prints frames/s
(wall clock), CPU milliseconds per frame (all threads; less sensitive to other load on a
shared machine than the wall clock) and what the stereo view and the neighbour frames
add on top of "base". The machine's load average and usable cores are printed too:
timings on a loaded machine are noisy.

Speed goal (issue 3): >= 200 frames/s at 96×320 and >= 50 frames/s at 192×640 for
image + depth + labels on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from jaxdepth import runtime

runtime.configure_cpu()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxdepth.data import synthetic  # noqa: E402

KEYSETS = {
    "base (image+depth+labels)": ("image", "depth", "labels"),
    "base + stereo view": ("image", "depth", "labels", "image_right", "depth_right"),
    "base + frames ±1": ("image", "depth", "labels", "frames", "frames_depth", "poses"),
    "everything": None,
}
GOALS = {(96, 320): 200.0, (192, 640): 50.0}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def time_keys(height, width, keys, batch, repeats, seed=0):
    """(median wall seconds, median CPU seconds) of one ``sample_batch`` call."""
    idx = np.arange(batch)

    def call(i):
        out = synthetic.sample_batch(idx + i * batch, seed=seed, height=height, width=width,
                                     keys=keys)
        jax.block_until_ready(out)

    call(0)  # compile
    call(1)  # warm-up
    walls, cpus = [], []
    for r in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        call(2 + r)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", nargs="+", default=["96x320", "192x640"],
                    help="HEIGHTxWIDTH resolutions")
    a = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in a.sizes]
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {_cores()} usable cores, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; batch {a.batch}, "
          f"median of {a.repeats}")
    rows = []
    for h, w in sizes:
        res = {}
        for name, keys in KEYSETS.items():
            wall, cpu = time_keys(h, w, keys, a.batch, a.repeats)
            res[name] = (a.batch / wall, cpu / a.batch * 1e3, wall / a.batch * 1e3)
        base_ms = res["base (image+depth+labels)"][2]
        for name, (fps, cpu_ms, wall_ms) in res.items():
            extra = "" if name.startswith("base (") else f"+{wall_ms - base_ms:.2f} ms"
            rows.append((f"{h}x{w}", name, fps, wall_ms, cpu_ms, extra))
        goal = GOALS.get((h, w))
        if goal:
            fps = res["base (image+depth+labels)"][0]
            print(f"{h}x{w}: image+depth+labels {fps:.0f} frames/s (goal >= {goal:.0f}: "
                  f"{'met' if fps >= goal else 'NOT met'})")
    print(f"\n{'size':>8}  {'outputs':<26} {'frames/s':>9} {'wall ms/frame':>14} "
          f"{'CPU ms/frame':>13}  {'on top of base':>14}")
    for size, name, fps, wall_ms, cpu_ms, extra in rows:
        print(f"{size:>8}  {name:<26} {fps:9.1f} {wall_ms:14.2f} {cpu_ms:13.2f}  {extra:>14}")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
