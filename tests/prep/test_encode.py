"""fairseq's classic pipeline: `fairseq-ext encode` pieces + `fairseq-preprocess --srcdict` == `binarize`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fairseq.data import Dictionary, MMapIndexedDataset

from conftest import REPO, error_lines, run_cli
from fairseq_ext.prep.binarize_dir import binarize_directory
from fairseq_ext.prep.pieces import encode_to_pieces
from fairseq_ext.vocab.dict_txt import DICT_TXT_HEADER
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.tokenizer import load_tokenizer

BIN = Path(sys.executable).parent
LONG = " ".join(["the quick brown fox jumps over the lazy dog"] * 8)
TEXT = [
    "",  # leading blank lines: no separator before the first document
    "",
    "  The quick brown fox jumps over the lazy dog.  ",
    "\tStudents   write programs\tand read books. ",
    "Ünïcödé: naïve café, 東京 😀 ﬁne — “quoted” text.",
    "",
    "",
    "   ",  # whitespace only: blank
    "Text spelling <s> </s> <mask> <pad> <unk> [CLS] [SEP] [MASK] [UNK] stays text.",
    LONG,  # cut into several lines at --max-line-tokens 16
    "\x01\x02",  # empty after tokenization for some tokenizers: dropped by both
    "",
    "Every evening the fox reads.",
    "",  # trailing blank lines: no separator after the last document
    "",
]
MAX_LINE_TOKENS = 16


@pytest.fixture
def families(bpe_dir, bert_dir, unigram_dir, spm_model):
    return {"bpe": bpe_dir, "bert": bert_dir, "unigram": unigram_dir, "spm": spm_model}


def preprocess(srcdict, pieces: dict, destdir: Path, *extra: str, user_dir: bool = True):
    """`fairseq-preprocess` as a user types it; {split: pieces file}."""
    args = [str(BIN / "fairseq-preprocess"), "--only-source", "--srcdict", str(srcdict), "--destdir", str(destdir)]
    if user_dir:
        args += ["--user-dir", str(REPO / "fairseq_ext"), "--task", "hf_masked_lm"]
    for split, path in pieces.items():
        args += [f"--{split}pref", str(path)]
    return subprocess.run([*args, *extra], capture_output=True, text=True, cwd=REPO)


def read_bytes(prefix: Path) -> tuple[bytes, bytes]:
    return Path(f"{prefix}.bin").read_bytes(), Path(f"{prefix}.idx").read_bytes()


@pytest.mark.parametrize("family", ["bpe", "bert", "unigram", "spm"])
def test_classic_pipeline_matches_binarize_byte_for_byte(family, families, tmp_path):
    tok = families[family]
    text = tmp_path / "train.txt"
    text.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    valid = tmp_path / "valid.txt"
    valid.write_text("\n".join(TEXT[2:5]), encoding="utf-8")  # no final newline
    stats = binarize_directory(tok, {"train": text, "valid": valid}, tmp_path / "bin",
                               max_line_tokens=MAX_LINE_TOKENS, progress=False)
    assert stats["splits"]["train"]["lines_split"] >= 1  # LONG at least
    for split, src in (("train", text), ("valid", valid)):
        encode_to_pieces(tok, [src], tmp_path / f"{split}.pieces", max_line_tokens=MAX_LINE_TOKENS, progress=False)
    # --srcdict TOK itself, as the README shows it; two workers to exercise fairseq's merge.
    proc = preprocess(tok, {"train": tmp_path / "train.pieces", "valid": tmp_path / "valid.pieces"},
                      tmp_path / "classic", "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for split in ("train", "valid"):
        assert read_bytes(tmp_path / "classic" / split) == read_bytes(tmp_path / "bin" / split), split
    assert (tmp_path / "classic" / "dict.txt").read_bytes() == (tmp_path / "bin" / "dict.txt").read_bytes()
    assert "0.0% replaced (by" in proc.stderr, proc.stderr  # every piece is in the vocabulary
    # The directory carries its tokenizer, so the tasks load it like binarize's.
    d = TokenizerDictionary.load(tmp_path / "classic" / "dict.txt")
    assert d.symbols == TokenizerDictionary.from_path(tmp_path / "bin").symbols
    ds = MMapIndexedDataset(str(tmp_path / "classic" / "train"))
    items = [ds[i].tolist() for i in range(len(ds))]
    separators = [i for i, it in enumerate(items) if not it]  # empty items
    assert len(separators) == 2 and separators[-1] == len(items) - 2
    assert all(it[-1] == d.eos() and d.eos() not in it[:-1] for it in items if it)
    assert max(map(len, items)) == MAX_LINE_TOKENS


def test_pieces_file_format(bert_dir, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    result = encode_to_pieces(bert_dir, [text], tmp_path / "t.pieces", max_line_tokens=MAX_LINE_TOKENS,
                              progress=False)
    lines = (tmp_path / "t.pieces").read_text(encoding="utf-8").split("\n")
    assert lines.pop() == ""  # every line ends with a newline
    long_pieces = load_tokenizer(bert_dir).tokenize(LONG)
    long_lines = [" ".join(long_pieces[i:i + MAX_LINE_TOKENS - 1]) for i in range(0, len(long_pieces), 15)]
    assert lines == [
        "the quick brown fox jumps over the lazy dog .",  # no leading blank lines; whitespace trimmed
        "students write programs and read books .",
        " ".join(["[UNK]"] * 4 + [","] + ["[UNK]"] * 9 + ["."]),  # unknown text: [UNK], which preprocess maps to unk
        "",  # one separator for the run of blank (and whitespace-only) lines
        # special-token text as ordinary pieces, cut at 15 pieces + eos
        "[UNK] [UNK] < s > < / s > < m ##a ##s ##k >",
        "< [UNK] > < [UNK] > [ [UNK] ] [ [UNK] ] [ m ##a",
        "##s ##k ] [ [UNK] ] [UNK] [UNK] .",
        *long_lines,  # "\x01\x02" holds no token: dropped, as binarize drops it
        "",
        "every evening the fox read ##s .",  # no trailing separator
    ]
    assert len(long_lines) == 5 and len(long_lines[-1].split()) < 15
    assert (result["lines"], result["separators"], result["pieces"]) == (
        len(lines), 2, sum(len(ln.split()) for ln in lines))
    s = result["inputs"][0]
    assert (s["lines_in"], s["lines_split"], s["empty_after_tokenization"], s["documents"]) == (15, 2, 1, 3)


def test_several_inputs_are_one_document_stream(bpe_dir, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("First file, one document.\nStill the first.\n\n\n", encoding="utf-8")
    b.write_text("\nSecond file.\n\nIts second document", encoding="utf-8")
    encode_to_pieces(bpe_dir, [a, b], tmp_path / "ab.pieces", progress=False)
    joined = tmp_path / "joined.txt"
    joined.write_text(a.read_text() + "\n" + b.read_text(), encoding="utf-8")
    encode_to_pieces(bpe_dir, [joined], tmp_path / "joined.pieces", progress=False)
    pieces = (tmp_path / "ab.pieces").read_text(encoding="utf-8")
    assert pieces == (tmp_path / "joined.pieces").read_text(encoding="utf-8")
    assert [bool(ln) for ln in pieces.split("\n")] == [True, True, False, True, False, True, False]


def test_cli_summary_streams_and_is_independent_of_workers(bpe_dir, tmp_path):
    lines = [f"Line {i}: the quick brown fox jumps over the lazy dog {i * 7}." for i in range(2000)]
    lines[500:500] = ["", ""]
    (tmp_path / "t.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    outputs = []
    for workers in (1, 2):
        proc = run_cli("encode", "--tokenizer", str(bpe_dir), "-i", str(tmp_path / "t.txt"), "-o",
                       str(tmp_path / f"w{workers}.pieces"), "--workers", str(workers), "--batch-mb", "0.02",
                       "--quiet")
        outputs.append((tmp_path / f"w{workers}.pieces").read_bytes())
    assert outputs[0] == outputs[1]
    n_pieces = sum(len(ln.split()) for ln in outputs[0].decode().splitlines())
    assert "t.txt: 2,002 lines -> 2,000 sentences in 2 documents, 2,001 items" in proc.stdout
    assert f"wrote {tmp_path / 'w2.pieces'}: 2,001 lines (2,000 of pieces, 1 blank between documents), " \
           f"{n_pieces:,} pieces" in proc.stdout


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "argument --workers: must be a positive integer, got '0'"),
    (["--max-line-tokens", "1"], "argument --max-line-tokens: must be at least 2 (one token and eos), got '1'"),
    (["--batch-mb", "0"], "argument --batch-mb: must be a number > 0, got '0'"),
    (["-i", "{tmp}/missing.txt"], "missing.txt: no such file (-i)"),
    (["-i", "{tmp}"], ": not a file (-i takes text files)"),
    (["-o", "{tmp}"], ": is a directory (-o names the file to write)"),
    (["-o", "{tmp}/t.txt"], "t.txt: exists (pass --overwrite to replace it)"),
    (["-o", "{tmp}/t.txt", "--overwrite"], "t.txt: is also an input"),
    (["--tokenizer", "{tmp}/t.txt"], "t.txt: not a valid tokenizer.json"),
    (["-i", "{tmp}/bad.txt"], "bad.txt:2: invalid UTF-8"),
])
def test_bad_input_is_one_line_and_leaves_nothing(args, message, bpe_dir, tmp_path):
    (tmp_path / "t.txt").write_text("hello there\n", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes(b"good line\nbad \xff line\n")
    base = {"--tokenizer": str(bpe_dir), "-i": str(tmp_path / "t.txt"), "-o": str(tmp_path / "out" / "o.pieces")}
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    for flag, value in base.items():
        if flag not in args:
            args = [flag, value, *args]
    before = sorted(tmp_path.rglob("*"))
    proc = run_cli("encode", "--quiet", *args, check=False)
    assert proc.returncode == (2 if message.startswith("argument ") else 1), proc.stderr  # 2: a bad option
    (line,) = error_lines(proc.stderr)
    assert line.startswith("fairseq-ext encode: error: ") and message in line, line
    assert sorted(tmp_path.rglob("*")) == before
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "hello there\n"


def test_interruption_leaves_nothing_behind(bpe_dir, tmp_path, monkeypatch):
    import fairseq_ext.prep.pieces as pieces

    (tmp_path / "t.txt").write_text("\n".join(TEXT * 50) + "\n", encoding="utf-8")
    real, calls = pieces.PieceWriter.add, []

    def interrupted(self, tokens, sizes):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, tokens, sizes)

    monkeypatch.setattr(pieces.PieceWriter, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        encode_to_pieces(bpe_dir, [tmp_path / "t.txt"], tmp_path / "o.pieces", batch_bytes=200, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_piece_with_whitespace_is_refused(tmp_path):
    """An added token holding a space cannot survive fairseq's whitespace split: say so, write nothing."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "a": 4, "b": 5}
    wl = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    wl.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    wl.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>"])
    wl.add_tokens(["New York"])
    tok = PreTrainedTokenizerFast(tokenizer_object=wl, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                  unk_token="<unk>")
    tok.save_pretrained(tmp_path / "tok")
    (tmp_path / "t.txt").write_text("a b\na New York b\n", encoding="utf-8")
    proc = run_cli("encode", "--tokenizer", str(tmp_path / "tok"), "-i", str(tmp_path / "t.txt"),
                   "-o", str(tmp_path / "o.pieces"), "--quiet", check=False)
    assert proc.returncode == 1
    (line,) = error_lines(proc.stderr)
    assert "t.txt: token 'New York' (id 6) is empty or holds whitespace" in line
    assert "fairseq-ext binarize" in line and not (tmp_path / "o.pieces").exists()


