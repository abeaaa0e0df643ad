"""--bpe hf_tokenizer: registered under our key, aligned with the dictionary, picklable."""

from __future__ import annotations

import pickle
from argparse import Namespace

import pytest
from fairseq.data import encoders

from fairseq_ext.data.encoders.hf_tokenizer import HFTokenizerBPE, HFTokenizerBPEConfig
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.tokenizer import load_tokenizer

SENTENCE = "The patient teacher explains tokenizers to curious students."


def build(src) -> HFTokenizerBPE:
    return HFTokenizerBPE(HFTokenizerBPEConfig(hf_tokenizer=str(src)))


def test_registry_key_resolves_to_our_class():
    from fairseq.registry import REGISTRIES

    assert REGISTRIES["bpe"]["registry"]["hf_tokenizer"] is HFTokenizerBPE
    assert REGISTRIES["bpe"]["dataclass_registry"]["hf_tokenizer"] is HFTokenizerBPEConfig


@pytest.mark.parametrize("family", ["bpe", "bert", "unigram", "spm"])
def test_encode_gives_tokenizer_ids_through_the_dictionary(family, bpe_dir, bert_dir, unigram_dir, spm_model):
    src = {"bpe": bpe_dir, "bert": bert_dir, "unigram": unigram_dir, "spm": spm_model}[family]
    bpe = build(src)
    d = TokenizerDictionary.from_path(src)
    tok = load_tokenizer(src)
    ids = d.encode_line(bpe.encode(SENTENCE), add_if_not_exist=False, append_eos=False).tolist()
    assert ids == tok(SENTENCE, add_special_tokens=False)["input_ids"]
    assert bpe.decode(d.string(d.encode_line(bpe.encode(SENTENCE), append_eos=False))) == tok.decode(ids)


def test_built_through_fairseq_registry_from_a_data_directory(bpe_dir):
    # what fairseq-train / hub interfaces pass: the flat args with the data path
    bpe = encoders.build_bpe(Namespace(bpe="hf_tokenizer", data=str(bpe_dir), hf_tokenizer=None))
    assert isinstance(bpe, HFTokenizerBPE)
    assert bpe.decode(bpe.encode(SENTENCE)) == SENTENCE


def test_word_starts_for_every_family(bpe_dir, bert_dir, unigram_dir):
    assert build(bpe_dir).is_beginning_of_word("\u0120fox")
    assert not build(bpe_dir).is_beginning_of_word("ox")
    assert build(bpe_dir).is_beginning_of_word("<mask>")
    assert build(unigram_dir).is_beginning_of_word("\u2581fox")
    assert not build(unigram_dir).is_beginning_of_word("ox")
    assert build(bert_dir).is_beginning_of_word("fox")
    assert not build(bert_dir).is_beginning_of_word("##ing")
    assert build(bert_dir).is_beginning_of_word("[MASK]")


@pytest.mark.parametrize("family", ["bpe", "bert", "unigram"])
def test_word_start_mask_groups_subwords_into_words(family, bpe_dir, bert_dir, unigram_dir):
    src = {"bpe": bpe_dir, "bert": bert_dir, "unigram": unigram_dir}[family]
    d = TokenizerDictionary.from_path(src)
    tok = load_tokenizer(src)
    starts = d.word_starts()
    text = "explains tokenizers quickly"
    ids = tok(" " + text if family == "bpe" else text, add_special_tokens=False)["input_ids"]
    n_words = int(starts[ids].sum())
    assert n_words == 3, tok.convert_ids_to_tokens(ids)
    assert starts[d.special_ids].all()


def test_pickles_for_data_loader_workers(bpe_dir):
    bpe = build(bpe_dir)
    clone = pickle.loads(pickle.dumps(bpe))
    assert clone.encode(SENTENCE) == bpe.encode(SENTENCE)
    assert clone.is_beginning_of_word("\u0120fox")


def test_fairseq_task_style_build_by_name_is_a_clear_error():
    from fairseq_ext.vocab.tokenizer import TokenizerError

    with pytest.raises(TokenizerError, match="pass --hf-tokenizer"):
        encoders.build_bpe("hf_tokenizer")
