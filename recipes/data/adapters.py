"""python -m recipes.data adapt {imagewikiqa,vmcbench,mmmu,mllm-cl,llava-instruct,vqa,class-folder} --input PATH --out FILE

Adapters from public benchmark and conversation formats to the data contract
(``recipes.data.schema``: MCQ and free-form records in one parquet format):

- ``imagewikiqa``: jsonl records ``{image, text, label, wiki, classname}``; ``text`` is the
  question, then lettered option lines ("A. ..."), then an instruction line ("Choose A, B, C,
  or D."); ``label`` is the answer letter (or a 0-based index); ``image`` is a path relative to
  ``--image-root`` (default: the jsonl's folder). ``wiki``, ``classname`` and the instruction
  go to ``meta`` (the class-label distractor probe needs ``classname``).
- ``vmcbench``: columns ``question, A, B, C, D, answer, category, image`` (parquet with
  Hugging Face image structs, VLMEvalKit TSV with base64 images, or jsonl); ``category`` and
  ``index`` go to ``meta``.
- ``mmmu``: the multiple-choice questions of MMMU (``question_type == "multiple-choice"``;
  ``options`` is a Python list literal; images in ``image_1`` .. ``image_7``). Open-ended
  questions are left out and counted. A question keeps every image (``image`` then
  ``extra_images``) and its ``<image k>`` placeholders, which the collator turns into the
  model family's image tokens in place.
- ``mllm-cl``: one split of an MLLM-CL domain (``RS/train.json``, ``RS/test.json``, ...; the
  layout of the paper's §5 benchmark): train rows are LLaVA records ``{id, image, conversations:
  [{from: human, value: "<image>\\nquestion\\nA. ..."}, {from: gpt, value: answer}]}``, test rows
  ``{question_id, image, text, answer}``; images are paths relative to ``--image-root`` (default:
  the json's folder). Every row is kept: multiple-choice questions (lettered option lines or
  inline "Options: A. ... B. ..."; the answer a letter, "B. text" or an option's text) become
  MCQ rows, the others free-form rows scored by the domain's matcher (``--domain``, default the
  folder name: RS -> rs, Med -> med, AD -> ad, Sci -> sci, Fin -> fin). The summary counts
  rows per kind.
- ``llava-instruct``: LLaVA-Instruct / LLaVA-665K in the ShareGPT layout, a .json list or
  .jsonl of ``{id, image, conversations: [{from: human|gpt, value}]}``; ``image`` is a path
  (or a list of them) or absent for text-only rows; ``<image>`` marks where it goes. Each
  conversation becomes one free-form record: the last human turn and its gpt reply are the
  question and answer, the turns before the history (the loss covers every gpt turn).
- ``vqa``: free-form VQA rows (OCR-VQA style) ``{id, image, question, answer}`` (or
  ``answers``, a list whose first entry is kept; ``images``, a list).
- ``class-folder``: a class-labelled image folder as "What is this?" questions (distractors
  random, or CLIP-similar with ``--clip``; see ``recipes.data.class_folder``).

    from recipes.data.adapters import adapt
    report = adapt("imagewikiqa", "imagewikiqa.jsonl", "imagewikiqa.parquet")
    print(report.summary())

Rows that cannot be adapted raise ``MCQFormatError`` naming the input file, the row and the
problem; with ``skip_bad=True`` (``--skip-bad``) they are left out and counted. A file that
gives no rows at all is an error, never an empty output. ``--matcher`` names the scorer of
``llava-instruct`` and ``vqa`` rows (default ``exact``).
"""

from __future__ import annotations

import ast
import csv
import functools
import io
import json
import math
import os
import posixpath
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from recipes.data.class_folder import FOLDER_QUESTION, ClassFolder, build_class_mcq
from recipes.data.prompts import IMAGE_PLACEHOLDER
from recipes.data.schema import (
    ASSISTANT_ROLE,
    FREEFORM_KIND,
    LETTERS,
    MATCHER_NAMES,
    MCQ_KIND,
    USER_ROLE,
    BadRow,
    MCQFormatError,
    RowValidator,
    check_writable,
    image_from_text,
    records_to_table,
    write_mcq,
)
from recipes.storage import file_suffix, open_binary, parent_dir

