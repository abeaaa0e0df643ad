"""How the table of :mod:`fairseq_ext.runtime.patches` is applied: targets, the sentinel, the release check.

A target is written ``module:attribute.path`` (``fairseq.trainer:Trainer.load_checkpoint``) or
``module:NAME['key']`` for an item of a dict (``sys:modules['torchaudio']``). Its replacement is made
by the entry's ``replacement(current)``; returning ``current`` itself means there is nothing to change.

The one sentinel convention: every replacement carries ``__fairseq_ext_patch__``, the target it
replaces (:func:`patched`), and an entry whose target already holds its replacement is skipped, so
applying the table again changes nothing. (A replacement that cannot carry it, ``None`` in
``sys.modules``, is decided again by its maker, which then returns the current value.)
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fairseq_ext.errors import UserError

logger = logging.getLogger("fairseq_ext.runtime")

SENTINEL = "__fairseq_ext_patch__"
# The fairseq releases the table is written and tested for: (distribution, fairseq.__version__).
SUPPORTED_RELEASES = (("fairseq-fixed", "0.12.3.1"),)
# fairseq's training programs: their uncaught UserErrors are printed as one line (sys.excepthook)
TRAINING_PROGRAMS = ("fairseq-train", "fairseq-hydra-train", "train.py", "hydra_train.py")
ABSENT = object()  # the current value of a dict item that is not there
_ITEM = re.compile(r"^(\w+)\['([^']+)'\]$")


@dataclass(frozen=True)
class Patch:
    """One change fairseq_ext makes to fairseq (or to the process) at run time."""

    target: str  # "module:attribute.path" or "module:NAME['key']"
    replacement: Callable[[Any], Any]  # current -> its replacement (``current`` itself: nothing to change)
    what: str  # what replaces it, in words
    why: str
    tests: tuple[str, ...]  # "tests/....py::test_name": what fails without it
    when: str = "always"  # "always", "training" (install(training=True)) or "training program" (TRAINING_PROGRAMS)
    loaded_only: bool = False  # patch every loaded copy of the module (imported, or run as __main__); never import it

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def in_fairseq(self) -> bool:
        return self.module.split(".")[0] in ("fairseq", "fairseq_cli")


@dataclass
class Slot:
    """Where one target lives: ``owner.name`` (an attribute) or ``owner[key]`` (an item)."""

    patch: Patch
    owner: Any
    name: str
    item: bool

    def get(self):
        return self.owner.get(self.name, ABSENT) if self.item else getattr(self.owner, self.name)

    def set(self, value) -> None:
        if self.item:
            self.owner[self.name] = value
        else:
            setattr(self.owner, self.name, value)


def patched(obj) -> str | None:
    """The target ``obj`` was made to replace, or None when it is not one of fairseq_ext's replacements."""
    return getattr(obj, SENTINEL, None)


def applies(patch: Patch, training: bool) -> bool:
    if patch.when == "training":
        return training
    if patch.when == "training program":
        return os.path.basename(sys.argv[0] if sys.argv else "") in TRAINING_PROGRAMS
    return True


def slots(patch: Patch) -> list[Slot]:
    """The places ``patch.target`` names (none when a ``loaded_only`` module is not loaded); a missing
    attribute is a one-line :class:`UserError` naming it and the installed fairseq release."""
    modules = loaded_copies(patch.module) if patch.loaded_only else [_module(patch)]
    path = patch.target.partition(":")[2].split(".")
    found = []
    for owner in modules:
        for name in path[:-1]:
            owner = _attribute(owner, name, patch)
        item = _ITEM.match(path[-1])
        if item:
            found.append(Slot(patch, _attribute(owner, item.group(1), patch), item.group(2), item=True))
        else:
            _attribute(owner, path[-1], patch)
            found.append(Slot(patch, owner, path[-1], item=False))
    return found


def _module(patch: Patch):
    try:
        return importlib.import_module(patch.module)
    except ImportError as exc:
        dist, release = installed_fairseq()
        raise UserError(f"{patch.target.replace(':', '.')}: module {patch.module} cannot be imported in fairseq "
                        f"{release} ({dist}: {exc}); fairseq_ext replaces it ({patch.what}) and supports "
                        f"{_supported()} only") from None


def _attribute(owner, name: str, patch: Patch):
    try:
        return getattr(owner, name)
    except AttributeError:
        dist, release = installed_fairseq()
        raise UserError(f"{patch.target.replace(':', '.')} is missing in fairseq {release} ({dist}): fairseq_ext "
                        f"replaces it ({patch.what}) and supports {_supported()} only") from None


def loaded_copies(module: str) -> list:
    """The loaded copies of ``module``: imported, and run as ``__main__`` (``python -m module``); not one
    still being imported (its functions are not all defined yet)."""
    found = [sys.modules.get(module)]
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == module:
        found.append(main)
    return [m for m in dict.fromkeys(found)
            if m is not None and not getattr(getattr(m, "__spec__", None), "_initializing", False)]


def apply(slot: Slot) -> bool:
    """Put the replacement in place unless it is already there; whether anything changed."""
    current = slot.get()
    if patched(current) == slot.patch.target:
        return False
    new = slot.patch.replacement(current)
    if new is current:
        return False
    if new is not None:
        setattr(new, SENTINEL, slot.patch.target)
    slot.set(new)
    return True


def installed_fairseq() -> tuple[str, str]:
    """``(distribution, fairseq.__version__)`` of the fairseq that ``import fairseq`` loads."""
    import fairseq

    release = getattr(fairseq, "__version__", "(no __version__)")
    for dist in ("fairseq-fixed", "fairseq"):
        try:
            if version(dist) == release:
                return dist, release
        except PackageNotFoundError:
            continue
    return "no distribution metadata", release


_checked = False


def check_release() -> None:
    """Warn once, in one line, when the installed fairseq is not a release the table was written for."""
    global _checked
    if _checked:
        return
    _checked = True
    dist, release = installed_fairseq()
    if (dist, release) not in SUPPORTED_RELEASES:
        logger.warning(f"fairseq {release} ({dist}) is not a release fairseq_ext supports ({_supported()}); "
                       "fairseq_ext changes fairseq at run time and may not fit this one")


def _supported() -> str:
    return ", ".join(f"{dist} {release}" for dist, release in SUPPORTED_RELEASES)
