"""Convert a Hugging Face BART directory into a fairseq checkpoint to continue pretraining.

Writes DIR/checkpoint.pt, the tokenizer (tokenizer.json ...) and dict.txt, keeping
the original vocabulary (index == tokenizer id). Both models run on the same
batches first; nothing is written if the outputs differ by more than 1e-4.

example:
  fairseq-ext import-hf my-hf-bart -o bart-start
  fairseq-ext binarize --tokenizer bart-start --train domain.txt --valid domain-valid.txt -o data-bin
  fairseq-train data-bin --user-dir fairseq_ext --task hf_denoising --arch bart_base \\
      --restore-file bart-start/checkpoint.pt --reset-optimizer --reset-dataloader --reset-meters ...
"""

from __future__ import annotations

import argparse
import sys

HELP = "convert a transformers BART directory to a fairseq checkpoint (parity checked)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("hf_dir", metavar="HF_DIR", help="directory with config.json, weights and tokenizer")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write")
    p.add_argument("--pad-vocab-to-multiple", type=int, default=8, metavar="N",
                   help="embedding rows padded to a multiple of N, as hf_denoising does (default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace DIR if it exists")


def run(args: argparse.Namespace) -> int:
    import fairseq_ext

    fairseq_ext.register()
    from fairseq_ext.convert.import_hf import import_hf

    r = import_hf(args.hf_dir, args.output, pad_to_multiple=args.pad_vocab_to_multiple, overwrite=args.overwrite)
    print(f"parity: max |logit difference| transformers vs fairseq = {r['max_abs_diff']:.2e}")
    print(f"imported BART {r['layers'][0]}+{r['layers'][1]} layers, d_model {r['d_model']}, "
          f"{r['vocab']:,} tokens ({r['rows']:,} embedding rows)")
    print(f"wrote {args.output}: checkpoint.pt, dict.txt, tokenizer files")
    return 0


def main(argv=None) -> int:
    from fairseq_ext.cli.main import main as cli_main

    return cli_main(["import-hf", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