FORMATS = ("imagewikiqa", "vmcbench", "mmmu", "mllm-cl", "llava-instruct", "vqa", "class-folder")
"""Formats ``adapt`` understands."""


class ExcludedRow(Exception):
    """A source row that is valid but not wanted (e.g. an open-ended MMMU question)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Adapted:
    """The result of adapting one source file."""

    input: str
    """The source file or folder."""
    table: pa.Table | None
    """The MCQ rows (None for class folders, which are written batch by batch)."""
    rows: int
    """Number of MCQ rows."""
    bad: tuple[BadRow, ...] = ()
    """Source rows that could not be adapted (skipped with ``skip_bad``)."""
    excluded: dict[str, int] = field(default_factory=dict)
    """Valid source rows left out on purpose, counted by reason."""
    kinds: dict[str, int] = field(default_factory=dict)
    """Rows per kind (``mcq``, ``freeform``) for formats that give both."""

    def summary(self) -> str:
        if self.kinds:
            per_kind = ", ".join(f"{self.kinds.get(kind, 0)} {kind}" for kind in (MCQ_KIND, FREEFORM_KIND))
            parts = [f"{self.input}: {self.rows} rows ({per_kind})"]
        else:
            parts = [f"{self.input}: {self.rows} questions"]
        parts += [f"{count} {reason} left out" for reason, count in sorted(self.excluded.items())]
        if self.bad:
            parts.append(f"{len(self.bad)} bad rows skipped")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Source rows


def _missing(value: Any) -> bool:
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def iter_source_rows(path: str) -> Iterator[tuple[str, dict | ValueError]]:
    """(location, row dict) of a .parquet, .jsonl, .json (list) or .tsv file (a ValueError for unparsable lines)."""
    suffix = file_suffix(path)
    if suffix in (".parquet", ".pq"):
        with open_binary(path) as handle:
            row = 0
            for batch in pq.ParquetFile(handle).iter_batches(batch_size=256):
                for record in batch.to_pylist():
                    yield f"row {row + 1}", record
                    row += 1
    elif suffix in (".jsonl", ".ndjson"):
        with open_binary(path) as handle:
            for line_number, line in enumerate(io.TextIOWrapper(handle, encoding="utf-8"), start=1):
                if line.strip():
                    try:
                        yield f"line {line_number}", json.loads(line)
                    except json.JSONDecodeError as error:
                        yield f"line {line_number}", ValueError(f"invalid JSON: {error}")
    elif suffix == ".json":
        with open_binary(path) as handle:
            data = json.load(handle)
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of records")
        yield from ((f"item {index}", record) for index, record in enumerate(data, start=1))
    elif suffix == ".tsv":
        csv.field_size_limit(sys.maxsize)
        with open_binary(path) as handle:
            reader = csv.DictReader(io.TextIOWrapper(handle, encoding="utf-8", newline=""), delimiter="\t")
            for index, record in enumerate(reader):
                yield f"line {index + 2}", record
    else:
        raise ValueError(f"{path}: unknown extension {suffix!r}; expected .parquet, .jsonl, .json or .tsv")


def image_bytes(value: Any, base_dir: str) -> bytes | None:
    """Image bytes from a source value: bytes, a Hugging Face image struct, a path, base64 or null."""
    if _missing(value):
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
    if isinstance(label, bool) or _missing(label):
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


# ---------------------------------------------------------------------------------------------
# Converters: source row -> MCQ record (ValueError for bad rows, ExcludedRow for unwanted ones)


def _extra_meta(row: dict, used: set[str]) -> dict:
    """Source fields the record does not use, kept in meta (binary values left out)."""
    return {
        key: value
        for key, value in row.items()
        if key not in used and not _missing(value) and not isinstance(value, (bytes, bytearray, dict))
    }


def imagewikiqa_record(row: dict, location: str, *, source: str, base_dir: str) -> dict:
    if "text" not in row or "label" not in row:
        raise ValueError("missing field(s) text/label")
    question, options, instruction = split_question_options(str(row["text"]))
    if not question:
        raise ValueError("text has no question before the options")
    meta = {"wiki": row.get("wiki"), "classname": row.get("classname"), "instruction": instruction}
    if isinstance(row.get("image"), str):
        meta["image_path"] = row["image"]
    meta.update(_extra_meta(row, {"image", "text", "label", "wiki", "classname", "id"}))
    return {
        "id": str(row.get("id") or f"{source}-{location.split()[-1]}"),
        "image": image_bytes(row.get("image"), base_dir),
        "question": question,
        "options": options,
        "answer": parse_label(row["label"], len(options)),
        "source": source,
        "meta": meta,
    }


def lettered_columns(row: dict) -> list[str]:
    """Options from columns A, B, C, ... (stopping at the first missing one)."""
    options = []
    for letter in LETTERS:
        if letter not in row or _missing(row[letter]):
            break
        options.append(str(row[letter]).strip())
    return options


def vmcbench_record(row: dict, location: str, *, source: str, base_dir: str) -> dict:
    options = lettered_columns(row)
    if len(options) < 2:
        raise ValueError("fewer than 2 options in columns A, B, ...")
    if _missing(row.get("question")):
        raise ValueError("question is empty")
    if _missing(row.get("answer")):
        raise ValueError("answer is missing (VMCBench rows give the correct letter in column answer)")
    index = row.get("index")
    meta = {"category": row.get("category"), "index": index}
    meta.update(_extra_meta(row, {"question", "answer", "category", "index", "image", *LETTERS[: len(options)]}))
    return {
        "id": f"{source}-{index}" if not _missing(index) else f"{source}-{location.split()[-1]}",
        "image": image_bytes(row.get("image"), base_dir),
        "question": str(row["question"]).strip(),
        "options": options,
        "answer": parse_label(row.get("answer"), len(options)),
        "source": source,
        "meta": meta,
    }


MMMU_IMAGE_COLUMNS = tuple(f"image_{k}" for k in range(1, 8))
def mmmu_record(row: dict, location: str, *, source: str, base_dir: str) -> dict:
    question_type = row.get("question_type", "multiple-choice")
    if question_type != "multiple-choice":
        raise ExcludedRow(f"{question_type} questions")
    options = row.get("options")
    if isinstance(options, str):
        try:
            options = ast.literal_eval(options)
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"options is not a Python list literal: {error}") from error
    if not isinstance(options, (list, tuple)) or len(options) < 2:
        raise ValueError(f"options must be a list of >= 2 choices, got {options!r}")
    images = [(column, image_bytes(row.get(column), base_dir)) for column in MMMU_IMAGE_COLUMNS]
    images = [(column, data) for column, data in images if data is not None]
    meta = {"num_images": len(images), "image_columns": [column for column, _ in images]}
    meta.update(_extra_meta(row, {"id", "question", "options", "answer", "question_type", *MMMU_IMAGE_COLUMNS}))
    record = {
        "id": str(row.get("id") or f"{source}-{location.split()[-1]}"),
        "image": images[0][1] if images else None,
        "question": str(row.get("question") or "").strip(),
        "options": [str(option).strip() for option in options],
        "answer": parse_label(row.get("answer"), len(options)),
        "source": source,
        "meta": meta,
    }
    if len(images) > 1:
        record.update(kind=MCQ_KIND, extra_images=[data for _, data in images[1:]], history=[], matcher=None)
    return record


IMAGE_TOKEN = "<image>"
"""LLaVA's image placeholder at the start of a prompt."""

