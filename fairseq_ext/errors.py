"""Errors that reach the user as one line (file, line or key, what is wrong)."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: a missing file, malformed text, mismatched tokenizer, ..."""


# What the command line reports as one line with a non-zero exit status.
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
