"""fairseq architectures registered by fairseq_ext (presets over fairseq's builders)."""

from fairseq_ext.models import bart, bert, roberta  # noqa: F401  (--arch bart_small, hf_bert, roberta_small)
