"""fairseq architectures registered by fairseq_ext (presets over one builder)."""
