"""fairseq tasks registered by fairseq_ext (one module per registry key)."""
