"""Benchmark: cost of gradient uncertainty against one forward, Post, Var and In-Drop.

    python experiments/bench_uncertainty.py [--height 192 --width 640 --batch 1 8]
    python experiments/bench_uncertainty.py --arch monovit [--monovit-size small]

For each batch size it prints ms/image (median over repeats, after compile and
warm-up) of each method in both forms — the extra passes batched with the original
(`post`, `var`, `grad`) or run as separate calls (`*_separate`; the library's default
on CPU) — each one's time ratio to (batched) Post and to one forward, which form is
faster here, the FLOPs of each compiled program from XLA's cost analysis and its peak
memory from XLA's buffer assignment (both machine-noise free). The FLOP
floor of the gradient method is two forwards plus the backward w.r.t.
activations (no weight gradients) from the output down to the tapped layer. Its
backward part is counted from XLA's cost analysis of the activation VJP alone
(∂ sum(depth) / ∂ offset at the tap, minus one forward) for every architecture, and
for Monodepth2 also analytically from the conv shapes (`backward_floor_flops`).
Models: Monodepth2's DepthNet (ResNet-18, tap `dec6`) or MonoViT (`--monovit-size`,
small as released; tap `X_13_Conv_0`, its `default_tap`).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from jaxdepth import runtime

runtime.configure_cpu()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxdepth import uncertainty as U  # noqa: E402
from jaxdepth.models import DepthNet, MonoViT  # noqa: E402


def _flops(fn, *args):
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def _memory_mib(fn, *args):
    """`(peak, working)` device memory of the compiled program in MiB from XLA's buffer
    assignment: peak = arguments (the weights, the images) + outputs + temporaries
    − aliased; working = the temporaries alone (what the method adds to the weights).
    (XLA:CPU's `peak_memory_in_bytes` reports the arguments only, so it is not used.)"""
    m = jax.jit(fn).lower(*args).compile().memory_analysis()
    peak = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)
    return peak / 2 ** 20, m.temp_size_in_bytes / 2 ** 20


def _time(fn, *args, repeats):
    jax.block_until_ready(fn(*args))  # compile
    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def backward_floor_flops(model, variables, images, tap):
    """Analytic FLOPs (2 per MAC) of ∂L/∂a_tap: the input-gradient convs of every
    conv between the tap and the full-resolution output, counting only the
    input channels that depend on the tap."""
    feats = jax.eval_shape(lambda x: model.apply(variables, x)["features"], images)
    first = int(tap[3:])
    b = images.shape[0]
    flops = 0.0
    for k in range(first + 1, 11):  # convs after the tap
        out = feats[f"dec{k}"].shape
        cin = feats[f"dec{k - 1}"].shape[-1]
        flops += 2.0 * out[1] * out[2] * 9 * cin * out[3] * b
    return flops


def backward_floor_flops_xla(model, variables, images, tap):
    """XLA's FLOPs of ∂ sum(depth) / ∂ a_tap (the offset at the tap; no weight gradients)
    minus one forward: the activation backward from the output down to the tap."""
    zeros = {tap: jnp.zeros(s.shape, s.dtype) for t, s in jax.eval_shape(
        lambda x: model.apply(variables, x)["features"], images).items() if t == tap}
    if not zeros:
        raise ValueError(f"unknown tap {tap!r}; choose from {model.tap_names}")

    def vjp(v, x):
        return jax.grad(lambda off: model.apply(v, x, off)["depth"].sum())(zeros)
    forward = _flops(lambda v, x: model.apply(v, x)["depth"], variables, images)
    return _flops(vjp, variables, images) - forward


def build_model(arch: str, monovit_size: str = "small"):
    if arch == "monodepth2":
        return DepthNet()
    if arch == "monovit":
        return MonoViT(size=monovit_size)
    raise ValueError(f"arch must be 'monodepth2' or 'monovit', got {arch!r}")


