"""code-dataset: real standard-library code plus files placed here for every skip reason."""

from __future__ import annotations

import hashlib
import json
import shutil
import sysconfig
from collections import Counter
from pathlib import Path

import pytest

from fairseq_ext.cli.main import main

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _copy_py(package: str, dest: Path, n: int | None = None) -> int:
    files = sorted((STDLIB / package).glob("*.py"))[:n]
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(f, dest / f.name)
    return len(files)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> dict:
    """``Lib/`` with json, email, asyncio subsets and one placed file (or tree) per skip reason."""
    lib = tmp_path_factory.mktemp("code") / "Lib"
    copied = {p: _copy_py(p, lib / p, n) for p, n in (("json", None), ("email", 8), ("asyncio", 8))}
    for name in ("abc.py", "ast.py"):
        shutil.copyfile(STDLIB / name, lib / name)
    shutil.copyfile(STDLIB / "keyword.py", lib / "email" / "keyword.py")  # real generated code

    def write(rel: str, data: bytes | str) -> None:
        path = lib / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))

    write(".gitignore", "build/\n*.log\nkeep_me.py\n")
    write("asyncio/.gitignore", "secret_*.py\n!keep_me.py\n")  # the deeper file re-includes keep_me.py
    write("asyncio/keep_me.py", "KEEP = 'kept: re-included by asyncio/.gitignore'\n")
    write("json/keep_me.py", "IGNORED = True\n")
    write("asyncio/secret_keys.py", "KEY = 'ignored by asyncio/.gitignore'\n")
    write("asyncio/debug.log", "ignored by the top .gitignore\n")
    write("build/out.py", "print('a gitignored directory')\n")
    write(".hidden.py", "HIDDEN = 1\n")
    write("notes", "no extension, no language\n")
    write("json/empty_mod.py", b"")
    write("json/blob.py", bytes(range(256)) * 8)
    write("json/latin1.py", "# caf\u00e9 = 'coffee'\nx = 1\n".encode("latin-1"))
    write("json/huge.py", "x = 1\n" * 200_000)  # 1.2 MB > the 1 MB default --max-bytes
    write("email/dup_of_decoder.py", (lib / "json" / "decoder.py").read_bytes())
    write("web/app.min.js", "var a=1;" * 300 + "\n")
    write("web/app.js", "function add(a, b) {\n    return a + b;\n}\n")
    write("web/node_modules/left-pad/index.js", "module.exports = function () {};\n")
    kept = sum(copied.values()) + 2 + 1 + 1  # abc.py ast.py, asyncio/keep_me.py, web/app.js (a dup pair keeps one)
    return {"lib": lib, "kept": kept}


def build(tree: dict, out: Path, tok: Path, *extra: str) -> dict:
    code = main(["code-dataset", str(tree["lib"]), "-o", str(out), "--tokenizer", str(tok), "--quiet", *extra])
    assert code == 0
    return json.loads((out / "code_dataset.json").read_text())


SKIPS = {"hidden": 3, "symlink": 0, "gitignored": 3, "not_selected": 0, "no_language": 1, "too_large": 1,
         "empty": 1, "binary": 1, "undecodable": 1, "generated": 2, "duplicate": 1}


