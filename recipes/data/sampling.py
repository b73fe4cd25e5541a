"""Data fractions: a seeded random subset of a dataset (paper Table 2c: 0.25% .. 100%).

    from recipes.data.sampling import fraction_indices, take_fraction
    rows = fraction_indices(len(table), 0.025, seed=0)     # sorted row indices, never the first N
    subset = take_fraction(table, 0.025, seed=0)

The subset has ``max(1, round(n * fraction))`` rows chosen uniformly at random (reproducible for
a seed); ``fraction == 1.0`` keeps every row.
"""

from __future__ import annotations

import numbers

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
