"""Every encoder family code_contrastive trains, through the pair interface (fairseq_ext.models.towers):
tiny t5_encoder and hf_bert models (BERT and RoBERTa layouts), shared and separate towers, each pooling;
two CPU workers (gloo, DistributedDataParallel) equal one worker on the union of their batches under the
info_nce criterion (loss and every gradient), the masked-LM head takes no part, pooling ignores padding,
and a plain fairseq RoBERTa checkpoint continues as an hf_bert pair encoder."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fairseq.data import Dictionary
from fairseq.models import ARCH_MODEL_REGISTRY

import fairseq_ext  # noqa: F401  (registers the models)
from fairseq_ext.criterions.info_nce import InfoNCECriterion
from fairseq_ext.models.towers import PairEncoder
from support.gloo import free_port

SIZES = (3, 5)  # pairs of worker 0 and worker 1: unequal, as batches by token budget are
T5 = {"_name": "t5_encoder_small", "encoder_layers": 2, "encoder_embed_dim": 16, "kv_dim": 4,
      "encoder_ffn_embed_dim": 32, "encoder_attention_heads": 4, "max_positions": 16, "dropout": 0.0,
      "relative_attention_num_buckets": 8, "relative_attention_max_distance": 12}
BERT = {"_name": "hf_bert_base", "encoder_layers": 2, "encoder_embed_dim": 16, "encoder_ffn_embed_dim": 32,
        "encoder_attention_heads": 4, "max_positions": 16, "dropout": 0.0, "attention_dropout": 0.0}
ROBERTA = {**BERT, "hf_model_type": "roberta", "type_vocab_size": 1, "layer_norm_eps": 1e-5}
MODELS = {
    "t5, shared, mean, projection, normalised": {**T5, "pooling": "mean", "pooler_dim": 8, "pooler_normalize": True},
    "t5, separate, first": {**T5, "pooling": "first", "separate_towers": True},
    "bert, shared, first, hf pooler": {**BERT, "pooling": "first", "hf_pooler": True},
    "bert, separate, max, projection": {**BERT, "pooling": "max", "pooler_dim": 8, "separate_towers": True},
    "roberta, shared, max": {**ROBERTA, "pooling": "max"},
    "roberta, separate, mean, normalised": {**ROBERTA, "pooling": "mean", "pooler_normalize": True,
                                            "separate_towers": True},
}
OPTIONS = {"symmetric": True, "learn_temperature": True}


class Task:
    def __init__(self):
        self.source_dictionary = self.target_dictionary = dictionary()

    def max_positions(self):
        return 16


def dictionary() -> Dictionary:
    d = Dictionary()  # <s>=0, <pad>=1, </s>=2, <unk>=3
    for i in range(28):
        d.add_symbol(f"w{i}")
    return d


def build(cfg: dict) -> PairEncoder:
    """The model as code_contrastive builds it (head frozen); separate towers made to differ."""
    torch.manual_seed(0)
    model = ARCH_MODEL_REGISTRY[cfg["_name"]].build_model(dict(cfg), Task())
    for p in model.head_parameters():
        p.requires_grad_(False)
    if model.separate_towers:
        with torch.no_grad():
            for p in (*model.key_encoder.parameters(), *model.key_pooler.parameters()):
                p.add_(torch.randn_like(p) * 0.1)
    return model.train()


def token_batches(steps: int = 2):
    """(queries, keys) of sum(SIZES) rows each: right-padded ids of 2 to 9 tokens, bos first, eos last."""
    g = torch.Generator().manual_seed(2)
    n, pad = sum(SIZES), 1

    def side():
        ids = torch.randint(4, 32, (n, 9), generator=g)
        ids[:, 0] = 0
        lengths = torch.randint(2, 10, (n, 1), generator=g)
        ids = ids.scatter(1, lengths - 1, 2)
        return ids.masked_fill(torch.arange(9) >= lengths, pad)

    return [(side(), side()) for _ in range(steps)]


def rows(rank: int, world: int) -> tuple[int, int]:
    if world == 1:
        return 0, sum(SIZES)
    lo = sum(SIZES[:rank])
    return lo, lo + SIZES[rank]


def steps(cfg: dict, rank: int = 0, world: int = 1) -> list[dict]:
    """Training steps through info_nce; per step the loss and every gradient summed over workers."""
    model = build(cfg)
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    criterion = InfoNCECriterion(Task(), **OPTIONS)
    criterion.train()
    lo, hi = rows(rank, world)
    out = []
    for queries, keys in token_batches():
        model.zero_grad()
        criterion.zero_grad()
        q, k = queries[lo:hi], keys[lo:hi]
        sample = {"net_input": {"query_tokens": q, "key_tokens": k}, "nsentences": hi - lo,
                  "ntokens": int(q.ne(1).sum() + k.ne(1).sum())}
        loss, _, log = criterion(wrapped, sample)
        loss.backward()
        grads = {n: p.grad * world for n, p in model.named_parameters() if p.grad is not None}  # DDP averaged
        grads |= {n: p.grad.clone() for n, p in criterion.named_parameters()}
        total = loss.detach().clone()
        if world > 1:
            for g in (total, *(grads[n] for n, _ in criterion.named_parameters())):
                dist.all_reduce(g)
        out.append({"loss": total, "grads": grads, "candidates": log["candidates"]})
    return out


def _worker(rank: int, world: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for name, cfg in MODELS.items():
            out = steps(cfg, rank, world)
            if rank == 0:
                results[name] = out
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_workers() -> dict:
    """Every model's steps on two spawned workers (one process group for all: spawning costs seconds)."""
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(2, free_port(), results), nprocs=2, join=True)
        return dict(results)


