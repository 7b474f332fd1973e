#!/usr/bin/env bash
# Creates the BLAST-CT peer environment for benchmarks/blast_ct_compare.py, OUTSIDE the repository, and puts the
# shared pretrained weights (model 1 of BLAST-CT version 1) where the blast-ct package looks for them, so that it
# never tries to download. BLAST-CT is a benchmark peer only: it is never a dependency of strokescan.
#
#   nice -n 19 bash benchmarks/blast_ct_setup.sh            # -> /work/blast-env (venv) + /work/blast-env/cache
#
# Settings (environment):
#   BLAST_ENV            the venv folder (default /work/blast-env); refused inside the repository
#   BLAST_CT_CACHE_DIR   where blast-ct looks for saved_models/model_<i>.torch_model (default $BLAST_ENV/cache);
#                        blast-ct's own default is ~/.cache/blast_ct, so the compare script passes this one on
#   BLAST_CT_PEER_DIR    the shared peer folder (default <repo>/../shared/peers/blast-ct)
#   PYTHON               interpreter for the venv (default python3; blast-ct needs >= 3.9, tested with 3.11.7)
#   TORCH_SPEC           default torch==2.13.0: on the CPU machines that is a local CPU wheel (pip's find-links);
#                        on a GPU machine the same pin from PyPI is the CUDA build (several GB)
# Idempotent: re-running reinstalls the same pins and re-checks the weights.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BLAST_ENV="${BLAST_ENV:-/work/blast-env}"
BLAST_CT_CACHE_DIR="${BLAST_CT_CACHE_DIR:-$BLAST_ENV/cache}"
BLAST_CT_PEER_DIR="${BLAST_CT_PEER_DIR:-$REPO/../shared/peers/blast-ct}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
MODEL_SHA256=95f76e8b16fe42b6aa49388cb798e282c55cd70191544f4417445bb87803f99f  # peers/blast-ct/PROVENANCE.md

BLAST_ENV="$(realpath -m "$BLAST_ENV")"
case "$BLAST_ENV/" in
  "$(realpath -m "$REPO")"/*) echo "blast_ct_setup: BLAST_ENV=$BLAST_ENV is inside the repository: choose a folder outside it" >&2
             exit 2 ;;
esac

if [ ! -x "$BLAST_ENV/bin/python" ]; then
  "$PYTHON" -m venv "$BLAST_ENV"
fi
"$BLAST_ENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 9), sys.version'

# blast-ct 2.1.0 and every package it pulls in, pinned as resolved on 2026-12-01 (pip check: no broken
# requirements). blast-ct asks for torch>=1.13, scipy>=1.10, numpy>=1.23, pandas>=1.5, SimpleITK>=2.2,
# tensorboard>=2.10: torch 2.13.0 satisfies it and its torch.load(map_location=...) reads the legacy weights.
REQ="$(mktemp)"
trap 'rm -f "$REQ"' EXIT
cat > "$REQ" <<EOF
blast-ct==2.1.0
$TORCH_SPEC
numpy==2.4.6
scipy==1.17.1
pandas==3.1.1
simpleitk==2.5.7
tensorboard==2.21.0
tensorboard-data-server==0.7.2
absl-py==2.5.1
grpcio==1.85.3
protobuf==7.36.2
markdown==3.11.3
werkzeug==3.1.9
markupsafe==3.0.4
packaging==26.4
pillow==13.0.0
python-dateutil==4.0.0
tzdata==2026.6
filelock==4.3.1
fsspec==2026.9.0
jinja2==3.1.6
mpmath==1.3.0
networkx==3.6.1
sympy==1.14.0
typing-extensions==4.16.0
EOF
"$BLAST_ENV/bin/python" -m pip install --quiet -r "$REQ"
"$BLAST_ENV/bin/python" -m pip check

# The weights: blast_ct/assets.py looks in the package's data/ folder, then in $BLAST_CT_CACHE_DIR (else
# ~/.cache/blast_ct) at saved_models/model_<i>.torch_model, and only then downloads.
SRC="$BLAST_CT_PEER_DIR/saved_models/model_1.pt"
DST="$BLAST_CT_CACHE_DIR/saved_models/model_1.torch_model"
[ -f "$SRC" ] || { echo "blast_ct_setup: no $SRC (set BLAST_CT_PEER_DIR)" >&2; exit 2; }
echo "$MODEL_SHA256  $SRC" | sha256sum -c --quiet -
mkdir -p "$(dirname "$DST")"
cp "$SRC" "$DST"
echo "$MODEL_SHA256  $DST" | sha256sum -c --quiet -

# Smoke check: the tool finds model 1 in the cache (no download) and its DeepMedic takes the weights.
OMP_NUM_THREADS=1 BLAST_CT_CACHE_DIR="$BLAST_CT_CACHE_DIR" "$BLAST_ENV/bin/python" - <<'EOF'
import json, os, torch
torch.set_num_threads(1)
from importlib.metadata import version
from blast_ct.assets import get_config_path, get_model_path
from blast_ct.read_config import get_model
path = get_model_path(1)
assert path.startswith(os.environ["BLAST_CT_CACHE_DIR"]), path
with open(get_config_path()) as f:
    model = get_model(json.load(f))
model.load_state_dict(torch.load(path, map_location="cpu"))
print(f"blast-ct {version('blast-ct')}, torch {torch.__version__}: model 1 loads from {path}")
EOF
echo "BLAST-CT env ready: $BLAST_ENV (cache $BLAST_CT_CACHE_DIR)."
echo "Compare: nice -n 19 .venv/bin/python benchmarks/blast_ct_compare.py --blast-python $BLAST_ENV/bin/python --blast-cache $BLAST_CT_CACHE_DIR ..."
