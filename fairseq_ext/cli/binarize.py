"""Tokenize text with a Hugging Face tokenizer straight into fairseq's binary format.

Input: text with one sentence a line and a blank line between documents (what
`fairseq-ext prepare` writes). Output: a data directory that `fairseq-train`
reads directly:

  train.bin/.idx  valid.bin/.idx  test.bin/.idx   fairseq mmap datasets of tokenizer ids
  dict.txt                                       the vocabulary in tokenizer-id order
  tokenizer.json (+ tokenizer_config.json ...)   the tokenizer the ids came from
  binarize.json                                  the counts printed at the end

Every sentence ends with eos; a blank line becomes an empty item, the document
separator of fairseq's `complete_doc` mode. Lines longer than --max-line-tokens
are cut, never dropped. Text spelling a special token (`<s>`, `[CLS]`) stays text.

With --shards N, DIR holds N such directories, DIR/shard0 ... DIR/shard{N-1}:
every training document goes whole into one of them (the one holding the
fewest tokens so far, so the shards' sizes are balanced and each is a sample
of the whole text); validation and test go into shard0 only. Train on
DIR/shard0:DIR/shard1:...: epoch k reads shard (k-1) mod N, validation reads
shard0. With --num-shards N --shard-index K, one run writes DIR/shardK alone, the
K-th of N disjoint parts of the training documents (a stable hash of each
document's number; whole files when --train is a directory of at least N
table files): N tasks of a Slurm array (scripts/slurm/binarize_array.sbatch)
write together what --shards N writes, each document once.

Tables are read too, one row a document (its lines as the lines of text, a
document boundary after it): JSON lines (.jsonl, .jsonl.zst, ...), Parquet,
CSV/TSV, a datasets save_to_disk directory (--train DIR --valid DIR read its
train and validation splits), or --dataset NAME streamed offline.

examples:
  fairseq-ext binarize --tokenizer tok/ --train data/train.txt --valid data/valid.txt -o data-bin
  fairseq-ext binarize --tokenizer tok/ --train pile/train.jsonl.zst --valid pile/val.jsonl.zst -o data-bin
  fairseq-ext binarize --tokenizer tok/ --train fineweb/ --text-key text -o data-bin --skip-bad-rows
  fairseq-ext binarize --tokenizer tok/ --dataset parquet --data-files 'c4/*.parquet' -o data-bin
  fairseq-ext binarize --tokenizer tok/ --train data/train.txt --valid data/valid.txt -o data-bin --shards 4
  fairseq-ext binarize --tokenizer tok/ --train fineweb/ -o data-bin --num-shards 64 --shard-index 7
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from fairseq_ext.cli.arguments import (
    add_table_arguments,
    int_at_least,
    nonnegative_int,
    positive_float,
    positive_int,
    refuse_output_over_inputs,
    set_thread_count,
    table_options,
)

HELP = "tokenize text files into a fairseq data directory (ids == tokenizer ids)"
SPLITS = ("train", "valid", "test")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, metavar="TOK",
                   help="a tokenizer.json, a directory AutoTokenizer loads, or a SentencePiece .model")
    p.add_argument("--train", metavar="FILE",
                   help="training text, one sentence a line; or a table (JSON lines, Parquet, CSV, a saved "
                   "dataset), one row a document")
    p.add_argument("--valid", metavar="FILE", help="validation text or table (optional)")
    p.add_argument("--test", metavar="FILE", help="test text or table (optional)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="data directory to create")
    add_encoding_arguments(p, max_line_help="longest item written, eos included; longer lines are cut into "
                           "several items (default %(default)s: fits --tokens-per-sample 512 with bos and eos)")
    p.add_argument("--shards", type=positive_int, default=1, metavar="N",
                   help="write N data directories DIR/shard0 ... with the training documents dealt out whole "
                   "(validation and test in shard0); default %(default)s: DIR itself, no shards")
    p.add_argument("--num-shards", type=positive_int, metavar="N",
                   help="with --shard-index: write only DIR/shardK, one of N disjoint parts of the training data "
                   "(one task of an array job; the N tasks together write what --shards N writes), e.g. "
                   "--num-shards 64 --shard-index $SLURM_ARRAY_TASK_ID")
    p.add_argument("--shard-index", type=nonnegative_int, metavar="K",
                   help="with --num-shards: which part this run writes, 0 to N-1 (DIR/shardK; validation and test "
                   "in shard 0 only), e.g. --shard-index 0")
    p.add_argument("--overwrite", action="store_true", help="replace DIR (with --shard-index: DIR/shardK) if it "
                   "exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_table_arguments(p)
    p.add_argument("--valid-split", metavar="NAME",
                   help="validation from this split of --dataset, or of the saved DatasetDict given to --valid "
                   "(default there: its validation, valid or dev split); --split picks --train's")
    p.add_argument("--test-split", metavar="NAME",
                   help="test data from this split of --dataset, or of the saved DatasetDict given to --test "
                   "(default there: its test split)")


def add_encoding_arguments(p: argparse.ArgumentParser, max_line_help: str) -> None:
    """--workers, --max-line-tokens, --batch-mb: how text is encoded, shared with `fairseq-ext encode`."""
    p.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, metavar="N",
                   help="threads for the tokenizer's batch encoding (default: all %(default)s cores); "
                   "the output is identical for any N")
    p.add_argument("--max-line-tokens", type=int_at_least(2, "at least 2 (one token and eos)"), default=510,
                   metavar="N", help=max_line_help)
    p.add_argument("--batch-mb", type=positive_float, default=4.0, metavar="MB",
                   help="text read and encoded per batch; bounds memory (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    set_thread_count(args.workers)
    from fairseq_ext.prep.binarize_dir import binarize_directory

    paths = {split: getattr(args, split) for split in SPLITS if getattr(args, split)}
    refuse_output_over_inputs(args.output, paths.values())
    part = shard_part(args)
    files = split_inputs(args, paths)
    stats = binarize_directory(
        args.tokenizer, files, args.output,
        max_line_tokens=args.max_line_tokens, batch_bytes=max(1, int(args.batch_mb * (1 << 20))),
        overwrite=args.overwrite, progress=not args.quiet, shards=args.shards, part=part,
    )
    if part is not None:
        print(part.describe())
    for split, s in stats["splits"].items():
        print(summary_line(split, s))
    if part is not None:
        print(f"wrote {part.directory(args.output)}: {', '.join(stats['files'])}")
        print(f"data path for fairseq-train: {stats['data_path']}")
        return 0
    if args.shards == 1:
        print(f"wrote {args.output}: {', '.join(stats['files'])}")
        return 0
    total = max(1, stats["splits"]["train"]["tokens"])
    for shard in stats["shards"]:
        print(f"  {shard['dir']}: {shard['documents']:,} documents, {shard['items']:,} items, "
              f"{shard['tokens']:,} tokens ({100 * shard['tokens'] / total:.1f}%)")
    print_balance(stats)
    others = tuple(f"{split}." for split in stats["splits"] if split != "train")
    in_every = [name for name in stats["shard_files"] if not name.startswith(others)]
    where = f" ({', '.join(o.rstrip('.') for o in others)} in shard0 only)" if others else ""
    print(f"wrote {args.output}: {', '.join(stats['files'])}; each shard holds {', '.join(in_every)}{where}")
    print(f"data path for fairseq-train: {stats['data_path']}")
    return 0


def shard_part(args: argparse.Namespace):
    """--num-shards N --shard-index K as a :class:`~fairseq_ext.prep.shard_parts.ShardPart`; None without them."""
    from fairseq_ext.errors import UserError
    from fairseq_ext.prep.shard_parts import ShardPart

    if (args.num_shards is None) != (args.shard_index is None):
        raise UserError("--num-shards N and --shard-index K go together: this run writes DIR/shardK, part K of N")
    if args.num_shards is None:
        return None
    if args.shards != 1:
        raise UserError(f"--shards {args.shards} writes every shard in one run, --num-shards {args.num_shards} "
                        f"--shard-index {args.shard_index} one of them (a task of an array job): give one or the other")
    return ShardPart(args.num_shards, args.shard_index)


# a DatasetDict given to --valid without --split: the split it reads, the first of these it has
SPLIT_NAMES = {"train": ("train",), "valid": ("validation", "valid", "dev"), "test": ("test",)}


def split_inputs(args: argparse.Namespace, paths: dict) -> dict:
    """{split: a text file's path, or a table's text} from --train/--valid/--test and --dataset.

    --split picks the training split (of --dataset, or of a saved DatasetDict given to --train); --valid-split
    and --test-split pick the others' (default: validation/valid/dev and test, when a DatasetDict has them).
    """
    from fairseq_ext.errors import UserError
    from fairseq_ext.prep.table_inputs import dataset_input, text_inputs
    from fairseq_ext.prep.tables import TableStats, TableText

    options = table_options(args)  # checks the table flags first
    if args.dataset is None and not paths.get("train"):
        raise UserError("nothing to binarize: give --train FILE (or --dataset NAME)")
    if args.dataset is not None and paths.get("train"):
        raise UserError(f"--dataset {args.dataset} is the training data: give it or --train {paths['train']}, not both")
    files = {}
    for split in SPLITS:
        chosen = args.split if split == "train" else getattr(args, f"{split}_split")
        if split in paths:
            split_options = replace(options, split=chosen, split_candidates=SPLIT_NAMES[split])
            files[split] = text_inputs([paths[split]], split_options, TableStats())[0]
            if split != "train" and chosen and not hasattr(files[split], "table"):
                raise UserError(f"--{split}-split {chosen}: --{split} {paths[split]} is not a saved DatasetDict")
        elif args.dataset is not None and (split == "train" or chosen):
            table = dataset_input(args.dataset, {"text": args.text_key}, replace(options, split=chosen),
                                  TableStats(), data_files=args.data_files, config=args.dataset_config)
            files[split] = TableText(table)
        elif chosen:
            raise UserError(f"--{split}-split {chosen}: applies to --dataset, or to a saved DatasetDict given to "
                            f"--{split}")
    return files


def print_balance(stats: dict) -> None:
    """Explain shards of unequal size: documents are kept whole, so one large document makes its shard large."""
    tokens = [shard["tokens"] for shard in stats["shards"]]
    mean = sum(tokens) / len(tokens)
    if max(tokens) > 1.25 * mean:
        largest = stats["splits"]["train"]["extra"]["largest_document"]
        print(f"note: the shards are unbalanced (largest {max(tokens):,} tokens, smallest {min(tokens):,}): "
              f"documents are kept whole and the largest has {largest:,} tokens ({100 * largest / sum(tokens):.0f}% "
              "of the text); fewer shards, or shorter documents, balance them")


def summary_line(split: str, s: dict) -> str:
    extras = []
    if s["lines_split"]:
        extras.append(f"{s['lines_split']:,} long lines cut")
    if s["special_text_fixed"]:
        extras.append(f"{s['special_text_fixed']:,} lines with special-token text re-encoded")
    if s["empty_after_tokenization"]:
        extras.append(f"{s['empty_after_tokenization']:,} lines empty after tokenization (dropped)")
    extra = ("; " + ", ".join(extras)) if extras else ""
    rows = s.get("extra", {}).get("rows")
    if rows is not None:  # a table: rows in, and rows skipped by --skip-bad-rows, by reason
        from fairseq_ext.prep.tables import TableStats

        read = TableStats(rows=rows)
        read.bad.update(s["extra"]["rows_skipped"])
        return (
            f"{split}: {read.describe()} -> {s['sentences']:,} lines in {s['documents']:,} documents, "
            f"{s['items']:,} items, {s['tokens']:,} tokens (eos included), unk {100 * s['unk_rate']:.3f}%{extra}; "
            f"{s['seconds']:.1f} s, {s['tokens_per_second']:,.0f} tokens/s"
        )
    return (
        f"{split}: {s['lines_in']:,} lines -> {s['sentences']:,} sentences in {s['documents']:,} documents, "
        f"{s['items']:,} items, {s['tokens']:,} tokens (eos included), unk {100 * s['unk_rate']:.3f}%{extra}; "
        f"{s['seconds']:.1f} s, {s['tokens_per_second']:,.0f} tokens/s"
    )


