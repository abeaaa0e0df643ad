"""Train byte-level BPE, WordPiece or Unigram tokenizers with the special-token
layouts the pretrained seeds use, and save them for ``AutoTokenizer``.

| kind      | specials (ids from 0)                     | post-processing      |
|-----------|-------------------------------------------|----------------------|
| bpe       | ``<s> <pad> </s> <unk> <mask>`` (RoBERTa/BART) | ``<s> X </s>``   |
| wordpiece | ``[PAD] [UNK] [CLS] [SEP] [MASK]`` (BERT)  | ``[CLS] X [SEP]``    |
| unigram   | ``<pad> </s> <unk> <mask>`` (T5, no bos)   | ``X </s>``           |
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fairseq_ext.errors import UserError


@dataclass(frozen=True)
class Layout:
    specials: tuple[str, ...]
    roles: dict  # transformers attribute -> token
    default_vocab: int


LAYOUTS = {
    "bpe": Layout(
        ("<s>", "<pad>", "</s>", "<unk>", "<mask>"),
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
         "mask_token": "<mask>", "cls_token": "<s>", "sep_token": "</s>"},
        50265,
    ),
    "wordpiece": Layout(
        ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
        {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]",
         "mask_token": "[MASK]"},
        30522,
    ),
    "unigram": Layout(
        ("<pad>", "</s>", "<unk>", "<mask>"),
        {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"},
        32000,
    ),
}


def build_untrained(kind: str, lowercase: bool = False):
    """A ``tokenizers.Tokenizer`` and its trainer factory for ``kind``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))
        tok.normalizer = normalizers.Lowercase() if lowercase else None
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        tok.normalizer = normalizers.Sequence(steps)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    else:
        raise UserError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(LAYOUTS)}")
    return tok


def _trainer(kind: str, vocab_size: int, min_frequency: int, show_progress: bool):
    from tokenizers import pre_tokenizers, trainers

    specials = list(LAYOUTS[kind].specials)
    if kind == "bpe":
        return trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress,
        )
    if kind == "wordpiece":
        return trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
            continuing_subword_prefix="##", show_progress=show_progress,
        )
    return trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>", show_progress=show_progress,
    )


def _post_processor(kind: str, tok):
    from tokenizers import processors

    def tid(t: str) -> int:
        return tok.token_to_id(t)

    if kind == "bpe":
        return processors.RobertaProcessing(("</s>", tid("</s>")), ("<s>", tid("<s>")),
                                            trim_offsets=True, add_prefix_space=False)
    if kind == "wordpiece":
        return processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", tid("[CLS]")), ("[SEP]", tid("[SEP]"))],
        )
    return processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B:1 </s>:1", special_tokens=[("</s>", tid("</s>"))],
    )


def iter_text_lines(paths: Sequence) -> Iterator[str]:
    """Non-blank lines of the files, indentation kept (code's leading spaces are learned); invalid UTF-8 replaced.

    A table (:class:`fairseq_ext.prep.tables.TableText`) gives the lines of its rows.
    """
    for path in paths:
        if hasattr(path, "documents"):
            for _where, text in path.documents():
                yield from (line for line in text.split("\n") if line.strip())
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line


def train_tokenizer(
    files: Sequence[str | os.PathLike],
    kind: str = "bpe",
    vocab_size: int | None = None,
    min_frequency: int = 2,
    lowercase: bool = False,
    model_max_length: int = 512,
    show_progress: bool = True,
    check_files: bool = True,
):
    """Train on ``files`` and return a ``PreTrainedTokenizerFast`` with roles set.

    ``check_files=False``: ``files`` come from :func:`text_files` already (not read twice).
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    if kind not in LAYOUTS:
        raise UserError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(LAYOUTS)}")
    files = text_files(files) if check_files else [f if hasattr(f, "documents") else Path(f) for f in files]
    layout = LAYOUTS[kind]
    vocab_size = layout.default_vocab if vocab_size is None else vocab_size
    _check_sizes(kind, layout, vocab_size, min_frequency)
    tok = build_untrained(kind, lowercase)
    trainer = _trainer(kind, vocab_size, min_frequency, show_progress)
    lines = _Counted(iter_text_lines(files))
    try:
        tok.train_from_iterator(lines, trainer=trainer)
    except Exception as exc:  # tokenizers' trainers raise a bare Exception
        if "not large enough to contain all chars" not in str(exc):
            raise
        raise UserError(f"--vocab-size {vocab_size} is smaller than the {kind} tokenizer's alphabet "
                        f"(the distinct characters of {files[0]}...); raise it") from None
    if lines.count == 0:
        raise UserError(f"{', '.join(map(str, files))}: no text to learn from (only blank lines)")
    if tok.get_vocab_size() > vocab_size:
        raise UserError(f"--vocab-size {vocab_size} is smaller than the {kind} tokenizer's alphabet: training "
                        f"gave {tok.get_vocab_size()} tokens; raise --vocab-size to at least that")
    tok.post_processor = _post_processor(kind, tok)
    for i, special in enumerate(layout.specials):
        assert tok.token_to_id(special) == i, (special, tok.token_to_id(special))
    if kind == "bpe":  # as RoBERTa/BART: "a <mask>" masks the word with its space, like "a" + "Ġword"
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)])
        assert tok.token_to_id("<mask>") == 4
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=model_max_length, **layout.roles)


def _check_sizes(kind: str, layout, vocab_size: int, min_frequency: int) -> None:
    smallest = len(layout.specials) + (256 if kind == "bpe" else 1)  # byte-level BPE starts with 256 bytes
    if vocab_size < smallest:
        raise UserError(f"--vocab-size {vocab_size} is too small for a {kind} tokenizer: it needs at least "
                        f"{smallest} ({len(layout.specials)} special tokens"
                        f"{' + 256 bytes' if kind == 'bpe' else ' + 1'})")
    if min_frequency < 0:
        raise UserError(f"--min-frequency must be >= 0, got {min_frequency}")


class _Counted:
    """An iterator that counts what it yields."""

    def __init__(self, it: Iterable[str]):
        self._it, self.count = iter(it), 0

    def __iter__(self):
        return self

    def __next__(self) -> str:
        item = next(self._it)
        self.count += 1
        return item


def text_files(inputs: Sequence[str | os.PathLike], selection=None, skipped=None) -> list[Path]:
    """The text files named and those under directories named; empty, binary or undecodable ones counted
    in ``skipped`` and left out (:func:`fairseq_ext.prep.input_files.collect_text_files`)."""
    from fairseq_ext.prep.input_files import collect_text_files

    return collect_text_files(inputs, selection, skipped)


def first_lines(path, n: int) -> list[str]:
    out = []
    for line in iter_text_lines([path]):
        out.append(line)
        if len(out) == n:
            break
    return out


def pieces_preview(tok, lines: Iterable[str]) -> list[str]:
    """The tokens of each line, space-joined: what ``--test`` prints."""
    return [" ".join(tok.convert_ids_to_tokens(tok(line, add_special_tokens=False)["input_ids"])) for line in lines]
