#!/usr/bin/env bash
# Fine-tune an encoder you already have for code search on your own code, and measure it beside BM25:
#   import-hf INIT_HF -> code-pairs from SRC with THAT model's tokenizer -> eval-retrieval of the model as it
#   is (zero-shot) -> contrastive training (code_contrastive, InfoNCE with in-batch negatives, the best
#   checkpoint by the held-out pool's MRR) -> export for sentence-transformers -> eval-retrieval of the
#   fine-tuned model. Every measurement ranks every held-out query against every held-out key, beside BM25
#   and chance, and again on the renamed (AdvTest-style) pool where names cannot be matched.
#
#   INIT_HF=path/to/all-MiniLM-L6-v2 SRC="$HOME/src/projectA $HOME/src/projectB" \
#       bash scripts/finetune_code_search.sh
#   INIT_HF=path/to/codebert POOLING=first SRC=~/src bash scripts/finetune_code_search.sh
#
# INIT_HF is a local directory, nothing is downloaded: any sentence-transformers directory (modules.json:
# Transformer, Pooling cls/mean/max, optional Dense and Normalize; BERT, MiniLM, RoBERTa-layout or T5
# encoders), or a bare transformers BERT/RoBERTa/T5 encoder directory with POOLING=mean|first|max.
# Rerunning continues: each stage is skipped when its output is complete, and training resumes from
# $WORK/contrastive/checkpoint_last.pt (raise UPDATES and rerun to train further).
# Written under $WORK: init/ (the import), code-pairs/, eval-zero-shot.json, contrastive/ (checkpoints),
# st-model/ (the fine-tuned sentence-transformers model; st-model-keys/ too with TOWERS=separate),
# eval-retrieval.json.
#
# Variables (default):
#   INIT_HF            (required) the model to start from, above
#   POOLING            () first | mean | max: only for a bare encoder (a sentence-transformers directory pools
#                      as its Pooling module says)
#   SRC                (required) source trees or tables of source files (space separated), one project a directory
#   WORK               (code-search-run) everything is written under here
#   LANGUAGES          () e.g. python,java (Pygments names); empty keeps every language
#   VALID_RATIO        (0.1) share of the files held out for validation, taken project by project
#   PAIR_KIND          (docstring) docstring: (docstring, Python definition), what natural-language search is;
#                      span: CoCoS (masked file, span) pairs of any language; both
#   MASK_TOKEN         () span pairs' mask: empty takes the tokenizer's
#   TOWERS             (shared) shared | separate: keys get their own encoder (a copy of the query tower)
#   BATCH_SIZE         (64) pairs per GPU per step; every other pair of the step (all GPUs) is a negative
#   MAX_TOKENS         () also cap a step's tokens (both sides) per GPU; empty: no cap
#   GRAD_CACHE_CHUNK   (0) gradient caching: embed N pairs at a time, so BATCH_SIZE is limited by time, not
#                      memory (sentence-transformers' CachedMultipleNegativesRankingLoss); 0: off
#   UPDATE_FREQ        (1) gradient accumulation (it does not add negatives: GRAD_CACHE_CHUNK does)
#   UPDATES            (1000) training steps
#   LR                 (2e-5) peak learning rate (AdamW, weight decay 0.01, gradients clipped at norm 1)
#   WARMUP             (100) linear warmup steps, then linear decay to 0 at UPDATES
#   TEMPERATURE        (0.05) InfoNCE temperature: sentence-transformers' MultipleNegativesRankingLoss scale 20
#   LEARN_TEMPERATURE  (0) 1: learn it (CLIP's scale), starting from TEMPERATURE
#   SYMMETRIC          (0) 1: add the key -> query ranking loss (MultipleNegativesSymmetricRankingLoss)
#   QUEUE_SIZE         (0) keys of earlier steps as extra negatives (MoCo-style queue)
#   QUERY_TOKENS       (128) longest query side, in the model's tokens
#   KEY_TOKENS         (256) longest key side (both must fit the model's positions)
#   INTERVAL           (100) updates between validations (whole held-out pool: MRR, Recall@1/10) and saves
#   PRECISION          (--fp16) --fp16 (V100), --bf16 (A100/H100) or "" (CPU, add --cpu to EXTRA_TRAIN_ARGS)
#   NUM_WORKERS        (4) data loader processes
#   EXTRA_TRAIN_ARGS   () anything else for fairseq-train (last, so it overrides), e.g. "--cpu --seed 2"
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/code_search.sh
source "$ROOT/scripts/lib/code_search.sh"

INIT_HF=${INIT_HF:-}
POOLING=${POOLING:-}
SRC=${SRC:-}
WORK=${WORK:-code-search-run}
LANGUAGES=${LANGUAGES:-}
VALID_RATIO=${VALID_RATIO:-0.1}
PAIR_KIND=${PAIR_KIND:-docstring}
MASK_TOKEN=${MASK_TOKEN:-}
TOWERS=${TOWERS:-shared}
BATCH_SIZE=${BATCH_SIZE:-64}
MAX_TOKENS=${MAX_TOKENS:-}
GRAD_CACHE_CHUNK=${GRAD_CACHE_CHUNK:-0}
UPDATE_FREQ=${UPDATE_FREQ:-1}
UPDATES=${UPDATES:-1000}
LR=${LR:-2e-5}
WARMUP=${WARMUP:-100}
TEMPERATURE=${TEMPERATURE:-0.05}
LEARN_TEMPERATURE=${LEARN_TEMPERATURE:-0}
SYMMETRIC=${SYMMETRIC:-0}
QUEUE_SIZE=${QUEUE_SIZE:-0}
QUERY_TOKENS=${QUERY_TOKENS:-128}
KEY_TOKENS=${KEY_TOKENS:-256}
INTERVAL=${INTERVAL:-100}
PRECISION=${PRECISION---fp16}
NUM_WORKERS=${NUM_WORKERS:-4}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-}

