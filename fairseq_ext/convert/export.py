"""fairseq checkpoint -> Hugging Face directory, refusing to write unless the outputs match."""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from fairseq_ext.convert.bart import ConversionError, fairseq_to_hf_state, hf_config_from_fairseq
from fairseq_ext.convert.checkpoint_io import (
    build_fairseq_bart,
    checkpoint_tokenizer,
    dictionary_for_rows,
    load_checkpoint,
    model_args,
    parity_batches,
    task_data_dir,
)
from fairseq_ext.io_utils import atomic_output_dir
from fairseq_ext.tokenizer import save_tokenizer

TOLERANCE = 1e-4


@dataclass
class ExportResult:
    out_dir: str
    family: str
    max_abs_diff: float
    num_updates: int | None
    val_loss: float | None
    parameters: int


def model_family(args) -> str:
    arch = str(getattr(args, "arch", "") or getattr(args, "_name", ""))
    if arch.startswith("bart"):
        return "bart"
    raise ConversionError(f"unknown architecture {arch!r}: export-hf converts BART checkpoints (bart_*)")


def hf_bart_from_fairseq(args, dictionary, weights):
    from transformers import BartConfig, BartForConditionalGeneration

    roles = dictionary.roles
    config = BartConfig(**hf_config_from_fairseq(args, dictionary.tokenizer_size, roles))
    hf = BartForConditionalGeneration(config)
    gen = hf.generation_config  # as the released BART checkpoints generate
    gen.bos_token_id, gen.eos_token_id, gen.pad_token_id = roles.bos, roles.eos, roles.pad
    gen.decoder_start_token_id, gen.forced_bos_token_id, gen.forced_eos_token_id = roles.eos, roles.bos, roles.eos
    hf_state = fairseq_to_hf_state(weights, args, dictionary.tokenizer_size, roles.pad)
    missing, unexpected = hf.load_state_dict(hf_state, strict=False)
    if missing or unexpected:
        raise ConversionError(f"weights do not fit BartForConditionalGeneration: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    return hf.eval()


@torch.no_grad()
def bart_parity(fs_model, hf_model, dictionary, max_positions: int) -> float:
    """Largest |logit difference| between the two models over real (non-pad) decoder positions."""
    worst = 0.0
    vocab = dictionary.tokenizer_size
    max_len = min(48, max_positions)
    for src, prev in parity_batches(vocab, dictionary.roles, dictionary.special_ids, max_len):
        lengths = src.ne(dictionary.pad()).sum(1)
        with warnings.catch_warnings():  # fairseq mixes mask dtypes; torch warns, results are exact
            warnings.filterwarnings("ignore", message=".*mismatched key_padding_mask.*")
            fs_logits = fs_model(src, lengths, prev)[0][..., :vocab]
        hf_logits = hf_model(input_ids=src, attention_mask=src.ne(dictionary.pad()).long(),
                             decoder_input_ids=prev, decoder_attention_mask=prev.ne(dictionary.pad()).long()).logits
        keep = prev.ne(dictionary.pad())
        worst = max(worst, float((fs_logits - hf_logits).abs()[keep].max()))
    return worst


def export_hf(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, tokenizer=None,
              overwrite: bool = False) -> ExportResult:
    state = load_checkpoint(checkpoint)
    args = model_args(state, checkpoint)
    family = model_family(args)
    tok_name, tok = checkpoint_tokenizer(state, checkpoint, tokenizer)
    weights = state["model"]
    dictionary = dictionary_for_rows(tok, weights["encoder.embed_tokens.weight"].shape[0], tok_name, checkpoint)
    fs_model = build_fairseq_bart(args, dictionary, weights)
    hf_model = hf_bart_from_fairseq(args, dictionary, weights)
    diff = bart_parity(fs_model, hf_model, dictionary, args.max_source_positions)
    if not diff <= TOLERANCE:
        raise ConversionError(f"{checkpoint}: fairseq and transformers outputs differ by {diff:.2e} "
                              f"(> {TOLERANCE:g}); nothing written")
    history = state.get("optimizer_history") or [{}]
    extra = state.get("extra_state") or {}
    result = ExportResult(str(out_dir), family, diff, history[-1].get("num_updates"),
                          _as_float(extra.get("val_loss")), sum(p.numel() for p in hf_model.parameters()))
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        hf_model.save_pretrained(str(tmp), safe_serialization=True)
        tok.model_input_names = ["input_ids", "attention_mask"]  # BART takes no token_type_ids
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


def model_card(checkpoint, state, args, tok_name, result: ExportResult) -> str:
    data = task_data_dir(state) or "unknown"
    cfg = state.get("cfg") or {}
    task = cfg.get("task") if isinstance(cfg, dict) else None
    task_name = getattr(task, "_name", None) if not isinstance(task, dict) else task.get("_name")
    val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f} (base 2)"
    return f"""---
library_name: transformers
pipeline_tag: fill-mask
tags: [bart, fairseq, fairseq_ext]
---

# BART ({args.arch}) pretrained with fairseq_ext

Converted from the fairseq checkpoint `{Path(checkpoint).name}` by `fairseq-ext export-hf`.

| | |
| --- | --- |
| architecture | {args.arch}: {args.encoder_layers}+{args.decoder_layers} layers, d_model {args.encoder_embed_dim}, \
{args.encoder_attention_heads} heads, FFN {args.encoder_ffn_embed_dim}, {result.parameters:,} parameters |
| objective | {task_name or "denoising"} (BART text infilling{_noise_summary(task)}) |
| training data | `{data}` |
| tokenizer | `{tok_name}` ({args.max_source_positions} positions) |
| updates | {result.num_updates} |
| validation loss | {val} |
| export parity | max abs logit difference {result.max_abs_diff:.2e} vs. fairseq (fp32, tolerance {TOLERANCE:g}) |

```python
from transformers import AutoTokenizer, BartForConditionalGeneration
tok = AutoTokenizer.from_pretrained("{result.out_dir}")
model = BartForConditionalGeneration.from_pretrained("{result.out_dir}")
```
"""


def _noise_summary(task) -> str:
    if task is None:
        return ""
    get = (lambda k: task.get(k)) if isinstance(task, dict) else (lambda k: getattr(task, k, None))
    keys = ("mask", "mask_length", "poisson_lambda", "permute_sentences", "mask_random", "rotate", "insert")
    parts = [f"{k}={get(k)}" for k in keys if get(k) is not None]
    return ": " + ", ".join(parts) if parts else ""
