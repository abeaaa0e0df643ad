"""The README's main job, `fairseq-ext demo`, end to end (shrunk: few updates, less text)."""

from __future__ import annotations

import json
import re

import pytest
from transformers import AutoTokenizer

from conftest import run_cli
from fairseq_ext.criterions.ranking import chance_metrics
from fairseq_ext.serialization import safe_torch_load
from fairseq_ext.vocab.dictionary import TokenizerDictionary

pytestmark = pytest.mark.slow


def assert_no_temporary_paths(out):
    """The run happens in a temporary directory renamed at the end: no text output may name it."""
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".sh"):
            assert f".{out.name}.tmp-" not in path.read_text(encoding="utf-8"), path


def test_demo_runs_the_whole_recipe(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("demo", "-o", str(out), "--corpus-mb", "0.4", "--vocab-size", "2000", "--max-update", "6")
    for n in range(1, 8):
        assert f"[{n}/7]" in proc.stdout
    assert "validation loss" in proc.stdout and "accuracy" in proc.stdout and "demo finished" in proc.stdout
    parity = float(proc.stdout.split("fairseq vs transformers ")[1].split()[0])
    assert parity <= 1e-4
    examples = [line for line in proc.stdout.splitlines() if line.strip().startswith("in:")]
    assert len(examples) == 3 and all("<mask>" in line for line in examples)
    summary = json.loads((out / "demo.json").read_text())
    assert summary["infill_sentences"] == 40 and 0 <= summary["infill_context_kept"] <= 1
    assert f"{summary['infill_context_kept']:.0%} of the unmasked words" in proc.stdout
    assert [e["input"] for e in summary["infill_examples"]] == [line.split("in:", 1)[1].strip() for line in examples]
    # the curves: every logged update of train and valid, drawn into a real PNG
    assert [p[0] for p in summary["valid_curve"]] == [6] and summary["valid_curve"][0][1] == pytest.approx(
        float(proc.stdout.split("validation loss ")[1].split()[0]), abs=1e-3)
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(str(out / "curves.png")).shape[:2] == (400, 1000)
    tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"), local_files_only=True)
    d = TokenizerDictionary.load(out / "data-bin" / "dict.txt")
    assert len(tok) == d.tokenizer_size == 2000
    with open(out / "checkpoints" / "checkpoint_last.pt", "rb") as f:
        state = safe_torch_load(f, map_location="cpu")
    assert state["optimizer_history"][-1]["num_updates"] == 6
    # the embedding rows are the tokenizer's ids, padded to a multiple of 8 after the last one
    assert state["model"]["encoder.embed_tokens.weight"].shape[0] == -(-len(tok) // 8) * 8
    assert "--max-update 6" in (out / "train.sh").read_text()
    from transformers import BartForConditionalGeneration

    model = BartForConditionalGeneration.from_pretrained(str(out / "hf-model"), local_files_only=True)
    assert model.config.vocab_size == len(tok)
    assert "validation loss" in (out / "hf-model" / "README.md").read_text()
    assert_no_temporary_paths(out)


def test_demo_refuses_to_clobber_a_directory(tmp_path):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "mine.txt").write_text("keep me")
    proc = run_cli("demo", "-o", str(tmp_path / "demo"), check=False)
    assert proc.returncode == 1 and "not empty" in proc.stderr
    assert (tmp_path / "demo" / "mine.txt").read_text() == "keep me"


def test_code_demo_runs_the_whole_code_recipe(tmp_path):
    """`fairseq-ext demo --recipe code`, shrunk: every step, the export matching fairseq, the counts kept."""
    from datasets import load_from_disk
    from transformers import T5EncoderModel

    out = tmp_path / "demo-code"
    query = "run the event loop until the future is done"
    proc = run_cli("demo", "--recipe", "code", "-o", str(out), "--corpus-mb", "0.7", "--vocab-size", "1000",
                   "--max-update", "8", "--contrastive-updates", "3", "--query", query)
    for n in range(1, 10):
        assert f"[{n}/9]" in proc.stdout
    assert "demo finished" in proc.stdout
    summary = json.loads((out / "demo.json").read_text())
    assert summary["recipe"] == "code" and summary["parity_max_abs_diff"] <= 1e-4
    fill = summary["identifier_fill"]
    assert fill["hf_max_abs_diff"] <= 1e-4 and fill["identifiers"] > 0 and 0 <= fill["identifier_accuracy"] <= 1
    assert f"{fill['identifier_accuracy']:.0%} restored exactly" in proc.stdout
    examples = [line for line in proc.stdout.splitlines() if line.strip().startswith("in:")]
    assert examples and all("<mask>" in line for line in examples)
    assert [e["input"] for e in summary["identifier_examples"]] == [ln.split("in:", 1)[1].strip() for ln in examples]
    data = load_from_disk(str(out / "code-data"))
    counts = json.loads((out / "code-data" / "code_dataset.json").read_text())
    assert {k: data[k].num_rows for k in data} == {k: v["files"] for k, v in counts["splits"].items()}
    assert not set(data["train"]["project"]) & set(data["valid"]["project"])  # split by package
    with open(out / "checkpoints" / "checkpoint_last.pt", "rb") as f:
        state = safe_torch_load(f, map_location="cpu")
    assert state["optimizer_history"][-1]["num_updates"] == 8
    assert "--recipe" not in (out / "train.sh").read_text() and "code_mlm" in (out / "train.sh").read_text()
    model = T5EncoderModel.from_pretrained(str(out / "hf-model"), local_files_only=True)
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(str(out / "hf-model")))
    assert_no_temporary_paths(out)
    assert str(out / "code-data") in (out / "hf-model" / "README.md").read_text()
    # the contrastive stage and the search
    found = summary["search"]
    pairs = json.loads((out / "code-pairs" / "code_pairs.json").read_text())
    assert found["held_out_pairs"] == pairs["splits"]["valid"]["pairs"] > 0
    assert found["chance_mrr"] == pytest.approx(chance_metrics(found["held_out_pairs"])["mrr"])
    assert f"MRR {found['mrr']:.3f} (chance {found['chance_mrr']:.3f})" in proc.stdout
    with open(out / "contrastive" / "checkpoint_best.pt", "rb") as f:
        state = safe_torch_load(f, map_location="cpu")
    assert state["optimizer_history"][-1]["num_updates"] == 3
    assert state["task_state"]["retrieval"]["mrr"] == pytest.approx(found["mrr"], abs=1e-4)  # training's validation
    assert found["searched"] == sum(s["pairs"] for s in pairs["splits"].values())
    hits = proc.stdout.split(f"query: {query}\n", 1)[1].splitlines()[:5]
    assert list(found["hits"]) == [query] and len(found["hits"][query]) == 5
    scores = [h["score"] for h in found["hits"][query]]
    assert scores == sorted(scores, reverse=True)
    for line, hit in zip(hits, found["hits"][query]):
        assert line.split() == [f"{hit['score']:.3f}", hit["name"], f"({hit['where']})"]
        path, lineno = hit["where"].rsplit(":", 1)  # the named definition is at that line of the corpus
        source = (out / path).read_text(encoding="utf-8").splitlines()[int(lineno) - 1]
        assert re.match(rf"\s*(async def|def|class) {hit['name'].split('.')[-1]}\b", source), source
