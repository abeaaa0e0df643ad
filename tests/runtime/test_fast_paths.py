"""The training step's fast paths (fairseq_ext/runtime/fast_paths.py): the same numbers by a path that never
waits for the device (the LM head's positions) or by torch's fused attention (BART's cross-attention)."""

from __future__ import annotations

import torch
from fairseq.models.roberta.model import RobertaLMHead
from fairseq.modules import multihead_attention
from fairseq.modules.multihead_attention import MultiheadAttention

import fairseq_ext  # noqa: F401  (installs the table)
from fairseq_ext.runtime.patching import patched


def test_lm_head_positions_give_what_the_mask_gives():
    assert patched(RobertaLMHead.forward) == "fairseq.models.roberta.model:RobertaLMHead.forward"
    torch.manual_seed(0)
    head = RobertaLMHead(16, 40, "gelu", weight=torch.nn.Parameter(torch.randn(40, 16)))
    features = torch.randn(3, 5, 16, requires_grad=True)
    mask = torch.rand(3, 5) < 0.4
    mask[0, 0] = True
    by_mask = head(features, masked_tokens=mask)
    (grad_mask,) = torch.autograd.grad(by_mask.square().sum(), features)
    positions = mask.view(-1).nonzero().squeeze(1)
    by_positions = head(features, masked_tokens=positions)
    (grad_positions,) = torch.autograd.grad(by_positions.square().sum(), features)
    assert by_positions.shape == (int(mask.sum()), 40)
    assert torch.equal(by_mask, by_positions) and torch.equal(grad_mask, grad_positions)
    assert torch.equal(head(features), head(features, masked_tokens=None))  # every position: unchanged


def _cross_attention() -> tuple[MultiheadAttention, dict]:
    torch.manual_seed(0)
    attn = MultiheadAttention(16, 4, kdim=16, vdim=16, dropout=0.0, encoder_decoder_attention=True)
    encoder = torch.randn(7, 2, 16)  # (S, B, C)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 5:] = True
    return attn, {"query": torch.randn(4, 2, 16), "key": encoder, "value": encoder, "key_padding_mask": padding}


def test_cross_attention_takes_the_fused_path_with_the_same_result(monkeypatch):
    assert patched(MultiheadAttention.forward) == "fairseq.modules.multihead_attention:MultiheadAttention.forward"
    attn, inputs = _cross_attention()
    unfused, _ = MultiheadAttention.forward.__wrapped__(attn, **inputs, static_kv=True, need_weights=False)
    calls = []
    fused = multihead_attention.F.multi_head_attention_forward
    monkeypatch.setattr(multihead_attention.F, "multi_head_attention_forward",
                        lambda *a, **k: calls.append(1) or fused(*a, **k))
    out, _ = attn(**inputs, static_kv=True, need_weights=False)
    assert calls, "the cross-attention did not take torch's fused path"
    torch.testing.assert_close(out, unfused, atol=1e-6, rtol=1e-5)
    # where generation keeps keys and values in an incremental state, static_kv keeps its meaning
    calls.clear()
    state: dict = {}
    first, _ = attn(**inputs, static_kv=True, incremental_state=state)
    again, _ = attn(**inputs, static_kv=True, incremental_state=state)
    assert not calls and state
    torch.testing.assert_close(first, unfused, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(again, unfused, atol=1e-6, rtol=1e-5)


def _adam_run(step, dtype=torch.float32, amsgrad=False, steps=4) -> tuple[list[torch.Tensor], list]:
    from fairseq.optim.adam import Adam

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*shape).to(dtype)) for shape in ((7, 5), (5,), (3, 4, 2), (6,))]
    groups = [{"params": params[:3], "weight_decay": 0.01}, {"params": params[3:], "weight_decay": 0.0}]
    opt = Adam(groups, lr=3e-3, betas=(0.9, 0.98), eps=1e-6, amsgrad=amsgrad)
    gen = torch.Generator().manual_seed(1)
    for i in range(steps):
        for j, p in enumerate(params):
            p.grad = None if (i == 1 and j == 2) else torch.randn(p.shape, generator=gen).to(dtype)  # one skips a step
        opt.param_groups[0]["lr"] = 3e-3 * (i + 1) / steps  # a schedule changes lr between steps
        step(opt)
    return [p.detach().clone() for p in params], [opt.state[p] for p in params]


def test_adam_over_lists_of_tensors_is_bit_identical_to_fairseqs(monkeypatch):
    from fairseq.optim.adam import Adam

    from fairseq_ext.runtime import fast_paths

    monkeypatch.setattr(fast_paths, "FOREACH_ELEMENTS", 40)  # several chunks: 35 + 5, 24, 6 elements

    assert patched(Adam.step) == "fairseq.optim.adam:Adam.step"
    calls = []
    foreach_add = torch._foreach_add_
    monkeypatch.setattr(torch, "_foreach_add_", lambda *a, **k: calls.append(1) or foreach_add(*a, **k))
    params, state = _adam_run(Adam.step)
    assert calls, "the update did not go through the foreach ops"
    reference, reference_state = _adam_run(Adam.step.__wrapped__)
    assert all(torch.equal(a, b) for a, b in zip(params, reference))
    for mine, theirs in zip(state, reference_state):
        assert mine["step"] == theirs["step"] and mine.keys() == theirs.keys()
        assert torch.equal(mine["exp_avg"], theirs["exp_avg"]) and torch.equal(mine["exp_avg_sq"], theirs["exp_avg_sq"])
    assert [s["step"] for s in state] == [4, 4, 3, 4]
    # fairseq's loop: where a group holds half-precision weights or uses amsgrad, the same numbers as before
    calls.clear()
    for kwargs in ({"dtype": torch.bfloat16}, {"amsgrad": True}):
        ours, theirs = _adam_run(Adam.step, **kwargs)[0], _adam_run(Adam.step.__wrapped__, **kwargs)[0]
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    assert not calls


def test_in_a_whole_bart_every_cross_attention_but_the_alignment_layers_is_fused(monkeypatch):
    """fairseq's decoder asks its last layer (the alignment layer) for per-head weights, which only the unfused
    path returns: that one stays unfused; the encoder's and decoder's self-attention were fused before."""
    import argparse
    from types import SimpleNamespace

    from fairseq.data import Dictionary
    from fairseq.models.bart.model import BARTModel, bart_base_architecture

    d = Dictionary()
    for i in range(40):
        d.add_symbol(f"w{i}")
    args = argparse.Namespace(encoder_layers=1, decoder_layers=3, encoder_embed_dim=16, decoder_embed_dim=16,
                              encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32, encoder_attention_heads=2,
                              decoder_attention_heads=2, share_all_embeddings=True, max_source_positions=32,
                              max_target_positions=32, task="hf_denoising")
    bart_base_architecture(args)
    model = BARTModel.build_model(args, SimpleNamespace(source_dictionary=d, target_dictionary=d)).train()
    calls = []
    fused = multihead_attention.F.multi_head_attention_forward
    monkeypatch.setattr(multihead_attention.F, "multi_head_attention_forward",
                        lambda *a, **k: calls.append(1) or fused(*a, **k))
    tokens = torch.randint(4, len(d), (2, 9))
    model(tokens, torch.tensor([9, 9]), tokens)
    assert len(calls) == 1 + 3 + 2  # encoder self, decoder self x 3, cross-attention of layers 1 and 2 (not 3)
