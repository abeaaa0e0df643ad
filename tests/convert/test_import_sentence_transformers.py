"""import-hf of sentence-transformers directories (and of bare encoders with --pooling) of every encoder family,
export-hf --format sentence-transformers back, and eval-retrieval of both: the same embeddings throughout.

The directories are tiny BERT, RoBERTa (two layouts) and T5 sentence encoders built from configs
(tests/support/st_models.py), with weights away from their initial values, so that a mapping mistake changes
the embedding.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_text, run_cli
from fairseq_ext.cli.main import main
from fairseq_ext.convert.common import TOLERANCE, ConversionError
from fairseq_ext.convert.export import export_hf
from fairseq_ext.convert.import_hf import import_hf
from support.pairs import small_pairs
from support.st_models import (
    bert_encoder_dir,
    bert_st_dir,
    roberta_encoder_dir,
    roberta_st_dir,
    sentence_transformers_dir,
    t5_st_dir,
)

BUILDERS = {"bert": (bert_st_dir, "bert_dir"), "roberta": (roberta_st_dir, "bpe_dir"),
            "roberta-types2": (partial(roberta_st_dir, types=2, eps=1e-12), "bpe_dir"),
            "t5": (t5_st_dir, "spm_model")}
ARCH = {"bert": "hf_bert", "roberta": "hf_bert", "roberta-types2": "hf_bert", "t5": "t5_encoder"}
# texts of the tiny vocabularies' words, and code: different lengths, so padding is exercised
TEXTS = [*make_text(5, seed=7), "def add(a, b):\n    return a + b\n", "the dog"]


def st_dir(request, family: str, out: Path, **kw) -> Path:
    build, tokenizer = BUILDERS[family]
    return build(out, request.getfixturevalue(tokenizer), **kw)


def st_encode(directory: Path, texts=TEXTS) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    return torch.as_tensor(model.encode(texts, batch_size=len(texts), show_progress_bar=False))


def fairseq_embed(ckpt_dir: Path, texts=TEXTS) -> torch.Tensor:
    """The imported checkpoint's query tower on the ids fairseq's pairs feed it, loaded as eval-retrieval loads
    it (from disk: nothing of the import's own check is reused)."""
    from fairseq_ext.data.pair_dataset import side_tokens
    from fairseq_ext.retrieval.models import load_embedding_model
    from fairseq_ext.vocab.tokenizer import load_tokenizer

    model = load_embedding_model(ckpt_dir / "checkpoint.pt", ckpt_dir / "tokenizer.json", "cpu")
    d, tok = model.dictionary, load_tokenizer(ckpt_dir / "tokenizer.json")
    rows = [side_tokens(tok(t, add_special_tokens=False)["input_ids"], model.max_query_tokens, d.bos_index, d.eos())
            for t in texts]
    tokens = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=d.pad())
    with torch.no_grad():
        return model.module.embed(tokens, tower="query").float()


# every family x pooling, without and with Dense + Normalize; each alone with mean pooling
CASES = [(f, p, *head) for f in BUILDERS for p in ("mean", "cls", "max") for head in ((0, False), (8, True))]
CASES += [(f, "mean", *head) for f in BUILDERS for head in ((8, False), (0, True))]


@pytest.mark.parametrize("family, pooling, dense, normalize", CASES)
def test_import_embeds_as_sentence_transformers(request, tmp_path, family, pooling, dense, normalize):
    directory = st_dir(request, family, tmp_path / "st", pooling=pooling, dense=dense, normalize=normalize)
    r = import_hf(directory, tmp_path / "ckpt")
    assert r.fairseq_arch == ARCH[family]
    assert r.embedding.max_abs_diff <= TOLERANCE and r.embedding.tokens_agree
    fs_pooling = {"cls": "first"}.get(pooling, pooling)
    expected = ["--pooling", fs_pooling, *(["--pooler-dim", str(dense)] if dense else []),
                *(["--pooler-normalize"] if normalize else [])]
    args = (tmp_path / "ckpt" / "model_args.txt").read_text().split()
    assert args[:6] == ["--task", "code_contrastive", "--criterion", "info_nce", "--similarity", "cosine"]
    assert args[-len(expected):] == expected
    if ARCH[family] == "hf_bert":
        assert args[args.index("--hf-model-type") + 1] == family.split("-")[0] and "--hf-pooler" in args
    torch.testing.assert_close(fairseq_embed(tmp_path / "ckpt"), st_encode(directory), atol=1e-5, rtol=0)


