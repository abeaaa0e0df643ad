"""code-pairs: (docstring, code) and (masked file, span) pairs from the standard library's own code."""

from __future__ import annotations

import ast
import inspect
import json
import shutil
import sysconfig
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from fairseq_ext.cli.main import main

STDLIB = Path(sysconfig.get_paths()["stdlib"])
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)

# Every case the docstring extraction tells apart, in one module (qualified names as the pairs name them).
CASES = textwrap.dedent('''\
    """The module's own docstring is no definition's."""
    import functools


    def plain(x):
        """Return x twice, as a list."""
        return [x, x]


    class Shape:
        """A shape with an area and a name."""

        sides = 0

        @functools.cache
        @staticmethod
        def unit(  # a comment kept in the key
            n,
        ):
            """
            Make the unit shape of n sides.

                Indented lines keep their relative indentation.
            """  # trailing comment
            return n

        def abstract(self):
            """Subclasses must override this method."""

        def short(self):
            """Too short."""
            return 1

        async def inline(self): "An inline docstring shares its line."; return 2

        def two_strings(self):
            """The first string is the docstring here."""
            """The second would become the key's docstring."""
            return 3

    if True:
        def nested_in_if():
            """Found inside an if statement too."""
            def inner():
                """Inner functions count as definitions too."""
                return 4
            return inner
    ''')


def test_docstring_pairs_every_case():
    from fairseq_ext.prep.code_pair_extract import docstring_pairs

    skipped = Counter()
    pairs = {p.name: p for p in docstring_pairs(CASES, 3, skipped)}
    assert list(pairs) == ["plain", "Shape", "Shape.unit", "nested_in_if", "nested_in_if.inner"]
    assert skipped == {"docstring_only": 1, "short_docstring": 1, "inline_docstring": 1, "string_after_docstring": 1}
    unit = pairs["Shape.unit"]
    assert unit.query == "Make the unit shape of n sides.\n\n    Indented lines keep their relative indentation."
    assert unit.key == ("@functools.cache\n@staticmethod\ndef unit(  # a comment kept in the key\n    n,\n):\n"
                        "    return n")
    assert pairs["plain"].key == "def plain(x):\n    return [x, x]"
    shape = pairs["Shape"].key
    assert shape.startswith("class Shape:\n\n    sides = 0\n") and "A shape" not in shape
    # the methods' docstrings that are cut out of their own keys are cut out of the class's key too;
    # those that cannot be cut (the whole body, inline, followed by a string) stay, and give no pair
    assert "Make the unit shape" not in shape and "Too short." not in shape
    assert "Subclasses must override" in shape and "An inline docstring" in shape and "The first string" in shape
    assert "Inner functions" not in pairs["nested_in_if"].key
    assert pairs["nested_in_if.inner"].key == "def inner():\n    return 4"
    for p in pairs.values():
        node = ast.parse(p.key).body[0]
        assert isinstance(node, DEFINITIONS) and ast.get_docstring(node) is None and node.name == p.name.split(".")[-1]


def test_invalid_escapes_in_the_source_raise_no_warning():
    """A corpus holds many "\\d" in plain strings; parsing it must not print a warning for each."""
    import warnings

    from fairseq_ext.prep.code_pair_extract import docstring_pairs

    text = 'def find(s):\n    """Find the digits in s."""\n    return re.findall("\\d+", s)\n'
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [pair] = docstring_pairs(text, 3, Counter())
    assert [str(w.message) for w in caught] == []
    assert pair.key == 'def find(s):\n    return re.findall("\\d+", s)'


def test_span_pairs_cover_whole_lines_and_give_the_file_back():
    import numpy as np

    from fairseq_ext.prep.code_pair_extract import span_pairs

    text = (STDLIB / "json" / "decoder.py").read_text()
    pairs = span_pairs(text, 2, 9, 50, np.random.default_rng(1), skipped := Counter())
    assert len(pairs) + skipped["duplicate_span"] == 50 and len(pairs) > 40
    for p in pairs:
        assert p.query == p.prefix + "<mask>" + p.suffix and p.query.replace("<mask>", p.key) == text
        lines = p.key.splitlines(keepends=True)
        assert 2 <= len(lines) <= 9 and lines[0].strip() and lines[-1].strip() and p.key.endswith("\n")
        assert p.prefix == "" or p.prefix.endswith("\n")
    assert len({len(p.key.splitlines()) for p in pairs}) > 4  # lengths are drawn, not fixed


