"""``fairseq-ext demo`` (``--recipe bart``): BART on English prose from the standard library's docstrings.

Steps 1-4 (corpus, prepare, train-tokenizer, binarize) are :func:`prepare_data`; then fairseq-train,
export-hf and transformers' infills: the seven steps and the directories they write are listed in the
verb's help (:mod:`fairseq_ext.cli.demo`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fairseq_ext.recipes.common import export_checkpoint, finish, relocate_paths, step, train
from fairseq_ext.recipes.report import InfillResult, held_out_sentences, infill_eval, parse_train_log, plot_curves

TOKENS_PER_SAMPLE = 64


INFILL_SENTENCES = 40  # held-out sentences the exported model fills in


def model_args(max_update: int) -> list[str]:
    """bart_small shrunk to CPU size: 2+2 layers, 128 wide, one or two sentences a sample.

    Chosen so that the model learns to copy its input (what makes a denoiser's infills keep the
    context) within the demo's few minutes: weights from N(0, 128**-0.5) rather than BART's 0.02
    (see fairseq_ext/models/init.py), a high constant-then-decaying learning rate, no dropout,
    small batches for many updates, 64-token samples, and no sentence permutation (a sample
    holds only one or two sentences). Span masking, random replacement and the rest of BART's
    noise are the task's defaults (the paper's).
    """
    return [
        "--task", "hf_denoising", "--arch", "bart_small",
        "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "128",
        "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
        "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--share-all-embeddings",
        "--init-std", "0.09", "--dropout", "0.0", "--permute-sentences", "0",
        "--tokens-per-sample", str(TOKENS_PER_SAMPLE), "--max-source-positions", "128",
        "--max-target-positions", "128", "--sample-break-mode", "complete",
        "--criterion", "cross_entropy_with_accuracy", "--optimizer", "adam", "--adam-betas", "(0.9,0.98)",
        "--lr", "2e-3", "--lr-scheduler", "polynomial_decay", "--warmup-updates", "100",
        "--total-num-update", str(max_update), "--end-learning-rate", "1e-4", "--clip-norm", "1.0",
        "--max-tokens", "2048", "--num-workers", "0", "--seed", "1",
        "--log-format", "simple", "--log-interval", "50", "--validate-interval-updates", "200",
        "--validate-interval", "1000", "--no-epoch-checkpoints", "--cpu",
    ]


LISTING = [("raw/", "built-in corpus"), ("text/", "prepared train/valid text"),
           ("tokenizer/", "AutoTokenizer.from_pretrained loads it"),
           ("data-bin/", "fairseq data: train/valid .bin/.idx, dict.txt, tokenizer.json"),
           ("checkpoints/checkpoint_last.pt", "fairseq checkpoint (resume with the same command)"),
           ("hf-model/", "BartForConditionalGeneration.from_pretrained loads it; README.md is its card"),
           ("train.log", "fairseq-train log"),
           ("curves.png", "loss and accuracy by update, train and valid"),
           ("demo.json", "every figure of this run: losses, accuracy, parity, infill scores"),
           ("train.sh", "the fairseq-train command; rerun it with a higher --max-update to resume")]


def run(args: argparse.Namespace) -> int:
    from fairseq_ext.io_utils import atomic_output_dir

    out = Path(args.output)
    started = time.perf_counter()
    with atomic_output_dir(out, overwrite=args.overwrite) as tmp:
        prepare_data(tmp, args)
        val_loss, val_acc = train(tmp, train_args(tmp, args.max_update))
        step(5, f"fairseq-train: {args.max_update} updates, validation loss {val_loss:.3f} (base 2), "
             f"accuracy {val_acc:.3f}")
        exported = export_checkpoint(tmp)
        step(6, f"export-hf: max |logit difference| fairseq vs transformers {exported.max_abs_diff:.1e}")
        report = report_infills(tmp)
        step(7, f"transformers infills {report.sentences} held-out sentences, the middle word masked: "
             f"{report.context_kept:.0%} of the unmasked words come back in order, the masked word in "
             f"{report.word_restored:.0%}; for example")
        for masked, infill, original in report.examples:
            print(f"      in:   {masked}\n      out:  {infill}\n      true: {original}")
        write_summary(tmp, args, val_loss, val_acc, exported.max_abs_diff, report, time.perf_counter() - started)
    relocate_paths(out, tmp, ["hf-model/README.md", "hf-model/fairseq_ext_export.json", "text/prepare.json",
                              "data-bin/binarize.json"])
    finish(out, train_args(out.resolve(), args.max_update), started, LISTING)
    return 0


def prepare_data(work: Path, args: argparse.Namespace) -> None:
    """Steps 1-4: the built-in corpus, prepare, train-tokenizer, binarize, all in ``work``."""
    from fairseq_ext.prep.binarize_dir import binarize_directory
    from fairseq_ext.prep.builtin_corpus import write_builtin_corpus
    from fairseq_ext.prep.prepare import prepare_corpus
    from fairseq_ext.prep.tokenizer_training import train_tokenizer

    corpus = write_builtin_corpus(work / "raw", max_bytes=int(args.corpus_mb * 1e6))
    step(1, f"corpus: {corpus['files']} stdlib modules, {corpus['paragraphs']:,} paragraphs, "
         f"{corpus['bytes']:,} bytes")
    prep = prepare_corpus([work / "raw"], work / "text", valid_ratio=0.05, doc_sep="file", progress=False)
    step(2, f"prepare: {prep['sentences_found']:,} sentences -> {prep['sentences_kept']:,} kept; "
         + ", ".join(f"{k} {v['documents']} docs" for k, v in prep["splits"].items()))
    tok = train_tokenizer([work / "text" / "train.txt"], kind="bpe", vocab_size=args.vocab_size,
                          show_progress=False)
    tok.save_pretrained(str(work / "tokenizer"))
    step(3, f"train-tokenizer: byte-level BPE, {len(tok):,} tokens")
    stats = binarize_directory(work / "tokenizer", {"train": work / "text" / "train.txt",
                                                    "valid": work / "text" / "valid.txt"},
                               work / "data-bin", max_line_tokens=TOKENS_PER_SAMPLE - 2, progress=False)
    step(4, "binarize: " + ", ".join(f"{k} {v['tokens']:,} tokens" for k, v in stats["splits"].items()))


def report_infills(work: Path) -> InfillResult:
    return infill_eval(work / "hf-model", held_out_sentences(work / "text" / "valid.txt", INFILL_SENTENCES))


def write_summary(work: Path, args: argparse.Namespace, val_loss: float, val_acc: float, parity: float,
                  report: InfillResult, seconds: float) -> None:
    """demo.json (every figure of the run) and curves.png (loss and accuracy by update)."""
    curves = parse_train_log((work / "train.log").read_text(encoding="utf-8"))
    plot_curves(curves, work / "curves.png", f"fairseq-ext demo: bart_small shrunk, {args.max_update} updates")
    summary = {
        "max_update": args.max_update, "vocab_size": args.vocab_size, "corpus_mb": args.corpus_mb,
        "valid_loss_bits": val_loss, "valid_accuracy": val_acc, "parity_max_abs_diff": parity,
        "infill_sentences": report.sentences, "infill_context_kept": report.context_kept,
        "infill_word_restored": report.word_restored,
        "infill_examples": [{"input": m, "output": o, "original": t} for m, o, t in report.examples],
        "train_curve": curves.train, "valid_curve": curves.valid, "seconds_until_summary": round(seconds, 1),
    }
    (work / "demo.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def train_args(work: Path, max_update: int) -> list[str]:
    user_dir = Path(__file__).resolve().parents[1]
    return [str(work / "data-bin"), "--user-dir", str(user_dir), *model_args(max_update),
            "--max-update", str(max_update), "--save-dir", str(work / "checkpoints")]
