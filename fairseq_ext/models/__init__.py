"""fairseq architectures registered by fairseq_ext (presets over fairseq's builders)."""

from fairseq_ext.models import bart, roberta  # noqa: F401  (--arch bart_small, roberta_small)
