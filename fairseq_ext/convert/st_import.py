"""What import-hf reads of a sentence-transformers directory (or a bare encoder given ``--pooling``), and the check
that the imported contrastive model embeds as ``SentenceTransformer(DIR).encode()`` does.

A sentence-transformers directory is a pipeline of modules listed in ``modules.json``; fairseq's contrastive
models (:mod:`fairseq_ext.models.towers`) have exactly four of them: the transformers encoder
(``Transformer``), ``Pooling`` ("cls" is fairseq's ``first``, "mean", "max"), a projection without bias
and activation (``Dense``, fairseq's ``--pooler-dim``) and ``Normalize`` (``--pooler-normalize``).
Anything else (another module, pooling mode, a Dense with a bias or an activation) cannot be carried,
and is one line naming the file that says so, before any weight is read. So is what sentence-transformers does
to a text before its tokenizer, since fairseq's pairs are the tokenizer's ids alone (``code-pairs``) and training
and ``eval-retrieval`` feed them as they are: prompts (``config_sentence_transformers.json``) and the Transformer
module's input settings (``sentence_bert_config.json``: ``do_lower_case`` and the rest of :data:`INPUT_SETTINGS`).

The imported model is trained by ``--task code_contrastive --criterion info_nce`` with the similarity
the directory scores by: cosine when it normalises or its ``similarity_fn_name`` is cosine (its default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fairseq_ext.convert.common import TOLERANCE, ConversionError
from fairseq_ext.convert.sentence_transformers import FALLBACK_TEXTS, compare_embeddings, module_classes

MODULES = "modules.json"
CONVERTIBLE = ("Transformer", "Pooling", "Dense", "Normalize")  # in this order; Dense and Normalize optional
FROM_ST_POOLING = {"cls": "first", "mean": "mean", "max": "max"}  # sentence-transformers' mode -> --pooling
LEGACY_POOLING = {  # sentence-transformers < 5 wrote one boolean per mode
    "pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
IDENTITY = "torch.nn.modules.linear.Identity"
ST_CONFIG = "config_sentence_transformers.json"
# the Transformer module's configuration, under its current name first, then the names older versions wrote
TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                       "sentence_camembert_config.json", "sentence_albert_config.json",
                       "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
# its settings that change the ids the encoder sees (set: not null, false or empty); max_seq_length only cuts
# texts, as --max-query-tokens/--max-key-tokens do. tokenizer_args/processor_kwargs: how the tokenizer is loaded;
# processing_kwargs: how it is called; query_length/document_length/query_expansion: per-side lengths and padding
INPUT_SETTINGS = ("do_lower_case", "tokenizer_args", "processor_kwargs", "processing_kwargs", "query_length",
                  "document_length", "query_expansion")
CONTRASTIVE_TRAIN = ("--task", "code_contrastive", "--criterion", "info_nce")


@dataclass
class PooledHead:
    """How a directory turns its encoder's hidden states into one vector: what the contrastive import carries."""

    encoder_dir: Path  # the transformers encoder (the Transformer module's directory, or the bare directory)
    pooling: str  # fairseq's --pooling: first, mean or max
    normalize: bool  # L2-normalised (a Normalize module)
    similarity: str  # what the embeddings are scored by: cosine or dot
    dense: torch.Tensor | None = None  # the projection's (D, C) weight; set by load_sentence_transformer
    sentence_transformers: bool = True  # read from modules.json (False: a bare encoder given --pooling)
    dense_dims: tuple[int, int] | None = None  # (in, out) of the projection
    modules: list[str] = field(default_factory=list)  # for the report: "Pooling(mean)", "Dense(32 -> 16)", ...

    def model_flags(self) -> list[str]:
        """fairseq-train's pooler flags (the settings of :class:`fairseq_ext.models.towers.Pooler`)."""
        flags = ["--pooling", self.pooling]
        if self.dense_dims is not None:
            flags += ["--pooler-dim", str(self.dense_dims[1])]
        return flags + (["--pooler-normalize"] if self.normalize else [])

    def train_flags(self) -> list[str]:
        """The task and criterion the embedding was made for, scoring as the directory scores."""
        return [*CONTRASTIVE_TRAIN, "--similarity", self.similarity]

    def hydra_overrides(self) -> list[str]:
        return ["task._name=code_contrastive", "criterion._name=info_nce", f"++criterion.similarity={self.similarity}"]

    def weights(self) -> dict:
        """The pooler's weights under the query tower's names (none without a projection)."""
        return {} if self.dense is None else {"pooler.dense.weight": self.dense.detach().float().clone()}


