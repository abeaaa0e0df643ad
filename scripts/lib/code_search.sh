# Shell helpers shared by the code-search recipes: scripts/pretrain_code.sh, scripts/finetune_code_search.sh
# and the contrastive stage of scripts/slurm/pretrain_code.sbatch. Source it (it defines functions and
# nothing else); each function's comment names the variables it reads. `fairseq-ext` and `python` are the
# virtualenv's (the recipes run with it on PATH).

# die MESSAGE...: one line on stderr naming the recipe, exit 2 (a setting is wrong; nothing was started).
die() {
    echo "${RECIPE:-$(basename "$0")}: $*" >&2
    exit 2
}

# one_of NAME VALUE CHOICE...: VALUE must be one of the CHOICEs.
one_of() {
    local name=$1 value=$2 choice
    shift 2
    for choice in "$@"; do [ "$value" = "$choice" ] && return 0; done
    die "$name must be one of $*, got '$value'"
}

# whole_number NAME VALUE: VALUE must be 0, 1, 2 ...
whole_number() {
    [[ $2 =~ ^[0-9]+$ ]] || die "$1 must be a whole number, got '$2'"
}

# positive_number NAME VALUE: a decimal such as 2e-5, 0.05 or 10, above zero.
positive_number() {
    [[ $2 =~ ^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]] && [[ ! $2 =~ ^[0.]+([eE].*)?$ ]] ||
        die "$1 must be a number above 0, got '$2'"
}

# check_contrastive_settings: the variables contrastive_args reads, checked before anything runs.
check_contrastive_settings() {
    one_of TOWERS "$TOWERS" shared separate
    one_of LEARN_TEMPERATURE "$LEARN_TEMPERATURE" 0 1
    one_of SYMMETRIC "$SYMMETRIC" 0 1
    positive_number TEMPERATURE "$TEMPERATURE"
    whole_number QUEUE_SIZE "$QUEUE_SIZE"
    whole_number GRAD_CACHE_CHUNK "$GRAD_CACHE_CHUNK"
    whole_number QUERY_TOKENS "$QUERY_TOKENS"
    whole_number KEY_TOKENS "$KEY_TOKENS"
}

# contrastive_args: CONTRASTIVE_ARGS, the code_contrastive/info_nce flags every recipe passes, from TEMPERATURE,
# LEARN_TEMPERATURE, SYMMETRIC, QUEUE_SIZE, GRAD_CACHE_CHUNK (0: off), TOWERS, QUERY_TOKENS and KEY_TOKENS.
# The best checkpoint is the one with the highest MRR of the whole held-out pool (every validation ranks
# every held-out query against every held-out key). Batches hold as many pairs as the budget allows:
# fairseq's default rounds them down to multiples of 8 and drops a last batch of another size, which
# empties a small held-out split (and crashes validation) and leaves pairs out of every epoch.
contrastive_args() {
    check_contrastive_settings
    CONTRASTIVE_ARGS=(--task code_contrastive --criterion info_nce --temperature "$TEMPERATURE"
        --queue-size "$QUEUE_SIZE" --grad-cache-chunk "$GRAD_CACHE_CHUNK"
        --max-query-tokens "$QUERY_TOKENS" --max-key-tokens "$KEY_TOKENS"
        --best-checkpoint-metric mrr --maximize-best-checkpoint-metric --required-batch-size-multiple 1)
    if [ "$TOWERS" = separate ]; then CONTRASTIVE_ARGS+=(--separate-towers); fi
    if [ "$LEARN_TEMPERATURE" = 1 ]; then CONTRASTIVE_ARGS+=(--learn-temperature); fi
    if [ "$SYMMETRIC" = 1 ]; then CONTRASTIVE_ARGS+=(--symmetric); fi
    return 0
}

# check_init_hf: INIT_HF must be a sentence-transformers directory (modules.json), or a bare transformers
# encoder directory with POOLING (first | mean | max) set.
check_init_hf() {
    [ -d "$INIT_HF" ] || die "INIT_HF=$INIT_HF: no such directory (a sentence-transformers or transformers model)"
    [ -f "$INIT_HF/config.json" ] || [ -f "$INIT_HF/modules.json" ] ||
        die "INIT_HF=$INIT_HF: neither modules.json (sentence-transformers) nor config.json (transformers) is there"
    if [ -n "$POOLING" ]; then one_of POOLING "$POOLING" first mean max; fi
    [ -f "$INIT_HF/modules.json" ] || [ -n "$POOLING" ] ||
        die "INIT_HF=$INIT_HF has no modules.json (a bare encoder): set POOLING=mean, first or max"
}

