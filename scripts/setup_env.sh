#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv and install fairseq_ext into it.
# Used by scripts/demo.sh and scripts/test.sh; safe to run again (it skips work
# that is already done). Variables:
#   FAIRSEQ_EXT_VENV  where the virtualenv lives (default: .venv in the repository)
#   PYTHON            the interpreter to build it from (default: python3)
#   TORCH_SPEC        the torch requirement installed first (default: torch==2.13.0;
#                     on a GPU machine use the CUDA build you want, e.g. "torch==2.13.0")
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${FAIRSEQ_EXT_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing $TORCH_SPEC"
    "${PIP[@]}" install -q "$TORCH_SPEC"
fi

# Reinstall only when the package's requirements changed.
STAMP="$VENV/.fairseq_ext-installed"
WANT=$(sha256sum < "$ROOT/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "setup: installing fairseq_ext and its requirements (fairseq compiles once, ~5 min, then pip caches it)"
    "${PIP[@]}" install -q -e "$ROOT[test]"
    # fairseq pulls in torchaudio, whose newest build may not load beside the chosen torch (a CUDA
    # build next to a CPU torch, or an older release). fairseq_ext itself copes with that (it makes
    # such a torchaudio look absent; tests/test_install.py checks a plain `pip install -e .` without
    # this script), but a script of your own that imports transformers models before fairseq_ext
    # would fail in this environment, so here a torchaudio that cannot load is removed, and said so.
    if "$VENV/bin/python" -m pip show torchaudio >/dev/null 2>&1 && ! "$VENV/bin/python" -c "import torchaudio" >/dev/null 2>&1; then
        echo "setup: removing torchaudio: it does not load beside this torch (no text model needs it)"
        "${PIP[@]}" uninstall -q -y torchaudio
    fi
    echo "$WANT" > "$STAMP"
fi
