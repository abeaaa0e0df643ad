"""Gradient caching: peak memory and pairs/s of one code_contrastive training step, plain vs cached.

Builds (docstring, code) pairs from the standard-library packages of this Python
(``write_builtin_code``, a byte-level BPE trained on them, ``code-pairs --kind
docstring``), then measures one optimizer step -- the task's ``train_step`` (fairseq's
own: forward and backward through a small ``t5_encoder`` and ``--criterion info_nce``,
symmetric, in-batch negatives; with ``--grad-cache-chunk`` the criterion caches and the
backward replays the chunks) and Adam's update -- at each batch size, plain and with
``--grad-cache-chunk``, each configuration in a fresh process:

  memory   CPU: the process's peak RSS (``ru_maxrss``) and how much the timed steps
           added to the high-water mark reached after building the model and the
           batch and one untimed step of 8 pairs (first-call costs, Adam's state);
           CUDA: ``torch.cuda.max_memory_allocated`` during the timed steps, and the
           same minus what was allocated before them
  speed    pairs/s over the timed steps (3 at 64 pairs, 2 at 512, 1 above 512)

Every query and key is cut to its limit (--query-tokens, --key-tokens), as the task
cuts them; when the corpus has fewer pairs than a batch, pairs repeat. On CPU each
process's address space is capped (--memory-limit-gb, default 3/4 of the memory
available at the start) so that a configuration too big for the machine fails with
an allocation error, reported as "does not fit", rather than waking the kernel's
out-of-memory killer on a shared machine.

    python benchmarks/grad_cache.py [--batches 64,512,4096] [--chunk 64] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = ["--arch", "t5_encoder_small", "--encoder-layers", "2", "--encoder-embed-dim", "128", "--kv-dim", "32",
         "--encoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4", "--feed-forward-proj", "gated-gelu",
         "--criterion", "info_nce", "--symmetric", "--optimizer", "adam", "--lr", "1e-4", "--seed", "1"]


def build_pairs(work: Path, megabytes: float) -> Path:
    from fairseq_ext.prep.builtin_corpus import write_builtin_code
    from fairseq_ext.prep.code_dataset import CodeDatasetConfig
    from fairseq_ext.prep.code_pairs import CodePairsConfig, build_code_pairs
    from fairseq_ext.prep.tokenizer_training import train_tokenizer

    write_builtin_code(work / "raw", max_bytes=int(megabytes * 1e6))
    tok = train_tokenizer([work / "raw"], kind="bpe", vocab_size=8000, show_progress=False)
    tok.save_pretrained(str(work / "tok"))
    stats = build_code_pairs([work / "raw"], work / "pairs", CodePairsConfig(
        CodeDatasetConfig(tokenizer=str(work / "tok"), valid_ratio=0.05), kind="docstring"), progress=False)
    print(f"pairs: {stats['splits']['train']['pairs']:,} train (docstring, code) from {megabytes:g} MB of stdlib "
          "packages", flush=True)
    return work / "pairs"


def worker(data: str, batch: int, chunk: int, steps: int, device: str, query_tokens: int, key_tokens: int,
           limit_gb: float) -> dict:
    """One configuration in this process: -> {"seconds", "pairs_per_s", "peak_mb", "step_mb"}."""
    if device == "cpu" and limit_gb > 0:
        resource.setrlimit(resource.RLIMIT_AS, (int(limit_gb * 2**30), int(limit_gb * 2**30)))
    import torch
    from fairseq import optim, options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    argv = [data, "--user-dir", str(REPO / "fairseq_ext"), "--task", "code_contrastive", *MODEL,
            "--max-query-tokens", str(query_tokens), "--max-key-tokens", str(key_tokens),
            "--grad-cache-chunk", str(chunk), *(["--cpu"] if device == "cpu" else [])]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    cfg = convert_namespace_to_omegaconf(args)
    utils.import_user_module(cfg.common)
    torch.manual_seed(1)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    data_set = task.dataset("train")
    model = task.build_model(cfg.model).to(device)
    criterion = task.build_criterion(cfg.criterion).to(device)
    optimizer = optim.build_optimizer(cfg.optimizer, [p for p in model.parameters() if p.requires_grad])
    sample = data_set.collater([data_set[i % len(data_set)] for i in range(batch)])
    warm = data_set.collater([data_set[i] for i in range(8)])
    sample, warm = (utils.move_to_cuda(sample), utils.move_to_cuda(warm)) if device == "cuda" else (sample, warm)

    def step(n: int, sample=sample) -> None:
        task.train_step(sample, model, criterion, optimizer, n)
        optimizer.step()
        optimizer.zero_grad()

    step(0, warm)  # untimed, 8 pairs: first-call costs (kernels, thread pools), Adam's state
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_high_water()
    start = time.perf_counter()
    for n in range(1, steps + 1):
        step(n)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "pairs_per_s": batch / seconds, "peak_mb": peak / 2**20,
            "step_mb": (peak - before) / 2**20}


def _rss_high_water() -> int:
    """The process's RSS high-water mark so far, bytes (Linux: VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _mem_available() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no MemAvailable in /proc/meminfo: give --memory-limit-gb")


