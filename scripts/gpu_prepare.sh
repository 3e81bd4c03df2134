#!/usr/bin/env bash
# Run where PyPI is reachable, before a GPU check: fills the carried folder (default gpu_carry/,
# ignored by git) with what the lent GPU machine lacks, so that scripts/gpu_check.sh needs no
# network there:
#   wheels/  clu and ml_collections (pure Python, the versions of constraints.txt)
#   peer/    the PyTorch peer's file, when given or found at ../shared/peers/amfbp_torch.py
#
#   bash scripts/gpu_prepare.sh [CARRY_DIR] [PEER_FILE]
# then, with the device tool: run(command="bash scripts/gpu_check.sh $OUT", carry=["gpu_carry"]).
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=${1:-${GPU_CARRY:-gpu_carry}}
PEER=${2:-../shared/peers/amfbp_torch.py}
PY=python3
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
version() { sed -n "s/^$1==//p" constraints.txt; }
mkdir -p "$CARRY/wheels"
rm -f "$CARRY"/wheels/*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation py --abi none --platform any -d "$CARRY/wheels" \
  "clu==$(version clu)" "ml_collections==$(version ml_collections)"
if [ -f "$PEER" ]; then
  mkdir -p "$CARRY/peer"
  cp "$PEER" "$CARRY/peer/amfbp_torch.py"
fi
ls -l "$CARRY"/wheels "$CARRY"/peer 2>/dev/null || true
du -sh "$CARRY"
