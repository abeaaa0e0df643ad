"""Write the tokenizer's pieces of text files, for fairseq's classic `fairseq-preprocess` step.

One line of space-separated pieces (the tokenizer's vocabulary strings) per
item that `fairseq-ext binarize` would write from the same text: lines longer
than --max-line-tokens are cut into several lines, a run of blank lines becomes
one blank line (a document separator), text spelling a special token (`<s>`,
`[CLS]`) is written as ordinary pieces. Several inputs are read in order, each
ending its last document. Then

  fairseq-preprocess --user-dir fairseq_ext --task hf_masked_lm --only-source \\
      --srcdict TOK --trainpref train.pieces --validpref valid.pieces --destdir data-bin

writes the same train.bin/.idx bytes as `fairseq-ext binarize`, with dict.txt
and the tokenizer beside them.

examples:
  fairseq-ext encode --tokenizer tok/ -i data/train.txt -o data/train.pieces
  fairseq-ext encode --tokenizer tok/ -i pile/00.jsonl.zst -o data/train.pieces --skip-bad-rows
"""

from __future__ import annotations

import argparse

from fairseq_ext.cli.arguments import add_table_arguments, dataset_tables, set_thread_count, table_options
from fairseq_ext.cli.binarize import add_encoding_arguments, summary_line

HELP = "write tokenizer pieces of text, one item a line (for fairseq-preprocess --srcdict)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, metavar="TOK",
                   help="a tokenizer.json, a directory AutoTokenizer loads, or a SentencePiece .model")
    p.add_argument("-i", "--input", nargs="+", metavar="INPUT",
                   help="text files, one sentence a line, blank line between documents; or tables (JSON lines, "
                   "Parquet, CSV/TSV, saved datasets), one row a document; read in order")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="the pieces file to write")
    add_encoding_arguments(p, max_line_help="longest item, eos included (as in `binarize`); longer lines are "
                           "cut into several lines of at most N-1 pieces (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_table_arguments(p)


def run(args: argparse.Namespace) -> int:
    set_thread_count(args.workers)
    from fairseq_ext.errors import UserError
    from fairseq_ext.prep.pieces import encode_to_pieces
    from fairseq_ext.prep.table_inputs import text_inputs

    options = table_options(args)
    inputs = text_inputs(args.input or (), options) + dataset_tables(args, options)
    if not inputs:
        raise UserError("nothing to encode: give -i FILE ... (or --dataset NAME)")
    result = encode_to_pieces(
        args.tokenizer, inputs, args.output, max_line_tokens=args.max_line_tokens,
        batch_bytes=max(1, int(args.batch_mb * (1 << 20))), overwrite=args.overwrite, progress=not args.quiet,
    )
    for counts in result["inputs"]:
        print(summary_line(counts["file"], counts))
    print(f"wrote {args.output}: {result['lines']:,} lines ({result['lines'] - result['separators']:,} of pieces, "
          f"{result['separators']:,} blank between documents), {result['pieces']:,} pieces")
    return 0
