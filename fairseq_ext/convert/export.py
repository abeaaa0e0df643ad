"""fairseq checkpoint -> Hugging Face directory, refusing to write unless the outputs match.

The checkpoint's fairseq model picks its family in
:data:`fairseq_ext.convert.registry.FAMILIES` (BART, BERT, RoBERTa, ...): the
family it came from unless ``family`` names another one its model exports to.
The family builds the transformers model and checks parity; this module only
writes what every family writes: weights, tokenizer and model card.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fairseq_ext.convert import sentence_transformers as st
from fairseq_ext.convert.checkpoint_io import (
    build_fairseq_model,
    checkpoint_tokenizer,
    dictionary_for_rows,
    load_checkpoint,
)
from fairseq_ext.convert.common import TOLERANCE, ConversionError, check_parity
from fairseq_ext.convert.embedding_card import embedding_section
from fairseq_ext.convert.registry import FAMILIES, checkpoint_model_settings, export_family
from fairseq_ext.convert.settings import CheckpointModelSettings, section, task_data_dir
from fairseq_ext.io_utils import atomic_output_dir
from fairseq_ext.vocab.tokenizer import save_tokenizer


@dataclass
class ExportResult:
    out_dir: str
    family: str
    max_abs_diff: float
    num_updates: int | None
    val_loss: float | None  # the checkpoint's last validation figure of val_metric (fairseq's "val_loss")
    val_metric: str  # --best-checkpoint-metric: "loss" (base 2), or e.g. "mrr" for a contrastive run
    parameters: int
    format: str = "transformers"
    embedding: st.EmbeddingInfo | None = None  # the pooled embedding of a family that has one
    hf_class: str = ""  # the transformers class written (the family's, or its bare encoder for sentence-transformers)
    card_note: str = ""  # what the sentence-transformers format's encoder says about itself


def hf_family(model_name: str, hf_model_type: str | None, family: str | None) -> str:
    """The name of the family a checkpoint of fairseq ``model_name`` exports to (see :func:`export_family`)."""
    return export_family(model_name, hf_model_type, family).name


FORMATS = ("transformers", "sentence-transformers")


def export_hf(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, tokenizer=None, family: str | None = None,
              overwrite: bool = False, tower: str | None = None, fmt: str = "transformers") -> ExportResult:
    """Convert ``checkpoint`` and write ``out_dir``; ``tower`` (query|key) and ``fmt`` for families with towers."""
    if fmt not in FORMATS:
        raise ConversionError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    state = load_checkpoint(checkpoint)
    args = checkpoint_model_settings(state, checkpoint)
    target = export_family(args.model, args.hf_model_type, family)
    _check_embedding_options(target, args, checkpoint, tower, fmt)
    tok_name, tok = checkpoint_tokenizer(state, checkpoint, tokenizer)
    weights = state["model"]
    if target.embed_key not in weights:
        raise ConversionError(f"{checkpoint}: no {target.embed_key} in the weights of a {args.model} checkpoint")
    dictionary = dictionary_for_rows(tok, weights[target.embed_key].shape[0], tok_name, checkpoint, state)
    fs_model = build_fairseq_model(args.args, dictionary, weights, checkpoint)
    one_args, one_weights, one_model, separate = args, weights, fs_model, False
    if target.towers is not None:  # the tower alone, as a one-tower model: the same conversion and parity check
        one_args, one_weights, separate = target.towers(args, weights, tower or "query")
        one_model = build_fairseq_model(one_args.args, dictionary, one_weights, checkpoint)
    hf_model = target.to_hf(one_args, dictionary, one_weights, checkpoint)
    diff = check_parity(target.parity(one_model, hf_model, dictionary, args.positions), checkpoint)
    pooled = None if target.pooled is None else target.pooled(one_args, one_weights)
    if pooled is not None and fmt == FORMATS[0] and tower is None and not st.is_contrastive(state):
        pooled = None  # an MLM checkpoint's pooler was never trained: the export is the encoder alone
    info = None if pooled is None else st.embedding_info(state, args.positions, pooled, tower or "query", separate,
                                                         tok, dictionary)
    note = ""
    if fmt == FORMATS[1] and target.sentence_encoder is not None:  # checked below by the embeddings it gives
        hf_model, note = target.sentence_encoder(hf_model, one_weights)
    result = ExportResult(str(out_dir), target.name, diff, *_training_figures(state),
                          sum(p.numel() for p in hf_model.parameters()), fmt, info, type(hf_model).__name__, note)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        hf_model.save_pretrained(str(tmp), safe_serialization=True)
        _write_tokenizer(tok, tmp, target, info, dictionary)
        if fmt == FORMATS[1]:
            texts = st.sample_texts(state, tower or "query", separate)
            st.write_sentence_transformers(tmp, fs_model, tok, dictionary, pooled, info, texts, checkpoint)
        elif pooled is not None and pooled.dense is not None:
            from safetensors.torch import save_file

            save_file({"dense.weight": pooled.dense.detach().contiguous()}, str(tmp / "pooler.safetensors"))
        (tmp / "README.md").write_text(model_card(checkpoint, state, args, tok_name, result), encoding="utf-8")
        (tmp / "fairseq_ext_export.json").write_text(json.dumps(export_record(result, state), indent=2) + "\n",
                                                     encoding="utf-8")
    return result


def _write_tokenizer(tok, out: Path, target, info: st.EmbeddingInfo | None, dictionary) -> None:
    """The tokenizer with the inputs the family's model takes; for an embedding, giving fairseq's special tokens
    (added when the tokenizer lacks them), checked as written."""
    if target.input_names is not None:
        tok.model_input_names = list(target.input_names)
        tok.init_kwargs["model_input_names"] = tok.model_input_names
    if info is not None:
        info.tokens_fixed = st.add_fairseq_specials(tok, dictionary)
    save_tokenizer(tok, out)
    if info is not None:
        st.recheck_tokenizer(out, info, dictionary)


def _training_figures(state: dict) -> tuple[int | None, float | None, str]:
    """(updates, last validation figure, its metric) a checkpoint records: fairseq saves the value of
    --best-checkpoint-metric as "val_loss" (a contrastive run: mrr)."""
    history = state.get("optimizer_history") or [{}]
    metric = str(section(state, "checkpoint").get("best_checkpoint_metric") or "loss")
    return history[-1].get("num_updates"), _as_float((state.get("extra_state") or {}).get("val_loss")), metric


def export_record(result: ExportResult, state: dict) -> dict:
    """``fairseq_ext_export.json``: what was exported, and for an embedding the pair limits it trained with."""
    record = {k: v for k, v in result.__dict__.items() if k != "embedding"}
    if result.embedding is not None:
        record["embedding"] = {k: v for k, v in result.embedding.__dict__.items() if k != "token_example"}
        task_cfg = section(state, "task")
        limits = {k: task_cfg[k] for k in ("max_query_tokens", "max_key_tokens") if task_cfg.get(k)}
        if limits:  # what eval-retrieval gives this directory's model, as training did
            record["embedding"]["pair_limits"] = limits
    return record


def _check_embedding_options(target, args, checkpoint, tower: str | None, fmt: str) -> None:
    """--tower and --format sentence-transformers need a model with towers and a pooled embedding."""
    pooled = target.pooled is not None and target.pooled(args, {}) is not None
    if tower is not None and (target.towers is None or not pooled):
        raise ConversionError(f"{checkpoint}: --tower {tower}: a {args.model} checkpoint has no query/key towers "
                              "(contrastive t5_encoder and hf_bert checkpoints have)")
    if fmt != FORMATS[0] and not pooled:
        raise ConversionError(f"{checkpoint}: --format {fmt}: a {args.model} checkpoint has no pooled embedding "
                              "(t5_encoder and hf_bert checkpoints export one)")


def _as_float(value):
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def model_card(checkpoint, state, args: CheckpointModelSettings, tok_name, result: ExportResult) -> str:
    data = task_data_dir(state) or "unknown"
    val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f}" + (
        " (base 2)" if result.val_metric == "loss" else "")
    family = FAMILIES[result.family]
    cls = result.hf_class or family.hf_class
    lines = family.card(args, section(state, "task"))
    notes = "".join(f"\n{n}\n" for n in (family.card_notes, result.card_note) if n)
    parity = (f"max abs {family.parity_measure} difference {result.max_abs_diff:.2e} vs. fairseq "
              f"(fp32, tolerance {TOLERANCE:g})")
    return f"""---
