"""Test configuration: 2 simulated CPU devices (batches are split over them, as over a
machine's accelerators), set before JAX is imported."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=2"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

from jaxdepth import runtime  # noqa: E402  (imports no JAX backend)

runtime.configure_cpu()


import jax  # noqa: E402
import pytest  # noqa: E402

if os.environ.get("JAXDEPTH_TEST_CHEAP", "1") == "1":
    jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture(scope="module")
def cheap_compilation():
    """Kept for modules that declare it: XLA's optimisations are off for the whole suite
    (set above; tiny programs, where the optimisation passes cost several times more than
    running them). `JAXDEPTH_TEST_CHEAP=0` runs the suite with them on."""
    yield


@pytest.fixture(scope="module")
def full_compilation():
    """Modules that pin exact float values of the optimised programs users run (the
    procedural scenes' pixels): compile them with XLA's optimisations on."""
    from jaxdepth.data.synthetic import source

    def forget():  # the renderer keeps its compiled programs: drop the cheap ones
        for fn in (source._finish_fn, source._render_fn, source._compiled, source._scene_fn):
            fn.cache_clear()
        jax.clear_caches()

    previous = bool(jax.config.values.get("jax_disable_most_optimizations", False))
    jax.config.update("jax_disable_most_optimizations", False)
    forget()
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
    forget()


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """After each module, drop JAX's compiled programs once the worker holds many memory
    mappings (`runtime.release_compiled_programs`). A pytest-xdist worker running half
    the suite compiles tens of thousands of programs (tests/test_selfsup.py alone holds
    ~24,800 mappings) and crossed Linux's 65,530 limit: XLA then segfaulted compiling.
    Only above the threshold, so modules keep sharing the renderer's programs."""
    yield
    runtime.release_compiled_programs()


def pytest_collection_modifyitems(config, items):
    """Longest modules first: pytest-xdist's `--dist loadfile` hands modules out in
    collection order, so the long ones start early and the short ones fill the end
    (alphabetically, one worker ran tests/test_selfsup.py and test_train_cli.py alone for
    minutes). Seconds per module: tests/module_seconds.json, from a full run's
    `--durations=0` (modules not listed count 5 s)."""
    import json
    from pathlib import Path

    seconds = json.loads((Path(__file__).parent / "module_seconds.json").read_text())
    order = {}
    for item in items:
        order.setdefault(item.path.name, len(order))
    items.sort(key=lambda item: (-seconds.get(item.path.name, 5), order[item.path.name]))
