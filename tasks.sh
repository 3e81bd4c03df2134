#!/usr/bin/env bash
# The project's commands; each creates the local virtual environment .venv when it is missing,
# installing the exact versions of constraints.txt.
#   bash tasks.sh demo [flags]   synthetic corpus -> audio, video, G-FBP, AM-FBP -> table
#   bash tasks.sh test [args]    ruff check, ruff format --check, then the whole test suite
#                                (slow end-to-end tests included)
#   bash tasks.sh lint           ruff only
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
SOURCES=(fbp_jax data_prep tests configs train.py)

ensure_venv() {
  if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ] \
      || [ constraints.txt -nt "$VENV/.installed" ]; then
    echo "Installing fbp_jax and its dependencies into $VENV ..."
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -c constraints.txt -e ".[test]"
    touch "$VENV/.installed"
  fi
}

lint() {
  "$VENV/bin/ruff" check "${SOURCES[@]}"
  "$VENV/bin/ruff" format --check "${SOURCES[@]}"
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    ensure_venv
    exec "$VENV/bin/fbp-jax" demo "$@"
    ;;
  test)
    ensure_venv
    lint
    exec "$VENV/bin/python" -m pytest -n 2 --dist loadgroup --durations=15 "$@" tests
    ;;
  lint)
    ensure_venv
    lint
    ;;
  *)
    echo "usage: bash tasks.sh demo|test|lint [args]" >&2
    exit 2
    ;;
esac
