#!/usr/bin/env bash
# The README's first command: train a real example exactly as ABEJA Platform would run
# it, through `abeja-runtime run`, against the embedded Training API emulator (no
# account, no credentials), and print the model id at the end.
#
# On a fresh machine it makes .venv (if missing) and installs the package with the
# emulator extra plus what the example needs (examples/<name>/requirements.txt).
#
# Usage: bash scripts/run-example.sh [EXAMPLE] [extra `abeja-runtime run` options...]
#   EXAMPLE  a directory under examples/ with train.py:handler (default: the first of
#            pytorch_loop, pytorch, numpy_loop that exists, else the first example).
# Environment:
#   PYTHON                     interpreter that makes .venv (default python3)
#   ABEJA_RUNTIME_EMULATOR_DIR where the emulator keeps its state (default per user)
set -euo pipefail
cd "$(dirname "$0")/.."

pick_example() {
  local name
  for name in pytorch_loop pytorch numpy_loop; do
    if [ -f "examples/$name/train.py" ]; then echo "$name"; return; fi
  done
  for name in examples/*/train.py; do
    if [ -f "$name" ]; then basename "$(dirname "$name")"; return; fi
  done
}

EXAMPLE=""
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then EXAMPLE=$1; shift; fi
EXAMPLE=${EXAMPLE:-$(pick_example)}
if [ -z "$EXAMPLE" ] || [ ! -f "examples/$EXAMPLE/train.py" ]; then
  echo "run-example: no example 'examples/${EXAMPLE:-?}/train.py'; available:" \
    "$(ls examples 2>/dev/null | tr '\n' ' ')" >&2
  exit 2
fi
DIR="examples/$EXAMPLE"

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "run-example: creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
PIP_LOG=$(mktemp "${TMPDIR:-/tmp}/abeja-runtime-pip.XXXXXX")
OUTCOME=$(mktemp "${TMPDIR:-/tmp}/abeja-runtime-outcome.XXXXXX")
trap 'rm -f "$PIP_LOG" "$OUTCOME"' EXIT
pip_install() {  # quiet unless it fails
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >"$PIP_LOG" 2>&1; then
    cat "$PIP_LOG" >&2
    echo "run-example: pip install $* failed" >&2
    exit 1
  fi
}
pip_install -U pip
echo "run-example: installing abeja-runtime[emulator] into .venv"
pip_install -e ".[emulator,progress]"

REQS="$DIR/requirements.txt"
if [ -f "$REQS" ]; then
  # Already-installed packages that satisfy the pins (the CPU torch of the test
  # machines, for instance) are kept as they are.
  echo "run-example: installing $REQS"
  pip_install -r "$REQS"
fi

# The embedded emulator answers only when no platform credential is set: make sure
# this command never reaches a real platform by accident.
unset PLATFORM_AUTH_TOKEN ABEJA_PLATFORM_USER_ID ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN \
  ABEJA_PLATFORM_DATASOURCE_ID ABEJA_PLATFORM_DATASOURCE_SECRET ABEJA_API_URL \
  ABEJA_ORGANIZATION_ID

status=0
.venv/bin/abeja-runtime run train:handler --source "$DIR" --output-json "$OUTCOME" "$@" \
  || status=$?
if [ -s "$OUTCOME" ]; then
  .venv/bin/python - "$OUTCOME" <<'PY'
import json, sys
outcome = json.load(open(sys.argv[1]))
print(f"run-example: job {outcome['training_job_id']} {outcome['status']}")
print(f"run-example: model id: {outcome['training_model_id'] or '(none: ' + str(outcome['model_note']) + ')'}")
PY
fi
exit "$status"
