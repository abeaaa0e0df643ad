"""``--criterion info_nce``: contrastive loss of (query, key) pairs with in-batch negatives.

For query ``i`` of a batch, key ``i`` is the positive and every other key the model sees at this step
is a negative: the keys of the batch, the keys of every other worker's batch (gathered with their
gradients when training is distributed), and with ``--queue-size`` the keys of recent steps (a FIFO of
detached keys, MoCo's queue without its momentum encoder). The loss is the cross entropy of
``scale * sim(q_i, keys)`` with target ``i``: ``sim`` is the dot product or, with ``--similarity
cosine``, the cosine; ``scale`` is ``1 / --temperature``, or learned (``--learn-temperature``: the
criterion's parameter ``logit_scale`` = log(1/temperature), capped at 100 as in CLIP, saved in every
checkpoint). ``--symmetric`` adds the key-to-query direction and averages the two.

Exactly the global mean: each worker returns the sum of its queries' losses and ``sample_size`` = its
number of pairs. fairseq sums sample sizes over workers and scales the gradients (averaged by
DistributedDataParallel) by ``workers / total``: the gradient of ``sum of all losses / all pairs``.
The gather's backward sums, over workers, the gradient each worker's loss sends to every gathered key,
and hands each worker the part that belongs to its own keys: with it, N workers give the loss and
gradients of one worker on the union of their batches (``tests/criterions/test_info_nce.py`` checks it with two
processes).

Large batches at constant memory (``--grad-cache-chunk N``, a setting of the task that this criterion
reads): the batch is embedded N pairs at a time without autograd, the loss is computed on all the
embeddings at once (every pair a negative for every other), and fairseq's ordinary backward replays
each chunk with autograd and the same dropout masks (:mod:`fairseq_ext.criterions.grad_cache`). Loss
and gradients equal the uncached computation's; activation memory is that of N pairs.

Logged: ``loss`` (bits, as fairseq's criteria), ``accuracy`` (queries whose positive scores highest
among all candidates), ``candidates`` (keys each query is ranked against), ``temperature``; in
validation also ``mrr``, ``recall@1``, ``recall@10`` over the whole held-out pool: the task embeds the
pool, :meth:`InfoNCECriterion.pool_figures` scores it as the loss does (see
:class:`~fairseq_ext.tasks.code_contrastive.CodeContrastiveTask`).
"""

import logging
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from fairseq import metrics
from fairseq.criterions import FairseqCriterion, register_criterion
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from fairseq_ext.criterions.grad_cache import cached_embeddings
from fairseq_ext.criterions.ranking import RETRIEVAL_KEYS, embedding_rank_counts, metrics_from_counts
from fairseq_ext.errors import UserError

logger = logging.getLogger(__name__)

SIMILARITIES = ChoiceEnum(["cosine", "dot"])
MAX_LOGIT_SCALE = 100.0  # CLIP's cap: a temperature never below 0.01


@dataclass
class InfoNCEConfig(FairseqDataclass):
    temperature: float = field(default=0.05, metadata={
        "help": "softmax temperature (scores are divided by it); with --learn-temperature, its start value"})
    learn_temperature: bool = field(default=False, metadata={
        "help": "learn the temperature (a parameter of the criterion, saved in the checkpoint; never below 0.01)"})
    similarity: SIMILARITIES = field(default="cosine", metadata={
        "help": "score of a query and a key: 'cosine' (the embeddings are L2-normalised first) or 'dot'"})
    symmetric: bool = field(default=False, metadata={
        "help": "also rank the queries for each key and average the two losses"})
    queue_size: int = field(default=0, metadata={
        "help": "keep the keys of recent steps (detached, all workers') as extra negatives, up to this many; "
        "0: in-batch negatives only"})
    # --grad-cache-chunk stays a task setting (task.grad_cache_chunk, where commands, hydra configs and
    # checkpoints have it); the criterion, which does the caching, reads it
    grad_cache_chunk: int = II("task.grad_cache_chunk")


class _GatherWithGrad(torch.autograd.Function):
    """Concatenate every worker's (n_w, D) rows in rank order; backward: sum over workers of the gradient
    of the whole concatenation, and this worker's rows of it."""

    @staticmethod
    def forward(ctx, x, group, sizes):
        rank = dist.get_rank(group)
        padded = x.new_zeros((max(sizes),) + tuple(x.shape[1:]))
        padded[: x.size(0)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=group)
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start: start + ctx.sizes[ctx.rank]], None, None


