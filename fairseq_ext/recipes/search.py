"""The contrastive end of ``fairseq-ext demo --recipe code``: docstring pairs from the demo's corpus, a
short ``code_contrastive`` run from the code MLM checkpoint, the held-out MRR against chance, and a
natural-language search over every definition of the corpus with the trained model.

Not a verb of its own: :mod:`fairseq_ext.recipes.code` runs it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

QUERIES = (  # in the default corpus (stdlib packages asyncio .. encodings)
    "parse an email message from a string",
    "run the event loop until the future is done",
    "copy an entire directory tree",
)
QUERY_TOKENS, KEY_TOKENS = 64, 128
TOP = 5  # hits printed per query


def contrastive_args(work: Path, max_update: int, mlm_args: list[str]) -> list[str]:
    """The code MLM model (the same shape flags as its ``mlm_args``) trained on (docstring, code) pairs with
    InfoNCE."""
    user_dir = Path(__file__).resolve().parents[1]
    shape = list(mlm_args)
    shape = shape[shape.index("--arch"):shape.index("--tokens-per-sample")]  # arch and sizes, no MLM settings
    interval = str(max(max_update, 1))
    return [
        str(work / "code-pairs"), "--user-dir", str(user_dir), "--task", "code_contrastive", *shape,
        "--criterion", "info_nce", "--temperature", "0.05", "--symmetric",
        "--max-query-tokens", str(QUERY_TOKENS), "--max-key-tokens", str(KEY_TOKENS),
        "--finetune-from-model", str(work / "checkpoints" / "checkpoint_last.pt"),
        "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "5e-4", "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", str(max(1, max_update // 10)), "--total-num-update", str(max_update),
        "--max-update", str(max_update), "--clip-norm", "1.0", "--max-tokens", "4096", "--num-workers", "0",
        "--seed", "1", "--log-format", "simple", "--log-interval", "25", "--validate-interval-updates", interval,
        "--validate-interval", "1000", "--no-epoch-checkpoints", "--cpu", "--save-dir", str(work / "contrastive"),
        "--best-checkpoint-metric", "mrr", "--maximize-best-checkpoint-metric",
    ]


@dataclass
class Hit:
    name: str  # qualified name in its module, e.g. Parser.parsestr
    where: str  # path:line of the definition in the corpus
    score: float


@dataclass
class SearchResult:
    held_out_pairs: int
    mrr: float
    chance_mrr: float
    recall_at_1: float
    searched: int  # definitions (keys) ranked for every query
    hits: dict[str, list[Hit]] = field(default_factory=dict)


def search(work: Path, queries: list[str], top: int = TOP) -> SearchResult:
    """Held-out MRR of the contrastive checkpoint, then every query against every key of both splits."""
    import torch
    from fairseq import checkpoint_utils

    from fairseq_ext.criterions.ranking import chance_metrics
    from fairseq_ext.data.pair_dataset import side_tokens
    from fairseq_ext.prep.binarize_dir import load_line_encoder

    pairs = work / "code-pairs"
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(work / "contrastive" / "checkpoint_best.pt")], arg_overrides={"data": str(pairs)})
    model = models[0].eval()
    criterion = task.build_criterion(cfg.criterion)  # scores as training scored (info_nce: cosine or dot)
    for split in ("train", "valid"):
        task.load_dataset(split)
    held = task.pool_retrieval(model, task.dataset("valid"), criterion)
    d = task.dictionary
    _tok, _symbols, encoder = load_line_encoder(pairs, 1 << 20)
    flat, lengths, _ = encoder.encode(list(queries))
    bounds = [0, *lengths.cumsum().tolist()]
    q_tokens = [side_tokens(flat[s:e], QUERY_TOKENS, d.bos_index, d.eos()) for s, e in zip(bounds, bounds[1:])]
    with torch.no_grad():
        q = model.embed(_pad(q_tokens, d.pad()), "query")
        keys, rows = [], []
        for split in ("train", "valid"):
            data = task.dataset(split)
            for start in range(0, len(data), 64):
                batch = data.collater([data[i] for i in range(start, min(start + 64, len(data)))])
                keys.append(model.embed(batch["net_input"]["key_tokens"], "key"))
            rows += [(split, i) for i in range(len(data))]
        k = torch.cat(keys)
    q, k = criterion.comparable(q), criterion.comparable(k)
    scores, best = (q @ k.T).topk(min(top, k.size(0)), dim=1)  # (queries, top)
    meta = _metadata(pairs)
    hits = {}
    for text, row_scores, row_best in zip(queries, scores.tolist(), best.tolist()):
        hits[text] = [Hit(*_locate(work, *meta[rows[j]]), s) for s, j in zip(row_scores, row_best)]
    return SearchResult(held_out_pairs=held["pairs"], mrr=held["mrr"], chance_mrr=chance_metrics(held["pairs"])["mrr"],
                        recall_at_1=held["recall@1"], searched=k.size(0), hits=hits)


def _pad(rows, pad: int):
    import torch

    out = torch.full((len(rows), max(r.numel() for r in rows)), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


def _metadata(pairs: Path) -> dict[tuple[str, int], tuple[str, str]]:
    """(split, row) -> (path, qualified name) of every pair."""
    from datasets import load_from_disk

    data = load_from_disk(str(pairs))
    return {(split, i): (p, n) for split in ("train", "valid")
            for i, (p, n) in enumerate(zip(data[split]["path"], data[split]["name"]))}


def _locate(work: Path, path: str, name: str) -> tuple[str, str]:
    """(name, path:line): the line of the definition called ``name`` (Class.method) in the corpus file
    (``path`` as code-pairs records it, relative to the directory holding the corpus)."""
    file = work / path
    try:
        tree = ast.parse(file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return name, path
    scopes = [(tree, "")]
    while scopes:
        node, prefix = scopes.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualified = prefix + child.name
                if qualified == name:
                    return name, f"{path}:{child.lineno}"
                scopes.append((child, qualified + "."))
    return name, path