def test_dot_similarity_is_what_the_criterion_scores_by(bert_dir, tmp_path):
    directory = bert_st_dir(tmp_path / "st", bert_dir, similarity="dot")
    r = import_hf(directory, tmp_path / "ckpt")
    assert r.embedding.similarity == "dot"
    assert "--similarity dot" in (tmp_path / "ckpt" / "model_args.txt").read_text()
    overrides = (tmp_path / "ckpt" / "hydra_overrides.txt").read_text().split()
    assert {"task._name=code_contrastive", "criterion._name=info_nce", "++criterion.similarity=dot",
            "model._name=hf_bert", "++model.pooling=mean"} <= set(overrides)


@pytest.mark.parametrize("family, pooling, normalize", [
    ("bert", "max", True), ("roberta", "cls", True), ("roberta-types2", "mean", True), ("t5", "max", True),
    ("bert", "mean", False), ("roberta", "max", False)])  # without Normalize: scored by cosine all the same
def test_round_trip_is_bit_identical(request, tmp_path, family, pooling, normalize):
    directory = st_dir(request, family, tmp_path / "st", pooling=pooling, dense=8, normalize=normalize)
    import_hf(directory, tmp_path / "ckpt")
    back = tmp_path / "back"
    r = export_hf(tmp_path / "ckpt" / "checkpoint.pt", back, fmt="sentence-transformers")
    assert r.embedding.st_max_abs_diff <= TOLERANCE and r.card_note == ""
    for weights in ("model.safetensors", "2_Dense/model.safetensors"):
        a, b = load_file(directory / weights), load_file(back / weights)
        assert sorted(a) == sorted(b), weights
        assert [k for k in a if not (a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]))] == [], weights
    kinds = [[m["type"].rsplit(".", 1)[-1] for m in json.loads((d / "modules.json").read_text())]
             for d in (directory, back)]
    assert kinds[0] == kinds[1] == ["Transformer", "Pooling", "Dense", *(["Normalize"] if normalize else [])]
    assert json.loads((back / "1_Pooling/config.json").read_text())["pooling_mode"] == pooling
    similarity = [json.loads((d / "config_sentence_transformers.json").read_text()).get("similarity_fn_name")
                  for d in (directory, back)]
    assert similarity[1] == "cosine" and similarity[0] in ("cosine", None)  # None: sentence-transformers' cosine
    assert torch.equal(st_encode(back), st_encode(directory))


def test_a_checkpoint_without_a_pooler_exports_one_of_zeros_and_says_so(bert_dir, tmp_path, caplog):
    """An hf_bert checkpoint that never carried transformers' pooler (a masked-LM import of an encoder without
    one, or a model trained from scratch): BertModel gets a zero pooler, so that loading it reports nothing."""
    r = import_hf(bert_encoder_dir(tmp_path / "bare", bert_dir, pooler=False), tmp_path / "ckpt")
    assert "--hf-pooler" not in r.model_flags and r.embedding is None
    e = export_hf(tmp_path / "ckpt" / "checkpoint.pt", tmp_path / "back", fmt="sentence-transformers")
    assert e.hf_class == "BertModel" and "`pooler.dense.*` are zeros" in e.card_note
    assert "`pooler.dense.*` are zeros" in (tmp_path / "back" / "README.md").read_text()
    weights = load_file(tmp_path / "back" / "model.safetensors")
    assert not weights["pooler.dense.weight"].any() and not weights["pooler.dense.bias"].any()
    caplog.clear()
    st_encode(tmp_path / "back")
    assert "MISSING" not in caplog.text and "LOAD REPORT" not in caplog.text


