"""The only code that changes fairseq at run time: the table :data:`fairseq_ext.runtime.patches.PATCHES`.

:func:`install` applies it once, in a stated order; nothing outside this package assigns to a fairseq
attribute (``tests/runtime/test_patch_table.py`` checks it). This module stays importable without torch
or fairseq: the package imports :mod:`fairseq_ext.runtime.torchaudio` before anything else.
"""

from __future__ import annotations

from collections.abc import Callable


def install(training: bool = True, components: Callable[[], None] | None = None) -> None:
    """Apply fairseq_ext's changes to fairseq (idempotent: a second call changes nothing). In this order:

    1. the entries whose target is not fairseq (``sys.excepthook``, ``sys.modules['torchaudio']``), which
       must be in place before fairseq is imported (it imports transformers, which imports torchaudio);
    2. the release check: one warning line when the installed fairseq is not a supported release;
    3. every other target looked up, a missing one a one-line UserError naming it, before any is patched;
    4. ``components()``: fairseq_ext registers its tasks, criteria, models and ``--bpe`` (the registry
       entries below alias architectures that its models register);
    5. the fairseq entries, in the table's order.

    ``training``: also the entries that only a process running fairseq's training loop wants (save and
    exit 0 on SIGUSR1/SIGTERM, nothing to train at ``--max-update``); the ``fairseq-ext`` verbs pass False.
    """
    from fairseq_ext.runtime import patching
    from fairseq_ext.runtime.patches import PATCHES

    chosen = [p for p in PATCHES if patching.applies(p, training)]
    for patch in chosen:
        if not patch.in_fairseq:
            for slot in patching.slots(patch):
                patching.apply(slot)
    patching.check_release()
    slots = [slot for patch in chosen if patch.in_fairseq for slot in patching.slots(patch)]
    if components is not None:
        components()
    for slot in slots:
        patching.apply(slot)