def is_sentence_transformers(hf_dir: Path) -> bool:
    return (Path(hf_dir) / MODULES).is_file()


def read_pooled_head(hf_dir: Path, pooling: str | None) -> PooledHead | None:
    """The head import-hf carries: a sentence-transformers directory's modules, a bare encoder's ``--pooling``,
    or None (a bare encoder without ``--pooling``: the masked-LM import)."""
    if is_sentence_transformers(hf_dir):
        if pooling is not None:
            raise ConversionError(f"{hf_dir}: --pooling {pooling}: a sentence-transformers directory pools as its "
                                  f"{MODULES} says; leave --pooling out")
        return read_modules(hf_dir)
    if pooling is None:
        return None
    if pooling not in FROM_ST_POOLING.values():
        raise ConversionError(f"--pooling {pooling!r}: choose from {', '.join(sorted(FROM_ST_POOLING.values()))}")
    return PooledHead(hf_dir, pooling, normalize=False, similarity="cosine", sentence_transformers=False,
                      modules=[f"--pooling {pooling}"])


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConversionError(f"{path}: missing") from None
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: not readable JSON ({str(exc).splitlines()[0]})") from None


def _module_kind(entry, where: Path) -> str:
    """The class name of one ``modules.json`` entry (``sentence_transformers...Pooling`` -> ``Pooling``)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise ConversionError(f"{where}: every entry needs a \"type\" (a module class), got {entry!r}")
    return entry["type"].rsplit(".", 1)[-1]


def read_modules(st_dir: Path) -> PooledHead:
    """Check ``modules.json`` and each module's configuration; one line naming the file for what cannot convert."""
    where = st_dir / MODULES
    entries = _json(where)
    if not isinstance(entries, list) or not entries:
        raise ConversionError(f"{where}: not a list of modules")
    kinds = [_module_kind(e, where) for e in entries]
    for entry, kind in zip(entries, kinds):
        if kind not in CONVERTIBLE:
            raise ConversionError(f"{where}: module {entry['type']!r} cannot be converted; import-hf converts "
                                  f"{', '.join(CONVERTIBLE)}")
    expected = [k for k in CONVERTIBLE if k in kinds]
    if kinds != expected or kinds[:2] != list(CONVERTIBLE[:2]):
        raise ConversionError(f"{where}: modules {' -> '.join(kinds)}; import-hf converts Transformer -> Pooling "
                              "[-> Dense] [-> Normalize]")
    paths = [st_dir / str(e.get("path") or "") for e in entries]
    _refuse_input_settings(paths[0])
    st_config = _json(st_dir / ST_CONFIG) if (st_dir / ST_CONFIG).is_file() else {}
    _refuse_prompts(st_config, st_dir / ST_CONFIG)
    pooling = _pooling(paths[1] / "config.json")
    head = PooledHead(paths[0], pooling, normalize="Normalize" in kinds, similarity="cosine")
    head.modules = [f"Pooling({pooling})"]
    if "Dense" in kinds:
        head.dense_dims = _dense(paths[kinds.index("Dense")] / "config.json")
        head.modules.append(f"Dense({head.dense_dims[0]} -> {head.dense_dims[1]})")
    if head.normalize:
        head.modules.append("Normalize")
    head.similarity = "cosine" if head.normalize else _similarity(st_config)
    return head


def _refuse_input_settings(transformer_dir: Path) -> None:
    """One line for a Transformer module that changes a text before or while tokenising it (lower-casing it, ...):
    fairseq's pairs hold the tokenizer's own ids, so the embedding would be of other ids than the directory's."""
    found = [transformer_dir / name for name in TRANSFORMER_CONFIGS if (transformer_dir / name).is_file()]
    if not found:
        return  # sentence-transformers' defaults
    config = _json(found[0])
    if not isinstance(config, dict):
        raise ConversionError(f"{found[0]}: not a Transformer module configuration (a JSON object)")
    changed = [f"{key}={json.dumps(config[key])}" for key in INPUT_SETTINGS if config.get(key)]
    if changed:
        raise ConversionError(f"{found[0]}: {', '.join(changed)} changes the texts before or while they are "
                              "tokenised; fairseq_ext's pairs are the tokenizer's ids alone, so this cannot be "
                              "carried")