def measure(data: Path, batch: int, chunk: int, args) -> dict | str:
    steps = max(1, min(3, 1024 // batch))
    cmd = [sys.executable, __file__, "--worker", str(data), "--batch", str(batch), "--chunk", str(chunk),
           "--steps", str(steps), "--device", args.device, "--query-tokens", str(args.query_tokens),
           "--key-tokens", str(args.key_tokens), "--memory-limit-gb", str(args.memory_limit_gb)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode:
        tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        if proc.returncode < 0:
            return f"killed (signal {-proc.returncode})"
        if "can't allocate memory" in tail or "MemoryError" in tail or "out of memory" in tail.lower():
            return f"does not fit in {args.memory_limit_gb:.0f} GB"
        return tail[:120]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", default="64,512,4096", help="pairs per step, comma separated")
    ap.add_argument("--chunk", type=int, default=32,
                    help="--grad-cache-chunk of the cached runs (below the smallest batch, or that batch is plain)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--query-tokens", type=int, default=64)
    ap.add_argument("--key-tokens", type=int, default=128)
    ap.add_argument("--corpus-mb", type=float, default=3.0, help="stdlib packages to take pairs from")
    ap.add_argument("--memory-limit-gb", type=float, default=None,
                    help="CPU: address-space cap of each measured process (default 3/4 of MemAvailable; 0: none)")
    ap.add_argument("--worker", metavar="PAIRS", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_limit_gb is None:
        args.memory_limit_gb = 0.75 * _mem_available() / 2**30
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.chunk, args.steps, args.device, args.query_tokens,
                                args.key_tokens, args.memory_limit_gb)))
        return 0
    work = Path(tempfile.mkdtemp(prefix="grad-cache-bench-"))
    try:
        data = build_pairs(work, args.corpus_mb)
        print(f"t5_encoder_small shrunk (2 layers, 128 wide), info_nce symmetric, queries <= {args.query_tokens} "
              f"and keys <= {args.key_tokens} tokens, device {args.device}\n")
        print("| pairs per step | plain: peak MB | plain: step MB | plain: pairs/s | cached: peak MB | "
              "cached: step MB | cached: pairs/s | memory cached/plain | pairs/s cached/plain |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for batch in (int(b) for b in args.batches.split(",")):
            plain, cached = measure(data, batch, 0, args), measure(data, batch, args.chunk, args)
            cells = []
            for r in (plain, cached):
                cells += [f"{r['peak_mb']:,.0f}", f"{r['step_mb']:,.0f}", f"{r['pairs_per_s']:,.0f}"] \
                    if isinstance(r, dict) else [r, "", ""]
            both = isinstance(plain, dict) and isinstance(cached, dict)
            ratios = ([f"{cached['step_mb'] / plain['step_mb']:.2f}",
                       f"{cached['pairs_per_s'] / plain['pairs_per_s']:.2f}"] if both else ["", ""])
            print(f"| {batch:,} | " + " | ".join(cells + ratios) + " |", flush=True)
        print(f"\ncached: --grad-cache-chunk {args.chunk}; step MB: memory the steps added to what model, optimizer "
              f"and batch held (the ratio column); each process capped at {args.memory_limit_gb:.0f} GB; targets: "
              "cached memory flat in the batch size, pairs/s >= 0.5 of plain")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
