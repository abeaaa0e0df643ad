"""The tokenizer identity recorded in checkpoints: what it holds, that it is stable, how a mismatch reads."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from fairseq_ext.errors import UserError
from fairseq_ext.prep.binarize_dir import binarize_directory
from fairseq_ext.vocab.dictionary import TokenizerDictionary
from fairseq_ext.vocab.identity import (
    TokenizerIdentity,
    TokenizerMismatchError,
    check_same_tokenizer,
    recorded_tokenizer,
    tokenizer_task_state,
)
from fairseq_ext.vocab.tokenizer import SpecialRoles


def test_bert_identity_names_size_role_tokens_and_hashes_the_vocabulary_in_id_order(bert_dir):
    vocab = (bert_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    ident = TokenizerDictionary.from_path(bert_dir).identity()
    assert ident.size == len(vocab)
    assert dict(ident.roles) == {"bos": 101, "pad": 0, "eos": 102, "unk": 100, "mask": 103}
    assert ident.special_tokens == ((0, "[PAD]"), (100, "[UNK]"), (101, "[CLS]"), (102, "[SEP]"), (103, "[MASK]"))
    assert ident.vocab_sha256 == hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()
    assert ident.describe() == (f"{len(vocab)} tokens ([PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103; "
                                f"vocabulary sha256 {ident.vocab_sha256[:12]})")


def test_identity_is_the_same_however_the_tokenizer_is_loaded_and_ignores_padding(bert_dir, bpe_dir, tmp_path):
    for tok_dir in (bert_dir, bpe_dir):
        text = tmp_path / "t.txt"
        text.write_text("the quick brown fox.\n", encoding="utf-8")
        out = tmp_path / f"bin-{tok_dir.name}"
        binarize_directory(tok_dir, {"train": text}, out, progress=False)
        direct = TokenizerDictionary.from_path(tok_dir).identity()
        assert TokenizerDictionary.load(out / "dict.txt").identity() == direct  # as the tasks read it
        assert TokenizerDictionary.from_path(tok_dir, pad_to_multiple=64).identity() == direct


def test_identity_survives_a_weights_only_round_trip(bert_dir, tmp_path):
    ident = TokenizerDictionary.from_path(bert_dir).identity()
    torch.save({"task_state": tokenizer_task_state(ident)}, tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)  # plain types only: no allow-list needed
    assert recorded_tokenizer(state, "c.pt") == ident
    assert TokenizerIdentity.from_dict(ident.to_dict()) == ident


def test_old_checkpoints_record_nothing_and_broken_records_are_user_errors():
    assert recorded_tokenizer({"model": {}}, "old.pt") is None
    assert recorded_tokenizer({"task_state": {}}, "old.pt") is None
    with pytest.raises(UserError, match=r"^bad\.pt: task_state\.tokenizer is not a tokenizer identity$"):
        recorded_tokenizer({"task_state": {"tokenizer": {"size": 3}}}, "bad.pt")


def test_mismatch_names_the_checkpoint_and_both_sides_in_one_line(bert_dir, bpe_dir):
    bert = TokenizerDictionary.from_path(bert_dir).identity()
    bpe = TokenizerDictionary.from_path(bpe_dir).identity()
    check_same_tokenizer(bert, TokenizerDictionary.from_path(bert_dir / "tokenizer.json").identity(), "c.pt", "x")
    with pytest.raises(TokenizerMismatchError) as err:
        check_same_tokenizer(bert, bpe, "start/checkpoint.pt", "data-bin/tokenizer.json")
    msg = str(err.value)
    assert "\n" not in msg and isinstance(err.value, UserError)
    assert msg == (f"checkpoint start/checkpoint.pt was made with a tokenizer of {bert.describe()}; "
                   f"data-bin/tokenizer.json has {bpe.describe()}")
    assert f"{bert.size} tokens ([PAD]=0 " in msg and f"has {bpe.size} tokens (<s>=0 <pad>=1 </s>=2 " in msg


def test_same_size_and_specials_but_other_tokens_is_a_mismatch():
    roles = SpecialRoles(bos=0, pad=1, eos=2, unk=3, mask=4)
    a = TokenizerIdentity.of(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "cat", "dog"], roles)
    b = TokenizerIdentity.of(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "dog", "cat"], roles)  # ids swapped
    assert (a.size, a.roles, a.special_tokens) == (b.size, b.roles, b.special_tokens)
    with pytest.raises(TokenizerMismatchError, match=a.vocab_sha256[:12] + r".*" + b.vocab_sha256[:12]):
        check_same_tokenizer(a, b, "c.pt", "t.json")
    other_mask = TokenizerIdentity.of(["<s>", "<pad>", "</s>", "<unk>", "<mask>", "cat", "dog"],
                                      SpecialRoles(bos=0, pad=1, eos=2, unk=3, mask=6))
    with pytest.raises(TokenizerMismatchError):
        check_same_tokenizer(a, other_mask, "c.pt", "t.json")
