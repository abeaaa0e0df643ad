"""code-dataset and code-pairs from tables of source files, and code-dataset in shards.

A tree of standard-library sources and the same files as a Parquet table, a .jsonl.zst
table and a save_to_disk directory must give the same dataset; N shards together the
unsharded one.
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

import pytest

from fairseq_ext.cli.main import main

STDLIB = Path(sysconfig.get_paths()["stdlib"])
LANGS = {".py": "Python", ".js": "JavaScript", ".c": "C"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """``Lib/``: json, parts of email and asyncio, two top-level modules, a duplicate, an empty and a JS file."""
    lib = tmp_path_factory.mktemp("tree") / "Lib"
    for package, n in (("json", None), ("email", 6), ("asyncio", 6), ("importlib", 4), ("logging", None)):
        (lib / package).mkdir(parents=True)
        for f in sorted((STDLIB / package).glob("*.py"))[:n]:
            shutil.copyfile(f, lib / package / f.name)
    for name in ("abc.py", "ast.py", "keyword.py"):  # keyword.py: real generated code
        shutil.copyfile(STDLIB / name, lib / name)
    (lib / "email" / "dup_of_decoder.py").write_bytes((lib / "json" / "decoder.py").read_bytes())
    (lib / "json" / "empty_mod.py").write_text("")
    (lib / "web").mkdir()
    (lib / "web" / "app.js").write_text("function add(a, b) {\n    return a + b;\n}\n")
    (lib / "web" / "notes").write_text("no extension, no language\n")
    return lib


def rows_of(lib: Path) -> list[dict]:
    """The tree's files as table rows: path relative to the tree, text, the tree's project, a language name."""
    rows = []
    for path in sorted(p for p in lib.rglob("*") if p.is_file()):
        rel = path.relative_to(lib).as_posix()
        parts = rel.split("/")
        project = f"Lib/{parts[0]}" if len(parts) > 1 else f"Lib/{rel}"  # the tree's units (depth 1)
        rows.append({"path": rel, "content": path.read_text(encoding="utf-8"), "repo": project,
                     "lang": LANGS.get(path.suffix, "Klingon")})
    return rows


def write_parquet(rows: list[dict], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)  # many row groups and batches
    return path


def write_jsonl_zst(rows: list, path: Path) -> Path:
    import zstandard

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    path.write_bytes(zstandard.ZstdCompressor().compress(lines.encode("utf-8")))
    return path


@pytest.fixture(scope="module")
def tables(tree, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("tables")
    rows = rows_of(tree)
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(base / "arrow" / "Lib"))  # a save_to_disk directory
    return {"parquet": write_parquet(rows, base / "pq" / "Lib.parquet"),
            "jsonl.zst": write_jsonl_zst(rows, base / "zst" / "Lib.jsonl.zst"), "arrow": base / "arrow" / "Lib"}


def build(verb: str, src: Path, out: Path, tok: Path, *extra: str) -> dict:
    code = main([verb, str(src), "-o", str(out), "--tokenizer", str(tok), "--quiet", "--valid-ratio", "0.2",
                 "--test-ratio", "0.1", *extra])
    assert code == 0
    return json.loads((out / f"{verb.replace('-', '_')}.json").read_text())


def dataset_rows(out: Path) -> dict:
    import datasets

    return {split: ds.to_list() for split, ds in datasets.load_from_disk(str(out)).items()}


COUNTS = ("files_seen", "candidates", "kept", "skipped", "kept_per_language", "tokens", "splits")


@pytest.fixture(scope="module")
def from_tree(tree, bpe_dir, tmp_path_factory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("from_tree") / "out"
    stats = build("code-dataset", tree, out, bpe_dir)
    return dataset_rows(out), stats


@pytest.mark.parametrize("kind", ["parquet", "jsonl.zst", "arrow"])
@pytest.mark.parametrize("project", [False, True], ids=["by-path", "project-key"])
def test_a_table_gives_the_trees_dataset(kind, project, tables, from_tree, bpe_dir, tmp_path):
    rows, stats = from_tree
    assert stats["skipped"]["duplicate"] == 1 and stats["skipped"]["empty"] == 1
    assert stats["skipped"]["generated"] == 1 and stats["skipped"]["no_language"] == 1
    assert list(rows) == ["train", "valid", "test"] and all(rows.values())
    extra = ("--project-key", "repo") if project else ()
    table_stats = build("code-dataset", tables[kind], tmp_path / "out", bpe_dir, *extra)
    assert dataset_rows(tmp_path / "out") == rows  # same rows, same order, same ids, in each split
    assert {k: table_stats[k] for k in COUNTS} == {k: stats[k] for k in COUNTS}
    assert table_stats["table_rows"] == {"rows": stats["files_seen"], "rows_skipped": {}}


def test_project_key_is_the_unit_of_the_split(tree, bpe_dir, tmp_path):
    rows = rows_of(tree)
    for i, row in enumerate(rows):  # projects across directories: every 4th file together
        row["repo"] = f"owner/repo{i % 4}"
    table = write_parquet(rows, tmp_path / "Lib.parquet")
    build("code-dataset", table, tmp_path / "out", bpe_dir, "--project-key", "repo", "--valid-ratio", "0.25")
    want = {f"Lib/{r['path']}": r["repo"] for r in rows}
    split_of = {}
    for split, split_rows in dataset_rows(tmp_path / "out").items():
        for row in split_rows:
            assert row["project"] == want[row["path"]]
            assert split_of.setdefault(row["project"], split) == split
    assert len(set(split_of.values())) == 3


def test_language_key_selects_by_the_tables_language(tables, bpe_dir, tmp_path):
    stats = build("code-dataset", tables["parquet"], tmp_path / "out", bpe_dir, "--language-key", "lang",
                  "--languages", "javascript,c", "--split-by", "file", "--valid-ratio", "0", "--test-ratio", "0")
    assert stats["kept_per_language"] == {"javascript": 1}
    assert stats["skipped"]["no_language"] == 1  # 'Klingon' is no language Pygments knows
    assert stats["skipped"]["not_selected"] == stats["files_seen"] - 2
    assert [r["path"] for r in dataset_rows(tmp_path / "out")["train"]] == ["Lib/web/app.js"]


def test_code_pairs_from_a_table_are_the_trees(tree, tables, bpe_dir, tmp_path):
    build("code-pairs", tree, tmp_path / "tree", bpe_dir, "--kind", "both")
    stats = build("code-pairs", tables["jsonl.zst"], tmp_path / "table", bpe_dir, "--kind", "both")
    assert dataset_rows(tmp_path / "table") == dataset_rows(tmp_path / "tree")
    assert stats["table_rows"]["rows"] == stats["files_seen"]


BAD = [
    ('{"content": "x = 1\\n"}', ":2: no key 'path' (keys: content)", "rows without the key"),
    ('{"path": "a/b.py", "content": 7}', ":3: 'content' is int, not a string", "values not a string"),
    ('{"path": "a/b.py", "content": "x = 1\\n"', ":4: malformed JSON", "malformed JSON lines"),
    ('{"path": "  ", "content": "x = 1\\n"}', ":5: 'path' is empty ('  '), not a file's path", "paths not a file's"),
]


@pytest.mark.parametrize("bad", BAD, ids=[b[2] for b in BAD])
def test_a_bad_row_is_one_line_naming_file_and_row(bad, tree, bpe_dir, tmp_path, capsys):
    line, message, _reason = bad
    lines = [json.dumps(r) for r in rows_of(tree)]
    lines.insert(BAD.index(bad) + 1, line)  # on line 2, 3, ... as its message says
    table = write_jsonl_zst(lines, tmp_path / "t" / "Lib.jsonl.zst")
    code = main(["code-dataset", str(table), "-o", str(tmp_path / "out"), "--tokenizer", str(bpe_dir), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "out").exists()
    assert err.strip().count("\n") == 0 and f"{table}{message}" in err, err


def test_skip_bad_rows_counts_them(tree, bpe_dir, tmp_path, capsys):
    good = rows_of(tree)
    lines = [json.dumps(r) for r in good]
    for k, (line, _message, _reason) in enumerate(BAD):
        lines.insert(3 * k + 1, line)
    table = write_jsonl_zst(lines, tmp_path / "t" / "Lib.jsonl.zst")
    stats = build("code-dataset", table, tmp_path / "out", bpe_dir, "--skip-bad-rows")
    assert stats["table_rows"] == {"rows": len(good), "rows_skipped": {reason: 1 for _l, _m, reason in BAD}}
    assert stats["files_seen"] == len(good)
    assert f"table rows: {len(good):,} read; bad rows skipped: 1 malformed JSON lines" in capsys.readouterr().out


@pytest.mark.parametrize("source", ["tree", "parquet"])
def test_shards_together_are_the_unsharded_run(source, tree, tables, from_tree, bpe_dir, tmp_path, capsys):
    src = tree if source == "tree" else tables["parquet"]
    extra = ("--project-key", "repo") if source == "parquet" else ()
    rows, stats = from_tree
    union: dict[str, list] = {split: [] for split in rows}
    for k in range(3):
        out = tmp_path / f"shard{k}"
        shard = build("code-dataset", src, out, bpe_dir, "--num-shards", "3", "--shard-index", str(k), *extra)
        assert shard["shard"] == {"index": k, "num_shards": 3,
                                  "candidates": sum(s["files"] for s in shard["splits"].values())
                                  + sum(shard["skipped"][r] for r in ("empty", "generated", "duplicate"))}
        assert f"shard {k} of 3 (0-based)" in capsys.readouterr().out
        part = dataset_rows(out)
        assert set(part) == set(rows) and sum(map(len, part.values())) > 0
        for split, split_rows in part.items():
            union[split] += split_rows
    for split, split_rows in rows.items():  # every file once, in its split, with the same ids
        assert sorted(union[split], key=lambda r: r["path"]) == split_rows
    assert stats["skipped"]["duplicate"] == 1


@pytest.mark.parametrize("args, message, code", [
    (("--num-shards", "3", "--shard-index", "3"), "--shard-index 3: must be in 0..2 (--num-shards 3)", 1),
    (("--shard-index", "1"), "--shard-index 1: must be in 0..0 (--num-shards 1)", 1),
    (("--num-shards", "0"), "argument --num-shards: must be a positive integer, got '0'", 2),
    (("--shard-index", "-1"), "argument --shard-index: must be an integer >= 0, got '-1'", 2),
])
def test_shard_settings_are_refused(args, message, code, tree, bpe_dir, tmp_path, capsys):
    rc = main(["code-dataset", str(tree), "-o", str(tmp_path / "out"), "--tokenizer", str(bpe_dir), *args])
    err = capsys.readouterr().err
    assert rc == code and message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists()
