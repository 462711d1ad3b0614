from jaxdepth.cli import _entry

_entry()
