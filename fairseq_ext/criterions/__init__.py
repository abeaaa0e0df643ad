"""fairseq criterions registered by fairseq_ext (one module per registry key)."""
