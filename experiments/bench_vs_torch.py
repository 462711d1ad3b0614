"""Benchmark: jaxdepth against PyTorch on the same CPU, in one run, with the same weights.

    python experiments/bench_vs_torch.py [--height 192 --width 640 --batch 1 8 --repeats 5]
    python experiments/bench_vs_torch.py --train [--train-height 96 --train-width 320]

The PyTorch side is written here: Monodepth2 (torchvision's ResNet-18 as the encoder,
Monodepth2's decoder: reflection-padded 3×3 convs, ELU, nearest ×2 upsampling, sigmoid
disparity heads, `disp_to_depth` 0.1–100 m), random weights and random BatchNorm
statistics; `jaxdepth.convert.convert_state_dicts` turns its state dicts into the
jaxdepth variables, so both frameworks run the same network, and every method's outputs
are compared (max abs difference printed) before anything is timed.

Methods (each framework its library default / natural form):
- `forward`: depth at scale 0 (PyTorch computes only the scale-0 head, as XLA's
  dead-code elimination does for the JAX side);
- `post`: flip post-processing, two forwards of B (`post_batched`: one of 2B);
- `grad`: the gradient uncertainty of Hornauer & Belagiannis at `dec6` = upconv(1,0)
  with the flip reference: the reference forward under `no_grad`, then a forward with a
  hook on upconv(1,0)'s conv making its output the one tensor that requires grad
  (parameters frozen), L = mean (d − flip(d_flip))² per image, `autograd.grad` of ΣL
  w.r.t. the activation, signed channel max, per-image min-max, bilinear upsampling
  (`jaxdepth.uncertainty.gradient_uncertainty`'s steps, separate reference as its CPU
  default);
- `--train`: one training step of a ResNet-18 DepthNet (default 96×320, batch 8):
  supervised L1 on log depth at the four scales bilinearly upsampled to the input,
  Adam, BatchNorm in training mode; jaxdepth through `jaxdepth.train.supervised`'s
  step (`skeleton`) and through a plain optax step with donated buffers (`optax`).

Timing: median over `--repeats` after compile and warm-up, the two frameworks
interleaved call by call (the machine's load hits both alike); torch runs with
`torch.set_num_threads(n)` for each `--torch-threads` n (default os.cpu_count(), the
thread count of XLA), `inference_mode` for forward / Post; the speedup is against the
fastest torch setting. On a loaded machine libgomp's spinning workers make torch's
multi-threaded runs erratic (docs/performance.md): `GOMP_SPINCOUNT=0` in the
environment, or `--torch-threads 2 1`, gives PyTorch its best case. The
load average is printed with each table.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time

from jaxdepth import runtime

runtime.configure_cpu()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxdepth import uncertainty as U  # noqa: E402
from jaxdepth.convert import convert_state_dicts  # noqa: E402
from jaxdepth.models import DepthNet  # noqa: E402

MIN_DEPTH, MAX_DEPTH = 0.1, 100.0
TAP_INDEX = 6  # decoder.6 = upconv(1,0) = dec6


# ----------------------------------------------------------------------------- PyTorch side

@functools.cache
def _torch():
    import torch
    import torch.nn.functional as F
    import torchvision
    from torch import nn

    class ResnetEncoder(nn.Module):
        """Monodepth2's `ResnetEncoder` around torchvision's resnet18 (`encoder.*` keys)."""

        def __init__(self):
            super().__init__()
            self.encoder = torchvision.models.resnet18(weights=None)

        def forward(self, x):
            e = self.encoder
            f = [e.relu(e.bn1(e.conv1((x - 0.45) / 0.225)))]
            f.append(e.layer1(e.maxpool(f[-1])))
            f.append(e.layer2(f[-1]))
            f.append(e.layer3(f[-1]))
            f.append(e.layer4(f[-1]))
            return f

    class Conv3x3(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.pad = nn.ReflectionPad2d(1)
            self.conv = nn.Conv2d(cin, cout, 3)

        def forward(self, x):
            return self.conv(self.pad(x))

    class ConvBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = Conv3x3(cin, cout)

        def forward(self, x):
            a = self.conv(x)
            # Monodepth2's ELU(inplace=True); not in place on the hooked leaf of Grad
            return F.elu(a, inplace=not (a.is_leaf and a.requires_grad))

    class DepthDecoder(nn.Module):
        """Monodepth2's decoder: `decoder.0..9` the ConvBlocks, `decoder.10..13` the heads."""

        def __init__(self, enc_ch=(64, 64, 128, 256, 512), dec_ch=(16, 32, 64, 128, 256)):
            super().__init__()
            mods = []
            for i in range(4, -1, -1):
                mods.append(ConvBlock(enc_ch[-1] if i == 4 else dec_ch[i + 1], dec_ch[i]))
                mods.append(ConvBlock(dec_ch[i] + (enc_ch[i - 1] if i > 0 else 0), dec_ch[i]))
            mods += [Conv3x3(dec_ch[s], 1) for s in range(4)]
            self.decoder = nn.ModuleList(mods)

        def forward(self, feats, scales=(0,)):
            """Sigmoid disparities of `scales` (finest first)."""
            x, out = feats[-1], {}
            for i in range(4, -1, -1):
                x = self.decoder[8 - 2 * i](x)
                x = [F.interpolate(x, scale_factor=2, mode="nearest")]
                if i > 0:
                    x.append(feats[i - 1])
                x = self.decoder[9 - 2 * i](torch.cat(x, 1))
                if i in scales:
                    out[i] = torch.sigmoid(self.decoder[10 + i](x))
            return [out[s] for s in sorted(scales)]

    return torch, F, ResnetEncoder, DepthDecoder


