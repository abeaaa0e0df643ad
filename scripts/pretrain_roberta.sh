#!/usr/bin/env bash
# RoBERTa from scratch on your own text: prepare -> byte-level BPE tokenizer -> binarize ->
# masked-LM pretraining (dynamic masking) -> export to transformers (RobertaForMaskedLM).
# Edit the variables, then:   RAW=my-text/ bash scripts/pretrain_roberta.sh
# Rerunning resumes training from $WORK/checkpoints/checkpoint_last.pt.
set -euo pipefail

RAW=${RAW:-corpus/}                # raw text: files or directories
WORK=${WORK:-roberta-run}          # everything is written under here
DOC_SEP=${DOC_SEP:-blank-line}     # what ends a document in RAW: file | blank-line | line
VOCAB=${VOCAB:-50265}              # byte-level BPE size (RoBERTa layout: <s> <pad> </s> <unk> <mask> first)
ARCH=${ARCH:-roberta_small}        # roberta_small | roberta_base | roberta_large
TOKENS_PER_SAMPLE=${TOKENS_PER_SAMPLE:-512}
BREAK_MODE=${BREAK_MODE:-complete} # none (packed) | complete | complete_doc | eos (line by line)
MASK_UNIT=${MASK_UNIT:-subword}    # subword | word (whole-word masking) | span
MAX_TOKENS=${MAX_TOKENS:-8192}     # tokens per GPU per step
UPDATE_FREQ=${UPDATE_FREQ:-4}      # gradient accumulation
MAX_UPDATE=${MAX_UPDATE:-125000}
LR=${LR:-6e-4}
WARMUP=${WARMUP:-10000}
PRECISION=${PRECISION---fp16}      # --fp16 (V100), --bf16 (A100/H100) or "" (CPU)
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:-} # anything else for fairseq-train, e.g. "--encoder-layers 6 --cpu"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$WORK/text/train.txt" ]; then
    fairseq-ext prepare $RAW -o "$WORK/text" --doc-sep "$DOC_SEP" --valid-ratio 0.01
fi
if [ ! -f "$WORK/tokenizer/tokenizer.json" ]; then
    fairseq-ext train-tokenizer -i "$WORK/text/train.txt" -o "$WORK/tokenizer" --kind bpe --vocab-size "$VOCAB" --test
fi
if [ ! -f "$WORK/data-bin/train.idx" ]; then
    fairseq-ext binarize --tokenizer "$WORK/tokenizer" --train "$WORK/text/train.txt" \
        --valid "$WORK/text/valid.txt" -o "$WORK/data-bin" --max-line-tokens $((TOKENS_PER_SAMPLE - 2))
fi

# shellcheck disable=SC2086
fairseq-train "$WORK/data-bin" --user-dir "$ROOT/fairseq_ext" \
    --task hf_masked_lm --arch "$ARCH" --criterion masked_lm_with_accuracy \
    --tokens-per-sample "$TOKENS_PER_SAMPLE" --sample-break-mode "$BREAK_MODE" \
    --mask-prob 0.15 --mask-unit "$MASK_UNIT" \
    --optimizer adam --adam-betas "(0.9,0.98)" --adam-eps 1e-6 --weight-decay 0.01 --clip-norm 0.0 \
    --lr "$LR" --lr-scheduler polynomial_decay --warmup-updates "$WARMUP" --total-num-update "$MAX_UPDATE" \
    --dropout 0.1 --attention-dropout 0.1 \
    --max-tokens "$MAX_TOKENS" --update-freq "$UPDATE_FREQ" --max-update "$MAX_UPDATE" \
    $PRECISION --num-workers 4 \
    --save-dir "$WORK/checkpoints" --save-interval-updates 5000 --keep-interval-updates 3 --no-epoch-checkpoints \
    --validate-interval-updates 5000 --log-format simple --log-interval 100 \
    --tensorboard-logdir "$WORK/tensorboard" $EXTRA_TRAIN_ARGS

fairseq-ext export-hf "$WORK/checkpoints/checkpoint_best.pt" -o "$WORK/hf-model" --overwrite
