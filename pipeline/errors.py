"""The errors a person can act on.

Every error the library raises for bad input (a missing file, an unreadable corpus item, a
store that does not fit the request, an unknown option value) is a :class:`PipelineError`
whose message says what was wrong, with which file, and what to do. The CLI prints those as
one line and exits with status 2 (:class:`DiskFullError`: 3); anything else is a bug and
ends with a traceback.
"""
from __future__ import annotations


class PipelineError(Exception):
    """A user-facing error: the message names the input and what to do about it."""


class UsageError(PipelineError, ValueError):
    """An option value or combination the library does not accept (e.g. an unknown method)."""


class InputError(PipelineError, FileNotFoundError):
    """An input path that does not exist or is not what the command reads."""


class DiskFullError(PipelineError, OSError):
    """The output's file system filled up during a run; what was finished is kept. The CLI
    exits with status 3 (not 1: no item was at fault)."""
    exit_code = 3
