"""``fairseq-ext eval-retrieval``: BM25 ranking and ties, and the verb end to end on a checkpoint trained
by ``--task code_contrastive`` over standard-library pairs (and the same model as a sentence-transformers
directory)."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli
from fairseq_ext.cli.main import main
from fairseq_ext.criterions.ranking import chance_metrics, metrics_from_counts
from fairseq_ext.retrieval.bm25 import BM25Pool, code_words
from support.pairs import _Task, small_pairs, untrained_checkpoint

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SOURCES = ("json", "textwrap.py", "heapq.py", "colorsys.py", "shlex.py", "fnmatch.py", "string.py", "bisect.py",
           "csv.py", "difflib.py")

# -- BM25 ---------------------------------------------------------------------------------------------------------

def test_code_words_split_identifiers_and_drop_punctuation():
    assert code_words("self._parseHTTPHeader(raw_bytes) -> None  # Parse it!") == [
        "self", "parse", "http", "header", "raw", "bytes", "none", "parse"]
    assert code_words("The and of") == []  # English stopwords only


KEYS = ["def read_config(path):\n    with open(path) as f:\n        return json.load(f)",
        "def checksum_crc32(data):\n    return zlib.crc32(data) & 0xFFFFFFFF",
        "def levenshtein(a, b):\n    prev = list(range(len(b) + 1))\n    return prev[-1]",
        "def read_lines(path):\n    with open(path) as f:\n        return f.read().splitlines()"]


def test_bm25_ranks_the_key_sharing_a_rare_word_first():
    queries = ["Compute the CRC32 checksum of data.", "Levenshtein distance between two strings.",
               "Read the config file at path as JSON.", "Read the lines of a file."]
    pool = BM25Pool(KEYS)
    for q, right in zip(queries, (1, 2, 0, 3)):
        scores = pool.scores(q)
        assert int(scores.argmax()) == right and (scores < scores[right]).sum() == len(KEYS) - 1, (q, scores)
    order = [1, 2, 0, 3]  # query i's key is KEYS[order[i]]
    greater, ties = BM25Pool([KEYS[i] for i in order]).rank_counts(queries, block=3)  # blocks across the pool
    assert greater.tolist() == [0, 0, 0, 0] and ties.tolist() == [0, 0, 0, 0]
    assert metrics_from_counts(greater, ties)["mrr"] == pytest.approx(1.0)


def test_bm25_ties_are_not_lucky():
    """A query sharing no word with any key ties with every key: it gets a random order's expected rank."""
    queries = ["Quaternion slerp.", "Quaternion slerp.", "Quaternion slerp.", "Quaternion slerp."]
    greater, ties = BM25Pool(KEYS).rank_counts(queries)
    assert greater.tolist() == [0] * 4 and ties.tolist() == [3] * 4
    assert metrics_from_counts(greater, ties) == pytest.approx(chance_metrics(4))
    # two identical keys share the first two places: each query is right half of the time at rank 1
    same = BM25Pool(["def f(checksum):\n    pass", "def f(checksum):\n    pass", KEYS[2]])
    g, t = same.rank_counts(["checksum", "checksum", "levenshtein"])
    assert metrics_from_counts(g, t)["recall@1"] == pytest.approx((0.5 + 0.5 + 1) / 3)


# -- end to end ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(contrastive_checkpoint) -> SimpleNamespace:
    """conftest's code_contrastive checkpoint (a projection, a learned temperature, validated) and its pairs."""
    return contrastive_checkpoint


