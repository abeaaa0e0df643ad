#!/usr/bin/env bash
# The whole BART recipe on your own text: prepare -> tokenizer -> binarize -> pretrain -> export.
# Edit the variables, then:   bash scripts/pretrain_bart.sh
# Rerunning resumes training from $WORK/checkpoints/checkpoint_last.pt.
#
# Sharded data (SHARDS=N > 1): binarize writes $WORK/data-bin/shard0 ... shard{N-1}, each training
# document whole in one shard (sizes balanced), validation in shard0 only; fairseq-train then reads
# DATA=shard0:shard1:...: epoch k trains on shard (k-1) mod N (fairseq reloads the train split every
# epoch, so only one shard's index is open at a time) and validates on shard0. A run stopped in the
# middle of a shard resumes there. To shard by hand:
#   fairseq-ext binarize --tokenizer TOK --train train.txt --valid valid.txt -o data-bin --shards 4
#   fairseq-train data-bin/shard0:data-bin/shard1:data-bin/shard2:data-bin/shard3 --user-dir fairseq_ext ...
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
SHARDS=${SHARDS:-1}                # N > 1: binarize into N shards, one per epoch in turn (see above)
PRECISION=${PRECISION---fp16}     # --fp16 (V100), --bf16 (A100/H100) or "" (CPU)
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-} # anything else for fairseq-train, e.g. "--encoder-layers 3 --cpu"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$WORK/text/train.txt" ]; then
    fairseq-ext prepare $RAW -o "$WORK/text" --doc-sep "$DOC_SEP" --valid-ratio 0.01
fi
if [ ! -f "$WORK/tokenizer/tokenizer.json" ]; then
    fairseq-ext train-tokenizer -i "$WORK/text/train.txt" -o "$WORK/tokenizer" --vocab-size "$VOCAB" --test
fi
if [ ! -f "$WORK/data-bin/binarize.json" ]; then   # written last: the directory is complete
    fairseq-ext binarize --tokenizer "$WORK/tokenizer" --train "$WORK/text/train.txt" \
        --valid "$WORK/text/valid.txt" -o "$WORK/data-bin" --max-line-tokens $((TOKENS_PER_SAMPLE - 2)) \
        --shards "$SHARDS"
fi
DATA="$WORK/data-bin"
if [ "$SHARDS" -gt 1 ]; then   # data-bin/shard0:data-bin/shard1:...
    DATA=$(for i in $(seq 0 $((SHARDS - 1))); do printf '%s:' "$WORK/data-bin/shard$i"; done)
    DATA=${DATA%:}
fi

# The noise is BART's: hf_denoising's defaults (fairseq_ext/data/noising.py, NoiseConfig); change a
# setting through EXTRA_TRAIN_ARGS, e.g. "--mask 0.4 --rotate 0.1".
fairseq-train "$DATA" --user-dir "$ROOT/fairseq_ext" \
    --task hf_denoising --arch "$ARCH" --criterion cross_entropy_with_accuracy \
    --tokens-per-sample "$TOKENS_PER_SAMPLE" --sample-break-mode complete_doc \
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
