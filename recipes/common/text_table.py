"""Fixed-width text tables, as the command lines print them (plan, sweep summary, evaluation, parts),
and markdown tables, as the benchmarks print them for the docs.

    print(text_table(("trial", "status"), [("llm-full-lr1e-05-f1.0-s0", "finished")]))
    print(markdown_table(("trial", "status"), [("llm-full-lr1e-05-f1.0-s0", "finished")]))

Text columns are left-aligned and two spaces apart, with a rule under the header.
"""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A fixed-width text table with a rule under the header."""
    lines = [[str(cell) for cell in line] for line in [header, *rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown (GitHub) table: the header, its rule, one line per row."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)
