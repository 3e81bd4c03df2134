#!/usr/bin/env bash
# The project's checks on an accelerator (see fbp_jax/tools/gpu_check.py): the benchmark of every
# variant at the paper's AFEW sizes in float32 and bfloat16, pmap over all local devices against
# one device, a short training run whose loss must fall, and the jax.export bundle on this
# platform. Results (table and JSON) go to OUT_DIR (default: gpu_check/).
#
#   bash scripts/gpu_check.sh [OUT_DIR]            on a GPU machine (under 8 minutes)
#   bash scripts/gpu_check.sh --smoke [OUT_DIR]    tiny sizes, about 3 minutes on a 2-core CPU
#
# It runs on a bare machine with JAX: it uses the Python that has JAX (FBP_PYTHON, else .venv,
# else python3), installs the small pure-Python packages the checks import if they are missing
# (clu, ml_collections, optax, orbax-checkpoint, flax, absl-py), and never needs TensorFlow.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=()
if [ "${1:-}" = "--smoke" ]; then SMOKE=(--smoke); shift; fi
OUT=${1:-gpu_check}
PY=${FBP_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
"$PY" -c "import jax" 2>/dev/null || { echo "error: $PY has no JAX; set FBP_PYTHON" >&2; exit 2; }
for mod in flax optax orbax.checkpoint clu ml_collections absl scipy; do
  if ! "$PY" -c "import $mod" 2>/dev/null; then
    pkg=${mod/orbax.checkpoint/orbax-checkpoint}; pkg=${pkg/ml_collections/ml-collections}
    pkg=${pkg/absl/absl-py}
    echo "installing $pkg for the checks"
    "$PY" -m pip install --quiet "$pkg" -c constraints.txt 2>/dev/null || "$PY" -m pip install --quiet "$pkg"
  fi
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m fbp_jax.tools.gpu_check --out="$OUT" "${SMOKE[@]}"