def _refuse_prompts(config, config_file: Path) -> None:
    """One line for a directory whose prompts are text: sentence-transformers prepends them (by name, or
    default_prompt_name to every text); fairseq_ext's pairs, its training and eval-retrieval have none.
    Empty prompts (``{"query": "", "document": ""}``, as many models have) change nothing."""
    prompts = config.get("prompts") if isinstance(config, dict) else None
    prompts = prompts if isinstance(prompts, dict) else {}
    named = [name for name, text in prompts.items() if not isinstance(text, str) or text]
    if named:
        default = config.get("default_prompt_name")
        default = f" (default_prompt_name {default!r})" if default in named else ""
        raise ConversionError(f"{config_file}: prompts {', '.join(map(repr, named))}{default} are prepended to "
                              "texts by sentence-transformers; fairseq_ext's pairs carry no prompts (training and "
                              "eval-retrieval never apply them), so this model cannot be carried")


def _pooling(config_file: Path) -> str:
    """fairseq's --pooling for a Pooling module's configuration (new ``pooling_mode``, or the old booleans)."""
    config = _json(config_file)
    if not isinstance(config, dict):
        raise ConversionError(f"{config_file}: not a Pooling configuration")
    mode = config.get("pooling_mode")
    if mode is None:
        mode = [name for key, name in LEGACY_POOLING.items() if config.get(key)]
    modes = [mode] if isinstance(mode, str) else list(mode)
    if len(modes) != 1 or modes[0] not in FROM_ST_POOLING:
        raise ConversionError(f"{config_file}: pooling mode {' + '.join(map(str, modes)) or 'none'} is not "
                              f"supported; import-hf converts {', '.join(FROM_ST_POOLING)}")
    return FROM_ST_POOLING[modes[0]]


def _dense(config_file: Path) -> tuple[int, int]:
    """(in, out) of a Dense module that is fairseq's projection: no bias, identity activation."""
    config = _json(config_file)
    if not isinstance(config, dict) or not {"in_features", "out_features"} <= set(config):
        raise ConversionError(f"{config_file}: not a Dense configuration (in_features, out_features)")
    if config.get("bias", True):
        raise ConversionError(f"{config_file}: a Dense with a bias cannot be converted (fairseq's --pooler-dim "
                              "projection has none)")
    activation = config.get("activation_function", "torch.nn.modules.activation.Tanh")  # Dense's default
    if activation != IDENTITY:
        raise ConversionError(f"{config_file}: a Dense with activation {activation} cannot be converted (fairseq's "
                              "--pooler-dim projection has none: torch.nn.Identity)")
    return int(config["in_features"]), int(config["out_features"])


def _similarity(config) -> str:
    """What the directory scores by without a Normalize: its similarity_fn_name (cosine when not stated)."""
    name = config.get("similarity_fn_name") if isinstance(config, dict) else None
    return "dot" if name in ("dot", "dot_product") else "cosine"


def load_sentence_transformer(hf_dir: Path, head: PooledHead):
    """The SentenceTransformer to compare with: the directory's own, or a bare encoder with its ``--pooling``;
    the projection's weight is taken from it into ``head``."""
    from sentence_transformers import SentenceTransformer

    from fairseq_ext.convert.sentence_transformers import ST_POOLING

    try:
        if head.sentence_transformers:
            st = SentenceTransformer(str(hf_dir), device="cpu", local_files_only=True)
        else:
            transformer_cls, pooling_cls, _dense_cls, _normalize_cls = module_classes()
            transformer = transformer_cls(str(hf_dir))
            hidden = transformer.auto_model.config.hidden_size
            st = SentenceTransformer(modules=[transformer, pooling_cls(hidden, pooling_mode=ST_POOLING[head.pooling])],
                                     device="cpu")
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConversionError(f"{hf_dir}: cannot be loaded by sentence_transformers.SentenceTransformer: {first}") \
            from None
    dense = [m for m in st if hasattr(m, "linear")]
    if dense:
        head.dense = dense[0].linear.weight.detach()
    return st.eval()


def check_embeddings(st, fs_model, tok, dictionary, limit: int, where) -> tuple[float, bool, str]:
    """fairseq's ``embed()`` against the SentenceTransformer's on the same texts (and padded ids); over
    :data:`TOLERANCE` is a ConversionError (nothing written). Returns (difference, tokens agree, example)."""
    diff, agree, example = compare_embeddings(st, fs_model, tok, dictionary, "query", False, limit,
                                              list(FALLBACK_TEXTS))
    if not diff <= TOLERANCE:
        raise ConversionError(f"{where}: sentence-transformers and fairseq embeddings differ by {diff:.2e} "
                              f"(> {TOLERANCE:g}); nothing written")
    return diff, agree, example
