"""``python -m jaxdepth.data.synthetic --preview out.png``: see :mod:`.preview`."""
from .preview import _main

_main()
