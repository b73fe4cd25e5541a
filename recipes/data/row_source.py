"""Rows of a data file read on demand, one row group at a time, so memory does not grow with the file.

    from recipes.data.row_source import open_rows
    rows = open_rows("s3://bucket/imagenet-vqa.parquet")   # reads the parquet footer, nothing else
    rows.num_rows, rows.chunk_starts                         # row count, first row of each row group
    records = rows.take([5, 17, 4242])                       # dicts of the data contract, in that order
    subset = rows.subset(np.array([3, 9, 40_000]))           # a data fraction, still read on demand

The training stream (``recipes.data.stream``) and the evaluators (``jobs.evaluate.suite_eval``)
read every dataset through a ``RowSource``:

- ``ParquetRows``: a parquet file, local or at any fsspec URL (``s3://``, ``gs://``). Only the
  footer is read up front; ``take`` reads the row groups holding the asked rows (range requests
  on object storage) and keeps the last ``cached_groups`` of them decoded. A worker's memory is
  therefore bounded by its row-group cache, whatever the file's size. Rows get the contract's
  columns and defaults, exactly as ``readers.read_records`` gives them.
- ``TableRows``: an in-memory table (a jsonl file, which has no row groups; a test's table), one chunk.
- ``SubsetRows``: chosen rows of another source (a data fraction); its chunks are the parent's
  row groups, so reading it still goes a row group at a time.

A chunk is the unit the training stream shuffles by (see ``TrainingStream``): rows of one chunk
are read together. Each row group is validated as it is decoded (``RecordFormatError`` naming the
file and row), since the sweep's up-front check reads only a sample (``readers.read_records_sample``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recipes.common.storage import arrow_input_file, file_suffix
from recipes.data.registry import load_dataset, resolve_dataset
from recipes.data.schema import MCQ_KIND, RecordFormatError, RowValidator, conform_table, table_schema

DEFAULT_CACHED_GROUPS = 8
"""Decoded row groups a ``ParquetRows`` keeps (least recently used dropped first): two of the
training stream's shuffle windows, the one being read and the next, which a batch may straddle."""

PARQUET_SUFFIXES = (".parquet", ".pq")
"""File suffixes read as parquet, row group by row group."""


class RowSource:
    """Rows addressable by index, read in chunks (see the module docstring)."""

    num_rows: int
    """How many rows the source has."""
    chunk_starts: np.ndarray
    """The first row of each chunk, ascending, starting at 0 (int64)."""

    def take(self, indices: Sequence[int] | np.ndarray) -> list[dict]:
        """The records at ``indices`` (any order, repeats allowed), as dicts of the data contract."""
        raise NotImplementedError

    def kinds(self) -> list[str]:
        """Every row's ``kind`` (``mcq`` or ``freeform``), read without the other columns where possible."""
        raise NotImplementedError

    @property
    def chunk_sizes(self) -> np.ndarray:
        """Rows in each chunk."""
        return np.diff(np.append(self.chunk_starts, self.num_rows))

    def subset(self, indices: np.ndarray) -> RowSource:
        """The rows at the sorted ``indices`` of this source, as a source of their own."""
        return SubsetRows(self, indices)

    def __len__(self) -> int:
        return self.num_rows


def _checked_indices(indices: Sequence[int] | np.ndarray, num_rows: int, name: str) -> np.ndarray:
    array = np.asarray(indices, dtype=np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_rows):
        raise IndexError(f"{name}: row index out of range 0..{num_rows - 1}")
    return array


class TableRows(RowSource):
    """An in-memory table as a source of one chunk."""

    def __init__(self, table: pa.Table, name: str = "table") -> None:
        self.table = table
        self.name = name
        self.num_rows = table.num_rows
        self.chunk_starts = np.zeros(1, dtype=np.int64)

    def take(self, indices: Sequence[int] | np.ndarray) -> list[dict]:
        return self.table.take(pa.array(_checked_indices(indices, self.num_rows, self.name))).to_pylist()

    def kinds(self) -> list[str]:
        if "kind" not in self.table.column_names:
            return [MCQ_KIND] * self.num_rows
        return self.table.column("kind").to_pylist()

    def __repr__(self) -> str:
        return f"TableRows({self.name}: {self.num_rows} rows)"


