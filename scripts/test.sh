#!/usr/bin/env bash
# Install lmstrix with its test dependencies into .venv and run the whole test suite.
# Tests that need Redis or PostgreSQL skip with a reason when those do not answer, except under
# CI=true, where they must run (.ci/run starts both).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS=dev source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
