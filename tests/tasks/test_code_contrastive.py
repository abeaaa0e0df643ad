"""code_contrastive on the standard library's docstring pairs: training beats chance and the untrained model
on held-out pairs (the whole pool), gradient caching equals the uncached computation on a batch of 1,024 pairs
(inside fairseq's own train_step, with or without a loss scale), a one-tower checkpoint continues with
separate towers, two torchrun ranks train together, span queries keep their mask, bad settings are one line."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from fairseq import options, tasks
from fairseq.optim.dynamic_loss_scaler import DynamicLossScaler
from fairseq.tasks import FairseqTask

from conftest import CONTRASTIVE_ARGS
from fairseq_ext.criterions.grad_cache import trim
from fairseq_ext.criterions.ranking import chance_metrics
from fairseq_ext.data.pair_dataset import side_tokens
from fairseq_ext.errors import UserError
from fairseq_ext.serialization import safe_torch_load
from fairseq_ext.tasks.code_contrastive import CodeContrastiveTask
from support.tensorboard import scalars


def build(pairs, *extra: str):
    """(task, model, criterion) from a fairseq-train command line, in this process."""
    args = options.parse_args_and_arch(options.get_training_parser(),
                                       [str(pairs), "--user-dir", "fairseq_ext", *CONTRASTIVE_ARGS, *extra])
    task = tasks.setup_task(args)
    return task, task.build_model(args), task.build_criterion(args)


RETRIEVAL_FIGURES = {"mrr", "recall@1", "recall@10", "pool", "num_updates"}


def gradients(model, criterion) -> dict[str, torch.Tensor]:
    """Every gradient of the model and the criterion (the learned temperature), then zeroed."""
    out = {n: p.grad.clone() for n, p in [*model.named_parameters(), *criterion.named_parameters()]
           if p.grad is not None}
    model.zero_grad()
    criterion.zero_grad()
    return out


def uncached_step(model, criterion, sample, chunk: int, seed: int, loss_scale: float = 1.0):
    """The chunks of a cached step embedded with autograd kept (memory of the whole batch), the criterion's
    forward on their embeddings, one backward: (loss, sample size, candidates, gradients)."""
    model.train()
    torch.manual_seed(seed)
    q, k = sample["net_input"]["query_tokens"], sample["net_input"]["key_tokens"]
    parts = [model(query_tokens=trim(q[i:i + chunk], 1), key_tokens=trim(k[i:i + chunk], 1))
             for i in range(0, q.size(0), chunk)]
    embeddings = torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])
    size = criterion.grad_cache_chunk
    criterion.grad_cache_chunk = 0  # the "model" below hands the criterion the embeddings made above
    loss, n, log = criterion(lambda **_: embeddings, sample)
    criterion.grad_cache_chunk = size
    (loss * loss_scale).backward()
    return loss.detach(), n, log["candidates"], gradients(model, criterion)


@pytest.mark.slow
def test_training_beats_chance_and_the_untrained_model_on_the_held_out_pool(contrastive_checkpoint):
    run = contrastive_checkpoint
    lines = run.log.valid
    assert lines and all(RETRIEVAL_FIGURES <= line.keys() for line in lines), lines
    pool = int(lines[-1]["pool"])
    assert pool > 200  # every held-out pair, not a batch
    assert [int(line["num_updates"]) for line in lines] == [50, 100, 150]
    chance = chance_metrics(pool)
    best = max(float(line["mrr"]) for line in lines)
    assert best > 3 * chance["mrr"], (best, chance)  # measured: 0.089 against 0.023
    state = safe_torch_load(run.checkpoint, map_location="cpu")
    recorded = state["task_state"]["retrieval"]
    assert recorded["pairs"] == pool and abs(recorded["mrr"] - best) < 1e-4  # the best checkpoint's figures
    assert float(state["extra_state"]["best"]) == pytest.approx(best, abs=1e-4)  # --best-checkpoint-metric mrr
    assert state["criterion"]["logit_scale"].numel() == 1  # the learned temperature is saved
    logged = scalars(run.tensorboard / "valid")  # and tensorboard has the figures of every validation
    assert sorted(logged["mrr"]) == [50, 100, 150] and max(logged["mrr"].values()) == pytest.approx(best, abs=1e-4)
    assert {"recall_1", "recall_10", "loss"} <= logged.keys()  # tensorboardX writes '@' in a tag as '_'
    # the same measurement of an untrained model of the same shape: training, not bag-of-tokens overlap
    task, untrained, criterion = build(run.pairs)
    task.load_dataset("valid")
    torch.manual_seed(1)
    before = task.pool_retrieval(untrained, task.datasets["valid"], criterion)
    assert before["pairs"] == pool and best > before["mrr"] + 0.02, (before, best)
    head = untrained.lm_head
    assert not head.dense.weight.requires_grad and head.weight.requires_grad  # frozen head, tied embeddings train


def test_gradient_caching_equals_the_uncached_computation_on_a_large_batch(code_pairs_dir):
    task, model, criterion = build(code_pairs_dir, "--dropout", "0.1", "--max-query-tokens", "12",
                                   "--max-key-tokens", "16", "--symmetric", "--separate-towers")
    task.load_dataset("train")
    data = task.datasets["train"]
    sample = data.collater([data[i] for i in range(1024)])
    optimizer = types.SimpleNamespace(backward=lambda loss: loss.backward())
    chunk = 100  # 11 chunks, the last one short

    def cached(seed: int, size: int = chunk):
        """fairseq's own train_step: the criterion caches, optimizer.backward(loss) replays the chunks."""
        criterion.grad_cache_chunk = size
        torch.manual_seed(seed)
        loss, n, log = task.train_step(sample, model, criterion, optimizer, update_num=0)
        return loss.detach(), n, log["candidates"], gradients(model, criterion)

    def uncached(seed: int):
        return uncached_step(model, criterion, sample, chunk, seed)

    def same(a, b) -> None:
        assert a[1] == b[1] == 1024 and a[2] == b[2] == 1024 * 1024  # every key a candidate for every query
        assert torch.allclose(a[0], b[0], rtol=1e-5), (a[0], b[0])
        assert a[3].keys() == b[3].keys() and "key_encoder.layers.0.ffn.wo.weight" in a[3]
        assert "lm_head.dense.weight" not in a[3] and "logit_scale" in a[3]  # frozen head, learned temperature
        for name, grad in a[3].items():  # float sums over 1,024 pairs in another order: relative to the largest
            assert (grad - b[3][name]).abs().max() <= 1e-4 * grad.abs().max(), name

    assert task.dictionary.pad() == 1
    same(cached(7), uncached(7))  # dropout on: the cache replays each chunk's masks
    replayed = cached(8)[3]["encoder.layers.0.ffn.wo.weight"]
    reference = uncached(7)[3]["encoder.layers.0.ffn.wo.weight"]
    assert (replayed - reference).abs().max() > 1e-2 * reference.abs().max()  # other masks: the test can tell
    for m in model.modules():  # dropout off: also equal to the plain step on the whole batch at once
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        elif isinstance(getattr(m, "dropout", None), float):  # attention: scaled_dot_product_attention's dropout_p
            m.dropout = 0.0
    same(cached(9), cached(9, size=0))