def _copy_py(package: str, dest: Path, n: int) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted((STDLIB / package).glob("*.py"))[:n]:
        shutil.copyfile(f, dest / f.name)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """``Lib/`` with json, email, asyncio subsets, two top-level modules, and placed files for each file skip."""
    lib = tmp_path_factory.mktemp("pairs") / "Lib"
    for package, n in (("json", 6), ("email", 6), ("asyncio", 6), ("importlib", 4)):
        _copy_py(package, lib / package, n)
    for name in ("abc.py", "bisect.py"):
        shutil.copyfile(STDLIB / name, lib / name)
    (lib / "email" / "cases.py").write_text(CASES)
    (lib / "json" / "broken.py").write_text('def f(:\n    """Does not parse at all."""\n' * 4)  # unparsable
    (lib / "json" / "tiny.py").write_text("X = 1\n")  # too few lines for a span
    (lib / "web").mkdir()
    (lib / "web" / "app.js").write_text("function add(a, b) {\n  // sum\n  const s = a + b;\n  return s;\n}\n"
                                        "\nfunction neg(a) {\n  return -a;\n}\n")
    (lib / "web" / "tmpl.js").write_text("const t = '<mask>';\n" * 8)  # holds the mask token's text
    (lib / "web" / "empty.js").write_text("")  # a code-dataset skip (empty)
    return lib


def build(tree: Path, out: Path, tok, *extra: str, verb: str = "code-pairs") -> dict:
    assert main([verb, str(tree), "-o", str(out), "--tokenizer", str(tok), "--quiet", *extra]) == 0
    return json.loads((out / ("code_pairs.json" if verb == "code-pairs" else "code_dataset.json")).read_text())


ARGS = ("--valid-ratio", "0.25", "--test-ratio", "0.15", "--seed", "3", "--spans-per-file", "3", "--batch-mb", "0.05")