MLLM_CL_MATCHERS = {"RS": "rs", "Med": "med", "AD": "ad", "Sci": "sci", "Fin": "fin"}
"""MLLM-CL domain -> the matcher of its free-form answers (the paper's Listings 2-5)."""


def mllm_cl_answer(answer: str, options: list[str]) -> str:
    """The answer letter of an MLLM-CL answer: "B", "B. text" / "(B)", or an option's text."""
    text = answer.strip()
    match = OPTION_LINE.match(text)
    if match and match.group(1) in LETTERS[: len(options)]:
        return match.group(1)
    if len(text) == 1 and text.upper() in LETTERS[: len(options)]:
        return text.upper()
    lowered = [option.strip().lower() for option in options]
    if text.lower() in lowered:
        return LETTERS[lowered.index(text.lower())]
    raise ValueError(f"answer {answer!r} is neither an option letter nor an option's text")


def freeform_fields(matcher: str, images: list[bytes], history: list[dict] | None = None) -> dict:
    """The free-form columns of a record: its kind, its matcher, its images after the first, its history."""
    return {"kind": FREEFORM_KIND, "matcher": matcher, "extra_images": images[1:], "history": history or []}


def mllm_cl_record(row: dict, location: str, *, source: str, base_dir: str, matcher: str = "exact") -> dict:
    """A row of an MLLM-CL ``train.json`` (LLaVA ``conversations``) or ``test.json`` (``text``, ``answer``).

    Multiple-choice rows (lettered option lines, or inline "Options: A. ... B. ...") become MCQ
    records; every other row a free-form record scored by ``matcher`` (the domain's).
    """
    if "conversations" in row:
        turns = row["conversations"] or []
        human = next((t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "human"), None)
        answer = next((t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "gpt"), None)
    else:
        human, answer = row.get("text", row.get("question")), row.get("answer")
    if not isinstance(human, str) or not isinstance(answer, str):
        raise ValueError("expected conversations (human, gpt) or text and answer")
    identifier = row.get("id", row.get("question_id"))
    image = image_bytes(row.get("image"), base_dir)
    record = {
        "id": f"{source}-{identifier}" if not _missing(identifier) else f"{source}-{location.split()[-1]}",
        "image": image,
        "source": source,
    }
    meta = {"image_path": row.get("image")}
    meta.update(_extra_meta(row, {"id", "question_id", "image", "conversations", "text", "question", "answer"}))
    try:
        question, options, instruction = question_and_options(human.replace(IMAGE_TOKEN, "").strip())
    except ValueError:
        if not answer.strip():
            raise ValueError("answer is empty") from None
        text = human.replace(IMAGE_TOKEN, "").strip() if image is None else human.strip()
        return {**record, "question": text, "options": [], "answer": answer.strip(), "meta": meta,
                **freeform_fields(matcher, [image] if image is not None else [])}  # fmt: skip
    meta["instruction"] = instruction
    return {**record, "question": question, "options": options, "answer": mllm_cl_answer(answer, options), "meta": meta}


