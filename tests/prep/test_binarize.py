"""binarize: fairseq-readable mmap data holding exactly the tokenizer's ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fairseq.data import MMapIndexedDataset, TokenBlockDataset

from conftest import error_lines, run_cli
from fairseq_ext.prep.binarize_dir import binarize_directory
from fairseq_ext.prep.line_encoder import BinarizeError
from fairseq_ext.vocab.tokenizer import load_tokenizer

TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "A patient teacher explains tokenizers.",
    "",
    "",
    "Students write programs and read books.",
    "",
    "Every evening the fox reads.",
]


def read_items(prefix) -> list[list[int]]:
    ds = MMapIndexedDataset(str(prefix))
    return [ds[i].tolist() for i in range(len(ds))]


def expected_items(tok, lines, eos) -> list[list[int]]:
    items, pending, in_doc = [], False, False
    for line in lines:
        if not line.strip():
            pending, in_doc = pending or in_doc, False
            continue
        if pending:
            items.append([])
            pending = False
        items.append(tok(line, add_special_tokens=False)["input_ids"] + [eos])
        in_doc = True
    return items


@pytest.mark.parametrize("family", ["bpe", "bert", "unigram", "spm"])
def test_ids_equal_tokenizer_ids(family, bpe_dir, bert_dir, unigram_dir, spm_model, tmp_path):
    src = {"bpe": bpe_dir, "bert": bert_dir, "unigram": unigram_dir, "spm": spm_model}[family]
    (tmp_path / "t.txt").write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    stats = binarize_directory(src, {"train": tmp_path / "t.txt"}, tmp_path / "bin", progress=False)
    tok = load_tokenizer(src)
    eos = {"bpe": 2, "bert": 102, "unigram": 1, "spm": 1}[family]
    assert read_items(tmp_path / "bin" / "train") == expected_items(tok, TEXT, eos)
    s = stats["splits"]["train"]
    assert (s["lines_in"], s["sentences"], s["documents"], s["items"]) == (7, 4, 3, 6)
    # The data directory carries its tokenizer: it loads back and agrees with dict.txt.
    from fairseq_ext.vocab.dictionary import TokenizerDictionary

    d = TokenizerDictionary.load(tmp_path / "bin" / "dict.txt")
    assert d.symbols == TokenizerDictionary.from_tokenizer(tok).symbols
    assert json.loads((tmp_path / "bin" / "binarize.json").read_text())["splits"]["train"]["tokens"] == s["tokens"]


def test_document_boundaries_work_with_complete_doc(bpe_dir, tmp_path):
    (tmp_path / "t.txt").write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    binarize_directory(bpe_dir, {"train": tmp_path / "t.txt"}, tmp_path / "bin", progress=False)
    ds = MMapIndexedDataset(str(tmp_path / "bin" / "train"))
    blocks = TokenBlockDataset(ds, ds.sizes, block_size=1000, pad=1, eos=2,
                               break_mode="complete_doc", document_sep_len=0)
    # three documents -> three blocks, each ending with eos, sentences never mixed across them
    assert len(blocks) == 3
    sentences_per_block = [int((blocks[i] == 2).sum()) for i in range(len(blocks))]
    assert sentences_per_block == [2, 1, 1]


def test_special_token_text_is_never_a_special_id(bpe_dir, bert_dir, spm_model, tmp_path):
    text = ["Text spelling <s> and </s> and <mask> <pad> [CLS] [SEP] [MASK] <unk> stays text."]
    (tmp_path / "t.txt").write_text("\n".join(text) + "\n", encoding="utf-8")
    for i, src in enumerate([bpe_dir, bert_dir, spm_model]):
        binarize_directory(src, {"train": tmp_path / "t.txt"}, tmp_path / f"bin{i}", progress=False)
        tok = load_tokenizer(src)
        from fairseq_ext.vocab.tokenizer import special_token_ids

        specials = set(special_token_ids(tok)) - {tok.unk_token_id}
        (item,) = read_items(tmp_path / f"bin{i}" / "train")
        assert item[-1] == load_tokenizer(src).convert_tokens_to_ids(tok.eos_token or tok.sep_token)
        assert not specials & set(item[:-1]), (src, item)


def test_merged_special_string_is_spelled_out(tmp_path):
    """A vocabulary whose merges rebuild "<s>" still never emits the special id."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<": 4, "s": 5, ">": 6, "<s": 7, "a": 8}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[("<", "s"), ("<s", ">")], unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bpe.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.save_pretrained(tmp_path / "tok")
    (tmp_path / "t.txt").write_text("a <s> a\n", encoding="utf-8")
    stats = binarize_directory(tmp_path / "tok", {"train": tmp_path / "t.txt"}, tmp_path / "bin", progress=False)
    assert read_items(tmp_path / "bin" / "train") == [[8, 4, 5, 6, 8, 2]]
    assert stats["splits"]["train"]["special_text_fixed"] == 1


