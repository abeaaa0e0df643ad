"""The invariant: dictionary index == tokenizer id, for every family."""

from __future__ import annotations

import pytest
from fairseq.data import Dictionary

from fairseq_ext.vocab.dict_txt import read_dict_txt_symbols
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.tokenizer import TokenizerError, load_tokenizer, special_roles


def assert_aligned(d: TokenizerDictionary, tok) -> None:
    vocab = tok.backend_tokenizer.get_vocab(with_added_tokens=True)
    assert len(vocab) == d.tokenizer_size
    for token, idx in vocab.items():
        assert d[idx] == token
        assert d.index(token) == idx


def test_bpe_roberta_layout(bpe_dir):
    tok = load_tokenizer(bpe_dir)
    d = TokenizerDictionary.from_tokenizer(tok)
    assert_aligned(d, tok)
    assert (d.bos(), d.pad(), d.eos(), d.unk(), d.mask_index) == (0, 1, 2, 3, 4)
    assert d.nspecial == 5


def test_bert_wordpiece_layout(bert_dir):
    tok = load_tokenizer(bert_dir)
    d = TokenizerDictionary.from_tokenizer(tok)
    assert_aligned(d, tok)
    assert (d.pad(), d.unk(), d.bos(), d.eos(), d.mask_index) == (0, 100, 101, 102, 103)
    assert d.bos_word == "[CLS]" and d.eos_word == "[SEP]"


def test_bert_tokenizer_json_alone_gets_roles_by_name(bert_dir, tmp_path):
    # A bare tokenizer.json (no tokenizer_config.json beside it) still gets BERT roles.
    lone = tmp_path / "bert.json"
    lone.write_bytes((bert_dir / "tokenizer.json").read_bytes())
    d = TokenizerDictionary.from_path(lone)
    assert (d.pad(), d.unk(), d.bos(), d.eos(), d.mask_index) == (0, 100, 101, 102, 103)


def test_t5_sentencepiece_model(spm_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(spm_model))
    tok = load_tokenizer(spm_model)
    d = TokenizerDictionary.from_tokenizer(tok)
    assert_aligned(d, tok)
    assert [d[i] for i in range(sp.get_piece_size())] == [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    assert (d.pad(), d.eos(), d.unk(), d.bos_index) == (0, 1, 2, None)
    assert d.mask_index == sp.piece_to_id("<mask>")
    # The converted fast tokenizer encodes like SentencePiece itself.
    text = "The quick brown fox reads books"
    assert tok(text, add_special_tokens=False)["input_ids"] == sp.encode(text)


def test_trained_unigram_t5_layout(unigram_dir):
    tok = load_tokenizer(unigram_dir / "tokenizer.json")
    d = TokenizerDictionary.from_tokenizer(tok)
    assert_aligned(d, tok)
    assert (d.pad(), d.eos(), d.unk(), d.bos_index, d.mask_index) == (0, 1, 2, None, 3)


def test_pad_to_multiple_appends_after_last_id(bert_dir):
    tok = load_tokenizer(bert_dir)
    plain = TokenizerDictionary.from_tokenizer(tok)
    padded = TokenizerDictionary.from_tokenizer(tok, pad_to_multiple=8)
    assert len(padded) % 8 == 0 and len(padded) >= len(plain)
    assert padded.symbols[: len(plain)] == plain.symbols
    assert all(s.startswith("madeupword") for s in padded.symbols[len(plain):])
    assert padded.tokenizer_size == plain.tokenizer_size


def test_missing_role_is_a_clear_error(tmp_path, text_file):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train([str(text_file)], trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    tok.save(str(tmp_path / "nomask.json"))
    roles = special_roles(load_tokenizer(tmp_path / "nomask.json"))
    assert roles.unk == 0 and roles.pad == 1 and roles.mask is None
    with pytest.raises(TokenizerError, match=r"nomask.json: tokenizer has no mask token"):
        roles.require("mask", source=str(tmp_path / "nomask.json"))


@pytest.mark.parametrize("family", ["bpe", "bert", "unigram"])
def test_dict_txt_order(family, bpe_dir, bert_dir, unigram_dir, tmp_path):
    src = {"bpe": bpe_dir, "bert": bert_dir, "unigram": unigram_dir}[family]
    d = TokenizerDictionary.from_path(src)
    d.save(str(tmp_path / "dict.txt"))
    listed = read_dict_txt_symbols(tmp_path / "dict.txt")
    assert listed == d.symbols[d.dict_txt_start():]
    if family == "bpe":
        # RoBERTa layout: even fairseq's plain Dictionary.load gets the same order.
        plain = Dictionary.load(str(tmp_path / "dict.txt"))
        assert plain.symbols == d.symbols
    else:
        assert d.dict_txt_start() == 0


def test_load_checks_dict_txt_against_tokenizer(bpe_dir, bert_dir, tmp_path):
    from fairseq_ext.vocab.tokenizer import save_tokenizer

    save_tokenizer(load_tokenizer(bpe_dir), tmp_path)
    TokenizerDictionary.from_path(bert_dir).save(str(tmp_path / "dict.txt"))
    with pytest.raises(TokenizerError, match="dict.txt disagrees with .*tokenizer.json"):
        TokenizerDictionary.load(tmp_path / "dict.txt")


def test_unknown_paths_are_one_line_errors(tmp_path):
    with pytest.raises(TokenizerError, match="no such tokenizer"):
        load_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="bad.json: not a valid tokenizer.json"):
        load_tokenizer(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="holds no tokenizer"):
        load_tokenizer(tmp_path / "empty")
