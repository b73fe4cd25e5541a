"""python -m recipes.data inspect FILE [--samples N] [--skip-bad]

A readable summary of an MCQ table: row count, option-count histogram, answer-letter balance
(counts and percent), source counts, image count and a few sample rows.

    from recipes.data.summary import summarize
    print(summarize(read_mcq("val.parquet")))
"""

from __future__ import annotations

import io
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image

from recipes.data.schema import LETTERS


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


def summarize(table: pa.Table, samples: int = 3, title: str = "") -> str:
    """The summary text (see the module docstring)."""
    total = table.num_rows
    lines = [f"{title}: {total} rows" if title else f"{total} rows"]
    option_counts = Counter(pc.list_value_length(table.column("options")).to_pylist())
    lines.append("options per question: " + ", ".join(f"{k}: {v}" for k, v in sorted(option_counts.items())))
    balance = answer_balance(table)
    lines.append(
        "answer letters: "
        + ", ".join(f"{letter} {count} ({_percent(count, total)})" for letter, count in balance.items())
    )
    sources = Counter(table.column("source").to_pylist())
    lines.append("sources: " + ", ".join(f"{name} {count}" for name, count in sources.most_common()))
    with_images = total - table.column("image").null_count
    lines.append(f"images: {with_images} ({_percent(with_images, total)}), text-only: {total - with_images}")
    for row in table.slice(0, samples).to_pylist():
        lines.append("")
        lines.append(f"[{row['id']}] {row['question']}  ({_image_size(row['image'])})")
        lines += [f"  {LETTERS[i]}. {option}" for i, option in enumerate(row["options"])]
        lines.append(f"  answer: {row['answer']}   meta: {row['meta']}")
    return "\n".join(lines)