def run(height, width, batch, repeats, tap=None, arch="monodepth2", monovit_size="small"):
    model = build_model(arch, monovit_size)
    tap = tap or model.default_tap
    variables = model.init_variables(jax.random.PRNGKey(0), height, width)
    images = jax.random.uniform(jax.random.PRNGKey(1), (batch, height, width, 3))
    fwd = jax.jit(lambda v, x: model.apply(v, x)["depth"])
    fwd2 = jax.jit(lambda v, x: model.apply(v, jnp.concatenate([x, x]))["depth"])
    methods = {
        "forward": fwd,
        "post": lambda v, x: U.post(model.apply, v, x, batched=True),
        "post_separate": lambda v, x: U.post(model.apply, v, x, batched=False),
        "var": lambda v, x: U.var(model.apply, v, x, batched=True),
        "var_separate": lambda v, x: U.var(model.apply, v, x, batched=False),
        "in_drop": lambda v, x: U.in_drop(model.apply, v, x),
        "grad": lambda v, x: U.gradient_uncertainty(model.apply, v, x, taps=(tap,),
                                                    batch_reference=True),
        "grad_separate": lambda v, x: U.gradient_uncertainty(
            model.apply, v, x, taps=(tap,), batch_reference=False),
    }
    rows = {}
    for name, fn in methods.items():
        rows[name] = {"ms_per_image": 1e3 * _time(fn, variables, images, repeats=repeats) / batch,
                      "gflops": _flops(fn, variables, images) / 1e9,
                      **dict(zip(("peak_mib", "working_mib"),
                                 _memory_mib(fn, variables, images)))}
    backward = backward_floor_flops_xla(model, variables, images, tap)
    floor = _flops(fwd2, variables, images) + backward
    for name, r in rows.items():
        r["x_post"] = r["ms_per_image"] / rows["post"]["ms_per_image"]
        r["x_forward"] = r["ms_per_image"] / rows["forward"]["ms_per_image"]
    extra = {"tap": tap, "backward_gflops_xla": backward / 1e9}
    if arch == "monodepth2" and tap.startswith("dec"):
        extra["backward_gflops_analytic"] = backward_floor_flops(model, variables, images,
                                                                  tap) / 1e9
    return rows, floor / 1e9, extra


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--arch", choices=("monodepth2", "monovit"), default="monodepth2")
    parser.add_argument("--monovit-size", default="small",
                        help="MonoViT size (small as released; tiny for a quick look)")
    parser.add_argument("--tap", default=None, help="the tap (default: the model's, dec6 / "
                        "X_13_Conv_0)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    name = "Monodepth2 (ResNet-18)" if args.arch == "monodepth2" else \
        f"MonoViT-{args.monovit_size}"
    print(f"{name}; jax {jax.__version__} on {jax.devices()[0].device_kind} "
          f"({jax.device_count()} device(s)), input {args.height}×{args.width}")
    results = {"arch": args.arch, "monovit_size": args.monovit_size,
               "device": jax.devices()[0].device_kind, "batches": {}}
    for batch in args.batch:
        rows, floor, extra = run(args.height, args.width, batch, args.repeats, args.tap,
                                 args.arch, args.monovit_size)
        results["batches"][batch] = {"rows": rows, "grad_floor_gflops": floor, **extra}
        print(f"\nbatch {batch}")
        print(f"{'method':<16}{'ms/image':>10}{'× Post':>9}{'× fwd':>8}{'GFLOPs':>10}"
              f"{'peak MiB':>10}{'work MiB':>10}")
        for name, r in rows.items():
            print(f"{name:<16}{r['ms_per_image']:>10.1f}{r['x_post']:>9.2f}{r['x_forward']:>8.2f}"
                  f"{r['gflops']:>10.2f}{r['peak_mib']:>10.0f}{r['working_mib']:>10.0f}")
        if "backward_gflops_analytic" in extra:
            print(f"activation backward to {extra['tap']}: {extra['backward_gflops_xla']:.2f} "
                  f"GFLOPs (XLA), {extra['backward_gflops_analytic']:.2f} (analytic)")
        print(f"grad FLOP floor (2 forwards + activation backward to {extra['tap']}): "
              f"{floor:.2f} "
              f"GFLOPs; grad = {rows['grad']['gflops'] / floor:.3f}× floor, "
              f"separate reference = {rows['grad_separate']['gflops'] / floor:.3f}× floor")
        fast = {m: min((m, f"{m}_separate"), key=lambda k: rows[k]["ms_per_image"])
                for m in ("post", "var", "grad")}
        print("faster form on this backend: " + ", ".join(
            f"{m}: {'separate' if k.endswith('_separate') else 'batched'}"
            for m, k in fast.items()) + f"; Grad ÷ Post (faster forms): "
            f"{rows[fast['grad']]['ms_per_image'] / rows[fast['post']]['ms_per_image']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
