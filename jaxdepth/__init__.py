"""jaxdepth: post hoc gradient-based uncertainty for monocular depth networks."""

__version__ = "0.1.0"
