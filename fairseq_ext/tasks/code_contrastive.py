"""``--task code_contrastive``: train an encoder to embed (query, key) pairs for code search.

Any model with the pair interface of :mod:`fairseq_ext.models.towers` trains: ``t5_encoder`` and
``hf_bert`` (the BERT and RoBERTa layouts: BERT, MiniLM-style sentence encoders, CodeBERT,
GraphCodeBERT, UniXcoder), from scratch or from ``fairseq-ext import-hf`` of a sentence-transformers
directory or an HF encoder (its ``model_args.txt`` holds the pooling it used).

DATA is a pairs directory (``fairseq-ext code-pairs``): docstring -> code and CoCoS span pairs, already
split by directory. Each side becomes model input by :func:`~fairseq_ext.data.pair_dataset.side_tokens`
(``--max-query-tokens``, ``--max-key-tokens``); batches by token budget count both sides. The loss is
``--criterion info_nce``. Start from a ``code_mlm`` checkpoint or an imported T5 encoder with
``--restore-file CKPT --reset-optimizer --reset-dataloader --reset-meters --reset-lr-scheduler``
(what the checkpoint lacks, a key tower or a pooler projection, is filled in: see the model).
The MLM head is kept as it is (frozen, ``model.head_parameters()``): no worker waits for gradients it
never gets.

Large batches at constant memory (``--grad-cache-chunk N``, the technique of sentence-transformers'
CachedMultipleNegativesRankingLoss, from Gao et al.'s GradCache): a setting of this task, done by
the loss (:mod:`fairseq_ext.criterions.grad_cache`) inside fairseq's own ``train_step``; loss and
gradients equal the uncached computation's, activation memory is that of N pairs.

Validation ranks every held-out query against every held-out key (the whole pool, not the batch) and
logs ``mrr``, ``recall@1`` and ``recall@10`` (use ``--best-checkpoint-metric mrr
--maximize-best-checkpoint-metric``): workers embed a share of the pool each, the criterion scores it
as its loss scores pairs (:meth:`~fairseq_ext.criterions.info_nce.InfoNCECriterion.pool_figures`).
The last figures go into the task's state, so every checkpoint written after a validation carries
them (``export-hf`` puts them in the model card).
"""

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from fairseq.tasks import register_task
from omegaconf import MISSING

from fairseq_ext.criterions.info_nce import InfoNCECriterion
from fairseq_ext.criterions.ranking import RETRIEVAL_KEYS
from fairseq_ext.data.arrow_dataset import CodeDataError, is_arrow_dataset_dir
from fairseq_ext.data.pair_dataset import PairDataset
from fairseq_ext.errors import UserError
from fairseq_ext.models.towers import PairEncoder
from fairseq_ext.tasks.base import TokenizerDataConfig, TokenizerDataTask

logger = logging.getLogger(__name__)

MAX_QUERY_TOKENS, MAX_KEY_TOKENS = 128, 256  # the side limits' defaults (eval-retrieval's too, when unrecorded)


@dataclass
class CodeContrastiveConfig(TokenizerDataConfig):
    data: str = field(default=MISSING, metadata={
        "help": "pairs directory made by `fairseq-ext code-pairs`"})
    max_query_tokens: int = field(default=MAX_QUERY_TOKENS, metadata={
        "help": "longest query side, bos/eos included (a longer one is cut: a span query keeps a window around "
        "its mask, others their start)"})
    max_key_tokens: int = field(default=MAX_KEY_TOKENS, metadata={
        "help": "longest key side, bos/eos included (cut at the end)"})
    grad_cache_chunk: int = field(default=0, metadata={  # done by --criterion info_nce (its grad_cache_chunk)
        "help": "gradient caching: embed and back-propagate the batch this many pairs at a time, with the loss "
        "and gradients of the whole batch (memory of a chunk, batches of thousands); 0: off"})
    valid_block: int = field(default=64, metadata={
        "help": "pairs embedded at a time when validation embeds the whole held-out pool"})


