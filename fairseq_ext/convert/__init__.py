"""Hugging Face <-> fairseq weight conversion, one module per model family."""
