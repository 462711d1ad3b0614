"""The error every command turns into one line and exit status 2."""


class CLIError(Exception):
    """A user error: printed as `jaxdepth: error: ...`, exit status 2."""
