#!/usr/bin/env bash
# Create .venv and install the project with its test dependencies.
# On a fresh Debian/Ubuntu the venv module may be missing: install it when we can.
set -euo pipefail
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "Flex Agents needs Python >= 3.11 (found $("$PYTHON" --version 2>&1))." >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    ver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "Installing python${ver}-venv with apt-get…"
      apt-get update -qq && (apt-get install -y -qq "python${ver}-venv" || apt-get install -y -qq python3-venv)
    else
      echo "The Python venv module is missing: run 'sudo apt-get install python${ver}-venv' and retry." >&2
      exit 1
    fi
    "$PYTHON" -m venv .venv
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# The agent SDK (clients/python): the example agent and the agent tests use it.
.venv/bin/python -m pip install -q -e ./clients/python
