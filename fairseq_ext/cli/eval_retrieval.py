"""Measure code search on held-out pairs: the model beside BM25 and chance, on the whole pool.

MODEL is a fairseq checkpoint of --task code_contrastive, of any family
(t5_encoder, hf_bert), trained or made by `fairseq-ext import-hf` (queries
embedded by the query tower, keys by the key tower, compared as its info_nce
criterion compared them: cosine or dot), or any sentence-transformers
directory, an `export-hf --format sentence-transformers` one or another (one
tower for both sides, its own similarity). Both are given the same token ids,
built from the pairs directory's tokenizer as training and validation build
them; the tokenizer must be the one MODEL was made with.

The pool is one split of a `fairseq-ext code-pairs` directory (--kinds, --limit
narrow it): every query is ranked against EVERY key of the pool, ties counted
as a random order of the tied keys. Printed: MRR, Recall@1 and Recall@10 for a
random ranking (expected), BM25 over the text (bm25s; identifiers split at _ and
camelCase, lowercased, no stemming) and the model.

--rename adds an AdvTest-style pool: the docstring pairs whose key (a Python
definition) parses, with the function, parameter and local variable names
replaced by placeholders (func, arg_0, var_0, ...; found with ast, written back
with ast.unparse), where lexical matching fails. Span pairs are fragments and
are left out of it. Its table also scores the original keys of the same pairs.

example:
  fairseq-ext eval-retrieval checkpoints/checkpoint_best.pt --pairs code-pairs --rename --json eval.json
"""

from __future__ import annotations

import argparse

from fairseq_ext.cli.arguments import int_at_least, positive_int

HELP = "MRR and Recall@k of a contrastive model beside BM25 on a held-out pool of pairs (--rename: renamed code)"
COLUMNS = (("MRR", "mrr"), ("R@1", "recall@1"), ("R@10", "recall@10"))
side_limit = int_at_least(3, "at least 3 (bos, a token, eos)")


def kinds_list(text: str) -> tuple[str, ...]:
    from fairseq_ext.retrieval.evaluate import KINDS

    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if not kinds or bad:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(KINDS)}, got {text!r}")
    return kinds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a --task code_contrastive checkpoint .pt (t5_encoder, hf_bert), or a sentence-transformers "
                   "directory")
    p.add_argument("--pairs", required=True, metavar="DIR", help="a directory written by `fairseq-ext code-pairs`")
    p.add_argument("--split", default="valid", help="which split is the pool (default %(default)s)")
    p.add_argument("--kinds", type=kinds_list, metavar="KIND[,KIND]",
                   help="only these kinds of pairs: docstring, span (default: every kind in the split)")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="evaluate only the first N pairs (after --kinds), for a quick run; figures then "
                   "are for a smaller pool")
    p.add_argument("--rename", action="store_true",
                   help="also evaluate an AdvTest-style copy of the docstring pairs with renamed code")
    p.add_argument("--max-query-tokens", type=side_limit, metavar="N",
                   help="cut queries to N tokens (default: the checkpoint's task setting, else 128)")
    p.add_argument("--max-key-tokens", type=side_limit, metavar="N",
                   help="cut keys to N tokens (default: the checkpoint's task setting, else 256)")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                   help="sequences embedded at once (default %(default)s)")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--json", metavar="OUT", help="also write every figure and count to OUT (JSON)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from fairseq_ext.errors import UserError
    from fairseq_ext.retrieval.evaluate import Pool, check_pairs_dir, evaluate, write_json_atomically
    from fairseq_ext.retrieval.models import load_embedding_model

    if args.json is not None:
        out = Path(args.json)
        if out.is_dir() or not out.absolute().parent.is_dir():
            raise UserError(f"--json {args.json}: " + ("is a directory" if out.is_dir() else
                            f"no such directory {out.absolute().parent}"))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"--device {device}: not usable here ({str(exc).splitlines()[0]})") from None
    check_pairs_dir(args.pairs)
    pool = Pool(args.pairs, args.split, args.kinds, args.limit)
    model = load_embedding_model(args.model, Path(args.pairs) / "tokenizer.json", device,
                                 args.max_query_tokens, args.max_key_tokens)
    report = evaluate(model, pool, args.batch_size, device, rename=args.rename, progress=not args.quiet)
    report = {"model": str(args.model), "model_kind": model.kind, "similarity": model.similarity,
              "separate_towers": model.separate_towers, "pairs": str(args.pairs), "split": args.split,
              "kinds": list(args.kinds) if args.kinds else None, "limit": args.limit,
              "max_query_tokens": model.max_query_tokens, "max_key_tokens": model.max_key_tokens,
              "limits_from": model.limits_from, "recorded_by_validation": model.recorded,
              "counts": pool.counts, **report}
    print(summary(report))
    if args.json is not None:
        write_json_atomically(args.json, report)
        print(f"wrote {args.json}")
    return 0


def table(scores: dict) -> list[str]:
    head = f"  {'':<24}" + "".join(f"{c:>8}" for c, _ in COLUMNS)
    return [head] + [f"  {name:<24}" + "".join(f"{m[key]:>8.4f}" for _, key in COLUMNS) for name, m in scores.items()]


def summary(r: dict) -> str:
    c = r["counts"]
    skipped = ", ".join(f"{n:,} {why.replace('_', ' ')}" for why, n in c["skipped"].items() if n) or "none"
    kinds = ", ".join(f"{k} {n:,}" for k, n in c["per_kind"].items())
    towers = "query and key towers" if r["separate_towers"] else "one tower for both sides"
    lines = [f"model: {r['model']} ({r['model_kind']}, {towers}, {r['similarity']} similarity)",
             f"sides cut to {r['max_query_tokens']} query and {r['max_key_tokens']} key tokens ({r['limits_from']}): "
             f"{r['cut']['queries']:,} queries and {r['cut']['keys']:,} keys were cut",
             f"pairs: {r['pairs']} '{r['split']}': {c['in_split']:,} in the split, {c['evaluated']:,} evaluated "
             f"({kinds}); skipped: {skipped}"]
    if r["limit"] is not None and c["skipped"].get("beyond_limit"):
        lines.append(f"note: --limit {r['limit']}: only the first {c['evaluated']:,} pairs, not the whole split")
    lines.append(f"pool of {r['pool']['pairs']:,} pairs (each query ranked against all {r['pool']['pairs']:,} keys):")
    lines += table(r["pool"]["scores"])
    rec = r["recorded_by_validation"]
    if rec:
        lines.append(f"  (the checkpoint's last validation: MRR {rec['mrr']:.4f}, R@1 {rec['recall@1']:.4f}, "
                     f"R@10 {rec['recall@10']:.4f} over {rec['pairs']:,} pairs"
                     + (f" at update {rec['num_updates']:,})" if rec.get("num_updates") is not None else ")"))
    if "renamed" in r:
        rn = r["renamed"]
        why = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in rn["skipped"].items() if n) or "none"
        lines.append(f"renamed pool of {rn['pairs']:,} docstring pairs (of {rn['docstring_pairs']:,}; keys not "
                     f"renamed: {why}; {rn['span_pairs_left_out']:,} span pairs left out), names -> func, arg_N, "
                     "var_N:")
        lines += table(rn["scores"]) if rn["scores"] else ["  (no docstring pair to rename)"]
    return "\n".join(lines)
