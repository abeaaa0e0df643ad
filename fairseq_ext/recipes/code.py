"""``fairseq-ext demo --recipe code``: the code recipe on the built-in code corpus (standard-library
packages of the Python on this machine; nothing is downloaded):

  1. copy the corpus              DIR/raw/           whole stdlib packages, one directory per package
  2. fairseq-ext train-tokenizer  DIR/tokenizer/     byte-level BPE on the source tree (indentation kept)
  3. fairseq-ext code-dataset     DIR/code-data/     Arrow DatasetDict, split by package, dict.txt, tokenizer.json
  4. fairseq-train --user-dir fairseq_ext --task code_mlm --arch t5_encoder_small (shrunk),
     identifier-aware masking     DIR/checkpoints/
  5. fairseq-ext export-hf        DIR/hf-model/      T5EncoderModel + tokenizer, parity checked
  6. fill masked identifiers in held-out packages with the fairseq model; transformers'
     T5EncoderModel gives the same hidden states on them
  7. fairseq-ext code-pairs       DIR/code-pairs/    (docstring, code) pairs, split as code-dataset
  8. fairseq-train --task code_contrastive --criterion info_nce from step 4's checkpoint
                                  DIR/contrastive/   best checkpoint by held-out MRR
  9. held-out MRR against chance; natural-language queries ranked against every definition of the
     corpus, the top hits printed (see :mod:`fairseq_ext.recipes.search`)

Not a verb of its own: :mod:`fairseq_ext.cli.demo` runs it for ``--recipe code``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from fairseq_ext.recipes.common import export_checkpoint, finish, relocate_paths, step, train

TOKENS_PER_SAMPLE = 128
EVAL_SAMPLES = 200  # held-out samples whose masked identifiers the model fills in


def model_args(max_update: int) -> list[str]:
    """t5_encoder_small shrunk to CPU size: 2 layers, 128 wide, gated GELU, identifier masking."""
    return [
        "--task", "code_mlm", "--arch", "t5_encoder_small", "--encoder-layers", "2", "--encoder-embed-dim", "128",
        "--kv-dim", "32", "--encoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
        "--feed-forward-proj", "gated-gelu", "--dropout", "0.0",
        "--tokens-per-sample", str(TOKENS_PER_SAMPLE), "--sample-break-mode", "none", "--mask-unit", "identifier",
        "--mask-prob", "0.15", "--criterion", "masked_lm_with_accuracy",
        "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "2e-3", "--lr-scheduler", "polynomial_decay",
        "--warmup-updates", "100", "--total-num-update", str(max_update), "--end-learning-rate", "1e-4",
        "--clip-norm", "1.0", "--max-tokens", "4096", "--num-workers", "0", "--seed", "1",
        "--log-format", "simple", "--log-interval", "50", "--validate-interval-updates", "200",
        "--validate-interval", "1000", "--no-epoch-checkpoints", "--cpu",
    ]


def train_args(work: Path, max_update: int) -> list[str]:
    user_dir = Path(__file__).resolve().parents[1]
    return [str(work / "code-data"), "--user-dir", str(user_dir), *model_args(max_update),
            "--max-update", str(max_update), "--save-dir", str(work / "checkpoints")]


@dataclass
class IdentifierFill:
    samples: int
    masked_tokens: int
    token_accuracy: float  # masked tokens predicted exactly
    identifiers: int  # masked identifier occurrences (runs of masked tokens)
    identifier_accuracy: float  # occurrences whose every token is predicted exactly
    hf_max_abs_diff: float  # transformers' T5EncoderModel vs fairseq, final hidden states
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # (masked line, filled line, true line)


LISTING = [("raw/", "built-in code corpus (stdlib packages)"),
           ("tokenizer/", "AutoTokenizer.from_pretrained loads it"),
           ("code-data/", "datasets.load_from_disk loads it; code_dataset.json has every count"),
           ("checkpoints/checkpoint_last.pt", "fairseq checkpoint (resume with the same command)"),
           ("hf-model/", "T5EncoderModel.from_pretrained loads it; README.md is its card"),
           ("code-pairs/", "(docstring, code) pairs; code_pairs.json has every count"),
           ("contrastive/checkpoint_best.pt", "the code-search model (fairseq checkpoint)"),
           ("train.log", "fairseq-train log (code MLM; contrastive.log: the contrastive stage)"),
           ("curves.png", "loss and accuracy by update, train and valid"),
           ("demo.json", "every figure of this run"),
           ("train.sh", "the fairseq-train command; rerun it with a higher --max-update to resume")]
TOTAL = 9  # steps


def run(args: argparse.Namespace, out: Path) -> int:
    from fairseq_ext.errors import UserError
    from fairseq_ext.io_utils import atomic_output_dir
    from fairseq_ext.recipes import search as demo_search

    queries = list(demo_search.QUERIES) if args.query is None else [q.strip() for q in args.query]
    if not all(queries):
        raise UserError("--query: empty text; give words to search the code with")
    started = time.perf_counter()
    with atomic_output_dir(out, overwrite=args.overwrite) as tmp:
        stats = prepare_code(tmp, args)
        val_loss, val_acc = train(tmp, train_args(tmp, args.max_update))
        step(4, f"fairseq-train: {args.max_update} updates, validation loss {val_loss:.3f} (base 2), "
             f"masked-identifier token accuracy {val_acc:.3f}", TOTAL)
        exported = export_checkpoint(tmp)
        step(5, f"export-hf: T5EncoderModel, max |hidden-state difference| fairseq vs transformers "
             f"{exported.max_abs_diff:.1e}", TOTAL)
        fill = fill_identifiers(tmp, EVAL_SAMPLES)
        step(6, f"held-out packages, every occurrence of chosen identifiers masked ({fill.samples} samples, "
             f"{fill.identifiers} occurrences): {fill.identifier_accuracy:.0%} restored exactly "
             f"({fill.token_accuracy:.0%} of the masked tokens); transformers' T5EncoderModel gives the same "
             f"hidden states (max |difference| {fill.hf_max_abs_diff:.1e}); for example", TOTAL)
        for masked, filled, truth in fill.examples:
            print(f"      in:   {masked}\n      out:  {filled}\n      true: {truth}")
        found = contrastive_search(tmp, args.contrastive_updates or 100, queries)
        write_summary(tmp, args, val_loss, val_acc, exported.max_abs_diff, fill, stats,
                      time.perf_counter() - started, found)
    relocate_paths(out, tmp, ["hf-model/README.md", "hf-model/fairseq_ext_export.json",
                              "code-data/code_dataset.json", "code-pairs/code_pairs.json"])
    finish(out, train_args(out.resolve(), args.max_update), started, LISTING)
    return 0


def prepare_code(work: Path, args: argparse.Namespace) -> dict:
    """Steps 1-3: the built-in code corpus, a tokenizer trained on it, code-dataset; its counts."""
    from fairseq_ext.prep.builtin_corpus import write_builtin_code
    from fairseq_ext.prep.code_dataset import CodeDatasetConfig, build_code_dataset
    from fairseq_ext.prep.tokenizer_training import train_tokenizer

    corpus = write_builtin_code(work / "raw", max_bytes=int(args.corpus_mb * 1e6))
    step(1, f"corpus: {corpus['packages']} stdlib packages, {corpus['files']} files, {corpus['bytes']:,} bytes",
         TOTAL)
    tok = train_tokenizer([work / "raw"], kind="bpe", vocab_size=args.vocab_size, show_progress=False)
    tok.save_pretrained(str(work / "tokenizer"))
    step(2, f"train-tokenizer: byte-level BPE, {len(tok):,} tokens, on the source tree", TOTAL)
    stats = build_code_dataset([work / "raw"], work / "code-data",
                               CodeDatasetConfig(tokenizer=str(work / "tokenizer"), valid_ratio=0.1),
                               progress=False)
    skipped = ", ".join(f"{k} {v}" for k, v in stats["skipped"].items() if v) or "none"
    step(3, "code-dataset: " + ", ".join(f"{k} {v['files']} files {v['tokens']:,} tokens"
                                        for k, v in stats["splits"].items())
         + f" (split by package; skipped: {skipped})", TOTAL)
    return stats


def contrastive_search(work: Path, updates: int, queries: list[str]):
    """Steps 7-9: code-pairs, the contrastive stage from the code MLM checkpoint, held-out MRR and a search."""
    from fairseq_ext.prep.code_dataset import CodeDatasetConfig
    from fairseq_ext.prep.code_pairs import CodePairsConfig, build_code_pairs
    from fairseq_ext.recipes import search as demo_search

    pairs = build_code_pairs([work / "raw"], work / "code-pairs", CodePairsConfig(
        CodeDatasetConfig(tokenizer=str(work / "tokenizer"), valid_ratio=0.1), kind="docstring"), progress=False)
    step(7, "code-pairs: (docstring, code) " + ", ".join(f"{k} {v['pairs']} pairs from {v['projects']} packages"
                                                        for k, v in pairs["splits"].items()), TOTAL)
    started = time.perf_counter()
    train(work, demo_search.contrastive_args(work, updates, model_args(updates)), "contrastive.log")
    step(8, f"fairseq-train --task code_contrastive: {updates} updates from the code MLM "
         f"checkpoint in {time.perf_counter() - started:.0f} s", TOTAL)
    found = demo_search.search(work, queries)
    step(9, f"held-out packages, every docstring against every definition ({found.held_out_pairs} pairs): "
         f"MRR {found.mrr:.3f} (chance {found.chance_mrr:.3f}), Recall@1 {found.recall_at_1:.3f}; "
         f"search over all {found.searched} definitions of the corpus:", TOTAL)
    for query, hits in found.hits.items():
        print(f"      query: {query}")
        for hit in hits:
            print(f"        {hit.score:.3f}  {hit.name}  ({hit.where})")
    return found


def fill_identifiers(work: Path, max_samples: int) -> IdentifierFill:
    """The trained fairseq model fills the masked identifiers of held-out samples (all 'chosen'
    tokens masked, none left or randomised); transformers' export runs on the same inputs."""
    import torch
    from fairseq import checkpoint_utils
    from transformers import AutoTokenizer, T5EncoderModel

    overrides = {"data": str(work / "code-data"), "leave_unmasked_prob": 0.0, "random_token_prob": 0.0}
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(work / "checkpoints" / "checkpoint_last.pt")], arg_overrides=overrides)
    model = models[0].eval()
    task.load_dataset("valid")
    data = task.dataset("valid")
    batch = data.collater([data[i] for i in range(min(len(data), max_samples))])
    src, target = batch["net_input"]["src_tokens"], batch["target"]
    pad = task.dictionary.pad()
    hf = T5EncoderModel.from_pretrained(str(work / "hf-model")).eval()
    with torch.no_grad():
        logits = model(src)[0]  # (B, T, V)
        fs_hidden = model(src, features_only=True)[0]
        hf_hidden = hf(input_ids=src, attention_mask=src.ne(pad).long()).last_hidden_state
    keep = src.ne(pad)
    masked = target.ne(pad)
    pred = torch.where(masked, logits.argmax(-1), src)
    right = pred.eq(target) & masked
    runs = _runs(masked)
    whole = [bool(right[b, s:e].all()) for b, s, e in runs]
    tok = AutoTokenizer.from_pretrained(str(work / "hf-model"))
    truth = torch.where(masked, target, src)
    d = task.dictionary
    hide = {i for i in (d.bos_index, d.eos_index, d.pad_index) if i is not None}
    examples = []
    for b, s, _e in runs:
        if len(examples) == 3:
            break
        if any(b == row for row, *_ in examples):
            continue
        lines = [_line_at(tok, ids[b], s, hide) for ids in (src, pred, truth)]
        if len(lines[0]) >= 24 and lines[0] not in (x[1] for x in examples):
            examples.append((b, *lines))
    return IdentifierFill(
        samples=src.size(0), masked_tokens=int(masked.sum()),
        token_accuracy=float(right.sum()) / max(int(masked.sum()), 1), identifiers=len(runs),
        identifier_accuracy=sum(whole) / max(len(runs), 1),
        hf_max_abs_diff=float((fs_hidden - hf_hidden).abs()[keep].max()),
        examples=[tuple(x[1:]) for x in examples])