@register_criterion("info_nce", dataclass=InfoNCEConfig)
class InfoNCECriterion(FairseqCriterion):
    def __init__(self, task, temperature=0.05, learn_temperature=False, similarity="cosine", symmetric=False,
                 queue_size=0, grad_cache_chunk=0):
        super().__init__(task)
        if not temperature > 0:
            raise UserError(f"--temperature (criterion.temperature) must be positive, got {temperature}")
        if queue_size < 0:
            raise UserError(f"--queue-size (criterion.queue_size) must be 0 (none) or positive, got {queue_size}")
        if grad_cache_chunk < 0:
            raise UserError(f"--grad-cache-chunk (task.grad_cache_chunk) must be 0 (off) or positive, "
                            f"got {grad_cache_chunk}")
        self.temperature, self.learn_temperature = float(temperature), bool(learn_temperature)
        self.similarity, self.symmetric, self.queue_size = str(similarity), bool(symmetric), int(queue_size)
        self.grad_cache_chunk = int(grad_cache_chunk)
        if self.learn_temperature:
            self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / self.temperature)))
        self.queue = None  # (Q, D) recent keys, newest first; not saved: it refills within a few steps
        self._group = None

    def scale(self) -> torch.Tensor | float:
        """1 / temperature."""
        if self.learn_temperature:
            return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return 1.0 / self.temperature

    def current_temperature(self) -> float:
        return float(1.0 / self.scale().detach()) if self.learn_temperature else self.temperature

    def load_state_dict(self, state_dict, strict=True):
        if state_dict is None:  # a checkpoint of another criterion (code_mlm, an imported encoder)
            logger.info(f"checkpoint has no learned temperature: starting at {self.temperature}")
            return None
        return super().load_state_dict(state_dict, strict)

    def group(self):
        """A process group of all workers, of its own (not DDP's), or None when not distributed."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return None
        if self._group is None:
            self._group = dist.new_group()
        return self._group

    def gather(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(every worker's rows concatenated, with gradients; the first row of this worker's)."""
        group = self.group()
        if group is None:
            return x, 0
        n = torch.tensor([x.size(0)], dtype=torch.long, device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(dist.get_world_size(group))]
        dist.all_gather(sizes, n, group=group)  # batches by token budget differ in size
        sizes = [int(s) for s in sizes]
        return _GatherWithGrad.apply(x, group, sizes), sum(sizes[: dist.get_rank(group)])

    def forward(self, model, sample, reduce=True):
        queries, keys = self.embed(model, sample["net_input"])
        loss, n_correct, candidates = self.contrastive_loss(queries, keys)
        n = queries.size(0)
        logging_output = {
            "loss": loss.data, "sample_size": n, "nsentences": sample["nsentences"], "ntokens": sample["ntokens"],
            "n_correct": n_correct, "candidates": candidates * n,
        }
        if self.learn_temperature:
            logging_output["temperature"] = self.current_temperature() * n
        return loss, n, logging_output

    def embed(self, model, net_input: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, D) queries and keys; with --grad-cache-chunk, cached when training on a batch of more pairs."""
        queries, keys = net_input["query_tokens"], net_input["key_tokens"]
        chunk = self.grad_cache_chunk
        if 0 < chunk < queries.size(0) and torch.is_grad_enabled():
            return cached_embeddings(model, queries, keys, chunk, self.padding_idx)
        return model(query_tokens=queries, key_tokens=keys)

    def comparable(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, D) -> float32 rows whose dot products are the scores: L2-normalised for cosine similarity."""
        x = embeddings.float()
        return F.normalize(x, dim=-1) if self.similarity == "cosine" else x

    def pool_figures(self, queries: torch.Tensor, keys: torch.Tensor) -> dict[str, float]:
        """MRR and Recall@k (``RETRIEVAL_KEYS``) of (N, D) queries against all N keys, scored as the loss scores."""
        return metrics_from_counts(*embedding_rank_counts(self.comparable(queries).cpu(), self.comparable(keys).cpu()))

    def contrastive_loss(self, queries: torch.Tensor, keys: torch.Tensor):
        """(summed loss of this worker's queries, how many ranked their key first, candidates per query)."""
        q, k = self.comparable(queries), self.comparable(keys)
        all_keys, offset = self.gather(k)
        candidates = all_keys
        if self.training and self.queue_size and self.queue is not None:
            candidates = torch.cat([all_keys, self.queue.to(all_keys)])
        labels = torch.arange(offset, offset + q.size(0), device=q.device)
        logits = self.scale() * q @ candidates.T  # (n, K)
        loss = F.cross_entropy(logits, labels, reduction="sum")
        if self.symmetric:
            all_queries, _ = self.gather(q)
            loss = (loss + F.cross_entropy(self.scale() * k @ all_queries.T, labels, reduction="sum")) / 2
        with torch.no_grad():
            n_correct = (logits.argmax(1) == labels).sum()
            if self.training and self.queue_size:
                newest = all_keys.detach()
                self.queue = newest[: self.queue_size] if self.queue is None else \
                    torch.cat([newest, self.queue])[: self.queue_size]
        return loss, n_correct, candidates.size(0)

    @staticmethod
    def reduce_metrics(logging_outputs) -> None:
        def total(key):
            return sum(log.get(key, 0) for log in logging_outputs)

        sample_size = total("sample_size")
        if sample_size:
            metrics.log_scalar("loss", total("loss") / sample_size / math.log(2), sample_size, round=3)
            metrics.log_scalar("accuracy", float(total("n_correct")) / sample_size, sample_size, round=4)
            metrics.log_scalar("candidates", total("candidates") / sample_size, sample_size, round=1)
            if any("temperature" in log for log in logging_outputs):
                metrics.log_scalar("temperature", total("temperature") / sample_size, sample_size, round=4)
        weight = total("retrieval_weight")
        if weight:
            for key in RETRIEVAL_KEYS:
                metrics.log_scalar(key, total(f"retrieval_{key}") / weight, weight, round=4)
            metrics.log_scalar("pool", total("retrieval_pool") / weight, weight, round=0)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True
