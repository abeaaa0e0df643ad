"""A torchaudio that cannot load beside this torch is made to look absent.

fairseq requires torchaudio, pip then installs the newest one, and beside a newer or CPU-only
torch its C++ extension fails to load; transformers imports it whenever it is installed, so
every model import would fail although no text model uses audio. ``sys.modules["torchaudio"] =
None`` makes ``importlib.util.find_spec`` return None (transformers' availability check) and
``import torchaudio`` raise ImportError (what optional-audio code expects).

This module must stay importable without torch or fairseq: the package runs
:func:`ignore_mismatched_torchaudio` on import, before anything can import transformers.
"""

import importlib.util
import logging
import os
import sys

_COMMAND = os.path.basename(sys.argv[0] if sys.argv else "") == "fairseq-ext"
_torchaudio_checked = False


def absent_if_broken(current):
    """What ``sys.modules["torchaudio"]`` should hold: None (absent) when torchaudio is installed but cannot
    be imported, else ``current`` (decided once per process; the table entry ``sys:modules['torchaudio']``
    of :mod:`fairseq_ext.runtime.patches`).

    None makes ``importlib.util.find_spec`` return None (transformers' availability check) and ``import
    torchaudio`` raise ImportError (what optional-audio code expects). One log line names the versions
    and the error: a warning in Python sessions and ``fairseq-train``, where other code might want audio;
    an INFO line under ``fairseq-ext``, whose verbs never do.
    """
    global _torchaudio_checked
    if _torchaudio_checked or "torchaudio" in sys.modules or importlib.util.find_spec("torchaudio") is None:
        _torchaudio_checked = True
        return current  # already imported (it works) or marked absent, or not installed
    _torchaudio_checked = True
    try:
        import torchaudio  # noqa: F401  (imports torch first, which registering needs anyway)
    except Exception as exc:  # OSError from its C++ extension; ImportError/RuntimeError from other mismatches
        _forget_torchaudio(f"{type(exc).__name__}: {_reason(exc)}")
        return None
    return current


def ignore_mismatched_torchaudio() -> None:
    """The cheap half of :func:`absent_if_broken`, run when the package is imported, before
    anything can import transformers: a torchaudio built for another torch release (its version
    X.Y must match torch's, 0.Y for torch 1.Y) cannot load, so it is made absent without importing
    torch. This matters under the ``fairseq-ext`` command, which imports transformers (tokenizers)
    long before a verb calls :func:`fairseq_ext.register`; transformers decides once, on its own import,
    whether torchaudio is there.
    """
    if "torchaudio" in sys.modules or importlib.util.find_spec("torchaudio") is None:
        return
    audio, torch = _release(_version("torchaudio")), _release(_version("torch"))
    if audio is None or torch is None:
        return
    expected = (0, torch[1]) if torch[0] == 1 else torch
    if audio != expected:
        _hide_torchaudio("it was built for another torch release")


def _release(version: str):
    """(major, minor) of a version string, or None.

    >>> _release("2.13.0+cpu"), _release("0.13.1"), _release("(unknown version)")
    ((2, 13), (0, 13), None)
    """
    parts = version.split(".")
    return (int(parts[0]), int(parts[1])) if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit() else None


def _hide_torchaudio(reason: str) -> None:
    _forget_torchaudio(reason)
    sys.modules["torchaudio"] = None


def _forget_torchaudio(reason: str) -> None:
    """Drop what an import of torchaudio left in ``sys.modules``, and say why in one line."""
    global _torchaudio_checked
    _torchaudio_checked = True
    for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
        del sys.modules[name]
    logging.getLogger(__name__).log(
        logging.INFO if _COMMAND else logging.WARNING,
        "torchaudio %s cannot be loaded beside torch %s (%s); ignoring it, as no text model uses audio "
        "(`pip uninstall torchaudio`, or the torchaudio build matching torch, removes this message)",
        _version("torchaudio"), _version("torch"), reason,
    )


def _reason(exc: BaseException) -> str:
    """The exception's message and its cause's, on one line."""
    parts = [str(e).strip() for e in (exc, exc.__cause__) if e is not None and str(e).strip()]
    return " <- ".join(parts).replace("\n", " ")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "(unknown version)"
