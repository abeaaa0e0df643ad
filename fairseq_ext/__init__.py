"""fairseq_ext: a fairseq ``--user-dir`` plugin for pretraining with Hugging Face tokenizers.

Importing this package registers every component explicitly (fairseq's own
folder scan is not relied on) and makes fairseq checkpoints loadable under
torch >= 2.6 without turning off ``weights_only`` (see :mod:`checkpoints`).
"""

from fairseq_ext import checkpoints

checkpoints.install()

from fairseq_ext import (  # noqa: E402,F401
    criterions,
    data,  # noqa: E402,F401
    models,
    tasks,
)
from fairseq_ext.data import encoders  # noqa: E402,F401  (--bpe hf_tokenizer)

__version__ = "0.1.0"
