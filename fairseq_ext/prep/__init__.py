"""Everything that runs before training: text cleaning, tweets, tokenizer training, binarization,
code datasets and the built-in corpora. Nothing here is imported by ``fairseq-train``."""
