#!/usr/bin/env bash
# The project's checks on an accelerator (see fbp_jax/tools/gpu_check.py): the benchmark of every
# variant at the paper's AFEW sizes in float32 and bfloat16, the PyTorch peer beside ours (pmap
# and jit) at the same sizes, pmap and jit against one device, a short training run whose loss
# must fall, and the jax.export bundle on this platform. Results (tables and JSON) go to OUT_DIR.
#
#   bash scripts/gpu_check.sh [--smoke] [OUT_DIR] [FLAGS...]
#     (no flag)   on a GPU machine, under 8 minutes
#     --smoke     tiny sizes, about 4 minutes on a 2-core CPU
#     FLAGS       passed on, e.g. --checks=peer --peer_python=/tmp/torchpeer/bin/python
#
# It runs on the lent GPU machine as it is: the Python that has JAX (FBP_PYTHON, else .venv, else
# python3), TensorFlow never needed, and nothing fetched from the network. The small pure-Python
# packages that machine lacks (clu, ml_collections) come as wheels in the carried folder
# GPU_CARRY (default gpu_carry/, made where PyPI is reachable by scripts/gpu_prepare.sh) and are
# installed from there alone; the PyTorch peer's file, when that folder holds one
# (peer/amfbp_torch.py), is timed beside ours.
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=()
if [ "${1:-}" = "--smoke" ]; then SMOKE=(--smoke); shift; fi
OUT=gpu_check
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then OUT=$1; shift; fi
CARRY=${GPU_CARRY:-gpu_carry}
PY=${FBP_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
"$PY" -c "import jax" 2>/dev/null || { echo "error: $PY has no JAX; set FBP_PYTHON" >&2; exit 2; }
missing=()
for mod in flax optax orbax.checkpoint clu ml_collections absl scipy; do
  "$PY" -c "import $mod" 2>/dev/null || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then
  if ! ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
    echo "error: $PY lacks ${missing[*]} and $CARRY/wheels/ has no wheels; run" \
      "'bash scripts/gpu_prepare.sh' where PyPI is reachable and carry $CARRY" >&2
    exit 2
  fi
  SITE=$(mktemp -d /tmp/fbp_site.XXXXXX)
  echo "installing ${missing[*]} from $CARRY/wheels (no network)"
  "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
    --target "$SITE" "$CARRY"/wheels/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  for mod in "${missing[@]}"; do
    "$PY" -c "import $mod" || { echo "error: $mod still missing after the wheels" >&2; exit 2; }
  done
fi
PEER=()
if [ -f "${FBP_PEER:-$CARRY/peer/amfbp_torch.py}" ]; then
  PEER=(--peer="${FBP_PEER:-$CARRY/peer/amfbp_torch.py}")
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m fbp_jax.tools.gpu_check --out="$OUT" "${SMOKE[@]}" "${PEER[@]}" "$@"
