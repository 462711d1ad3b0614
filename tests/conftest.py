"""Test configuration: 8 simulated CPU devices, set before JAX is imported."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
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
    """For modules that compile a few dozen distinct programs of tiny models, where XLA's
    optimisation passes cost several times more than running the programs: compile with
    most optimisations off (the code under test and the test's independent computation
    alike, so they still agree), and restore the setting for the rest of the suite.
    Use with `pytestmark = pytest.mark.usefixtures("cheap_compilation")`."""
    previous = bool(jax.config.values.get("jax_disable_most_optimizations", False))
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
