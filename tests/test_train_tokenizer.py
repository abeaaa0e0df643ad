"""train-tokenizer: the seeds' special-token layouts, loadable by AutoTokenizer."""

from __future__ import annotations

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
    assert error_lines(proc.stderr) == [f"fairseq-ext train-tokenizer: error: {tmp_path / 'empty.txt'}: file is empty"]
    assert not (tmp_path / "t").exists()
