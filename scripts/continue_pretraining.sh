#!/usr/bin/env bash
# Continued (domain) pretraining of an existing Hugging Face BERT or RoBERTa on your text, keeping
# its vocabulary, in the manner of COVID-Twitter-BERT (96-token sequences, 15% masking,
# short-sequence probability 0.1, learning rate 2e-5):
#   import-hf -> prepare (tweet normalisation) -> binarize with the model's tokenizer -> train -> export-hf
#
#   HF_MODEL=path/to/bert-large-uncased RAW=tweets/ bash scripts/continue_pretraining.sh
#
# HF_MODEL is a local transformers directory (config.json, weights, tokenizer); nothing is downloaded.
# RAW holds one tweet (or post) a line. Each step is skipped when its output exists, and training
# resumes from $WORK/checkpoints/checkpoint_last.pt, so rerunning the script continues where it stopped.
set -euo pipefail

HF_MODEL=${HF_MODEL:?set HF_MODEL to a transformers BERT or RoBERTa directory}
RAW=${RAW:?set RAW to your text: files or directories, one post a line}
WORK=${WORK:-continued-run}           # everything is written under here
NORMALIZE=${NORMALIZE:-tweets}        # tweets | none
VALID_RATIO=${VALID_RATIO:-0.01}
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-96}
MASK_UNIT=${MASK_UNIT:-subword}       # subword | word (whole-word masking) | span
SHORT_SEQ_PROB=${SHORT_SEQ_PROB:-0.1}
BATCH_SIZE=${BATCH_SIZE:-32}          # sequences per GPU per step
UPDATE_FREQ=${UPDATE_FREQ:-1}         # gradient accumulation
MAX_UPDATE=${MAX_UPDATE:-25000}
LR=${LR:-2e-5}
WARMUP=${WARMUP:-1000}
SAVE_INTERVAL=${SAVE_INTERVAL:-1000}  # updates between checkpoints and validations
PRECISION=${PRECISION---fp16}        # --fp16 (V100), --bf16 (A100/H100) or "" (CPU)
PREPARE_ARGS=${PREPARE_ARGS:-}       # more for fairseq-ext prepare, e.g. "--min-words 2 --remove-symbols"
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-} # anything else for fairseq-train, e.g. "--cpu --num-workers 0"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$WORK/start/checkpoint.pt" ]; then
    fairseq-ext import-hf "$HF_MODEL" -o "$WORK/start"
fi
if [ ! -f "$WORK/text/train.txt" ]; then
    # --doc-sep line: every post is its own document; casing follows the model's tokenizer
    fairseq-ext prepare $RAW -o "$WORK/text" --doc-sep line --no-sentence-split $PREPARE_ARGS \
        --normalize "$NORMALIZE" --tokenizer "$WORK/start" --valid-ratio "$VALID_RATIO"
fi
if [ ! -f "$WORK/data-bin/train.idx" ]; then
    fairseq-ext binarize --tokenizer "$WORK/start" --train "$WORK/text/train.txt" \
        --valid "$WORK/text/valid.txt" -o "$WORK/data-bin" --max-line-tokens $((TOKENS_PER_SAMPLE - 2))
fi

# The model flags (architecture, sizes, layer-norm epsilon, token types) come from the import.
# --finetune-from-model starts from the imported weights on the first launch (fresh optimizer,
# schedule and data order); later launches resume from checkpoint_last.pt in --save-dir.
# shellcheck disable=SC2046,SC2086
fairseq-train "$WORK/data-bin" --user-dir "$ROOT/fairseq_ext" \
    --task hf_masked_lm --criterion masked_lm_with_accuracy $(cat "$WORK/start/model_args.txt") \
    --finetune-from-model "$WORK/start/checkpoint.pt" \
    --tokens-per-sample "$TOKENS_PER_SAMPLE" --sample-break-mode complete \
    --mask-prob 0.15 --mask-unit "$MASK_UNIT" --short-seq-prob "$SHORT_SEQ_PROB" \
    --optimizer adam --adam-betas "(0.9,0.999)" --adam-eps 1e-6 --weight-decay 0.01 --clip-norm 1.0 \
    --lr "$LR" --lr-scheduler polynomial_decay --warmup-updates "$WARMUP" --total-num-update "$MAX_UPDATE" \
    --batch-size "$BATCH_SIZE" --update-freq "$UPDATE_FREQ" --max-update "$MAX_UPDATE" \
    $PRECISION --num-workers 4 \
    --save-dir "$WORK/checkpoints" --save-interval-updates "$SAVE_INTERVAL" --keep-interval-updates 3 \
    --no-epoch-checkpoints --validate-interval-updates "$SAVE_INTERVAL" \
    --log-format simple --log-interval 100 $EXTRA_TRAIN_ARGS

fairseq-ext export-hf "$WORK/checkpoints/checkpoint_best.pt" -o "$WORK/hf-model" --overwrite
