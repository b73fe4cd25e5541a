"""python -m recipes.data adapt {imagewikiqa,vmcbench,mmmu} --input PATH --out FILE

Converters of the multiple-choice benchmarks: a source row of ImageWikiQA, VMCBench or MMMU
becomes an MCQ record of the data contract (``ValueError`` for a bad row, ``ExcludedRow`` for a
valid one that is not wanted, such as an open-ended MMMU question). The formats are described
in ``recipes.adapters.formats``, whose ``adapt`` reads the rows and calls these.

    from recipes.adapters.mcq import vmcbench_record
    record = vmcbench_record(row, "line 2", source="vmcbench", base_dir="/data/vmcbench")
"""

from __future__ import annotations

import ast

from recipes.adapters.rows import ExcludedRow, extra_meta, image_bytes, is_missing, parse_label, split_question_options
from recipes.data.schema import LETTERS, MCQ_KIND


def imagewikiqa_record(row: dict, location: str, *, source: str, base_dir: str) -> dict:
    if "text" not in row or "label" not in row:
        raise ValueError("missing field(s) text/label")
    question, options, instruction = split_question_options(str(row["text"]))
    if not question:
        raise ValueError("text has no question before the options")
    meta = {"wiki": row.get("wiki"), "classname": row.get("classname"), "instruction": instruction}
    if isinstance(row.get("image"), str):
        meta["image_path"] = row["image"]
    meta.update(extra_meta(row, {"image", "text", "label", "wiki", "classname", "id"}))
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
        if letter not in row or is_missing(row[letter]):
            break
        options.append(str(row[letter]).strip())
    return options


def vmcbench_record(row: dict, location: str, *, source: str, base_dir: str) -> dict:
    options = lettered_columns(row)
    if len(options) < 2:
        raise ValueError("fewer than 2 options in columns A, B, ...")
    if is_missing(row.get("question")):
        raise ValueError("question is empty")
    if is_missing(row.get("answer")):
        raise ValueError("answer is missing (VMCBench rows give the correct letter in column answer)")
    index = row.get("index")
    meta = {"category": row.get("category"), "index": index}
    meta.update(extra_meta(row, {"question", "answer", "category", "index", "image", *LETTERS[: len(options)]}))
    return {
        "id": f"{source}-{index}" if not is_missing(index) else f"{source}-{location.split()[-1]}",
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
    meta.update(extra_meta(row, {"id", "question", "options", "answer", "question_type", *MMMU_IMAGE_COLUMNS}))
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
