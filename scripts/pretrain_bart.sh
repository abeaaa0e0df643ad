#!/usr/bin/env bash
# The whole BART recipe on your own text: prepare -> tokenizer -> binarize -> pretrain -> export.
# Edit the variables, then:   bash scripts/pretrain_bart.sh
# Rerunning resumes training from $WORK/checkpoints/checkpoint_last.pt.
set -euo pipefail

RAW=${RAW:-books/}                 # raw text: files or directories
WORK=${WORK:-bart-run}             # everything is written under here
DOC_SEP=${DOC_SEP:-file}           # what ends a document in RAW: file | blank-line | line
VOCAB=${VOCAB:-50265}              # byte-level BPE size (BART/RoBERTa layout)
ARCH=${ARCH:-bart_small}           # bart_small | bart_base | bart_large
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-512}
MAX_TOKENS=${MAX_TOKENS:-8192}     # tokens per GPU per step
UPDATE_FREQ=${UPDATE_FREQ:-4}      # gradient accumulation
MAX_UPDATE=${MAX_UPDATE:-100000}
LR=${LR:-5e-4}
WARMUP=${WARMUP:-10000}
PRECISION=${PRECISION---fp16}     # --fp16 (V100), --bf16 (A100/H100) or "" (CPU)
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-} # anything else for fairseq-train, e.g. "--encoder-layers 3 --cpu"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$WORK/text/train.txt" ]; then
    fairseq-ext prepare $RAW -o "$WORK/text" --doc-sep "$DOC_SEP" --valid-ratio 0.01
fi
if [ ! -f "$WORK/tokenizer/tokenizer.json" ]; then
    fairseq-ext train-tokenizer -i "$WORK/text/train.txt" -o "$WORK/tokenizer" --vocab-size "$VOCAB" --test
fi
if [ ! -f "$WORK/data-bin/train.idx" ]; then
    fairseq-ext binarize --tokenizer "$WORK/tokenizer" --train "$WORK/text/train.txt" \
        --valid "$WORK/text/valid.txt" -o "$WORK/data-bin" --max-line-tokens $((TOKENS_PER_SAMPLE - 2))
fi

fairseq-train "$WORK/data-bin" --user-dir "$ROOT/fairseq_ext" \
    --task hf_denoising --arch "$ARCH" --criterion cross_entropy_with_accuracy \
    --tokens-per-sample "$TOKENS_PER_SAMPLE" --sample-break-mode complete_doc \
    --mask 0.3 --mask-length span-poisson --poisson-lambda 3.5 --replace-length 1 \
    --permute-sentences 1.0 --rotate 0.0 --mask-random 0.1 --insert 0.0 \
    --share-all-embeddings --layernorm-embedding \
    --optimizer adam --adam-betas "(0.9,0.98)" --adam-eps 1e-6 --weight-decay 0.01 --clip-norm 0.1 \
    --lr "$LR" --lr-scheduler polynomial_decay --warmup-updates "$WARMUP" --total-num-update "$MAX_UPDATE" \
    --dropout 0.1 --attention-dropout 0.1 \
    --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" --max-update "$MAX_UPDATE" \
    $PRECISION --num-workers 4 \
    --save-dir "$WORK/checkpoints" --save-interval-updates 5000 --keep-interval-updates 3 --no-epoch-checkpoints \
    --validate-interval-updates 5000 --log-format simple --log-interval 100 \
    --tensorboard-logdir "$WORK/tensorboard" $EXTRA_TRAIN_ARGS

fairseq-ext export-hf "$WORK/checkpoints/checkpoint_best.pt" -o "$WORK/hf-model" --overwrite