@pytest.fixture(scope="module")
def built(tree, bpe_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("built") / "out"
    # small batches: many record batches per split, the encode/write pipeline in use
    return out, build(tree, out, bpe_dir, "--valid-ratio", "0.2", "--test-ratio", "0.1", "--format", "both",
                      "--batch-mb", "0.02")


def test_counts_per_reason(built, tree):
    _out, stats = built
    assert stats["skipped"] == SKIPS
    assert stats["pruned_dirs"] == {"gitignored": 1, "vendored": 1}
    assert stats["kept"] == tree["kept"] == sum(s["files"] for s in stats["splits"].values())
    assert stats["files_seen"] == tree["kept"] + sum(SKIPS.values())
    assert stats["kept_per_language"] == {"javascript": 1, "python": tree["kept"] - 1}


def test_rows_columns_and_ids_are_the_tokenizers_own(built, tree):
    import datasets
    from tokenizers import Tokenizer

    out, stats = built
    dd = datasets.load_from_disk(str(out))
    assert sorted(dd) == ["test", "train", "valid"]
    want = {"path": "string", "project": "string", "language": "string", "sha256": "string", "num_bytes": "int64",
            "length": "int32"}
    for split, ds in dd.items():
        assert {k: v.dtype for k, v in ds.features.items() if k != "input_ids"} == want
        assert ds.features["input_ids"].feature.dtype == "int32"
        assert len(ds) == stats["splits"][split]["files"]
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.encode_special_tokens = True
    specials = {0, 1, 2, 3, 4}
    paths = []
    for ds in dd.values():
        for row in ds:
            data = (tree["lib"].parent / row["path"]).read_bytes()
            assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["num_bytes"] == len(data)
            assert row["input_ids"] == tok.encode(data.decode("utf-8"), add_special_tokens=False).ids
            assert row["length"] == len(row["input_ids"]) and not specials & set(row["input_ids"])
            paths.append(row["path"])
    assert len(paths) == len(set(paths)) == tree["kept"]
    assert "Lib/asyncio/keep_me.py" in paths and "Lib/web/app.js" in paths
    assert ("Lib/json/decoder.py" in paths) != ("Lib/email/dup_of_decoder.py" in paths)


def test_splits_are_disjoint_by_project(built):
    import datasets

    out, stats = built
    dd = datasets.load_from_disk(str(out))
    projects = {split: set(ds["project"]) for split, ds in dd.items()}
    assert projects["train"] and projects["valid"] and projects["test"]
    assert not (projects["train"] & projects["valid"] or projects["train"] & projects["test"]
                or projects["valid"] & projects["test"])
    for ds in dd.values():
        for path, project in zip(ds["path"], ds["project"]):
            parts = path.split("/")
            assert project == (path if len(parts) == 2 else "/".join(parts[:2]))
    assert {s: len(p) for s, p in projects.items()} == {s: v["projects"] for s, v in stats["splits"].items()}


def test_format_both_items_are_rows_plus_eos(built):
    import datasets
    from fairseq.data import MMapIndexedDataset

    out, _stats = built
    dd = datasets.load_from_disk(str(out))
    for split, ds in dd.items():
        items = MMapIndexedDataset(str(out / split))
        assert len(items) == len(ds)
        for i, row in enumerate(ds):
            assert items[i].tolist() == row["input_ids"] + [2]  # the bpe fixture's </s>
    assert (out / "dict.txt").is_file()


def test_layout_is_what_save_to_disk_writes(built, tmp_path):
    import datasets
    import pyarrow as pa

    out, _stats = built
    for split, ds in datasets.load_from_disk(str(out)).items():
        ds.save_to_disk(str(tmp_path / split))
        name = "dataset_info.json"
        assert (out / split / name).read_bytes() == (tmp_path / split / name).read_bytes()
        # the same Arrow stream, schema metadata (the features) included; only the record batch sizes differ
        ours, theirs = (pa.ipc.open_stream((d / split / "data-00000-of-00001.arrow").read_bytes()).read_all()
                        for d in (out, tmp_path))
        assert ours.schema.equals(theirs.schema, check_metadata=True) and ours.equals(theirs)
        ours, theirs = (json.loads((d / split / "state.json").read_text()) for d in (out, tmp_path))
        assert ours.pop("_fingerprint") != "" and theirs.pop("_fingerprint") != ""
        assert ours == theirs


def test_same_seed_same_output_other_seed_other_split(tree, bpe_dir, tmp_path):
    def assignment(out: Path) -> dict:
        import datasets

        return {split: sorted(ds["path"]) for split, ds in datasets.load_from_disk(str(out)).items()}

    def every_file(out: Path) -> dict:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    build(tree, tmp_path / "a", bpe_dir, "--seed", "1", "--valid-ratio", "0.3", "--format", "both")
    build(tree, tmp_path / "b", bpe_dir, "--seed", "1", "--valid-ratio", "0.3", "--format", "both")
    files = every_file(tmp_path / "a")
    assert {"train/data-00000-of-00001.arrow", "train/state.json", "valid.bin", "code_dataset.json"} <= set(files)
    assert files == every_file(tmp_path / "b")
    others = []
    for seed in (2, 3):
        build(tree, tmp_path / f"s{seed}", bpe_dir, "--seed", str(seed), "--valid-ratio", "0.3")
        others.append(assignment(tmp_path / f"s{seed}"))
    assert any(o != assignment(tmp_path / "a") for o in others)


def test_duplicate_in_two_splits_is_kept_in_train_only(tree, bpe_dir, tmp_path):
    from fairseq_ext.prep.code_files import Selection, WalkStats, walk_sources
    from fairseq_ext.prep.code_splits import assign_units, unit_of

    units = Counter(unit_of(f) for f in walk_sources(tree["lib"], Selection(), 1 << 20, WalkStats()))
    seed = next(s for s in range(100) if {(a := assign_units(units, 0.3, 0, s))["Lib/json"], a["Lib/email"]}
                == {"train", "valid"})
    build(tree, tmp_path / "out", bpe_dir, "--seed", str(seed), "--valid-ratio", "0.3")
    import datasets

    dd = datasets.load_from_disk(str(tmp_path / "out"))
    train_copy = "Lib/json/decoder.py" if a["Lib/json"] == "train" else "Lib/email/dup_of_decoder.py"
    assert train_copy in dd["train"]["path"]
    sha = hashlib.sha256((tree["lib"] / "json" / "decoder.py").read_bytes()).hexdigest()
    assert dd["train"]["sha256"].count(sha) == 1 and sha not in dd["valid"]["sha256"]


def test_languages_include_exclude_select(tree, bpe_dir, tmp_path):
    stats = build(tree, tmp_path / "out", bpe_dir, "--languages", "py", "--exclude", "email/", "--split-by",
                  "file")
    email = sum(1 for p in (tree["lib"] / "email").iterdir() if p.is_file())
    # email's files and web/app.js, web/app.min.js are not selected; the rest of the skips stay as they were
    assert stats["skipped"]["not_selected"] == email + 2
    assert set(stats["kept_per_language"]) == {"python"}
    stats = build(tree, tmp_path / "inc", bpe_dir, "--include", "json/*.py", "--valid-ratio", "0")
    assert list(stats["splits"]) == ["train"] and stats["splits"]["train"]["projects"] == 1


def test_sentencepiece_tokenizer_without_bos(tree, spm_model, tmp_path):
    import datasets
    import sentencepiece as spm

    build(tree, tmp_path / "out", spm_model, "--languages", "javascript", "--split-by", "file", "--valid-ratio", "0")
    row = datasets.load_from_disk(str(tmp_path / "out"))["train"][0]
    assert row["path"] == "Lib/web/app.js"
    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    text = (tree["lib"] / "web" / "app.js").read_text()
    assert sp.decode(row["input_ids"]) == sp.decode(sp.encode(text)) and 1 not in row["input_ids"]


def test_interrupted_run_leaves_no_output(tree, bpe_dir, tmp_path, monkeypatch, capsys):
    import fairseq_ext.prep.code_dataset as code_dataset

    calls = []

    def interrupt(data: bytes):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return None

    monkeypatch.setattr(code_dataset, "content_reason", interrupt)
    work = tmp_path / "work"
    work.mkdir()
    code = main(["code-dataset", str(tree["lib"]), "-o", str(work / "out"), "--tokenizer", str(bpe_dir), "--quiet"])
    assert code == 130 and len(calls) == 10
    assert list(work.iterdir()) == []
    assert "interrupted; no output was left behind" in capsys.readouterr().err


def test_summary_is_printed(tree, bpe_dir, tmp_path, capsys):
    build(tree, tmp_path / "out", bpe_dir)
    out = capsys.readouterr().out
    assert "skipped: 3 hidden, 3 gitignored, 1 no language, 1 too large, 1 empty, 1 binary" in out
    assert "directories not walked: 1 gitignored, 1 vendored" in out
    assert f"files: {tree['kept'] + sum(SKIPS.values())} seen, {tree['kept']} kept;" in out
    assert out.count(" tokens (") == 2 and out.startswith("files:") and "train: " in out and "valid: " in out


def test_language_of_is_pygments_own_lookup():
    import os

    from pygments.lexers import find_lexer_class_for_filename

    from fairseq_ext.prep.code_files import language_of

    names = sorted({n for _root, _dirs, files in os.walk(STDLIB) for n in files})[::7][:2500]
    names += ["object.h", "vector.hpp", "Makefile", "CMakeLists.txt", "a.tar.gz", "app.min.js", "Dockerfile",
              "README", "x.PY", "stub.pyi", "a.c.in", ".bashrc"]
    for name in names:
        lexer = find_lexer_class_for_filename(name)
        assert language_of(name) == (lexer.aliases[0] if lexer is not None else None), name
    assert language_of("decoder.py") == "python" and language_of("object.c") == "c"


def test_a_big_project_cannot_swallow_valid():
    from fairseq_ext.prep.code_splits import assign_units

    units = Counter({"Lib/test": 1200, **{f"Lib/pkg{i}": 10 + i for i in range(30)}})
    total = sum(units.values())
    for seed in range(20):
        split = assign_units(units, 0.05, 0.05, seed)
        assert split["Lib/test"] == "train" and set(split) == set(units)
        for name in ("valid", "test"):
            files = sum(n for u, n in units.items() if split[u] == name)
            assert 0 < files <= 0.05 * total
    # no unit fits: the smallest one goes, and train keeps one
    assert assign_units(Counter({"a": 10, "b": 20}), 0.1, 0, 0) == {"a": "valid", "b": "train"}
