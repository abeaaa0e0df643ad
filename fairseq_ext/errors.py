"""Errors that reach the user as one line (file, line or key, what is wrong)."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: a missing file, malformed text, mismatched tokenizer, ..."""


# What the command line reports as one line with a non-zero exit status.
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def report_user_errors_in_one_line(program: str) -> None:
    """Make an uncaught :class:`UserError` print ``PROGRAM: error: MESSAGE`` instead of a traceback.

    For programs that are not ours (fairseq-train) and so have no ``main`` that catches them;
    other exceptions keep their traceback. The exit status stays 1.
    """
    import sys

    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, UserError):
            print(f"{program}: error: {value}", file=sys.stderr)
        else:
            previous(kind, value, tb)

    if not getattr(sys.excepthook, "fairseq_ext_one_line", False):
        hook.fairseq_ext_one_line = True
        sys.excepthook = hook
