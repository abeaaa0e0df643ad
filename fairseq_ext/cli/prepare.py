"""Clean raw text and split it into train/valid(/test) files with one sentence a
line and a blank line between documents (the input `fairseq-ext binarize` expects).

Cleaning: invalid UTF-8 is replaced (and such sentences dropped), NUL bytes and
control characters removed, CRLF turned into LF, empty and binary files skipped;
every repair is counted. Prose is split into sentences; a sentence is kept when
it looks decent (word count, share of letters) and is not an exact duplicate.
Documents go whole into one split, chosen by --seed: the same input and seed
always give the same split. Counts go to the screen and DIR/prepare.json.

examples:
  fairseq-ext prepare books/ -o data --doc-sep file --valid-ratio 0.01
  fairseq-ext prepare pile/00.jsonl.zst -o data --skip-bad-rows
  fairseq-ext prepare fineweb/ -o data --text-key text            # a directory of Parquet files
  fairseq-ext prepare web1.txt web2.txt -o data --min-words 5 --test-ratio 0.01
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from fairseq_ext.cli.arguments import (
    add_table_arguments,
    dataset_tables,
    fraction,
    nonnegative_int,
    ratio,
    refuse_output_over_inputs,
    table_options,
)

HELP = "clean raw text and split it into sentence-per-line train/valid/test files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="text files, directories searched recursively, or tables (JSON lines, Parquet, CSV/TSV, "
                   "saved datasets: one row a document, its blank lines separating paragraphs)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for train.txt, valid.txt, ...")
    p.add_argument("--valid-ratio", type=ratio, default=0.01, metavar="R",
                   help="share of documents for valid.txt (default %(default)s; at least one document when > 0)")
    p.add_argument("--test-ratio", type=ratio, default=0.0, metavar="R",
                   help="share of documents for test.txt (default %(default)s: no test file)")
    p.add_argument("--seed", type=nonnegative_int, default=1, metavar="S",
                   help="seed of the document split (default %(default)s)")
    p.add_argument("--doc-sep", choices=("blank-line", "file", "line"), default="blank-line",
                   help="what separates documents in the input: a blank line (default), the end of a file "
                   "(blank lines then separate paragraphs), or every line (one document a line)")
    p.add_argument("--normalize", choices=("none", "tweets"), default="none",
                   help="domain-specific normalization: 'tweets' turns user mentions and URLs into the filler "
                   "words twitteruser / twitterurl (runs collapsed), emoji into their names, and unescapes "
                   "HTML entities (default %(default)s)")
    p.add_argument("--remove-symbols", action="store_true",
                   help="with --normalize tweets: drop symbol characters (Unicode categories S*)")
    p.add_argument("--lowercase", choices=("auto", "yes", "no"), default="auto",
                   help="with --normalize tweets: lower-case the text; 'auto' (default) does so only when "
                   "--tokenizer is an uncased tokenizer")
    p.add_argument("--tokenizer", metavar="TOK",
                   help="the tokenizer the text is prepared for (decides --lowercase auto)")
    p.add_argument("--glob", default="*", metavar="PATTERN",
                   help="only files matching PATTERN inside directories (default: all files)")
    p.add_argument("--no-sentence-split", action="store_true",
                   help="keep input lines as they are instead of splitting paragraphs into sentences")
    p.add_argument("--min-words", type=nonnegative_int, default=3, metavar="N",
                   help="drop sentences with fewer words (0 disables; default %(default)s)")
    p.add_argument("--max-words", type=nonnegative_int, default=250, metavar="N",
                   help="drop sentences with more words (0 disables; default %(default)s)")
    p.add_argument("--min-letter-ratio", type=fraction, default=0.5, metavar="R",
                   help="drop sentences whose visible characters are less than R letters (0 disables; "
                   "default %(default)s)")
    p.add_argument("--no-dedupe", action="store_true", help="keep exact duplicate sentences")
    p.add_argument("--no-filter", action="store_true",
                   help="keep every sentence (no length, letter or duplicate filtering)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_table_arguments(p)


def run(args: argparse.Namespace) -> int:
    from fairseq_ext.errors import UserError
    from fairseq_ext.prep.prepare import prepare_corpus
    from fairseq_ext.prep.text_prep import SentenceFilter

    refuse_output_over_inputs(args.output, args.inputs)
    options = replace(table_options(args), allow_nul=True)  # prepare repairs NUL characters (counted)
    tables = dataset_tables(args, options)
    if not args.inputs and not tables:
        raise UserError("nothing to prepare: give INPUT files or directories (or --dataset NAME)")
    if args.min_words and args.max_words and args.min_words > args.max_words:
        raise UserError(f"--min-words {args.min_words} > --max-words {args.max_words}: every sentence would be dropped")
    if args.tokenizer and not Path(args.tokenizer).exists():  # loaded only when it decides --lowercase auto
        raise UserError(f"{args.tokenizer}: no such tokenizer file or directory (--tokenizer)")
    flt = None if args.no_filter else SentenceFilter(
        min_words=args.min_words, max_words=args.max_words,
        min_letter_ratio=args.min_letter_ratio, dedupe=not args.no_dedupe,
    )
    normalize = tweet_normalizer(args) if args.normalize == "tweets" else None
    s = prepare_corpus(
        args.inputs, args.output, valid_ratio=args.valid_ratio, test_ratio=args.test_ratio, seed=args.seed,
        doc_sep=args.doc_sep, sentence_filter=flt, split_sentences=not args.no_sentence_split,
        pattern=args.glob, overwrite=args.overwrite, progress=not args.quiet, normalize=normalize,
        table_options=options, tables=tables,
    )
    print(summary(s))
    print(f"wrote {args.output}: " + ", ".join(f"{n}.txt" for n in s["splits"]) + ", prepare.json")
    return 0


def tweet_normalizer(args: argparse.Namespace):
    from functools import partial

    from fairseq_ext.prep.tweets import normalize_tweet, tokenizer_is_uncased

    lowercase = args.lowercase == "yes"
    if args.lowercase == "auto" and args.tokenizer:
        from fairseq_ext.vocab.tokenizer import load_tokenizer

        lowercase = tokenizer_is_uncased(load_tokenizer(args.tokenizer))
    print(f"normalize: tweets (lowercase {'yes' if lowercase else 'no'}, "
          f"symbols {'removed' if args.remove_symbols else 'kept'})")
    return partial(normalize_tweet, remove_symbols=args.remove_symbols, lowercase=lowercase)


def summary(s: dict) -> str:
    skipped = ", ".join(f"{n} {why}" for why, n in s["files_skipped"].items()) or "none"
    repairs = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in s["repairs"].items() if v) or "none"
    dropped = ", ".join(f"{v:,} {k}" for k, v in sorted(s["sentences_dropped"].items())) or "none"
    if s.get("tables"):
        from fairseq_ext.prep.tables import TableStats

        read = TableStats(rows=s["tables"]["rows"])
        read.bad.update(s["tables"]["rows_skipped"])
        skipped += f"; table rows: {read.describe()}"
    splits = "; ".join(f"{n} {v['documents']:,} documents / {v['sentences']:,} sentences"
                       for n, v in s["splits"].items())
    return (
        f"read {s['files_read']:,} files ({s['bytes']:,} bytes, {s['lines']:,} lines); skipped files: {skipped}\n"
        f"repairs: {repairs}\n"
        f"{s['documents_in']:,} documents, {s['sentences_found']:,} sentences found -> "
        f"{s['sentences_kept']:,} kept; dropped: {dropped}; "
        f"{s['documents_emptied_by_filtering']:,} documents left empty\n"
        f"{splits}"
    )
