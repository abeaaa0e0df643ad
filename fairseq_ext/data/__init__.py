"""Data: text preparation, tokenizer training, binarization (and, later, noising)."""
