"""Training throughput: fairseq-train words/s with hf_denoising vs fairseq's own denoising task.

Same data (built-in corpus, binarized by fairseq-ext with a byte-level BPE whose
RoBERTa layout fairseq's plain dictionary reads identically), same small BART on
CPU, same noise settings, a few hundred updates each, in one run. fairseq's task
cannot build the whole-word table from an HF tokenizer (it builds its BPE by name),
so it masks subword spans; ours masks whole-word spans, the costlier of the two.

    python benchmarks/train_step.py [--updates 200]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = ["--arch", "bart_base", "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "128",
         "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
         "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--share-all-embeddings",
         "--tokens-per-sample", "128", "--max-source-positions", "128", "--max-target-positions", "128",
         "--sample-break-mode", "complete_doc",
         "--criterion", "cross_entropy", "--optimizer", "adam", "--lr", "5e-4", "--max-tokens", "4096",
         "--cpu", "--num-workers", "0", "--seed", "1", "--log-format", "simple", "--log-interval", "50",
         "--disable-validation", "--no-save"]


def noise_args() -> list[str]:
    """BART's noise (hf_denoising's defaults) as flags both tasks take. --insert and --rotate are left to
    each task's default, as this benchmark has always run them (fairseq's denoising rotates: 0.5)."""
    from fairseq_ext.tasks.hf_denoising import noise_flags

    flags = noise_flags()
    return [x for k, v in zip(flags[::2], flags[1::2]) if k not in ("--insert", "--rotate") for x in (k, v)]


def build_data(work: Path) -> Path:
    from fairseq_ext.prep.binarize_dir import binarize_directory
    from fairseq_ext.prep.builtin_corpus import write_builtin_corpus
    from fairseq_ext.prep.prepare import prepare_corpus
    from fairseq_ext.prep.tokenizer_training import train_tokenizer

    write_builtin_corpus(work / "raw", max_bytes=2_000_000)
    prepare_corpus([work / "raw"], work / "text", valid_ratio=0.0, doc_sep="file", progress=False)
    tok = train_tokenizer([work / "text" / "train.txt"], vocab_size=8000, show_progress=False)
    tok.save_pretrained(str(work / "tok"))
    binarize_directory(work / "tok", {"train": work / "text" / "train.txt"}, work / "bin",
                       max_line_tokens=126, progress=False)
    return work / "bin"


def run(data: Path, task: list[str], updates: int) -> tuple[float, float]:
    """(words/s reported by fairseq for the whole run, wall seconds)."""
    cmd = [sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", str(REPO / "fairseq_ext"),
           *task, *MODEL, *noise_args(), "--max-update", str(updates)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"fairseq-train failed:\n{proc.stderr[-3000:]}")
    inner = [float(m) for m in re.findall(r"train_inner \|.*?wps=([\d.]+)", proc.stdout + proc.stderr)]
    return sum(inner[1:]) / max(len(inner) - 1, 1), wall  # the first interval includes start-up


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=200)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="train-bench-"))
    try:
        data = build_data(work)
        tasks = {"fairseq denoising": ["--task", "denoising"],
                 "fairseq_ext hf_denoising": ["--task", "hf_denoising", "--pad-vocab-to-multiple", "1"]}
        results = {name: [] for name in tasks}
        for _ in range(2):  # interleaved, best of two
            for name, task in tasks.items():
                results[name].append(run(data, task, args.updates))
        print(f"{args.updates} updates, small BART (2+2 layers, 128 wide) on CPU\n")
        print("| task | words/s | wall s |\n|---|---:|---:|")
        best = {name: max(r) for name, r in results.items()}
        for name, (wps, wall) in best.items():
            print(f"| {name} | {wps:,.0f} | {wall:.0f} |")
        ratio = best["fairseq_ext hf_denoising"][0] / best["fairseq denoising"][0]
        print(f"\nhf_denoising / denoising words/s: {ratio:.2f}   (target >= 0.95)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
