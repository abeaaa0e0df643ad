"""A contrastive checkpoint's pooled embedding as a sentence-transformers directory, checked before it is written.

``export-hf --format sentence-transformers`` writes what ``SentenceTransformer(DIR)`` loads offline:
the ``T5EncoderModel`` and its tokenizer at the root (``Transformer``, as sentence-transformers saves
one), then ``Pooling`` (fairseq's ``mean`` over non-pad tokens is ST's ``mean``; ``first`` is ST's
``cls``, the first position whose attention mask is 1: position 0 of a right-padded batch), ``Dense``
(the pooler's projection: no bias, identity activation) when the checkpoint has one, and ``Normalize``
when the pooler L2-normalises; the model's ``similarity_fn_name`` is the criterion's similarity (cosine
unless trained with ``--similarity dot``). The embedding is what the model computes, so a directory
imported by ``import-hf`` exports back with the modules it had.

Before the directory is published, it is loaded back and must embed the same padded batches of real
token ids as fairseq's ``model.embed(tokens, tower)`` (normalised as the criterion scored them), and
``encode(texts)`` must equal fairseq's embeddings of those texts' tokens, both within 1e-4; the texts
are held-out pairs of the checkpoint's pairs directory when it can be read.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fairseq_ext.convert.common import TOLERANCE, ConversionError
from fairseq_ext.convert.family import PooledEmbedding
from fairseq_ext.convert.settings import section, task_data_dir
from fairseq_ext.criterions.info_nce import MAX_LOGIT_SCALE  # the cap on 1 / temperature: never below 0.01

ST_POOLING = {"mean": "mean", "first": "cls", "max": "max"}  # fairseq --pooling -> sentence-transformers' mode
# texts to check with when the checkpoint's pairs directory is gone: a query and code of different lengths
FALLBACK_TEXTS = (
    "Return the sum of two numbers.",
    "def add(a, b):\n    \"\"\"Add.\"\"\"\n    return a + b\n",
    "Read a configuration file and return its sections as a dictionary of dictionaries.",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n"
    "        self.items.append(item)\n",
)


@dataclass
class EmbeddingInfo:
    """What the model card says about a contrastive checkpoint's embedding (and what the export wrote)."""

    tower: str  # "query" or "key"
    separate: bool  # the checkpoint has separate query/key towers
    pooling: str  # "mean" or "first"
    dense: tuple[int, int] | None  # (in, out) of the projection, None: no projection
    normalize: bool  # the exported embedding is L2-normalised
    normalize_why: str  # why: the pooler normalises; "" when not
    contrastive: bool  # trained with the info_nce criterion
    similarity: str | None  # the criterion's similarity: "cosine" or "dot"; None when not recorded
    temperature: float | None
    temperature_learned: bool
    retrieval: dict | None  # the last validation's retrieval figures (task_state["retrieval"])
    max_seq_length: int
    max_seq_from: str  # where max_seq_length comes from, for the card
    tokens_agree: bool  # the tokenizer's own special tokens give the inputs fairseq was trained on
    token_example: str  # one text's ids both ways, for the card when they differ
    tokens_fixed: bool = False  # the export gave the tokenizer a post-processor adding fairseq's bos/eos
    st_max_abs_diff: float | None = None  # the sentence-transformers check, when that format was written
    texts_checked: int = 0

    @property
    def cosine(self) -> bool:
        """Scored by cosine similarity (the export's similarity_fn_name): unless trained with --similarity dot."""
        return self.normalize or self.similarity != "dot"


def is_contrastive(state: dict) -> bool:
    """Whether the checkpoint was trained with the info_nce criterion (its pooled embedding is the model)."""
    crit = section(state, "criterion")
    return "info_nce" in (crit.get("_name"), crit.get("criterion"))


def trained_temperature(crit: dict, weights: dict | None) -> float | None:
    """The temperature an ``info_nce`` criterion trained with: its learned ``logit_scale`` (log(1 / T), capped
    as the criterion caps it at MAX_LOGIT_SCALE) with --learn-temperature, else --temperature."""
    scale = (weights or {}).get("logit_scale")
    if crit.get("learn_temperature") and scale is not None:
        return max(math.exp(-float(torch.as_tensor(scale).reshape(-1)[0])), 1 / MAX_LOGIT_SCALE)
    return float(crit["temperature"]) if crit.get("temperature") is not None else None