def test_the_cached_step_is_fairseqs_own_train_step_and_follows_the_loss_scale(code_pairs_dir):
    """The task leaves train_step to fairseq; the criterion's backward hook replays every chunk inside
    optimizer.backward(loss), with the gradient as the optimizer scaled it: fp16's loss scale (grad_output
    128) reaches every gradient, and a dummy batch (ignore_grad: loss *= 0) replays every chunk with zero
    gradients (under DDP, every worker still takes part in the all-reduce)."""
    assert "train_step" not in CodeContrastiveTask.__dict__ and CodeContrastiveTask.train_step is FairseqTask.train_step
    task, model, criterion = build(code_pairs_dir, "--dropout", "0.1", "--max-query-tokens", "12",
                                   "--max-key-tokens", "16", "--symmetric", "--separate-towers", "--grad-cache-chunk",
                                   "10")
    assert criterion.grad_cache_chunk == 10  # --grad-cache-chunk (task.grad_cache_chunk) reaches the criterion
    task.load_dataset("train")
    data = task.datasets["train"]
    sample = data.collater([data[i] for i in range(64)])  # 7 chunks, the last one short
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(torch.is_grad_enabled()))
    scaler = DynamicLossScaler(init_scale=2.0 ** 7)
    fp16 = types.SimpleNamespace(backward=lambda loss: scaler.scale(loss).backward())  # FP16Optimizer.backward

    torch.manual_seed(5)
    loss, n, _ = task.train_step(sample, model, criterion, fp16, update_num=0)
    assert calls == [False] * 7 + [True] * 7  # embedded without autograd, then replayed by the backward
    scaled = gradients(model, criterion)
    reference = uncached_step(model, criterion, sample, 10, seed=5)
    assert n == reference[1] == 64 and torch.allclose(loss, reference[0], rtol=1e-5)
    assert scaled.keys() == reference[3].keys() and "logit_scale" in scaled
    for name, grad in reference[3].items():
        assert (scaled[name] - 128 * grad).abs().max() <= 1e-4 * 128 * grad.abs().max(), name
    assert reference[3]["key_encoder.layers.0.ffn.wo.weight"].abs().max() > 0

    calls.clear()
    task.train_step(sample, model, criterion, fp16, update_num=0, ignore_grad=True)
    assert calls == [False] * 7 + [True] * 7
    dummy = gradients(model, criterion)
    assert dummy.keys() == scaled.keys() and all(not g.any() for g in dummy.values())


