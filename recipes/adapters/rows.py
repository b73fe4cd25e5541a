"""Source rows of the public formats, and the parsing their converters share.

    from recipes.adapters.rows import iter_source_rows, question_and_options
    for location, row in iter_source_rows("test.jsonl"):
        question, options, trailing = question_and_options(row["text"])

``python -m recipes.data adapt`` reads its input through here: every row of a .parquet, .jsonl,
.json (list) or .tsv file with its location. The converters (``recipes.adapters.mcq``,
``recipes.adapters.freeform``) share the rest: images from bytes, Hugging Face image structs,
paths or base64; answer labels; lettered or inline option lists; the source fields a record
does not use, kept in ``meta``.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from recipes.common.input_errors import reading
from recipes.common.json_loading import load_json, parse_json
from recipes.common.storage import file_suffix, open_binary
from recipes.data.readers import image_from_text
from recipes.data.schema import LETTERS


class ExcludedRow(Exception):
    """A source row that is valid but not wanted (e.g. an open-ended MMMU question)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def is_missing(value: Any) -> bool:
    """A value a source leaves empty: None, NaN or blank text."""
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def source_row_count(path: str) -> int | None:
    """About how many rows ``iter_source_rows`` yields, for a progress bar: a parquet file's row count
    (its footer), a .jsonl or .tsv file's line count (a pass over the file); None for a .json list."""
    suffix = file_suffix(path)
    with reading(path), open_binary(path) as handle:
        if suffix in (".parquet", ".pq"):
            return pq.ParquetFile(handle).metadata.num_rows
        if suffix in (".jsonl", ".ndjson", ".tsv"):
            lines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
            return lines - (suffix == ".tsv")  # a .tsv's first line is its header
    return None


def iter_source_rows(path: str) -> Iterator[tuple[str, dict | ValueError]]:
    """(location, row dict) of a .parquet, .jsonl, .json (list) or .tsv file (a ValueError for unparsable lines).

    A file that is not what its suffix says (not parquet, not UTF-8, JSON nested too deep) raises
    ``InputError`` naming it; a jsonl line that cannot be parsed is yielded as its ValueError."""
    suffix = file_suffix(path)
    if suffix in (".parquet", ".pq"):
        with reading(path), open_binary(path) as handle:
            row = 0
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=256):
                for record in batch.to_pylist():
                    yield f"row {row + 1}", record
                    row += 1
    elif suffix in (".jsonl", ".ndjson"):
        with reading(path), open_binary(path) as handle:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield f"line {line_number}", parse_json(line)
                    except ValueError as error:  # not UTF-8, not JSON, nested too deep
                        yield f"line {line_number}", error
    elif suffix == ".json":
        with reading(path), open_binary(path) as handle:
            data = load_json(handle.read(), path)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records")
        yield from ((f"item {index}", record) for index, record in enumerate(data, start=1))
    elif suffix == ".tsv":
        csv.field_size_limit(sys.maxsize)
        with reading(path), open_binary(path) as handle:
            reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""), delimiter="\t")
            for index, record in enumerate(reader):
                yield f"line {index + 2}", record
    else:
        raise ValueError(f"{path}: unknown extension {suffix!r}; expected .parquet, .jsonl, .json or .tsv")


def image_bytes(value: Any, base_dir: str) -> bytes | None:
    """Image bytes from a source value: bytes, a Hugging Face image struct, a path, base64 or null."""
    if is_missing(value):
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        return image_from_text(value.get("path"), base_dir) if value.get("path") else None
    return image_from_text(value, base_dir)


def parse_label(label: Any, option_count: int) -> str:
    """The answer letter from a letter ("C", "c") or a 0-based index (2, "2")."""
    if isinstance(label, bool) or is_missing(label):
        raise ValueError(f"label {label!r} is not an answer letter or index")
    if isinstance(label, int) or (isinstance(label, str) and label.strip().isdigit()):
        index = int(label)
        if not 0 <= index < option_count:
            raise ValueError(f"label index {index} out of range for {option_count} options")
        return LETTERS[index]
    if isinstance(label, str) and len(label.strip()) == 1 and label.strip().upper() in LETTERS:
        return label.strip().upper()
    raise ValueError(f"label {label!r} is not an answer letter or index")


OPTION_LINE = re.compile(r"^\s*\(?([A-Z])[.):]\s*(.*?)\s*$")


def split_question_options(text: str) -> tuple[str, list[str], str]:
    """(question, options, trailing text) of "question\\nA. x\\nB. y\\n...\\ninstruction"."""
    lines = text.split("\n")
    for start, line in enumerate(lines):
        match = OPTION_LINE.match(line)
        if not match or match.group(1) != "A":
            continue
        options: list[str] = []
        end = start
        while end < len(lines):
            match = OPTION_LINE.match(lines[end])
            if not match or match.group(1) != LETTERS[len(options)]:
                break
            options.append(match.group(2))
            end += 1
        if len(options) >= 2:
            return "\n".join(lines[:start]).strip(), options, "\n".join(lines[end:]).strip()
    raise ValueError("text has no lettered option lines ('A. ...', 'B. ...')")


INLINE_OPTIONS = re.compile(r"(?i)\b(?:options|choices)\s*:\s*")
INLINE_OPTION = re.compile(r"(?<!\S)\(?([A-Z])[.)]\s+")


def split_inline_options(text: str) -> tuple[str, list[str], str]:
    """(question, options, trailing text) of "question ... Options: A. x B. y C. z" (one line).

    The options run from "A." to the end of the line that holds them, each up to the next
    letter in order; the trailing text is the lines after them.
    """
    marker = INLINE_OPTIONS.search(text)
    if not marker:
        raise ValueError("text has no inline options ('Options: A. ... B. ...')")
    line_end = text.find("\n", marker.end())
    line = text[marker.end() :] if line_end < 0 else text[marker.end() : line_end]
    trailing = "" if line_end < 0 else text[line_end + 1 :]
    starts = []
    for match in INLINE_OPTION.finditer(line):
        if match.group(1) == LETTERS[len(starts)]:
            starts.append(match)
    if len(starts) < 2 or starts[0].start() > 0:
        raise ValueError("text has no inline options ('Options: A. ... B. ...')")
    options = [
        line[match.end() : (starts[k + 1].start() if k + 1 < len(starts) else len(line))].strip()
        for k, match in enumerate(starts)
    ]
    return text[: marker.start()].strip(), options, trailing.strip()


def question_and_options(text: str) -> tuple[str, list[str], str]:
    """(question, options, trailing text) from lettered option lines or an inline "Options: A. ... B. ..." list."""
    try:
        return split_question_options(text)
    except ValueError:
        return split_inline_options(text)


def extra_meta(row: dict, used: set[str]) -> dict:
    """Source fields the record does not use, kept in meta (binary values left out)."""
    return {
        key: value
        for key, value in row.items()
        if key not in used and not is_missing(value) and not isinstance(value, (bytes, bytearray, dict))
    }
