"""fairseq_ext: a fairseq ``--user-dir`` plugin for pretraining with Hugging Face tokenizers.

Importing this package registers every component with fairseq explicitly
(fairseq's own folder scan is not relied on) and applies the plugin's changes to
fairseq at run time, all of them listed in one table (:mod:`fairseq_ext.runtime.patches`):
checkpoints that load under torch >= 2.6 without turning off ``weights_only``,
atomic checkpoint writes with fallback, several ranks on CPU and CUDA, ``--bf16``
off TPUs, and in a process that runs fairseq's training loop, SIGUSR1/SIGTERM that
save a checkpoint and exit 0.

The one exception is the ``fairseq-ext`` command itself: its verbs prepare
text and data without fairseq, so it skips importing fairseq and torch (seconds
on every call); a verb that needs fairseq in-process calls :func:`register`.

Where things go (one room per extension point; arrows point downwards only, as the import-linter
contracts in ``pyproject.toml`` require; docs/development.md says more):

=====================  ===========================================================
``cli/``               a ``fairseq-ext`` verb: one thin module each (parser + call)
``recipes/``           the demos: prep -> train -> export -> show
``retrieval/``         BM25, embedding models, ``eval-retrieval``'s evaluation
``convert/``           HF <-> fairseq: ``registry.py`` (the table), ``families/``
``prep/``              everything before training: text, tokenizers, binarize, code
``tasks/``             a registered task per module (``base.py`` shared)
``criterions/``        a registered criterion per module (+ ranking metrics)
``data/``, ``models/`` what runs inside ``fairseq-train``; ``models/t5/``
``runtime/``           the ONLY code that changes fairseq at run time (the table)
``vocab/``             the invariant: tokenizer id == dictionary index
``serialization.py``   safe checkpoint loading (allow-list); a leaf
``io_utils.py``        whole-or-nothing outputs; ``errors.py`` one-line errors
=====================  ===========================================================
"""

import os
import sys

from fairseq_ext.runtime.torchaudio import ignore_mismatched_torchaudio

__version__ = "0.1.0"

_COMMAND = os.path.basename(sys.argv[0] if sys.argv else "") == "fairseq-ext"


def register() -> None:
    """Apply the runtime changes to fairseq and register every fairseq_ext component (idempotent)."""
    from fairseq_ext import runtime

    runtime.install(training=not _COMMAND, components=_register_components)


def _register_components() -> None:
    """fairseq_ext's tasks, criteria, models and ``--bpe hf_tokenizer``, registered by importing them."""
    from fairseq_ext import criterions, models, tasks  # noqa: F401
    from fairseq_ext.data import encoders  # noqa: F401


ignore_mismatched_torchaudio()
if not _COMMAND:
    register()