def embedding_info(state: dict, positions: int, pooled: PooledEmbedding, tower: str, separate: bool,
                   tok, dictionary) -> EmbeddingInfo:
    """The embedding's settings from the checkpoint: pooler, criterion (similarity, temperature), task, validation."""
    crit = section(state, "criterion")
    task = section(state, "task")
    contrastive = is_contrastive(state)
    similarity = str(crit["similarity"]) if contrastive and crit.get("similarity") is not None else None
    learned = bool(crit.get("learn_temperature")) if contrastive else False
    temperature = trained_temperature(crit, state.get("criterion")) if contrastive else None
    # the embedding is what the model computes: normalised when its pooler normalises; a criterion's cosine is
    # how it is scored (the export's similarity_fn_name), so an import exports back with the modules it had
    why = "the pooler normalises (--pooler-normalize)" if pooled.normalize else ""
    dense = None if pooled.dense is None else (int(pooled.dense.shape[1]), int(pooled.dense.shape[0]))
    length, source = _max_seq_length(task, positions, tower, separate)
    agree, example = tokens_agree(tok, dictionary)
    retrieval = (state.get("task_state") or {}).get("retrieval")
    return EmbeddingInfo(tower, separate, pooled.pooling, dense, bool(why), why, contrastive, similarity,
                         temperature, learned, dict(retrieval) if isinstance(retrieval, dict) else None,
                         length, source, agree, example)


def _max_seq_length(task: dict, positions: int, tower: str, separate: bool) -> tuple[int, str]:
    """The tower's side limit (separate towers), else the longer of the two sides (one tower embeds both)."""
    sides = {s: task.get(f"max_{s}_tokens") for s in ("query", "key")}
    if separate and sides[tower]:
        length, source = int(sides[tower]), f"the task's max_{tower}_tokens"
    elif all(sides.values()):
        side = max(sides, key=lambda s: sides[s])
        length, source = int(sides[side]), f"the task's max_{side}_tokens (the longer side: one tower embeds both)"
    else:
        length, source = positions, "the model's max_positions (the checkpoint records no pair limits)"
    if length > positions:
        length, source = positions, "the model's max_positions"
    return length, source


def fairseq_input(ids, limit: int, dictionary) -> torch.Tensor:
    """A side's model input as fairseq trains on it ([bos] ids [eos], cut to ``limit``); see
    :mod:`fairseq_ext.data.pair_dataset`."""
    from fairseq_ext.data.pair_dataset import side_tokens

    return side_tokens(np.asarray(ids, dtype=np.int64), limit, dictionary.bos_index, dictionary.eos())


def tokens_agree(tok, dictionary, text: str = FALLBACK_TEXTS[0]) -> tuple[bool, str]:
    """Whether ``tok(text)`` (its own special tokens) gives the ids fairseq embeds, and the two id lists."""
    own = list(tok(text)["input_ids"])
    plain = tok(text, add_special_tokens=False)["input_ids"]
    fairseq = fairseq_input(plain, len(plain) + 2, dictionary).tolist()
    return own == fairseq, f"{text!r}: tokenizer {own}, fairseq {fairseq}"


def add_fairseq_specials(tok, dictionary) -> bool:
    """Make ``tok(text)`` add what fairseq adds to a side ([bos] ids [eos]); True when the tokenizer was changed.

    A tokenizer converted from SentencePiece adds no eos of its own, while contrastive training always
    embedded ``ids + [eos]``: the exported tokenizer gets a post-processor that adds them, so that
    ``encode()`` and the card's transformers code see the training inputs.
    """
    if tokens_agree(tok, dictionary)[0] or not hasattr(tok, "backend_tokenizer"):
        return False
    from tokenizers.processors import TemplateProcessing

    ends = [(dictionary[i], i) for i in (dictionary.bos_index, dictionary.eos()) if i is not None]
    bos = f"{dictionary[dictionary.bos_index]} " if dictionary.bos_index is not None else ""
    eos = dictionary[dictionary.eos()]
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single=f"{bos}$A {eos}", pair=f"{bos}$A {eos} $B:1 {eos}:1", special_tokens=ends)
    return True


def recheck_tokenizer(out: Path, info: EmbeddingInfo, dictionary) -> None:
    """Whether the tokenizer as written to ``out`` (loaded back) gives fairseq's inputs: what the card states."""
    from transformers import AutoTokenizer

    info.tokens_agree, info.token_example = tokens_agree(
        AutoTokenizer.from_pretrained(str(out), local_files_only=True), dictionary)


