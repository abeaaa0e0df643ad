"""``eval-retrieval``: a model, BM25 and chance on one pool of held-out pairs, optionally renamed.

The pool is the pairs of one split of a ``fairseq-ext code-pairs`` directory (optionally only some
kinds, optionally the first N): every query is ranked against every key of the pool
(:mod:`fairseq_ext.criterions.ranking`). With ``rename``, a second pool: the docstring pairs of the first
whose key :func:`~fairseq_ext.prep.rename.rename_definition` renames, queries unchanged, keys
renamed and tokenised again with the pairs directory's tokenizer; span pairs are code fragments that
do not parse and are not in it. Its table also scores the original keys of the same pairs, so the
drop that renaming causes is read off one pool.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from fairseq_ext.criterions.ranking import chance_metrics, embedding_rank_counts, metrics_from_counts
from fairseq_ext.errors import UserError
from fairseq_ext.io_utils import write_file_atomically
from fairseq_ext.prep.progress import progress_bar

KINDS = ("docstring", "span")


def check_pairs_dir(directory: str | os.PathLike) -> dict:
    """The ``code_pairs.json`` of a pairs directory, or a one-line error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"--pairs {directory}: no such directory")
    info = directory / "code_pairs.json"
    if not info.is_file() or not (directory / "dataset_dict.json").is_file():
        raise UserError(f"--pairs {directory}: not a pairs directory (no code_pairs.json or dataset_dict.json; "
                        "make one with `fairseq-ext code-pairs`)")
    try:
        return json.loads(info.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{info}: not valid JSON ({exc})") from None


class Pool:
    """The pairs of ``split`` that are evaluated: their rows, kinds, texts; ``counts`` says what was left out."""

    def __init__(self, directory, split: str, kinds=None, limit: int | None = None):
        from fairseq_ext.data.arrow_dataset import load_arrow_split

        data = load_arrow_split(directory, split, ("query_ids", "key_ids", "query", "key", "kind"))
        all_kinds = np.asarray(data["kind"], dtype=object)
        unknown = sorted(set(kinds or ()) - set(KINDS))
        if unknown:
            raise UserError(f"--kinds {','.join(unknown)}: no such kind (choose from {', '.join(KINDS)})")
        chosen = np.isin(all_kinds, list(kinds)) if kinds else np.ones(len(all_kinds), dtype=bool)
        rows = np.flatnonzero(chosen)
        skipped = {"kind_not_selected": int((~chosen).sum())}
        if limit is not None:
            skipped["beyond_limit"] = max(0, rows.size - limit)
            rows = rows[:limit]
        if rows.size == 0:
            raise UserError(f"--pairs {directory}: no pair of the '{split}' split to evaluate "
                            f"({len(all_kinds)} in it; kinds in it: {', '.join(sorted(set(all_kinds))) or 'none'})")
        texts = data.select(rows.tolist()).select_columns(["query", "key"])
        self.directory, self.split, self.rows = Path(directory), split, rows
        self.kinds = all_kinds[rows].tolist()
        self.queries, self.keys = texts["query"], texts["key"]
        per_kind = Counter(self.kinds)
        self.counts = {"in_split": len(all_kinds), "evaluated": int(rows.size), "skipped": skipped,
                       "per_kind": {k: per_kind[k] for k in KINDS if per_kind[k]}}

    def __len__(self) -> int:
        return self.rows.size


def embed_sides(model, sides: list[torch.Tensor], tower: str, batch_size: int, device: str, bar) -> torch.Tensor:
    """(N, D) embeddings of ``sides`` (1-D LongTensors), longest first in batches of ``batch_size``."""
    from fairseq.data import data_utils

    order = torch.from_numpy(np.argsort([-s.numel() for s in sides], kind="stable"))
    out = None
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            tokens = data_utils.collate_tokens([sides[i] for i in idx.tolist()], model.dictionary.pad()).to(device)
            emb = model.embed(tokens, tower).cpu()  # (b, D)
            if out is None:
                out = emb.new_empty(len(sides), emb.size(1))  # (N, D)
            out[idx] = emb
            bar.update(len(idx))
    return out if out is not None else torch.zeros(0, 0)


def _scores(model_counts, bm25_counts, n: int) -> dict:
    return {"random (expected)": chance_metrics(n), "BM25": metrics_from_counts(*bm25_counts),
            "model": metrics_from_counts(*model_counts)}


def evaluate(model, pool: Pool, batch_size: int, device: str, rename: bool = False, progress: bool = True) -> dict:
    """Every figure ``eval-retrieval`` prints, as a dict (what ``--json`` writes)."""
    from fairseq_ext.data.pair_dataset import PairDataset
    from fairseq_ext.retrieval.bm25 import BM25Pool

    mask = json.loads((pool.directory / "code_pairs.json").read_text(encoding="utf-8")).get("mask_id")
    d = model.dictionary
    data = PairDataset(pool.directory, pool.split, d, model.max_query_tokens, model.max_key_tokens,
                       None if mask is None or mask < 0 else int(mask), shuffle=False)
    n = len(pool)
    with progress_bar(2 * n, progress, unit="side", desc="embed") as bar:
        q = embed_sides(model, [data.side(i, "query") for i in pool.rows], "query", batch_size, device, bar)
        k = embed_sides(model, [data.side(i, "key") for i in pool.rows], "key", batch_size, device, bar)
    with progress_bar(n, progress, unit="query", desc="BM25") as bar:
        bm25 = BM25Pool(pool.keys).rank_counts(pool.queries, progress=bar)
    extra = 1 + (d.bos_index is not None)  # bos, eos around the ids
    report = {"pool": {"pairs": n, "scores": _scores(embedding_rank_counts(q, k), bm25, n)},
              "cut": {"queries": int((data.queries.sizes[pool.rows] - 1 + extra > model.max_query_tokens).sum()),
                      "keys": int((data.keys.sizes[pool.rows] - 1 + extra > model.max_key_tokens).sum())}}
    if rename:
        report["renamed"] = _renamed(model, pool, q, k, batch_size, device, progress)
    return report


def _renamed(model, pool: Pool, q: torch.Tensor, k: torch.Tensor, batch_size: int, device: str, progress: bool) -> dict:
    from fairseq_ext.data.pair_dataset import side_tokens
    from fairseq_ext.prep.binarize_dir import load_line_encoder
    from fairseq_ext.prep.rename import RENAME_SKIPS, rename_definition
    from fairseq_ext.retrieval.bm25 import BM25Pool

    skipped = Counter({r: 0 for r in RENAME_SKIPS})
    keep, renamed = [], []
    for j, (kind, key) in enumerate(zip(pool.kinds, pool.keys)):
        if kind != "docstring":
            continue
        code, why = rename_definition(key)
        if code is None:
            skipped[why] += 1
            continue
        keep.append(j)
        renamed.append(code)
    n = len(keep)
    counts = {"docstring_pairs": sum(k == "docstring" for k in pool.kinds), "pairs": n,
              "span_pairs_left_out": sum(k == "span" for k in pool.kinds), "skipped": dict(skipped)}
    if n == 0:
        return {**counts, "scores": None}
    _tok, _symbols, encoder = load_line_encoder(pool.directory / "tokenizer.json", 2)
    flat, lengths, _repaired = encoder.encode(renamed)
    d = model.dictionary
    sides = [side_tokens(ids, model.max_key_tokens, d.bos_index, d.eos())
             for ids in np.split(flat, np.cumsum(lengths)[:-1])]
    with progress_bar(n, progress, unit="key", desc="embed renamed") as bar:
        k_renamed = embed_sides(model, sides, "key", batch_size, device, bar)
    queries = [pool.queries[j] for j in keep]
    q_sub, original_k = q[torch.as_tensor(keep)], k[torch.as_tensor(keep)]
    scores = _scores(embedding_rank_counts(q_sub, k_renamed), BM25Pool(renamed).rank_counts(queries), n)
    scores["BM25, original names"] = metrics_from_counts(*BM25Pool([pool.keys[j] for j in keep]).rank_counts(queries))
    scores["model, original names"] = metrics_from_counts(*embedding_rank_counts(q_sub, original_k))
    return {**counts, "scores": scores, "example": renamed[0]}


def write_json_atomically(path: str | os.PathLike, obj) -> None:
    """``obj`` as JSON at ``path``, through a temporary beside it and a rename (never half a file)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--json {path}: is a directory")
    if not path.parent.is_dir():
        raise UserError(f"--json {path}: no such directory {path.parent}")
    write_file_atomically(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode("utf-8")))
