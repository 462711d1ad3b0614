"""PyTorch-style random initialisation of Linen variables, computed in NumPy.

Tracing a Flax `init` builds one random program per parameter, which takes
seconds to compile for a ResNet on CPU; the structure is cheap (`eval_shape`),
so the values are drawn here instead, following the reference networks:

- conv kernels without bias (torchvision ResNet): Kaiming normal, fan-out, ReLU
  gain: N(0, 2 / (k·k·C_out));
- conv kernels with bias (Monodepth2 decoder, PyTorch's default `Conv2d`):
  U(±1/√fan_in) for kernel and bias, fan_in = k·k·C_in;
- BatchNorm: scale 1, bias 0, running mean 0, running var 1.
"""
from __future__ import annotations

import jax
import numpy as np
from flax import traverse_util


def _seed(rng) -> list[int]:
    """A NumPy seed from an int or a JAX key (raw uint32 or typed)."""
    if isinstance(rng, (int, np.integer)):
        return [int(rng)]
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.key_data(rng)
    return [int(x) for x in np.asarray(rng).ravel()]


def torch_like_init(abstract, rng):
    """Fill the `jax.ShapeDtypeStruct` tree `abstract` (e.g. from
    `jax.eval_shape(module.init, ...)`) with PyTorch-style random values."""
    gen = np.random.default_rng(_seed(rng))
    flat = traverse_util.flatten_dict(abstract)
    out = {}
    for path in sorted(flat):
        leaf, parent = flat[path], path[:-1]
        shape, dtype, name = leaf.shape, leaf.dtype, path[-1]
        has_bias = parent + ("bias",) in flat
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            if has_bias:
                bound = 1.0 / np.sqrt(fan_in)
                value = gen.uniform(-bound, bound, shape)
            else:
                fan_out = int(np.prod(shape[:-2])) * shape[-1]
                value = gen.normal(0.0, np.sqrt(2.0 / fan_out), shape)
        elif name == "bias" and parent + ("kernel",) in flat:
            fan_in = int(np.prod(flat[parent + ("kernel",)].shape[:-1]))
            bound = 1.0 / np.sqrt(fan_in)
            value = gen.uniform(-bound, bound, shape)
        elif name in ("scale", "var"):
            value = np.ones(shape)
        elif name in ("bias", "mean"):
            value = np.zeros(shape)
        else:
            raise ValueError(f"no init rule for variable {'/'.join(path)} of shape {shape}")
        out[path] = jax.numpy.asarray(value, dtype)
    return traverse_util.unflatten_dict(out)
