#!/usr/bin/env bash
# Create .venv/ at the repo root and install strokescan with pinned versions (idempotent, offline-safe for torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.strokescan-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[test]"
    touch "$stamp"
fi
