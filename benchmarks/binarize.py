"""Binarization speed and memory: fairseq-ext binarize vs. its limit and the classic path.

Builds a text corpus of at least --mb megabytes from text on this machine
(Debian's documentation under /usr/share/doc, decompressed, and the Python
standard library's docstrings), trains a byte-level BPE tokenizer on a slice of
it, then measures in one run, each in its own process:

  (a) limit     the fast tokenizer's batch encoding over the same lines, writing nothing
  (b) ours      `fairseq-ext binarize` (end to end: read, encode, write .bin/.idx)
  (c) classic   GPT-2-style BPE (fairseq's gpt2_bpe_utils) in a process pool writing ids
                as text, then `fairseq-preprocess --only-source --srcdict --workers N`

and (b) again on a quarter of the corpus, to show that peak memory does not grow
with the corpus. Prints a table of tokens/s, peak RSS and the ratios.

    python benchmarks/binarize.py [--mb 50] [--workers N] [--work DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent


def build_corpus(path: Path, mb: float) -> int:
    """Write at least ``mb`` MB of real text lines; return the byte count."""
    from fairseq_ext.prep.builtin_corpus import docstring_paragraphs, stdlib_sources

    target = int(mb * 1e6)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        sources = [p for p in sorted(Path("/usr/share/doc").rglob("*")) if p.is_file()]
        while written < target:
            before = written
            for p in sources:
                try:
                    raw = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes()
                    text = raw.decode("utf-8")
                except (OSError, UnicodeDecodeError, EOFError):
                    continue
                if "\x00" in text:
                    continue
                block = "\n".join(ln.strip() for ln in text.splitlines() if ln.strip()) + "\n"
                out.write(block)
                written += len(block.encode("utf-8"))
                if written >= target:
                    break
            for p in stdlib_sources():
                if written >= target:
                    break
                block = "\n".join(docstring_paragraphs(p.read_text(encoding="utf-8", errors="replace")))
                if block:
                    out.write(block + "\n")
                    written += len(block.encode("utf-8")) + 1
            if written == before:
                raise SystemExit("no text found on this machine to build the corpus")
    return written


def command(script: str, module: str) -> list[str]:
    """The installed ``script`` beside this Python, as users run it; else ``python -m module``.

    Found through ``sys.executable``, not PATH: ``.venv/bin/python benchmarks/binarize.py``
    works without activating the virtualenv.
    """
    path = Path(sys.executable).parent / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def timed(cmd: list[str], env=None) -> tuple[float, float, str]:
    """Run ``cmd``; return (seconds, peak RSS in MB of its largest process, stdout)."""
    wrapper = textwrap.dedent("""
        import json, resource, subprocess, sys, time
        t = time.perf_counter()
        p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
        dt = time.perf_counter() - t
        if p.returncode:
            sys.stderr.write(p.stdout[-2000:] + p.stderr[-4000:]); sys.exit(p.returncode)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps({"seconds": dt, "rss_mb": rss, "stdout": p.stdout}))
    """)
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode:
        raise SystemExit(f"benchmark step failed: {' '.join(cmd)}\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["seconds"], result["rss_mb"], result["stdout"]


LIMIT = """
import sys, time, numpy as np
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1]); tok.encode_special_tokens = True
encode = getattr(tok, sys.argv[3])
n = 0
with open(sys.argv[2], "rb") as f:
    while True:
        raw = f.readlines(4 << 20)
        if not raw:
            break
        lines = [l for l in b"".join(raw).decode("utf-8").split("\\n") if l.strip()]
        n += sum(len(e.ids) + 1 for e in encode(lines, add_special_tokens=False))
print(n)
"""

CLASSIC_ENCODE = """
import json, sys
from multiprocessing import Pool
from fairseq.data.encoders.gpt2_bpe_utils import Encoder
tok = json.load(open(sys.argv[1]))["model"]
merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in tok["merges"]]
enc = None
def init():
    global enc
    enc = Encoder(tok["vocab"], merges)
def encode(lines):
    return [" ".join(map(str, enc.encode(l))) if l.strip() else "" for l in lines]
def chunks(f, n=1000):
    buf = []
    for line in f:
        buf.append(line.rstrip("\\n"))
        if len(buf) == n:
            yield buf; buf = []
    if buf:
        yield buf
