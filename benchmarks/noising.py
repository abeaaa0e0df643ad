"""Denoising data speed: fairseq_ext's HFDenoisingDataset vs fairseq's DenoisingDataset.

Both wrap the very same token blocks (tokens-per-sample 512, complete_doc, bos/eos
added) of text binarized from this machine (Python docstrings and Debian docs),
with the same settings: BART's, hf_denoising's defaults (NoiseConfig in
fairseq_ext/data/noising.py: span-poisson whole-word masking, sentence permutation),
fairseq given the same word-start table. One thread (`torch.set_num_threads(1)`): the
figures are per core.

    python benchmarks/noising.py [--samples 3000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_data(work: Path) -> Path:
    sys.path.insert(0, str(HERE))
    from binarize import build_corpus

    from fairseq_ext.prep.binarize_dir import binarize_directory
    from fairseq_ext.prep.prepare import prepare_corpus
    from fairseq_ext.prep.tokenizer_training import train_tokenizer

    build_corpus(work / "raw.txt", 6)
    prepare_corpus([work / "raw.txt"], work / "text", valid_ratio=0.0, doc_sep="blank-line", progress=False)
    tok = train_tokenizer([work / "text" / "train.txt"], vocab_size=16000, show_progress=False)
    tok.save_pretrained(str(work / "tok"))
    binarize_directory(work / "tok", {"train": work / "text" / "train.txt"}, work / "bin", progress=False)
    return work / "bin"


def datasets(data: Path):
    import torch
    from fairseq.data import DenoisingDataset

    from fairseq_ext.tasks.hf_denoising import HFDenoisingConfig, HFDenoisingTask

    task = HFDenoisingTask.setup_task(HFDenoisingConfig(data=str(data), tokens_per_sample=512, seed=1,
                                                        dataset_impl=None))
    task.load_dataset("train")
    ours = task.datasets["train"]
    d, noise = task.source_dictionary, ours.noise
    theirs = DenoisingDataset(
        ours.blocks, ours.sizes, d, d.mask_index, torch.ByteTensor(ours.is_word_start.astype("uint8")),
        shuffle=False, seed=1, mask=noise.mask_ratio, mask_random=noise.random_ratio, insert=noise.insert_ratio,
        rotate=noise.rotate_ratio, permute_sentences=noise.permute_sentence_ratio, bpe="hf_tokenizer",
        replace_length=noise.replace_length, mask_length=noise.mask_length, poisson_lambda=noise.poisson_lambda,
    )
    return ours, theirs


def measure(ds, n: int) -> tuple[float, int]:
    ds[0]  # warm-up
    tokens = 0
    start = time.perf_counter()
    for i in range(n):
        tokens += len(ds[i % len(ds)]["target"])
    return time.perf_counter() - start, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=3000)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="noising-bench-"))
    try:
        ours, theirs = datasets(build_data(work))
        n = min(args.samples, len(ours))
        rows = {}
        for name, ds in (("fairseq DenoisingDataset", theirs), ("fairseq_ext HFDenoisingDataset", ours)):
            best = min((measure(ds, n) for _ in range(2)), key=lambda r: r[0])
            rows[name] = best
        print(f"{n} samples of up to 512 tokens, 1 thread\n")
        print("| dataset | samples/s | tokens/s |\n|---|---:|---:|")
        for name, (t, tok) in rows.items():
            print(f"| {name} | {n / t:,.0f} | {tok / t:,.0f} |")
        ratio = rows["fairseq DenoisingDataset"][0] / rows["fairseq_ext HFDenoisingDataset"][0]
        print(f"\nfairseq_ext / fairseq: {ratio:.1f}x faster per core   (target >= 5)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
