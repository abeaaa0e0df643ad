"""export-hf of contrastive t5_encoder checkpoints: --tower query|key, --format sentence-transformers, the card.

The checkpoints are a tiny imported T5 encoder turned into what ``code_contrastive`` + ``info_nce`` save
(their settings, a pooler projection, a perturbed key tower, a learned temperature, the validation's
retrieval figures), over a pairs directory made by ``code-pairs`` from standard-library sources.
"""

from __future__ import annotations

import json
import math
import shutil
import sysconfig
from pathlib import Path

import pytest
import torch

from conftest import error_lines, model_card_rows
from fairseq_ext.cli.main import main
from fairseq_ext.convert import sentence_transformers as st
from fairseq_ext.convert.checkpoint_io import build_fairseq_model, dictionary_for_rows
from fairseq_ext.convert.registry import checkpoint_model_settings
from fairseq_ext.data.pair_dataset import side_tokens
from fairseq_ext.io_utils import leftovers
from fairseq_ext.serialization import safe_torch_load
from fairseq_ext.vocab.tokenizer import load_tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])
RETRIEVAL = {"mrr": 0.4375, "recall@1": 0.3125, "recall@10": 0.875, "pairs": 16, "num_updates": 30}
LOGIT_SCALE = math.log(1 / 0.07)


@pytest.fixture(scope="module")
def base(tmp_path_factory, spm_model) -> Path:
    """An imported tiny T5 encoder (checkpoint.pt) and a pairs directory (pairs/) with its tokenizer."""
    from transformers import T5EncoderModel

    from fairseq_ext.convert.import_hf import import_hf
    from support.hf_models import t5_dir

    root = tmp_path_factory.mktemp("contrastive")
    import_hf(t5_dir(root / "hf", spm_model, "relu", T5EncoderModel), root / "fs")
    for package in ("json", "html"):
        (root / "Lib" / package).mkdir(parents=True)
        for f in sorted((STDLIB / package).glob("*.py"))[:3]:
            shutil.copyfile(f, root / "Lib" / package / f.name)
    assert main(["code-pairs", str(root / "Lib"), "-o", str(root / "pairs"), "--tokenizer", str(root / "fs"),
                 "--quiet", "--split-by", "file", "--valid-ratio", "0.4", "--seed", "1"]) == 0
    return root


def make_checkpoint(base: Path, out: Path, *, separate=False, pooling="mean", pooler_dim=0, normalize=False,
                    similarity="cosine", learn=False, retrieval=True) -> Path:
    """What code_contrastive + info_nce save, from the imported checkpoint; the key tower is perturbed."""
    state = safe_torch_load(base / "fs" / "checkpoint.pt", map_location="cpu")
    state["cfg"]["model"].update(pooling=pooling, pooler_dim=pooler_dim, pooler_normalize=normalize,
                                 separate_towers=separate)
    state["cfg"]["task"].update(_name="code_contrastive", data=str(base / "pairs"), max_query_tokens=24,
                                max_key_tokens=40)
    state["cfg"]["criterion"] = {"_name": "info_nce", "temperature": 0.05, "learn_temperature": learn,
                                 "similarity": similarity, "symmetric": True}
    state["criterion"] = {"logit_scale": torch.tensor(LOGIT_SCALE)} if learn else None
    state["optimizer_history"][-1]["num_updates"] = 30
    if retrieval:
        state["task_state"]["retrieval"] = dict(RETRIEVAL)
    g = torch.Generator().manual_seed(7)
    weights = state["model"]
    d = weights["encoder.embed_tokens.weight"].shape[1]
    if pooler_dim:
        weights["pooler.dense.weight"] = torch.randn(pooler_dim, d, generator=g) * d ** -0.5
    if separate:  # a key tower that really differs from the query tower
        for k in [k for k in weights if k.startswith(("encoder.", "pooler."))]:
            weights["key_" + k] = weights[k] + 0.1 * torch.randn(weights[k].shape, generator=g)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    return out


