"""Errors the CLI turns into one line and a non-zero exit code."""

from __future__ import annotations

import errno
import re


class CurateError(Exception):
    """A user-facing error: bad input file, bad config, refused output folder."""


class GateFailed(CurateError):
    """The run finished and wrote its outputs, but a dataset gate failed."""


# errors of the machine, not of curate: said in words, without "internal error"
MACHINE_ERRORS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
}


def os_errno(exc: BaseException) -> int | None:
    """The errno of an OSError, or of a library error that only names it (polars: "(os error 28)")."""
    if isinstance(exc, OSError):
        return exc.errno
    found = re.search(r"\(os error (\d+)\)", str(exc))
    return int(found.group(1)) if found else None


def machine_error(exc: BaseException) -> str | None:
    """The error in words ("disk full", "permission denied") when the machine refused, else None."""
    return MACHINE_ERRORS.get(os_errno(exc))
