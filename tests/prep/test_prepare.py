"""prepare: raw text -> sentence-per-line splits, with every repair and drop counted."""

from __future__ import annotations

import json

import pytest

from conftest import error_lines, run_cli
from fairseq_ext.errors import UserError
from fairseq_ext.prep.prepare import prepare_corpus
from fairseq_ext.prep.text_prep import SentenceFilter, split_sentences


def docs_of(path) -> list[list[str]]:
    text = path.read_text(encoding="utf-8")
    return [d.split("\n") for d in text.strip("\n").split("\n\n") if d]


@pytest.mark.parametrize("text,expected", [
    ("Dr. Smith went home. It rained! Did it?  Yes.", ["Dr. Smith went home.", "It rained!", "Did it?", "Yes."]),
    ("See e.g. Fig. 3 of J. Doe et al. for details.", ["See e.g. Fig. 3 of J. Doe et al. for details."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("Version 3.11 is out. 42 bugs were fixed.", ["Version 3.11 is out.", "42 bugs were fixed."]),
    ("no capital after. so no split", ["no capital after. so no split"]),
])
def test_sentence_splitting(text, expected):
    assert split_sentences(text) == expected


def test_filter_reasons():
    f = SentenceFilter(min_words=3, max_words=10, min_letter_ratio=0.5)
    assert f.reason("A decent sentence here.") is None
    assert f.reason("Too short") == "too few words"
    assert f.reason(" ".join(["word"] * 11)) == "too many words"
    assert f.reason("1234 5678 9012 !!") == "too few letters"
    assert f.reason("Broken \ufffd text is here") == "invalid utf-8"


def write_corpus(root, n_docs=20):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        paragraph = (f"Document number {i} starts here. It has a second sentence about topic {i}.\n"
                     f"This hard-wrapped line {i} continues\nonto the next line. The end of document {i}.")
        (root / f"doc{i:02d}.txt").write_text(paragraph + "\n\nA second paragraph of document " + str(i) + ".\n",
                                              encoding="utf-8")


def test_directory_to_splits_with_documents_kept_whole(tmp_path):
    write_corpus(tmp_path / "raw")
    stats = prepare_corpus([tmp_path / "raw"], tmp_path / "out", valid_ratio=0.2, seed=1, doc_sep="file",
                           progress=False)
    train, valid = docs_of(tmp_path / "out" / "train.txt"), docs_of(tmp_path / "out" / "valid.txt")
    assert len(train) == 16 and len(valid) == 4
    first = train[0]
    assert first[2].startswith("This hard-wrapped line ") and first[2].endswith("continues onto the next line.")
    assert all(len(d) == 5 for d in train + valid)  # every sentence of a document stays with it
    numbers = {d[0].split()[2] for d in train} | {d[0].split()[2] for d in valid}
    assert len(numbers) == 20
    assert stats["sentences_found"] == stats["sentences_kept"] == 100
    assert json.loads((tmp_path / "out" / "prepare.json").read_text())["splits"]["valid"]["documents"] == 4


def test_split_is_deterministic_and_depends_on_seed(tmp_path):
    write_corpus(tmp_path / "raw")
    outs = []
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        prepare_corpus([tmp_path / "raw"], tmp_path / name, valid_ratio=0.25, seed=seed, doc_sep="file",
                       progress=False)
        outs.append((tmp_path / name / "valid.txt").read_text())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_bad_bytes_are_repaired_and_counted(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "crlf.txt").write_bytes(b"Windows line endings are here.\r\nAnd they are fine too.\r\n")
    (raw / "nul.txt").write_bytes(b"A NUL\x00 byte hides in this line.\n")
    (raw / "latin1.txt").write_bytes(b"Caf\xe9 au lait is good for you.\nThis other line is clean.\n")
    (raw / "empty.txt").write_bytes(b"")
    (raw / "binary.bin").write_bytes(bytes(range(256)) * 8)
    stats = prepare_corpus([raw], tmp_path / "out", valid_ratio=0.0, doc_sep="line", progress=False)
    assert stats["files_read"] == 3
    assert stats["files_skipped"] == {"empty file": 1, "binary file": 1}
    assert stats["repairs"]["crlf_lines"] == 2
    assert stats["repairs"]["nul_bytes_removed"] == 1
    assert stats["repairs"]["invalid_utf8_sequences"] == 1
    assert stats["sentences_dropped"] == {"invalid utf-8": 1}
    text = (tmp_path / "out" / "train.txt").read_text(encoding="utf-8")
    assert "\r" not in text and "\x00" not in text
    assert "A NUL byte hides in this line." in text
    assert stats["sentences_found"] == stats["sentences_kept"] + sum(stats["sentences_dropped"].values())


def test_duplicates_and_short_sentences_are_dropped_and_counted(tmp_path):
    (tmp_path / "in.txt").write_text(
        "The same sentence again.\n\nThe same sentence again.\n\nShort.\n\nA fresh new sentence here.\n",
        encoding="utf-8")
    stats = prepare_corpus([tmp_path / "in.txt"], tmp_path / "out", valid_ratio=0.0, progress=False)
    assert stats["sentences_dropped"] == {"duplicate": 1, "too few words": 1}
    assert stats["documents_emptied_by_filtering"] == 2
    assert docs_of(tmp_path / "out" / "train.txt") == [["The same sentence again."], ["A fresh new sentence here."]]


def test_nothing_left_is_an_error_with_no_output(tmp_path):
    (tmp_path / "in.txt").write_text("a b\n\nc d\n", encoding="utf-8")
    with pytest.raises(UserError, match="no sentence survived"):
        prepare_corpus([tmp_path / "in.txt"], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_cli_reports_counts_and_errors(tmp_path):
    write_corpus(tmp_path / "raw", n_docs=5)
    proc = run_cli("prepare", str(tmp_path / "raw"), "-o", str(tmp_path / "out"), "--doc-sep", "file",
                   "--valid-ratio", "0.2", "--quiet")
    assert "25 sentences found -> 25 kept" in proc.stdout
    assert "train 4 documents / 20 sentences; valid 1 documents / 5 sentences" in proc.stdout
    bad = run_cli("prepare", str(tmp_path / "missing"), "-o", str(tmp_path / "o2"), check=False)
    assert bad.returncode == 1
    assert error_lines(bad.stderr) == [f"fairseq-ext prepare: error: {tmp_path / 'missing'}: no such file or directory"]
    bad = run_cli("prepare", str(tmp_path / "raw"), "-o", str(tmp_path / "o3"), "--valid-ratio", "1.5", check=False)
    assert bad.returncode == 2 and "argument --valid-ratio: must be in [0, 1), got '1.5'" in bad.stderr


def test_glob_picks_files_inside_directories(tmp_path):
    """--glob '*.txt' reads a.txt and sub/c.txt, not notes.md; a file named on the command line is read
    whatever its name; a pattern matching nothing is a one-line error."""
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    (raw / "a.txt").write_text("Alpha text is kept in the output.\n", encoding="utf-8")
    (raw / "sub" / "c.txt").write_text("Gamma text is kept in the output.\n", encoding="utf-8")
    (raw / "notes.md").write_text("Beta text must be left out.\n", encoding="utf-8")
    (tmp_path / "named.md").write_text("Delta text is named on the command line.\n", encoding="utf-8")
    proc = run_cli("prepare", str(raw), str(tmp_path / "named.md"), "-o", str(tmp_path / "out"), "--glob", "*.txt",
                   "--valid-ratio", "0", "--doc-sep", "line", "--quiet")
    assert "read 3 files" in proc.stdout
    kept = (tmp_path / "out" / "train.txt").read_text(encoding="utf-8").split("\n\n")
    assert sorted(d.strip() for d in kept if d.strip()) == [
        "Alpha text is kept in the output.", "Delta text is named on the command line.",
        "Gamma text is kept in the output."]
    bad = run_cli("prepare", str(raw), "-o", str(tmp_path / "o2"), "--glob", "*.rst", check=False)
    assert bad.returncode == 1
    assert error_lines(bad.stderr) == [f"fairseq-ext prepare: error: {raw}: directory holds no files matching '*.rst'"]
    assert not (tmp_path / "o2").exists()


def test_test_ratio_writes_a_third_split(tmp_path):
    """--test-ratio: test.txt gets round(ratio * documents) whole documents, disjoint from train and valid,
    the same for the same seed; at least one document when the ratio is above zero."""
    write_corpus(tmp_path / "raw")
    proc = run_cli("prepare", str(tmp_path / "raw"), "-o", str(tmp_path / "out"), "--doc-sep", "file",
                   "--valid-ratio", "0.1", "--test-ratio", "0.25", "--seed", "7", "--quiet")
    assert "train 13 documents / 65 sentences; valid 2 documents / 10 sentences; test 5 documents / 25 " \
           "sentences" in proc.stdout
    splits = {n: docs_of(tmp_path / "out" / f"{n}.txt") for n in ("train", "valid", "test")}
    numbers = {n: {d[0].split()[2] for d in docs} for n, docs in splits.items()}
    assert [len(numbers[n]) for n in ("train", "valid", "test")] == [13, 2, 5]
    assert set.union(*numbers.values()) == {str(i) for i in range(20)}  # disjoint and complete
    assert all(len(d) == 5 for docs in splits.values() for d in docs)
    stats = json.loads((tmp_path / "out" / "prepare.json").read_text())
    assert stats["test_ratio"] == 0.25 and stats["splits"]["test"] == {"documents": 5, "sentences": 25}
    again = prepare_corpus([tmp_path / "raw"], tmp_path / "again", valid_ratio=0.1, test_ratio=0.25, seed=7,
                           doc_sep="file", progress=False)
    assert again["splits"] == stats["splits"]
    assert (tmp_path / "again" / "test.txt").read_text() == (tmp_path / "out" / "test.txt").read_text()
    small = prepare_corpus([tmp_path / "raw"], tmp_path / "small", valid_ratio=0.0, test_ratio=0.01, seed=7,
                           doc_sep="file", progress=False)
    assert small["splits"]["test"]["documents"] == 1 and "valid" not in small["splits"]
    assert not (tmp_path / "small" / "valid.txt").exists()
    bad = run_cli("prepare", str(tmp_path / "raw"), "-o", str(tmp_path / "o3"), "--valid-ratio", "0.5",
                  "--test-ratio", "0.5", check=False)
    assert bad.returncode == 1 and "--valid-ratio + --test-ratio must be < 1" in bad.stderr