LLAVA_ROLES = {"human": USER_ROLE, "user": USER_ROLE, "gpt": ASSISTANT_ROLE, "assistant": ASSISTANT_ROLE}
"""ShareGPT ``from`` values -> contract roles (``system`` turns are left out)."""


def _image_list(value: Any, base_dir: str) -> list[bytes]:
    """Images of a source value: one image, a list of them, or nothing."""
    values = value if isinstance(value, list) else [value]
    return [data for data in (image_bytes(item, base_dir) for item in values) if data is not None]


def _check_placeholders(texts: list[str], images: list[bytes]) -> None:
    """ValueError when the texts have more ``<image>`` placeholders than the row has images."""
    count = sum(len(IMAGE_PLACEHOLDER.findall(text)) for text in texts)
    if count and not images:
        raise ValueError(f"has {count} image placeholder(s) but no image")


def llava_instruct_record(row: dict, location: str, *, source: str, base_dir: str, matcher: str = "exact") -> dict:
    """A LLaVA-Instruct / ShareGPT row ``{id, image, conversations: [{from: human|gpt, value}]}`` as a free-form record.

    The last human turn is the question and the gpt reply to it the answer; the turns before
    are the history. ``image`` may be a path, a list of paths or absent (text-only rows).
    """
    conversations = row.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise ValueError("conversations must be a non-empty list of {from, value} turns")
    turns = []
    for position, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise ValueError(f"conversations[{position}] must be an object with a string value")
        speaker = turn.get("from")
        if speaker == "system":
            continue
        if speaker not in LLAVA_ROLES:
            raise ValueError(f"conversations[{position}].from is {speaker!r}; expected human or gpt")
        expected = USER_ROLE if len(turns) % 2 == 0 else ASSISTANT_ROLE
        if LLAVA_ROLES[speaker] != expected:
            raise ValueError(f"conversations[{position}].from is {speaker!r}; turns must alternate human, gpt, ...")
        turns.append({"role": expected, "text": turn["value"].strip()})
    if len(turns) < 2 or len(turns) % 2:
        raise ValueError("conversations must end with a gpt turn answering a human turn")
    images = _image_list(row.get("image"), base_dir)
    _check_placeholders([turn["text"] for turn in turns], images)
    identifier = row.get("id")
    meta = {"image_path": row.get("image")} if row.get("image") is not None else {}
    meta.update(_extra_meta(row, {"id", "image", "conversations"}))
    return {
        "id": f"{source}-{identifier}" if not _missing(identifier) else f"{source}-{location.split()[-1]}",
        "image": images[0] if images else None,
        "question": turns[-2]["text"],
        "options": [],
        "answer": turns[-1]["text"],
        "source": source,
        "meta": meta,
        **freeform_fields(matcher, images, turns[:-2]),
    }


