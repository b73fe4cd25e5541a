"""The MCQ table: the data contract every forgetless dataset follows (``MCQ_SCHEMA`` below).

A dataset is a parquet table of multiple-choice questions with the columns of ``MCQ_SCHEMA``:
``id`` (unique), ``image`` (PNG/JPEG bytes or null), ``question``, ``options`` (letters A, B, ...
by position), ``answer`` (a letter), ``source`` (dataset name) and ``meta`` (JSON object text).

    from recipes.data.schema import read_mcq, write_mcq
    table = read_mcq("val.parquet")                       # or .jsonl, local or s3://
    table = read_mcq("val.jsonl", skip_bad=True)          # drop bad rows, log how many
    write_mcq(records, "out.parquet")                      # refuses to replace an existing file

Every row is validated on read and on write; a bad row raises ``MCQFormatError`` naming the
file, the row and the problem. ``read_mcq_report`` returns the table together with the rows it
skipped. Local parquet files are read memory-mapped; images are never decoded into pixels here
(only their headers are checked).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import posixpath
import string
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from recipes.data.image_paths import image_location
from recipes.redaction import redact_uri
from recipes.storage import exists, file_suffix, filesystem, is_remote, local_path, open_binary, parent_dir

logger = logging.getLogger("forgetless.data")

MCQ_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=True),
        pa.field("question", pa.string(), nullable=False),
        pa.field("options", pa.list_(pa.string()), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("meta", pa.string(), nullable=False),
    ]
)
"""The arrow schema of an MCQ table (column order included)."""

MCQ_COLUMNS = tuple(MCQ_SCHEMA.names)
"""The keys of an MCQ record, in column order."""

REQUIRED_COLUMNS = ("id", "question", "options", "answer")
"""Columns a file must have; ``image`` defaults to null, ``source`` to the file's stem, ``meta`` to "{}"."""

LETTERS = string.ascii_uppercase
"""Option letters by position: ``LETTERS[i]`` is the letter of option ``i``."""

SKIPPED_ROWS_METADATA_KEY = b"forgetless.skipped_rows"
"""Schema metadata key under which ``read_mcq`` records how many bad rows it skipped."""

MAX_ROWS_IN_ERROR = 20
"""How many bad rows an ``MCQFormatError`` message lists before it summarises the rest."""

ROW_GROUP_SIZE = 1024
"""Rows per parquet row group written by ``write_mcq`` (small groups keep image reads cheap)."""


def option_letter(index: int) -> str:
    """The letter of option ``index`` (0 -> "A")."""
    if not 0 <= index < len(LETTERS):
        raise ValueError(f"option index {index} out of range 0..{len(LETTERS) - 1}")
    return LETTERS[index]


def answer_index(row: Mapping[str, Any]) -> int:
    """Position of the correct option of an MCQ record (its ``answer`` letter as an index)."""
    answer, options = row["answer"], row["options"]
    if not isinstance(answer, str) or len(answer) != 1 or answer not in LETTERS[: len(options)]:
        raise ValueError(f"answer {answer!r} is not a letter of the {len(options)} options")
    return LETTERS.index(answer)


@dataclass(frozen=True)
class BadRow:
    """One row that breaks the contract."""

    location: str
    """Where it is in the file, counted from 1: "row 3" (parquet row) or "line 4" (jsonl line)."""
    row_id: str | None
    """Its id when it has one."""
    problem: str
    """What is wrong, in words."""
    row: int | None = None
    """Its position in the table that was checked (None when it never became a table row)."""

    def describe(self) -> str:
        where = self.location if self.row_id is None else f"{self.location} (id {self.row_id!r})"
        return f"{where}: {self.problem}"


