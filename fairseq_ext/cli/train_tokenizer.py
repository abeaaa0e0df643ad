"""Train a Hugging Face tokenizer on text files.

Kinds and their special tokens (ids from 0), as the pretrained seeds use them:
  bpe        byte-level BPE, <s> <pad> </s> <unk> <mask>   (RoBERTa/BART; default vocab 50265)
  wordpiece  [PAD] [UNK] [CLS] [SEP] [MASK]                (BERT; default vocab 30522)
  unigram    <pad> </s> <unk> <mask>, no bos               (T5-style SentencePiece; default 32000)

The output directory loads with `AutoTokenizer.from_pretrained(DIR)` and is a
valid TOK for every other verb.

Directories are walked as `fairseq-ext code-dataset` walks source trees:
.gitignore files honoured; vendored trees (node_modules, vendor, site-packages,
.git, virtualenvs, __pycache__, ...), hidden files and symlinks skipped;
--languages/--include/--exclude select. Empty, binary and non-UTF-8 files are
skipped and counted. Lines keep their indentation, so a byte-level BPE learns
code's whitespace and gives every file back exactly when decoding.

examples:
  fairseq-ext train-tokenizer -i data/train.txt -o tok --vocab-size 32000 --test
  fairseq-ext train-tokenizer -i a.txt b.txt -o tok-bert --kind wordpiece --lowercase
  fairseq-ext train-tokenizer -i ~/src/cpython/Lib -o tok-code --languages python --vocab-size 32000
  fairseq-ext train-tokenizer -i pile/00.jsonl.zst -o tok --vocab-size 50265
  fairseq-ext train-tokenizer --dataset parquet --data-files 'fineweb/*.parquet' -o tok
"""

from __future__ import annotations

import argparse
from collections import Counter

from fairseq_ext.cli.arguments import (
    add_table_arguments,
    dataset_tables,
    positive_int,
    refuse_output_over_inputs,
    table_options,
)
from fairseq_ext.cli.code_dataset import add_selection_arguments, selection_from_args

HELP = "train a byte-level BPE, WordPiece or Unigram tokenizer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--input", nargs="+", metavar="FILE",
                   help="text files to learn from, directories (every file in them, recursively), or tables "
                   "(JSON lines, Parquet, CSV/TSV, saved datasets: the --text-key of every row)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write the tokenizer to")
    add_selection_arguments(p, "in directories, ")
    p.add_argument("--kind", choices=("bpe", "wordpiece", "unigram"), default="bpe",
                   help="tokenizer family (default: %(default)s)")
    p.add_argument("--vocab-size", type=positive_int, metavar="N",
                   help="vocabulary size, special tokens included (default: 50265 bpe, 30522 wordpiece, "
                   "32000 unigram)")
    p.add_argument("--min-frequency", type=positive_int, default=2, metavar="N",
                   help="a merge/piece must occur at least N times (bpe, wordpiece; default %(default)s)")
    p.add_argument("--lowercase", action="store_true", help="lower-case text before tokenizing (uncased model)")
    p.add_argument("--model-max-length", type=positive_int, default=512, metavar="N",
                   help="model_max_length recorded in tokenizer_config.json (default %(default)s)")
    p.add_argument("--test", action="store_true", help="print the pieces of the first 5 lines of the first file")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_table_arguments(p)


def run(args: argparse.Namespace) -> int:
    from fairseq_ext.errors import UserError
    from fairseq_ext.io_utils import atomic_output_dir
    from fairseq_ext.prep.input_files import describe
    from fairseq_ext.prep.table_inputs import text_inputs
    from fairseq_ext.prep.tables import TableStats, TableText, table_format
    from fairseq_ext.prep.tokenizer_training import first_lines, pieces_preview, text_files, train_tokenizer
    from fairseq_ext.vocab.tokenizer import special_roles

    refuse_output_over_inputs(args.output, args.input or ())
    options = table_options(args)
    tables = [t for t in text_inputs(args.input or (), options) if isinstance(t, TableText)]
    tables += dataset_tables(args, options)
    if not args.input and not tables:
        raise UserError("nothing to learn from: give -i FILE ... (or --dataset NAME)")
    others = [p for p in args.input or () if table_format(p) is None]
    selection = selection_from_args(args, require_language=False)
    skipped = Counter()
    files = text_files(others, selection, skipped) if others else []
    parts = [f"{len(files):,} files (skipped: {describe(skipped)})"] if others else []
    parts += [f"{len(tables):,} table{'s' if len(tables) != 1 else ''}"] if tables else []
    print(f"reading {' and '.join(parts)}")
    files += tables
    with atomic_output_dir(args.output, overwrite=args.overwrite) as tmp:
        tok = train_tokenizer(
            files, kind=args.kind, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
            lowercase=args.lowercase, model_max_length=args.model_max_length, show_progress=not args.quiet,
            check_files=False,
        )
        written = tok.save_pretrained(str(tmp))
    names = ", ".join(sorted({p.split("/")[-1] for p in written}))
    if tables:
        print(f"read from tables: {TableStats.total(t.table.stats for t in tables).describe()}")
    print(f"trained {args.kind} tokenizer: {len(tok):,} tokens ({special_roles(tok).describe()})")
    print(f"wrote {args.output}: {names}")
    if args.test:
        for line, pieces in zip(lines := first_lines(files[0], 5), pieces_preview(tok, lines)):
            print(f"> {line}\n  {pieces}")
    return 0
