"""`binarize --num-shards N --shard-index K`: N runs (the tasks of an array job) write DIR/shard0 ... DIR/shard{N-1},
which hold together exactly the documents of one run, each in one part, the same bytes every time.

Three inputs: a text file and one JSON lines file (documents dealt by a hash of their number), and a directory of
five JSON lines files (whole files dealt, as there are at least N of them).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import BIN, REPO, shell
from fairseq_ext.cli.main import main
from fairseq_ext.prep.shard_parts import DealtText, ShardPart, document_part
from support.binarized import documents, sized_documents

N = 3


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The same documents as a text file, one JSON lines file, and a directory of five JSON lines files."""
    root = tmp_path_factory.mktemp("parts")
    docs = sized_documents(360, 9, seed=9)  # documents of 1 to 9 sentences
    text = "\n\n".join(d if i % 7 else d + "\n  \n" for i, d in enumerate(docs))  # blank runs, a blank-only line
    (root / "train.txt").write_text("\n\n" + text + "\n", encoding="utf-8")
    rows = [json.dumps({"text": d}) + "\n" for d in docs]
    (root / "train.jsonl").write_text("".join(rows), encoding="utf-8")
    (root / "rows").mkdir()
    for f in range(5):  # contiguous runs of rows, so that file order matters
        (root / "rows" / f"part-{f:02d}.jsonl").write_text("".join(rows[f * len(rows) // 5 : (f + 1) * len(rows) // 5]))
    return {"text": root / "train.txt", "jsonl": root / "train.jsonl", "jsonl-dir": root / "rows"}


def binarize(tok, train, out, *flags) -> int:
    return main(["binarize", "--tokenizer", str(tok), "--train", str(train), "--valid", str(train), "-o", str(out),
                 "--quiet", *flags])


def run_parts(tok, train, out) -> None:
    """All N parts into out, one run each, as the tasks of an array run them."""
    for k in range(N):
        assert binarize(tok, train, out, "--num-shards", str(N), "--shard-index", str(k)) == 0


@pytest.mark.parametrize(("name", "rule"), [("text", "documents"), ("jsonl", "documents"), ("jsonl-dir", "files")])
def test_the_parts_hold_the_documents_of_one_run(bpe_dir, inputs, tmp_path, capsys, name, rule):
    one, out = tmp_path / "one", tmp_path / "parts"
    assert binarize(bpe_dir, inputs[name], one) == 0
    whole = documents(one / "train")
    capsys.readouterr()
    out.mkdir()  # the tasks write into DIR whether it exists or not
    run_parts(bpe_dir, inputs[name], out)
    printed = capsys.readouterr().out.splitlines()
    dirs = [out / f"shard{k}" for k in range(N)]
    assert sorted(p.name for p in out.iterdir()) == [d.name for d in dirs]  # nothing else, no temporaries
    parts = [documents(d / "train") for d in dirs]
    assert all(parts), "an empty part"
    assert Counter(doc for docs in parts for doc in docs) == Counter(whole)  # every document, once
    if rule == "documents":  # a part keeps its documents in input order
        for docs in parts:
            assert sorted(docs, key=whole.index) == docs

    path = ":".join(map(str, dirs))
    assert printed.count(f"data path for fairseq-train: {path}") == N
    total = {"documents": len(whole), "files": 5}[rule]
    kept = []
    for k, d in enumerate(dirs):
        own = json.loads((d / "binarize.json").read_text())
        assert (own["num_shards"], own["shard_index"], own["rule"], own["data_path"]) == (N, k, rule, path)
        assert own[rule]["total"] == total and own["splits"]["train"]["documents"] == len(parts[k])
        kept.append(own[rule]["kept"])
        assert any(line.startswith(f"shard {k} of {N} (--shard-index {k}): ") and
                   line.endswith(f"; {own[rule]['kept']:,} of {total:,} {rule}" + ("; valid in shard 0 only" if k
                                                                                    else "")) for line in printed)
        # a complete data directory: the tokenizer of one run, validation in shard0 only (whole)
        expected = {p.name for p in one.iterdir()} - (set() if k == 0 else {"valid.bin", "valid.idx"})
        assert {p.name for p in d.iterdir()} == expected
        for f in ("dict.txt", "tokenizer.json"):
            assert (d / f).read_bytes() == (one / f).read_bytes()
    assert documents(dirs[0] / "valid") == documents(one / "valid")
    assert sum(kept) == total
    if rule == "documents":
        assert kept == [sum(document_part(i, N) == k for i in range(total)) for k in range(N)]
    else:  # file i of the sorted list to part i mod N
        files = sorted(inputs[name].iterdir())
        for k, d in enumerate(dirs):
            assert json.loads((d / "binarize.json").read_text())["files"]["paths"] == list(map(str, files[k::N]))


def test_a_part_is_the_same_bytes_every_time_and_for_any_batch_size(bpe_dir, inputs, tmp_path):
    for name in ("text", "jsonl"):
        written = []
        for i, batch_mb in enumerate(("4", "0.0005", "4")):  # 0.0005 MB: batches end inside documents
            out = tmp_path / f"{name}{i}"
            assert binarize(bpe_dir, inputs[name], out, "--num-shards", "3", "--shard-index", "1",
                            "--batch-mb", batch_mb) == 0
            written.append([(out / "shard1" / f"train{s}").read_bytes() for s in (".bin", ".idx")])
        assert written[0] == written[1] == written[2], name


def test_document_filter_keeps_whole_documents_across_batch_edges():
    class Batches:  # a source giving its lines in batches cut anywhere
        size = 0

        def __init__(self, cuts):
            self.cuts = cuts

        def line_batches(self, batch_bytes):
            lines = ["", "a1", "a2", "", "", "b1", "  ", "c1", "c2", "c3", "", "d1", "", "e1"]
            edges = [0, *self.cuts, len(lines)]
            for a, b in zip(edges, edges[1:]):
                yield lines[a:b], a + 1, b - a

    def kept(cuts, index):
        part = ShardPart(2, index)
        out = [line for lines, _first, _n in DealtText(Batches(cuts), part).line_batches(1) for line in lines]
        return out, (part.total, part.kept)

    numbers = {k: [i for i in range(5) if document_part(i, 2) == k] for k in range(2)}
    docs = [["a1", "a2"], ["b1"], ["c1", "c2", "c3"], ["d1"], ["e1"]]
    for k in range(2):
        expected = [line for i in numbers[k] for line in [*docs[i], ""]]
        if numbers[k][-1] == 4:  # the input ends without a blank line after its last document
            expected.pop()
        for cuts in ([], [1], [2, 3], [4, 6, 7], list(range(1, 14))):
            assert kept(cuts, k) == (expected, (5, len(numbers[k]))), cuts


def test_a_part_no_document_falls_to_is_refused_and_leaves_nothing(bpe_dir, tmp_path, capsys):
    one = tmp_path / "onedoc.txt"
    one.write_text("The only document.\n", encoding="utf-8")
    empty = next(k for k in range(3) if k != document_part(0, 3))
    out = tmp_path / "out"
    assert main(["binarize", "--tokenizer", str(bpe_dir), "--train", str(one), "-o", str(out), "--quiet",
                 "--num-shards", "3", "--shard-index", str(empty)]) != 0
    assert capsys.readouterr().err == (f"fairseq-ext binarize: error: {one}: none of its 1 documents falls to shard "
                                       f"{empty} of 3 (documents are dealt by a hash of their number); use fewer "
                                       "shards\n")
    assert not out.exists() or not any(out.iterdir())
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n", encoding="utf-8")
    assert main(["binarize", "--tokenizer", str(bpe_dir), "--train", str(blank), "-o", str(out), "--quiet",
                 "--num-shards", "3", "--shard-index", "0"]) != 0
    assert capsys.readouterr().err == (f"fairseq-ext binarize: error: {blank}: no text to binarize, only blank "
                                       "lines (--train)\n")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(("flags", "message"), [
    (["--num-shards", "3", "--shard-index", "3"], "--shard-index 3: must be from 0 to 2 (--num-shards 3)"),
    (["--num-shards", "0", "--shard-index", "0"], "argument --num-shards: must be a positive integer, got '0'"),
    (["--num-shards", "3", "--shard-index", "-1"], "argument --shard-index: must be an integer >= 0, got '-1'"),
    (["--num-shards", "3"], "--num-shards N and --shard-index K go together: this run writes DIR/shardK, part K of N"),
    (["--shard-index", "0"], "--num-shards N and --shard-index K go together: this run writes DIR/shardK, part K of N"),
    (["--num-shards", "3", "--shard-index", "0", "--shards", "3"],
     "--shards 3 writes every shard in one run, --num-shards 3 --shard-index 0 one of them (a task of an array job): "
     "give one or the other"),
])
def test_bad_part_settings_are_one_line(bpe_dir, inputs, tmp_path, capsys, flags, message):
    assert binarize(bpe_dir, inputs["text"], tmp_path / "out", *flags) != 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fairseq-ext binarize: error: {message}"), lines
    assert not (tmp_path / "out").exists()


def test_overwrite_replaces_only_its_own_shard(bpe_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    for k in (0, 1):
        assert binarize(bpe_dir, inputs["text"], out, "--num-shards", "2", "--shard-index", str(k)) == 0
    shard0 = {p.name: p.read_bytes() for p in (out / "shard0").iterdir()}
    capsys.readouterr()
    assert binarize(bpe_dir, inputs["text"], out, "--num-shards", "2", "--shard-index", "1") != 0
    assert "shard1: directory exists and is not empty (pass --overwrite to replace it)" in capsys.readouterr().err
    assert binarize(bpe_dir, inputs["jsonl"], out, "--num-shards", "2", "--shard-index", "1", "--overwrite") == 0
    assert {p.name: p.read_bytes() for p in (out / "shard0").iterdir()} == shard0
    assert json.loads((out / "shard1" / "binarize.json").read_text())["splits"]["train"]["file"] == str(inputs["jsonl"])
    assert sorted(p.name for p in out.iterdir()) == ["shard0", "shard1"]


def test_the_batch_file_writes_its_tasks_shard_and_skips_a_complete_one(bpe_dir, inputs, tmp_path):
    """scripts/slurm/binarize_array.sbatch run by bash as Slurm would run task 1 of 2 (the real array: test_slurm)."""
    out = tmp_path / "data-bin"
    env = dict(SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2", SLURM_ARRAY_JOB_ID="7", SLURM_SUBMIT_DIR=str(REPO),
               VENV=str(BIN.parent), TOKENIZER=str(bpe_dir), TRAIN=str(inputs["jsonl-dir"]), VALID=str(inputs["text"]),
               OUT=str(out), WORKERS="1")
    log = shell(["bash", "scripts/slurm/binarize_array.sbatch"], env)
    assert log.startswith("job 7_1 started ") and ", restart 0, shard 1 of 2\n" in log, log
    assert f"data path for fairseq-train: {out}/shard0:{out}/shard1" in log
    assert sorted(p.name for p in out.iterdir()) == ["shard1"]
    own = json.loads((out / "shard1" / "binarize.json").read_text())
    assert (own["num_shards"], own["shard_index"], own["rule"], own["files"]["kept"]) == (2, 1, "files", 2)
    assert "valid" not in own["splits"]  # validation is task 0's
    before = (out / "shard1" / "train.bin").stat().st_mtime_ns
    again = shell(["bash", "scripts/slurm/binarize_array.sbatch"], env)
    assert f"{out}/shard1: complete already (shard 1 of 2); nothing to do" in again
    assert (out / "shard1" / "train.bin").stat().st_mtime_ns == before
    # rerunning task 0 alone (sbatch --array=0) makes the array's size 1: refused beside parts of 2, not the
    # whole corpus written as "part 0 of 1" beside shard1; NUM_SHARDS=2 names the real N and runs the task
    lone = dict(env, SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="1")
    refused = shell(["bash", "scripts/slurm/binarize_array.sbatch"], lone, check=False)
    assert (f"{out}/shard1: written as one of 2 parts, and this run is --num-shards 1: together they would hold "
            "documents twice; rerun with --num-shards 2 (scripts/slurm/binarize_array.sbatch: NUM_SHARDS=2)") in refused
    assert sorted(p.name for p in out.iterdir()) == ["shard1"]
    shell(["bash", "scripts/slurm/binarize_array.sbatch"], dict(lone, NUM_SHARDS="2"))
    assert json.loads((out / "shard0" / "binarize.json").read_text())["num_shards"] == 2


def test_a_part_beside_parts_of_another_split_is_refused(bpe_dir, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    assert binarize(bpe_dir, inputs["text"], out, "--num-shards", "3", "--shard-index", "2") == 0
    capsys.readouterr()
    assert binarize(bpe_dir, inputs["text"], out, "--num-shards", "2", "--shard-index", "0") == 1
    assert f"{out}/shard2: written as one of 3 parts, and this run is --num-shards 2" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["shard2"]
