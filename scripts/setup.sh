#!/usr/bin/env bash
# Create .venv/ at the repo root and install strokescan with pinned versions (idempotent, offline-safe for torch);
# with --system (CI, the test command) also the Debian packages the tests drive: Chromium (browser tests), Orthanc
# and DCMTK (the PACS and the scanner in the DICOM integration tests), PostgreSQL (the multi-machine database tests).
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
if [ "${1:-}" = "--system" ]; then
    need=()
    command -v chromium >/dev/null || need+=(chromium)
    command -v Orthanc >/dev/null || need+=(orthanc)
    command -v storescu >/dev/null || need+=(dcmtk)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" != 0 ]; then
            echo "setup: the browser tests need Debian packages: sudo apt-get install ${need[*]}" >&2
        else
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
        fi
    fi
fi
