"""fairseq checkpoint -> Hugging Face directory, refusing to write unless the outputs match.

BART checkpoints become ``BartForConditionalGeneration``; RoBERTa (``roberta_*``)
and ``hf_bert*`` encoders become ``BertForMaskedLM`` or ``RobertaForMaskedLM``:
the family they came from unless ``family`` says otherwise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fairseq_ext.convert import bart, encoder
from fairseq_ext.convert.checkpoint_io import (
    build_fairseq_model,
    checkpoint_tokenizer,
    dictionary_for_rows,
    load_checkpoint,
)
from fairseq_ext.convert.common import TOLERANCE, ConversionError
from fairseq_ext.convert.settings import CheckpointModelSettings, checkpoint_model_settings, section, task_data_dir
from fairseq_ext.io_utils import atomic_output_dir
from fairseq_ext.tokenizer import save_tokenizer

HF_CLASS = {"bart": "BartForConditionalGeneration", "bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM"}
TITLE = {"bart": "BART", "bert": "BERT", "roberta": "RoBERTa"}


@dataclass
class ExportResult:
    out_dir: str
    family: str
    max_abs_diff: float
    num_updates: int | None
    val_loss: float | None
    parameters: int


def hf_family(model_name: str, hf_model_type: str | None, family: str | None) -> str:
    """The transformers family to write: BART for BART; for encoders the flag, else where it came from
    (``hf_bert``: its ``hf_model_type``; fairseq's ``roberta``: RoBERTa)."""
    if model_name == "bart":
        if family not in (None, "bart"):
            raise ConversionError(f"a BART checkpoint exports as bart, not {family!r}")
        return "bart"
    if family is None:
        return (hf_model_type or "bert") if model_name == "hf_bert" else "roberta"
    if family not in encoder.FAMILIES:
        raise ConversionError(f"an encoder checkpoint exports as bert or roberta, not {family!r}")
    return family


def export_hf(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, tokenizer=None, family: str | None = None,
              overwrite: bool = False) -> ExportResult:
    state = load_checkpoint(checkpoint)
    args = checkpoint_model_settings(state, checkpoint)
    name = args.model
    family = hf_family(name, args.hf_model_type, family)
    tok_name, tok = checkpoint_tokenizer(state, checkpoint, tokenizer)
    weights = state["model"]
    emb_key = "encoder.embed_tokens.weight" if name == "bart" else f"{encoder.FS}embed_tokens.weight"
    if emb_key not in weights:
        raise ConversionError(f"{checkpoint}: no {emb_key} in the weights of a {name} checkpoint")
    dictionary = dictionary_for_rows(tok, weights[emb_key].shape[0], tok_name, checkpoint, state)
    fs_model = build_fairseq_model(args.args, dictionary, weights)
    if name == "bart":
        hf_model = bart.hf_bart_from_fairseq(args, dictionary, weights)
    else:
        hf_model = encoder.hf_encoder_from_fairseq(args, family, dictionary, weights)
    parity = bart.bart_parity if name == "bart" else encoder.encoder_parity
    diff = parity(fs_model, hf_model, dictionary, args.positions)
    if not diff <= TOLERANCE:
        raise ConversionError(f"{checkpoint}: fairseq and transformers outputs differ by {diff:.2e} "
                              f"(> {TOLERANCE:g}); nothing written")
    history = state.get("optimizer_history") or [{}]
    extra = state.get("extra_state") or {}
    result = ExportResult(str(out_dir), family, diff, history[-1].get("num_updates"),
                          _as_float(extra.get("val_loss")), sum(p.numel() for p in hf_model.parameters()))
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        hf_model.save_pretrained(str(tmp), safe_serialization=True)
        if family in ("bart", "roberta"):  # neither takes token_type_ids by default
            tok.model_input_names = ["input_ids", "attention_mask"]
            tok.init_kwargs["model_input_names"] = tok.model_input_names
        save_tokenizer(tok, tmp)
        (tmp / "README.md").write_text(model_card(checkpoint, state, args, tok_name, result), encoding="utf-8")
        (tmp / "fairseq_ext_export.json").write_text(json.dumps(result.__dict__, indent=2) + "\n", encoding="utf-8")
    return result


def _as_float(value):
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def model_card(checkpoint, state, args: CheckpointModelSettings, tok_name, result: ExportResult) -> str:
    data = task_data_dir(state) or "unknown"
    task = section(state, "task")
    task_name = task.get("_name") or task.get("task")
    val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f} (base 2)"
    family, cls = result.family, HF_CLASS[result.family]
    positions = args.positions
    if family == "bart":
        layers = f"{args.encoder_layers}+{args.decoder_layers} layers"
        objective = f"{task_name or 'denoising'} (BART text infilling{_task_summary(task, BART_KEYS)})"
    else:
        layers = f"{args.encoder_layers} layers"
        objective = f"{task_name or 'masked LM'} (masked language modelling{_task_summary(task, MLM_KEYS)})"
    return f"""---
library_name: transformers
pipeline_tag: fill-mask
tags: [{family}, fairseq, fairseq_ext]
---

# {TITLE[family]} ({args.arch}) pretrained with fairseq_ext

Converted from the fairseq checkpoint `{Path(checkpoint).name}` by `fairseq-ext export-hf`.

| | |
| --- | --- |
| architecture | {args.arch}: {layers}, d_model {args.encoder_embed_dim}, \
{args.encoder_attention_heads} heads, FFN {args.encoder_ffn_embed_dim}, {result.parameters:,} parameters |
| objective | {objective} |
| training data | `{data}` |{_started_from(state)}
| tokenizer | `{tok_name}` ({positions} positions) |
| updates | {result.num_updates} |
| validation loss | {val} |
| export parity | max abs logit difference {result.max_abs_diff:.2e} vs. fairseq (fp32, tolerance {TOLERANCE:g}) |

```python
from transformers import AutoTokenizer, {cls}
tok = AutoTokenizer.from_pretrained("{result.out_dir}")
model = {cls}.from_pretrained("{result.out_dir}")
```
"""


def _started_from(state) -> str:
    source = (state.get("extra_state") or {}).get("imported_from")
    return f"\n| started from | `{source}` (fairseq-ext import-hf) |" if source else ""


BART_KEYS = ("mask", "mask_length", "poisson_lambda", "permute_sentences", "mask_random", "rotate", "insert")
MLM_KEYS = ("mask_prob", "leave_unmasked_prob", "random_token_prob", "mask_unit", "short_seq_prob",
            "sample_break_mode", "tokens_per_sample")


def _task_summary(task: dict, keys) -> str:
    parts = [f"{k}={task[k]}" for k in keys if task.get(k) is not None]
    return ": " + ", ".join(parts) if parts else ""
