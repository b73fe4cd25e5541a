"""The data contract every forgetless dataset follows: multiple-choice and free-form records.

A dataset is a parquet table. Multiple-choice questions (kind ``mcq``) have the columns of
``MCQ_SCHEMA``: ``id`` (unique), ``image`` (PNG/JPEG bytes or null), ``question``, ``options``
(letters A, B, ... by position), ``answer`` (a letter), ``source`` (dataset name) and ``meta``
(JSON object text). Free-form records (kind ``freeform``: a free-text answer, or the last turn
of a conversation) use the same columns plus those of ``RECORD_SCHEMA``:

- ``kind``: ``mcq`` or ``freeform``;
- ``extra_images``: the images after the first (``image``), in placeholder order, so a row
  keeps every image it has (``row_images(row)`` lists them all);
- ``history``: the earlier turns of a conversation, ``[{role: user|assistant, text}, ...]``,
  starting with a user turn and alternating; ``question`` is the last user turn and
  ``answer`` the reference reply to it (free text; ``options`` is empty);
- ``matcher``: how a generated answer is scored (``MATCHER_NAMES``: ``exact`` or a listing of
  the paper's appendix); null for MCQ rows, which the evaluation mode scores.

Image placeholders in the text (``<image>``, ``<image 2>``) mark where each image goes;
``recipes.data.collate`` puts the family's image tokens there. A file with only plain MCQ rows
is written with ``MCQ_SCHEMA`` exactly (older files and readers stay valid); any other file
with ``RECORD_SCHEMA``. Reading gives the file's schema back; missing columns get defaults
(``kind`` mcq, no extra images, no history, no matcher).

    from recipes.data.schema import RowValidator, records_to_table, row_kind
    table = records_to_table(records)                      # records (meta may be a dict) -> table
    bad = RowValidator().check(table, 0)                   # the rows that break the contract
    row_kind(row), row_images(row), row_history(row)       # the same for both kinds of record

Every row is validated on read (``recipes.data.readers``) and on write
(``recipes.data.writers``) by this module's ``RowValidator``; a bad row raises
``RecordFormatError`` naming the file, the row and the problem. Tables of the contract are made
here too: ``records_to_table`` from records, ``conform_table`` from any table with the
contract's columns, ``concat_records`` from several. Images are never decoded into pixels here
(only their headers are checked).
"""

from __future__ import annotations

import json
import posixpath
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

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

TURN_TYPE = pa.struct([pa.field("role", pa.string()), pa.field("text", pa.string())])
"""One turn of a conversation's ``history``: ``{role: user|assistant, text}``."""

FREEFORM_FIELDS = (
    pa.field("kind", pa.string(), nullable=False),
    pa.field("extra_images", pa.list_(pa.binary()), nullable=False),
    pa.field("history", pa.list_(TURN_TYPE), nullable=False),
    pa.field("matcher", pa.string(), nullable=True),
)
"""The columns free-form records add to ``MCQ_SCHEMA``."""

RECORD_SCHEMA = pa.schema([*MCQ_SCHEMA, *FREEFORM_FIELDS])
"""The arrow schema of a table with free-form records (``MCQ_SCHEMA`` plus ``FREEFORM_FIELDS``)."""

RECORD_COLUMNS = tuple(RECORD_SCHEMA.names)
"""The keys a record may have, in column order."""

MCQ_KIND = "mcq"
FREEFORM_KIND = "freeform"
KINDS = (MCQ_KIND, FREEFORM_KIND)
"""Record kinds: a multiple-choice question, or a free-text answer (single- or multi-turn)."""

USER_ROLE = "user"
ASSISTANT_ROLE = "assistant"

MATCHER_NAMES = ("exact", "mcq", "rs", "ad", "rs_ad", "med", "sci", "fin")
"""Scorers a free-form record may name (``jobs.evaluate.matchers.MATCHERS`` implements each)."""

