"""fairseq encoders (``--bpe``) backed by Hugging Face tokenizers."""

from fairseq_ext.data.encoders import hf_tokenizer  # noqa: F401  (registers --bpe hf_tokenizer)