@pytest.fixture(scope="module")
def built(tree, bpe_dir, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("built") / "pairs"
    return out, build(tree, out, bpe_dir, *ARGS)


def _docstrings(text: str) -> list[tuple[str, str]]:
    """(name, docstring) of every definition, found independently of the code under test."""
    return [(n.name, ast.get_docstring(n, clean=False)) for n in ast.walk(ast.parse(text))
            if isinstance(n, DEFINITIONS) and ast.get_docstring(n) is not None]


def test_counts_add_up(built, tree):
    import datasets

    out, stats = built
    files = [p for p in tree.rglob("*") if p.is_file()]
    assert stats["files_seen"] == len(files) and stats["kept"] == len(files) - 1
    assert stats["skipped"]["empty"] == 1 and sum(stats["skipped"].values()) == 1
    assert stats["docstring"]["files_skipped"] == {"not_python": 2, "unparsable": 1}
    assert stats["span"]["files_skipped"] == {"too_few_lines": 1, "mask_token_in_file": 1}
    parsed = [p.read_text() for p in files if p.suffix == ".py" and p.name != "broken.py"]
    with_docstring = sum(len(_docstrings(t)) for t in parsed)
    d, s = stats["docstring"], stats["span"]
    assert d["pairs"] + sum(d["pairs_skipped"].values()) == with_docstring
    assert d["pairs_skipped"]["docstring_only"] >= 1 and d["pairs_skipped"]["inline_docstring"] == 1
    assert d["pairs_skipped"]["key_too_long"] > 0 and d["pairs_skipped"]["short_docstring"] >= 1
    assert s["pairs"] + sum(s["pairs_skipped"].values()) == 3 * (stats["kept"] - 2)
    dd = datasets.load_from_disk(str(out))
    assert sorted(dd) == ["test", "train", "valid"]
    for split, ds in dd.items():
        kinds = Counter(ds["kind"])
        per_kind = {k: n for k, n in stats["splits"][split]["pairs_per_kind"].items() if n}
        assert len(ds) == stats["splits"][split]["pairs"] and kinds == per_kind
        assert sum(ds["query_length"]) == stats["splits"][split]["query_tokens"]
    assert stats["pairs"] == d["pairs"] + s["pairs"] == sum(len(ds) for ds in dd.values())
    assert max(k for ds in dd.values() for k in ds["key_length"]) <= 512


def test_docstring_pairs_keys_hold_no_docstring_queries_are_cleandoc(built, tree):
    import datasets
    from tokenizers import Tokenizer

    out, _stats = built
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.encode_special_tokens = True
    rows = [r for ds in datasets.load_from_disk(str(out)).values() for r in ds if r["kind"] == "docstring"]
    assert len(rows) > 100 and {r["language"] for r in rows} == {"python"}
    originals: dict = {}
    queries: dict = {}
    for r in rows:
        queries.setdefault(r["path"], set()).add(r["query"])
    for r in rows:
        if r["path"] not in originals:
            originals[r["path"]] = {name: set() for name, _ in _docstrings((tree.parent / r["path"]).read_text())}
            for name, doc in _docstrings((tree.parent / r["path"]).read_text()):
                originals[r["path"]][name].add(inspect.cleandoc(doc))
        node = ast.parse(r["key"]).body[0]
        assert isinstance(node, DEFINITIONS) and ast.get_docstring(node) is None
        inside = {inspect.cleandoc(doc) for _name, doc in _docstrings(r["key"])}
        assert not inside & queries[r["path"]]  # no pair's query is left in any key of its file
        assert node.name == r["name"].split(".")[-1]
        assert r["query"] in originals[r["path"]][node.name]
        assert r["query_ids"] == tok.encode(r["query"], add_special_tokens=False).ids
        assert r["key_ids"] == tok.encode(r["key"], add_special_tokens=False).ids
        assert (r["query_length"], r["key_length"]) == (len(r["query_ids"]), len(r["key_ids"]))


def test_span_pairs_give_the_file_back(built, tree):
    import datasets
    from tokenizers import Tokenizer

    out, stats = built
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.encode_special_tokens = True
    mask, mask_id = stats["mask_token"], stats["mask_id"]
    assert (mask, mask_id) == ("<mask>", tok.token_to_id("<mask>"))
    rows = [r for ds in datasets.load_from_disk(str(out)).values() for r in ds if r["kind"] == "span"]
    assert {r["language"] for r in rows} == {"python", "javascript"}
    for r in rows:
        text = (tree.parent / r["path"]).read_text()
        assert r["query"].count(mask) == 1 and r["query"].replace(mask, r["key"]) == text and r["name"] == ""
        assert 3 <= len(r["key"].splitlines()) <= min(15, len(text.splitlines()) // 2)
        assert r["query_ids"].count(mask_id) == 1 and mask_id not in r["key_ids"]
        prefix, suffix = r["query"].split(mask)
        assert r["query_ids"] == (tok.encode(prefix, add_special_tokens=False).ids + [mask_id]
                                  + tok.encode(suffix, add_special_tokens=False).ids)


def test_splits_are_code_datasets(built, tree, bpe_dir, tmp_path):
    import datasets

    out, _stats = built
    build(tree, tmp_path / "files", bpe_dir, *ARGS[:6], verb="code-dataset")
    split_of = {p: split for split, ds in datasets.load_from_disk(str(tmp_path / "files")).items() for p in ds["path"]}
    pairs = datasets.load_from_disk(str(out))
    for split, ds in pairs.items():
        assert {split_of[p] for p in ds["path"]} == {split}
        assert set(ds["project"]) == {r["project"] for r in datasets.load_from_disk(str(tmp_path / "files"))[split]}


def test_same_seed_same_bytes_other_seed_other_spans(built, tree, bpe_dir, tmp_path):
    import datasets

    def every_file(out: Path) -> dict:
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    out, _stats = built
    build(tree, tmp_path / "again", bpe_dir, *ARGS)
    files = every_file(out)
    assert {"train/data-00000-of-00001.arrow", "valid/state.json", "dict.txt", "code_pairs.json"} <= set(files)
    assert files == every_file(tmp_path / "again")
    # the spans depend on --seed and the file's bytes only: --kind span alone draws the same ones
    build(tree, tmp_path / "spans", bpe_dir, *ARGS, "--kind", "span")
    build(tree, tmp_path / "other", bpe_dir, *ARGS[:5], "4", *ARGS[6:], "--kind", "span")

    def spans(path: Path) -> set:
        return {(r["path"], r["key"]) for ds in datasets.load_from_disk(str(path)).values() for r in ds
                if r["kind"] == "span"}

    assert spans(tmp_path / "spans") == spans(out)
    assert spans(tmp_path / "other") != spans(out)


def test_interrupted_run_leaves_no_output(tree, bpe_dir, tmp_path, monkeypatch, capsys):
    import fairseq_ext.prep.code_pairs as code_pairs

    calls = []

    def interrupt(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return []

    monkeypatch.setattr(code_pairs, "docstring_pairs", interrupt)
    work = tmp_path / "work"
    work.mkdir()
    code = main(["code-pairs", str(tree), "-o", str(work / "out"), "--tokenizer", str(bpe_dir), "--quiet"])
    assert code == 130 and len(calls) == 5 and list(work.iterdir()) == []
    assert "interrupted; no output was left behind" in capsys.readouterr().err


def test_sentencepiece_without_mask_uses_extra_id_and_summary(tree, tmp_path, capsys):
    """A T5-like tokenizer with <extra_id_0> and no mask: spans are masked with <extra_id_0>, as code_mlm does."""
    import datasets
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<pad>": 0, "</s>": 1, "<unk>": 2, "<extra_id_0>": 3, "function": 4},
                                     unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<pad>", "</s>", "<unk>", "<extra_id_0>"])
    tok.save(str(tmp_path / "t5.json"))
    stats = build(tree, tmp_path / "out", tmp_path / "t5.json", "--kind", "span", "--languages", "javascript",
                  "--split-by", "file", "--valid-ratio", "0", "--span-lines", "2,2")
    assert (stats["mask_token"], stats["mask_id"]) == ("<extra_id_0>", 3)
    assert "docstring" not in stats and stats["span"]["files_skipped"] == {"too_few_lines": 0,
                                                                           "mask_token_in_file": 0}
    rows = datasets.load_from_disk(str(tmp_path / "out"))["train"]
    assert rows["path"] == ["Lib/web/app.js", "Lib/web/tmpl.js"]  # tmpl.js's '<mask>' is plain text here
    for row in rows:
        assert row["query_ids"].count(3) == 1 and len(row["key"].splitlines()) == 2
        assert row["query"].replace("<extra_id_0>", row["key"]) == (tree.parent / row["path"]).read_text()
    printed = capsys.readouterr().out
    assert "span pairs: 2; files giving none: none; pairs skipped: none" in printed
    assert "train: 2 pairs (span 2) from 2 files in 2 projects" in printed
