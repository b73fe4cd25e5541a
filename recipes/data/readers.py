"""Reading data files of the contract: parquet or jsonl, local or at a URL, every row validated.

    from recipes.data.readers import read_records, read_records_report
    table = read_records("val.parquet")                       # or .jsonl, local or s3://
    table = read_records("val.jsonl", skip_bad=True)          # drop bad rows, log how many
    report = read_records_report("val.jsonl", skip_bad=True)  # the table and the rows it skipped

Training, evaluation and ``python -m recipes.data inspect`` read every dataset through here.
Rows are checked against the contract (``recipes.data.schema``); a bad row raises
``RecordFormatError`` naming the file, the row and the problem. A jsonl row names its image by
file path (inside the file's folder, see ``recipes.data.image_paths``) or as base64 text.
Local parquet files are read memory-mapped, and the table keeps the file's schema (missing
columns get their defaults).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recipes.common.input_errors import reading
from recipes.common.json_loading import parse_json
from recipes.common.redaction import CREDENTIAL_HINT, has_credentials, redact_uri
from recipes.common.storage import arrow_input_file, exists, file_suffix, is_remote, local_path, open_binary, parent_dir
from recipes.data.image_paths import image_location
from recipes.data.schema import (
    FREEFORM_FIELDS,
    FREEFORM_REQUIRED_COLUMNS,
    MCQ_KIND,
    REQUIRED_COLUMNS,
    BadRow,
    RecordFormatError,
    RowValidator,
    conform_table,
    records_to_table,
    table_schema,
)

logger = logging.getLogger("forgetless.data")

SAMPLE_ROW_GROUPS = 2
"""Row groups of a parquet file that ``read_records_sample`` validates (the first one, then others at random)."""

SKIPPED_ROWS_METADATA_KEY = b"forgetless.skipped_rows"
"""Schema metadata key under which ``read_records`` records how many bad rows it skipped."""


@dataclass(frozen=True)
class RecordReadReport:
    """What ``read_records_report`` read: the valid table and the bad rows it skipped."""

    path: str
    """The file read."""
    table: pa.Table
    """The valid rows, with ``MCQ_SCHEMA``."""
    skipped: tuple[BadRow, ...] = field(default_factory=tuple)
    """Bad rows left out (only with ``skip_bad=True``)."""

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)


def _finish(
    table: pa.Table, bad: list[BadRow], path: str, skip_bad: bool, skipped_rows: Sequence[int] = ()
) -> RecordReadReport:
    if bad and not skip_bad:
        raise RecordFormatError(path, bad)
    if skipped_rows:
        keep = [True] * table.num_rows
        for row in skipped_rows:
            keep[row] = False
        table = table.filter(pa.array(keep))
    schema = table_schema(table.column_names)
    table = table.cast(schema).replace_schema_metadata({SKIPPED_ROWS_METADATA_KEY: str(len(bad)).encode()})
    if bad:
        logger.warning(
            "%s: skipped %d bad row%s (first: %s)", path, len(bad), "s" if len(bad) != 1 else "", bad[0].describe()
        )
    return RecordReadReport(str(path), table, tuple(bad))


def _read_parquet(path: str, skip_bad: bool, check_images: bool, sample: bool = False) -> RecordReadReport:
    """Read (and validate) a parquet file: all of it, or with ``sample`` its first row group and others."""
    with reading(path):  # not parquet, truncated, or storage that does not answer
        source: Any = arrow_input_file(path) if is_remote(path) else local_path(path)
        if sample:
            parts = _sample_row_groups(pq.ParquetFile(source), path)
        else:
            parts = [(0, pq.read_table(source, memory_map=not is_remote(path)))]
    tables = [conform_table(raw, path) for _, raw in parts]
    validator = RowValidator(check_images=check_images)
    bad: list[BadRow] = []
    skipped_rows: list[int] = []
    position = 0  # row of the concatenated table
    for (file_row, _), table in zip(parts, tables):
        for batch in table.to_batches(max_chunksize=4096):
            batch_bad = validator.check(batch, file_row)
            bad += batch_bad
            skipped_rows += [position + b.row - file_row for b in batch_bad]
            file_row += batch.num_rows
            position += batch.num_rows
    return _finish(pa.concat_tables(tables), bad, path, skip_bad, skipped_rows)


def _sample_row_groups(parquet: pq.ParquetFile, path: str) -> list[tuple[int, pa.Table]]:
    """(first row in the file, rows) of the row groups a sample check reads: the first and others at random."""
    metadata = parquet.metadata
    count = metadata.num_row_groups
    if count <= SAMPLE_ROW_GROUPS:
        return [(0, parquet.read())]
    others = np.random.default_rng([count, metadata.num_rows]).choice(
        np.arange(1, count), size=SAMPLE_ROW_GROUPS - 1, replace=False
    )
    groups = [0, *sorted(int(group) for group in others)]
    starts = np.cumsum([0, *(metadata.row_group(g).num_rows for g in range(count - 1))])
    logger.info(
        "%s: checked row groups %s of %d (a sample; every row with --check-all-rows)",
        redact_uri(path), ", ".join(map(str, groups)), count,
    )  # fmt: skip
    return [(int(starts[group]), parquet.read_row_group(group)) for group in groups]


def _is_base64_image(value: str) -> bool:
    """Whether ``value`` reads as base64 image text rather than a path (JPEG's base64 starts with '/')."""
    if "." in value or "://" in value or value.startswith(("~", "./", "../")):
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return not value.startswith("/")
    return True


def image_from_text(value: Any, base_dir: str) -> bytes | None:
    """Image bytes from a text field: null, a file path (relative to ``base_dir``) or base64 text.

    A value with a "." or a "/" that is not base64 is a file path, which must stay inside
    ``base_dir`` unless the user opted in (``recipes.data.image_paths``); anything else is
    base64, optionally as a ``data:...;base64,`` URI. Raises ValueError naming the problem.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"image must be base64 text, a file path or null, got {type(value).__name__}")
    if value.startswith("data:"):
        value = value.split(",", 1)[1] if "," in value else ""
    elif not _is_base64_image(value):
        location = image_location(value, base_dir)
        try:
            with open_binary(location) as handle:
                return handle.read()
        except OSError as error:
            raise ValueError(
                f"image file {value!r} cannot be read ({redact_uri(location)}): {error.strerror or error}"
            ) from None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"image is neither a file path nor valid base64 text: {error}") from error


def _json_history(value: Any) -> list[dict]:
    """``history`` from jsonl: a list of ``{role, text}`` objects (ValueError naming the turn)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"history must be a list of {{role, text}} turns, got {type(value).__name__}")
    turns = []
    for position, turn in enumerate(value):
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or not isinstance(turn.get("text"), str):
            raise ValueError(f"history[{position}] must be an object with string role and text, got {turn!r}")
        turns.append({"role": turn["role"], "text": turn["text"]})
    return turns


