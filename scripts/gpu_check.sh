#!/usr/bin/env bash
# The GPU check (docs/gpu.md): every task trains 30 updates in --fp16, --bf16 and --amp, resumes and exports,
# then throughput and MFU against transformers; about 6 minutes on one H100; writes ONE JSON file.
#   bash scripts/gpu_check.sh [--json FILE] [--budget SECONDS] [--workers N] ...   (arguments go to
#   benchmarks/gpu_check.py; --device cpu rehearses it at toy sizes)
# Variables: GPU_CHECK_JSON  the report (default: gpu-check.json in the current directory; --json overrides it)
#            FAIRSEQ_EXT_VENV  the virtualenv (default: .venv in the repository)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${FAIRSEQ_EXT_VENV:-$ROOT/.venv}
# A GPU machine may have no internet: set up only when the virtualenv cannot run this repository's fairseq_ext.
if ! "$VENV/bin/python" -c 'import pathlib, sys, fairseq_ext
sys.exit(pathlib.Path(fairseq_ext.__file__).resolve().parents[1] != pathlib.Path(sys.argv[1]).resolve())' \
        "$ROOT" >/dev/null 2>&1; then
    bash "$ROOT/scripts/setup_env.sh"
fi
exec "$VENV/bin/python" "$ROOT/benchmarks/gpu_check.py" --json "${GPU_CHECK_JSON:-gpu-check.json}" "$@"