def evaluate(capsys, *argv: str) -> tuple[dict, str]:
    out = Path(argv[argv.index("--json") + 1])
    assert main(["eval-retrieval", *argv, "--quiet"]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


@pytest.mark.slow
def test_eval_retrieval_matches_validation_and_bm25_loses_to_renaming(trained, tmp_path, capsys):
    import datasets

    from fairseq_ext.convert.checkpoint_io import load_checkpoint

    ckpt, pairs = trained.checkpoint, trained.pairs
    state = load_checkpoint(ckpt)
    proc = run_cli("eval-retrieval", str(ckpt), "--pairs", str(pairs), "--rename", "--json", str(tmp_path / "e.json"),
                   "--quiet")  # the installed program: nothing but the tables, nothing logged beside them
    assert proc.stderr == ""
    r, out = json.loads((tmp_path / "e.json").read_text()), proc.stdout
    valid = datasets.load_from_disk(str(pairs))["valid"]
    n, kinds = len(valid), valid["kind"]
    assert r["counts"] == {"in_split": n, "evaluated": n, "skipped": {"kind_not_selected": 0},
                           "per_kind": {k: kinds.count(k) for k in ("docstring", "span") if k in kinds}}
    task, model = state["cfg"]["task"], state["cfg"]["model"]
    assert (r["separate_towers"], r["similarity"], r["max_query_tokens"], r["max_key_tokens"]) == (
        bool(model.get("separate_towers")), state["cfg"]["criterion"]["similarity"], task["max_query_tokens"],
        task["max_key_tokens"])
    scores = r["pool"]["scores"]
    # the same pool, tokens, towers and similarity as the validation that wrote the checkpoint
    recorded = state["task_state"]["retrieval"]
    assert recorded["pairs"] == r["pool"]["pairs"] == n and r["recorded_by_validation"] == recorded
    for key in ("mrr", "recall@1", "recall@10"):
        assert scores["model"][key] == pytest.approx(recorded[key], abs=1e-6)
    assert scores["random (expected)"] == pytest.approx(chance_metrics(n))
    assert scores["BM25"]["mrr"] > 3 * scores["random (expected)"]["mrr"]  # docstrings share words with code
    rn = r["renamed"]
    assert rn["pairs"] + sum(rn["skipped"].values()) == rn["docstring_pairs"] == kinds.count("docstring")
    assert rn["span_pairs_left_out"] == kinds.count("span") and rn["pairs"] > 20
    assert ("def func(" in rn["example"] or "class Class(" in rn["example"]) and "arg_0" in rn["example"]
    assert rn["scores"]["BM25"]["mrr"] < rn["scores"]["BM25, original names"]["mrr"]  # renaming hides the words
    assert rn["scores"]["random (expected)"] == pytest.approx(chance_metrics(rn["pairs"]))
    assert f"pool of {n:,} pairs (each query ranked against all {n:,} keys):" in out
    assert f"renamed pool of {rn['pairs']:,} docstring pairs" in out
    assert f"(the checkpoint's last validation: MRR {recorded['mrr']:.4f}" in out
    model_row = next(ln for ln in out.splitlines() if ln.strip().startswith("model "))
    assert model_row.split()[1:] == [f"{scores['model'][k]:.4f}" for k in ("mrr", "recall@1", "recall@10")]

    # a narrower pool, other limits
    r2, out2 = evaluate(capsys, str(ckpt), "--pairs", str(pairs), "--kinds", "docstring", "--limit", "10",
                        "--max-key-tokens", "32", "--json", str(tmp_path / "e2.json"))
    assert r2["counts"]["evaluated"] == 10 and r2["counts"]["per_kind"] == {"docstring": 10}
    assert r2["counts"]["skipped"] == {"kind_not_selected": kinds.count("span"),
                                       "beyond_limit": kinds.count("docstring") - 10}
    assert r2["max_key_tokens"] == 32 and r2["cut"]["keys"] > 0 and "renamed" not in r2
    assert r2["max_query_tokens"] == task["max_query_tokens"]
    assert "note: --limit 10: only the first 10 pairs, not the whole split" in out2


@pytest.mark.slow
def test_sentence_transformers_export_scores_as_its_checkpoint(trained, tmp_path, capsys, monkeypatch):
    """The checkpoint exported with `export-hf --format sentence-transformers` (Transformer, Pooling, Dense,
    Normalize) scores what the checkpoint scores, with the token limits the export recorded."""
    from fairseq_ext.convert.checkpoint_io import load_checkpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ckpt, pairs = trained.checkpoint, trained.pairs
    assert main(["export-hf", str(ckpt), "-o", str(tmp_path / "st"), "--format", "sentence-transformers"]) == 0
    capsys.readouterr()
    task = load_checkpoint(ckpt)["cfg"]["task"]
    fs, _ = evaluate(capsys, str(ckpt), "--pairs", str(pairs), "--json", str(tmp_path / "a.json"))
    st, out = evaluate(capsys, str(tmp_path / "st"), "--pairs", str(pairs), "--json", str(tmp_path / "b.json"))
    assert st["model_kind"] == "sentence-transformers" and not st["separate_towers"]
    assert (st["max_query_tokens"], st["max_key_tokens"]) == (task["max_query_tokens"], task["max_key_tokens"])
    assert st["pool"]["scores"]["model"] == pytest.approx(fs["pool"]["scores"]["model"], abs=1e-4)
    assert st["pool"]["scores"]["BM25"] == fs["pool"]["scores"]["BM25"]


def test_each_side_is_embedded_by_its_own_tower(tmp_path, bpe_dir, capsys):
    """Batched, padded, each side by its tower: the figures of embedding one pair at a time without padding."""
    import datasets

    from fairseq_ext.convert.checkpoint_io import load_checkpoint
    from fairseq_ext.criterions.ranking import retrieval_metrics
    from fairseq_ext.data.pair_dataset import side_tokens
    from fairseq_ext.models.t5.model import T5EncoderFairseqModel
    from fairseq_ext.vocab.dictionary import TokenizerDictionary
    from fairseq_ext.vocab.tokenizer import load_tokenizer

    pairs = small_pairs(tmp_path / "pairs", bpe_dir)
    ckpt = untrained_checkpoint(tmp_path / "cc.pt", pairs / "tokenizer.json", pairs, separate_towers=True)
    r, out = evaluate(capsys, str(ckpt), "--pairs", str(pairs), "--batch-size", "5", "--json", str(tmp_path / "r.json"))
    assert r["separate_towers"] and "query and key towers" in out

    state = load_checkpoint(ckpt)
    d = TokenizerDictionary.from_tokenizer(load_tokenizer(pairs / "tokenizer.json"))
    model = T5EncoderFairseqModel.build_model(state["cfg"]["model"], _Task(d)).eval()
    model.load_state_dict(state["model"])
    mask = json.loads((pairs / "code_pairs.json").read_text())["mask_id"]
    valid = datasets.load_from_disk(str(pairs))["valid"]

    def embed(column: str, limit: int, tower: str, mask=None) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([torch.nn.functional.normalize(model.embed(
                side_tokens(ids, limit, d.bos_index, d.eos(), mask)[None], tower), dim=-1) for ids in valid[column]])

    q = embed("query_ids", 64, "query", mask)
    expected = retrieval_metrics(q, embed("key_ids", 96, "key"))
    assert r["pool"]["scores"]["model"] == pytest.approx(expected, abs=1e-6)
    assert retrieval_metrics(q, embed("key_ids", 96, "query")) != pytest.approx(expected, abs=1e-6)  # towers differ


# -- small inputs for tests/cli/test_cli_errors.py (no training) ---------------------------------------------------


