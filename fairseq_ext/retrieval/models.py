"""The embedding models ``eval-retrieval`` measures, behind one interface.

* a fairseq checkpoint (``.pt``) of any contrastive model (``t5_encoder``, ``hf_bert``: the pair
  interface of :mod:`fairseq_ext.models.towers`) for ``--task code_contrastive``, trained or imported by
  ``import-hf``: queries are embedded by the query tower, keys by the key tower (the same one unless
  ``--separate-towers``), compared as its ``info_nce`` criterion compared them (``similarity`` cosine or dot);
* a sentence-transformers directory (written by ``fairseq-ext export-hf --format sentence-transformers``,
  or any other): one tower embeds both sides through ``SentenceTransformer.forward``, compared by its
  ``similarity_fn_name``; sides are cut as the export recorded, else to the directory's ``max_seq_length``
  (where ``encode()`` cuts them).

Both are given the same token ids (:func:`fairseq_ext.data.pair_dataset.side_tokens` over the pairs
directory's tokenizer), so a checkpoint and its export score the same pool the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from fairseq_ext.errors import UserError

CONTRASTIVE_TASK = "code_contrastive"


@dataclass
class EmbeddingModel:
    """Something that turns padded token ids (B, T) into embeddings (B, D), one tower per side."""

    name: str
    kind: str  # "fairseq checkpoint" or "sentence-transformers"
    module: torch.nn.Module
    similarity: str  # cosine or dot
    dictionary: object  # TokenizerDictionary of the pairs directory's tokenizer
    max_query_tokens: int
    max_key_tokens: int
    separate_towers: bool = False
    limits_from: str = "the checkpoint's task settings"
    recorded: dict | None = None  # the checkpoint's last validation figures (task_state["retrieval"])

    def embed(self, tokens: torch.Tensor, tower: str) -> torch.Tensor:
        """(B, T) right-padded ids -> (B, D) float32 embeddings, L2-normalised for cosine."""
        if self.kind == "sentence-transformers":
            mask = tokens.ne(self.dictionary.pad()).long()
            out = self.module.forward({"input_ids": tokens, "attention_mask": mask})["sentence_embedding"]
        else:
            out = self.module.embed(tokens, tower=tower)
        out = out.float()
        return torch.nn.functional.normalize(out, dim=-1) if self.similarity == "cosine" else out


def load_embedding_model(path: str | os.PathLike, tokenizer_path: Path, device: str,
                         max_query_tokens: int | None = None, max_key_tokens: int | None = None) -> EmbeddingModel:
    """MODEL (a checkpoint file or a sentence-transformers directory) in eval mode on ``device``.

    ``tokenizer_path``: the pairs directory's tokenizer, which must be the one the model was made with.
    """
    from fairseq_ext.vocab.tokenizer import load_tokenizer

    path = Path(path)
    tok = load_tokenizer(tokenizer_path)
    if path.is_dir() and (path / "modules.json").is_file():
        model = _sentence_transformer(path, tok, tokenizer_path, device)
    elif path.is_dir() and (path / "config.json").is_file():
        raise UserError(f"{path}: a transformers model without modules.json; eval-retrieval reads a fairseq "
                        "checkpoint or a sentence-transformers directory (`fairseq-ext import-hf DIR -o OUT --pooling "
                        "first|mean|max` makes a checkpoint of a bare encoder)")
    else:
        model = _fairseq_checkpoint(path, tok, tokenizer_path, device)
    if max_query_tokens is not None:
        model.max_query_tokens = max_query_tokens
    if max_key_tokens is not None:
        model.max_key_tokens = max_key_tokens
    if max_query_tokens is not None or max_key_tokens is not None:
        model.limits_from = "--max-query-tokens/--max-key-tokens"
    model.module.to(device).eval()
    return model


def _fairseq_checkpoint(path: Path, tok, tokenizer_path: Path, device: str) -> EmbeddingModel:
    from fairseq_ext.convert.checkpoint_io import build_fairseq_model, dictionary_for_rows, load_checkpoint
    from fairseq_ext.convert.registry import checkpoint_model_settings, export_family
    from fairseq_ext.convert.settings import section
    from fairseq_ext.tasks.code_contrastive import MAX_KEY_TOKENS, MAX_QUERY_TOKENS

    state = load_checkpoint(path)  # safe loading: weights_only with fairseq's types allowed
    task = section(state, "task")
    task_name = str(task.get("_name") or task.get("task") or "")
    settings = checkpoint_model_settings(state, path)
    if task_name != CONTRASTIVE_TASK:
        raise UserError(f"{path}: not a checkpoint for --task {CONTRASTIVE_TASK} (its model is "
                        f"{settings.model or '?'}, its task {task_name or '?'}); import-hf makes one of an encoder "
                        "with a sentence-transformers directory or --pooling")
    weights = state["model"]
    embed_key = export_family(settings.model, settings.hf_model_type, None).embed_key
    if embed_key not in weights:
        raise UserError(f"{path}: no {embed_key} in the weights of a {settings.model} checkpoint")
    dictionary = dictionary_for_rows(tok, weights[embed_key].shape[0], tokenizer_path, path, state)
    module = build_fairseq_model(settings.args, dictionary, weights, path)
    if not hasattr(module, "embed"):
        raise UserError(f"{path}: its {settings.model} model has no pooled embedding (model.embed)")
    similarity = str(section(state, "criterion").get("similarity") or "cosine")
    return EmbeddingModel(
        name=str(path), kind="fairseq checkpoint", module=module, similarity=similarity, dictionary=dictionary,
        max_query_tokens=int(task.get("max_query_tokens") or MAX_QUERY_TOKENS),
        max_key_tokens=int(task.get("max_key_tokens") or MAX_KEY_TOKENS),
        separate_towers=bool(getattr(module, "separate_towers", False)),
        recorded=(state.get("task_state") or {}).get("retrieval"),
    )


def _sentence_transformer(path: Path, tok, tokenizer_path: Path, device: str) -> EmbeddingModel:
    from fairseq_ext.tasks.code_contrastive import MAX_KEY_TOKENS, MAX_QUERY_TOKENS
    from fairseq_ext.vocab.dictionary import TokenizerDictionary
    from fairseq_ext.vocab.identity import check_same_tokenizer
    from fairseq_ext.vocab.tokenizer import load_tokenizer

    dictionary = TokenizerDictionary.from_tokenizer(tok)
    own = TokenizerDictionary.from_tokenizer(load_tokenizer(path)).identity()
    check_same_tokenizer(own, dictionary.identity(), path, tokenizer_path, holder="model directory")
    try:
        from sentence_transformers import SentenceTransformer

        module = SentenceTransformer(str(path), device=device, local_files_only=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{path}: cannot be loaded by sentence_transformers.SentenceTransformer: {first}") from None
    name = str(getattr(module, "similarity_fn_name", None) or "cosine")
    similarity = "dot" if name in ("dot", "dot_product") else "cosine"
    limits = _export_pair_limits(path)
    if limits:
        return EmbeddingModel(name=str(path), kind="sentence-transformers", module=module, similarity=similarity,
                              dictionary=dictionary, max_query_tokens=limits["max_query_tokens"],
                              max_key_tokens=limits["max_key_tokens"],
                              limits_from="the training settings export-hf recorded (fairseq_ext_export.json)")
    own = getattr(module, "max_seq_length", None)
    if own and int(own) <= 1 << 16:  # where encode() cuts every text (a tokenizer without a limit says 1e30)
        return EmbeddingModel(name=str(path), kind="sentence-transformers", module=module, similarity=similarity,
                              dictionary=dictionary, max_query_tokens=int(own), max_key_tokens=int(own),
                              limits_from="the directory's max_seq_length, where encode() cuts texts")
    return EmbeddingModel(name=str(path), kind="sentence-transformers", module=module, similarity=similarity,
                          dictionary=dictionary, max_query_tokens=MAX_QUERY_TOKENS, max_key_tokens=MAX_KEY_TOKENS,
                          limits_from="code_contrastive's defaults: give the model's training values with "
                          "--max-query-tokens/--max-key-tokens")


def _export_pair_limits(path: Path) -> dict | None:
    """max_query_tokens/max_key_tokens of the checkpoint an `export-hf` directory was made from, if recorded."""
    import json

    try:
        record = json.loads((Path(path) / "fairseq_ext_export.json").read_text(encoding="utf-8"))
        limits = record["embedding"]["pair_limits"]
        return {k: int(limits[k]) for k in ("max_query_tokens", "max_key_tokens")}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not an export of ours, or of a version that did not record them