def test_a_one_tower_checkpoint_continues_with_separate_towers(contrastive_checkpoint):
    from fairseq_ext.serialization import safe_torch_load

    state = safe_torch_load(str(contrastive_checkpoint.checkpoint))
    task, model, _ = build(contrastive_checkpoint.pairs, "--separate-towers")
    model.load_state_dict(state["model"], strict=True, model_cfg=None)
    model.eval()
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, model.key_encoder.state_dict()[name]), name
    assert torch.equal(model.pooler.dense.weight, model.key_pooler.dense.weight)
    tokens = torch.tensor([[5, 6, 7, task.dictionary.eos()]])
    q, k = model(query_tokens=tokens, key_tokens=tokens)
    assert torch.equal(q, k) and q.shape == (1, 32)


@pytest.mark.slow
def test_two_torchrun_ranks_gather_keys_validate_and_save(two_tower_run):
    log = two_tower_run.log
    steps = [(r["candidates"], r["bsz"]) for r in log.of("train_inner")]
    assert len(steps) == 4
    first_candidates, first_bsz = map(float, steps[0])
    # bsz counts both ranks' pairs; were keys not gathered, a query would see only its rank's (a weighted mean
    # of the two local batch sizes, below bsz)
    assert first_candidates == first_bsz
    assert float(steps[-1][0]) > first_candidates  # the queue fills
    lines = log.valid
    # the whole pool, embedded half by each rank
    assert lines and RETRIEVAL_FIGURES <= lines[-1].keys() and int(lines[-1]["pool"]) > 200
    state = safe_torch_load(two_tower_run.save_dir / "checkpoint_best.pt", map_location="cpu")
    assert any(k.startswith("key_encoder.") for k in state["model"])


def test_a_span_query_keeps_a_window_around_its_mask():
    ids = np.arange(10, 110)
    ids[70] = 3  # the mask
    out = side_tokens(ids, 12, bos=0, eos=2, mask=3)
    assert out.tolist() == [0, *range(75, 80), 3, *range(81, 85), 2]  # ids 65..74 of the file, the mask at 70
    assert side_tokens(ids, 12, bos=None, eos=2).tolist() == [*range(10, 21), 2]  # a key keeps its start
    assert side_tokens(ids[:3], 12, bos=None, eos=2).tolist() == [10, 11, 12, 2]
    near_end = np.arange(10, 110)
    near_end[98] = 3  # the window cannot be centred: it ends with the file
    assert side_tokens(near_end, 12, bos=None, eos=2, mask=3).tolist() == [*range(99, 108), 3, 109, 2]


def test_bad_settings_are_one_line(code_pairs_dir, tmp_path):
    with pytest.raises(UserError, match=r"^--max-query-tokens \(task.max_query_tokens\) must be at least 3, got 2$"):
        build(code_pairs_dir, "--max-query-tokens", "2")
    with pytest.raises(UserError, match=r"^--grad-cache-chunk \(task.grad_cache_chunk\) must be 0 \(off\) or "):
        build(code_pairs_dir, "--grad-cache-chunk", "-1")
    with pytest.raises(UserError, match=rf"^{tmp_path}: not a pairs directory \(no dataset_dict.json; make one "):
        build(tmp_path)
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(code_pairs_dir), "--user-dir", "fairseq_ext", "--task", "code_contrastive", "--criterion", "info_nce",
        "--arch", "roberta_base", "--cpu"])
    task = tasks.setup_task(args)
    with pytest.raises(UserError, match=r"^--arch roberta_base: code_contrastive trains an encoder with a pooled "):
        task.build_model(args)
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(code_pairs_dir), "--user-dir", "fairseq_ext", "--task", "code_contrastive", "--arch", "t5_encoder_small",
        "--grad-cache-chunk", "8", "--criterion", "cross_entropy", "--cpu"])
    with pytest.raises(UserError, match=r"^--criterion cross_entropy: code_contrastive trains with --criterion "
                                        r"info_nce \(its loss scores the pairs, caches gradients"):
        tasks.setup_task(args).build_criterion(args)
