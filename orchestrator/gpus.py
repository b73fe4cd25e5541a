"""python -m orchestrator.plan GRID.yaml --gpu h100-80

The GPU kinds a grid can be priced for: memory and dense bf16 peak FLOP/s, from the vendors'
datasheets (dense: without the 2:4 structured-sparsity factor the datasheets also quote).

    from orchestrator.gpus import GPUS, gpu_kind
    gpu_kind("h100-80").memory_bytes, GPUS["a10g"].bf16_flops
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 10**9
"""A datasheet gigabyte (GPU memory is quoted in decimal units)."""
TFLOPS = 10**12
"""A tera-FLOP/s."""


@dataclass(frozen=True)
class GpuKind:
    """One GPU model as the plan prices it."""

    name: str
    """The name a grid or ``--gpu`` uses."""
    memory_bytes: int
    """Device memory in bytes (datasheet figure)."""
    bf16_flops: float
    """Dense bf16 tensor-core peak, FLOP/s."""
    datasheet: str
    """Where the two figures come from."""


GPUS: dict[str, GpuKind] = {
    gpu.name: gpu
    for gpu in (
        GpuKind(
            "a10g",
            24 * GB,
            125 * TFLOPS,
            "NVIDIA A10 Tensor Core GPU datasheet: 24 GB GDDR6, BF16 tensor core 125 TFLOPS (250 with sparsity); "
            "AWS's A10G is priced with the same figures",
        ),
        GpuKind(
            "a100-40",
            40 * GB,
            312 * TFLOPS,
            "NVIDIA A100 Tensor Core GPU datasheet: 40 GB HBM2, BF16 tensor core 312 TFLOPS (624 with sparsity)",
        ),
        GpuKind(
            "a100-80",
            80 * GB,
            312 * TFLOPS,
            "NVIDIA A100 Tensor Core GPU datasheet: 80 GB HBM2e, BF16 tensor core 312 TFLOPS (624 with sparsity)",
        ),
        GpuKind(
            "h100-80",
            80 * GB,
            989 * TFLOPS,
            "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: 80 GB HBM3, BF16 tensor core 1,979 TFLOPS with "
            "sparsity, 989 dense",
        ),
        GpuKind(
            "h200",
            141 * GB,
            989 * TFLOPS,
            "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: 141 GB HBM3e, BF16 tensor core 1,979 TFLOPS with "
            "sparsity, 989 dense",
        ),
    )
}
"""The GPU kinds, by name."""


def gpu_kind(name: str) -> GpuKind:
    """The GPU kind ``name``; a ValueError naming the known kinds otherwise."""
    if name not in GPUS:
        raise ValueError(f"unknown GPU kind {name!r}; known: {', '.join(GPUS)}")
    return GPUS[name]