REQUIRED_COLUMNS = ("id", "question", "options", "answer")
"""Columns a file must have; ``image`` defaults to null, ``source`` to the file's stem, ``meta`` to "{}"."""

FREEFORM_REQUIRED_COLUMNS = ("id", "question", "answer")
"""Columns a file with a ``kind`` column must have (``options`` defaults to empty lists)."""

LETTERS = string.ascii_uppercase
"""Option letters by position: ``LETTERS[i]`` is the letter of option ``i``."""

MAX_ROWS_IN_ERROR = 20
"""How many bad rows an ``RecordFormatError`` message lists before it summarises the rest."""


def row_kind(row: Mapping[str, Any]) -> str:
    """The kind of a record (``mcq`` for records without a ``kind``)."""
    return row.get("kind") or MCQ_KIND


def row_images(row: Mapping[str, Any]) -> list[bytes]:
    """Every image of a record, in order (``image`` then ``extra_images``)."""
    first = [row["image"]] if row.get("image") is not None else []
    return first + list(row.get("extra_images") or [])


def row_history(row: Mapping[str, Any]) -> list[dict]:
    """The earlier turns of a record's conversation (``[]`` for a single question)."""
    return list(row.get("history") or [])


def image_count_problem(table: pa.Table, limit: int) -> str | None:
    """ "row N (id X) has K images" for the first row of ``table`` with more than ``limit`` (>= 1) images, else None."""
    if "extra_images" not in table.column_names:
        return None  # one image at most
    extra = pc.fill_null(pc.list_value_length(table.column("extra_images")), 0).to_pylist()
    has_first = table.column("image").is_valid().to_pylist()
    for row, (first, more) in enumerate(zip(has_first, extra)):
        count = int(first) + more
        if count > limit:
            return f"row {row + 1} (id {table.column('id')[row].as_py()!r}) has {count} images"
    return None


def is_plain_mcq(table: pa.Table) -> bool:
    """Whether every row of ``table`` is an MCQ row with at most one image (storable with ``MCQ_SCHEMA``)."""
    if "kind" not in table.column_names:
        return True
    kinds = table.column("kind")
    if pc.any(pc.fill_null(pc.not_equal(kinds, MCQ_KIND), False)).as_py():
        return False
    for name in ("extra_images", "history"):
        if pc.max(pc.fill_null(pc.list_value_length(table.column(name)), 0)).as_py() not in (None, 0):
            return False
    return table.column("matcher").null_count == table.num_rows


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


