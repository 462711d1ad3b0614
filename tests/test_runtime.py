"""jaxdepth.runtime: releasing compiled programs before the process runs out of memory
mappings (each cached XLA:CPU executable holds a few; Linux allows `vm.max_map_count`)."""
import sys

import jax
import jax.numpy as jnp
import pytest

from jaxdepth import runtime

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


@linux_only
def test_memory_maps_counts_this_process_and_the_limit_is_read():
    with open("/proc/self/maps") as f:
        lines = sum(1 for _ in f)
    assert abs(runtime.memory_maps() - lines) < 20
    with open("/proc/sys/vm/max_map_count") as f:
        assert runtime.max_memory_maps() == int(f.read())


@linux_only
def test_compiled_programs_hold_mappings_until_released():
    assert not runtime.release_compiled_programs(fraction=1.0)  # far below the limit
    jax.clear_caches()
    before = runtime.memory_maps()
    fns = [jax.jit(lambda x, i=i: jnp.tanh(x * i).sum()) for i in range(60)]
    for f in fns:
        f(jnp.ones(4)).block_until_ready()
    held = runtime.memory_maps()
    assert held - before >= 60  # at least one mapping per live executable
    assert runtime.release_compiled_programs(fraction=0.0)
    assert runtime.memory_maps() - before < (held - before) / 2
    assert float(fns[0](jnp.ones(4))) == 0.0  # released programs recompile on use