def vqa_record(row: dict, location: str, *, source: str, base_dir: str, matcher: str = "exact") -> dict:
    """A free-form VQA row (OCR-VQA style): ``question`` and ``answer`` (or ``answers``, the first kept).

    ``image`` (or ``images``, a list) is a path, base64 text or bytes; ``id`` or ``question_id``
    names the row; other fields go to meta.
    """
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question is missing or empty")
    answer = row.get("answer")
    if answer is None and isinstance(row.get("answers"), list) and row["answers"]:
        answer = row["answers"][0]
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError("answer is missing or empty (give answer, or answers as a list)")
    images = _image_list(row.get("images", row.get("image")), base_dir)
    _check_placeholders([question], images)
    identifier = row.get("id", row.get("question_id"))
    meta = _extra_meta(row, {"id", "question_id", "image", "images", "question", "answer", "answers"})
    return {
        "id": f"{source}-{identifier}" if not _missing(identifier) else f"{source}-{location.split()[-1]}",
        "image": images[0] if images else None,
        "question": question.strip(),
        "options": [],
        "answer": answer.strip(),
        "source": source,
        "meta": meta,
        **freeform_fields(matcher, images),
    }


CONVERTERS: dict[str, Callable[..., dict]] = {
    "imagewikiqa": imagewikiqa_record,
    "vmcbench": vmcbench_record,
    "mmmu": mmmu_record,
    "mllm-cl": mllm_cl_record,
    "llava-instruct": llava_instruct_record,
    "vqa": vqa_record,
}

FREEFORM_FORMATS = ("mllm-cl", "llava-instruct", "vqa")
"""Formats whose rows may be free-form (their converters take the free-form rows' ``matcher``)."""


def mllm_cl_domain(path: str, source: str) -> str:
    """The MLLM-CL domain of a split file: its folder name (``RS/train.json``) or the dataset name's prefix."""
    candidates = [posixpath.basename(parent_dir(path).rstrip("/")), source.split("-")[0], source]
    for candidate in candidates:
        for domain in MLLM_CL_MATCHERS:
            if candidate.lower() == domain.lower():
                return domain
    raise ValueError(
        f"{path}: cannot tell the MLLM-CL domain from the folder or the dataset name {source!r}; "
        f"pass --domain ({', '.join(MLLM_CL_MATCHERS)})"
    )


