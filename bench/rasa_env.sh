#!/usr/bin/env bash
# Build the optional Rasa Open Source toolchain used by the interop tests and
# bench/compare_rasa.py: Python 3.10 (pyenv) venv at var/rasa-venv with rasa==3.6.21.
# Never a runtime dependency of pcrm. Idempotent: does nothing when already built.
#   bash bench/rasa_env.sh            # or: make rasa-env
#   RASA_VENV=/path bash bench/rasa_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${RASA_VENV:-var/rasa-venv}"
RASA_VERSION="${RASA_VERSION:-3.6.21}"

if [ -x "$VENV/bin/rasa" ] && "$VENV/bin/python" -c "import rasa, sys; sys.exit(rasa.__version__ != '$RASA_VERSION')" 2>/dev/null; then
  echo "rasa $RASA_VERSION already in $VENV"
  exit 0
fi

PY310="${PY310:-}"
if [ -z "$PY310" ]; then
  if command -v pyenv >/dev/null 2>&1 && prefix="$(pyenv prefix 3.10.13 2>/dev/null)"; then
    PY310="$prefix/bin/python"
  elif command -v python3.10 >/dev/null 2>&1; then
    PY310="$(command -v python3.10)"
  else
    echo "no Python 3.10 interpreter (pyenv 3.10.13 or python3.10): cannot build $VENV" >&2
    exit 2
  fi
fi

# This machine's pip config lists local indexes that may be absent: drop those notices.
quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

mkdir -p "$(dirname "$VENV")"
"$PY310" -m venv "$VENV"
quiet "$VENV/bin/python" -m pip install -q --upgrade "pip<24.1" "setuptools<70" wheel
# Rasa 3.6 pins tensorflow 2.12 and friends; pip resolves them from PyPI.
quiet "$VENV/bin/python" -m pip install -q "rasa==$RASA_VERSION"
RASA_TELEMETRY_ENABLED=false "$VENV/bin/python" -c "import rasa; print('rasa', rasa.__version__, 'in $VENV')"