@pytest.mark.parametrize("pooling, st_mode", [("first", "cls"), ("max", "max")])
def test_a_bare_encoder_imports_with_the_pooling_asked_for(bpe_dir, tmp_path, pooling, st_mode):
    bare = roberta_encoder_dir(tmp_path / "bare", bpe_dir)
    r = import_hf(bare, tmp_path / "ckpt", pooling=pooling)
    assert r.embedding.modules == [f"--pooling {pooling}"] and r.fairseq_arch == "hf_bert"
    assert not (bare / "modules.json").exists()  # the directory is read, never changed
    expected = st_encode(sentence_transformers_dir(roberta_encoder_dir(tmp_path / "st", bpe_dir), st_mode))
    torch.testing.assert_close(fairseq_embed(tmp_path / "ckpt"), expected, atol=1e-5, rtol=0)
    plain = import_hf(bare, tmp_path / "mlm")  # no --pooling: today's masked-LM import, unchanged
    assert plain.embedding is None and "code_contrastive" not in (tmp_path / "mlm" / "model_args.txt").read_text()


def test_the_cli_reports_what_it_imported(bert_dir, tmp_path):
    directory = bert_st_dir(tmp_path / "st", bert_dir, pooling="cls", dense=8, normalize=True)
    proc = run_cli("import-hf", str(directory), "-o", str(tmp_path / "ckpt"))
    assert "embedding: Pooling(first), Dense(32 -> 8), Normalize; cosine similarity; max |embedding difference| " \
           "sentence-transformers vs fairseq = " in proc.stdout
    assert "imported bert as fairseq hf_bert" in proc.stdout
    assert proc.stderr.strip() == ""  # no load report of transformers or sentence-transformers
    assert f'continue with: fairseq-train PAIRS --user-dir "$(fairseq-ext user-dir)" $(cat {tmp_path / "ckpt"}/' \
           "model_args.txt) --restore-file " in proc.stdout
    assert "--reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler ..." in proc.stdout