def fairseq_model(ckpt: Path):
    state = safe_torch_load(ckpt, map_location="cpu")
    args = checkpoint_model_settings(state, ckpt)
    tok = load_tokenizer(state["cfg"]["task"]["data"])
    dictionary = dictionary_for_rows(tok, state["model"]["encoder.embed_tokens.weight"].shape[0], "tok", ckpt)
    return build_fairseq_model(args.args, dictionary, state["model"]), dictionary, tok


def texts_of(base: Path, side: str) -> list[str]:
    import datasets

    return datasets.load_from_disk(str(base / "pairs"))["valid"][side][:6]


@torch.no_grad()
def fairseq_embeddings(ckpt: Path, texts: list[str], tower: str, limit: int, normalize: bool) -> torch.Tensor:
    """fairseq's embedding of each text on its own (no padding): [bos] ids [eos] as PairDataset builds it."""
    model, d, tok = fairseq_model(ckpt)
    rows = []
    for t in texts:
        ids = side_tokens(tok(t, add_special_tokens=False)["input_ids"], limit, d.bos_index, d.eos())
        rows.append(model.embed(ids[None], tower=tower)[0])
    emb = torch.stack(rows)
    return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb


def export(ckpt: Path, out: Path, *extra: str) -> None:
    assert main(["export-hf", str(ckpt), "-o", str(out), *extra]) == 0


def test_towers_export_their_own_encoder(base, tmp_path):
    """--tower key of separate towers is the key encoder; of one tower, the same weights as the query tower."""
    from safetensors.torch import load_file
    from transformers import T5EncoderModel

    for separate in (False, True):
        ckpt = make_checkpoint(base, tmp_path / f"sep{separate}.pt", separate=separate)
        model, d, tok = fairseq_model(ckpt)
        ids = tok(texts_of(base, "key")[:3], padding=True, return_tensors="pt")
        for tower in ("query", "key"):
            out = tmp_path / f"sep{separate}-{tower}"
            export(ckpt, out, "--tower", tower)
            hf = T5EncoderModel.from_pretrained(str(out)).eval()
            with torch.no_grad():
                got = hf(**ids).last_hidden_state
                want = model.tower(tower)[0](ids["input_ids"])[0]
            keep = ids["attention_mask"].bool()
            assert float((got - want).abs()[keep].max()) <= 1e-4, (separate, tower)
            card = (out / "README.md").read_text()
            assert f"## Embedding ({tower} tower)" in card
        query, key = (load_file(str(tmp_path / f"sep{separate}-{t}" / "model.safetensors")) for t in ("query", "key"))
        same = all(torch.equal(query[k], key[k]) for k in query)
        assert same is not separate
        assert ("separate query and key towers" in card) is separate


CASES = [  # (separate, tower, pooling, pooler_dim, pooler_normalize, similarity)
    (False, "query", "mean", 0, False, "cosine"),
    (False, "query", "first", 0, False, "dot"),
    (False, "key", "mean", 16, False, "dot"),
    (False, "query", "first", 16, True, "dot"),
    (True, "key", "mean", 16, False, "cosine"),
    (True, "query", "first", 0, False, "cosine"),
]


@pytest.mark.parametrize("separate, tower, pooling, pooler_dim, normalize, similarity", CASES)
def test_sentence_transformers_encode_equals_fairseq(base, tmp_path, separate, tower, pooling, pooler_dim,
                                                     normalize, similarity):
    from sentence_transformers import SentenceTransformer

    ckpt = make_checkpoint(base, tmp_path / "c.pt", separate=separate, pooling=pooling, pooler_dim=pooler_dim,
                           normalize=normalize, similarity=similarity)
    out = tmp_path / "st"
    export(ckpt, out, "--format", "sentence-transformers", "--tower", tower)
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    normalised = normalize  # the model's own embedding; a cosine criterion is the similarity_fn_name
    assert modules == ["Transformer", "Pooling"] + ["Dense"] * bool(pooler_dim) + ["Normalize"] * normalised
    model = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    limit = 40 if separate and tower == "key" else 24 if separate else 40
    assert model.max_seq_length == limit
    texts = texts_of(base, tower) + ["x = 1"]
    got = torch.as_tensor(model.encode(texts))  # a batch of different lengths, padded by sentence-transformers
    want = fairseq_embeddings(ckpt, texts, tower, limit, normalised)
    assert got.shape == want.shape == (len(texts), pooler_dim or 32)
    assert float((got - want).abs().max()) <= 1e-4
    assert model.similarity_fn_name == ("dot" if similarity == "dot" and not normalize else "cosine")