# -- dict.txt: plain fairseq refuses the layouts it would shift ---------------------------------

@pytest.mark.parametrize("family", ["bert", "unigram", "spm"])
def test_plain_fairseq_refuses_dict_txt_it_would_shift(family, families, tmp_path):
    tok = families[family]
    (tmp_path / "t.txt").write_text("The quick brown fox.\n", encoding="utf-8")
    binarize_directory(tok, {"train": tmp_path / "t.txt"}, tmp_path / "bin", progress=False)
    dict_txt = tmp_path / "bin" / "dict.txt"
    assert dict_txt.read_text(encoding="utf-8").split("\n")[0] == DICT_TXT_HEADER
    with pytest.raises(ValueError, match="plain fairseq would shift every id by its own <s> <pad> </s> <unk>"):
        Dictionary.load(str(dict_txt))
    d = TokenizerDictionary.load(dict_txt)
    assert d.symbols == TokenizerDictionary.from_path(tok).symbols and d.eos() in (1, 102)


def test_preprocess_without_the_plugin_refuses_and_with_it_matches(bert_dir, tmp_path):
    """`--srcdict DATA/dict.txt` of a BERT data directory: the task decides, and plain fairseq stops."""
    text = tmp_path / "t.txt"
    text.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    binarize_directory(bert_dir, {"train": text}, tmp_path / "bin", progress=False)
    run_cli("encode", "--tokenizer", str(bert_dir), "-i", str(text), "-o", str(tmp_path / "t.pieces"), "--quiet")
    proc = preprocess(tmp_path / "bin" / "dict.txt", {"train": tmp_path / "t.pieces"}, tmp_path / "plain",
                      user_dir=False)
    assert proc.returncode != 0
    assert "plain fairseq would shift every id" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "plain" / "train.bin").exists()
    proc = preprocess(tmp_path / "bin" / "dict.txt", {"train": tmp_path / "t.pieces"}, tmp_path / "ours")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_bytes(tmp_path / "ours" / "train") == read_bytes(tmp_path / "bin" / "train")


