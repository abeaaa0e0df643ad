"""Hugging Face BART directory -> fairseq checkpoint that ``fairseq-train --restore-file`` continues from.

OUT gets ``checkpoint.pt``, the tokenizer (``tokenizer.json`` ...) and ``dict.txt``:
OUT is itself a valid data directory for the vocabulary, so ``binarize`` new
text with OUT as the tokenizer and the ids stay the original model's.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fairseq_ext.convert.bart import ConversionError, hf_to_fairseq_state
from fairseq_ext.convert.checkpoint_io import build_fairseq_bart
from fairseq_ext.convert.export import TOLERANCE, bart_parity
from fairseq_ext.io_utils import atomic_output_dir
from fairseq_ext.tokenizer import load_tokenizer, save_tokenizer, vocab_in_id_order, write_dict_txt
from fairseq_ext.vocab import TokenizerDictionary


def fairseq_args_for(config, data_dir: str, pad_to_multiple: int):
    """fairseq training settings (hf_denoising + a BART architecture) equal to an HF BartConfig."""
    from fairseq import options

    if config.model_type != "bart":
        raise ConversionError(f"model_type {config.model_type!r}: import-hf converts BART models")
    if getattr(config, "normalize_before", False) or getattr(config, "add_final_layer_norm", False):
        raise ConversionError("pre-norm BART variants (mBART) are not supported")
    argv = [
        data_dir, "--task", "hf_denoising", "--arch", "bart_base", "--criterion", "cross_entropy_with_accuracy",
        "--encoder-layers", str(config.encoder_layers), "--decoder-layers", str(config.decoder_layers),
        "--encoder-embed-dim", str(config.d_model), "--decoder-embed-dim", str(config.d_model),
        "--encoder-ffn-embed-dim", str(config.encoder_ffn_dim), "--decoder-ffn-embed-dim", str(config.decoder_ffn_dim),
        "--encoder-attention-heads", str(config.encoder_attention_heads),
        "--decoder-attention-heads", str(config.decoder_attention_heads),
        "--max-source-positions", str(config.max_position_embeddings),
        "--max-target-positions", str(config.max_position_embeddings),
        "--tokens-per-sample", str(config.max_position_embeddings),
        "--activation-fn", config.activation_function, "--dropout", str(config.dropout),
        "--attention-dropout", str(config.attention_dropout), "--activation-dropout", str(config.activation_dropout),
        "--share-all-embeddings", "--pad-vocab-to-multiple", str(pad_to_multiple),
    ]
    args = options.parse_args_and_arch(options.get_training_parser(), argv)
    args.no_scale_embedding = not config.scale_embedding  # bart_base's default is True; no flag turns it off
    return args


def import_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, pad_to_multiple: int = 8,
              overwrite: bool = False) -> dict:
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from omegaconf import OmegaConf
    from transformers import AutoConfig, BartForConditionalGeneration

    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir}: no such directory")
    try:
        config = AutoConfig.from_pretrained(str(hf_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{hf_dir}: not a transformers model directory ({exc})") from None
    tok = load_tokenizer(hf_dir)
    symbols, _ = vocab_in_id_order(tok)
    if len(symbols) != config.vocab_size:
        raise ConversionError(f"vocabulary mismatch: {hf_dir}/config.json says vocab_size {config.vocab_size}, "
                              f"its tokenizer has {len(symbols)} tokens")
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        args = fairseq_args_for(config, str(Path(out_dir).resolve()), pad_to_multiple)
        hf_model = BartForConditionalGeneration.from_pretrained(str(hf_dir), local_files_only=True).eval()
        dictionary = TokenizerDictionary.from_tokenizer(tok, pad_to_multiple=pad_to_multiple)
        weights = hf_to_fairseq_state(hf_model.state_dict(), len(dictionary), dictionary.pad(),
                                      config.max_position_embeddings)
        fs_model = build_fairseq_bart(args, dictionary, weights)
        diff = bart_parity(fs_model, hf_model, dictionary, config.max_position_embeddings)
        if not diff <= TOLERANCE:
            raise ConversionError(f"{hf_dir}: fairseq and transformers outputs differ by {diff:.2e}; nothing written")
        cfg = convert_namespace_to_omegaconf(args)
        state = {
            "args": None,
            "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
            "model": weights,
            "criterion": None,
            "optimizer_history": [{"criterion_name": "CrossEntropyWithAccuracy", "optimizer_name": "FairseqAdam",
                                   "lr_scheduler_state": {"best": None}, "num_updates": 0}],
            "task_state": {},
            "extra_state": {"metrics": {}, "previous_training_time": 0, "imported_from": str(hf_dir)},
        }
        torch.save(state, tmp / "checkpoint.pt")
        save_tokenizer(tok, tmp)
        write_dict_txt(symbols, tmp / "dict.txt")
    return {"out_dir": str(out_dir), "max_abs_diff": diff, "vocab": len(symbols), "rows": len(dictionary),
            "layers": (config.encoder_layers, config.decoder_layers), "d_model": config.d_model}
