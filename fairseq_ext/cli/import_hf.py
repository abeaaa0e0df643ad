"""Convert a Hugging Face BART, BERT, RoBERTa or T5 directory into a fairseq checkpoint to continue pretraining,
or a sentence-transformers directory (or a bare encoder given --pooling) into a contrastive (code search) one.

Writes DIR/checkpoint.pt, the tokenizer (tokenizer.json ...), dict.txt,
DIR/model_args.txt (the fairseq-train flags, --arch and sizes, that rebuild
this model for --restore-file or --finetune-from-model) and
DIR/hydra_overrides.txt (the same for fairseq-hydra-train). The original
vocabulary is kept (index == tokenizer id). Both models run on the same
batches first; nothing is written if the outputs differ by more than 1e-4.

BART -> fairseq `bart` (task hf_denoising). RoBERTa -> fairseq `roberta`, or
`hf_bert` when it has token-type embeddings or a layer-norm epsilon fairseq's
RoBERTa lacks; BERT -> `hf_bert` (task hf_masked_lm). A BERT/RoBERTa directory
without an MLM head (a bare BertModel/RobertaModel) imports with a freshly
initialised head (seeded by --seed); weights the MLM model does not use
(pooler, next-sentence head) are dropped. Both are reported.

T5 -> fairseq `t5_encoder`: a T5EncoderModel directory, or a
T5ForConditionalGeneration one whose encoder is kept (its decoder and lm_head
are dropped, and reported); the masked-LM head is new (seeded by --seed). A T5
SentencePiece tokenizer without bos is kept as it is.

A sentence-transformers directory (modules.json: Transformer, Pooling cls/mean/max, an optional Dense
without bias or activation, an optional Normalize) -> the family's contrastive model (t5_encoder, or
hf_bert for BERT and RoBERTa) with that pooling, --pooler-dim and --pooler-normalize, for --task
code_contrastive --criterion info_nce (model_args.txt holds those too, with the similarity the
directory scores by). Its embeddings must equal SentenceTransformer(DIR).encode() within 1e-4 before
anything is written. A bare encoder given --pooling first|mean|max imports the same way.

example:
  fairseq-ext import-hf my-hf-bert -o bert-start
  fairseq-ext import-hf all-MiniLM-L6-v2 -o minilm-start    # a sentence-transformers directory
  fairseq-ext binarize --tokenizer bert-start --train tweets.txt --valid tweets-valid.txt -o data-bin
  fairseq-train data-bin --user-dir "$(fairseq-ext user-dir)" --task hf_masked_lm \\
      --criterion masked_lm_with_accuracy $(cat bert-start/model_args.txt) --restore-file bert-start/checkpoint.pt \\
      --reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler ...
"""

from __future__ import annotations

import argparse

from fairseq_ext.cli.arguments import positive_int, refuse_output_over_inputs

HELP = ("convert a transformers BART/BERT/RoBERTa/T5 directory to a fairseq checkpoint, or a sentence-transformers "
        "one (or --pooling) to a code_contrastive one (parity checked)")
RESETS = "--reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler"  # a new run from its weights


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("hf_dir", metavar="HF_DIR", help="directory with config.json, weights and tokenizer")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write")
    p.add_argument("--pad-vocab-to-multiple", type=positive_int, default=8, metavar="N",
                   help="embedding rows padded to a multiple of N, as the tasks do (default %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed for weights the directory lacks (a bare encoder's MLM head; default %(default)s)")
    p.add_argument("--pooling", choices=("first", "mean", "max"),
                   help="a bare encoder imported for contrastive training (code_contrastive) with this pooling; "
                   "default: the masked-LM import (a sentence-transformers directory pools as it says)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")


def run(args: argparse.Namespace) -> int:
    import fairseq_ext
    from fairseq_ext.io_utils import check_output_dir

    check_output_dir(args.output, args.overwrite)  # before minutes of conversion, not after
    refuse_output_over_inputs(args.output, [args.hf_dir])
    fairseq_ext.register()
    from transformers.utils import logging as hf_logging

    from fairseq_ext.convert.import_hf import import_hf
    from fairseq_ext.convert.registry import FAMILIES

    hf_logging.set_verbosity_error()  # its load report is summarised below
    hf_logging.disable_progress_bar()
    r = import_hf(args.hf_dir, args.output, pad_to_multiple=args.pad_vocab_to_multiple, seed=args.seed,
                  overwrite=args.overwrite, pooling=args.pooling)
    print(f"parity: max |{FAMILIES[r.family].parity_measure} difference| transformers vs fairseq = "
          f"{r.max_abs_diff:.2e}")
    print(f"imported {r.family} as fairseq {r.fairseq_arch}: {r.layers} layers, d_model {r.d_model}, "
          f"{r.vocab:,} tokens ({r.rows:,} embedding rows)")
    e = r.embedding
    if e is not None:
        print(f"embedding: {', '.join(e.modules)}; {e.similarity} similarity; max |embedding difference| "
              f"sentence-transformers vs fairseq = {e.max_abs_diff:.2e} (up to {e.max_tokens} tokens a side)")
        if not e.tokens_agree:
            print(f"note: the tokenizer's own special tokens differ from what fairseq's pairs feed; compared on "
                  f"fairseq's ids only: {e.token_example}")
    if r.fresh_head:
        unused = " (unused and frozen by code_contrastive)" if e is not None else ""
        print(f"note: {args.hf_dir} has no MLM head (a bare encoder); the head is freshly initialised "
              f"(seed {args.seed}){unused}: {', '.join(r.fresh_head)}")
    if r.dropped:
        print(f"note: dropped weights the masked-LM model does not use: {', '.join(r.dropped)}")
    print(f"wrote {args.output}: checkpoint.pt, dict.txt, tokenizer files, model_args.txt, hydra_overrides.txt")
    data = "PAIRS" if e is not None else "DATA"  # pairs: fairseq-ext code-pairs --tokenizer OUT
    print(f"continue with: fairseq-train {data} --user-dir \"$(fairseq-ext user-dir)\" "
          f"$(cat {args.output}/model_args.txt) --restore-file {args.output}/checkpoint.pt {RESETS} ...")
    return 0