class RecordFormatError(ValueError):
    """A file (or a table about to be written) breaks the MCQ contract; names file, rows and problems.

    ``RecordFormatError(path, bad_rows)`` lists bad rows; ``RecordFormatError(path, problem=...)``
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


def _history_problem(history: Any) -> str | None:
    for position, turn in enumerate(history or []):
        expected = USER_ROLE if position % 2 == 0 else ASSISTANT_ROLE
        if turn is None or turn.get("role") != expected:
            role = None if turn is None else turn.get("role")
            return f"history[{position}].role is {role!r}, expected {expected!r} (turns start with user and alternate)"
        if turn.get("text") is None or not turn["text"].strip():
            return f"history[{position}].text is empty"
    if history and len(history) % 2:
        return "history ends with a user turn (the last user turn is the question)"
    return None


def _freeform_problem(options: Any, answer: Any, matcher: Any, history: Any) -> str | None:
    if options:
        return f"a free-form record has no options (got {len(options)})"
    if answer is None or not answer.strip():
        return "answer is empty (a free-form record's answer is the reference text)"
    if matcher is None or matcher not in MATCHER_NAMES:
        return f"matcher {matcher!r} is not one of {', '.join(MATCHER_NAMES)}"
    return _history_problem(history)


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
        extended = "kind" in batch.schema.names
        size = batch.num_rows
        kinds = batch.column("kind").to_pylist() if extended else [MCQ_KIND] * size
        matchers = batch.column("matcher").to_pylist() if extended else [None] * size
        histories = batch.column("history").to_pylist() if extended else [None] * size
        extra_images = batch.column("extra_images") if extended else None
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
                location,
                row_id,
                questions[offset],
                options_list[offset],
                answers[offset],
                sources[offset],
                metas[offset],
                kinds[offset],
                matchers[offset],
                histories[offset],
            )
            if problem is None and extra_images is not None and extra_images[offset].is_valid:
                extra = extra_images[offset].values
                if len(extra) and images[offset].is_valid is False:
                    problem = "extra_images without a first image (image is null)"
                elif any(not image.is_valid for image in extra):
                    problem = "extra_images has a null image"
                elif self.check_images:
                    problems = (image_problem(image.as_buffer()) for image in extra)
                    problem = next((f"extra_images[{k}]: {p}" for k, p in enumerate(problems) if p), None)
            if problem is None and self.check_images and images[offset].is_valid:
                problem = image_problem(images[offset].as_buffer())
            if problem is not None:
                bad.append(BadRow(location, row_id, problem, row))
        return bad

    def _row_problem(
        self, location, row_id, question, options, answer, source, meta, kind, matcher, history
    ) -> str | None:
        if row_id is None or not row_id.strip():
            return "id is empty"
        if row_id in self._location_of_id:
            return f"id {row_id!r} is also used by {self._location_of_id[row_id]}"
        if kind == MCQ_KIND:
            kind_problem = (
                _options_problem(options)
                or _answer_problem(answer, options)
                or (
                    f"matcher {matcher!r} on an MCQ row (the eval mode scores it)"
                    if matcher not in (None, "mcq")
                    else None
                )
                or ("history on an MCQ row (conversations are free-form records)" if history else None)
            )
        elif kind == FREEFORM_KIND:
            kind_problem = _freeform_problem(options, answer, matcher, history)
        else:
            kind_problem = f"kind {kind!r} is not one of {', '.join(KINDS)}"
        problem = (
            ("question is empty" if question is None or not question.strip() else None)
            or kind_problem
            or ("source is empty" if source is None or not source.strip() else None)
            or _meta_problem(meta)
        )
        if problem is None:
            self._location_of_id[row_id] = location
        return problem


# ---------------------------------------------------------------------------------------------
# Tables


def table_schema(column_names: Iterable[str]) -> pa.Schema:
    """``RECORD_SCHEMA`` when any free-form column is among ``column_names``, else ``MCQ_SCHEMA``."""
    names = set(column_names)
    return RECORD_SCHEMA if any(f.name in names for f in FREEFORM_FIELDS) else MCQ_SCHEMA


def conform_table(table: pa.Table, path: str, schema: pa.Schema | None = None) -> pa.Table:
    """``table`` with exactly the contract's columns and types (defaults filled in), or RecordFormatError.

    The columns are ``schema``'s, by default those of ``table_schema(table.column_names)``.
    """
    required = REQUIRED_COLUMNS if "kind" not in table.column_names else FREEFORM_REQUIRED_COLUMNS
    missing = [name for name in required if name not in table.column_names]
    if missing:
        raise RecordFormatError(
            path,
            problem=f"not an MCQ table: missing column(s) {', '.join(missing)}; the file has {', '.join(table.column_names)}",
        )
    schema = schema or table_schema(table.column_names)
    stem = posixpath.splitext(posixpath.basename(str(path)))[0]
    defaults = {
        "image": lambda n: pa.nulls(n, pa.binary()),
        "source": lambda n: pa.array([stem] * n, pa.string()),
        "meta": lambda n: pa.array(["{}"] * n, pa.string()),
        "options": lambda n: pa.array([[]] * n, pa.list_(pa.string())),
        "kind": lambda n: pa.array([MCQ_KIND] * n, pa.string()),
        "extra_images": lambda n: pa.array([[]] * n, pa.list_(pa.binary())),
        "history": lambda n: pa.array([[]] * n, pa.list_(TURN_TYPE)),
        "matcher": lambda n: pa.nulls(n, pa.string()),
    }
    arrays = []
    for schema_field in schema:
        if schema_field.name in table.column_names:
            column = table.column(schema_field.name)
            if (
                schema_field.name == "image"
                and pa.types.is_struct(column.type)
                and column.type.get_field_index("bytes") >= 0
            ):
                column = pc.struct_field(column, "bytes")  # a Hugging Face image column: {bytes, path}
            if schema_field.name in ("kind", "extra_images", "history") and column.null_count:
                default = defaults[schema_field.name](1).to_pylist()[0]
                values = [default if value is None else value for value in column.to_pylist()]
                column = pa.array(values, schema_field.type)
            try:
                arrays.append(column.cast(schema_field.type) if column.type != schema_field.type else column)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise RecordFormatError(
                    path,
                    problem=f"not an MCQ table: column {schema_field.name} has type {column.type}, expected {schema_field.type}: {error}",
                ) from error
        else:
            arrays.append(defaults[schema_field.name](table.num_rows))
    nullable_schema = pa.schema([f.with_nullable(True) for f in schema])
    return pa.Table.from_arrays(arrays, schema=nullable_schema)


def conform_tables(tables: Sequence[pa.Table]) -> list[pa.Table]:
    """Tables of the contract with one common schema (``RECORD_SCHEMA`` if any has it), ready to concatenate."""
    if all(table.schema.names == list(MCQ_COLUMNS) for table in tables):
        return [table.cast(MCQ_SCHEMA) for table in tables]
    return [conform_table(table, "table", RECORD_SCHEMA).cast(RECORD_SCHEMA) for table in tables]


def concat_records(tables: Sequence[pa.Table]) -> pa.Table:
    """One table of the rows of ``tables`` (MCQ and free-form tables may be mixed)."""
    return pa.concat_tables(conform_tables(tables))


def _normalize_record(record: Mapping[str, Any], freeform: bool) -> dict:
    unknown = set(record) - set(RECORD_COLUMNS)
    if unknown:
        raise ValueError(
            f"record {record.get('id')!r} has unknown keys {sorted(unknown)}; the contract keys are {list(RECORD_COLUMNS)}"
        )
    meta = record.get("meta", "{}")
    options = record.get("options")
    normalized = {
        "id": record.get("id"),
        "image": record.get("image"),
        "question": record.get("question"),
        "options": list(options) if options is not None else ([] if freeform else None),
        "answer": record.get("answer"),
        "source": record.get("source"),
        "meta": json.dumps(meta, sort_keys=True, default=str) if isinstance(meta, dict) else meta,
    }
    if freeform:
        normalized.update(
            kind=row_kind(record),
            extra_images=list(record.get("extra_images") or []),
            history=[{"role": t.get("role"), "text": t.get("text")} for t in row_history(record)],
            matcher=record.get("matcher"),
        )
    return normalized


def records_to_table(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """An arrow table (contract columns, not yet validated) from records; ``meta`` may be a dict.

    The table has ``RECORD_SCHEMA``'s columns when any record has a free-form key, else ``MCQ_SCHEMA``'s.
    """
    records = list(records)
    freeform = any(name in record for record in records for name in RECORD_COLUMNS[len(MCQ_COLUMNS) :])
    rows = [_normalize_record(record, freeform) for record in records]
    schema = RECORD_SCHEMA if freeform else MCQ_SCHEMA
    return pa.Table.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in schema]))


def storage_table(table: pa.Table) -> pa.Table:
    """A conformed table as it is stored: plain MCQ rows with ``MCQ_SCHEMA``, others with ``RECORD_SCHEMA``."""
    if is_plain_mcq(table):
        return table.select(list(MCQ_COLUMNS)).cast(MCQ_SCHEMA)
    return table.cast(RECORD_SCHEMA)
