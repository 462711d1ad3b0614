"""Test configuration: 8 simulated CPU devices, set before JAX is imported."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

from jaxdepth import runtime  # noqa: E402  (imports no JAX backend)

runtime.configure_cpu()
