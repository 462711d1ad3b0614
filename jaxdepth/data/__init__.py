"""jaxdepth.data."""
