#!/usr/bin/env bash
# The project's commands; each creates the local virtual environment .venv when it is missing.
#   bash tasks.sh demo [flags]   synthetic corpus -> audio, video, G-FBP, AM-FBP -> table
#   bash tasks.sh test [args]    the whole test suite (slow end-to-end tests included)
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}

ensure_venv() {
  if [ ! -f "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
    echo "Installing fbp_jax and its dependencies into $VENV ..."
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e ".[test]"
    touch "$VENV/.installed"
  fi
}

cmd=${1:-}
shift || true
case "$cmd" in
  demo)
    ensure_venv
    exec "$VENV/bin/python" -m fbp_jax.demo "$@"
    ;;
  test)
    ensure_venv
    exec "$VENV/bin/python" -m pytest -n 2 --durations=10 "$@" tests
    ;;
  *)
    echo "usage: bash tasks.sh demo|test [args]" >&2
    exit 2
    ;;
esac