def adapt_file(
    fmt: str,
    path: str | os.PathLike,
    *,
    source: str | None = None,
    image_root: str | None = None,
    skip_bad: bool = False,
    matcher: str | None = None,
    domain: str | None = None,
) -> Adapted:
    """Adapt a source file of format ``fmt`` (any of ``CONVERTERS``) to a table of the contract.

    ``matcher`` scores the free-form rows of ``llava-instruct`` and ``vqa`` (default ``exact``);
    ``mllm-cl`` uses its ``domain``'s matcher (default: the domain the path or source names).
    """
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}; file formats are {', '.join(CONVERTERS)}")
    path = str(path)
    convert = CONVERTERS[fmt]
    base_dir = str(image_root) if image_root is not None else parent_dir(path)
    source = source or fmt
    if fmt == "mllm-cl":
        if domain is not None and domain not in MLLM_CL_MATCHERS:
            raise ValueError(f"domain {domain!r} is not an MLLM-CL domain ({', '.join(MLLM_CL_MATCHERS)})")
        matcher = MLLM_CL_MATCHERS[domain or mllm_cl_domain(path, source)]
    if matcher is not None and matcher not in MATCHER_NAMES:
        raise ValueError(f"matcher {matcher!r} is not one of {', '.join(MATCHER_NAMES)}")
    if fmt in FREEFORM_FORMATS:
        convert = functools.partial(convert, matcher=matcher or "exact")
    records, locations, bad, excluded = [], [], [], Counter()
    for location, row in iter_source_rows(path):
        try:
            if isinstance(row, ValueError):
                raise row
            if not isinstance(row, dict):
                raise ValueError(f"row is not an object (got {type(row).__name__})")
            records.append(convert(row, location, source=source, base_dir=base_dir))
            locations.append(location)
        except ExcludedRow as excluded_row:
            excluded[excluded_row.reason] += 1
        except (ValueError, OSError) as error:
            row_id = row.get("id") if isinstance(row, dict) else None
            bad.append(BadRow(location, None if row_id is None else str(row_id), str(error)))
    if not records and not bad:
        raise MCQFormatError(path, problem="has no rows" + (f" to adapt ({_excluded_text(excluded)} left out)" if excluded else ""))
    table = records_to_table(records)
    contract_bad = RowValidator().check(table, 0, locations)
    bad += contract_bad
    if bad and not skip_bad:
        raise MCQFormatError(path, bad)
    if contract_bad:
        dropped = {b.row for b in contract_bad}
        table = table.filter(pa.array([row not in dropped for row in range(table.num_rows)]))
    if table.num_rows == 0:
        raise MCQFormatError(path, problem=f"has no rows left to write ({len(bad)} bad rows skipped)")
    kinds = {}
    if fmt in FREEFORM_FORMATS:
        counted = Counter(table.column("kind").to_pylist()) if "kind" in table.column_names else Counter()
        kinds = {MCQ_KIND: table.num_rows - counted[FREEFORM_KIND], FREEFORM_KIND: counted[FREEFORM_KIND]}
    return Adapted(path, table, table.num_rows, tuple(bad), dict(excluded), kinds)


def _excluded_text(excluded: Counter) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in excluded.items())


def adapt(
    fmt: str,
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    source: str | None = None,
    image_root: str | None = None,
    skip_bad: bool = False,
    overwrite: bool = False,
    clip_path: str | None = None,
    seed: int = 0,
    question: str = FOLDER_QUESTION,
    names_file: str | None = None,
    matcher: str | None = None,
    domain: str | None = None,
) -> Adapted:
    """Adapt ``input_path`` (format ``fmt``) and write the parquet ``out``."""
    check_writable(out, overwrite)
    if fmt == "class-folder":
        folder = ClassFolder.scan(input_path, names_file=names_file)
        rows = build_class_mcq(
            folder, out, question=question, clip_path=clip_path, seed=seed, source=source, overwrite=overwrite
        )
        return Adapted(str(input_path), None, rows)
    adapted = adapt_file(
        fmt,
        input_path,
        source=source or posixpath.splitext(posixpath.basename(str(out)))[0],
        image_root=image_root,
        skip_bad=skip_bad,
        matcher=matcher,
        domain=domain,
    )
    write_mcq(adapted.table, out, overwrite=overwrite)
    return adapted
