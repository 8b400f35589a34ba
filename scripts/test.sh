#!/usr/bin/env bash
# The whole test suite, from a bare machine: makes a virtual environment if needed,
# installs the package with its test extras, then runs ruff (lint and format check),
# mypy and pytest.
#
# Usage: bash scripts/test.sh [--fast] [pytest args...]
#   (default)  .venv with the test and framework extras; every test.
#   --fast     .venv-fast with the test extras only (no torch, keras, lightning,
#              transformers); the tests not marked slow or framework.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
EXTRAS="test,frameworks"
MARKS=()
if [ "${1:-}" = "--fast" ]; then
  shift
  VENV=.venv-fast
  EXTRAS="test"
  MARKS=(-m "not slow and not framework")
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -U pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[$EXTRAS]" 2>&1 | grep -v "^WARNING: Location" || true
echo "== ruff"
"$VENV/bin/ruff" check abeja_runtime tests benchmarks examples
"$VENV/bin/ruff" format --check abeja_runtime tests benchmarks examples
echo "== mypy"
"$VENV/bin/mypy"
echo "== pytest"
exec "$VENV/bin/python" -m pytest ${MARKS[@]+"${MARKS[@]}"} "$@"