class MCQFormatError(ValueError):
    """A file (or a table about to be written) breaks the MCQ contract; names file, rows and problems.

    ``MCQFormatError(path, bad_rows)`` lists bad rows; ``MCQFormatError(path, problem=...)``
    is about the file as a whole (missing columns, unknown format).
    """

    def __init__(
        self,
        path: str,
        bad_rows: Sequence[BadRow] = (),
        hint: str = "pass skip_bad=True (--skip-bad) to skip them",
        problem: str | None = None,
    ):
        self.path = str(path)
        self.bad_rows = tuple(bad_rows)
        if problem is not None:
            super().__init__(f"{self.path}: {problem}")
            return
        count = len(self.bad_rows)
        lines = [f"{self.path}: {count} bad row{'s' if count != 1 else ''} ({hint})"]
        lines += [f"  {bad.describe()}" for bad in self.bad_rows[:MAX_ROWS_IN_ERROR]]
        if count > MAX_ROWS_IN_ERROR:
            lines.append(f"  ... and {count - MAX_ROWS_IN_ERROR} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class MCQReadReport:
    """What ``read_mcq_report`` read: the valid table and the bad rows it skipped."""

    path: str
    """The file read."""
    table: pa.Table
    """The valid rows, with ``MCQ_SCHEMA``."""
    skipped: tuple[BadRow, ...] = field(default_factory=tuple)
    """Bad rows left out (only with ``skip_bad=True``)."""

    @property
    def skipped_count(self) -> int:
        return len(self.skipped)


# ---------------------------------------------------------------------------------------------
# Validation


def image_problem(data: bytes | memoryview | pa.Buffer) -> str | None:
    """Why PIL cannot decode these image bytes, or None when it can (headers and chunks only)."""
    try:
        with Image.open(pa.BufferReader(data)) as image:
            image.verify()
    except Exception as error:  # PIL raises many types for bad data
        return f"image cannot be decoded by PIL: {type(error).__name__}: {error}"
    return None


def _meta_problem(meta: Any) -> str | None:
    if meta is None:
        return 'meta is null (use "{}" when there is nothing)'
    try:
        parsed = json.loads(meta)
    except json.JSONDecodeError as error:
        return f"meta is not valid JSON: {error}"
    if not isinstance(parsed, dict):
        return f"meta is JSON but not an object (got {type(parsed).__name__})"
    return None


def _options_problem(options: Any) -> str | None:
    if options is None or len(options) == 0:
        return "options is empty"
    if len(options) > len(LETTERS):
        return f"options has {len(options)} entries, more than the {len(LETTERS)} letters A-Z"
    for position, option in enumerate(options):
        if option is None or not str(option).strip():
            return f"option {LETTERS[position]} is empty"
    return None


def _answer_problem(answer: Any, options: Any) -> str | None:
    count = len(options)
    if answer is None or answer not in LETTERS[:count] or len(answer) != 1:
        return f"answer {answer!r} is not a letter of the options (A-{LETTERS[count - 1]})"
    return None


class RowValidator:
    """Checks MCQ rows batch by batch; remembers ids so uniqueness holds across batches."""

    def __init__(self, check_images: bool = True):
        self.check_images = check_images
        self._location_of_id: dict[str, str] = {}

    def check(
        self, batch: pa.Table | pa.RecordBatch, first_row: int, locations: Sequence[str] | None = None
    ) -> list[BadRow]:
        """Bad rows of ``batch`` (rows numbered from ``first_row``, or named by ``locations``)."""
        columns = {name: batch.column(name) for name in MCQ_COLUMNS}
        ids = columns["id"].to_pylist()
        questions = columns["question"].to_pylist()
        options_list = columns["options"].to_pylist()
        answers = columns["answer"].to_pylist()
        sources = columns["source"].to_pylist()
        metas = columns["meta"].to_pylist()
        images = columns["image"]
        bad: list[BadRow] = []
        for offset, row_id in enumerate(ids):
            row = first_row + offset
            location = locations[offset] if locations is not None else f"row {row + 1}"
            problem = self._row_problem(
                location, row_id, questions[offset], options_list[offset], answers[offset], sources[offset], metas[offset]
            )
            if problem is None and self.check_images and images[offset].is_valid:
                problem = image_problem(images[offset].as_buffer())
            if problem is not None:
                bad.append(BadRow(location, row_id, problem, row))
        return bad

    def _row_problem(self, location, row_id, question, options, answer, source, meta) -> str | None:
        if row_id is None or not row_id.strip():
            return "id is empty"
        if row_id in self._location_of_id:
            return f"id {row_id!r} is also used by {self._location_of_id[row_id]}"
        problem = (
            ("question is empty" if question is None or not question.strip() else None)
            or _options_problem(options)
            or _answer_problem(answer, options)
            or ("source is empty" if source is None or not source.strip() else None)
            or _meta_problem(meta)
        )
        if problem is None:
            self._location_of_id[row_id] = location
        return problem


# ---------------------------------------------------------------------------------------------
# Reading


def _conform(table: pa.Table, path: str) -> pa.Table:
    """``table`` with exactly the MCQ columns and types (defaults filled in), or MCQFormatError."""
    missing = [name for name in REQUIRED_COLUMNS if name not in table.column_names]
    if missing:
        raise MCQFormatError(
            path,
            problem=f"not an MCQ table: missing column(s) {', '.join(missing)}; the file has {', '.join(table.column_names)}",
        )
    stem = posixpath.splitext(posixpath.basename(str(path)))[0]
    defaults = {
        "image": lambda n: pa.nulls(n, pa.binary()),
        "source": lambda n: pa.array([stem] * n, pa.string()),
        "meta": lambda n: pa.array(["{}"] * n, pa.string()),
    }
    arrays = []
    for schema_field in MCQ_SCHEMA:
        if schema_field.name in table.column_names:
            column = table.column(schema_field.name)
            if (
                schema_field.name == "image"
                and pa.types.is_struct(column.type)
                and column.type.get_field_index("bytes") >= 0
            ):
                column = pc.struct_field(column, "bytes")  # a Hugging Face image column: {bytes, path}
            try:
                arrays.append(column.cast(schema_field.type) if column.type != schema_field.type else column)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise MCQFormatError(
                    path,
                    problem=f"not an MCQ table: column {schema_field.name} has type {column.type}, expected {schema_field.type}: {error}",
                ) from error
        else:
            arrays.append(defaults[schema_field.name](table.num_rows))
    nullable_schema = pa.schema([f.with_nullable(True) for f in MCQ_SCHEMA])
    return pa.Table.from_arrays(arrays, schema=nullable_schema)


def _finish(
    table: pa.Table, bad: list[BadRow], path: str, skip_bad: bool, skipped_rows: Sequence[int] = ()
) -> MCQReadReport:
    if bad and not skip_bad:
        raise MCQFormatError(path, bad)
    if skipped_rows:
        keep = [True] * table.num_rows
        for row in skipped_rows:
            keep[row] = False
        table = table.filter(pa.array(keep))
    table = table.cast(MCQ_SCHEMA).replace_schema_metadata({SKIPPED_ROWS_METADATA_KEY: str(len(bad)).encode()})
    if bad:
        logger.warning(
            "%s: skipped %d bad row%s (first: %s)", path, len(bad), "s" if len(bad) != 1 else "", bad[0].describe()
        )
    return MCQReadReport(str(path), table, tuple(bad))


def _read_parquet(path: str, skip_bad: bool, check_images: bool) -> MCQReadReport:
    if is_remote(path):
        fs, inner = filesystem(path)
        raw = pq.read_table(inner, filesystem=fs)
    else:
        raw = pq.read_table(local_path(path), memory_map=True)
    table = _conform(raw, path)
    validator = RowValidator(check_images=check_images)
    bad: list[BadRow] = []
    skipped_rows: list[int] = []
    first_row = 0
    for batch in table.to_batches(max_chunksize=4096):
        batch_bad = validator.check(batch, first_row)
        bad += batch_bad
        skipped_rows += [b.row for b in batch_bad]
        first_row += batch.num_rows
    return _finish(table, bad, path, skip_bad, skipped_rows)


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
            raise ValueError(f"image file {value!r} cannot be read ({redact_uri(location)}): {error.strerror or error}") from None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"image is neither a file path nor valid base64 text: {error}") from error


