"""What runs inside ``fairseq-train``: block, denoising and masked-LM datasets, the noising and masking
functions, Arrow-backed datasets and ``--bpe hf_tokenizer``. Preparation lives in :mod:`fairseq_ext.prep`."""
