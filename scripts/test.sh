#!/usr/bin/env bash
# The whole test suite, from a bare machine: makes .venv if needed, installs the
# package with its test extras, then runs ruff, mypy and pytest.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,frameworks]" 2>&1 | grep -v "^WARNING: Location" || true
echo "== ruff"
.venv/bin/ruff check abeja_runtime tests benchmarks examples
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
