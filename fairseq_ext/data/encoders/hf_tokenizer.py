"""``--bpe hf_tokenizer``: any Hugging Face tokenizer as a fairseq BPE.

fairseq's tools (``fairseq-interactive``, hub interfaces, whole-word masking)
call ``encode`` to get dictionary symbols and ``decode`` to get text back.
Since a fairseq_ext dictionary is the tokenizer's vocabulary in id order,
``encode`` returns token strings that the dictionary maps to the same ids.
"""


import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.data.encoders import register_bpe
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from fairseq_ext.vocab.tokenizer import TokenizerError, load_tokenizer
from fairseq_ext.vocab.word_starts import word_start_rule


@dataclass
class HFTokenizerBPEConfig(FairseqDataclass):
    hf_tokenizer: Optional[str] = field(
        default=None,
        metadata={
            "help": "the tokenizer: a tokenizer.json, a directory AutoTokenizer loads, a SentencePiece "
            ".model, or a data directory made by `fairseq-ext binarize` (default: the task's data "
            "directory, which carries its tokenizer.json)"
        },
    )
    # No help text: fairseq then fills it from the task's data path instead of adding a flag.
    data: str = II("task.data")


@register_bpe("hf_tokenizer", dataclass=HFTokenizerBPEConfig)
class HFTokenizerBPE:
    """Encode text to space-separated token strings and back, with a fast tokenizer."""

    def __init__(self, cfg: HFTokenizerBPEConfig):
        source = cfg.hf_tokenizer or cfg.data
        if not source or str(source).startswith("${"):
            # fairseq's own denoising/masked_lm tasks build the BPE from its name alone.
            raise TokenizerError(
                "--bpe hf_tokenizer was built without a tokenizer: pass --hf-tokenizer TOK; fairseq's own "
                "tasks that build it by name only (whole-word masking in `denoising`) cannot pass one"
            )
        self.source = resolve_tokenizer_source(str(source))
        self._setup(load_tokenizer(self.source))

    def _setup(self, tok) -> None:
        self.tok = tok
        self.backend = tok.backend_tokenizer
        self._is_word_start = word_start_rule(tok)

    def encode(self, x: str) -> str:
        ids = self.backend.encode(x, add_special_tokens=False).ids
        return " ".join(self.backend.id_to_token(i) for i in ids)

    def decode(self, x: str) -> str:
        ids = [self.backend.token_to_id(t) for t in x.split()]
        unknown = [t for t, i in zip(x.split(), ids) if i is None]
        if unknown:
            raise TokenizerError(f"{self.source}: cannot decode tokens not in the tokenizer: {unknown[:5]}")
        return self.backend.decode(ids, skip_special_tokens=False)

    def is_beginning_of_word(self, x: str) -> bool:
        return self._is_word_start(x)

    # Data-loader workers pickle the encoder: send the tokenizer as JSON.
    def __getstate__(self):
        return {"source": self.source, "tok": self.tok}

    def __setstate__(self, state):
        self.source = state["source"]
        self._setup(state["tok"])


def resolve_tokenizer_source(value: str) -> str:
    """A data path list or directory -> the tokenizer it carries."""
    first = value.split(os.pathsep)[0] if os.pathsep in value and not os.path.exists(value) else value
    if os.path.isdir(first) and os.path.isfile(os.path.join(first, "tokenizer.json")):
        return first if os.path.isfile(os.path.join(first, "tokenizer_config.json")) else os.path.join(
            first, "tokenizer.json")
    if not os.path.exists(first):
        raise TokenizerError(f"{first}: --hf-tokenizer path does not exist")
    return first
