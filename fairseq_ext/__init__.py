"""fairseq_ext: a fairseq ``--user-dir`` plugin for pretraining with Hugging Face tokenizers.

Importing this package registers every component with fairseq explicitly
(fairseq's own folder scan is not relied on) and makes fairseq checkpoints
loadable under torch >= 2.6 without turning off ``weights_only`` (see
:mod:`fairseq_ext.checkpoints`).

The one exception is the ``fairseq-ext`` command itself: its verbs prepare
text and data without fairseq, so it skips importing fairseq and torch (seconds
on every call); a verb that needs fairseq in-process calls :func:`register`.
"""

import os
import sys

__version__ = "0.1.0"


def register() -> None:
    """Register every fairseq_ext component with fairseq (idempotent)."""
    from fairseq_ext import checkpoints

    checkpoints.install()
    from fairseq_ext import criterions, models, tasks  # noqa: F401
    from fairseq_ext.data import encoders  # noqa: F401  (--bpe hf_tokenizer)


if os.path.basename(sys.argv[0] if sys.argv else "") != "fairseq-ext":
    register()
