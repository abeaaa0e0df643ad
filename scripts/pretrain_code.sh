#!/usr/bin/env bash
# The CoCoS code-search recipe. Stage 1, code MLM: source trees -> byte-level BPE tokenizer -> code
# dataset (Arrow, split by project) -> masked-LM pretraining of a T5 encoder (identifier-aware
# masking) -> export to transformers (T5EncoderModel). Stage 2, contrastive: (docstring, code) and
# CoCoS (masked file, span) pairs from the same trees, split the same way -> InfoNCE training from
# the code MLM checkpoint (or an imported HF T5 encoder), the best checkpoint by held-out MRR ->
# export (sentence-transformers) -> eval-retrieval beside BM25.
# Edit the variables, then:   SRC="$HOME/src/projectA $HOME/src/projectB" bash scripts/pretrain_code.sh
# Rerunning resumes each stage from its checkpoint_last.pt ($WORK/checkpoints, $WORK/contrastive).
# From an HF T5 (T5Model, T5ForConditionalGeneration or T5EncoderModel directory) instead of a new
# tokenizer and random weights: INIT_HF=path/to/t5 (its tokenizer is kept; ARCH is ignored). To fine-tune a
# sentence-transformers model or a BERT/RoBERTa/T5 encoder for code search without code MLM, see
# scripts/finetune_code_search.sh.
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
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-} # anything else for fairseq-train (both stages), e.g. "--encoder-layers 2 --cpu"
INIT_HF=${INIT_HF:-}               # an HF T5 directory to start from (import-hf); empty: a new model
MASK_TOKEN=${MASK_TOKEN:-}         # empty: the tokenizer's mask token, else <extra_id_0>
# contrastive stage
CONTRASTIVE=${CONTRASTIVE:-1}      # 1: after code MLM | 0: skip it | only: just this stage, from
                                   # $WORK/checkpoints/checkpoint_best.pt (or the INIT_HF encoder)
PAIR_KIND=${PAIR_KIND:-both}       # docstring (Python) | span (CoCoS, any language) | both
TOWERS=${TOWERS:-shared}           # shared | separate (query and key encoders)
TEMPERATURE=${TEMPERATURE:-0.05}   # InfoNCE temperature (the start value with LEARN_TEMPERATURE=1)
LEARN_TEMPERATURE=${LEARN_TEMPERATURE:-0}
SYMMETRIC=${SYMMETRIC:-1}          # 1: query->key and key->query loss
QUEUE_SIZE=${QUEUE_SIZE:-0}        # MoCo-style queue of past keys as extra negatives
GRAD_CACHE_CHUNK=${GRAD_CACHE_CHUNK:-0} # gradient caching: memory of this many pairs per step; 0: off
QUERY_TOKENS=${QUERY_TOKENS:-128}  # longest query side
KEY_TOKENS=${KEY_TOKENS:-256}      # longest key side
CONTRASTIVE_MAX_TOKENS=${CONTRASTIVE_MAX_TOKENS:-$MAX_TOKENS} # both sides' tokens per GPU per step
CONTRASTIVE_UPDATES=${CONTRASTIVE_UPDATES:-20000}
CONTRASTIVE_LR=${CONTRASTIVE_LR:-5e-5}
CONTRASTIVE_WARMUP=${CONTRASTIVE_WARMUP:-1000}
CONTRASTIVE_INTERVAL=${CONTRASTIVE_INTERVAL:-1000} # updates between validations (whole-pool MRR) and saves
CONTRASTIVE_EXTRA_ARGS=${CONTRASTIVE_EXTRA_ARGS:-} # anything else for this stage's fairseq-train

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/code_search.sh
source "$ROOT/scripts/lib/code_search.sh"
one_of CONTRASTIVE "$CONTRASTIVE" 0 1 only
check_contrastive_settings
LANG_ARGS=()
if [ -n "$LANGUAGES" ]; then LANG_ARGS=(--languages "$LANGUAGES"); fi
MASK_ARGS=()
if [ -n "$MASK_TOKEN" ]; then MASK_ARGS=(--mask-token "$MASK_TOKEN"); fi
if [ -n "$INIT_HF" ] && [ -f "$INIT_HF/modules.json" ] && [ "$CONTRASTIVE" != only ]; then
    die "INIT_HF=$INIT_HF is a sentence-transformers model (modules.json): fine-tune it with" \
        "scripts/finetune_code_search.sh, or set CONTRASTIVE=only (the code MLM stage needs an HF T5 encoder)"