def test_card_states_the_embedding_and_the_checkpoints_figures(base, tmp_path, capsys):
    ckpt = make_checkpoint(base, tmp_path / "c.pt", separate=True, pooler_dim=16, learn=True, similarity="cosine")
    export(ckpt, tmp_path / "st", "--format", "sentence-transformers", "--tower", "key")
    printed = capsys.readouterr().out
    assert "parity: max |embedding difference| fairseq vs sentence-transformers" in printed
    rows = model_card_rows((tmp_path / "st" / "README.md").read_text())
    assert rows["tower"] == "key (the checkpoint has separate query and key towers)"
    assert rows["pooling"].startswith("mean over non-pad tokens")
    assert rows["projection"] == "linear 32 -> 16, no bias, no activation"
    assert rows["normalisation"] == "none (scored by cosine similarity: `model.similarity` normalises both sides)"
    assert rows["similarity"] == "cosine"
    assert rows["temperature"] == f"{math.exp(-LOGIT_SCALE):.4g} (learned: exp(-logit_scale))"  # 0.07, not 0.05
    assert rows["validation retrieval"] == ("MRR 0.4375, R@1 0.3125, R@10 0.8750 over 16 held-out pairs (every "
                                            "query against every key), at update 30")
    assert rows["max_seq_length"].startswith("40 tokens (the task's max_key_tokens")
    card = (tmp_path / "st" / "README.md").read_text()
    assert "library_name: sentence-transformers" in card and "model.similarity(queries, code)" in card
    ckpt = make_checkpoint(base, tmp_path / "d.pt", retrieval=False, similarity="dot")
    export(ckpt, tmp_path / "hf")  # transformers format: the card still states the embedding
    rows = model_card_rows((tmp_path / "hf" / "README.md").read_text())
    assert rows["validation retrieval"].startswith("not recorded")
    assert rows["temperature"] == "0.05 (fixed)" and rows["normalisation"] == "none"
    assert rows["tower"].startswith("query: the checkpoint has one tower")


def test_card_transformers_snippet_computes_the_embedding(base, tmp_path):
    """The card's plain-transformers code, run as written, gives fairseq's embeddings (projection included)."""
    ckpt = make_checkpoint(base, tmp_path / "c.pt", pooling="first", pooler_dim=16, similarity="cosine")
    out = tmp_path / "hf"
    export(ckpt, out)
    card = (out / "README.md").read_text()
    code = card.split("With transformers only")[1].split("```python\n")[1].split("```")[0]
    texts = texts_of(base, "query")
    scope = {"texts": texts}
    exec(code, scope)
    want = fairseq_embeddings(ckpt, texts, "query", 40, False)  # the pooler does not normalise: scored by cosine
    assert float((scope["emb"] - want).abs().max()) <= 1e-4
    assert "scored by cosine similarity: normalise emb" in code


