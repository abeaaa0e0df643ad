"""Tables as corpora: JSON lines (plain and compressed), Parquet, CSV/TSV, saved datasets and --dataset.

The documents are the Python standard library's module docstrings (paragraphs, blank lines, indented
examples): the same documents written as a text file (a blank line between them) and as each table give
the same bytes from binarize, the same files from prepare, the same tokenizer and the same pieces.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib
import json
import lzma
from pathlib import Path

import pytest

from fairseq_ext.cli.main import main
from fairseq_ext.prep.tables import TableInput, TableOptions, TableText, table_format

MODULES = ("argparse", "csv", "json", "textwrap", "difflib", "heapq", "bisect", "fractions", "string", "shlex",
           "pathlib", "statistics", "calendar", "base64", "dataclasses", "functools", "contextlib", "pickle")


def docstrings() -> list[str]:
    """Module docstrings, trailing blanks removed (a text file cannot hold a document that ends in blank lines)."""
    docs = []
    for name in MODULES:
        doc = (importlib.import_module(name).__doc__ or "").replace("\r", "")
        lines = [line.rstrip() for line in doc.strip("\n").split("\n")]
        if any(line.strip() for line in lines):
            docs.append("\n".join(lines).strip("\n"))
    assert len(docs) >= 12
    return docs


def write_jsonl(path: Path, rows: list[dict], opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def write_zst(path: Path, rows: list[dict]) -> Path:
    import zstandard

    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(zstandard.ZstdCompressor(level=3).compress(data))
    return path


def write_parquet(path: Path, docs: list[str], row_group_size: int = 5, **extra) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs, **extra}), path,
                   row_group_size=row_group_size)
    return path


def write_csv(path: Path, docs: list[str], delimiter: str = ",", opener=open, encoding: str = "utf-8") -> Path:
    with opener(path, "wt", encoding=encoding, newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["id", "text"])
        w.writerows([i, d] for i, d in enumerate(docs))
    return path


def _dirs(root: Path, name: str, docs: list[str], size: int, write) -> list[str]:
    """A directory of tables holding ``size`` documents each (FineWeb/C4 style), read in sorted order."""
    (root / name).mkdir()
    for i in range(0, len(docs), size):
        write(root / name, i // size, docs[i:i + size])
    return [str(root / name)]


def _saved(root: Path, docs: list[str], as_dict: bool) -> list[str]:
    import datasets

    rows = datasets.Dataset.from_dict({"text": docs})
    if not as_dict:
        rows.save_to_disk(str(root / "ds"))
        return [str(root / "ds")]
    other = datasets.Dataset.from_dict({"text": ["Not this split."]})
    datasets.DatasetDict({"validation": other, "train": rows}).save_to_disk(str(root / "dsd"))
    return [str(root / "dsd"), "--split", "train"]


def _rows(docs: list[str]) -> list[dict]:
    return [{"text": d, "id": i} for i, d in enumerate(docs)]


# kind -> (root, docs) -> the argv naming those documents as that kind of table
TABLES = {
    "jsonl": lambda r, d: [str(write_jsonl(r / "c.jsonl", _rows(d)))],
    "ndjson": lambda r, d: [str(write_jsonl(r / "c.ndjson", _rows(d)))],
    "json": lambda r, d: [str(write_jsonl(r / "c.json", _rows(d)))],  # one object a line, named .json
    "jsonl.gz": lambda r, d: [str(write_jsonl(r / "c.jsonl.gz", _rows(d), gzip.open))],
    "jsonl.bz2": lambda r, d: [str(write_jsonl(r / "c.jsonl.bz2", _rows(d), bz2.open))],
    "jsonl.xz": lambda r, d: [str(write_jsonl(r / "c.jsonl.xz", _rows(d), lzma.open))],
    "jsonl.zst": lambda r, d: [str(write_zst(r / "c.jsonl.zst", _rows(d)))],
    # compressed, but the name does not say so: the first bytes do
    "gzip-named-jsonl": lambda r, d: [str(write_jsonl(r / "c.jsonl", _rows(d), gzip.open))],
    "parquet": lambda r, d: [str(write_parquet(r / "c.parquet", d))],
    "parquet-dir": lambda r, d: _dirs(r, "pq", d, 7, lambda at, i, part: write_parquet(
        at / f"part-{i:05d}.parquet", part, row_group_size=3)),
    "jsonl-dir": lambda r, d: _dirs(r, "js", d, 5, lambda at, i, part: write_jsonl(
        at / f"{i:03d}.jsonl.gz", [{"text": t} for t in part], gzip.open)),
    "csv": lambda r, d: [str(write_csv(r / "c.csv", d))],
    "tsv": lambda r, d: [str(write_csv(r / "c.tsv", d, delimiter="\t"))],
    "csv.gz": lambda r, d: [str(write_csv(r / "c.csv.gz", d, opener=gzip.open))],
    "csv-bom": lambda r, d: [str(write_csv(r / "c.csv", d, encoding="utf-8-sig"))],  # Excel's "CSV UTF-8"
    # compressed, named by no suffix we know (a download's .part): its first bytes, then a "{"
    "gzip-jsonl-part": lambda r, d: [str(write_jsonl(r / "c.jsonl.gz.part", _rows(d), gzip.open))],
    # a Spark-written directory: part files and an empty _SUCCESS marker
    "spark-dir": lambda r, d: _dirs(r, "spark", d, 9, lambda at, i, part: (
        write_parquet(at / f"part-{i:05d}.snappy.parquet", part), (at / "_SUCCESS").touch())),
    "nested": lambda r, d: [str(write_jsonl(r / "n.jsonl", [{"meta": {"body": {"text": t}}} for t in d])),
                            "--text-key", "meta.body.text"],
    "saved-dataset": lambda r, d: _saved(r, d, as_dict=False),
    "saved-datasetdict": lambda r, d: _saved(r, d, as_dict=True),
    "dataset-json": lambda r, d: ["--dataset", "json", "--data-files", str(write_jsonl(r / "c.jsonl", _rows(d)))],
    "dataset-parquet": lambda r, d: ["--dataset", "parquet", "--data-files", str(write_parquet(r / "c.parquet", d))],
}


def make_table(kind: str, root: Path, docs: list[str]) -> list[str]:
    """argv that names ``docs`` as a table of ``kind`` (written under ``root``)."""
    return TABLES[kind](root, docs)


KINDS = list(TABLES)


@pytest.fixture(scope="module")
def docs() -> list[str]:
    return docstrings()


@pytest.fixture(scope="module")
def text_bin(tmp_path_factory, docs, bpe_dir) -> Path:
    root = tmp_path_factory.mktemp("text")
    (root / "c.txt").write_text("".join(d + "\n\n" for d in docs), encoding="utf-8")
    assert main(["binarize", "--tokenizer", str(bpe_dir), "--train", str(root / "c.txt"), "-o", str(root / "bin"),
                 "--quiet"]) == 0
    return root


def table_argv(spec: list[str], option: str) -> list[str]:
    """``--train X`` for a path, the --dataset flags as they are."""
    return spec if spec[0] == "--dataset" else [option, spec[0], *spec[1:]]


@pytest.mark.parametrize("kind", KINDS)
def test_binarize_of_a_table_is_byte_identical_to_the_text(kind, tmp_path, docs, bpe_dir, text_bin, capsys):
    spec = make_table(kind, tmp_path, docs)
    out = tmp_path / "bin"
    assert main(["binarize", "--tokenizer", str(bpe_dir), *table_argv(spec, "--train"), "-o", str(out),
                 "--quiet"]) == 0
    for name in ("train.bin", "train.idx", "dict.txt"):
        assert (out / name).read_bytes() == (text_bin / "bin" / name).read_bytes(), name
    stats = json.loads((out / "binarize.json").read_text())["splits"]["train"]
    assert stats["extra"] == {"rows": len(docs), "rows_skipped": {}}
    text_stats = json.loads((text_bin / "bin" / "binarize.json").read_text())["splits"]["train"]
    assert stats["documents"] == text_stats["documents"]  # blank lines inside a row end a document, as in text
    assert f"train: {len(docs)} rows -> " in capsys.readouterr().out


PREPARE = ["--valid-ratio", "0.2", "--seed", "3", "--quiet"]
TRAIN_TOKENIZER = ["--vocab-size", "600", "--quiet"]


@pytest.fixture(scope="module")
def from_text(tmp_path_factory, docs, text_bin, bpe_dir) -> Path:
    """What prepare (one file a document, --doc-sep file), train-tokenizer and encode make from the text."""
    root = tmp_path_factory.mktemp("from-text")
    (root / "files").mkdir()
    for i, doc in enumerate(docs):
        (root / "files" / f"{i:03d}.txt").write_text(doc + "\n", encoding="utf-8")
    assert main(["prepare", str(root / "files"), "--doc-sep", "file", "-o", str(root / "prepared"), *PREPARE]) == 0
    assert main(["train-tokenizer", "-i", str(text_bin / "c.txt"), "-o", str(root / "tok"), *TRAIN_TOKENIZER]) == 0
    assert main(["encode", "--tokenizer", str(bpe_dir), "--quiet", "-i", str(text_bin / "c.txt"),
                 "-o", str(root / "c.pieces")]) == 0
    return root


@pytest.mark.parametrize("kind", KINDS)
def test_prepare_of_a_table_writes_what_files_give(kind, tmp_path, docs, from_text):
    """A row is a document as a file is one with --doc-sep file: its blank lines separate paragraphs."""
    spec = make_table(kind, tmp_path, docs)
    assert main(["prepare", *spec, "-o", str(tmp_path / "from-table"), *PREPARE]) == 0
    for name in ("train.txt", "valid.txt"):
        assert (tmp_path / "from-table" / name).read_text() == (from_text / "prepared" / name).read_text(), name
    counts = json.loads((tmp_path / "from-table" / "prepare.json").read_text())
    assert counts["tables"] == {"rows": len(docs), "rows_skipped": {}}
    assert counts["documents_in"] == len(docs)


def test_prepare_repairs_rows_as_it_repairs_files(tmp_path):
    rows = [{"text": "A first sentence here is fine.\x00 Another\x07 sentence follows it.\r\nA new line."}]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    assert main(["prepare", str(path), "-o", str(tmp_path / "out"), "--valid-ratio", "0", "--quiet"]) == 0
    counts = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert counts["repairs"]["nul_bytes_removed"] == 1 and counts["repairs"]["control_chars_replaced"] == 1
    assert (tmp_path / "out" / "train.txt").read_text() == (
        "A first sentence here is fine.\nAnother sentence follows it.\nA new line.\n\n")


@pytest.mark.parametrize("kind", KINDS)
def test_train_tokenizer_learns_the_same_from_a_table(kind, tmp_path, docs, from_text):
    spec = make_table(kind, tmp_path, docs)
    argv = spec if spec[0] == "--dataset" else ["-i", *spec]
    assert main(["train-tokenizer", *argv, "-o", str(tmp_path / "t2"), *TRAIN_TOKENIZER]) == 0
    assert (from_text / "tok" / "tokenizer.json").read_bytes() == (tmp_path / "t2" / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_encode_writes_the_same_pieces_from_a_table(kind, tmp_path, docs, bpe_dir, from_text):
    spec = make_table(kind, tmp_path, docs)
    assert main(["encode", "--tokenizer", str(bpe_dir), "--quiet", *table_argv(spec, "-i"),
                 "-o", str(tmp_path / "b.pieces")]) == 0
    assert (from_text / "c.pieces").read_bytes() == (tmp_path / "b.pieces").read_bytes()


def test_a_saved_datasetdict_gives_binarize_its_train_and_validation_splits(tmp_path, bpe_dir):
    import datasets

    train, valid = ["Training rows are these.", "And this one."], ["Validation row."]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": train}),
                          "validation": datasets.Dataset.from_dict({"text": valid})}).save_to_disk(str(tmp_path / "d"))
    (tmp_path / "train.txt").write_text("".join(t + "\n\n" for t in train))
    (tmp_path / "valid.txt").write_text("".join(t + "\n\n" for t in valid))
    tok = ["--tokenizer", str(bpe_dir), "--quiet"]
    assert main(["binarize", *tok, "--train", str(tmp_path / "d"), "--valid", str(tmp_path / "d"),
                 "-o", str(tmp_path / "a")]) == 0
    assert main(["binarize", *tok, "--train", str(tmp_path / "train.txt"), "--valid", str(tmp_path / "valid.txt"),
                 "-o", str(tmp_path / "b")]) == 0
    for name in ("train.bin", "valid.bin", "valid.idx"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # --split picks --train's split only: --valid still reads validation (never train's rows twice)
    assert main(["binarize", *tok, "--train", str(tmp_path / "d"), "--valid", str(tmp_path / "d"), "--split", "train",
                 "-o", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "valid.bin").read_bytes() == (tmp_path / "b" / "valid.bin").read_bytes()
    # --valid-split picks another split of the DatasetDict given to --valid
    assert main(["binarize", *tok, "--train", str(tmp_path / "d"), "--valid", str(tmp_path / "d"),
                 "--valid-split", "train", "-o", str(tmp_path / "e")]) == 0
    assert (tmp_path / "e" / "valid.bin").read_bytes() == (tmp_path / "b" / "train.bin").read_bytes()
    # --dataset json with several --data-files (as a shell expands a glob): read as tables, in sorted order
    write_jsonl(tmp_path / "tr-0.jsonl", [{"text": train[0]}])
    write_jsonl(tmp_path / "tr-1.jsonl", [{"text": train[1]}])
    assert main(["binarize", *tok, "--dataset", "json", "--data-files", str(tmp_path / "tr-1.jsonl"),
                 str(tmp_path / "tr-0.jsonl"), "-o", str(tmp_path / "f")]) == 0
    assert (tmp_path / "f" / "train.bin").read_bytes() != (tmp_path / "b" / "train.bin").read_bytes()  # 1 then 0
    assert main(["binarize", *tok, "--dataset", "json", "--data-files", str(tmp_path / "tr-*.jsonl"),
                 "-o", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / "train.bin").read_bytes() == (tmp_path / "b" / "train.bin").read_bytes()


def test_skip_bad_rows_counts_each_reason(tmp_path, bpe_dir, capsys):
    lines = ['{"text": "Good row one."}', '{"body": "no text"}', '{"text": 7}', '{"text": "cut',
             '{"text": null}', '"a string, not an object"', '', '{"text": "Good row two."}']
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    argv = ["binarize", "--tokenizer", str(bpe_dir), "--train", str(path), "-o", str(tmp_path / "out"), "--quiet"]
    assert main(argv) == 1
    assert f"{path}:2: no key 'text' (keys: body)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert main([*argv, "--skip-bad-rows"]) == 0
    extra = json.loads((tmp_path / "out" / "binarize.json").read_text())["splits"]["train"]["extra"]
    assert extra == {"rows": 2, "rows_skipped": {"malformed JSON lines": 1, "rows without the key": 2,
                                                 "values not a string": 2}}
    assert ("train: 2 rows, 5 skipped (1 malformed JSON lines, 2 rows without the key, 2 values not a string)"
            in capsys.readouterr().out)


def test_a_truncated_compressed_file_is_skipped_and_counted_with_skip_bad_rows(tmp_path, bpe_dir, capsys):
    rows = [{"text": f"Row {i} of a file that was cut short."} for i in range(3000)]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    assert main(["binarize", "--tokenizer", str(bpe_dir), "--train", str(path), "-o", str(tmp_path / "out"),
                 "--quiet", "--skip-bad-rows"]) == 0
    extra = json.loads((tmp_path / "out" / "binarize.json").read_text())["splits"]["train"]["extra"]
    assert 0 < extra["rows"] < 3000 and extra["rows_skipped"] == {"truncated or corrupt files": 1}


def test_rows_are_streamed_not_loaded(tmp_path):
    """Memory stays flat: the first row arrives after reading a small part of a large compressed file."""
    import random

    rng = random.Random(0)  # random hex digits: zstd cannot shrink them much, so the file is large
    rows = [{"text": f"Line {i} " + f"{rng.getrandbits(400):0100x}"} for i in range(200000)]
    path = write_zst(tmp_path / "big.jsonl.zst", rows)
    assert path.stat().st_size > 10 << 20
    table = TableInput(path, {"text": "text"}, TableOptions())
    it = iter(table)
    where, values = next(it)
    assert where == f"{path}:1" and values["text"].startswith("Line 0 ")
    assert 0 < table.bytes_done() < path.stat().st_size / 4
    pq_path = write_parquet(tmp_path / "big.parquet", [r["text"] for r in rows], row_group_size=4096)
    table = TableInput(pq_path, {"text": "text"}, TableOptions())
    batches = TableText(table).line_batches(1 << 16)
    lines, first, _consumed = next(batches)
    assert first == 1 and len(lines) < 2 * 4096  # one row group at most, not the file


@pytest.mark.parametrize("name, content, expected", [
    ("a.jsonl", b'{"text": "x"}\n', "jsonl"),
    ("a.ndjson", b'{"text": "x"}\n', "jsonl"),
    ("a.json", b'  {"text": "x"}\n', "jsonl"),
    ("a.json", b'[{"text": "x"}]', "json-array"),
    ("a.jsonl.zst", b"", "jsonl"),
    ("a.csv", b"text\nx\n", "csv"),
    ("a.tsv.gz", b"", "tsv"),
    ("a.txt", b"plain text\n", None),
    ("a.txt.gz", b"", None),  # compressed text is not a table
    ("notes", b"PAR1\x00\x00", "parquet"),  # Parquet's magic bytes, whatever the name
    ("download.part", gzip.compress(b'{"text": "x"}\n'), "jsonl"),  # gzip's magic bytes, then a JSON object
    ("notes.gz", gzip.compress(b"plain text\n"), None),
])
def test_formats_are_recognised_from_name_and_contents(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    assert table_format(path) == expected


def test_a_directory_is_a_table_only_when_every_file_is_one(tmp_path, bpe_dir, capsys):
    (tmp_path / "a").mkdir()
    write_parquet(tmp_path / "a" / "x.parquet", ["x"])
    (tmp_path / "a" / "_SUCCESS").touch()  # Spark's marker, and hidden files, are no part of the table
    (tmp_path / "a" / ".x.parquet.crc").write_bytes(b"crc")
    assert table_format(tmp_path / "a") == "parquet"
    (tmp_path / "a" / "README.txt").write_text("a text file beside it\n")
    assert table_format(tmp_path / "a") is None
    # read as text, it would read the raw bytes: every text verb refuses it, naming both kinds of file
    for argv in (["prepare", str(tmp_path / "a"), "-o", str(tmp_path / "o1")],
                 ["train-tokenizer", "-i", str(tmp_path / "a"), "-o", str(tmp_path / "o2")],
                 ["binarize", "--tokenizer", str(bpe_dir), "--train", str(tmp_path / "a"), "-o", str(tmp_path / "o3")],
                 ["encode", "--tokenizer", str(bpe_dir), "-i", str(tmp_path / "a"), "-o", str(tmp_path / "o4")]):
        assert main(argv) == 1
        assert f"{tmp_path / 'a'}: holds tables (x.parquet) beside other files (README.txt)" in capsys.readouterr().err
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))