library_name: {"sentence-transformers" if result.format == FORMATS[1] else "transformers"}
pipeline_tag: {"sentence-similarity" if result.format == FORMATS[1] else family.pipeline_tag}
tags: [{family.name}, fairseq, fairseq_ext]
---

# {family.title} ({args.arch}) pretrained with fairseq_ext

Converted from the fairseq checkpoint `{Path(checkpoint).name}` by `fairseq-ext export-hf`.
{notes}
| | |
| --- | --- |
| architecture | {args.arch}: {lines.architecture}, {result.parameters:,} parameters |
| objective | {lines.objective} |
| training data | `{data}` |{_started_from(state)}
| tokenizer | `{tok_name}` ({args.positions} positions) |
| updates | {result.num_updates} |
| validation {result.val_metric} | {val} |
| export parity | {parity} |

```python
from transformers import AutoTokenizer, {cls}
tok = AutoTokenizer.from_pretrained("{result.out_dir}")
model = {cls}.from_pretrained("{result.out_dir}")
```
{_embedding(result)}"""


def _embedding(result: ExportResult) -> str:
    if result.embedding is None:
        return ""
    return embedding_section(result.embedding, result.out_dir, result.format == FORMATS[1], result.hf_class)


def _started_from(state) -> str:
    """The directory import-hf made the run's first checkpoint from: the import's own record, or what the
    task carried on from the checkpoint it started from (--restore-file / --finetune-from-model)."""
    source = (state.get("extra_state") or {}).get("imported_from") or (state.get("task_state") or {}).get(
        "started_from")
    return f"\n| started from | `{source}` (fairseq-ext import-hf) |" if source else ""
