"""Process setup for entry points (experiments, CLI, benchmarks); library code never calls it.

`configure_cpu()` turns off XLA:CPU's YNNPACK convolution fusions. On the 2-core
x86 machines this project is developed on (jax 0.10), YNNPACK runs the
reflection-padded 'VALID' 3×3 convolutions of the Monodepth2 decoder up to 4×
slower for batch sizes above one than XLA's Eigen convolutions (measured:
96→32 channels at 96×320, batch 2: 95 ms vs 22 ms), which made every batched
method look slower per image than its unbatched form. The flag only affects CPU.
The other XLA:CPU options tried against PyTorch (oneDNN, XNNPACK, fast math) gave
nothing measurable and are not set; docs/performance.md has the numbers.

`release_compiled_programs()` drops JAX's compiled programs once the process holds
many memory mappings: every cached XLA:CPU executable keeps ~3 mappings of JIT code,
Linux allows a process `vm.max_map_count` (65,530 by default), and past it LLVM's
mmap fails ("LLVM compilation error: Cannot allocate memory", or a segfault in
`backend_compile_and_load`). Long processes that compile many programs (the test
suite's workers, ablations over many models) call it between stages.
"""
from __future__ import annotations

import gc
import os
import warnings

_YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="


def configure_cpu() -> None:
    """Append the XLA flag to `XLA_FLAGS` unless the user set one; call before JAX runs."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "ynn_fusion_type" in flags:
        return
    try:
        from jax._src import xla_bridge
        initialised = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        initialised = False
    if initialised:
        warnings.warn("jaxdepth.runtime.configure_cpu() called after JAX started; "
                      "the XLA flag takes effect only in a new process", stacklevel=2)
        return
    os.environ["XLA_FLAGS"] = (flags + " " + _YNN_OFF).strip()


def memory_maps() -> int:
    """The number of memory mappings of this process (0 where /proc is missing)."""
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def max_memory_maps() -> int:
    """The kernel's per-process limit (`vm.max_map_count`; 65,530 where unreadable)."""
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 65_530


def release_compiled_programs(fraction: float = 0.3) -> bool:
    """Clear JAX's caches (`jax.clear_caches()`, which also empties live jitted
    functions' executables) when this process holds more than `fraction` of its
    memory-map limit; returns whether it did. Later calls recompile."""
    if memory_maps() <= fraction * max_memory_maps():
        return False
    import jax
    jax.clear_caches()
    gc.collect()
    return True