# import_init_hf OUT: import INIT_HF (with POOLING for a bare encoder) into OUT for code_contrastive, once. OUT
# records where it came from: a later run with another INIT_HF or POOLING stops instead of mixing the two.
import_init_hf() {
    local out=$1 origin
    check_init_hf
    origin="INIT_HF=$(cd "$INIT_HF" && pwd) POOLING=$POOLING"
    if [ ! -f "$out/checkpoint.pt" ]; then
        local pooling=()
        if [ -n "$POOLING" ]; then pooling=(--pooling "$POOLING"); fi
        fairseq-ext import-hf "$INIT_HF" -o "$out" "${pooling[@]}" --overwrite
        echo "$origin" > "$out/origin.txt"
    elif [ -f "$out/origin.txt" ] && [ "$(cat "$out/origin.txt")" != "$origin" ]; then
        die "$out was imported from $(cat "$out/origin.txt"), not $origin: use another WORK"
    fi
    grep -q -- "--task code_contrastive" "$out/model_args.txt" ||
        die "$out/model_args.txt is no code_contrastive model (an import for masked-LM training): remove $out"
}

# check_sides_fit DIR: QUERY_TOKENS and KEY_TOKENS (bos and eos included) within the positions of the model whose
# flags DIR/model_args.txt holds (--max-positions), before training meets an index error.
check_sides_fit() {
    local args positions name
    read -r -a args < "$1/model_args.txt"
    for i in "${!args[@]}"; do
        if [ "${args[$i]}" = --max-positions ]; then positions=${args[$((i + 1))]}; fi
    done
    [ -n "${positions:-}" ] || return 0
    for name in QUERY_TOKENS KEY_TOKENS; do
        [ "${!name}" -le "$positions" ] ||
            die "$name=${!name} is longer than the model's $positions positions (--max-positions in $1/model_args.txt)"
    done
}

# updates_of CHECKPOINT: the number of updates it was saved after (0 when it does not exist).
updates_of() {
    if [ ! -f "$1" ]; then echo 0; return; fi
    python -c 'import sys
from fairseq_ext.serialization import safe_torch_load
history = safe_torch_load(sys.argv[1], map_location="cpu").get("optimizer_history") or [{}]
print(history[-1].get("num_updates", 0))' "$1"
}

# export_and_evaluate CHECKPOINT PAIRS OUT: the sentence-transformers model users search with, OUT/st-model
# (with TOWERS=separate also OUT/st-model-keys, the key tower), then the honest measurement: every held-out
# query of PAIRS against every held-out key, beside BM25 and chance, and on the renamed (AdvTest-style) pool,
# in OUT/eval-retrieval.json. The model measured is the export itself (one tower embeds both sides), or the
# checkpoint with separate towers. Each step is skipped when its output is newer than its input.
export_and_evaluate() {
    local ckpt=$1 pairs=$2 out=$3 measured stamp
    if [ ! "$out/st-model/modules.json" -nt "$ckpt" ]; then
        fairseq-ext export-hf "$ckpt" -o "$out/st-model" --format sentence-transformers --overwrite
    fi
    measured=$out/st-model
    stamp=$out/st-model/modules.json
    if [ "$TOWERS" = separate ]; then
        if [ ! "$out/st-model-keys/modules.json" -nt "$ckpt" ]; then
            fairseq-ext export-hf "$ckpt" -o "$out/st-model-keys" --tower key --format sentence-transformers \
                --overwrite
        fi
        measured=$ckpt
        stamp=$ckpt
    fi
    if [ ! "$out/eval-retrieval.json" -nt "$stamp" ]; then
        fairseq-ext eval-retrieval "$measured" --pairs "$pairs" --rename \
            --max-query-tokens "$QUERY_TOKENS" --max-key-tokens "$KEY_TOKENS" --json "$out/eval-retrieval.json"
    fi
}

# compare_evaluations BEFORE AFTER: one line per pool, the MRR of the model in eval-retrieval's JSON BEFORE
# (the starting model) and AFTER (fine-tuned), beside BM25's.
compare_evaluations() {
    python -c 'import json, sys
before, after = (json.load(open(p)) for p in sys.argv[1:])
for pool in ("pool", "renamed"):
    if pool in before and pool in after:
        b, a = before[pool]["scores"], after[pool]["scores"]
        print("%s MRR (%d pairs): start %.4f -> fine-tuned %.4f; BM25 %.4f" % (
            pool, after[pool]["pairs"], b["model"]["mrr"], a["model"]["mrr"], a["BM25"]["mrr"]))' "$1" "$2"
}
