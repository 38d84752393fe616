#!/usr/bin/env bash
# One entry point for people and CI:
#   ./run.sh demo   the whole job on synthetic data in a local folder (var/)
#   ./run.sh test   lint, type-check and the test suite (starts and stops Azurite itself)
#   ./run.sh test-browser  the pages in headless Chromium (/docs offline, the model card)
#   ./run.sh serve  the HTTP API on http://127.0.0.1:8000 over the demo's store (/docs)
# Each command first creates .venv and installs the pinned requirements if needed.
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY="$VENV/bin/python"

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      echo "$candidate"; return
    fi
  done
  echo "Python 3.11 is required (python3.11 or python3 on PATH)" >&2
  exit 1
}

python_env() {
  local stamp="$VENV/.installed"
  if [[ ! -f "$stamp" || requirements.txt -nt "$stamp" || requirements-dev.txt -nt "$stamp" ]]; then
    [[ -x "$PY" ]] || "$(find_python)" -m venv "$VENV"
    echo "installing Python requirements into $VENV (the first time builds LightFM: a minute or two)" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
    touch "$stamp"
  fi
}

node_env() {
  local stamp="node_modules/.installed"
  if [[ ! -f "$stamp" || package-lock.json -nt "$stamp" ]]; then
    echo "installing Azurite (npm ci)" >&2
    npm ci --no-audit --no-fund --loglevel=error
    touch "$stamp"
  fi
}

case "${1:-}" in
  demo)
    python_env
    shift
    exec "$PY" -m shared demo "$@"
    ;;
  test)
    python_env
    node_env
    shift
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    "$VENV/bin/mypy"
    exec "$PY" -m pytest "$@"
    ;;
  test-browser)
    python_env
    shift
    exec "$PY" -m pytest -m browser "$@"
    ;;
  serve)
    python_env
    shift
    exec "$PY" -m shared serve "$@"
    ;;
  *)
    echo "usage: ./run.sh demo|test|test-browser|serve [arguments]" >&2
    exit 2
    ;;
esac