# Every setting is checked before anything runs.
[ -n "$INIT_HF" ] || die "set INIT_HF to a sentence-transformers directory, or a bare encoder with POOLING"
check_init_hf
[ -n "$SRC" ] || die "set SRC to your source trees or tables (space separated)"
for src in $SRC; do [ -e "$src" ] || die "SRC: no such file or directory: $src"; done
one_of PAIR_KIND "$PAIR_KIND" docstring span both
for name in BATCH_SIZE UPDATE_FREQ UPDATES INTERVAL; do
    whole_number "$name" "${!name}"
    [ "${!name}" -ge 1 ] || die "$name must be at least 1, got '${!name}'"
done
if [ -n "$MAX_TOKENS" ]; then whole_number MAX_TOKENS "$MAX_TOKENS"; fi
whole_number WARMUP "$WARMUP"
whole_number NUM_WORKERS "$NUM_WORKERS"
positive_number LR "$LR"
positive_number VALID_RATIO "$VALID_RATIO"
[ "$WARMUP" -lt "$UPDATES" ] || die "WARMUP ($WARMUP) must be below UPDATES ($UPDATES)"
contrastive_args  # checks TOWERS, TEMPERATURE ... too
LANG_ARGS=()
if [ -n "$LANGUAGES" ]; then LANG_ARGS=(--languages "$LANGUAGES"); fi
MASK_ARGS=()
if [ -n "$MASK_TOKEN" ]; then MASK_ARGS=(--mask-token "$MASK_TOKEN"); fi
BATCH_ARGS=(--batch-size "$BATCH_SIZE" --batch-size-valid "$BATCH_SIZE")
if [ -n "$MAX_TOKENS" ]; then BATCH_ARGS+=(--max-tokens "$MAX_TOKENS"); fi

# 1. The model as fairseq sees it (its embeddings checked against sentence-transformers/transformers), and its
#    tokenizer: the pairs are made with it, so ids stay the model's.
INIT="$WORK/init"
import_init_hf "$INIT"
check_sides_fit "$INIT"

# 2. Pairs from your code, split by project (held-out projects are never trained on).
if [ ! -f "$WORK/code-pairs/dataset_dict.json" ]; then
    # shellcheck disable=SC2086
    fairseq-ext code-pairs $SRC "${LANG_ARGS[@]}" -o "$WORK/code-pairs" --tokenizer "$INIT" \
        --valid-ratio "$VALID_RATIO" --kind "$PAIR_KIND" "${MASK_ARGS[@]}"
fi

# 3. Zero-shot: the starting model on the same held-out pool (the import embeds as INIT_HF does).
if [ ! "$WORK/eval-zero-shot.json" -nt "$INIT/checkpoint.pt" ]; then
    fairseq-ext eval-retrieval "$INIT/checkpoint.pt" --pairs "$WORK/code-pairs" --rename \
        --max-query-tokens "$QUERY_TOKENS" --max-key-tokens "$KEY_TOKENS" --json "$WORK/eval-zero-shot.json"
fi

# 4. Contrastive training. The model flags are the import's (model_args.txt: architecture, sizes, pooling,
#    projection, normalisation, similarity); the MLM head, if any, is kept frozen. --finetune-from-model starts
#    from the import on the first launch only (fresh optimizer, schedule, meters and data order: what
#    --restore-file with the --reset-* flags does); later launches resume from checkpoint_last.pt.
SAVE="$WORK/contrastive"
if [ "$(updates_of "$SAVE/checkpoint_last.pt")" -lt "$UPDATES" ]; then
    read -r -a MODEL_ARGS < "$INIT/model_args.txt"
    # shellcheck disable=SC2086
    fairseq-train "$WORK/code-pairs" --user-dir "$ROOT/fairseq_ext" \
        "${MODEL_ARGS[@]}" "${CONTRASTIVE_ARGS[@]}" --finetune-from-model "$INIT/checkpoint.pt" \
        --optimizer adam --adam-betas "(0.9,0.999)" --adam-eps 1e-6 --weight-decay 0.01 --clip-norm 1.0 \
        --lr "$LR" --lr-scheduler polynomial_decay --warmup-updates "$WARMUP" --total-num-update "$UPDATES" \
        --max-update "$UPDATES" "${BATCH_ARGS[@]}" --update-freq "$UPDATE_FREQ" \
        $PRECISION --num-workers "$NUM_WORKERS" \
        --save-dir "$SAVE" --save-interval-updates "$INTERVAL" --keep-interval-updates 2 \
        --no-epoch-checkpoints --validate-interval-updates "$INTERVAL" \
        --log-format simple --log-interval 10 --tensorboard-logdir "$WORK/tensorboard" $EXTRA_TRAIN_ARGS
fi

# 5. Export the best checkpoint for sentence-transformers and measure it as step 3 measured the start.
export_and_evaluate "$SAVE/checkpoint_best.pt" "$WORK/code-pairs" "$WORK"
compare_evaluations "$WORK/eval-zero-shot.json" "$WORK/eval-retrieval.json"
echo "zero-shot: $WORK/eval-zero-shot.json; fine-tuned: $WORK/eval-retrieval.json; model: $WORK/st-model"
