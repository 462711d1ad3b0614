"""ADU-Depth speed: training images/s of the stereo teacher and of the ADU student
(teacher forward + student forward/backward + adapters), and the student's inference
time with and without the UEM (the paper: the UEM adds no inference cost; 3.82 vs 3.48
FPS for ADU-Depth vs NeWCRFs on their GPU).

    python experiments/bench_adu.py                       # micro at 64×192, batch 4 (CPU)
    python experiments/bench_adu.py --encoder large --crf-scale 1 --height 352 \\
        --width 1120 --batch-size 4                        # the paper's size (GPU)

Each timing runs one untimed call first (compilation), then `--repeats` calls;
`--out` writes `bench.json`. Random weights and random inputs: speed does not depend on
the values.
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdepth.data.pipeline import shard_batch  # noqa: E402
from jaxdepth.train import adu  # noqa: E402
from jaxdepth.train.config import RunConfig  # noqa: E402
from jaxdepth.train.loop import data_mesh, replicate  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", default="micro", choices=adu.ENCODERS)
    p.add_argument("--crf-scale", type=float, default=1 / 16)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--infer-batch", type=int, default=1, help="inference batch (1: FPS)")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--out", help="write bench.json here")
    return p.parse_args(argv)


def _timed(fn, repeats):
    """(seconds of the first call, mean seconds of the next `repeats`)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return first, (time.perf_counter() - t0) / repeats


def main(argv=None):
    args = parse_args(argv)
    h, w, b = args.height, args.width, args.batch_size
    run = RunConfig(height=h, image_width=w, batch_size=b, steps=1000, lr=1e-4, augment=True)
    teacher_cfg = adu.NeWCRFsConfig(encoder=args.encoder, crf_scale=args.crf_scale, stereo=True,
                                    run=run)
    student_cfg = adu.AduConfig(teacher=teacher_cfg)
    mesh = data_mesh()
    rng = np.random.default_rng(0)
    batch = {"image": rng.random((b, h, w, 3), np.float32),
             "image_right": rng.random((b, h, w, 3), np.float32),
             "depth": (1 + 79 * rng.random((b, h, w, 1))).astype(np.float32),
             "depth_right": (1 + 79 * rng.random((b, h, w, 1))).astype(np.float32)}
    sharded = shard_batch(batch, mesh)
    results = {"device": jax.devices()[0].device_kind, "devices": jax.device_count(),
               "encoder": args.encoder, "crf_scale": args.crf_scale, "height": h, "width": w,
               "batch_size": b}

    teacher_state = adu.init_state(teacher_cfg)
    teacher_vars = adu.variables_of(teacher_state)
    for name, cfg, state, step in (
            ("teacher", teacher_cfg, teacher_state, adu.make_step(teacher_cfg)),
            ("student", student_cfg, adu.init_state(student_cfg),
             adu.make_step(student_cfg, teacher_vars))):
        box = {"state": replicate(state, mesh)}

        def one(box=box, step=step):
            box["state"], m = step(box["state"], sharded)
            return m["loss"]
        first, sec = _timed(one, args.repeats)
        results[f"train_{name}"] = {"compile_s": first, "step_s": sec, "images_per_s": b / sec}
        print(f"train {name:8s}: {b / sec:8.2f} images/s ({1e3 * sec:.1f} ms/step of {b}; "
              f"first step {first:.1f} s)", flush=True)

    # inference: the exported student (NeWCRFs + UEM head) vs the same network without it
    x = jnp.asarray(rng.random((args.infer_batch, h, w, 3), np.float32))
    with_uem = student_cfg.model()
    v = adu.variables_of(adu.init_state(adu.AduConfig(
        teacher=teacher_cfg, loss=adu.AduLossConfig.baseline())))
    without = with_uem.clone(uem=False)
    v_plain = {"params": {k: p for k, p in v["params"].items() if k != "uem_head"},
               "batch_stats": v["batch_stats"]}
    for name, model, variables in (("student with UEM", with_uem, v),
                                   ("student without UEM", without, v_plain)):
        # with the UEM the output includes its σ (else XLA would drop the unused branch)
        keys = ("depth", "log_sigma") if model.uem else ("depth",)
        f = jax.jit(lambda x, m=model, vv=variables, keys=keys: [m.apply(vv, x)[k] for k in keys])
        first, sec = _timed(lambda f=f: f(x), args.repeats)
        key = "infer_uem" if model.uem else "infer_plain"
        results[key] = {"compile_s": first, "ms_per_image": 1e3 * sec / args.infer_batch,
                        "fps": args.infer_batch / sec}
        print(f"infer {name:20s}: {1e3 * sec / args.infer_batch:8.2f} ms/image "
              f"({args.infer_batch / sec:.1f} FPS)", flush=True)
    overhead = results["infer_uem"]["ms_per_image"] / results["infer_plain"]["ms_per_image"] - 1
    results["uem_inference_overhead"] = overhead
    print(f"UEM inference overhead: {100 * overhead:+.1f} % (paper: none)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
