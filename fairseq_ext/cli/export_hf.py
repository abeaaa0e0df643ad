"""Convert a fairseq checkpoint into a Hugging Face transformers directory.

BART checkpoints become BartForConditionalGeneration; RoBERTa (roberta_*) and
hf_bert* encoders become BertForMaskedLM or RobertaForMaskedLM: the family the
checkpoint came from (hf_bert: its --hf-model-type; roberta: RoBERTa) unless
--family says otherwise; t5_encoder* checkpoints become T5EncoderModel (the
masked-LM head and the pooler stay behind). The directory loads offline with
`AutoModelForMaskedLM`, `BartForConditionalGeneration` or `T5EncoderModel`
`.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`: config
derived from the checkpoint's own settings, weights as safetensors, the
tokenizer, and a model card (README.md) with the recipe, data, updates and
validation figures.

A contrastive t5_encoder or hf_bert checkpoint (code_contrastive + info_nce) exports one
tower (--tower query|key; a one-tower checkpoint embeds both sides with the
same weights), and its pooled embedding: the card states pooling, projection,
normalisation, similarity, temperature and the last validation's retrieval
figures; a projection (--pooler-dim) is written to pooler.safetensors. With
--format sentence-transformers the directory is also a sentence-transformers
model: `SentenceTransformer(DIR).encode(texts)` gives fairseq's embeddings
(Pooling cls/mean/max, Dense without bias, Normalize when the pooler or the
cosine similarity normalised), max_seq_length from the task's pair limits;
an hf_bert encoder is written as the bare BertModel/RobertaModel with the
pooler layer it carries (--hf-pooler; zeros, said in the card, without).

Before writing, both models run on the same padded batches; if any logit (T5:
final hidden state; sentence-transformers: the embedding, also of held-out
texts through encode()) differs by more than 1e-4 (fp32) nothing is written.
Unknown or missing weights are errors. The tokenizer defaults to the
tokenizer.json of the data directory the checkpoint was trained on.

example:
  fairseq-ext export-hf checkpoints/checkpoint_best.pt -o my-bart
  fairseq-ext export-hf checkpoints/checkpoint_last.pt -o my-bart --tokenizer data-bin/tokenizer.json
  fairseq-ext export-hf checkpoints/checkpoint_best.pt -o my-roberta-as-bert --family bert
  fairseq-ext export-hf contrastive/checkpoint_best.pt -o code-search --format sentence-transformers
  fairseq-ext export-hf contrastive/checkpoint_best.pt -o code-keys --tower key
"""

from __future__ import annotations

import argparse
import sys

from fairseq_ext.cli.arguments import refuse_output_over_inputs

HELP = "convert a fairseq checkpoint to a transformers model directory (parity checked)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="fairseq checkpoint (.pt)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write")
    p.add_argument("--tokenizer", metavar="TOK",
                   help="tokenizer.json, AutoTokenizer directory or .model (default: the checkpoint's data dir)")
    p.add_argument("--family", type=family_choice, metavar="FAMILY",
                   help="transformers family to write, for a checkpoint that more than one family takes (an "
                   "encoder: bert or roberta); default: the family it came from")
    p.add_argument("--tower", choices=("query", "key"),
                   help="contrastive checkpoints (t5_encoder, hf_bert): the tower to export (default: query; a "
                   "one-tower checkpoint embeds both with the same weights)")
    p.add_argument("--format", dest="fmt", choices=("transformers", "sentence-transformers"), default="transformers",
                   help="transformers: the model class and tokenizer (default); sentence-transformers: also the "
                   "pooling, projection and normalisation modules of a t5_encoder's or hf_bert's pooled embedding "
                   "(the encoder as T5EncoderModel, BertModel or RobertaModel)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")


def family_choice(name: str) -> str:
    """--family: one the conversion table lets a user choose (the table is read only when the flag is
    given: it imports torch and fairseq, which every other verb's start-up should not pay)."""
    from fairseq_ext.convert.registry import choosable

    names = choosable()
    if name not in names:
        raise argparse.ArgumentTypeError(f"invalid choice: {name!r} (choose from {', '.join(map(repr, names))})")
    return name


def run(args: argparse.Namespace) -> int:
    import fairseq_ext
    from fairseq_ext.io_utils import check_output_dir

    check_output_dir(args.output, args.overwrite)  # before minutes of conversion, not after
    refuse_output_over_inputs(args.output, [args.checkpoint])
    fairseq_ext.register()
    from transformers.utils import logging as hf_logging

    from fairseq_ext.convert.export import TOLERANCE, export_hf
    from fairseq_ext.convert.registry import FAMILIES

    hf_logging.disable_progress_bar()

    r = export_hf(args.checkpoint, args.output, tokenizer=args.tokenizer, family=args.family,
                  overwrite=args.overwrite, tower=args.tower, fmt=args.fmt)
    val = "n/a" if r.val_loss is None else f"{r.val_loss:.4f}"
    measure = FAMILIES[r.family].parity_measure
    print(f"parity: max |{measure} difference| fairseq vs transformers = {r.max_abs_diff:.2e} "
          f"(tolerance {TOLERANCE:g})")
    print(f"exported {r.family} ({r.parameters:,} parameters, {r.num_updates} updates, "
          f"validation {r.val_metric} {val})")
    e = r.embedding
    if e is not None:
        sides = "its own tower" if e.separate else "the one tower of the checkpoint (queries and keys alike)"
        dense = "none" if e.dense is None else f"{e.dense[0]} -> {e.dense[1]}"
        print(f"embedding: {e.tower} tower, {sides}; pooling {e.pooling}, projection {dense}, "
              f"{'L2-normalised' if e.normalize else 'not normalised'}")
    if e is not None and e.st_max_abs_diff is not None:
        print(f"parity: max |embedding difference| fairseq vs sentence-transformers = {e.st_max_abs_diff:.2e} "
              f"on {e.texts_checked} texts (tolerance {TOLERANCE:g})")
    if e is not None and not e.tokens_agree:
        print(f"warning: the tokenizer's special tokens differ from fairseq's inputs: {e.token_example}",
              file=sys.stderr)
    files = "config.json, model.safetensors, tokenizer files, README.md"
    if r.format == "sentence-transformers":
        files += ", modules.json and the sentence-transformers modules"
    elif e is not None and e.dense is not None:
        files += ", pooler.safetensors"
    print(f"wrote {args.output}: {files}")
    return 0
