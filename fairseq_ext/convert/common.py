"""What every conversion shares: its error type, its tolerance, the checks before weights are copied,
the padding rows it makes, and the parity loop both models run."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import torch

from fairseq_ext.errors import UserError

TOLERANCE = 1e-4  # largest |logit difference| (fp32) accepted between fairseq and transformers


class ConversionError(UserError):
    """The checkpoint cannot be converted as asked; the message says which key or setting."""


def _shape(value) -> tuple[int, ...]:
    return tuple(int(n) for n in getattr(value, "shape", value))


def check_weights(expected: Mapping, weights: Mapping, where, model: str) -> None:
    """``weights`` hold exactly the names of ``expected`` (a model's ``state_dict()``, or names -> shapes),
    each with its shape; else one line naming the first name that differs, its shapes and ``where``
    (the checkpoint or directory), before any tensor is copied (nanoGPT's ``from_pretrained`` habit).

    >>> check_weights({"w": (2, 3)}, {"w": torch.zeros(3, 2)}, "ckpt.pt", "the model")
    Traceback (most recent call last):
    fairseq_ext.convert.common.ConversionError: ckpt.pt: weight 'w' is (3, 2), the model has it as (2, 3)
    """
    for name in sorted(set(weights) - set(expected)):
        raise ConversionError(f"{where}: unexpected weight {name!r} {_shape(weights[name])}: {model} has no such "
                              "weight")
    for name in sorted(set(expected) - set(weights)):
        raise ConversionError(f"{where}: weight {name!r} {_shape(expected[name])} of {model} is missing")
    for name in sorted(weights):
        got, want = _shape(weights[name]), _shape(expected[name])
        if got != want:
            raise ConversionError(f"{where}: weight {name!r} is {got}, {model} has it as {want}")


def load_hf_state(hf_model, state: dict, where="the converted weights"):
    """Put converted weights into a transformers model after :func:`check_weights`."""
    check_weights(hf_model.state_dict(), state, where, type(hf_model).__name__)
    hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()


def load_weights(model_cls, hf_dir, output_loading_info: bool = False):
    """``model_cls.from_pretrained(hf_dir)`` (with its loading info when asked); missing or unreadable
    weight files, and a weight whose shape is not the one ``config.json`` gives, are one-line errors."""
    from safetensors import SafetensorError

    try:
        model, info = model_cls.from_pretrained(str(hf_dir), local_files_only=True, output_loading_info=True,
                                                ignore_mismatched_sizes=True)  # reported below, in one line
    except (OSError, SafetensorError) as exc:  # no weights file / a damaged one
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ConversionError(f"{hf_dir}: cannot read the model weights: {first}") from None
    for name, got, want in sorted(info.get("mismatched_keys") or (), key=lambda m: m[0]):
        raise ConversionError(f"{hf_dir}: weight {name!r} is {_shape(got)}, {model_cls.__name__} with its "
                              f"config.json has it as {_shape(want)}")
    return (model, info) if output_loading_info else model


def check_loaded(hf_dir, model, info: Mapping, may_lack=(), may_drop: tuple[str, ...] = ()) -> list[str]:
    """What ``from_pretrained`` reported (``info``): a weight the directory lacks (but those in ``may_lack``)
    or one ``model`` has no place for (but those starting with ``may_drop``, returned sorted) is one line
    naming it and ``hf_dir``."""
    missing = sorted(set(info["missing_keys"]) - set(may_lack))
    if missing:
        raise ConversionError(f"{hf_dir}: weight {missing[0]!r} {_shape(model.state_dict()[missing[0]])} of "
                              f"{type(model).__name__} is missing")
    unexpected = sorted(info["unexpected_keys"])
    for name in unexpected:
        if not name.startswith(may_drop):  # startswith(()) is False: nothing may be dropped
            raise ConversionError(f"{hf_dir}: unexpected weight {name!r}: {type(model).__name__} has no such "
                                  "weight")
    return unexpected


def pad_rows(tensor: torch.Tensor, rows: int, std: float, seed: int = 0) -> torch.Tensor:
    """``tensor`` grown to ``rows`` rows by fairseq's vocabulary padding (rows after the last tokenizer id):
    drawn from N(0, ``std``) by a generator seeded with ``seed`` (zeros for a 1-D bias), so an import
    is reproducible. Export drops these rows again.

    >>> pad_rows(torch.ones(2, 3), 4, 0.02).shape, pad_rows(torch.ones(2), 4, 0.02).tolist()
    (torch.Size([4, 3]), [1.0, 1.0, 0.0, 0.0])
    """
    extra = rows - tensor.size(0)
    if extra <= 0:
        return tensor
    if tensor.dim() == 1:
        fresh = tensor.new_zeros(extra)
    else:
        g = torch.Generator().manual_seed(seed)
        fresh = (torch.randn(extra, *tensor.shape[1:], generator=g) * std).to(tensor.dtype)
    return torch.cat([tensor, fresh])


def tower_weights(weights: dict, tower: str, prefixes: dict[str, tuple[str, ...]],
                  tied: tuple[str, str]) -> tuple[dict, bool]:
    """One tower's weights under the query tower's names, and whether the checkpoint has separate towers.

    ``prefixes``: each tower's weight prefixes, ``{"query": (encoder, pooler), "key": (key_encoder, key_pooler)}``
    in the same order. The other tower's encoder and pooler are left out; the rest (the MLM head) is kept,
    the head's tied output projection ``tied[0]`` set to this tower's embeddings ``tied[1]`` (the model ties
    them when it loads). ``tower="key"`` of a one-tower checkpoint is the query tower: it embedded both sides.
    """
    if tower not in prefixes:
        raise ConversionError(f"tower must be query or key, got {tower!r}")
    key_prefixes = prefixes["key"]
    separate = any(k.startswith(key_prefixes) for k in weights)
    if not separate or tower == "query":
        return {k: v for k, v in weights.items() if not k.startswith(key_prefixes)}, separate
    query_prefixes = prefixes["query"]
    out = {k: v for k, v in weights.items() if not k.startswith(query_prefixes + key_prefixes)}
    for src, dst in zip(key_prefixes, query_prefixes):
        out.update({dst + k[len(src):]: v for k, v in weights.items() if k.startswith(src)})
    if tied[0] in out:
        out[tied[0]] = out[tied[1]]
    return out, separate


def task_summary(task: dict, keys) -> str:
    """``": key=value, ..."`` for the task settings ``keys`` the checkpoint has, for the model card."""
    parts = [f"{k}={task[k]}" for k in keys if task.get(k) is not None]
    return ": " + ", ".join(parts) if parts else ""


PAIR_KEYS = ("max_query_tokens", "max_key_tokens")  # a contrastive task's (code_contrastive) side limits


def objective_line(task: dict, mlm_keys) -> str:
    """The model card's objective: contrastive InfoNCE for a pairs task (its side limits recorded), else
    masked language modelling with the task's ``mlm_keys`` settings."""
    name = task.get("_name") or task.get("task")
    if all(task.get(k) is not None for k in PAIR_KEYS):
        return f"{name} (contrastive InfoNCE over query/key pairs{task_summary(task, PAIR_KEYS)})"
    return f"{name or 'masked LM'} (masked language modelling{task_summary(task, mlm_keys)})"


def parity_batches(vocab_size: int, roles, special_ids, max_len: int, seed: int = 0) -> Iterator:
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


# (src, prev) -> (fairseq's outputs, transformers' outputs, the positions compared)
Outputs = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@torch.no_grad()
def largest_difference(dictionary, max_len: int, outputs: Outputs) -> float:
    """The parity check every family runs: the largest |difference| between the two models' outputs over
    :func:`parity_batches`. ``outputs(src, prev)`` gives (fairseq's, transformers', the positions compared),
    the first two ``(B, T, ...)``, the last a ``(B, T)`` mask of the real (non-pad) positions.
    """
    worst = 0.0
    for src, prev in parity_batches(dictionary.tokenizer_size, dictionary.roles, dictionary.special_ids, max_len):
        ours, theirs, keep = outputs(src, prev)
        worst = max(worst, float((ours.float() - theirs.float()).abs()[keep].max()))
    return worst


def check_parity(diff: float, where) -> float:
    """``diff`` (a family's parity figure) when within :data:`TOLERANCE`; else export and import write nothing."""
    if not diff <= TOLERANCE:  # a NaN fails too
        raise ConversionError(f"{where}: fairseq and transformers outputs differ by {diff:.2e} (> {TOLERANCE:g}); "
                              "nothing written")
    return diff
