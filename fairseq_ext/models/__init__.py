"""fairseq architectures registered by fairseq_ext (presets over fairseq's builders and our own)."""

from fairseq_ext.models import bart, bert, roberta, t5  # noqa: F401  (each registers its --arch)