def test_long_lines_are_cut_not_dropped(bpe_dir, tmp_path):
    long_line = " ".join(["the quick brown fox"] * 60)
    (tmp_path / "t.txt").write_text(long_line + "\nshort line here.\n", encoding="utf-8")
    stats = binarize_directory(bpe_dir, {"train": tmp_path / "t.txt"}, tmp_path / "bin",
                               max_line_tokens=16, progress=False)
    items = read_items(tmp_path / "bin" / "train")
    ids = load_tokenizer(bpe_dir)(long_line, add_special_tokens=False)["input_ids"]
    cut = items[:-1]
    assert all(len(it) <= 16 and it[-1] == 2 for it in items)
    assert [t for it in cut for t in it[:-1]] == ids  # every token kept, in order
    assert len(cut) == -(-len(ids) // 15)
    assert stats["splits"]["train"]["lines_split"] == 1


def test_same_bytes_for_any_worker_count(bpe_dir, tmp_path):
    lines = [f"Line {i}: the quick brown fox jumps over the lazy dog {i * 7}." for i in range(3000)]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    outputs = []
    for workers in (1, 2):
        out = tmp_path / f"bin{workers}"
        run_cli("binarize", "--tokenizer", str(bpe_dir), "--train", str(tmp_path / "t.txt"),
                "-o", str(out), "--workers", str(workers), "--batch-mb", "0.05", "--quiet")
        outputs.append(((out / "train.bin").read_bytes(), (out / "train.idx").read_bytes()))
    assert outputs[0] == outputs[1]


def test_streams_in_batches_with_documents_across_batch_edges(bpe_dir, tmp_path):
    lines = []
    for d in range(200):
        lines += [f"Document {d} sentence {s} about the fox." for s in range(3)] + [""]
    (tmp_path / "t.txt").write_text("\n".join(lines), encoding="utf-8")
    one = binarize_directory(bpe_dir, {"train": tmp_path / "t.txt"}, tmp_path / "a", progress=False)
    many = binarize_directory(bpe_dir, {"train": tmp_path / "t.txt"}, tmp_path / "b",
                              batch_bytes=100, progress=False)
    assert (tmp_path / "a" / "train.bin").read_bytes() == (tmp_path / "b" / "train.bin").read_bytes()
    assert (tmp_path / "a" / "train.idx").read_bytes() == (tmp_path / "b" / "train.idx").read_bytes()
    assert one["splits"]["train"]["documents"] == many["splits"]["train"]["documents"] == 200


def test_cli_summary_and_files(bpe_dir, tmp_path):
    (tmp_path / "t.txt").write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    proc = run_cli("binarize", "--tokenizer", str(bpe_dir / "tokenizer.json"), "--train", str(tmp_path / "t.txt"),
                   "--valid", str(tmp_path / "t.txt"), "-o", str(tmp_path / "bin"), "--quiet")
    assert "train: 7 lines -> 4 sentences in 3 documents" in proc.stdout
    assert "tokens/s" in proc.stdout and "unk 0.000%" in proc.stdout
    names = {p.name for p in (tmp_path / "bin").iterdir()}
    assert {"train.bin", "train.idx", "valid.bin", "valid.idx", "dict.txt", "tokenizer.json"} <= names


def test_invalid_utf8_is_a_one_line_error_and_leaves_nothing(bpe_dir, tmp_path):
    (tmp_path / "t.txt").write_bytes(b"good line\nbad \xff\xfe line\n")
    proc = run_cli("binarize", "--tokenizer", str(bpe_dir), "--train", str(tmp_path / "t.txt"),
                   "-o", str(tmp_path / "bin"), "--quiet", check=False)
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    assert "t.txt:2: invalid UTF-8" in line
    assert list(tmp_path.iterdir()) == [tmp_path / "t.txt"]


def test_missing_file_and_bad_tokenizer_errors(bpe_dir, tmp_path):
    proc = run_cli("binarize", "--tokenizer", str(bpe_dir), "--train", str(tmp_path / "nope.txt"),
                   "-o", str(tmp_path / "bin"), check=False)
    assert proc.returncode == 1 and "nope.txt: no such file" in error_lines(proc.stderr)[0]
    (tmp_path / "t.txt").write_text("hello\n", encoding="utf-8")
    proc = run_cli("binarize", "--tokenizer", str(tmp_path / "t.txt"), "--train", str(tmp_path / "t.txt"),
                   "-o", str(tmp_path / "bin"), check=False)
    assert proc.returncode == 1 and "t.txt: not a valid tokenizer.json" in error_lines(proc.stderr)[0]
    assert not (tmp_path / "bin").exists()


def test_interruption_leaves_nothing_behind(bpe_dir, tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text("\n".join(TEXT * 200) + "\n", encoding="utf-8")
    import fairseq_ext.prep.binarizer as binarizer

    real = binarizer._write_batch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(binarizer, "_write_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        binarize_directory(bpe_dir, {"train": tmp_path / "t.txt"}, tmp_path / "bin", batch_bytes=200, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_existing_output_needs_overwrite(bpe_dir, tmp_path):
    (tmp_path / "t.txt").write_text("hello there friend\n", encoding="utf-8")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "keep").write_text("x")
    with pytest.raises(BinarizeError.__mro__[1], match="not empty"):
        binarize_directory(bpe_dir, {"train": tmp_path / "t.txt"}, tmp_path / "bin", progress=False)
    assert (tmp_path / "bin" / "keep").exists()
    binarize_directory(bpe_dir, {"train": tmp_path / "t.txt"}, tmp_path / "bin", overwrite=True, progress=False)
    assert not (tmp_path / "bin" / "keep").exists() and (tmp_path / "bin" / "train.bin").exists()


def test_unknown_rate_is_counted(bert_dir, tmp_path):
    (tmp_path / "t.txt").write_text("the fox zzzq qqqz\n", encoding="utf-8")
    stats = binarize_directory(bert_dir, {"train": tmp_path / "t.txt"}, tmp_path / "bin", progress=False)
    items = read_items(tmp_path / "bin" / "train")
    assert stats["splits"]["train"]["unknown_tokens"] == items[0].count(100) > 0
    assert np.isclose(stats["splits"]["train"]["unk_rate"], items[0].count(100) / len(items[0]))
