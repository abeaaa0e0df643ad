"""A table's text is read in batches bounded as a text file's are, whatever the size of a row or of the file.

(benchmarks/binarize.py found both: a 9.4 MB document made a 12 MB batch where text makes 4 MB ones, and
Parquet's reader held every row group of the file until the end.)
"""

from __future__ import annotations

import importlib
import json
import random

from fairseq_ext.cli.main import main
from fairseq_ext.prep.binarizer import read_line_batches
from fairseq_ext.prep.tables import TableInput, TableOptions, TableText

MODULES = ("argparse", "csv", "json", "textwrap", "difflib", "heapq", "pathlib", "statistics", "dataclasses")


def documents() -> list[str]:
    """Module docstrings as documents (no blank line inside), the middle one long: about 40 times the others."""
    docs = []
    for name in MODULES:
        doc = importlib.import_module(name).__doc__ or ""
        lines = [line.strip() for line in doc.replace("\r", "").split("\n") if line.strip()]
        docs.append("\n".join(lines))
    docs[len(docs) // 2] = "\n".join(docs * 40)
    return docs


def test_a_long_row_is_cut_between_lines_as_a_text_file_is(tmp_path):
    docs = documents()
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    text = tmp_path / "c.txt"
    text.write_text("".join(d + "\n\n" for d in docs), encoding="utf-8")
    batch = 4096
    longest = max(len(line) for d in docs for line in d.split("\n"))
    assert len(docs[len(docs) // 2]) > 20 * batch

    batches = list(TableText(TableInput(path, {"text": "text"}, TableOptions())).line_batches(batch))
    for lines, _first, _consumed in batches:
        assert sum(len(line) + 1 for line in lines) <= batch + longest + 1
    table_lines = [line for lines, _, _ in batches for line in lines]
    assert table_lines == [line for lines, _, _ in read_line_batches(text, batch) for line in lines]
    firsts = [first for _, first, _ in batches]
    assert firsts == sorted(firsts) and firsts.count(len(docs) // 2 + 1) >= 20  # the long row's batches
    assert sum(consumed for _, _, consumed in batches) == path.stat().st_size


def test_binarize_cuts_a_long_row_into_batches_and_writes_the_text_path_bytes(tmp_path, bpe_dir):
    docs = documents()
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    (tmp_path / "c.txt").write_text("".join(d + "\n\n" for d in docs), encoding="utf-8")
    for name in ("c.txt", "c.jsonl"):
        assert main(["binarize", "--tokenizer", str(bpe_dir), "--train", str(tmp_path / name), "-o",
                     str(tmp_path / f"bin-{name}"), "--batch-mb", "0.01", "--quiet"]) == 0
    for name in ("train.bin", "train.idx"):
        assert (tmp_path / "bin-c.jsonl" / name).read_bytes() == (tmp_path / "bin-c.txt" / name).read_bytes()


def test_parquet_is_read_a_row_group_at_a_time(tmp_path):
    """pyarrow's iter_batches over a whole file pre-buffers every row group and holds them: memory grows with the
    file. Read by row group, the first row costs about one row group of Arrow memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(0)  # random hex digits: the compressed file is as large as the text
    rows = [f"{rng.getrandbits(4000):01000x}" for _ in range(4000)]
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"text": rows}), path, row_group_size=200)
    assert pq.ParquetFile(path).num_row_groups == 20
    before = pa.total_allocated_bytes()
    it = iter(TableInput(path, {"text": "text"}, TableOptions()))
    _where, values = next(it)
    assert values["text"] == rows[0]
    assert pa.total_allocated_bytes() - before < path.stat().st_size / 4
    assert [v["text"] for _w, v in it] == rows[1:]  # every row group, in order
