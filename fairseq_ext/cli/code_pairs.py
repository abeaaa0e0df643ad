"""Turn directories (or tables) of source files into (query, key) pairs for code search: an Arrow DatasetDict.

Files are walked, selected, skipped, deduplicated and split into train, valid
(and test) exactly as `fairseq-ext code-dataset` does with the same SRC,
selection, --split-by, --split-depth, --seed and ratios: every pair is in the
split of the file it came from, so no held-out file leaks into train. Tables of
source files (Parquet, JSON lines, a saved dataset; --content-key, --path-key,
--language-key, --project-key) are read as code-dataset reads them.

Pairs (--kind):
  docstring  Python only: every function, method and class with a docstring
             (found with the ast module) gives query = the docstring (as
             inspect.cleandoc cleans it) and key = the definition's source
             without the docstring statement, decorators kept, dedented; nor
             the docstrings of the definitions inside it (a class's methods
             are pairs of their own: their docstrings must not be in the
             class's key).
             Skipped and counted: files that do not parse, docstrings of fewer
             than --min-query-words words, definitions whose body is only the
             docstring, docstrings that share a line with code or are followed
             by another bare string (which would become the docstring).
  span       any language (the CoCoS pair): key = a span of whole lines, query =
             the file with the span replaced by the mask token. The span has
             MIN..MAX lines (--span-lines), at most half the file, its first and
             last lines not blank; its length and place are drawn from --seed
             and the file's sha256 only. --spans-per-file draws several.
             Skipped and counted: files with fewer than 2*MIN lines, files that
             already hold the mask token's text.
  both       (default) docstring pairs for Python plus spans for every language.
Pairs whose key has more than --max-key-tokens tokens are skipped and counted.

OUT holds what `datasets.load_from_disk(OUT)` loads, one row per pair with
columns path, project, language, kind ("docstring"/"span"), name (Class.method,
"" for spans), query, key (text), query_ids, key_ids (int32 tokenizer ids, no
special tokens except the one mask id in a span pair's query), query_length,
key_length; plus dict.txt, the tokenizer and code_pairs.json with every count.
A span pair's query text gives the file back with `query.replace(MASK, key)`.

examples:
  fairseq-ext code-pairs ~/src/cpython/Lib -o code-pairs --tokenizer tok/ --languages python --valid-ratio 0.05
  fairseq-ext code-pairs the-stack-python/ -o code-pairs --tokenizer tok/ --path-key max_stars_repo_path \\
      --project-key max_stars_repo_name --languages python
"""

from __future__ import annotations

import argparse

from fairseq_ext.cli.arguments import nonnegative_int, positive_int
from fairseq_ext.cli.code_dataset import add_source_arguments, counts_text, dataset_config_from_args, input_lines

HELP = ("source trees or tables -> (docstring, code) and (masked file, span) pairs for code search, split as "
        "code-dataset")


def line_range(text: str) -> tuple[int, int]:
    """``MIN,MAX`` (or one number N for N,N): a span's number of lines, 1 <= MIN <= MAX."""
    parts = text.split(",")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX with 1 <= MIN <= MAX lines, got {text!r}")
    return lo, hi


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_arguments(p)
    p.add_argument("--kind", choices=("docstring", "span", "both"), default="both",
                   help="which pairs (default %(default)s: docstring pairs for Python, spans for every language)")
    p.add_argument("--min-query-words", type=nonnegative_int, default=3, metavar="N",
                   help="skip docstrings of fewer than N words (default %(default)s)")
    p.add_argument("--max-key-tokens", type=positive_int, default=512, metavar="N",
                   help="skip pairs whose key has more than N tokens (default %(default)s)")
    p.add_argument("--mask-token", metavar="TOKEN",
                   help="the token that replaces a span in its query (default: the tokenizer's mask token, "
                   "else <extra_id_0>, as --task code_mlm chooses it)")
    p.add_argument("--span-lines", type=line_range, default=(3, 15), metavar="MIN,MAX",
                   help="lines in a span (MIN,MAX, or N for exactly N), at most half the file (default 3,15)")
    p.add_argument("--spans-per-file", type=positive_int, default=1, metavar="N",
                   help="span pairs drawn per file (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    from fairseq_ext.prep.code_pairs import CodePairsConfig, build_code_pairs

    cfg = CodePairsConfig(
        data=dataset_config_from_args(args), kind=args.kind, min_query_words=args.min_query_words,
        max_key_tokens=args.max_key_tokens, mask_token=args.mask_token, span_lines=args.span_lines,
        spans_per_file=args.spans_per_file,
    )
    stats = build_code_pairs(args.sources, args.output, cfg, overwrite=args.overwrite, progress=not args.quiet)
    print(summary(stats))
    print(f"wrote {args.output}: {', '.join(stats['files'])}")
    return 0


def summary(stats: dict) -> str:
    lines = [*input_lines(stats),
             f"files: {stats['files_seen']:,} seen, {stats['kept']:,} read; skipped: {counts_text(stats['skipped'])}; "
             f"directories not walked: {counts_text(stats['pruned_dirs'])}"]
    for kind in ("docstring", "span"):
        if kind in stats:
            s = stats[kind]
            lines.append(f"{kind} pairs: {s['pairs']:,}; files giving none: {counts_text(s['files_skipped'])}; "
                         f"pairs skipped: {counts_text(s['pairs_skipped'])}")
    for split, s in stats["splits"].items():
        kinds = ", ".join(f"{k} {n:,}" for k, n in s["pairs_per_kind"].items())
        lines.append(f"{split}: {s['pairs']:,} pairs ({kinds}) from {s['files']:,} files in {s['projects']:,} "
                     f"projects; {s['query_tokens']:,} query and {s['key_tokens']:,} key tokens")
    return "\n".join(lines)