def test_the_helps_say_what_is_imported_and_measured(capsys):
    assert main(["import-hf", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "into a fairseq checkpoint to continue pretraining, or a sentence-transformers directory (or a bare " \
           "encoder given --pooling) into a contrastive (code search) one." in text
    assert main(["eval-retrieval", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "MODEL is a fairseq checkpoint of --task code_contrastive, of any family (t5_encoder, hf_bert)" in text
    assert "or any sentence-transformers directory" in text
    assert "a --task code_contrastive checkpoint .pt (t5_encoder, hf_bert), or a sentence-transformers directory" \
           in text


def edit_json(file: Path, **change) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **change}), encoding="utf-8")


PROMPTED = {"query": "Represent this question for searching code: ", "document": ""}


@pytest.mark.parametrize("default", [None, "query"])
def test_prompts_are_refused_in_one_line(bert_dir, tmp_path, default):
    """sentence-transformers prepends a prompt that is text (every text's with default_prompt_name); fairseq's
    pairs, training and eval-retrieval never do, so the import would be another model."""
    directory = bert_st_dir(tmp_path / "st", bert_dir)
    edit_json(directory / "config_sentence_transformers.json", prompts=PROMPTED, default_prompt_name=default)
    with pytest.raises(ConversionError) as err:
        import_hf(directory, tmp_path / "ckpt")
    said = " (default_prompt_name 'query')" if default else ""
    assert str(err.value) == (f"{directory}/config_sentence_transformers.json: prompts 'query'{said} are prepended "
                              "to texts by sentence-transformers; fairseq_ext's pairs carry no prompts (training "
                              "and eval-retrieval never apply them), so this model cannot be carried")
    assert not (tmp_path / "ckpt").exists()


def test_empty_prompts_import(bert_dir, tmp_path):
    directory = bert_st_dir(tmp_path / "st", bert_dir, normalize=True)
    edit_json(directory / "config_sentence_transformers.json", prompts={"query": "", "document": ""},
              default_prompt_name="query")
    r = import_hf(directory, tmp_path / "ckpt")
    assert r.embedding.max_abs_diff <= TOLERANCE
    torch.testing.assert_close(fairseq_embed(tmp_path / "ckpt"), st_encode(directory), atol=1e-5, rtol=0)


@pytest.mark.parametrize("setting, value", [("do_lower_case", True), ("tokenizer_args", {"do_lower_case": True}),
                                            ("processing_kwargs", {"text": {"add_special_tokens": False}})])
def test_settings_that_change_the_inputs_are_refused_before_the_weights(bert_dir, tmp_path, setting, value):
    """The Transformer module lower-cases (or otherwise changes) texts before or while tokenising them;
    code-pairs tokenises with the tokenizer alone. Refused before any weight is read: none is there."""
    directory = bert_st_dir(tmp_path / "st", bert_dir)
    edit_json(directory / "sentence_bert_config.json", **{setting: value})
    (directory / "model.safetensors").unlink()
    with pytest.raises(ConversionError) as err:
        import_hf(directory, tmp_path / "ckpt")
    assert str(err.value) == (f"{directory}/sentence_bert_config.json: {setting}={json.dumps(value)} changes the "
                              "texts before or while they are tokenised; fairseq_ext's pairs are the tokenizer's "
                              "ids alone, so this cannot be carried")
    assert not (tmp_path / "ckpt").exists()


def test_settings_left_at_their_defaults_import(bert_dir, tmp_path):
    directory = bert_st_dir(tmp_path / "st", bert_dir)
    edit_json(directory / "sentence_bert_config.json", do_lower_case=False, tokenizer_args={})
    assert import_hf(directory, tmp_path / "ckpt").embedding.max_abs_diff <= TOLERANCE


@pytest.mark.parametrize("family", list(BUILDERS))
def test_eval_retrieval_of_the_import_equals_the_directory(request, tmp_path, family, capsys):
    directory = st_dir(request, family, tmp_path / "st", pooling="mean", dense=8, normalize=True)
    import_hf(directory, tmp_path / "ckpt")
    pairs = small_pairs(tmp_path / "pairs", directory)
    reports = {}
    for name, model in (("st", directory), ("ckpt", tmp_path / "ckpt" / "checkpoint.pt")):
        assert main(["eval-retrieval", str(model), "--pairs", str(pairs), "--json", str(tmp_path / f"{name}.json"),
                     "-q"]) == 0
        reports[name] = json.loads((tmp_path / f"{name}.json").read_text())
    st, ckpt = reports["st"], reports["ckpt"]
    assert (st["max_query_tokens"], st["max_key_tokens"]) == (ckpt["max_query_tokens"], ckpt["max_key_tokens"]) \
        == (64, 64)
    assert st["pool"]["pairs"] == ckpt["pool"]["pairs"] > 10
    model_scores = [k for k in st["pool"]["scores"] if k not in ("bm25", "chance")]
    for key in model_scores:
        assert ckpt["pool"]["scores"][key] == pytest.approx(st["pool"]["scores"][key], abs=1e-6), key


QUERY_ENCODER = {"bert": "encoder.sentence_encoder.", "t5": "encoder."}  # the query tower's encoder weights


def separate_towers(ckpt: Path, out: Path, query_encoder: str, noise: float = 0.3) -> Path:
    """``ckpt`` (a one-tower contrastive checkpoint) with a key tower of its own (``key_encoder.*``,
    ``key_pooler.*``): the query tower's weights moved by ``noise``, so that the towers embed differently."""
    from fairseq_ext.serialization import safe_torch_load

    state = safe_torch_load(ckpt, map_location="cpu")
    state["cfg"]["model"]["separate_towers"] = True
    weights, g = state["model"], torch.Generator().manual_seed(5)
    for src, dst in ((query_encoder, "key_encoder."), ("pooler.", "key_pooler.")):
        for k in [k for k in weights if k.startswith(src)]:
            moved = not k.endswith("version")  # fairseq's bookkeeping tensor stays as it is
            weights[dst + k[len(src):]] = weights[k] + moved * noise * torch.randn(weights[k].shape, generator=g)
    torch.save(state, out)
    return out


@pytest.mark.parametrize("family", ["bert", "t5"])
def test_each_tower_exports_its_own_sentence_encoder(request, tmp_path, family):
    directory = st_dir(request, family, tmp_path / "st", pooling="mean", dense=8, normalize=True)
    import_hf(directory, tmp_path / "ckpt")
    two = separate_towers(tmp_path / "ckpt" / "checkpoint.pt", tmp_path / "ckpt" / "two.pt", QUERY_ENCODER[family])
    encoded = {}
    for tower in ("query", "key"):
        r = export_hf(two, tmp_path / tower, tower=tower, fmt="sentence-transformers")
        assert r.embedding.separate and r.embedding.tower == tower and r.embedding.st_max_abs_diff <= TOLERANCE
        encoded[tower] = st_encode(tmp_path / tower)
    torch.testing.assert_close(encoded["query"], st_encode(directory), atol=1e-6, rtol=0)  # the imported tower
    assert (encoded["key"] - encoded["query"]).abs().max() > 1e-2


def test_a_tokenizer_without_fairseqs_specials_is_compared_on_fairseqs_ids(bpe_dir, tmp_path, capsys):
    """A tokenizer that adds no <s>/</s> of its own: encode() embeds other ids than fairseq's pairs feed, so the
    check runs on fairseq's ids (the forward on padded batches) and the result says so."""
    directory = roberta_st_dir(tmp_path / "st", bpe_dir)
    tokenizer = json.loads((directory / "tokenizer.json").read_text())
    (directory / "tokenizer.json").write_text(json.dumps({**tokenizer, "post_processor": None}))
    r = import_hf(directory, tmp_path / "ckpt")
    assert not r.embedding.tokens_agree and r.embedding.max_abs_diff <= TOLERANCE
    assert "tokenizer [" in r.embedding.token_example and ", fairseq [0, " in r.embedding.token_example
    capsys.readouterr()
    assert main(["import-hf", str(directory), "-o", str(tmp_path / "cli")]) == 0
    assert "note: the tokenizer's own special tokens differ from what fairseq's pairs feed; compared on fairseq's " \
           "ids only: " in capsys.readouterr().out


@pytest.mark.parametrize("family, pooling, fmt", [("bert", "max", "transformers"),
                                                  ("roberta", "cls", "sentence-transformers"),
                                                  ("t5", "max", "transformers")])
def test_card_transformers_snippet_computes_the_embedding(request, tmp_path, family, pooling, fmt):
    """The card's plain-transformers code, run as written, gives the directory's embeddings (a masked-LM
    export's encoder is its base_model; max pooling written out)."""
    directory = st_dir(request, family, tmp_path / "st", pooling=pooling, dense=8, normalize=True)
    import_hf(directory, tmp_path / "ckpt")
    export_hf(tmp_path / "ckpt" / "checkpoint.pt", tmp_path / "hf", fmt=fmt)
    card = (tmp_path / "hf" / "README.md").read_text()
    code = card.split("With transformers only")[1].split("```python\n")[1].split("```")[0]
    scope = {"texts": TEXTS}
    exec(code, scope)
    torch.testing.assert_close(scope["emb"], st_encode(directory), atol=1e-5, rtol=0)