def randomize(module, seed):
    """Uniform ±1/√fan_in conv weights and biases, random BatchNorm affine and statistics."""
    torch = _torch()[0]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.weight.numel()
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
            elif isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                bound = 1.0 / np.sqrt(m.weight[0].numel())
                m.weight.uniform_(-bound, bound, generator=gen)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=gen)
    return module.eval()


def build_models(seed=0):
    """`(torch encoder, torch decoder, DepthNet, variables)` with the same weights."""
    torch, _, ResnetEncoder, DepthDecoder = _torch()
    enc, dec = randomize(ResnetEncoder(), seed), randomize(DepthDecoder(), seed + 1)

    def numpy(sd):
        return {k: v.detach().cpu().numpy() for k, v in sd.items()}

    kwargs, variables, _ = convert_state_dicts(numpy(enc.state_dict()), numpy(dec.state_dict()),
                                               min_depth=MIN_DEPTH, max_depth=MAX_DEPTH)
    return enc, dec, DepthNet(**kwargs), jax.device_put(variables)


def _disp_to_depth(sig):
    scaled = 1.0 / MAX_DEPTH + (1.0 / MIN_DEPTH - 1.0 / MAX_DEPTH) * sig
    return scaled, 1.0 / scaled


def _flip(x):
    return x.flip(3)


def torch_methods(enc, dec):
    """The PyTorch forward / Post / Grad on NCHW images (module doc)."""
    torch, F, _, _ = _torch()
    for p in list(enc.parameters()) + list(dec.parameters()):
        p.requires_grad_(False)
    store = {}

    def hook(module, inputs, out):
        if store.get("armed"):
            out.requires_grad_(True)
            store["a"] = out
        return out

    tapped = dec.decoder[TAP_INDEX].conv
    tapped._forward_hooks.clear()  # one hook, however often this is called
    tapped.register_forward_hook(hook)

    def disp(x):
        return _disp_to_depth(dec(enc(x))[0])[0]

    def forward(x):
        with torch.inference_mode():
            return 1.0 / disp(x)

    def _blend(p, back):
        w = p.shape[3]
        xs = torch.linspace(0.0, 1.0, w)
        left = (1.0 - torch.clamp(20.0 * (xs - 0.05), 0.0, 1.0))[None, None, None, :]
        right = left.flip(3)
        return right * p + left * back + (1.0 - left - right) * 0.5 * (p + back)

    def post(x, batched=False):
        with torch.inference_mode():
            if batched:
                p, p_flip = disp(torch.cat([x, _flip(x)])).chunk(2)
            else:
                p, p_flip = disp(x), disp(_flip(x))
            back = _flip(p_flip)
            return 1.0 / _blend(p, back), (p - back).abs()

    def grad(x):
        with torch.no_grad():
            ref = _flip(1.0 / disp(_flip(x)))
        store["armed"] = True
        try:
            d = 1.0 / disp(x)
        finally:
            store["armed"] = False
        a = store.pop("a")
        loss = ((d - ref) ** 2).mean((1, 2, 3))
        g, = torch.autograd.grad(loss.sum(), a)
        with torch.no_grad():
            u = g.amax(1, keepdim=True)
            lo, hi = u.amin((1, 2, 3), keepdim=True), u.amax((1, 2, 3), keepdim=True)
            span = hi - lo
            u = torch.where(span > 0, (u - lo) / torch.where(span > 0, span, 1.0), 0.0)
            u = F.interpolate(u, size=x.shape[2:], mode="bilinear", align_corners=False)
            return d.detach(), u

    return {"forward": forward, "post": post,
            "post_batched": functools.partial(post, batched=True), "grad": grad}