def record_from_json(obj: Any, default_source: str, base_dir: str) -> dict:
    """An MCQ record from one parsed jsonl object (raises ValueError naming the problem)."""
    if not isinstance(obj, dict):
        raise ValueError(f"line is JSON but not an object (got {type(obj).__name__})")
    missing = [name for name in REQUIRED_COLUMNS if name not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    row_id = obj["id"]
    if isinstance(row_id, bool) or not isinstance(row_id, (str, int)):
        raise ValueError(f"id must be a string, got {type(row_id).__name__}")
    options = obj["options"]
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
    return {
        "id": str(row_id),
        "image": image_from_text(obj.get("image"), base_dir),
        "question": obj["question"],
        "options": options,
        "answer": obj["answer"],
        "source": obj.get("source") or default_source,
        "meta": meta,
    }


def _read_jsonl(path: str, skip_bad: bool, check_images: bool) -> MCQReadReport:
    stem = posixpath.splitext(posixpath.basename(path))[0]
    records: list[dict] = []
    locations: list[str] = []
    bad: list[BadRow] = []
    with open_binary(path) as handle:
        for line_number, raw in enumerate(io.TextIOWrapper(handle, encoding="utf-8"), start=1):
            if not raw.strip():
                continue
            row_id = None
            try:
                obj = json.loads(raw)
                row_id = str(obj.get("id")) if isinstance(obj, dict) and obj.get("id") is not None else None
                records.append(record_from_json(obj, stem, parent_dir(path)))
                locations.append(f"line {line_number}")
            except json.JSONDecodeError as error:
                bad.append(BadRow(f"line {line_number}", None, f"invalid JSON: {error}"))
            except ValueError as error:
                bad.append(BadRow(f"line {line_number}", row_id, str(error)))
    table = pa.Table.from_pylist(records, schema=pa.schema([f.with_nullable(True) for f in MCQ_SCHEMA]))
    table_bad = RowValidator(check_images=check_images).check(table, 0, locations)
    by_line = sorted(bad + table_bad, key=lambda b: int(b.location.removeprefix("line ")))
    return _finish(table, by_line, path, skip_bad, [b.row for b in table_bad])


def read_mcq_report(path: str | os.PathLike, *, skip_bad: bool = False, check_images: bool = True) -> MCQReadReport:
    """Read and validate an MCQ file (.parquet or .jsonl, local or URL); see ``read_mcq``."""
    text = str(path)
    suffix = file_suffix(text)
    if not exists(text):
        raise FileNotFoundError(f"{text}: no such MCQ file")
    if suffix in (".parquet", ".pq"):
        report = _read_parquet(text, skip_bad, check_images)
    elif suffix in (".jsonl", ".ndjson"):
        report = _read_jsonl(text, skip_bad, check_images)
    else:
        raise MCQFormatError(text, problem=f"unknown extension {suffix!r}; MCQ files are .parquet or .jsonl")
    if report.table.num_rows == 0 and not report.skipped:
        raise MCQFormatError(text, problem="has no questions (an empty file)")
    return report


def read_mcq(path: str | os.PathLike, *, skip_bad: bool = False, check_images: bool = True) -> pa.Table:
    """Read an MCQ file and validate every row.

    Bad rows raise ``MCQFormatError`` (file, row id, problem); with ``skip_bad=True`` they are
    left out, a warning with their count is logged, and the count is in the table's schema
    metadata (``skipped_row_count(table)``).
    """
    return read_mcq_report(path, skip_bad=skip_bad, check_images=check_images).table


def skipped_row_count(table: pa.Table) -> int:
    """How many bad rows ``read_mcq`` skipped to make ``table`` (0 when none or unknown)."""
    metadata = table.schema.metadata or {}
    return int(metadata.get(SKIPPED_ROWS_METADATA_KEY, b"0"))


# ---------------------------------------------------------------------------------------------
# Writing


def _normalize_record(record: Mapping[str, Any]) -> dict:
    unknown = set(record) - set(MCQ_COLUMNS)
    if unknown:
        raise ValueError(
            f"record {record.get('id')!r} has unknown keys {sorted(unknown)}; the contract keys are {list(MCQ_COLUMNS)}"
        )
    meta = record.get("meta", "{}")
    return {
        "id": record.get("id"),
        "image": record.get("image"),
        "question": record.get("question"),
        "options": list(record["options"]) if record.get("options") is not None else None,
        "answer": record.get("answer"),
        "source": record.get("source"),
        "meta": json.dumps(meta, sort_keys=True, default=str) if isinstance(meta, dict) else meta,
    }


def records_to_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """An arrow table (MCQ columns, not yet validated) from records; ``meta`` may be a dict."""
    rows = [_normalize_record(record) for record in records]
    return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in MCQ_SCHEMA]))


