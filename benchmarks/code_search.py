"""Code search quality for a fixed CPU budget: the model against random ranking and BM25, plain and renamed.

On this machine's Python standard library (every Python has one): each package and each top-level module
is a project; `fairseq-ext code-pairs` makes docstring -> code pairs split BY PROJECT (train / valid /
test: the test packages are never seen in training, the valid ones choose the best checkpoint), a
byte-level BPE is trained on the training projects' code only. Then:

  1. `fairseq-train --task code_contrastive --criterion info_nce` on a small t5_encoder from scratch
     for --minutes of wall-clock time (fairseq's --stop-time-hours), validating on the whole valid pool
     and keeping the best MRR;
  2. `fairseq-ext eval-retrieval BEST --split test --rename`: every test query against every test key,
     for random ranking (expected), BM25 (bm25s) and the model, on the original code and on an
     AdvTest-style copy with function, parameter and variable names replaced by placeholders.

Prints both tables and the model / BM25 ratios. The goal (issue 11): the model beats BM25 on renamed code.

    python benchmarks/code_search.py [--minutes 10] [--work DIR] [--threads N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
SKIPPED = {"test", "tests", "idlelib", "tkinter", "turtledemo", "lib2to3", "site-packages", "ensurepip",
           "pydoc_data", "__pycache__", "__phello__"}


def run(cmd: list[str], log: Path | None = None, env: dict | None = None) -> str:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env={**os.environ, **(env or {})})
    out = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(out)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}):\n{out[-3000:]}")
    return out


def corpus(dest: Path) -> int:
    """Every package of the standard library and every top-level module (in a directory of its own), tests
    and GUI code left out; -> number of projects."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    projects = 0
    for path in sorted(stdlib.iterdir()):
        if path.name in SKIPPED or path.name.startswith("config-"):
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            shutil.copytree(path, dest / path.name, ignore=shutil.ignore_patterns("__pycache__", "test", "tests"))
        elif path.suffix == ".py":
            (dest / f"{path.stem}-module").mkdir(parents=True)
            shutil.copy(path, dest / f"{path.stem}-module" / path.name)
        else:
            continue
        projects += 1
    return projects


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training time budget (wall clock, default 10)")
    p.add_argument("--work", type=Path, default=Path("/tmp/fairseq-ext-code-search"), help="working directory")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    p.add_argument("--model-args", default="--encoder-layers 2 --encoder-embed-dim 128 --kv-dim 32 "
                   "--encoder-ffn-embed-dim 512 --encoder-attention-heads 4 --dropout 0.1 --pooler-dim 128",
                   help="t5_encoder size flags (default: what trains a few updates a second on 2 CPU cores)")
    p.add_argument("--train-args", default="--lr 2e-3 --max-tokens 6144 --max-query-tokens 48 "
                   "--max-key-tokens 128 --temperature 0.05 --symmetric", help="training flags")
    p.add_argument("--keep", action="store_true", help="keep WORK (default: remove the corpus copy)")
    args = p.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    src = work / "Lib"
    projects = corpus(src)
    print(f"corpus: {projects} projects of {Path(sysconfig.get_paths()['stdlib'])}", flush=True)
    fx = BIN / "fairseq-ext"
    # the tokenizer sees the training projects only: the split is a function of (SRC, selection, seed,
    # ratios), not of the tokenizer, so a first pass with a throwaway tokenizer names the training files
    bootstrap = work / "bootstrap-tok"
    run([fx, "train-tokenizer", "-i", src / "json", "-o", bootstrap, "--kind", "bpe", "--vocab-size", "500"])
    split = ["--languages", "python", "--kind", "docstring", "--split-by", "directory", "--valid-ratio", "0.05",
             "--test-ratio", "0.15", "--seed", "0"]
    run([fx, "code-pairs", src, "-o", work / "split", "--tokenizer", bootstrap, *split, "--quiet"])
    import datasets

    train_files = sorted(set(datasets.load_from_disk(str(work / "split"))["train"]["path"]))
    train_src = work / "train-src"
    for rel in train_files:  # paths as code-pairs records them: under SRC's name
        (train_src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src.parent / rel, train_src / rel)
    run([fx, "train-tokenizer", "-i", train_src, "-o", work / "tok", "--kind", "bpe", "--vocab-size", "8000"])
    out = run([fx, "code-pairs", src, "-o", work / "pairs", "--tokenizer", work / "tok", *split, "--quiet"])
    print("\n".join(line for line in out.splitlines() if line.startswith(("train:", "valid:", "test:"))))

    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    start = time.time()
    train_log = work / "train.log"
    run([BIN / "fairseq-train", work / "pairs", "--user-dir", HERE.parent / "fairseq_ext", "--task",
         "code_contrastive", "--criterion", "info_nce", "--arch", "t5_encoder_small", *args.model_args.split(),
         *args.train_args.split(), "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--weight-decay", "0.01",
         "--clip-norm", "1.0", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "100", "--cpu",
         "--num-workers", "0", "--stop-time-hours", str(args.minutes / 60), "--max-update", "1000000",
         "--validate-interval-updates", "200", "--save-interval-updates", "200", "--keep-interval-updates", "1",
         "--no-epoch-checkpoints", "--best-checkpoint-metric", "mrr", "--maximize-best-checkpoint-metric",
         "--save-dir", work / "checkpoints", "--log-format", "simple", "--log-interval", "50", "--seed", "1"],
        log=train_log, env=env)
    minutes = (time.time() - start) / 60
    valid = [line for line in train_log.read_text().splitlines() if "valid on 'valid' subset" in line]
    updates = valid[-1].split("num_updates ")[1].split()[0] if valid else "?"
    print(f"trained {minutes:.1f} min wall, {updates} updates; last validation: "
          f"{valid[-1].split('| mrr')[1].split('| wps')[0] if valid else 'none'}")
    result = work / "eval.json"
    run([fx, "eval-retrieval", work / "checkpoints" / "checkpoint_best.pt", "--pairs", work / "pairs",
         "--split", "test", "--rename", "--json", result, "--quiet"])
    r = json.loads(result.read_text())
    print(f"\ntest pool: {r['pool']['pairs']} pairs of held-out projects (renamed: {r['renamed']['pairs']})")
    print(f"{'':26s} {'MRR':>7s} {'R@1':>7s} {'R@10':>7s}")
    for title, table in (("original code", r["pool"]["scores"]), ("renamed code", r["renamed"]["scores"])):
        for row in ("random (expected)", "BM25", "model"):
            s = table[row]
            print(f"{title + ', ' + row:26s} {s['mrr']:7.3f} {s['recall@1']:7.3f} {s['recall@10']:7.3f}")
    for title, table in (("original", r["pool"]["scores"]), ("renamed", r["renamed"]["scores"])):
        ratio = table["model"]["mrr"] / max(table["BM25"]["mrr"], 1e-9)
        print(f"model / BM25 MRR on {title} code: {ratio:.2f}x")
    if not args.keep:
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(train_src, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
