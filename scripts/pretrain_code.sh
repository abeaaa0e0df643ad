#!/usr/bin/env bash
# Code MLM, the first stage of the CoCoS code-search recipe: source trees -> byte-level BPE
# tokenizer -> code dataset (Arrow, split by project) -> masked-LM pretraining of a T5 encoder
# (identifier-aware masking) -> export to transformers (T5EncoderModel).
# Edit the variables, then:   SRC="~/src/projectA ~/src/projectB" bash scripts/pretrain_code.sh
# Rerunning resumes training from $WORK/checkpoints/checkpoint_last.pt.
set -euo pipefail

SRC=${SRC:-src/}                   # directories of source files (space separated)
WORK=${WORK:-code-run}             # everything is written under here
LANGUAGES=${LANGUAGES:-}           # e.g. python,java (Pygments names); empty keeps every language
VALID_RATIO=${VALID_RATIO:-0.02}   # share of the files for validation, taken project by project
VOCAB=${VOCAB:-32000}              # byte-level BPE size
ARCH=${ARCH:-t5_encoder_small}     # t5_encoder_small | t5_encoder_base
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-512}
BREAK_MODE=${BREAK_MODE:-none}     # none (packed) | file_truncate | file_split (one file per sample)
MASK_UNIT=${MASK_UNIT:-identifier} # identifier (every occurrence of chosen identifiers) | subword | word | span
MAX_TOKENS=${MAX_TOKENS:-16384}    # tokens per GPU per step
UPDATE_FREQ=${UPDATE_FREQ:-2}      # gradient accumulation
MAX_UPDATE=${MAX_UPDATE:-100000}
LR=${LR:-5e-4}
WARMUP=${WARMUP:-5000}
PRECISION=${PRECISION---fp16}      # --fp16 (V100), --bf16 (A100/H100) or "" (CPU)
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-} # anything else for fairseq-train, e.g. "--encoder-layers 2 --cpu"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LANG_ARGS=()
if [ -n "$LANGUAGES" ]; then LANG_ARGS=(--languages "$LANGUAGES"); fi
if [ ! -f "$WORK/tokenizer/tokenizer.json" ]; then
    # shellcheck disable=SC2086
    fairseq-ext train-tokenizer -i $SRC "${LANG_ARGS[@]}" -o "$WORK/tokenizer" --kind bpe --vocab-size "$VOCAB"
fi
if [ ! -f "$WORK/code-data/dataset_dict.json" ]; then
    # shellcheck disable=SC2086
    fairseq-ext code-dataset $SRC "${LANG_ARGS[@]}" -o "$WORK/code-data" --tokenizer "$WORK/tokenizer" \
        --valid-ratio "$VALID_RATIO"
fi

# shellcheck disable=SC2086
fairseq-train "$WORK/code-data" --user-dir "$ROOT/fairseq_ext" \
    --task code_mlm --arch "$ARCH" --criterion masked_lm_with_accuracy \
    --tokens-per-sample "$TOKENS_PER_SAMPLE" --sample-break-mode "$BREAK_MODE" \
    --mask-prob 0.15 --mask-unit "$MASK_UNIT" \
    --optimizer adam --adam-betas "(0.9,0.98)" --adam-eps 1e-6 --weight-decay 0.01 --clip-norm 1.0 \
    --lr "$LR" --lr-scheduler polynomial_decay --warmup-updates "$WARMUP" --total-num-update "$MAX_UPDATE" \
    --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" --max-update "$MAX_UPDATE" \
    $PRECISION --num-workers 4 \
    --save-dir "$WORK/checkpoints" --save-interval-updates 5000 --keep-interval-updates 3 --no-epoch-checkpoints \
    --validate-interval-updates 5000 --log-format simple --log-interval 100 \
    --tensorboard-logdir "$WORK/tensorboard" $EXTRA_TRAIN_ARGS

fairseq-ext export-hf "$WORK/checkpoints/checkpoint_best.pt" -o "$WORK/hf-model" --overwrite
