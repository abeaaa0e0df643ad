"""What every conversion shares: its error type, its tolerance and the batches both models run on."""

from __future__ import annotations

import torch

from fairseq_ext.errors import UserError

TOLERANCE = 1e-4  # largest |logit difference| (fp32) accepted between fairseq and transformers


class ConversionError(UserError):
    """The checkpoint cannot be converted as asked; the message says which key or setting."""


def load_hf_state(hf_model, state: dict):
    """Put converted weights into a transformers model; a missing or unexpected name is an error."""
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConversionError(f"weights do not fit {type(hf_model).__name__}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    return hf_model.eval()


def load_weights(model_cls, hf_dir, **kwargs):
    """``model_cls.from_pretrained(hf_dir)``; missing or unreadable weight files are a one-line error."""
    from safetensors import SafetensorError

    try:
        return model_cls.from_pretrained(str(hf_dir), local_files_only=True, **kwargs)
    except (OSError, SafetensorError) as exc:  # no weights file / a damaged one
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ConversionError(f"{hf_dir}: cannot read the model weights: {first}") from None


def task_summary(task: dict, keys) -> str:
    """``": key=value, ..."`` for the task settings ``keys`` the checkpoint has, for the model card."""
    parts = [f"{k}={task[k]}" for k in keys if task.get(k) is not None]
    return ": " + ", ".join(parts) if parts else ""


def parity_batches(vocab_size: int, roles, special_ids, max_len: int, seed: int = 0):
    """Two padded batches of random ordinary tokens: (src, prev_output_tokens), shaped (B, T).

    Each row is ``bos body eos``, or ``body eos`` for a tokenizer without bos (T5's SentencePiece).
    """
    g = torch.Generator().manual_seed(seed)
    special = set(int(i) for i in special_ids)
    pool = torch.tensor([i for i in range(vocab_size) if i not in special])
    start = [] if roles.bos is None else [roles.bos]
    for lengths in ([max_len, max_len // 2, 3], [max_len // 3, max_len // 3 - 1]):
        src = torch.full((len(lengths), max(lengths)), roles.pad, dtype=torch.long)
        for row, n in enumerate(lengths):
            body = pool[torch.randint(len(pool), (n - 1 - len(start),), generator=g)]
            src[row, :n] = torch.cat([torch.tensor(start, dtype=torch.long), body, torch.tensor([roles.eos])])
        prev = torch.full_like(src, roles.pad)
        for row, n in enumerate(lengths):
            prev[row, 0] = roles.eos
            prev[row, 1:n] = src[row, : n - 1]
        yield src, prev
