"""Model flags that make each architecture tiny, for runs of a few seconds on CPU."""

from __future__ import annotations

T5 = ["--arch", "t5_encoder_small", "--encoder-layers", "2", "--encoder-embed-dim", "32", "--kv-dim", "8",
      "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4", "--feed-forward-proj", "gated-gelu"]


ENCODER = ["--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
           "--encoder-attention-heads", "2"]


BART = [*ENCODER, "--decoder-layers", "1", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64",
        "--decoder-attention-heads", "2", "--share-all-embeddings", "--max-source-positions", "64",
        "--max-target-positions", "64"]


RUNS = {
    "hf_masked_lm": ["--arch", "roberta_small", *ENCODER, "--criterion", "masked_lm_with_accuracy"],
    "hf_denoising": ["--arch", "bart_small", *BART, "--criterion", "cross_entropy_with_accuracy"],
    "code_mlm": [*T5, "--criterion", "masked_lm_with_accuracy", "--mask-unit", "identifier"],
}