def test_failing_parity_writes_nothing(base, tmp_path, monkeypatch, capsys):
    """A sentence-transformers pooling that does not match fairseq's: one line, no directory, no temporary."""
    ckpt = make_checkpoint(base, tmp_path / "c.pt")
    monkeypatch.setitem(st.ST_POOLING, "mean", "max")
    out = tmp_path / "out"
    code = main(["export-hf", str(ckpt), "-o", str(out), "--format", "sentence-transformers"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1 and "sentence-transformers and fairseq embeddings differ by" in lines[0], err
    assert lines[0].endswith("nothing written")
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("learned", [0.2, 0.01, 0.001])  # a learned temperature below the cap shows the cap
def test_the_card_shows_the_temperature_the_criterion_trained_with(learned):
    from fairseq_ext.criterions.info_nce import InfoNCECriterion

    criterion = InfoNCECriterion(task=None, temperature=0.05, learn_temperature=True)
    with torch.no_grad():
        criterion.logit_scale.fill_(math.log(1 / learned))
    crit = {"_name": "info_nce", "temperature": 0.05, "learn_temperature": True}
    assert st.trained_temperature(crit, criterion.state_dict()) == pytest.approx(criterion.current_temperature())
    assert st.trained_temperature(crit, criterion.state_dict()) == pytest.approx(max(learned, 0.01))
    fixed = InfoNCECriterion(task=None, temperature=0.07)
    assert st.trained_temperature({"temperature": 0.07}, fixed.state_dict()) == fixed.current_temperature() == 0.07


@pytest.mark.slow
def test_a_trained_checkpoint_exports_its_key_tower(two_tower_run, tmp_path, capsys):
    """A checkpoint written by 2 torchrun ranks of fairseq-train code_contrastive (separate towers, learned
    temperature), exported --tower key --format sentence-transformers: encode() equals the checkpoint as
    fairseq itself loads it; the card's figures are the checkpoint's."""
    import datasets
    from fairseq import checkpoint_utils
    from sentence_transformers import SentenceTransformer

    save, pairs = two_tower_run.save_dir, two_tower_run.pairs
    ckpt = save / "checkpoint_last.pt"
    state = safe_torch_load(ckpt, map_location="cpu")
    out = tmp_path / "st"
    export(ckpt, out, "--tower", "key", "--format", "sentence-transformers")
    assert f"updates, validation mrr {float(state['extra_state']['val_loss']):.4f})" in capsys.readouterr().out

    (model,), _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(ckpt)])
    model.eval()
    d, tok = task.source_dictionary, load_tokenizer(pairs)
    texts = datasets.load_from_disk(str(pairs))["valid"]["key"][:6]
    limit = state["cfg"]["task"]["max_key_tokens"]
    rows = [side_tokens(tok(t, add_special_tokens=False)["input_ids"], limit, d.bos_index, d.eos()) for t in texts]
    with torch.no_grad():
        want = torch.cat([model.embed(r[None], tower="key") for r in rows])  # as the pooler gives it: no Normalize
        assert not torch.allclose(torch.nn.functional.normalize(want, dim=-1), torch.nn.functional.normalize(
            torch.cat([model.embed(r[None], tower="query") for r in rows]), dim=-1), atol=1e-4)  # towers differ
    got = torch.as_tensor(SentenceTransformer(str(out), device="cpu", local_files_only=True).encode(texts))
    assert float((got - want).abs().max()) <= 1e-4

    rows = model_card_rows((out / "README.md").read_text())
    figures = state["task_state"]["retrieval"]
    # fairseq's "val_loss" holds the --best-checkpoint-metric: the card names it (not "validation loss")
    assert "validation loss" not in rows
    assert rows["validation mrr"] == f"{float(state['extra_state']['val_loss']):.4f}"
    assert rows["validation retrieval"].startswith(
        f"MRR {figures['mrr']:.4f}, R@1 {figures['recall@1']:.4f}, R@10 {figures['recall@10']:.4f} over "
        f"{figures['pairs']} held-out pairs")
    temperature = math.exp(-float(state["criterion"]["logit_scale"]))
    assert rows["temperature"] == f"{temperature:.4g} (learned: exp(-logit_scale))"
    assert rows["similarity"] == "cosine" and rows["max_seq_length"].startswith(f"{limit} tokens")
    assert rows["objective"].startswith("code_contrastive (contrastive InfoNCE")
