"""train-tokenizer: the seeds' special-token layouts, loadable by AutoTokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from conftest import error_lines, make_text, run_cli

LAYOUTS = {
    "bpe": ["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    "wordpiece": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
    "unigram": ["<pad>", "</s>", "<unk>", "<mask>"],
}


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("tt")
    (root / "a.txt").write_text("\n".join(make_text(200, seed=1)) + "\n", encoding="utf-8")
    (root / "b.txt").write_text("\n".join(make_text(200, seed=2)) + "\nzebra xylophone quartz\n", encoding="utf-8")
    return root / "a.txt", root / "b.txt"


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_kinds_layouts_and_autotokenizer(kind, two_files, tmp_path):
    out = tmp_path / kind
    proc = run_cli("train-tokenizer", "-i", *map(str, two_files), "-o", str(out), "--kind", kind,
                   "--vocab-size", "300", "--min-frequency", "1", "--quiet")
    assert f"trained {kind} tokenizer" in proc.stdout
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert tok.convert_ids_to_tokens(list(range(len(LAYOUTS[kind])))) == LAYOUTS[kind]
    assert len(tok) <= 300
    enc = tok("The quick fox")["input_ids"]
    if kind == "bpe":
        assert (enc[0], enc[-1], tok.mask_token_id, tok.pad_token_id) == (0, 2, 4, 1)
    elif kind == "wordpiece":
        assert (enc[0], enc[-1], tok.mask_token_id, tok.pad_token_id) == (2, 3, 4, 0)
    else:
        assert (enc[-1], tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (1, None, 0, 1)
    # text of the second file was learned from too
    pieces = tok.tokenize("zebra xylophone")
    assert tok.unk_token not in pieces


def test_default_vocab_size_is_the_seeds(tmp_path):
    from fairseq_ext.prep.tokenizer_training import LAYOUTS as layouts

    assert layouts["bpe"].default_vocab == 50265
    proc = run_cli("train-tokenizer", "--help")
    assert "50265" in proc.stdout and "--min-frequency" in proc.stdout and "--test" in proc.stdout


def test_test_flag_prints_first_five_lines(two_files, tmp_path):
    proc = run_cli("train-tokenizer", "-i", str(two_files[0]), "-o", str(tmp_path / "t"), "--vocab-size", "300",
                   "--test", "--quiet")
    shown = [ln for ln in proc.stdout.splitlines() if ln.startswith("> ")]
    assert [ln[2:] for ln in shown] == two_files[0].read_text().splitlines()[:5]
    assert "\u0120" in proc.stdout  # byte-level pieces are printed


def test_bad_input_is_a_one_line_error(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    proc = run_cli("train-tokenizer", "-i", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "t"), check=False)
    assert proc.returncode == 1
    assert error_lines(proc.stderr) == [f"fairseq-ext train-tokenizer: error: {tmp_path / 'empty.txt'}: no text to "
                                        "learn from (skipped: 1 empty file)"]
    assert not (tmp_path / "t").exists()


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory):
    """The json and a few email modules of the standard library, an empty __init__.py and files to skip."""
    import shutil
    import sysconfig

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    root = tmp_path_factory.mktemp("src") / "Lib"
    shutil.copytree(stdlib / "json", root / "json", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "email").mkdir()
    for f in sorted((stdlib / "email").glob("*.py"))[:6]:
        shutil.copyfile(f, root / "email" / f.name)
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_bytes(b"")
    (root / "pkg" / "icon.py").write_bytes(bytes(range(256)) * 4)
    (root / "pkg" / "latin1.py").write_bytes("s = 'caf\u00e9'\n".encode("latin-1"))
    (root / "pkg" / "app.js").write_text("function f(a) {\n    return a;\n}\n")
    (root / ".gitignore").write_text("generated_*.py\n")
    (root / "pkg" / "generated_parser.py").write_text("IGNORED = 1\n")
    (root / "node_modules" / "x").mkdir(parents=True)
    (root / "node_modules" / "x" / "index.js").write_text("module.exports = 1;\n")
    kept = sum(1 for p in root.rglob("*.py") if p.stat().st_size and p.parent.name in ("json", "email"))
    return root, kept + 1  # + app.js


def test_source_tree_with_empty_init_is_read_and_skips_counted(source_tree, tmp_path):
    root, kept = source_tree
    proc = run_cli("train-tokenizer", "-i", str(root), "-o", str(tmp_path / "tok"), "--vocab-size", "800",
                   "--quiet")
    assert (f"reading {kept} files (skipped: 1 empty file, 1 binary file, 1 undecodable file, 1 hidden file, "
            "1 gitignored file)") in proc.stdout
    proc = run_cli("train-tokenizer", "-i", str(root), "-o", str(tmp_path / "py"), "--vocab-size", "800",
                   "--languages", "python", "--exclude", "email/", "--quiet")
    n_email = len(list((root / "email").glob("*.py")))
    assert f"reading {kept - 1 - n_email} files (skipped: 1 empty file, 1 binary file, 1 undecodable file, " \
        f"1 hidden file, 1 gitignored file, {n_email + 1} not selected files)" in proc.stdout


def test_byte_level_bpe_gives_code_back_exactly(source_tree, tmp_path):
    import sysconfig

    root, _kept = source_tree
    run_cli("train-tokenizer", "-i", str(root), "-o", str(tmp_path / "tok"), "--vocab-size", "800", "--quiet")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    # indentation is learned: runs of spaces are single tokens, as in code tokenizers
    assert "\u0120" * 7 in tok.get_vocab()
    for path in (root / "json" / "decoder.py", Path(sysconfig.get_paths()["stdlib"]) / "textwrap.py"):
        text = path.read_text(encoding="utf-8")
        assert "\n        " in text
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
