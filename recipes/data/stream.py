"""The training stream: target data mixed with other datasets, addressable by position.

Paper §4.3 ("data-hybrid" training) mixes a share of general-purpose data into the target
dataset, oversampling a source once all its rows have been used (appendix C.3). A
``TrainingStream`` is that mix as an endless, deterministic sequence: sample ``k`` is
computable from ``k`` alone, so a resumed trial continues from its data position (an integer)
without replaying anything.

    stream = build_train_stream("toy-imagenet-vqa", data_fraction=1.0,
                                mix=[MixSource("toy-general", 0.5)], seed=0)
    batch = stream.rows(step * batch_size, batch_size)      # list of records (dicts; MCQ and free-form)
    stream.realized_ratios(0, 10_000)                       # {"toy-imagenet-vqa": 0.5, "toy-general": 0.5}

Layout: positions come in blocks of ``block_size``; in every block each source gets exactly its
share of slots (largest-remainder rounding of ``ratio * block_size``), in an order shuffled per
block. The ``j``-th sample of a source is row ``order_e[j % n]`` of that source, where
``order_e`` is a seeded order of all its ``n`` rows for epoch ``e = j // n``: every row is used
once before any is repeated, smaller sources are oversampled, and nothing is "the first N rows".

Sources are ``RowSource``s (``recipes.data.row_source``), read a chunk (parquet row group) at a
time, so the order is a block-level shuffle that never needs more than ``shuffle_window`` chunks
of a source at once: each epoch shuffles the order of the chunks, cuts it into windows of
``shuffle_window`` chunks and shuffles the rows within each window. A source of at most
``shuffle_window`` chunks (every toy dataset, an in-memory table) is one window, so its order is
a plain permutation of all its rows.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recipes.data.registry import dataset_name
from recipes.data.row_source import RowSource, as_row_source, open_rows
from recipes.data.sampling import block_slots, fraction_indices

logger = logging.getLogger("forgetless.data")

DEFAULT_BLOCK_SIZE = 1000
"""Positions per block; each source gets exactly ``round(ratio * block)`` of them."""

RATIO_TOLERANCE = 1e-6
"""How far the ratios may sum from 1."""

DEFAULT_SHUFFLE_WINDOW = 4
"""Chunks (parquet row groups) of a source whose rows are shuffled together. A worker holds at most
two windows of a source decoded (``row_source.DEFAULT_CACHED_GROUPS``)."""

REPORT_SAMPLES = 10 * DEFAULT_BLOCK_SIZE
"""Samples over which ``build_train_stream`` logs the realized ratios."""


class TrainingStream:
    """An endless, position-addressable mix of tables of the data contract (see the module docstring).

    Sources (``RowSource``s, or in-memory tables) may hold MCQ or free-form records (or both);
    the mix is by sample share, whatever the kind, and each record keeps its own columns.
    """

    def __init__(
        self,
        sources: Sequence[tuple[str, RowSource | pa.Table]],
        ratios: Sequence[float],
        seed: int,
        block_size: int = DEFAULT_BLOCK_SIZE,
        shuffle_window: int = DEFAULT_SHUFFLE_WINDOW,
    ):
        if not sources:
            raise ValueError("TrainingStream needs at least one source")
        if len(ratios) != len(sources):
            raise ValueError(f"TrainingStream got {len(sources)} sources but {len(ratios)} ratios")
        names = [name for name, _ in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"TrainingStream source names must be unique, got {names}")
        for name, ratio in zip(names, ratios):
            if not ratio >= 0:
                raise ValueError(f"ratio of source {name!r} must be >= 0, got {ratio}")
        if abs(sum(ratios) - 1) > RATIO_TOLERANCE:
            raise ValueError(f"ratios must sum to 1, got {sum(ratios)} ({dict(zip(names, ratios))})")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if shuffle_window < 1:
            raise ValueError(f"shuffle_window must be >= 1, got {shuffle_window}")
        self.names = tuple(names)
        self.tables = tuple(as_row_source(table, name) for name, table in sources)
        self.shuffle_window = shuffle_window
        self.ratios = tuple(float(r) for r in ratios)
        self.seed = seed
        self.block_size = block_size
        self.slots = np.array(block_slots(self.ratios, block_size))
        for name, table, ratio, slots in zip(self.names, self.tables, self.ratios, self.slots):
            if ratio > 0 and slots == 0:
                raise ValueError(
                    f"ratio {ratio} of source {name!r} is below 1/block_size ({1 / block_size}); use a larger block_size"
                )
            if slots > 0 and table.num_rows == 0:
                raise ValueError(f"source {name!r} has no rows but ratio {ratio}")
        # The layout's pieces are functions of their arguments alone; each stream keeps the recent ones.
        recent = 2 * len(self.names) + 2
        self._block = functools.lru_cache(maxsize=64)(self._block_layout)
        self._epoch_windows = functools.lru_cache(maxsize=recent)(self._windows_of_epoch)
        self._window_order = functools.lru_cache(maxsize=recent)(self._shuffled_window)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {r:g} of {t.num_rows} rows" for n, t, r in zip(self.names, self.tables, self.ratios))
        return f"TrainingStream({parts}; seed {self.seed})"

    @property
    def samples_per_target_epoch(self) -> int:
        """Positions after which every row of the target (first source) has been used once."""
        target_slots = int(self.slots[0])
        if target_slots == 0:
            raise ValueError("the target source has ratio 0")
        return math.ceil(self.tables[0].num_rows * self.block_size / target_slots)

    # -- layout --------------------------------------------------------------------------------

    def _block_layout(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(source of each slot, ordinal of the slot among its source's slots in the block)."""
        layout = np.repeat(np.arange(len(self.names)), self.slots)
        np.random.default_rng([self.seed, 0xB10C, block]).shuffle(layout)
        ordinal = np.empty(self.block_size, dtype=np.int64)
        for source in range(len(self.names)):
            where = layout == source
            ordinal[where] = np.arange(int(where.sum()))
        return layout, ordinal

    def _windows_of_epoch(self, source: int, epoch: int) -> tuple[list[np.ndarray], np.ndarray]:
        """(the chunks of each window, the first epoch ordinal of each window) of one epoch."""
        sizes = self.tables[source].chunk_sizes
        chunks = np.arange(len(sizes))
        if len(chunks) > self.shuffle_window:
            chunks = np.random.default_rng([self.seed, 0xC4A7, source, epoch]).permutation(chunks)
        windows = [np.sort(chunks[i : i + self.shuffle_window]) for i in range(0, len(chunks), self.shuffle_window)]
        firsts = np.cumsum([0, *(int(sizes[window].sum()) for window in windows[:-1])], dtype=np.int64)
        return windows, firsts

    def _shuffled_window(self, source: int, epoch: int, window: int) -> np.ndarray:
        """The rows of one window of one epoch, in their shuffled order."""
        windows, _ = self._epoch_windows(source, epoch)
        table = self.tables[source]
        starts, sizes = table.chunk_starts, table.chunk_sizes
        rows = np.concatenate([np.arange(starts[c], starts[c] + sizes[c]) for c in windows[window]])
        seed = [self.seed, 0xE90C, source, epoch] + ([window] if len(windows) > 1 else [])
        return rows[np.random.default_rng(seed).permutation(len(rows))]

    def _rows_of_epoch(self, source: int, epoch: int, within: np.ndarray) -> np.ndarray:
        """Rows at epoch ordinals ``within`` of one source."""
        _, firsts = self._epoch_windows(source, epoch)
        windows = np.searchsorted(firsts, within, side="right") - 1
        rows = np.empty(len(within), dtype=np.int64)
        for window in np.unique(windows):
            same = windows == window
            rows[same] = self._window_order(source, epoch, int(window))[within[same] - firsts[window]]
        return rows

    def locate(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(source index, row index) of positions ``start .. start + count - 1``."""
        if start < 0 or count < 0:
            raise ValueError(f"positions must be >= 0 (start={start}, count={count})")
        positions = np.arange(start, start + count, dtype=np.int64)
        blocks, offsets = np.divmod(positions, self.block_size)
        sources = np.empty(count, dtype=np.int64)
        ordinals = np.empty(count, dtype=np.int64)
        for block in np.unique(blocks):
            where = blocks == block
            layout, ordinal = self._block(int(block))
            sources[where] = layout[offsets[where]]
            ordinals[where] = ordinal[offsets[where]] + int(block) * self.slots[layout[offsets[where]]]
        rows = np.empty(count, dtype=np.int64)
        for source in np.unique(sources):
            where = sources == source
            epochs, within = np.divmod(ordinals[where], self.tables[source].num_rows)
            picked = np.empty(len(within), dtype=np.int64)
            for epoch in np.unique(epochs):
                same = epochs == epoch
                picked[same] = self._rows_of_epoch(int(source), int(epoch), within[same])
            rows[where] = picked
        return sources, rows

    # -- access --------------------------------------------------------------------------------

    def rows(self, start: int, count: int) -> list[dict]:
        """The records (dicts with the contract keys of their table) at positions ``start .. start + count - 1``."""
        sources, rows = self.locate(start, count)
        records: list[dict | None] = [None] * count
        for source in np.unique(sources):
            where = np.flatnonzero(sources == source)
            fetched = self.tables[source].take(rows[where])
            for position, record in zip(where, fetched):
                records[position] = record
        return records  # type: ignore[return-value]

    def realized_ratios(self, start: int, count: int) -> dict[str, float]:
        """Share of each source among positions ``start .. start + count - 1``."""
        if count <= 0:
            raise ValueError(f"count must be >= 1, got {count}")
        sources, _ = self.locate(start, count)
        counts = np.bincount(sources, minlength=len(self.names))
        return {name: float(c) / count for name, c in zip(self.names, counts)}


@dataclass(frozen=True)
class MixSource:
    """A dataset mixed into the training data: ``ratio`` of all samples come from it."""

    dataset: str
    """Registry name or path of a data file (MCQ or free-form records)."""
    ratio: float
    """Share of training samples from this dataset, in [0, 1)."""

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(f"MixSource.dataset must be a dataset name or path, got {self.dataset!r}")
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 <= self.ratio < 1:
            raise ValueError(f"MixSource.ratio of {self.dataset!r} must be in [0, 1), got {self.ratio!r}")


def as_mix_sources(mix: Sequence[MixSource | dict]) -> list[MixSource]:
    """MixSources from MixSources or ``{dataset, ratio}`` mappings; errors name ``mix[i].<field>``."""
    sources = []
    for index, item in enumerate(mix):
        if isinstance(item, MixSource):
            sources.append(item)
            continue
        if not isinstance(item, dict) or set(item) != {"dataset", "ratio"}:
            raise ValueError(f"mix[{index}]: expected {{dataset, ratio}}, got {item!r}")
        try:
            sources.append(MixSource(item["dataset"], item["ratio"]))
        except ValueError as error:
            field_name = "dataset" if "dataset" in str(error).split()[0] else "ratio"
            raise ValueError(f"mix[{index}].{field_name}: {error}") from error
    return sources


def mix_ratios(mix: Sequence[MixSource]) -> list[float]:
    """[target share, mix shares...]: the target gets 1 - sum of the mix ratios (which must be < 1)."""
    total = sum(source.ratio for source in mix)
    if total >= 1:
        raise ValueError(f"mix: ratios sum to {total:g}; they must sum to < 1 (the target dataset gets 1 - sum)")
    return [1 - total, *(source.ratio for source in mix)]


def build_train_stream(
    dataset: str,
    data_fraction: float,
    mix: Sequence[MixSource | dict],
    seed: int,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    shuffle_window: int = DEFAULT_SHUFFLE_WINDOW,
) -> TrainingStream:
    """The training stream of a recipe: ``data_fraction`` of the target dataset, mixed with ``mix``.

    Datasets are opened with ``open_rows``: parquet files are read a row group at a time.

    Logs (logger "forgetless.data") the sources, their sizes and the realized ratios.
    """
    mix = as_mix_sources(mix)
    ratios = mix_ratios(mix)
    names = [dataset_name(dataset), *(dataset_name(source.dataset) for source in mix)]
    for index, name in enumerate(names[1:]):
        if name in names[: index + 1]:
            raise ValueError(f"mix[{index}].dataset: {mix[index].dataset!r} is already in the training data")
    whole = open_rows(dataset)
    chosen = fraction_indices(whole.num_rows, data_fraction, seed)
    target = whole if len(chosen) == whole.num_rows else whole.subset(chosen)
    tables = [target, *(open_rows(source.dataset) for source in mix)]
    stream = TrainingStream(
        list(zip(names, tables)), ratios, seed=seed, block_size=block_size, shuffle_window=shuffle_window
    )
    realized = stream.realized_ratios(0, max(REPORT_SAMPLES, block_size))
    logger.info(
        "training stream: %s (data_fraction %g: %d rows) mixed with %s; realized ratios %s",
        names[0],
        data_fraction,
        target.num_rows,
        ", ".join(f"{n} ({t.num_rows} rows)" for n, t in zip(names[1:], tables[1:])) or "nothing",
        ", ".join(f"{n} {r:.4f}" for n, r in realized.items()),
    )
    return stream