def test_roberta_layout_stays_loadable_by_plain_fairseq(bpe_dir, tmp_path):
    (tmp_path / "t.txt").write_text("The quick brown fox.\n", encoding="utf-8")
    binarize_directory(bpe_dir, {"train": tmp_path / "t.txt"}, tmp_path / "bin", progress=False)
    assert not (tmp_path / "bin" / "dict.txt").read_text(encoding="utf-8").startswith("#")
    plain = Dictionary.load(str(tmp_path / "bin" / "dict.txt"))
    ours = TokenizerDictionary.load(tmp_path / "bin" / "dict.txt")
    assert plain.symbols == ours.symbols and (plain.eos(), plain.pad()) == (ours.eos(), ours.pad())


@pytest.mark.parametrize("family", ["bert", "unigram", "spm"])
def test_data_dirs_written_before_the_header_still_load(family, families, tmp_path):
    """A dict.txt without the header (binarize before this change) is read as before."""
    (tmp_path / "t.txt").write_text("The quick brown fox.\n\nA lazy dog.\n", encoding="utf-8")
    binarize_directory(families[family], {"train": tmp_path / "t.txt"}, tmp_path / "bin", progress=False)
    dict_txt = tmp_path / "bin" / "dict.txt"
    lines = dict_txt.read_text(encoding="utf-8").split("\n")
    assert lines[0] == DICT_TXT_HEADER
    dict_txt.write_text("\n".join(lines[1:]), encoding="utf-8")
    d = TokenizerDictionary.load(dict_txt)
    assert d.symbols == TokenizerDictionary.from_path(families[family]).symbols
    assert d.tokenizer_size == len(lines) - 2  # header and final "" are not tokens
    # A dict.txt that disagrees with the tokenizer is still caught, header or not.
    dict_txt.write_text("\n".join([lines[0], *lines[2:]]), encoding="utf-8")
    with pytest.raises(ValueError, match="dict.txt disagrees with .* first difference at line 1"):
        TokenizerDictionary.load(dict_txt)


def test_task_setup_reads_old_and_new_dict_txt(bert_dir, tmp_path):
    from fairseq_ext.tasks.hf_masked_lm import HFMaskedLMConfig, HFMaskedLMTask

    (tmp_path / "t.txt").write_text("The quick brown fox.\n", encoding="utf-8")
    binarize_directory(bert_dir, {"train": tmp_path / "t.txt"}, tmp_path / "bin", progress=False)
    new = HFMaskedLMTask.setup_task(HFMaskedLMConfig(data=str(tmp_path / "bin"), pad_vocab_to_multiple=1))
    dict_txt = tmp_path / "bin" / "dict.txt"
    dict_txt.write_text(dict_txt.read_text(encoding="utf-8").split("\n", 1)[1], encoding="utf-8")
    old = HFMaskedLMTask.setup_task(HFMaskedLMConfig(data=str(tmp_path / "bin"), pad_vocab_to_multiple=1))
    assert new.dictionary.symbols == old.dictionary.symbols
    assert (new.dictionary.pad(), new.dictionary.eos(), new.dictionary.mask_index) == (0, 102, 103)