def _runs(masked) -> list[tuple[int, int, int]]:
    """(row, start, end) of every run of consecutive masked positions: one identifier occurrence."""
    runs = []
    for b, row in enumerate(masked.tolist()):
        start = None
        for i, m in enumerate(row + [False]):
            if m and start is None:
                start = i
            elif not m and start is not None:
                runs.append((b, start, i))
                start = None
    return runs


def _line_at(tok, ids, position: int, hide: set) -> str:
    """The source line holding token ``position`` (decoded), stripped; masks shown as the mask token."""
    ids = ids.tolist()
    before = tok.decode([i for i in ids[:position] if i not in hide]).split("\n")[-1]
    after = tok.decode([i for i in ids[position:] if i not in hide]).split("\n")[0]
    return (before + after).strip()


def write_summary(work: Path, args, val_loss, val_acc, parity, fill: IdentifierFill, stats: dict, seconds,
                  found) -> None:
    from fairseq_ext.recipes.report import parse_train_log, plot_curves

    curves = parse_train_log((work / "train.log").read_text(encoding="utf-8"))
    plot_curves(curves, work / "curves.png",
                f"fairseq-ext demo --recipe code: t5_encoder_small shrunk, {args.max_update} updates")
    summary = {
        "recipe": "code", "max_update": args.max_update, "vocab_size": args.vocab_size, "corpus_mb": args.corpus_mb,
        "code_dataset": {k: stats[k] for k in ("kept", "skipped", "tokens", "splits")},
        "valid_loss_bits": val_loss, "valid_accuracy": val_acc, "parity_max_abs_diff": parity,
        "identifier_fill": {k: v for k, v in fill.__dict__.items() if k != "examples"},
        "identifier_examples": [{"input": m, "output": o, "original": t} for m, o, t in fill.examples],
        "search": {"held_out_pairs": found.held_out_pairs, "mrr": found.mrr, "chance_mrr": found.chance_mrr,
                   "recall@1": found.recall_at_1, "searched": found.searched,
                   "hits": {q: [h.__dict__ for h in hits] for q, hits in found.hits.items()}},
        "train_curve": curves.train, "valid_curve": curves.valid, "seconds_until_summary": round(seconds, 1),
    }
    (work / "demo.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
