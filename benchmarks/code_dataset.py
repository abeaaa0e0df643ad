"""Code-dataset speed and memory: fairseq-ext code-dataset vs. the fast tokenizer alone.

Over the Python standard library of this machine (every Python has one), with a
byte-level BPE trained on a slice of it, measures in one run, each in its own
process:

  (a) limit   read the same files code-dataset kept and encode them with the fast
              tokenizer's batch encoding (4 MB batches), writing nothing
  (b) ours    `fairseq-ext code-dataset STDLIB` end to end (walk, filter, dedupe,
              split, encode, write Arrow and save_to_disk), and again with --format both
  (c) half    (b) on about half the corpus (--exclude /test/), to show that peak
              memory does not grow with the corpus

Prints a table of tokens/s, peak RSS and the ratios.

    python benchmarks/code_dataset.py [--workers N] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from binarize import command, timed  # noqa: E402  (the house helpers: installed script, peak RSS of a child)

LIMIT = """
import sys
from pathlib import Path
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1]); tok.encode_special_tokens = True
encode = getattr(tok, sys.argv[3])
paths = Path(sys.argv[2]).read_text().splitlines()
n, batch, size = 0, [], 0
def flush(batch):
    return sum(len(e.ids) for e in encode(batch, add_special_tokens=False))
for p in paths:
    text = Path(p).read_bytes().decode("utf-8")
    batch.append(text); size += len(text)
    if size >= 4 << 20:
        n += flush(batch); batch, size = [], 0
if batch:
    n += flush(batch)
print(n)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="cores to use (default: all)")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--work", default=str(HERE / "work-code"), help="scratch directory (removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs of (a) encode_batch_fast and (b), best time kept (a shared machine is noisy)")
    args = ap.parse_args()

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    fx = command("fairseq-ext", "fairseq_ext.cli.main")
    n = str(args.workers)
    env = {"RAYON_NUM_THREADS": n, "RAYON_RS_NUM_CPUS": n}
    packages = ("asyncio", "email", "json", "http", "unittest", "concurrent")
    slice_ = [a for d in packages for a in ("--include", f"/{d}/")]
    subprocess.run([*fx, "train-tokenizer", "-i", str(stdlib), "-o", str(work / "tok"), "--languages", "python",
                    *slice_, "--vocab-size", str(args.vocab_size), "--quiet"], check=True, capture_output=True)

    def best(cmd: list[str], runs: int) -> tuple[float, float, str]:
        results = [timed(cmd, env) for _ in range(max(1, runs))]
        return min(r[0] for r in results), max(r[1] for r in results), results[-1][2]

    def ours(name: str, *extra: str, runs: int = 1) -> tuple[float, float, dict]:
        out = work / name
        t, rss, _ = best([*fx, "code-dataset", str(stdlib), "-o", str(out), "--tokenizer", str(work / "tok"),
                          "--workers", n, "--quiet", "--overwrite", *extra], runs)
        return t, rss, json.loads((out / "code_dataset.json").read_text())

    rows = {}
    t, rss, stats = ours("arrow", runs=args.repeat)
    rows["(b) fairseq-ext code-dataset"] = (t, rss, stats["tokens"], stats)
    t, rss, stats_b = ours("both", "--format", "both")
    rows["(b) fairseq-ext code-dataset --format both"] = (t, rss, stats_b["tokens"], stats_b)
    t, rss, stats_h = ours("half", "--exclude", "/test/")
    rows["(c) half: --exclude /test/"] = (t, rss, stats_h["tokens"], stats_h)

    import datasets

    dd = datasets.load_from_disk(str(work / "arrow"))
    paths = [str(stdlib.parent / p) for split in dd for p in dd[split]["path"]]
    (work / "files.txt").write_text("\n".join(paths) + "\n")
    for method in ("encode_batch_fast", "encode_batch"):
        t, rss, out = best([sys.executable, "-c", LIMIT, str(work / "tok" / "tokenizer.json"),
                            str(work / "files.txt"), method], args.repeat if method == "encode_batch_fast" else 1)
        rows[f"(a) {method} (limit)"] = (t, rss, int(out.strip()), None)

    mb = {k: v[3]["splits"] and sum(s["bytes"] for s in v[3]["splits"].values()) / 1e6 for k, v in rows.items()
          if v[3]}
    print(f"stdlib: {stdlib}, {stats['files_seen']:,} files seen, {stats['kept']:,} kept "
          f"({mb['(b) fairseq-ext code-dataset']:.1f} MB); workers: {n}\n")
    print("| path | files | MB | seconds | tokens/s | peak RSS (MB) |\n|---|---:|---:|---:|---:|---:|")
    for name, (t, rss, tok, st) in rows.items():
        files, size = (st["kept"], mb[name]) if st else (len(paths), mb["(b) fairseq-ext code-dataset"])
        print(f"| {name} | {files:,} | {size:.1f} | {t:.1f} | {tok / t:,.0f} | {rss:,.0f} |")
    limit = max(v[2] / v[0] for k, v in rows.items() if k.startswith("(a)"))
    full, half = rows["(b) fairseq-ext code-dataset"], rows["(c) half: --exclude /test/"]
    print(f"\n(b) / fastest (a) tokens/s: {full[2] / full[0] / limit:.2f}x   (target >= 0.8)")
    print(f"(b) peak RSS: {full[1]:,.0f} MB on {mb['(b) fairseq-ext code-dataset']:.0f} MB, {half[1]:,.0f} MB on "
          f"{mb['(c) half: --exclude /test/']:.0f} MB (ratio {full[1] / half[1]:.2f}; target: independent of size)")
    print("skipped (full run):", ", ".join(f"{r} {c}" for r, c in stats["skipped"].items() if c))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