@pytest.mark.parametrize("name", list(MODELS))
def test_two_workers_equal_one_worker_on_the_union_batch(name, two_workers):
    one, two = steps(MODELS[name]), two_workers[name]
    trainable = {n for n, p in build(MODELS[name]).named_parameters() if p.requires_grad}
    for step, (a, b) in enumerate(zip(one, two)):
        assert torch.allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-6), (step, a["loss"], b["loss"])
        assert set(a["grads"]) == set(b["grads"]) == trainable | {"logit_scale"}  # every tower, no head
        for key in a["grads"]:
            diff = (a["grads"][key] - b["grads"][key]).abs().max()
            assert diff <= 1e-5 * a["grads"][key].abs().max().clamp(min=1), (step, key, float(diff))
    touched = {k for k, g in one[0]["grads"].items() if g.abs().sum() > 0}
    towers = {k for k in trainable if k.startswith(("key_encoder.", "key_pooler."))}
    assert towers <= touched and (not MODELS[name].get("separate_towers") or towers)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_embedding_ignores_padding_and_the_head_is_frozen(name):
    model = build(MODELS[name]).eval()
    tokens = token_batches(1)[0][0][:4]
    longer = torch.cat([tokens, torch.ones(4, 5, dtype=tokens.dtype)], dim=1)  # five more pad columns
    for tower in ("query", "key"):
        assert torch.allclose(model.embed(tokens, tower), model.embed(longer, tower), atol=1e-6), tower
    q, k = model(query_tokens=tokens, key_tokens=tokens)
    assert torch.equal(q, model.embed(tokens, "query")) and torch.equal(k, model.embed(tokens, "key"))
    assert torch.equal(q, k) != bool(MODELS[name].get("separate_towers"))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".lm_head." in n or n.startswith(("lm_head.", "hf_pooler.")) for n in frozen), frozen


def test_max_pooling_takes_the_largest_real_value():
    from fairseq_ext.models.towers import Pooler

    features = torch.tensor([[[1.0, -5.0], [3.0, -7.0], [9.0, 9.0]]])  # the last position is padding
    pad = torch.tensor([[False, False, True]])
    assert Pooler(2, "max", 0, False)(features, pad).tolist() == [[3.0, -5.0]]
    assert Pooler(2, "mean", 0, False)(features, pad).tolist() == [[2.0, -6.0]]
    assert Pooler(2, "first", 0, False)(features, pad).tolist() == [[1.0, -5.0]]


def test_a_roberta_checkpoint_continues_as_a_pair_encoder():
    """fairseq's own roberta (no token types) loads into hf_bert with a zero type row: the same features."""
    from fairseq_ext.models.bert import BertModel

    torch.manual_seed(0)
    cfg = {k: v for k, v in ROBERTA.items() if k not in ("hf_model_type", "type_vocab_size", "layer_norm_eps")}
    roberta = ARCH_MODEL_REGISTRY["roberta_base"].build_model(
        _namespace({**cfg, "_name": "roberta_base", "arch": "roberta_base"}), Task()).eval()
    pair = build({**ROBERTA, "separate_towers": True, "pooler_dim": 8}).eval()
    state = roberta.state_dict()
    pair.upgrade_state_dict_named(state, "")
    pair.load_state_dict(state, strict=True)
    tokens = token_batches(1)[0][0]
    expected = roberta(tokens, features_only=True)[0]
    assert isinstance(pair, BertModel)
    assert torch.allclose(pair.features(pair.query_encoder(), tokens), expected, atol=1e-5)
    assert torch.allclose(pair.features(pair.key_encoder, tokens), expected, atol=1e-5)  # copied tower


def _namespace(values: dict):
    from argparse import Namespace

    from fairseq.models.roberta.model import base_architecture

    args = Namespace(**values)
    base_architecture(args)
    return args
