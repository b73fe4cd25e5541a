#!/usr/bin/env bash
# Installs forgetless into the active Python environment, the same way for the README and CI:
#   bash install.sh         # the product (what the demo sweep needs)
#   bash install.sh dev     # and the test tools (pytest, moto, ...) and the PostgreSQL driver (extra "postgres")
# CPU machines take the CPU build of torch first (a bare `torch` requirement pulls multi-GB CUDA
# builds); machines with an NVIDIA driver keep the torch the project's range resolves to, or the
# one installed before. Every other package is pinned by requirements/constraints.txt (refresh it
# with `bash requirements/lock.sh`), so any pip resolves the set at once, without backtracking.
set -euo pipefail
cd "$(dirname "$0")"

case "${1:-}" in
    "") target="." ;;
    dev) target=".[dev,postgres]" ;;
    *) echo "install.sh: unknown argument '$1' (expected nothing or 'dev')" >&2; exit 2 ;;
esac

if ! command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install torch==2.13.0
fi
python -m pip install --constraint requirements/constraints.txt --editable "$target"
