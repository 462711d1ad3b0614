"""jaxdepth.train."""
