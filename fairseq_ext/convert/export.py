"""fairseq checkpoint -> Hugging Face directory, refusing to write unless the outputs match.

The checkpoint's fairseq model picks its family in
:data:`fairseq_ext.convert.families.FAMILIES` (BART, BERT, RoBERTa, ...): the
family it came from unless ``family`` names another one its model exports to.
The family builds the transformers model and checks parity; this module only
writes what every family writes: weights, tokenizer and model card.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from fairseq_ext.convert.checkpoint_io import (
    build_fairseq_model,
    checkpoint_tokenizer,
    dictionary_for_rows,
    load_checkpoint,
)
from fairseq_ext.convert.common import TOLERANCE, ConversionError
from fairseq_ext.convert.families import FAMILIES, export_family
from fairseq_ext.convert.settings import CheckpointModelSettings, checkpoint_model_settings, section, task_data_dir
from fairseq_ext.io_utils import atomic_output_dir
from fairseq_ext.tokenizer import save_tokenizer


@dataclass
class ExportResult:
    out_dir: str
    family: str
    max_abs_diff: float
    num_updates: int | None
    val_loss: float | None
    parameters: int


def hf_family(model_name: str, hf_model_type: str | None, family: str | None) -> str:
    """The name of the family a checkpoint of fairseq ``model_name`` exports to (see :func:`export_family`)."""
    return export_family(model_name, hf_model_type, family).name


def export_hf(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, tokenizer=None, family: str | None = None,
              overwrite: bool = False) -> ExportResult:
    state = load_checkpoint(checkpoint)
    args = checkpoint_model_settings(state, checkpoint)
    target = export_family(args.model, args.hf_model_type, family)
    tok_name, tok = checkpoint_tokenizer(state, checkpoint, tokenizer)
    weights = state["model"]
    if target.embed_key not in weights:
        raise ConversionError(f"{checkpoint}: no {target.embed_key} in the weights of a {args.model} checkpoint")
    dictionary = dictionary_for_rows(tok, weights[target.embed_key].shape[0], tok_name, checkpoint, state)
    fs_model = build_fairseq_model(args.args, dictionary, weights)
    hf_model = target.to_hf(args, dictionary, weights)
    diff = target.parity(fs_model, hf_model, dictionary, args.positions)
    if not diff <= TOLERANCE:
        raise ConversionError(f"{checkpoint}: fairseq and transformers outputs differ by {diff:.2e} "
                              f"(> {TOLERANCE:g}); nothing written")
    history = state.get("optimizer_history") or [{}]
    extra = state.get("extra_state") or {}
    result = ExportResult(str(out_dir), target.name, diff, history[-1].get("num_updates"),
                          _as_float(extra.get("val_loss")), sum(p.numel() for p in hf_model.parameters()))
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        hf_model.save_pretrained(str(tmp), safe_serialization=True)
        if target.input_names is not None:
            tok.model_input_names = list(target.input_names)
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
    val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f} (base 2)"
    family = FAMILIES[result.family]
    cls = family.hf_class
    lines = family.card(args, section(state, "task"))
    notes = f"\n{family.card_notes}\n" if family.card_notes else ""
    parity = (f"max abs {family.parity_measure} difference {result.max_abs_diff:.2e} vs. fairseq "
              f"(fp32, tolerance {TOLERANCE:g})")
    return f"""---
library_name: transformers
pipeline_tag: {family.pipeline_tag}
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
| validation loss | {val} |
| export parity | {parity} |

```python
from transformers import AutoTokenizer, {cls}
tok = AutoTokenizer.from_pretrained("{result.out_dir}")
model = {cls}.from_pretrained("{result.out_dir}")
```
"""


def _started_from(state) -> str:
    source = (state.get("extra_state") or {}).get("imported_from")
    return f"\n| started from | `{source}` (fairseq-ext import-hf) |" if source else ""