def jax_methods(model, tap="dec6"):
    fwd = jax.jit(lambda v, x: model.apply(v, x)["depth"])
    return {"forward": fwd,
            "post": lambda v, x: U.post(model.apply, v, x, batched=False),
            "post_batched": lambda v, x: U.post(model.apply, v, x, batched=True),
            "grad": lambda v, x: U.gradient_uncertainty(model.apply, v, x, taps=(tap,))}


# ---------------------------------------------------------------------------------- timing

def _tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _to_nhwc(t):
    return np.asarray(t.detach().numpy()).transpose(0, 2, 3, 1)


def interleaved(fns, repeats):
    """Median seconds of each `fn()` (dict name → fn), called in turn `repeats` times
    after two untimed calls each; `fn` must block until its result is ready."""
    for fn in fns.values():
        fn()
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _load():
    return os.getloadavg()[0]


def _torch_threads(threads):
    return tuple(threads) if threads else (os.cpu_count(),)


def run(height=192, width=640, batch=1, repeats=5, methods=("forward", "post", "post_batched",
                                                              "grad"), seed=0, models=None,
        torch_threads=None):
    """Time `methods` in both frameworks at one batch size; returns a dict with per method
    `torch_ms` (per torch thread count of `torch_threads`, default `os.cpu_count()`),
    `jax_ms`, `speedup` (the fastest torch time ÷ the jax time) and `max_abs_diff` /
    `max_rel_diff` (per output: depth, then the uncertainty), and `load` (1-min load
    average before / after)."""
    torch = _torch()[0]
    threads = _torch_threads(torch_threads)
    enc, dec, model, variables = models or build_models(seed)
    images = np.random.default_rng(seed).uniform(0, 1, (batch, height, width, 3)).astype(
        np.float32)
    x_jax = jnp.asarray(images)
    x_torch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    tm, jm = torch_methods(enc, dec), jax_methods(model)
    rows, load0 = {}, _load()
    for name in methods:
        torch.set_num_threads(threads[0])
        t_out = _tuple(tm[name](x_torch))
        j_out = _tuple(jm[name](variables, x_jax))
        diffs = [float(np.max(np.abs(_to_nhwc(t) - np.asarray(j)))) for t, j in zip(t_out, j_out)]
        rel = [d / max(float(np.max(np.abs(np.asarray(j)))), 1e-12)
               for d, j in zip(diffs, j_out)]
        fns = {n: functools.partial(_with_threads, n, tm[name], x_torch) for n in threads}
        fns["jax"] = lambda: jax.block_until_ready(jm[name](variables, x_jax))
        secs = interleaved(fns, repeats)
        best = min(secs[n] for n in threads)
        rows[name] = {"torch_ms": {n: 1e3 * secs[n] for n in threads}, "jax_ms": 1e3 * secs["jax"],
                      "speedup": best / secs["jax"], "max_abs_diff": diffs,
                      "max_rel_diff": rel}
    torch.set_num_threads(threads[0])
    return {"height": height, "width": width, "batch": batch, "rows": rows,
            "torch_threads": threads, "load": (load0, _load())}


