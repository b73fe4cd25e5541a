"""Writing data files of the contract: parquet, every row validated, the file in place only when complete.

    from recipes.data.writers import RecordWriter, write_records
    write_records(records, "out.parquet")                      # refuses to replace an existing file
    with RecordWriter("big.parquet") as writer:               # batch by batch
        writer.write(batch)

The adapters, the toy world and the toy continual domains write their datasets through here.
Rows are checked against the contract (``recipes.data.schema``) before anything is written; the
file is moved into place (or uploaded) on close, and an existing file is never replaced unless
asked. Plain MCQ rows are stored with ``MCQ_SCHEMA`` exactly (older files and readers stay
valid), any other file with ``RECORD_SCHEMA``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recipes.common.storage import exists, file_suffix, filesystem, is_remote, local_path
from recipes.data.schema import (
    MCQ_SCHEMA,
    RECORD_SCHEMA,
    RecordFormatError,
    RowValidator,
    conform_table,
    records_to_table,
    storage_table,
)

ROW_GROUP_SIZE = 1024
"""Rows per parquet row group written by ``write_records`` (small groups keep image reads cheap)."""


def check_writable(path: str | os.PathLike, overwrite: bool) -> None:
    """FileExistsError when ``path`` exists and ``overwrite`` is False (call before expensive work)."""
    if not overwrite and exists(path):
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")


class RecordWriter:
    """Writes an MCQ parquet file batch by batch, validating every row; the file appears on close.

        with RecordWriter("big.parquet") as writer:
            for records in batches:
                writer.write(records)

    Rows go to a temporary file (in the same folder for local paths) that is renamed into place
    (or uploaded, for URLs) on close, so a crash never leaves a partial file. An existing file is never replaced unless
    ``overwrite=True``.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False, check_images: bool = True):
        self.path = str(path)
        if file_suffix(self.path) not in (".parquet", ".pq"):
            raise ValueError(f"{self.path}: MCQ files are written as parquet (.parquet)")
        check_writable(self.path, overwrite)
        self._validator = RowValidator(check_images=check_images)
        self._rows = 0
        directory = (
            tempfile.gettempdir() if is_remote(self.path) else os.path.dirname(os.path.abspath(local_path(self.path)))
        )
        os.makedirs(directory, exist_ok=True)
        handle, self._tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".parquet", dir=directory)
        os.close(handle)
        self._schema = MCQ_SCHEMA
        self._writer = pq.ParquetWriter(self._tmp, MCQ_SCHEMA, compression="zstd")
        self.closed = False

    def _widen(self) -> None:
        """Switch the file to ``RECORD_SCHEMA`` (the first free-form row arrived); rows so far are kept."""
        self._writer.close()
        written = pq.read_table(self._tmp)
        self._schema = RECORD_SCHEMA
        self._writer = pq.ParquetWriter(self._tmp, RECORD_SCHEMA, compression="zstd")
        if written.num_rows:
            widened = conform_table(written, self.path, RECORD_SCHEMA).cast(RECORD_SCHEMA)
            self._writer.write_table(widened, row_group_size=ROW_GROUP_SIZE)

    def write(self, records: Iterable[Mapping[str, Any]] | pa.Table) -> None:
        """Validate and append records (dicts) or a table of the contract."""
        table = records if isinstance(records, pa.Table) else records_to_table(records)
        table = conform_table(table, self.path)
        bad, first_row = [], self._rows
        for batch in table.to_batches(max_chunksize=4096):
            bad += self._validator.check(batch, first_row)
            first_row += batch.num_rows
        if bad:
            self.abort()
            raise RecordFormatError(self.path, bad, hint="nothing was written")
        stored = storage_table(table)
        if stored.schema.equals(RECORD_SCHEMA) and self._schema is MCQ_SCHEMA:
            self._widen()
        if self._schema is RECORD_SCHEMA and not stored.schema.equals(RECORD_SCHEMA):
            stored = conform_table(stored, self.path, RECORD_SCHEMA).cast(RECORD_SCHEMA)
        self._writer.write_table(stored, row_group_size=ROW_GROUP_SIZE)
        self._rows += table.num_rows

    @property
    def rows(self) -> int:
        return self._rows

    def close(self) -> str:
        """Finish the file and move it into place; returns its path."""
        if self.closed:
            return self.path
        self._writer.close()
        try:
            if is_remote(self.path):
                fs, inner = filesystem(self.path)
                fs.put_file(self._tmp, inner)
            else:
                os.chmod(self._tmp, 0o644)  # mkstemp makes it private; a dataset is for everyone
                os.replace(self._tmp, local_path(self.path))
        finally:
            self.closed = True
            if os.path.exists(self._tmp):
                os.remove(self._tmp)
        return self.path

    def abort(self) -> None:
        """Drop what was written (the destination is left untouched)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._writer.close()
        finally:
            if os.path.exists(self._tmp):
                os.remove(self._tmp)

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_records(
    rows: Iterable[Mapping[str, Any]] | pa.Table,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    check_images: bool = True,
) -> str:
    """Validate ``rows`` (records or an MCQ table) and write them to a parquet file; returns its path.

    Refuses (FileExistsError) to replace an existing file unless ``overwrite=True``; a bad row
    raises ``RecordFormatError`` and writes nothing.
    """
    with RecordWriter(path, overwrite=overwrite, check_images=check_images) as writer:
        writer.write(rows)
    return writer.path