def check_writable(path: str | os.PathLike, overwrite: bool) -> None:
    """FileExistsError when ``path`` exists and ``overwrite`` is False (call before expensive work)."""
    if not overwrite and exists(path):
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")


class MCQWriter:
    """Writes an MCQ parquet file batch by batch, validating every row; the file appears on close.

        with MCQWriter("big.parquet") as writer:
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
        self._writer = pq.ParquetWriter(self._tmp, MCQ_SCHEMA, compression="zstd")
        self.closed = False

    def write(self, records: Iterable[Mapping[str, Any]] | pa.Table) -> None:
        """Validate and append records (dicts) or an MCQ table."""
        table = records if isinstance(records, pa.Table) else records_to_table(records)
        table = _conform(table, self.path)
        bad, first_row = [], self._rows
        for batch in table.to_batches(max_chunksize=4096):
            bad += self._validator.check(batch, first_row)
            first_row += batch.num_rows
        if bad:
            self.abort()
            raise MCQFormatError(self.path, bad, hint="nothing was written")
        self._writer.write_table(table.cast(MCQ_SCHEMA), row_group_size=ROW_GROUP_SIZE)
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

    def __enter__(self) -> "MCQWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_mcq(
    rows: Iterable[Mapping[str, Any]] | pa.Table,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    check_images: bool = True,
) -> str:
    """Validate ``rows`` (records or an MCQ table) and write them to a parquet file; returns its path.

    Refuses (FileExistsError) to replace an existing file unless ``overwrite=True``; a bad row
    raises ``MCQFormatError`` and writes nothing.
    """
    with MCQWriter(path, overwrite=overwrite, check_images=check_images) as writer:
        writer.write(rows)
    return writer.path
