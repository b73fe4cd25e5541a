"""python -m recipes.data inspect FILE [--samples N] [--skip-bad]

A readable summary of a table of the data contract: row count and rows per kind, then for the
MCQ rows the option-count histogram and answer-letter balance (counts and percent), for the
free-form rows the matchers and turns per conversation, source counts, images per row and a
few sample rows.

    from recipes.data.summary import summarize
    print(summarize(read_records("val.parquet")))
"""

from __future__ import annotations

import io
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from recipes.data.schema import FREEFORM_KIND, LETTERS, MCQ_KIND, row_history, row_images


def _percent(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "-"


def answer_balance(table: pa.Table) -> dict[str, int]:
    """Answer letter -> count, in letter order."""
    counts = Counter(table.column("answer").to_pylist())
    return {letter: counts[letter] for letter in sorted(counts, key=LETTERS.index)}


def _image_size(data: bytes | None) -> str:
    if data is None:
        return "no image"
    with Image.open(io.BytesIO(data)) as image:
        return f"{image.format} {image.width}x{image.height}"


def _sample(row: dict) -> list[str]:
    images = row_images(row)
    sizes = ", ".join(_image_size(image) for image in images) or "no image"
    history = row_history(row)
    if not history:
        lines = [f"[{row['id']}] {row['question']}  ({sizes})"]
    else:
        lines = [f"[{row['id']}] conversation of {len(history) // 2 + 1} user turns  ({sizes})"]
        lines += [f"  {turn['role']}: {turn['text']}" for turn in history]
        lines.append(f"  user: {row['question']}")
    lines += [f"  {LETTERS[i]}. {option}" for i, option in enumerate(row["options"])]
    matcher = f", scored by {row['matcher']}" if row.get("matcher") else ""
    lines.append(f"  answer: {row['answer']}{matcher}   meta: {row['meta']}")
    return lines


def summarize(table: pa.Table, samples: int = 3, title: str = "") -> str:
    """The summary text (see the module docstring)."""
    total = table.num_rows
    lines = [f"{title}: {total} rows" if title else f"{total} rows"]
    kinds = Counter(table.column("kind").to_pylist()) if "kind" in table.column_names else Counter({MCQ_KIND: total})
    lines.append("kinds: " + ", ".join(f"{kind} {kinds[kind]}" for kind in (MCQ_KIND, FREEFORM_KIND)))
    mcq = table.filter(pc.equal(table.column("kind"), MCQ_KIND)) if "kind" in table.column_names else table
    if mcq.num_rows:
        option_counts = Counter(pc.list_value_length(mcq.column("options")).to_pylist())
        lines.append("options per question: " + ", ".join(f"{k}: {v}" for k, v in sorted(option_counts.items())))
        balance = answer_balance(mcq)
        lines.append(
            "answer letters: "
            + ", ".join(f"{letter} {count} ({_percent(count, mcq.num_rows)})" for letter, count in balance.items())
        )
    if kinds[FREEFORM_KIND]:
        freeform = table.filter(pc.equal(table.column("kind"), FREEFORM_KIND))
        matchers = Counter(freeform.column("matcher").to_pylist())
        lines.append("matchers: " + ", ".join(f"{name} {count}" for name, count in matchers.most_common()))
        turns = Counter(1 + len(history) // 2 for history in freeform.column("history").to_pylist())
        lines.append("user turns per record: " + ", ".join(f"{k}: {v}" for k, v in sorted(turns.items())))
    sources = Counter(table.column("source").to_pylist())
    lines.append("sources: " + ", ".join(f"{name} {count}" for name, count in sources.most_common()))
    with_images = total - table.column("image").null_count
    lines.append(f"images: {with_images} ({_percent(with_images, total)}), text-only: {total - with_images}")
    if "extra_images" in table.column_names:
        per_row = Counter(1 + n if n else 0 for n in pc.list_value_length(table.column("extra_images")).to_pylist())
        several = sum(count for n, count in per_row.items() if n > 1)
        lines.append(f"rows with several images: {several}")
    for row in table.slice(0, samples).to_pylist():
        lines.append("")
        lines += _sample(row)
    return "\n".join(lines)
