"""jaxdepth.losses."""
