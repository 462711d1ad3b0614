"""jaxdepth.data."""

from .drivingstereo import DrivingStereo  # noqa: F401