def _with_threads(n, fn, *args):
    torch = _torch()[0]
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return fn(*args)


# ---------------------------------------------------------------------------------- training

def _torch_train_step(enc, dec, lr, max_depth):
    torch, F, _, _ = _torch()
    enc.train()
    dec.train()
    params = [p for p in list(enc.parameters()) + list(dec.parameters())]
    for p in params:
        p.requires_grad_(True)
    # torchvision's fc is not part of the DepthNet: leave it out of the optimiser
    params = [p for n, p in enc.named_parameters() if not n.startswith("encoder.fc")] + \
        list(dec.parameters())
    opt = torch.optim.Adam(params, lr=lr)

    def step(x, y):
        h, w = y.shape[2:]
        valid = torch.isfinite(y) & (y > 0) & (y <= max_depth)
        log_y = torch.log(torch.where(valid, y, 1.0))
        losses = []
        for sig in dec(enc(x), scales=(0, 1, 2, 3)):
            depth = F.interpolate(_disp_to_depth(sig)[1], size=(h, w), mode="bilinear",
                                  align_corners=False)
            per_pixel = (torch.log(depth) - log_y).abs()
            losses.append(torch.where(valid, per_pixel, 0.0).sum() / valid.sum().clamp(min=1))
        loss = torch.stack(losses).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def _jax_train_steps(model, variables, height, width, batch, lr, max_depth):
    """`(skeleton_step, skeleton_state, optax_step, optax_state)`."""
    import optax

    from jaxdepth.train import supervised
    from jaxdepth.train.config import RunConfig
    from jaxdepth.train.state import new_state

    cfg = supervised.SupervisedConfig(
        variant="reg", width=1.0, max_depth=max_depth, loss_space="log",
        run=RunConfig(height=height, image_width=width, batch_size=batch, lr=lr, augment=False,
                      steps=10 ** 6))
    skeleton = supervised.make_step(cfg)
    copy = functools.partial(jax.tree.map, jnp.array)
    sk_state = new_state(cfg.run, {"depth": copy(variables["params"])},
                         {"depth": copy(variables["batch_stats"])})

    tx = optax.adam(lr)

    def loss_fn(params, stats, x, y):
        out, upd = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                               mutable=["batch_stats"])
        loss = supervised.supervised_loss(out, y, supervised.valid_depth(y, max_depth), "reg",
                                          "log")
        return loss, upd["batch_stats"]

    @functools.partial(jax.jit, donate_argnums=(0,))
    def optax_step(state, x, y):
        params, stats, opt_state = state
        (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, x, y)
        updates, opt_state = tx.update(g, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    params = copy(variables["params"])
    ox_state = (params, copy(variables["batch_stats"]), tx.init(params))
    return skeleton, sk_state, optax_step, ox_state


def run_train(height=96, width=320, batch=8, repeats=5, seed=0, lr=1e-4, max_depth=80.0,
              models=None, torch_threads=None):
    """Training-step time of PyTorch, the jaxdepth skeleton step and a plain optax step;
    `loss_diff`: |loss_torch − loss_jax| of the first step (same weights and data)."""
    torch = _torch()[0]
    threads = _torch_threads(torch_threads)
    torch.set_num_threads(threads[0])
    enc, dec, model, variables = models or build_models(seed)
    rng = np.random.default_rng(seed + 7)
    images = rng.uniform(0, 1, (batch, height, width, 3)).astype(np.float32)
    depth = rng.uniform(1.0, max_depth, (batch, height, width, 1)).astype(np.float32)
    depth[:, :4] = 0.0  # some invalid pixels
    x_t = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    y_t = torch.from_numpy(depth.transpose(0, 3, 1, 2).copy())
    x_j, y_j = jnp.asarray(images), jnp.asarray(depth)
    t_step = _torch_train_step(enc, dec, lr, max_depth)
    skeleton, sk_state, optax_step, ox_state = _jax_train_steps(model, variables, height, width,
                                                                batch, lr, max_depth)
    load0 = _load()
    loss_t = float(t_step(x_t, y_t))
    box = {"sk": sk_state, "ox": ox_state}
    box["sk"], m = skeleton(box["sk"], {"image": x_j, "depth": y_j})
    box["ox"], loss_o = optax_step(box["ox"], x_j, y_j)
    losses = {"torch": loss_t, "skeleton": float(m["loss"]), "optax": float(loss_o)}

    def sk():
        box["sk"], m = skeleton(box["sk"], {"image": x_j, "depth": y_j})
        jax.block_until_ready(m)

    def ox():
        box["ox"], loss = optax_step(box["ox"], x_j, y_j)
        jax.block_until_ready(loss)

    fns = {f"torch@{n}": functools.partial(_with_threads, n, t_step, x_t, y_t) for n in threads}
    secs = interleaved({**fns, "skeleton": sk, "optax": ox}, repeats)
    torch.set_num_threads(threads[0])
    best = min(secs[k] for k in fns)
    return {"height": height, "width": width, "batch": batch, "first_loss": losses,
            "ms": {k: 1e3 * v for k, v in secs.items()},
            "images_per_s": {k: batch / v for k, v in secs.items()},
            "speedup": {k: best / secs[k] for k in ("skeleton", "optax")},
            "load": (load0, _load())}


# -------------------------------------------------------------------------------------- CLI

def _print_table(res):
    threads = res["torch_threads"]
    print(f"\n{res['height']}×{res['width']}, batch {res['batch']} "
          f"(load {res['load'][0]:.1f} → {res['load'][1]:.1f})")
    print(f"{'method':<14}" + "".join(f"{f'torch@{n} ms':>13}" for n in threads)
          + f"{'jax ms':>10}{'jax ×':>8}   max abs diff (rel)")
    for name, r in res["rows"].items():
        diffs = ", ".join(f"{d:.1e} ({q:.0e})" for d, q in zip(r["max_abs_diff"],
                                                                r["max_rel_diff"]))
        print(f"{name:<14}" + "".join(f"{r['torch_ms'][n]:>13.1f}" for n in threads)
              + f"{r['jax_ms']:>10.1f}{r['speedup']:>8.2f}   {diffs}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["forward", "post", "post_batched",
                                                         "grad"])
    parser.add_argument("--train", action="store_true", help="also time a training step")
    parser.add_argument("--train-only", action="store_true", help="only the training step")
    parser.add_argument("--train-height", type=int, default=96)
    parser.add_argument("--train-width", type=int, default=320)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--torch-threads", type=int, nargs="+", default=None,
                        help="torch thread counts to time (default: os.cpu_count(), the count "
                        "XLA uses); the speedups are against the fastest")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch = _torch()[0]
    print(f"jax {jax.__version__} ({jax.devices()[0].device_kind}, {os.cpu_count()} CPUs), "
          f"torch {torch.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}")
    models = build_models()
    results = {"xla_flags": os.environ.get("XLA_FLAGS", ""), "batches": {}}
    if not args.train_only:
        for batch in args.batch:
            res = run(args.height, args.width, batch, args.repeats, tuple(args.methods),
                      models=models, torch_threads=args.torch_threads)
            results["batches"][batch] = res
            _print_table(res)
    if args.train or args.train_only:
        res = run_train(args.train_height, args.train_width, args.train_batch, args.repeats,
                        models=build_models(), torch_threads=args.torch_threads)
        results["train"] = res
        print(f"\ntraining step {res['height']}×{res['width']}, batch {res['batch']} "
              f"(load {res['load'][0]:.1f} → {res['load'][1]:.1f}); first-step loss "
              + ", ".join(f"{k} {v:.6f}" for k, v in res["first_loss"].items()))
        print(f"{'':<10}{'ms':>10}{'images/s':>10}{'jax ×':>8}")
        for k in res["ms"]:
            sp = res["speedup"].get(k)
            print(f"{k:<10}{res['ms'][k]:>10.1f}{res['images_per_s'][k]:>10.1f}"
                  + (f"{sp:>8.2f}" if sp else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
