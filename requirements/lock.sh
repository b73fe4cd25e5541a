#!/usr/bin/env bash
# Refreshes requirements/constraints.txt, the pinned versions that install.sh installs with:
#   pip install uv && bash requirements/lock.sh
# Resolves pyproject.toml (with the dev and postgres extras) for every platform and Python >= 3.10 against the
# CPU torch that install.sh takes, and leaves torch and its CUDA packages out, so GPU machines
# keep the torch build they choose.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_CPU_PIN="torch==2.13.0"
CUDA_PACKAGES=(torch triton cuda-bindings cuda-pathfinder cuda-toolkit nvidia-cublas nvidia-cuda-cupti
    nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
    nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-nccl-cu13 nvidia-nvjitlink
    nvidia-nvshmem-cu13 nvidia-nvtx)
uv pip compile pyproject.toml --extra dev --extra postgres --universal --python-version 3.10 \
    --constraint <(echo "$TORCH_CPU_PIN") \
    $(printf -- '--no-emit-package %s ' "${CUDA_PACKAGES[@]}") \
    --custom-compile-command "bash requirements/lock.sh" \
    --output-file requirements/constraints.txt "$@"
if grep -qiE '^(nvidia|cuda|triton|torch)' requirements/constraints.txt; then
    echo "requirements/lock.sh: a CUDA package is pinned; add it to CUDA_PACKAGES" >&2
    exit 1
fi
