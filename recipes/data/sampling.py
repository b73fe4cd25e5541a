"""Sampling: data fractions (paper Table 2c: 0.25% .. 100%) and exact shares of a block.

    from recipes.data.sampling import block_slots, fraction_indices, take_fraction
    rows = fraction_indices(len(table), 0.025, seed=0)     # sorted row indices, never the first N
    subset = take_fraction(table, 0.025, seed=0)
    block_slots([0.7, 0.3], 1000)                          # [700, 300]: slots per source in a block

A fraction's subset has ``max(1, round(n * fraction))`` rows chosen uniformly at random
(reproducible for a seed); ``fraction == 1.0`` keeps every row. ``block_slots`` rounds shares
of a block by largest remainder, so the slots always sum to the block (the training stream's
mix, the toy world's task shares).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def fraction_size(n: int, fraction: float) -> int:
    """Rows kept by ``fraction`` of ``n``: ``max(1, round(n * fraction))``."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
        raise ValueError(f"data_fraction must be in (0, 1], got {fraction!r}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"a data fraction needs a dataset with at least 1 row, got n={n!r}")
    return max(1, round(n * fraction))


def fraction_indices(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of ``range(n)`` of size ``fraction_size(n, fraction)``."""
    size = fraction_size(n, fraction)
    if size == n:
        return np.arange(n)
    chosen = np.random.default_rng([seed, 0xF4AC]).choice(n, size=size, replace=False)
    return np.sort(chosen)


def take_fraction(table: pa.Table, fraction: float, seed: int) -> pa.Table:
    """The rows of ``table`` picked by ``fraction_indices`` (the table itself for 1.0)."""
    indices = fraction_indices(table.num_rows, fraction, seed)
    return table if len(indices) == table.num_rows else table.take(pa.array(indices))


def block_slots(ratios: Sequence[float], block_size: int) -> list[int]:
    """Slots per source in a block: ``ratio * block_size`` rounded by largest remainder (sum = block_size)."""
    quotas = [ratio * block_size for ratio in ratios]
    slots = [math.floor(quota) for quota in quotas]
    remainders = sorted(range(len(ratios)), key=lambda i: (-(quotas[i] - slots[i]), i))
    for i in remainders[: block_size - sum(slots)]:
        slots[i] += 1
    return slots
