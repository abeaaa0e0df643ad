"""Hugging Face BART / BERT / RoBERTa directory -> fairseq checkpoint that ``fairseq-train --restore-file``
continues from.

OUT gets ``checkpoint.pt``, the tokenizer (``tokenizer.json`` ...), ``dict.txt``,
``model_args.txt`` (the fairseq-train flags that rebuild this model) and
``hydra_overrides.txt`` (the same for fairseq-hydra-train):
OUT is itself a valid data directory for the vocabulary, so ``binarize`` new
text with OUT as the tokenizer and the ids stay the original model's.

BART becomes fairseq's ``bart`` model. RoBERTa becomes fairseq's ``roberta``
when it has what fairseq's RoBERTa has (one zero token-type row, layer-norm
epsilon 1e-5, as the released RoBERTa checkpoints); BERT, and any RoBERTa
with more, becomes the ``hf_bert`` model (:mod:`fairseq_ext.models.bert`), which
carries the token-type table and the epsilon exactly.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fairseq_ext.checkpoints import tokenizer_task_state
from fairseq_ext.convert import bart, encoder
from fairseq_ext.convert.checkpoint_io import build_fairseq_model
from fairseq_ext.convert.common import TOLERANCE, ConversionError
from fairseq_ext.io_utils import atomic_output_dir
from fairseq_ext.tokenizer import load_tokenizer, save_tokenizer, vocab_in_id_order, write_dict_txt
from fairseq_ext.vocab import TokenizerDictionary

SUPPORTED = ("bart", "bert", "roberta")
# transformers hidden_act -> fairseq activation (same function)
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_accurate", "gelu_pytorch_tanh": "gelu_accurate", "relu": "relu",
               "tanh": "tanh", "linear": "linear"}


@dataclass
class ImportResult:
    out_dir: str
    family: str  # transformers family: bart, bert, roberta
    fairseq_arch: str
    max_abs_diff: float
    vocab: int
    rows: int
    layers: str
    d_model: int
    model_flags: list[str]
    fresh_head: list[str] = field(default_factory=list)  # head weights the directory did not have
    dropped: list[str] = field(default_factory=list)  # weights the directory had that the MLM model does not use


def bart_flags(config) -> list[str]:
    """fairseq-train model flags for a BART architecture equal to an HF BartConfig."""
    if getattr(config, "normalize_before", False) or getattr(config, "add_final_layer_norm", False):
        raise ConversionError("pre-norm BART variants (mBART) are not supported")
    if config.scale_embedding:  # fairseq's bart architectures never scale; no flag turns it on
        raise ConversionError("scale_embedding=True: fairseq-train's BART cannot scale embeddings")
    flags = [
        "--arch", "bart_base",
        "--encoder-layers", str(config.encoder_layers), "--decoder-layers", str(config.decoder_layers),
        "--encoder-embed-dim", str(config.d_model), "--decoder-embed-dim", str(config.d_model),
        "--encoder-ffn-embed-dim", str(config.encoder_ffn_dim), "--decoder-ffn-embed-dim", str(config.decoder_ffn_dim),
        "--encoder-attention-heads", str(config.encoder_attention_heads),
        "--decoder-attention-heads", str(config.decoder_attention_heads),
        "--max-source-positions", str(config.max_position_embeddings),
        "--max-target-positions", str(config.max_position_embeddings),
        "--activation-fn", config.activation_function, "--dropout", str(config.dropout),
        "--attention-dropout", str(config.attention_dropout), "--activation-dropout", str(config.activation_dropout),
        "--share-all-embeddings",
    ]
    return flags


def encoder_flags(config, family: str, positions: int, keep_types: bool) -> list[str]:
    """fairseq-train model flags for a ``roberta`` or ``bert`` model equal to an HF Bert/RobertaConfig."""
    act = ACTIVATIONS.get(config.hidden_act)
    if act is None:
        raise ConversionError(f"hidden_act {config.hidden_act!r} has no fairseq equivalent")
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ConversionError(f"position_embedding_type {config.position_embedding_type!r}: "
                              "only absolute positions convert")
    flags = [
        "--arch", "hf_bert" if keep_types else "roberta",
        "--encoder-layers", str(config.num_hidden_layers), "--encoder-embed-dim", str(config.hidden_size),
        "--encoder-ffn-embed-dim", str(config.intermediate_size),
        "--encoder-attention-heads", str(config.num_attention_heads), "--max-positions", str(positions),
        "--activation-fn", act, "--dropout", str(config.hidden_dropout_prob),
        "--attention-dropout", str(config.attention_probs_dropout_prob), "--activation-dropout", "0.0",
    ]
    if keep_types:
        flags += ["--type-vocab-size", str(config.type_vocab_size), "--layer-norm-eps", repr(config.layer_norm_eps),
                  "--hf-model-type", family]
    if not config.tie_word_embeddings:
        flags.append("--untie-weights-roberta")
    return flags


def hydra_overrides(flags: list[str]) -> list[str]:
    """The same model settings as fairseq-hydra-train overrides (model._name=ARCH ++model.key=value ...)."""
    out, i = [], 0
    while i < len(flags):
        key = flags[i][2:].replace("-", "_")
        has_value = i + 1 < len(flags) and not flags[i + 1].startswith("--")
        value = flags[i + 1] if has_value else "true"
        out.append(f"model._name={value}" if key == "arch" else f"++model.{key}={value}")
        i += 2 if has_value else 1
    return out


def training_args(data_dir: str, family: str, flags: list[str], pad_to_multiple: int, positions: int):
    """Full fairseq training settings (task, criterion, model) as fairseq-train would parse them."""
    from fairseq import options

    task = ["--task", "hf_denoising", "--criterion", "cross_entropy_with_accuracy"] if family == "bart" else \
        ["--task", "hf_masked_lm", "--criterion", "masked_lm_with_accuracy"]
    argv = [data_dir, *task, *flags, "--tokens-per-sample", str(positions), "--pad-vocab-to-multiple",
            str(pad_to_multiple)]
    return options.parse_args_and_arch(options.get_training_parser(), argv)


def read_hf_dir(hf_dir: Path):
    from transformers import AutoConfig

    if hf_dir.is_file():
        raise ConversionError(f"{hf_dir}: is a file; HF_DIR is a transformers model directory "
                              "(config.json, weights, tokenizer)")
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir}: no such directory")
    try:
        config = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{hf_dir}: not a transformers model directory ({exc})") from None
    if config.model_type not in SUPPORTED:
        raise ConversionError(f"{hf_dir}: model_type {config.model_type!r}; import-hf converts "
                              f"{', '.join(SUPPORTED)} models")
    tok = load_tokenizer(hf_dir)
    symbols, _ = vocab_in_id_order(tok)
    if len(symbols) != config.vocab_size:
        raise ConversionError(f"vocabulary mismatch: {hf_dir}/config.json says vocab_size {config.vocab_size}, "
                              f"its tokenizer has {len(symbols)} tokens")
    return config, tok, symbols


def load_weights(model_cls, hf_dir: Path, **kwargs):
    """``model_cls.from_pretrained(hf_dir)``; missing or unreadable weight files are a one-line error."""
    from safetensors import SafetensorError

    try:
        return model_cls.from_pretrained(str(hf_dir), local_files_only=True, **kwargs)
    except (OSError, SafetensorError) as exc:  # no weights file / a damaged one
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ConversionError(f"{hf_dir}: cannot read the model weights: {first}") from None


def load_encoder(hf_dir: Path, config, seed: int):
    """``{Bert,Roberta}ForMaskedLM`` from the directory; a missing MLM head is initialised from ``seed``."""
    _config_cls, model_cls = encoder.hf_classes(config.model_type)
    torch.manual_seed(seed)
    model, info = load_weights(model_cls, hf_dir, output_loading_info=True)
    head = "cls." if config.model_type == "bert" else "lm_head."
    missing = sorted(info["missing_keys"])
    body = [k for k in missing if not k.startswith(head)]
    if body or info["mismatched_keys"]:
        raise ConversionError(f"{hf_dir}: weights missing or of the wrong shape for {model_cls.__name__}: "
                              f"{(body or [str(k) for k in info['mismatched_keys']])[:5]}")
    return model.eval(), missing, sorted(info["unexpected_keys"])


def import_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, pad_to_multiple: int = 8, seed: int = 0,
              overwrite: bool = False) -> ImportResult:
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf
    from transformers import BartForConditionalGeneration

    hf_dir = Path(hf_dir)
    config, tok, symbols = read_hf_dir(hf_dir)
    family = config.model_type
    dictionary = TokenizerDictionary.from_tokenizer(tok, pad_to_multiple=pad_to_multiple)
    if config.pad_token_id is not None and config.pad_token_id != dictionary.pad():
        raise ConversionError(f"{hf_dir}: config.json says pad_token_id {config.pad_token_id}, its tokenizer's "
                              f"pad token is id {dictionary.pad()}")
    fresh_head, dropped = [], []
    if family == "bart":
        flags = bart_flags(config)
        positions = config.max_position_embeddings
        hf_model = load_weights(BartForConditionalGeneration, hf_dir).eval()
        weights = bart.hf_to_fairseq_state(hf_model.state_dict(), len(dictionary), dictionary.pad(), positions)
    else:
        hf_model, fresh_head, dropped = load_encoder(hf_dir, config, seed)
        state = hf_model.state_dict()
        names = encoder.embedding_names(family)
        types = state[names["types"]]
        keep_types = family == "bert" or not (
            types.size(0) == 1 and not types.abs().max() > 0 and config.layer_norm_eps == 1e-5)
        # BERT's table holds its positions; RoBERTa's also the pad + 1 unused rows before them
        positions = config.max_position_embeddings - (0 if family == "bert" else dictionary.pad() + 1)
        flags = encoder_flags(config, family, positions, keep_types)
        weights = encoder.hf_to_fairseq_state(state, family, config.num_hidden_layers, len(dictionary),
                                              dictionary.pad(), keep_types, tied=config.tie_word_embeddings)
        if not torch.equal(state[names["bias"]], state[names["decoder_bias"]]):
            dropped.append(f"{names['bias']} (unused beside the untied {names['decoder_bias']}; "
                           "exported equal to it)")
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        args = training_args(str(Path(out_dir).resolve()), family, flags, pad_to_multiple, positions)
        fs_model = build_fairseq_model(args, dictionary, weights)
        if family == "bart":
            diff = bart.bart_parity(fs_model, hf_model, dictionary, positions)
        else:
            diff = encoder.encoder_parity(fs_model, hf_model, dictionary, positions)
        if not diff <= TOLERANCE:
            raise ConversionError(f"{hf_dir}: fairseq and transformers outputs differ by {diff:.2e}; nothing written")
        with warnings.catch_warnings():  # hydra's deprecation notices about fairseq's own config files
            warnings.simplefilter("ignore", UserWarning)
            cfg = convert_namespace_to_omegaconf(args)
        criterion = "CrossEntropyWithAccuracy" if family == "bart" else "MaskedLMWithAccuracy"
        checkpoint = {
            "args": None,
            "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "model": weights,
            "criterion": None,
            "optimizer_history": [{"criterion_name": criterion, "optimizer_name": "FairseqAdam",
                                   "lr_scheduler_state": {"best": None}, "num_updates": 0}],
            "task_state": tokenizer_task_state(dictionary.identity()),  # checked by the tasks and export-hf
            "extra_state": {"metrics": {}, "previous_training_time": 0, "imported_from": str(hf_dir)},
        }
        torch.save(checkpoint, tmp / "checkpoint.pt")
        save_tokenizer(tok, tmp)
        write_dict_txt(symbols, tmp / "dict.txt")
        (tmp / "model_args.txt").write_text(" ".join(flags) + "\n", encoding="utf-8")
        (tmp / "hydra_overrides.txt").write_text(" ".join(hydra_overrides(flags)) + "\n", encoding="utf-8")
    layers = (f"{config.encoder_layers}+{config.decoder_layers}" if family == "bart"
              else str(config.num_hidden_layers))
    d_model = config.d_model if family == "bart" else config.hidden_size
    return ImportResult(str(out_dir), family, args.arch, diff, len(symbols), len(dictionary), layers, d_model, flags,
                        fresh_head, dropped)
