"""Sharded data: `binarize --shards N` keeps documents whole, and DATA=shard0:shard1:... cycles by epoch.

The training runs are real `fairseq-train` processes on tiny models: every task that reads binarized
data wraps around the shard list, and a run stopped in the middle of a shard resumes there and ends
exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq.data.indexed_dataset import MMapIndexedDataset

from conftest import REPO, make_text
from fairseq_ext.cli.main import main
from fairseq_ext.prep.line_encoder import BinarizeError
from fairseq_ext.prep.shards import ShardRouter, check_open_files
from fairseq_ext.serialization import safe_torch_load
from fairseq_ext.tasks.hf_masked_lm import HFMaskedLMConfig, HFMaskedLMTask
from fairseq_ext.vocab.tokenizer import TokenizerError
from support.binarized import documents, sized_documents
from support.training import JSON_LOG, TrainLog, fairseq_train

N = 3


def corpus(seed: int = 5) -> str:
    """Documents of 1 to 12 sentences (so of very different sizes), a blank line between them."""
    return "\n\n".join(sized_documents(420, 12, seed)) + "\n"


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("shards") / "train.txt"
    path.write_text(corpus(), encoding="utf-8")
    return path


def binarize(tok, train, out, *flags) -> None:
    assert main(["binarize", "--tokenizer", str(tok), "--train", str(train), "--valid", str(train), "-o", str(out),
                 "--quiet", *flags]) == 0


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, bpe_dir, text) -> Path:
    out = tmp_path_factory.mktemp("bin") / "data-bin"
    binarize(bpe_dir, text, out, "--shards", str(N))
    return out


# -- the router ---------------------------------------------------------------------------------------------------


class ListSink:
    def __init__(self):
        self.tokens, self.sizes = [], []

    def add(self, tokens, sizes):
        self.tokens += np.asarray(tokens).tolist()
        self.sizes += np.asarray(sizes).tolist()


def random_items(rng, n_docs: int):
    """(tokens, sizes) of ``n_docs`` documents laid end to end, one empty item between documents."""
    sizes = []
    for d in range(n_docs):
        if d:
            sizes.append(0)
        sizes += rng.integers(1, 20, size=int(rng.integers(1, 15))).tolist()
    sizes = np.array(sizes)
    return rng.integers(5, 1000, size=int(sizes.sum())), sizes


def route(tokens, sizes, cuts, n):
    """Feed the items to a router in batches cut at item indices ``cuts``."""
    sinks = [ListSink() for _ in range(n)]
    router = ShardRouter(sinks)
    item_edges = [0, *cuts, len(sizes)]
    token_edges = np.concatenate([[0], np.cumsum(sizes)])
    for a, b in zip(item_edges[:-1], item_edges[1:]):
        router.add(tokens[token_edges[a] : token_edges[b]], sizes[a:b])
    return sinks, router


def split_docs(tokens, sizes) -> list[tuple]:
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    items = [tuple(tokens[offsets[i] : offsets[i + 1]]) for i in range(len(sizes))]
    docs, current = [], []
    for item in items:
        if item:
            current.append(item)
        else:
            docs.append(tuple(current))
            current = []
    return [*docs, tuple(current)] if items else []


@pytest.mark.parametrize("n", [1, 2, 5])
def test_router_deals_whole_documents_the_same_way_for_any_batching(n):
    rng = np.random.default_rng(n)
    tokens, sizes = random_items(rng, 40)
    whole = split_docs(tokens.tolist(), sizes)
    one_batch, router = route(tokens, sizes, [], n)
    # batches cut anywhere: inside documents, right before and right after separators
    seps = np.flatnonzero(sizes == 0)
    cuts = sorted({1, 2, int(seps[3]), int(seps[3]) + 1, int(seps[10]) + 1, *rng.integers(1, len(sizes), 15).tolist()})
    many_batches, _ = route(tokens, sizes, cuts, n)
    assert [(s.tokens, s.sizes) for s in many_batches] == [(s.tokens, s.sizes) for s in one_batch]

    shard_docs = [split_docs(s.tokens, s.sizes) for s in one_batch]
    assert Counter(d for docs in shard_docs for d in docs) == Counter(whole)  # every document once, whole
    for docs in shard_docs:  # input order kept within a shard
        assert sorted(docs, key=whole.index) == docs
    assert router.documents == [len(d) for d in shard_docs] and sum(router.documents) == len(whole)
    assert router.tokens == [len(s.tokens) for s in one_batch] and sum(router.tokens) == len(tokens)
    assert router.items == [len(s.sizes) for s in one_batch]
    longest = max(sum(map(len, d)) for d in whole)
    assert router.largest_document == longest
    assert max(router.tokens) - min(router.tokens) <= longest  # balanced to within one document


# -- binarize --shards ----------------------------------------------------------------------------------------------


def test_binarize_shards_keep_documents_whole(sharded, bpe_dir, text, tmp_path, capsys):
    plain = tmp_path / "plain"
    binarize(bpe_dir, text, plain)
    assert not list(plain.glob("shard*"))  # --shards 1 (the default) keeps the plain layout
    whole = documents(plain / "train")
    assert len(whole) == json.loads((plain / "binarize.json").read_text())["splits"]["train"]["documents"]

    dirs = [sharded / f"shard{i}" for i in range(N)]
    assert sorted(p.name for p in sharded.iterdir()) == ["binarize.json", *[d.name for d in dirs]]
    per_shard = [documents(d / "train") for d in dirs]
    assert Counter(doc for docs in per_shard for doc in docs) == Counter(whole)
    assert all(per_shard), "an empty shard"

    # each shard is a whole data directory; validation and test only in the first
    first_files = {p.name for p in dirs[0].iterdir()}
    assert first_files == {p.name for p in plain.iterdir()}
    for d in dirs[1:]:
        assert {p.name for p in d.iterdir()} == first_files - {"valid.bin", "valid.idx"}
        for name in ("tokenizer.json", "dict.txt"):
            assert (d / name).read_bytes() == (plain / name).read_bytes()
    assert documents(dirs[0] / "valid") == documents(plain / "valid")

    # counts: per shard (binarize.json of each), and the whole, add up
    top = json.loads((sharded / "binarize.json").read_text())
    train = top["splits"]["train"]
    assert top["data_path"] == ":".join(str(d) for d in dirs)
    for i, (d, docs, row) in enumerate(zip(dirs, per_shard, top["shards"])):
        own = json.loads((d / "binarize.json").read_text())
        assert (own["shard"], own["shards"], own["splits"]["train"]) == (i, N, {k: row[k] for k in own["splits"]
                                                                                ["train"]})
        assert ("valid" in own["splits"]) == (i == 0)
        ds = MMapIndexedDataset(str(d / "train"))
        assert (row["dir"], row["documents"], row["items"], row["tokens"]) == \
            (d.name, len(docs), len(ds), int(ds.sizes.sum()))
    assert sum(r["documents"] for r in top["shards"]) == train["documents"] == len(whole)
    assert sum(r["tokens"] for r in top["shards"]) == train["tokens"]
    assert sum(r["items"] for r in top["shards"]) == train["items"] - (N - 1)  # one separator fewer per extra shard
    longest = max(sum(map(len, doc)) for doc in whole)
    tokens = [r["tokens"] for r in top["shards"]]
    assert max(tokens) - min(tokens) <= longest


def test_binarize_shards_prints_counts_and_the_data_path(bpe_dir, text, tmp_path, capsys):
    out = tmp_path / "bin"
    binarize(bpe_dir, text, out, "--shards", "2")
    lines = capsys.readouterr().out.splitlines()
    top = json.loads((out / "binarize.json").read_text())
    for row in top["shards"]:
        assert any(line.startswith(f"  {row['dir']}: {row['documents']:,} documents, {row['items']:,} items, "
                                   f"{row['tokens']:,} tokens") for line in lines), lines
    assert lines[-1] == f"data path for fairseq-train: {out}/shard0:{out}/shard1"


def test_more_shards_than_documents_is_refused_whole(bpe_dir, tmp_path, capsys):
    train = tmp_path / "three_docs.txt"
    train.write_text("one sentence.\n\ntwo sentence.\nmore.\n\nthree.\n", encoding="utf-8")
    assert main(["binarize", "--tokenizer", str(bpe_dir), "--train", str(train), "-o", str(tmp_path / "out"),
                 "--shards", "3", "--quiet"]) == 0
    top = json.loads((tmp_path / "out" / "binarize.json").read_text())
    tokens, largest = [r["tokens"] for r in top["shards"]], top["splits"]["train"]["extra"]["largest_document"]
    assert largest == max(tokens) > 1.25 * sum(tokens) / 3  # one document a shard: as unequal as the documents
    assert (f"note: the shards are unbalanced (largest {max(tokens)} tokens, smallest {min(tokens)}): documents are "
            f"kept whole and the largest has {largest} tokens") in capsys.readouterr().out
    assert main(["binarize", "--tokenizer", str(bpe_dir), "--train", str(train), "-o", str(tmp_path / "out4"),
                 "--shards", "4", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert err.strip() == (f"fairseq-ext binarize: error: --shards 4: more shards than documents in {train} (3; "
                           "blank lines separate documents)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "three_docs.txt"]


def test_shards_that_cannot_all_be_open_at_once_are_refused_before_any_work():
    check_open_files(100, limits=(1024, 4096))  # fits under the soft limit
    check_open_files(1000, limits=(1024, 4096))  # needs the soft limit raised, within the hard one
    with pytest.raises(BinarizeError, match=r"^--shards 5000: writing that many shards at once needs 10,064 open "
                                            r"files, more than this system allows \(ulimit -Hn: 4,096\); use at most "
                                            r"2,016 shards$"):
        check_open_files(5000, limits=(1024, 4096))


# -- the task: which directory each epoch reads -----------------------------------------------------------------------


def test_task_cycles_shards_by_epoch_and_validates_on_the_first(sharded, caplog):
    dirs = [str(sharded / f"shard{i}") for i in range(N)]
    cfg = HFMaskedLMConfig(data=":".join(dirs), tokens_per_sample=64, seed=1, dataset_impl=None)
    task = HFMaskedLMTask.setup_task(cfg)
    assert task.has_sharded_data("train")  # fairseq reloads the train split every epoch
    with caplog.at_level(logging.INFO, logger="fairseq_ext.tasks.base"):
        for epoch in range(1, 2 * N + 2):
            _, path = task.load_split("train", epoch, combine=False)
            assert path == os.path.join(dirs[(epoch - 1) % N], "train")
        for epoch in (1, 2, 5):
            assert task.load_split("valid", epoch, combine=False)[1] == os.path.join(dirs[0], "valid")
    read = re.findall(r"epoch (\d+): training on shard (\d) of 3: (\S+)", caplog.text)
    assert [(int(e), int(k), p) for e, k, p in read] == [(e, (e - 1) % N, dirs[(e - 1) % N]) for e in range(1, 8)]


def test_a_shard_with_another_tokenizer_stops_at_setup(sharded, unigram_dir, text, tmp_path):
    other = tmp_path / "other"
    binarize(unigram_dir, text, other)
    data = f"{sharded}/shard0:{sharded}/shard1:{other}"
    with pytest.raises(TokenizerError, match=rf"^{other} was binarized with a different tokenizer than "
                                             rf"{sharded}/shard0: .* there, .* in {sharded}/shard0$"):
        HFMaskedLMTask.setup_task(HFMaskedLMConfig(data=data, tokens_per_sample=64, seed=1, dataset_impl=None))
    with pytest.raises(TokenizerError, match=rf"^{tmp_path}/nope: no such data directory"):
        HFMaskedLMTask.setup_task(HFMaskedLMConfig(data=f"{sharded}/shard0:{tmp_path}/nope", tokens_per_sample=64,
                                                   seed=1, dataset_impl=None))


# -- fairseq-train on shards ----------------------------------------------------------------------------------------

COMMON = ["--tokens-per-sample", "64", "--max-tokens", "256", "--optimizer", "adam", "--lr", "1e-3", "--cpu",
          "--num-workers", "0", "--log-interval", "1", "--no-epoch-checkpoints", "--seed", "3"]
TINY_ENCODER = ["--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
                "--encoder-attention-heads", "2"]
TASKS = {
    "hf_denoising": ["--task", "hf_denoising", "--arch", "bart_small", *TINY_ENCODER, "--decoder-layers", "1",
                     "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64", "--decoder-attention-heads", "2",
                     "--criterion", "cross_entropy_with_accuracy", "--mask-length", "subword"],
    "hf_masked_lm": ["--task", "hf_masked_lm", "--arch", "roberta_small", *TINY_ENCODER,
                     "--criterion", "masked_lm_with_accuracy"],
    "code_mlm": ["--task", "code_mlm", "--data-format", "mmap", "--arch", "roberta_small", *TINY_ENCODER,
                 "--criterion", "masked_lm_with_accuracy"],
}


def train(data: str, task: str, save: Path, *flags: str, check: bool = True) -> TrainLog:
    return fairseq_train(data, "--user-dir", "fairseq_ext", *TASKS[task], *COMMON, "--save-dir", save, *flags,
                         console_script=False, check=check)


def shards_read(log: str) -> list[tuple[int, int]]:
    """(epoch, shard) of every data directory the task logged that it trains on (its own message)."""
    return [(int(e), int(k)) for e, k in re.findall(r"epoch (\d+): training on shard (\d+) of", log)]


def epoch_end_updates(log: TrainLog) -> dict[int, int]:
    """{epoch: num_updates at its end}, from the end-of-epoch ``train`` records."""
    return {int(r["epoch"]): int(r["num_updates"]) for r in log.of("train")}


def data_path(sharded: Path) -> str:
    return ":".join(str(sharded / f"shard{i}") for i in range(N))


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_training_wraps_around_the_shards(sharded, tmp_path, task):
    log = train(data_path(sharded), task, tmp_path / "ckpt", "--max-epoch", str(N + 1))
    # after the last epoch fairseq loads the next one's data before it stops: shard of epoch N + 2 too
    assert shards_read(log.text) == [(e, (e - 1) % N) for e in range(1, N + 3)]
    assert sorted(epoch_end_updates(log)) == list(range(1, N + 2))
    valid = re.findall(r"valid: \d+ samples .* (\S+/valid)(?:\.bin)?$", log.text, re.M)  # the split's path ends it
    assert valid and set(valid) == {f"{sharded}/shard0/valid"}, valid
    assert len(log.valid) == N + 1
    # the last checkpoint points at the start of the next epoch, on the next shard round the list
    iterator = last_state(tmp_path / "ckpt")["extra_state"]["train_iterator"]
    assert (iterator["epoch"], iterator["iterations_in_epoch"]) == (N + 2, 0)


def last_state(save: Path) -> dict:
    with open(save / "checkpoint_last.pt", "rb") as f:
        return safe_torch_load(f, map_location="cpu")


@pytest.mark.slow
def test_resume_in_the_middle_of_a_shard_ends_where_an_uninterrupted_run_does(sharded, tmp_path):
    data = data_path(sharded)
    flags = ["--disable-validation"]
    whole = train(data, "hf_masked_lm", tmp_path / "whole", *flags, "--max-epoch", "4")
    ends = epoch_end_updates(whole)
    total = ends[4]
    stop = ends[1] + (ends[2] - ends[1]) // 2  # in the middle of epoch 2, which reads shard1
    assert ends[1] < stop < ends[2]

    first = train(data, "hf_masked_lm", tmp_path / "split", *flags, "--max-update", str(stop))
    assert shards_read(first.text)[-1] == (2, 1)
    state = last_state(tmp_path / "split")
    assert state["optimizer_history"][-1]["num_updates"] == stop
    assert state["extra_state"]["train_iterator"]["epoch"] == 2
    assert state["extra_state"]["train_iterator"]["iterations_in_epoch"] == stop - ends[1]

    second = train(data, "hf_masked_lm", tmp_path / "split", *flags, "--max-update", str(total))
    assert f"(epoch 2 @ {stop} updates)" in second.text
    assert shards_read(second.text)[:3] == [(2, 1), (3, 2), (4, 0)]  # the same shard first, then on around the list
    assert epoch_end_updates(second) == {e: u for e, u in ends.items() if e >= 2}

    resumed, uninterrupted = last_state(tmp_path / "split"), last_state(tmp_path / "whole")
    assert resumed["optimizer_history"][-1]["num_updates"] == total
    assert resumed["model"].keys() == uninterrupted["model"].keys()
    for name, tensor in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name


@pytest.mark.slow
def test_fairseq_train_names_both_shards_of_a_tokenizer_mismatch_in_one_line(sharded, unigram_dir, text, tmp_path):
    other = tmp_path / "other"
    binarize(unigram_dir, text, other)
    log = train(f"{sharded}/shard0:{other}", "hf_masked_lm", tmp_path / "ckpt", "--max-epoch", "2", check=False)
    assert log.returncode != 0 and "Traceback" not in log.text, log.text[-3000:]
    last = log.text.strip().splitlines()[-1]
    assert last.startswith(f"fairseq-train: error: {other} was binarized with a different tokenizer than "
                           f"{sharded}/shard0: "), last
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())  # stopped before training


@pytest.mark.slow
def test_pretrain_bart_script_with_shards(tmp_path):
    """scripts/pretrain_bart.sh with SHARDS=2 (CPU, tiny sizes): binarizes into shards and trains round them."""
    (tmp_path / "books").mkdir()
    for i in range(6):
        (tmp_path / "books" / f"book{i}.txt").write_text("\n".join(make_text(60, seed=40 + i)) + "\n")
    tiny = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
            "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
            "--decoder-attention-heads", "2", "--cpu", "--num-workers", "0", "--log-interval", "1",
            "--max-source-positions", "64", "--max-target-positions", "64", *JSON_LOG]
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
               RAW=str(tmp_path / "books"), WORK=str(tmp_path / "run"), VOCAB="300", TOKENS_PER_SAMPLE="64",
               MAX_TOKENS="1024", UPDATE_FREQ="1", MAX_UPDATE="24", WARMUP="1", PRECISION="", SHARDS="2",
               EXTRA_TRAIN_ARGS=" ".join(tiny))
    proc = subprocess.run(["bash", "scripts/pretrain_bart.sh"], capture_output=True, text=True, cwd=REPO, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    data_bin = tmp_path / "run" / "data-bin"
    assert f"data path for fairseq-train: {data_bin}/shard0:{data_bin}/shard1" in log
    read = shards_read(log)
    assert len(read) >= 3 and read == [(e, (e - 1) % 2) for e in range(1, len(read) + 1)]  # round the list
    assert TrainLog.parse(log).updates[-1] == 24 and (tmp_path / "run" / "hf-model" / "config.json").is_file()