fi
if [ -n "$INIT_HF" ]; then
    TOKENIZER="$WORK/init-hf"      # import-hf keeps the HF tokenizer: ids stay the model's
    if [ ! -f "$TOKENIZER/checkpoint.pt" ]; then
        fairseq-ext import-hf "$INIT_HF" -o "$TOKENIZER"
    fi
    read -r -a MODEL_ARGS < "$TOKENIZER/model_args.txt"
    START_ARGS=(--finetune-from-model "$TOKENIZER/checkpoint.pt")
else
    TOKENIZER="$WORK/tokenizer"
    MODEL_ARGS=(--arch "$ARCH")
    START_ARGS=()
    if [ ! -f "$TOKENIZER/tokenizer.json" ]; then
        # shellcheck disable=SC2086
        fairseq-ext train-tokenizer -i $SRC "${LANG_ARGS[@]}" -o "$TOKENIZER" --kind bpe --vocab-size "$VOCAB"
    fi
fi

if [ "$CONTRASTIVE" != only ]; then
    if [ ! -f "$WORK/code-data/dataset_dict.json" ]; then
        # shellcheck disable=SC2086
        fairseq-ext code-dataset $SRC "${LANG_ARGS[@]}" -o "$WORK/code-data" --tokenizer "$TOKENIZER" \
            --valid-ratio "$VALID_RATIO"
    fi

    # --finetune-from-model (INIT_HF) loads the imported weights on the first launch only: a rerun resumes.
    # shellcheck disable=SC2086
    fairseq-train "$WORK/code-data" --user-dir "$ROOT/fairseq_ext" \
        --task code_mlm "${MODEL_ARGS[@]}" "${START_ARGS[@]}" "${MASK_ARGS[@]}" --criterion masked_lm_with_accuracy \
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
fi
if [ "$CONTRASTIVE" = 0 ]; then exit 0; fi

# Stage 2: pairs split exactly as code-dataset split the files (same SRC, languages, ratio, default seed),
# so the held-out projects of stage 1 stay held out.
if [ ! -f "$WORK/code-pairs/dataset_dict.json" ]; then
    # shellcheck disable=SC2086
    fairseq-ext code-pairs $SRC "${LANG_ARGS[@]}" -o "$WORK/code-pairs" --tokenizer "$TOKENIZER" \
        --valid-ratio "$VALID_RATIO" --kind "$PAIR_KIND" "${MASK_ARGS[@]}"
fi
if [ "$CONTRASTIVE" = only ] && [ -n "$INIT_HF" ]; then
    FROM="$TOKENIZER/checkpoint.pt"         # straight from the imported HF encoder
else
    FROM="$WORK/checkpoints/checkpoint_best.pt"
fi
if [ ! -f "$FROM" ] && [ ! -f "$WORK/contrastive/checkpoint_last.pt" ]; then
    echo "CONTRASTIVE=$CONTRASTIVE: $FROM is missing (run the code MLM stage first, or set INIT_HF)" >&2
    exit 2
fi
contrastive_args

# The model flags are stage 1's (the checkpoint's shapes); the MLM head is kept, frozen. A rerun resumes
# from $WORK/contrastive/checkpoint_last.pt; --finetune-from-model only starts the first launch.
# shellcheck disable=SC2086
fairseq-train "$WORK/code-pairs" --user-dir "$ROOT/fairseq_ext" \
    "${MODEL_ARGS[@]}" "${CONTRASTIVE_ARGS[@]}" --finetune-from-model "$FROM" \
    --optimizer adam --adam-betas "(0.9,0.98)" --adam-eps 1e-6 --weight-decay 0.01 --clip-norm 1.0 \
    --lr "$CONTRASTIVE_LR" --lr-scheduler polynomial_decay --warmup-updates "$CONTRASTIVE_WARMUP" \
    --total-num-update "$CONTRASTIVE_UPDATES" --max-update "$CONTRASTIVE_UPDATES" \
    --max-tokens "$CONTRASTIVE_MAX_TOKENS" --update-freq "$UPDATE_FREQ" \
    $PRECISION --num-workers 4 \
    --save-dir "$WORK/contrastive" --save-interval-updates "$CONTRASTIVE_INTERVAL" --keep-interval-updates 3 \
    --no-epoch-checkpoints --validate-interval-updates "$CONTRASTIVE_INTERVAL" \
    --log-format simple --log-interval 100 --tensorboard-logdir "$WORK/tensorboard-contrastive" \
    $EXTRA_TRAIN_ARGS $CONTRASTIVE_EXTRA_ARGS

# The model users search with (sentence-transformers), and the honest measurement: every held-out query
# against every held-out key, beside BM25, and on queries whose code has its names replaced.
export_and_evaluate "$WORK/contrastive/checkpoint_best.pt" "$WORK/code-pairs" "$WORK"
