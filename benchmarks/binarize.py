"""Binarization speed and memory: fairseq-ext binarize vs. its limit and the classic path.

Builds a text corpus of at least --mb megabytes from text on this machine
(Debian's documentation under /usr/share/doc, decompressed, and the Python
standard library's docstrings), trains a byte-level BPE tokenizer on a slice of
it, then measures in one run, each in its own process:

  (a) limit     the fast tokenizer's batch encoding over the same lines, writing nothing
  (b) ours      `fairseq-ext binarize` (end to end: read, encode, write .bin/.idx)
  (c) classic   GPT-2-style BPE (fairseq's gpt2_bpe_utils) in a process pool writing ids
                as text, then `fairseq-preprocess --only-source --srcdict --workers N`

The corpus is a list of documents (a documentation file, or one module's
docstrings), each followed by a blank line; the same documents are also written
as Pile-style JSON lines compressed with zstd (``{"text": ..., "meta": {...}}``)
and as Parquet (``text`` and ``source`` columns, row groups of about 8 MB), and
``fairseq-ext binarize`` reads each of them:

  (d) .jsonl.zst  and  (e) Parquet,  whose .bin/.idx must be byte-identical to (b)'s

Then (b), (d) and (e) run again on the corpus written twice, to show that peak
memory does not grow with the corpus. Prints tables of tokens/s, peak RSS and
the ratios; (a) and (c) are left out with --formats-only.

    python benchmarks/binarize.py [--mb 50] [--workers N] [--work DIR] [--formats-only]
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent


PARQUET_ROW_GROUP_BYTES = 8_000_000


def build_documents(mb: float) -> list[tuple[str, str]]:
    """At least ``mb`` MB of real text as ``(source, text)`` documents, lines stripped, no blank line inside.

    A document is a file of /usr/share/doc (decompressed) or the docstrings of one standard-library module,
    taken round after round until the corpus is big enough.
    """
    from fairseq_ext.prep.builtin_corpus import docstring_paragraphs, stdlib_sources

    target = int(mb * 1e6)
    written = 0
    docs: list[tuple[str, str]] = []
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
            block = "\n".join(ln.strip() for ln in text.splitlines() if ln.strip())
            if block:
                docs.append((str(p), block))
                written += len(block.encode("utf-8")) + 2
            if written >= target:
                break
        for p in stdlib_sources():
            if written >= target:
                break
            block = "\n".join(docstring_paragraphs(p.read_text(encoding="utf-8", errors="replace")))
            if block:
                docs.append((str(p), block))
                written += len(block.encode("utf-8")) + 2
        if written == before:
            raise SystemExit("no text found on this machine to build the corpus")
    return docs


def write_corpora(work: Path, name: str, docs: list[tuple[str, str]], copies: int) -> dict[str, Path]:
    """The documents, ``copies`` times over, as text (a blank line after each), .jsonl.zst and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    paths = {"text": work / f"{name}.txt", "jsonl.zst": work / f"{name}.jsonl.zst",
             "parquet": work / f"{name}.parquet"}
    rows = docs * copies
    with open(paths["text"], "w", encoding="utf-8") as out:
        out.writelines(text + "\n\n" for _source, text in rows)
    with open(paths["jsonl.zst"], "wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
        for i, (source, text) in enumerate(rows):
            line = json.dumps({"text": text, "meta": {"source": source, "id": i}}, ensure_ascii=False)
            out.write(line.encode("utf-8") + b"\n")
    schema = pa.schema([("text", pa.string()), ("source", pa.string())])
    with pq.ParquetWriter(paths["parquet"], schema) as writer:
        for group in list(row_groups(docs)) * copies:  # the double holds the same row groups twice
            writer.write_table(pa.table({"text": [t for _s, t in group], "source": [s for s, _t in group]},
                                        schema=schema))
    return paths


def row_groups(rows: list[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    """Consecutive rows holding about PARQUET_ROW_GROUP_BYTES of text each, as writers that bound a row group's
    size write them (a reader's memory is bounded by the row group, so a file of one huge group defeats it)."""
    group, size = [], 0
    for row in rows:
        group.append(row)
        size += len(row[1])
        if size >= PARQUET_ROW_GROUP_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


def same_bytes(dirs: dict[str, Path]) -> None:
    """Every directory's train.bin and train.idx equal the first one's, or the benchmark stops saying which differ."""
    (first, base), *others = dirs.items()
    for name, d in others:
        for suffix in ("bin", "idx"):
            a, b = base / f"train.{suffix}", d / f"train.{suffix}"
            if not filecmp.cmp(a, b, shallow=False):
                raise SystemExit(f"FAILED: binarize from {name} wrote a train.{suffix} different from {first}'s "
                                 f"({b.stat().st_size:,} vs {a.stat().st_size:,} bytes): the table path must write "
                                 "the same bytes as the same documents in a text file")


def command(script: str, module: str) -> list[str]:
    """The installed ``script`` beside this Python, as users run it; else ``python -m module``.

    Found through ``sys.executable``, not PATH: ``.venv/bin/python benchmarks/binarize.py``
    works without activating the virtualenv.
    """
    path = Path(sys.executable).parent / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def timed(cmd: list[str], env=None) -> tuple[float, float, str]:
    """Run ``cmd``; return (seconds, peak RSS in MB of its largest process, stdout)."""
    seconds, rss, _cpu, stdout = timed_cpu(cmd, env)
    return seconds, rss, stdout


def timed_cpu(cmd: list[str], env=None) -> tuple[float, float, float, str]:
    """Run ``cmd``; return (seconds, peak RSS in MB of its largest process, CPU seconds, stdout).

    CPU seconds (user + system, all threads) move less than wall time when other jobs share the cores.
    """
    wrapper = textwrap.dedent("""
        import json, resource, subprocess, sys, time
        t = time.perf_counter()
        p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
        dt = time.perf_counter() - t
        if p.returncode:
            sys.stderr.write(p.stdout[-2000:] + p.stderr[-4000:]); sys.exit(p.returncode)
        use = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(json.dumps({"seconds": dt, "rss_mb": use.ru_maxrss / 1024, "cpu": use.ru_utime + use.ru_stime,
                          "stdout": p.stdout}))
    """)
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})))
    if proc.returncode:
        raise SystemExit(f"benchmark step failed: {' '.join(cmd)}\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return result["seconds"], result["rss_mb"], result["cpu"], result["stdout"]


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


def binarize(fx: list[str], work: Path, source: Path, out: str, workers: str) -> tuple[float, float, dict]:
    """``fairseq-ext binarize --train source`` in its own process: (seconds, peak RSS MB, train's counts
    with ``cpu_seconds`` added)."""
    t, rss, cpu, _ = timed_cpu([*fx, "binarize", "--tokenizer", str(work / "tok"), "--train", str(source), "-o",
                                str(work / out), "--workers", workers, "--quiet"])
    counts = json.loads((work / out / "binarize.json").read_text())["splits"]["train"]
    return t, rss, dict(counts, cpu_seconds=cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=50.0, help="corpus size in MB (default %(default)s)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="cores to use (default: all)")
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--work", default=str(HERE / "work"), help="scratch directory (removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--formats-only", action="store_true",
                    help="only (b), (d) and (e) and their doubles: text vs .jsonl.zst vs Parquet, no (a) or (c)")
    args = ap.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    docs = build_documents(args.mb)
    inputs = write_corpora(work, "corpus", docs, 1)
    doubles = write_corpora(work, "double", docs, 2)
    corpus = inputs["text"]
    size = corpus.stat().st_size
    sample = work / "sample.txt"
    with open(corpus, "rb") as src, open(sample, "wb") as dst:
        dst.write(src.read(8_000_000).rsplit(b"\n", 1)[0] + b"\n")
    fx = command("fairseq-ext", "fairseq_ext.cli.main")
    subprocess.run([*fx, "train-tokenizer", "-i", str(sample), "-o", str(work / "tok"), "--vocab-size",
                    str(args.vocab_size), "--quiet"], check=True, capture_output=True)
    tok_json = str(work / "tok" / "tokenizer.json")
    n = str(args.workers)
    env = {"RAYON_NUM_THREADS": n, "RAYON_RS_NUM_CPUS": n}
    print(f"corpus: {size / 1e6:.1f} MB, {sum(1 for _ in open(corpus, 'rb')):,} lines, {len(docs):,} documents; "
          f"on disk: {', '.join(f'{k} {p.stat().st_size / 1e6:.1f} MB' for k, p in inputs.items())}; "
          f"workers: {n}", flush=True)
    binarize(fx, work, sample, "warm-up", n)  # the first start reads the libraries from disk: time none of that

    rows = {}
    if not args.formats_only:
        for method in ("encode_batch_fast", "encode_batch"):
            t, rss, out = timed([sys.executable, "-c", LIMIT, tok_json, str(corpus), method], env)
            rows[f"(a) {method} (limit)"] = (t, rss, int(out.strip()))
    formats = measure_formats(fx, work, inputs, doubles, n)
    t, rss, counts = formats["text"][0]
    tokens = counts["tokens"]
    rows["(b) fairseq-ext binarize"] = (t, rss, tokens)
    if not args.formats_only:
        rows.update(classic(work, tok_json, corpus, n, args.vocab_size, tokens))
    for label, kind in (("(d) binarize from .jsonl.zst", "jsonl.zst"), ("(e) binarize from Parquet", "parquet")):
        t, rss, counts = formats[kind][0]
        rows[label] = (t, rss, counts["tokens"])

    print("\n| path | seconds | tokens/s | peak RSS (MB) |\n|---|---:|---:|---:|")
    for name, (t, rss, tok) in rows.items():
        print(f"| {name} | {t:.1f} | {tok / t:,.0f} | {rss:,.0f} |")
    print_formats(formats, inputs, size)
    if not args.formats_only:
        limit = max(v[2] / v[0] for k, v in rows.items() if k.startswith("(a)"))
        ours = rows["(b) fairseq-ext binarize"]
        old = rows["(c) classic: gpt2 BPE pool + fairseq-preprocess"]
        print(f"(b) / fastest (a) tokens/s: {ours[2] / ours[0] / limit:.2f}x   (target >= 0.8)")
        print(f"(b) vs (c) end to end:      {old[0] / ours[0]:.1f}x faster   (target >= 3)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def measure_formats(fx: list[str], work: Path, inputs: dict, doubles: dict, workers: str) -> dict:
    """{input kind: ((seconds, RSS, counts) on the corpus, the same on its double)}; the outputs of the three
    kinds must be byte-identical, and the double's tokens twice the corpus's."""
    formats = {kind: (binarize(fx, work, inputs[kind], f"bin-{kind}", workers),
                      binarize(fx, work, doubles[kind], f"bin2-{kind}", workers)) for kind in inputs}
    same_bytes({kind: work / f"bin-{kind}" for kind in inputs})
    same_bytes({kind: work / f"bin2-{kind}" for kind in inputs})
    once, twice = (formats["text"][i][2]["tokens"] for i in (0, 1))
    if twice != 2 * once:
        raise SystemExit(f"FAILED: the corpus written twice gave {twice:,} tokens, not twice {once:,}")
    return formats


def classic(work: Path, tok_json: str, corpus: Path, workers: str, vocab_size: int, tokens: int) -> dict:
    """(c): GPT-2 BPE in a process pool writing ids as text, then fairseq-preprocess."""
    t1, rss1, _ = timed([sys.executable, "-c", CLASSIC_ENCODE, tok_json, str(corpus), str(work / "ids.txt"), workers])
    with open(work / "dict.txt", "w") as f:
        f.writelines(f"{i} 1\n" for i in range(vocab_size))
    t2, rss2, _ = timed([*command("fairseq-preprocess", "fairseq_cli.preprocess"), "--only-source", "--srcdict",
                         str(work / "dict.txt"), "--trainpref", str(work / "ids.txt"), "--destdir",
                         str(work / "classic"), "--workers", workers, "--dataset-impl", "mmap"])
    return {"(c) classic: gpt2 BPE pool + fairseq-preprocess": (t1 + t2, max(rss1, rss2), tokens),
            "    (c1) gpt2 BPE encoding to text": (t1, rss1, tokens),
            "    (c2) fairseq-preprocess": (t2, rss2, tokens)}


def print_formats(formats: dict, inputs: dict, size: int) -> None:
    """The table of text vs .jsonl.zst vs Parquet, once and twice over, and the ratios to their targets."""
    counts = formats["text"][0][2]
    text_rate = counts["tokens"] / formats["text"][0][0]
    text_cpu = formats["text"][0][2]["cpu_seconds"]
    print("\n| input | MB on disk | seconds | tokens/s | vs text | CPU s | vs text (CPU) | peak RSS (MB) "
          "| 2x: seconds | 2x: peak RSS (MB) | RSS 2x / 1x |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, ((t, rss, c), (t2, rss2, _)) in formats.items():
        print(f"| {kind} | {inputs[kind].stat().st_size / 1e6:.1f} | {t:.1f} | {c['tokens'] / t:,.0f} "
              f"| {c['tokens'] / t / text_rate:.2f}x | {c['cpu_seconds']:.1f} | {text_cpu / c['cpu_seconds']:.2f}x "
              f"| {rss:,.0f} | {t2:.1f} | {rss2:,.0f} | {rss2 / rss:.2f} |")
    print(f"\n.bin/.idx byte-identical from text, .jsonl.zst and Parquet (once and twice over); "
          f"{counts['tokens']:,} tokens, {counts['documents']:,} documents")
    for letter, kind in (("d", "jsonl.zst"), ("e", "parquet")):
        rate = formats[kind][0][2]["tokens"] / formats[kind][0][0]
        cpu = text_cpu / formats[kind][0][2]["cpu_seconds"]
        print(f"({letter}) {kind} / (b) text tokens/s: {rate / text_rate:.2f}x   (target >= 0.9; per CPU second "
              f"{cpu:.2f}x)")
    print("peak RSS on the corpus written twice / once: "
          + ", ".join(f"{kind} {d[1] / s[1]:.2f}" for kind, (s, d) in formats.items())
          + f" ({size / 1e6:.0f} MB and {2 * size / 1e6:.0f} MB of text; target: flat)")


if __name__ == "__main__":
    sys.exit(main())