with open(sys.argv[2], encoding="utf-8") as f, open(sys.argv[3], "w") as out, Pool(int(sys.argv[4]), init) as pool:
    for lines in pool.imap(encode, chunks(f), chunksize=4):
        out.write("\\n".join(lines) + "\\n")
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB (default %(default)s)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="cores to use (default: all)")
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--work", default=str(HERE / "work"), help="scratch directory (removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus = work / "corpus.txt"
    size = build_corpus(corpus, args.mb)
    quarter = work / "quarter.txt"
    with open(corpus, "rb") as src, open(quarter, "wb") as dst:
        dst.write(src.read(size // 4).rsplit(b"\n", 1)[0] + b"\n")
    sample = work / "sample.txt"
    with open(corpus, "rb") as src, open(sample, "wb") as dst:
        dst.write(src.read(8_000_000).rsplit(b"\n", 1)[0] + b"\n")
    fx = command("fairseq-ext", "fairseq_ext.cli.main")
    subprocess.run([*fx, "train-tokenizer", "-i", str(sample), "-o", str(work / "tok"), "--vocab-size",
                    str(args.vocab_size), "--quiet"], check=True, capture_output=True)
    tok_json = str(work / "tok" / "tokenizer.json")
    n = str(args.workers)
    env = {"RAYON_NUM_THREADS": n, "RAYON_RS_NUM_CPUS": n}
    print(f"corpus: {size / 1e6:.1f} MB, {sum(1 for _ in open(corpus, 'rb')):,} lines; workers: {n}", flush=True)

    rows = {}
    for method in ("encode_batch_fast", "encode_batch"):
        t, rss, out = timed([sys.executable, "-c", LIMIT, tok_json, str(corpus), method], env)
        rows[f"(a) {method} (limit)"] = (t, rss, int(out.strip()))
    t, rss, out = timed([*fx, "binarize", "--tokenizer", str(work / "tok"), "--train", str(corpus), "-o",
                         str(work / "bin"), "--workers", n, "--quiet"])
    tokens = json.loads((work / "bin" / "binarize.json").read_text())["splits"]["train"]["tokens"]
    rows["(b) fairseq-ext binarize"] = (t, rss, tokens)
    t_q, rss_q, _ = timed([*fx, "binarize", "--tokenizer", str(work / "tok"), "--train", str(quarter), "-o",
                           str(work / "bin-q"), "--workers", n, "--quiet"])
    t1, rss1, _ = timed([sys.executable, "-c", CLASSIC_ENCODE, tok_json, str(corpus), str(work / "ids.txt"), n])
    with open(work / "dict.txt", "w") as f:
        f.writelines(f"{i} 1\n" for i in range(args.vocab_size))
    t2, rss2, _ = timed([*command("fairseq-preprocess", "fairseq_cli.preprocess"), "--only-source", "--srcdict",
                         str(work / "dict.txt"), "--trainpref", str(work / "ids.txt"), "--destdir",
                         str(work / "classic"), "--workers", n, "--dataset-impl", "mmap"])
    rows["(c) classic: gpt2 BPE pool + fairseq-preprocess"] = (t1 + t2, max(rss1, rss2), tokens)
    rows["    (c1) gpt2 BPE encoding to text"] = (t1, rss1, tokens)
    rows["    (c2) fairseq-preprocess"] = (t2, rss2, tokens)

    print("\n| path | seconds | tokens/s | peak RSS (MB) |\n|---|---:|---:|---:|")
    for name, (t, rss, tok) in rows.items():
        print(f"| {name} | {t:.1f} | {tok / t:,.0f} | {rss:,.0f} |")
    limit = max(v[2] / v[0] for k, v in rows.items() if k.startswith("(a)"))
    ours = rows["(b) fairseq-ext binarize"]
    classic = rows["(c) classic: gpt2 BPE pool + fairseq-preprocess"]
    print(f"\n(b) / fastest (a) tokens/s: {ours[2] / ours[0] / limit:.2f}x   (target >= 0.8)")
    print(f"(b) vs (c) end to end:      {classic[0] / ours[0]:.1f}x faster   (target >= 3)")
    print(f"(b) peak RSS: {ours[1]:,.0f} MB on {size / 1e6:.0f} MB, {rss_q:,.0f} MB on {size / 4e6:.0f} MB "
          f"(ratio {ours[1] / rss_q:.2f}; memory independent of corpus size)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
