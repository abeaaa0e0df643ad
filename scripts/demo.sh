#!/usr/bin/env bash
# The main job: set up, then run the whole recipe on the built-in corpus.
#   bash scripts/demo.sh [-o DIR] [--max-update N] ...   (arguments go to `fairseq-ext demo`)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
VENV=${FAIRSEQ_EXT_VENV:-$ROOT/.venv}
if [ "$#" -eq 0 ]; then set -- -o "$ROOT/demo-out" --overwrite; fi
exec "$VENV/bin/fairseq-ext" demo "$@"
