"""Errors the CLI turns into one line and a non-zero exit code."""


class CurateError(Exception):
    """A user-facing error: bad input file, bad config, refused output folder."""


class GateFailed(CurateError):
    """The run finished and wrote its outputs, but a dataset gate failed."""