@register_task("code_contrastive", dataclass=CodeContrastiveConfig)
class CodeContrastiveTask(TokenizerDataTask):
    cfg: CodeContrastiveConfig

    REQUIRED_ROLES = ("eos", "pad")

    def __init__(self, cfg, dictionary):
        super().__init__(cfg, dictionary)
        self.mask = None  # the pairs directory's mask id (span queries), read in setup_task
        self.num_updates = 0  # recorded with validation figures
        self.retrieval = None  # the last validation's figures
        self._pool_pending = False  # the next valid step embeds the whole pool

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        for key in ("max_query_tokens", "max_key_tokens", "valid_block"):
            if getattr(cfg, key) < 3:
                raise UserError(f"--{key.replace('_', '-')} (task.{key}) must be at least 3, got {getattr(cfg, key)}")
        if not is_arrow_dataset_dir(cfg.data):
            raise CodeDataError(f"{cfg.data}: not a pairs directory (no dataset_dict.json; make one with "
                                "`fairseq-ext code-pairs`)")
        task = super().setup_task(cfg, **kwargs)
        task.mask = task.read_mask_id()
        return task

    def read_mask_id(self):
        path = os.path.join(self.cfg.data, "code_pairs.json")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f).get("mask_id")
        except FileNotFoundError:
            raise CodeDataError(f"{path}: missing (not a directory written by `fairseq-ext code-pairs`)") from None
        except (OSError, ValueError) as exc:
            raise CodeDataError(f"{path}: cannot be read: {exc}") from None

    def load_dataset(self, split, epoch=1, combine=False, **kwargs):
        data_path = self.data_dir(split, epoch)
        self.check_same_vocabulary(data_path)
        dataset = PairDataset(data_path, split, self.dictionary, self.cfg.max_query_tokens, self.cfg.max_key_tokens,
                              self.mask, shuffle=split == "train", seed=self.cfg.seed,
                              pad_to_multiple=self.batch_length_multiple())
        self.datasets[split] = dataset
        logger.info(f"{split}: {len(dataset)} pairs from {data_path}; {dataset.queries_cut} queries cut to "
                    f"{self.cfg.max_query_tokens} tokens, {dataset.keys_cut} keys to {self.cfg.max_key_tokens}")

    def max_positions(self):
        return max(self.cfg.max_query_tokens, self.cfg.max_key_tokens)

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if not isinstance(model, PairEncoder):
            raise UserError(f"--arch {getattr(cfg, '_name', None) or getattr(cfg, 'arch', '?')}: code_contrastive "
                            "trains an encoder with a pooled embedding: --arch t5_encoder_small, t5_encoder_base, "
                            "hf_bert_base, hf_bert_large (BERT and RoBERTa layouts), or the model of a "
                            "`fairseq-ext import-hf` directory")
        longest = max(self.cfg.max_query_tokens, self.cfg.max_key_tokens)
        if longest > model.max_positions():  # positions past a learned table's end would index out of it
            flag = "--max-key-tokens" if self.cfg.max_key_tokens == longest else "--max-query-tokens"
            raise UserError(f"{flag} {longest}: the model takes at most {model.max_positions()} positions "
                            "(--max-positions, or the imported model's)")
        for p in model.head_parameters():
            p.requires_grad_(False)
        return model

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = super().build_criterion(cfg, from_checkpoint)
        if not isinstance(criterion, InfoNCECriterion):  # the loss, gradient caching and the pool's scoring
            name = getattr(cfg, "_name", None) or getattr(cfg, "criterion", None) or type(criterion).__name__
            raise UserError(f"--criterion {name}: code_contrastive trains with --criterion info_nce (its loss "
                            "scores the pairs, caches gradients with --grad-cache-chunk and ranks the valid pool)")
        return criterion

    def optimizer_step(self, optimizer, model, update_num):
        super().optimizer_step(optimizer, model, update_num)
        self.num_updates = update_num + 1  # what this update makes it; recorded with validation figures

    # -- validation over the whole pool ---------------------------------------------------------------------

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        self._pool_pending = True

    def valid_step(self, sample, model, criterion):
        loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        if self._pool_pending and "valid" in self.datasets:
            self._pool_pending = False
            figures = self.pool_retrieval(model, self.datasets["valid"], criterion)
            logging_output.update({f"retrieval_{k}": figures[k] for k in RETRIEVAL_KEYS})
            logging_output.update({"retrieval_weight": 1, "retrieval_pool": figures["pairs"]})
        return loss, sample_size, logging_output

    def pool_retrieval(self, model, dataset: PairDataset, criterion) -> dict:
        """MRR and Recall@k of every query of ``dataset`` against every key, scored by ``criterion``
        (``info_nce``: as its loss scores pairs); each worker embeds a share of the pool."""
        queries, keys = self.embed_pool(model, dataset)
        figures = criterion.pool_figures(queries, keys)
        self.retrieval = {**figures, "pairs": len(dataset), "num_updates": self.num_updates}
        return self.retrieval

    @torch.no_grad()
    def embed_pool(self, model, dataset: PairDataset) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) float32 embeddings of every query and every key of ``dataset``, in order, on every worker
        (each embeds rows ``rank::world``)."""
        was_training = model.training
        model.eval()
        world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
        mine = np.arange(rank, len(dataset), world)
        device = next(model.parameters()).device
        q_parts, k_parts = [], []
        for start in range(0, mine.size, self.cfg.valid_block):
            batch = dataset.collater([dataset[i] for i in mine[start:start + self.cfg.valid_block]])
            q, k = model(query_tokens=batch["net_input"]["query_tokens"].to(device),
                         key_tokens=batch["net_input"]["key_tokens"].to(device))
            q_parts.append(q.float())
            k_parts.append(k.float())
        if not q_parts:  # a pool smaller than the number of workers: this one has nothing, but must take part
            dim = model.embed(torch.full((1, 2), self.dictionary.eos(), device=device)).size(-1)
            q_parts = k_parts = [torch.zeros(0, dim, device=device)]
        q_mine, k_mine = torch.cat(q_parts), torch.cat(k_parts)
        queries, keys = _gather_strided(q_mine, len(dataset), world), _gather_strided(k_mine, len(dataset), world)
        model.train(was_training)
        return queries, keys

    def state_dict(self):
        state = super().state_dict()
        if self.retrieval is not None:
            state["retrieval"] = dict(self.retrieval)
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.retrieval = state_dict.get("retrieval")


def _gather_strided(mine: torch.Tensor, total: int, world: int) -> torch.Tensor:
    """Rows ``rank::world`` of a (total, D) tensor on every worker -> the whole tensor, in order."""
    if world == 1:
        return mine
    rows = -(-total // world)
    padded = mine.new_zeros(rows, mine.size(1))
    padded[: mine.size(0)] = mine
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = mine.new_empty(total, mine.size(1))
    for r, part in enumerate(parts):
        n = len(range(r, total, world))
        out[r::world] = part[:n]
    return out
