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
  (d) startup (b) on json/ alone: the fixed cost of a run (importing transformers and
              datasets, loading the tokenizer), which (a) does not pay

Prints a table of tokens/s, CPU seconds, peak RSS and the ratios. (a) and (b) run
--repeat times, interleaved, and the fastest of each counts: on a shared machine the
wall-clock ratio is noisy, the CPU ratio much less so.

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
from binarize import command  # noqa: E402  (the installed script beside this Python, as users run it)

WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
dt = time.perf_counter() - t
if p.returncode:
    sys.stderr.write(p.stdout[-2000:] + p.stderr[-4000:]); sys.exit(p.returncode)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": dt, "cpu": r.ru_utime + r.ru_stime, "rss_mb": r.ru_maxrss / 1024, "stdout": p.stdout}))
"""


def timed(cmd: list[str], env=None) -> dict:
    """Run ``cmd``: wall seconds, CPU seconds (user + system) and peak RSS (MB) of its largest process, stdout."""
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode:
        raise SystemExit(f"benchmark step failed: {' '.join(cmd)}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

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


def best(runs: list[dict]) -> dict:
    """The fastest run's time and CPU, the largest peak RSS of all."""
    fastest = min(runs, key=lambda r: r["seconds"])
    return dict(fastest, rss_mb=max(r["rss_mb"] for r in runs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="cores to use (default: all)")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--work", default=str(HERE / "work-code"), help="scratch directory (removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved runs of (a) encode_batch_fast and (b), best kept (a shared machine is noisy)")
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

    def code_dataset(name: str, *extra: str) -> list[str]:
        return [*fx, "code-dataset", str(stdlib), "-o", str(work / name), "--tokenizer", str(work / "tok"),
                "--workers", n, "--quiet", "--overwrite", *extra]

    def limit(method: str) -> list[str]:
        return [sys.executable, "-c", LIMIT, str(work / "tok" / "tokenizer.json"), str(work / "files.txt"), method]

    timed(code_dataset("arrow"), env)  # the file list for (a), and a warm page cache for everyone
    import datasets

    dd = datasets.load_from_disk(str(work / "arrow"))
    (work / "files.txt").write_text("".join(f"{stdlib.parent / p}\n" for split in dd for p in dd[split]["path"]))
    del dd
    names = {"b": "(b) fairseq-ext code-dataset", "a": "(a) encode_batch_fast (limit)"}
    runs: dict[str, list[dict]] = {k: [] for k in names}
    for _ in range(max(1, args.repeat)):  # interleaved, so that a busy moment hits both alike
        runs["b"].append(timed(code_dataset("arrow"), env))
        runs["a"].append(timed(limit("encode_batch_fast"), env))
    rows = {names[k]: best(v) for k, v in runs.items()}
    rows["(b) fairseq-ext code-dataset --format both"] = timed(code_dataset("both", "--format", "both"), env)
    rows["(c) half: --exclude /test/"] = timed(code_dataset("half", "--exclude", "/test/"), env)
    rows["(a) encode_batch (limit)"] = timed(limit("encode_batch"), env)
    # the fixed cost of a run (imports of transformers and datasets, loading the tokenizer): json/ alone
    rows["(d) startup: --include /json/ (5 files)"] = best([timed(code_dataset(
        "tiny", "--include", "/json/", "--split-by", "file", "--valid-ratio", "0"), env) for _ in range(2)])

    stats = {k: json.loads((work / d / "code_dataset.json").read_text())
             for k, d in (("full", "arrow"), ("half", "half"), ("tiny", "tiny"))}
    tokens = {k: v["tokens"] for k, v in stats.items()}
    mb = {k: sum(s["bytes"] for s in v["splits"].values()) / 1e6 for k, v in stats.items()}
    for name in ("(a) encode_batch_fast (limit)", "(a) encode_batch (limit)"):
        assert int(rows[name]["stdout"].strip()) == tokens["full"], "the limit encoded other tokens"
    print(f"stdlib: {stdlib}, {stats['full']['files_seen']:,} files seen, {stats['full']['kept']:,} kept "
          f"({mb['full']:.1f} MB, {tokens['full']:,} tokens); workers: {n}; best of {args.repeat} for (a) fast, (b)\n")
    print("| path | MB | seconds | tokens/s | CPU seconds | peak RSS (MB) |\n|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        which = {"(c)": "half", "(d)": "tiny"}.get(name[:3], "full")
        print(f"| {name} | {mb[which]:.2f} | {r['seconds']:.1f} | {tokens[which] / r['seconds']:,.0f} | "
              f"{r['cpu']:.1f} | {r['rss_mb']:,.0f} |")
    ours, fast = rows[names["b"]], rows[names["a"]]
    print(f"\n(b) / (a) tokens/s: {fast['seconds'] / ours['seconds']:.2f}x wall, "
          f"{fast['cpu'] / ours['cpu']:.2f}x CPU   (target >= 0.8)")
    startup = rows["(d) startup: --include /json/ (5 files)"]["seconds"]
    print(f"(b) / (a) without (b)'s fixed startup of {startup:.1f} s: "
          f"{fast['seconds'] / (ours['seconds'] - startup):.2f}x wall")
    half = rows["(c) half: --exclude /test/"]
    print(f"(b) peak RSS: {ours['rss_mb']:,.0f} MB on {mb['full']:.0f} MB, {half['rss_mb']:,.0f} MB on "
          f"{mb['half']:.0f} MB (ratio {ours['rss_mb'] / half['rss_mb']:.2f}; target: independent of size)")
    print("skipped (full run):", ", ".join(f"{r} {c}" for r, c in stats["full"]["skipped"].items() if c))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
