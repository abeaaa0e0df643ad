"""fairseq tasks registered by fairseq_ext (one module per registry key)."""

from fairseq_ext.tasks import code_contrastive, code_mlm, hf_denoising, hf_masked_lm  # noqa: F401
