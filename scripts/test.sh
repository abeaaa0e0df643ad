#!/usr/bin/env bash
# The test suite: set up, lint with ruff, check the import layers (lint-imports), then run every test
# (slow end-to-end ones included).
#   bash scripts/test.sh [pytest arguments]     e.g. -m "not slow" for the quick ones only
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
VENV=${FAIRSEQ_EXT_VENV:-$ROOT/.venv}
cd "$ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/lint-imports" --no-cache
exec "$VENV/bin/python" -m pytest "$@"
