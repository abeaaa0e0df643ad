"""Masked-LM data speed: fairseq_ext's HFMaskedLMDataset vs fairseq's MaskTokensDataset.

Both mask the very same token blocks (512 tokens, bos prepended) of text binarized
from this machine, with hf_masked_lm's defaults (MaskConfig in fairseq_ext/data/masking.py:
15% chosen, 80/10/10), plain (subword) and with
whole-word masking (fairseq gets the same word-start table). One thread: the
figures are per core.

    python benchmarks/masking.py [--samples 3000]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from noising import build_data, measure  # noqa: E402  (same corpus and timing loop)


def datasets(data: Path, whole_words: bool):
    import torch
    from fairseq.data import MaskTokensDataset

    from fairseq_ext.tasks.hf_masked_lm import HFMaskedLMConfig, HFMaskedLMTask

    task = HFMaskedLMTask.setup_task(HFMaskedLMConfig(
        data=str(data), tokens_per_sample=512, seed=1, dataset_impl=None,
        mask_unit="word" if whole_words else "subword"))
    task.load_dataset("train")
    ours = task.datasets["train"]
    d = task.source_dictionary
    wwm = torch.ByteTensor(d.word_starts().astype("uint8")) if whole_words else None
    m = ours.mask
    src, tgt = MaskTokensDataset.apply_mask(ours.blocks, d, pad_idx=d.pad(), mask_idx=d.mask_index, seed=1,
                                            mask_prob=m.mask_prob, leave_unmasked_prob=m.leave_unmasked_prob,
                                            random_token_prob=m.random_token_prob, mask_whole_words=wwm)
    return ours, _Pair(src, tgt)


class _Pair:
    """fairseq's masked source and target as one sample, as a task would zip them."""

    def __init__(self, src, tgt):
        self.src, self.tgt = src, tgt

    def __len__(self):
        return len(self.src)

    def __getitem__(self, i):
        return {"source": self.src[i], "target": self.tgt[i]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=3000)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="masking-bench-"))
    try:
        data = build_data(work)
        print("| masking | fairseq MaskTokensDataset samples/s | fairseq_ext samples/s | speed-up | target |")
        print("|---|---:|---:|---:|---:|")
        for whole, target in ((False, 3), (True, 5)):
            ours, theirs = datasets(data, whole)
            n = min(args.samples, len(ours))
            t_theirs = min(measure(theirs, n)[0] for _ in range(2))
            t_ours = min(measure(ours, n)[0] for _ in range(2))
            name = "whole-word" if whole else "plain"
            print(f"| {name} | {n / t_theirs:,.0f} | {n / t_ours:,.0f} | {t_theirs / t_ours:.1f}x | >= {target}x |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