def sample_texts(state: dict, tower: str, separate: bool, n: int = 8) -> list[str]:
    """Held-out texts of the side(s) the tower embeds, from the checkpoint's pairs directory; else built-in ones."""
    data = task_data_dir(state)
    if data and (Path(data) / "code_pairs.json").is_file():
        import datasets

        try:
            pairs = datasets.load_from_disk(data)
        except (OSError, ValueError, FileNotFoundError):
            pairs = None
        if pairs is not None:
            split = pairs["valid"] if "valid" in pairs else pairs[next(iter(pairs))]
            sides = [tower] if separate else ["query", "key"]
            take = min(len(split), max(1, n // len(sides)))
            texts = [t for s in sides for t in split.select(range(take))[s] if t.strip()]
            if texts:
                return texts
    return list(FALLBACK_TEXTS)


@torch.no_grad()
def reference_embeddings(fs_model, tokens: torch.Tensor, tower: str, normalize: bool) -> torch.Tensor:
    """fairseq's embedding of a padded batch (B, T) by ``tower``, L2-normalised when the export normalises."""
    emb = fs_model.embed(tokens, tower=tower).float()  # (B, D)
    return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb


def module_classes():
    """sentence-transformers' Transformer, Pooling, Dense and Normalize classes (>= 6:
    ``sentence_transformer.modules``; before, the same classes were in ``sentence_transformers.models``)."""
    try:
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer
    return Transformer, Pooling, Dense, Normalize


def save_sentence_transformers(out: Path, pooled: PooledEmbedding, info: EmbeddingInfo) -> None:
    """Turn ``out`` (holding a transformers model and its tokenizer) into a sentence-transformers directory."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoConfig

    Transformer, Pooling, Dense, Normalize = module_classes()

    hidden = AutoConfig.from_pretrained(str(out), local_files_only=True).hidden_size  # T5: d_model
    transformer = Transformer(str(out), max_seq_length=info.max_seq_length)  # a local directory: no hub access
    modules = [transformer, Pooling(hidden, pooling_mode=ST_POOLING[pooled.pooling])]
    if pooled.dense is not None:
        weight = pooled.dense.detach().float().clone()  # (D, C)
        modules.append(Dense(weight.shape[1], weight.shape[0], bias=False, activation_function=torch.nn.Identity(),
                             init_weight=weight))
    if info.normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu", similarity_fn_name="cosine" if info.cosine else "dot")
    model.save(str(out), create_model_card=False)


@torch.no_grad()
def compare_embeddings(st, fs_model, tok, dictionary, tower: str, normalize: bool, limit: int,
                       texts: list[str]) -> tuple[float, bool, str]:
    """Largest |embedding difference| between the SentenceTransformer ``st`` and fairseq's ``tower`` on ``texts``,
    whether the tokenizer's own special tokens give fairseq's inputs, and one text's ids both ways.

    Both on the same padded batch of token ids (fairseq's inputs, cut to ``limit``), and, when the tokenizer's
    own special tokens give those inputs, ``encode(texts)`` against the same fairseq embeddings.
    """
    st.eval()
    agree, example = tokens_agree(st.tokenizer, dictionary)
    pad = dictionary.pad()
    rows = [fairseq_input(tok(t, add_special_tokens=False, verbose=False)["input_ids"], limit, dictionary)
            for t in texts]  # (cut here: no warning that a text is longer than the model takes)
    tokens = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad)  # (B, T)
    expected = reference_embeddings(fs_model, tokens, tower, normalize)  # (B, D)
    features = {"input_ids": tokens, "attention_mask": tokens.ne(pad).long()}
    got = st(features)["sentence_embedding"].float()
    worst = float((got - expected).abs().max())
    if agree:
        encoded = torch.as_tensor(st.encode(texts, batch_size=len(texts), show_progress_bar=False))
        worst = max(worst, float((encoded.float() - expected).abs().max()))
    return worst, agree, example


def check_sentence_transformers(out: Path, fs_model, tok, dictionary, info: EmbeddingInfo, texts: list[str]) -> float:
    """Largest |embedding difference| between ``SentenceTransformer(out)`` and fairseq on ``texts``
    (:func:`compare_embeddings`); the card's token agreement is set from the directory's tokenizer."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    worst, info.tokens_agree, info.token_example = compare_embeddings(
        st, fs_model, tok, dictionary, info.tower, info.normalize, info.max_seq_length, texts)
    return worst


def write_sentence_transformers(out: Path, fs_model, tok, dictionary, pooled: PooledEmbedding, info: EmbeddingInfo,
                                texts: list[str], where: str | os.PathLike) -> None:
    """Save, load back and compare (see the module's docstring); a difference over 1e-4 is a ConversionError."""
    save_sentence_transformers(out, pooled, info)
    diff = check_sentence_transformers(out, fs_model, tok, dictionary, info, texts)
    info.st_max_abs_diff, info.texts_checked = diff, len(texts)
    if not diff <= TOLERANCE:
        raise ConversionError(f"{where}: sentence-transformers and fairseq embeddings differ by {diff:.2e} "
                              f"(> {TOLERANCE:g}); nothing written")