class ParquetRows(RowSource):
    """A parquet file read a row group at a time, with a small cache of decoded groups."""

    def __init__(self, path: str, cached_groups: int = DEFAULT_CACHED_GROUPS) -> None:
        if cached_groups < 1:
            raise ValueError(f"cached_groups must be >= 1, got {cached_groups}")
        self.path = str(path)
        self.cached_groups = cached_groups
        self._file: pq.ParquetFile | None = None
        self._handle: Any = None
        self._cache_row_groups()
        metadata = self.parquet_file.metadata
        self.num_rows = metadata.num_rows
        sizes = [metadata.row_group(group).num_rows for group in range(metadata.num_row_groups)]
        self.chunk_starts = np.cumsum([0, *sizes[:-1]], dtype=np.int64) if sizes else np.zeros(1, dtype=np.int64)
        self.schema = table_schema(self.parquet_file.schema_arrow.names)

    def _cache_row_groups(self) -> None:
        """``row_group``: ``decode_row_group`` keeping the last ``cached_groups`` groups decoded."""
        self.row_group = functools.lru_cache(maxsize=self.cached_groups)(self.decode_row_group)

    @property
    def groups_read(self) -> int:
        """Row groups decoded so far (the cache's misses)."""
        return self.row_group.cache_info().misses

    @property
    def groups_cached(self) -> int:
        """Row groups held decoded now (at most ``cached_groups``)."""
        return self.row_group.cache_info().currsize

    @property
    def parquet_file(self) -> pq.ParquetFile:
        """The open file (opened on first use in each process)."""
        if self._file is None:
            self._handle = arrow_input_file(self.path)
            self._file = pq.ParquetFile(self._handle)
        return self._file

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.update(_file=None, _handle=None)
        del state["row_group"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._cache_row_groups()

    def decode_row_group(self, group: int) -> pa.Table:
        """Row group ``group`` read, given the contract's columns and validated (``row_group`` caches it)."""
        raw = self.parquet_file.read_row_group(group)
        table = conform_table(raw, self.path, self.schema).cast(self.schema)
        bad = RowValidator().check(table, int(self.chunk_starts[group]))
        if bad:  # the up-front check reads a sample; a bad row elsewhere stops here, named
            raise RecordFormatError(self.path, bad)
        return table

    def take(self, indices: Sequence[int] | np.ndarray) -> list[dict]:
        array = _checked_indices(indices, self.num_rows, self.path)
        groups = np.searchsorted(self.chunk_starts, array, side="right") - 1
        records: list[dict | None] = [None] * len(array)
        for group in np.unique(groups):
            where = np.flatnonzero(groups == group)
            local = array[where] - self.chunk_starts[group]
            for position, record in zip(where, self.row_group(int(group)).take(pa.array(local)).to_pylist()):
                records[position] = record
        return records  # type: ignore[return-value]

    def kinds(self) -> list[str]:
        if "kind" not in self.parquet_file.schema_arrow.names:
            return [MCQ_KIND] * self.num_rows
        column = self.parquet_file.read(columns=["kind"]).column("kind").to_pylist()
        return [value or MCQ_KIND for value in column]

    def __repr__(self) -> str:
        return f"ParquetRows({self.path}: {self.num_rows} rows in {len(self.chunk_starts)} row groups)"


class SubsetRows(RowSource):
    """The rows at sorted ``indices`` of ``parent``; a chunk is the subset's rows in one parent chunk."""

    def __init__(self, parent: RowSource, indices: np.ndarray) -> None:
        indices = _checked_indices(indices, parent.num_rows, repr(parent))
        if indices.size and np.any(np.diff(indices) <= 0):
            raise ValueError("SubsetRows indices must be strictly increasing")
        self.parent = parent
        self.indices = indices
        self.num_rows = len(indices)
        parent_chunk = np.searchsorted(parent.chunk_starts, indices, side="right") - 1
        starts = np.flatnonzero(np.diff(parent_chunk, prepend=-1)) if indices.size else np.zeros(1)
        self.chunk_starts = starts.astype(np.int64)

    def take(self, indices: Sequence[int] | np.ndarray) -> list[dict]:
        return self.parent.take(self.indices[_checked_indices(indices, self.num_rows, repr(self))])

    def kinds(self) -> list[str]:
        every = self.parent.kinds()
        return [every[index] for index in self.indices]

    def __repr__(self) -> str:
        return f"SubsetRows({self.num_rows} of {self.parent!r})"


def as_row_source(rows: RowSource | pa.Table, name: str = "table") -> RowSource:
    """``rows`` as a ``RowSource`` (an in-memory table becomes ``TableRows``)."""
    return rows if isinstance(rows, RowSource) else TableRows(rows, name)


def open_rows(name_or_path: str | os.PathLike, cached_groups: int = DEFAULT_CACHED_GROUPS) -> RowSource:
    """The rows of a registered dataset or data file: parquet read on demand, jsonl read whole."""
    location = str(resolve_dataset(name_or_path))
    if file_suffix(location) in PARQUET_SUFFIXES:
        return ParquetRows(location, cached_groups)
    return TableRows(load_dataset(location), location)
