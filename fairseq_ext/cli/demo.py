"""Run a whole recipe on a built-in corpus (nothing is downloaded).

--recipe bart (default): English prose from the docstrings of the Python
standard library on this machine:

  1. write the corpus             DIR/raw/           one file per stdlib module
  2. fairseq-ext prepare          DIR/text/          sentences, documents, train/valid split
  3. fairseq-ext train-tokenizer  DIR/tokenizer/     byte-level BPE, BART/RoBERTa specials
  4. fairseq-ext binarize         DIR/data-bin/      ids == tokenizer ids, dict.txt, tokenizer.json
  5. fairseq-train --user-dir fairseq_ext --task hf_denoising --arch bart_small (shrunk)
                                  DIR/checkpoints/
  6. fairseq-ext export-hf        DIR/hf-model/      BartForConditionalGeneration + tokenizer, parity checked
  7. transformers                 load DIR/hf-model; fill a <mask> in 40 held-out sentences

and ends with a summary: paths, validation loss and accuracy, the parity figure,
how much of each held-out sentence the infill keeps, and three example infills.
DIR/train.log is the training log, DIR/curves.png the loss and accuracy curves,
DIR/demo.json every figure. Sizes are shrunk so it runs in about 8 minutes on 2
CPU cores.

--recipe code: whole standard-library packages (source code) ->
train-tokenizer on the tree -> code-dataset (Arrow, split by package) ->
fairseq-train --task code_mlm --arch t5_encoder_small (shrunk; every occurrence
of chosen identifiers masked) -> export-hf (T5EncoderModel, parity checked) ->
the model fills masked identifiers in held-out packages, and transformers'
T5EncoderModel gives the same hidden states -> code-pairs (docstring, code),
split as code-dataset -> fairseq-train --task code_contrastive --criterion
info_nce from the code MLM checkpoint -> held-out MRR against chance, and a
natural-language search (--query TEXT, or three built-in queries) over every
definition of the corpus, the top hits printed. About 5 minutes on 2 CPU cores.

examples:
  fairseq-ext demo -o demo-out
  fairseq-ext demo --recipe code -o demo-code
  fairseq-ext demo --recipe code -o demo-code --query "parse an email message from a string"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fairseq_ext.cli.arguments import int_at_least, positive_float, positive_int

HELP = "run a whole recipe (bart or code) on a built-in corpus (no download)"
DEFAULTS = {"bart": {"corpus_mb": 2.0, "max_update": 1300}, "code": {"corpus_mb": 3.0, "max_update": 1000}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", choices=sorted(DEFAULTS), default="bart",
                   help="bart: BART on stdlib docstrings; code: a T5 encoder on stdlib source code "
                   "(default %(default)s)")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="working directory (default demo-out, demo-code for --recipe code)")
    p.add_argument("--corpus-mb", type=positive_float, default=None, metavar="MB",
                   help="how much of the stdlib to use (default 2 MB of prose, all of it is about 1.3 MB; "
                   "3 MB of code for --recipe code, all packages are about 6 MB)")
    p.add_argument("--vocab-size", type=int_at_least(261, "at least 261 (5 specials + 256 bytes)"), default=4000,
                   metavar="N", help="tokenizer size (default %(default)s)")
    p.add_argument("--max-update", type=positive_int, default=None, metavar="N",
                   help="training updates (default 1300, 1000 for --recipe code)")
    p.add_argument("--contrastive-updates", type=positive_int, default=None, metavar="N",
                   help="--recipe code: updates of its contrastive stage (default 100)")
    p.add_argument("--query", action="append", default=None, metavar="TEXT",
                   help="--recipe code: a natural-language query to search the corpus's code with (repeat for "
                   "more; default: three built-in ones)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")


def run(args: argparse.Namespace) -> int:
    for key, value in DEFAULTS[args.recipe].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.output is None:
        args.output = "demo-code" if args.recipe == "code" else "demo-out"
    if args.recipe != "code" and (args.query is not None or args.contrastive_updates is not None):
        from fairseq_ext.errors import UserError

        raise UserError("--query and --contrastive-updates are options of --recipe code")
    if args.recipe == "code":
        from fairseq_ext.recipes import code

        return code.run(args, Path(args.output))
    from fairseq_ext.recipes import bart

    return bart.run(args)
