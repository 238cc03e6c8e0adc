#!/usr/bin/env bash
# Quick start: install lmstrix into .venv and run its main job on the embedded defaults.
# Uses LM Studio at LMSTRIX_BASE_URL (default http://localhost:1234) when it answers; otherwise
# starts the built-in LM Studio emulator (with a real small model when it could be installed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
start=$(date +%s%N)
source "$ROOT/scripts/bootstrap.sh"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "lmstrix installed in $((ms / 1000)).$(( (ms % 1000) / 100 ))s"
exec "$ROOT/.venv/bin/lmstrix" demo "$@"
