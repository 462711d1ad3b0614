"""What PGN costs on top of the forward pass (the PGN paper: ≈1 % on a GPU).

    python experiments/bench_pgn.py                       # 512×1024, DeepLabV3+ ResNet-18
    python experiments/bench_pgn.py --height 256 --width 512 --backbone resnet50 --repeats 3

Times, in one run on the same randomly initialised model and input (batch 1, median of
`--repeats` calls after a compiling call): the forward pass (logits at the input size and
their softmax), forward + last-layer PGN (one-hot and uniform labels, five p: 10 maps at
decoder resolution, then also upsampled to the input), forward + all 20 maps (the
penultimate ones too), and MC dropout with `--samples` passes (dropout before the head,
so the backbone runs once).
Prints the seconds and each one's ratio to the forward pass; the ratio measured the
noise-robust way (`--pairs` alternating calls of the forward and the method, the median
of the per-pair ratios, so that a slow spell of a shared machine hits both); and XLA's
FLOPs and bytes accessed of each compiled program (machine-noise free). `--json` writes
them.
"""
from __future__ import annotations

from jaxdepth import runtime

runtime.configure_cpu()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdepth.models.segmentation import DeepLabV3Plus  # noqa: E402
from jaxdepth.uncertainty import pgn as P  # noqa: E402
from jaxdepth.uncertainty.segmentation import sampling_uncertainty  # noqa: E402


def median_seconds(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired_ratio(base, fn, *args, pairs: int) -> float:
    """Median over `pairs` of time(fn) / time(base), the two called alternately."""
    jax.block_until_ready(base(*args))
    jax.block_until_ready(fn(*args))
    ratios = []
    for _ in range(pairs):
        t0 = time.perf_counter()
        jax.block_until_ready(base(*args))
        t1 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        t2 = time.perf_counter()
        ratios.append((t2 - t1) / (t1 - t0))
    return statistics.median(ratios)


def cost(fn, *args) -> dict:
    """XLA's cost analysis of the compiled program: GFLOPs and GB accessed."""
    c = fn.lower(*args).compile().cost_analysis()
    c = c[0] if isinstance(c, (list, tuple)) else c
    return {"gflops": float(c.get("flops", float("nan"))) / 1e9,
            "gbytes": float(c.get("bytes accessed", float("nan"))) / 1e9}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--backbone", default="resnet18", choices=("resnet18", "resnet50"))
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--samples", type=int, default=25, help="MC dropout passes (25)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--pairs", type=int, default=10,
                   help="alternating forward / method call pairs of the paired ratio (10)")
    p.add_argument("--json", help="write the timings here")
    args = p.parse_args(argv)

    model = DeepLabV3Plus(num_classes=args.classes, backbone=args.backbone, dropout_rate=0.2)
    variables = model.init_variables(jax.random.PRNGKey(0), args.height, args.width)
    x = jax.random.uniform(jax.random.PRNGKey(1), (1, args.height, args.width, 3))
    key = jax.random.PRNGKey(2)
    head = P.head_of(variables)
    forward = jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x)["logits"], -1))

    def with_pgn(penultimate, upsample=True):
        @jax.jit
        def fn(v, x):
            out = model.apply(v, x)
            z, f = out["decoder_logits"], out["features"]
            maps = [P.pgn(z, f["final_in"], label=lab, p=q) for lab in P.LABELS
                    for q in P.DEFAULT_PS]
            if penultimate:
                maps += [P.pgn_penultimate(z, f["final_in"], f["penultimate_in"], head,
                                           label=lab, p=q) for lab in P.LABELS
                         for q in P.DEFAULT_PS]
            maps = jnp.stack(maps, -1)
            if upsample:
                maps = jax.image.resize(maps, x.shape[:3] + maps.shape[-1:], "bilinear",
                                        antialias=False)
            return jax.nn.softmax(out["logits"], -1), maps
        return fn

    mc = jax.jit(lambda v, x, k: sampling_uncertainty(jax.vmap(
        lambda kk: model.apply(v, x, dropout_rng=kk)["logits"])(
            jax.random.split(k, args.samples))))
    r = args.repeats
    pgn10, pgn20, pgn10_dec = with_pgn(False), with_pgn(True), with_pgn(False, upsample=False)
    rows = {"forward": median_seconds(forward, variables, x, repeats=r),
            "pgn 10 maps, decoder res": median_seconds(pgn10_dec, variables, x, repeats=r),
            "pgn_oh+uni (10 maps)": median_seconds(pgn10, variables, x, repeats=r),
            "pgn all 20 maps": median_seconds(pgn20, variables, x, repeats=r),
            f"mc_dropout ({args.samples})": median_seconds(mc, variables, x, key, repeats=r)}
    paired = {"forward": 1.0,
              "pgn 10 maps, decoder res": paired_ratio(forward, pgn10_dec, variables, x,
                                                       pairs=args.pairs),
              "pgn_oh+uni (10 maps)": paired_ratio(forward, pgn10, variables, x, pairs=args.pairs),
              "pgn all 20 maps": paired_ratio(forward, pgn20, variables, x, pairs=args.pairs)}
    costs = {"forward": cost(forward, variables, x),
             "pgn 10 maps, decoder res": cost(pgn10_dec, variables, x),
             "pgn_oh+uni (10 maps)": cost(pgn10, variables, x),
             "pgn all 20 maps": cost(pgn20, variables, x),
             f"mc_dropout ({args.samples})": cost(mc, variables, x, key)}
    base, fc = rows["forward"], costs["forward"]
    print(f"DeepLabV3+ {args.backbone}, {args.height}x{args.width}, batch 1, "
          f"{jax.default_backend()} ({jax.devices()[0].device_kind}), median of {r}; paired: "
          f"median of {args.pairs} alternating pairs")
    print(f"{'':24s}{'seconds':>10s}{'× forward':>11s}{'paired ×':>10s}{'GFLOPs':>9s}"
          f"{'× fwd':>7s}{'GB':>8s}{'× fwd':>7s}")
    for name, t in rows.items():
        c = costs[name]
        pr = f"{paired[name]:10.3f}" if name in paired else f"{'-':>10s}"
        print(f"{name:24s}{t:10.4f}{t / base:11.3f}{pr}{c['gflops']:9.1f}"
              f"{c['gflops'] / fc['gflops']:7.3f}{c['gbytes']:8.2f}{c['gbytes'] / fc['gbytes']:7.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "seconds": rows,
                       "ratio": {k: v / base for k, v in rows.items()},
                       "paired_ratio": paired, "cost": costs}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