def record_from_json(obj: Any, default_source: str, base_dir: str) -> dict:
    """A record from one parsed jsonl object (raises ValueError naming the problem).

    MCQ objects have the ``MCQ_COLUMNS`` keys; free-form ones ``kind: freeform`` and may leave
    out ``options``, list more images in ``extra_images`` and earlier turns in ``history``.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"line is JSON but not an object (got {type(obj).__name__})")
    freeform_keys = [f.name for f in FREEFORM_FIELDS if f.name in obj]
    required = FREEFORM_REQUIRED_COLUMNS if "kind" in obj else REQUIRED_COLUMNS
    missing = [name for name in required if name not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    row_id = obj["id"]
    if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
        raise ValueError(f"id must be a string, got {type(row_id).__name__}")
    options = obj.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise ValueError("options must be a list of strings")
    for name in ("question", "answer"):
        if not isinstance(obj[name], str):
            raise ValueError(f"{name} must be a string, got {type(obj[name]).__name__}")
    meta = obj.get("meta", "{}")
    if isinstance(meta, dict):
        meta = json.dumps(meta, sort_keys=True)
    elif not isinstance(meta, str):
        raise ValueError(f"meta must be a JSON object or its text, got {type(meta).__name__}")
    record = {
        "id": str(row_id),
        "image": image_from_text(obj.get("image"), base_dir),
        "question": obj["question"],
        "options": options,
        "answer": obj["answer"],
        "source": obj.get("source") or default_source,
        "meta": meta,
    }
    if freeform_keys:
        extra = obj.get("extra_images") or []
        if not isinstance(extra, list):
            raise ValueError(f"extra_images must be a list of images, got {type(extra).__name__}")
        record.update(
            kind=obj.get("kind") or MCQ_KIND,
            extra_images=[image_from_text(value, base_dir) for value in extra],
            history=_json_history(obj.get("history")),
            matcher=obj.get("matcher"),
        )
    return record


def _read_jsonl(path: str, skip_bad: bool, check_images: bool) -> RecordReadReport:
    stem = posixpath.splitext(posixpath.basename(path))[0]
    records: list[dict] = []
    locations: list[str] = []
    bad: list[BadRow] = []
    with reading(path), open_binary(path) as handle:
        for line_number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            row_id = None
            try:
                obj = parse_json(raw)  # bytes: a line that is not UTF-8 is one bad row, named by its line
                row_id = str(obj.get("id")) if isinstance(obj, dict) and obj.get("id") is not None else None
                records.append(record_from_json(obj, stem, parent_dir(path)))
                locations.append(f"line {line_number}")
            except ValueError as error:
                bad.append(BadRow(f"line {line_number}", row_id, str(error)))
    table = records_to_table(records)
    table_bad = RowValidator(check_images=check_images).check(table, 0, locations)
    by_line = sorted(bad + table_bad, key=lambda b: int(b.location.removeprefix("line ")))
    return _finish(table, by_line, path, skip_bad, [b.row for b in table_bad])


def read_records_report(
    path: str | os.PathLike, *, skip_bad: bool = False, check_images: bool = True, sample: bool = False
) -> RecordReadReport:
    """Read and validate an MCQ file (.parquet or .jsonl, local or URL); see ``read_records``.

    With ``sample``, a parquet file is checked on its schema and ``SAMPLE_ROW_GROUPS`` of its row
    groups only (the up-front check at scale; a jsonl file is always read whole).
    """
    text = str(path)
    suffix = file_suffix(text)
    if has_credentials(text):
        raise RecordFormatError(redact_uri(text), problem="contains credentials; " + CREDENTIAL_HINT)
    with reading(text):  # object storage that does not answer, or refuses
        found = exists(text)
    if not found:
        raise FileNotFoundError(f"{redact_uri(text)}: no such MCQ file")
    if suffix in (".parquet", ".pq"):
        report = _read_parquet(text, skip_bad, check_images, sample)
    elif suffix in (".jsonl", ".ndjson"):
        report = _read_jsonl(text, skip_bad, check_images)
    else:
        raise RecordFormatError(text, problem=f"unknown extension {suffix!r}; MCQ files are .parquet or .jsonl")
    if report.table.num_rows == 0 and not report.skipped:
        raise RecordFormatError(text, problem="has no questions (an empty file)")
    return report


def read_records(path: str | os.PathLike, *, skip_bad: bool = False, check_images: bool = True) -> pa.Table:
    """Read an MCQ file and validate every row.

    Bad rows raise ``RecordFormatError`` (file, row id, problem); with ``skip_bad=True`` they are
    left out, a warning with their count is logged, and the count is in the table's schema
    metadata (``skipped_row_count(table)``).
    """
    return read_records_report(path, skip_bad=skip_bad, check_images=check_images).table


def read_records_sample(path: str | os.PathLike, *, every_row: bool = False) -> pa.Table:
    """The validated rows of an up-front check: a sample of a parquet file's row groups, or ``every_row``.

    The schema is always checked whole; bad rows raise ``RecordFormatError`` as in ``read_records``.
    """
    return read_records_report(path, sample=not every_row).table


def skipped_row_count(table: pa.Table) -> int:
    """How many bad rows ``read_records`` skipped to make ``table`` (0 when none or unknown)."""
    metadata = table.schema.metadata or {}
    return int(metadata.get(SKIPPED_ROWS_METADATA_KEY, b"0"))
