"""fairseq criterions registered by fairseq_ext (one module per registry key)."""

from fairseq_ext.criterions import cross_entropy_with_accuracy, info_nce, masked_lm_with_accuracy  # noqa: F401
