"""Errors that reach the user as one line (file, line or key, what is wrong)."""

from __future__ import annotations

import errno
import sys
from typing import Optional


class UserError(ValueError):
    """Bad input: a missing file, malformed text, mismatched tokenizer, ..."""


# OS errors that are the user's paths or machine, never a bug: a missing, misplaced or
# unwritable path, a full disk or quota, a read-only file system.
USER_ERRNOS = frozenset({
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS,
    errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOTEMPTY,
})

# What the command line reports as one line with a non-zero exit status (see user_message).
USER_ERRORS = (UserError, OSError)


def user_message(exc: BaseException) -> Optional[str]:
    """The one line a user sees for ``exc``, or None when ``exc`` is not a user mistake (a bug).

    >>> user_message(FileNotFoundError(2, "No such file or directory", "data/train.txt"))
    'data/train.txt: no such file or directory'
    >>> user_message(KeyError("x")) is None
    True
    """
    if isinstance(exc, UserError):
        return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
        reason = (exc.strerror or errno.errorcode.get(exc.errno, "")).lower()
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        return f"{where}: {reason}" if where else reason
    return None


def one_line_excepthook(previous, program: str):
    """A ``sys.excepthook`` that prints an uncaught :class:`UserError` as ``PROGRAM: error: MESSAGE``
    instead of a traceback, and hands every other exception to ``previous`` (its traceback kept).

    For programs that are not ours (fairseq-train) and so have no ``main`` that catches them (installed
    by :mod:`fairseq_ext.runtime.patches`). The exit status stays 1.
    """

    def hook(kind, value, tb):
        if isinstance(value, UserError):
            print(f"{program}: error: {value}", file=sys.stderr)
        else:
            previous(kind, value, tb)

    return hook
