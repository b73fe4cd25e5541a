"""Table 1 of the paper for a sweep: final ID accuracy and quadrant deltas per recipe.

    table = build_table1(sweep, outcomes, pareto_front(outcomes))
    Path("table1.md").write_text(table_markdown(table))
    Path("table1.html").write_text(table_html_document(table))

Colouring follows the paper, on the three OOD quadrants: red = a drop of more than 3 pp,
blue = a change within ±3 pp; rows where all three are within ±3 pp are shaded grey.
Markdown has no colour, so cells carry marks (▼ red, ≈ blue, ░ grey row, ★ frontier) and a
legend explains them; the HTML has the real colours and the same marks.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from analysis.errors import AnalysisError
from analysis.markup import macro, render
from analysis.mlflow_reader import Sweep, quadrant_name
from analysis.outcomes import Outcome
from contract.layout import OOD_QUADRANTS, TARGET_QUADRANT

MARGIN_PP = 3.0
"""Changes within ±MARGIN_PP count as kept (blue); drops beyond it as forgetting (red)."""
TONE_MARKS = {"drop": "▼", "stable": "≈"}
"""Markdown mark per cell tone."""
STABLE_ROW_MARK = "░"
FRONTIER_MARK = "★"


@dataclass(frozen=True)
class Column:
    """A column of Table 1."""

    markdown: str
    """Header text (plain ASCII quadrant names, e.g. OOD^T-ID^I; the HTML page writes them with <sup>)."""
    kind: str
    """`label`, `mark` or `number` (alignment and CSS class)."""

    @property
    def html(self) -> str:
        """Header text on the HTML page: the mark column has none."""
        return "" if self.kind == "mark" else self.markdown

    def __post_init__(self) -> None:
        if self.kind not in ("label", "mark", "number"):
            raise AnalysisError(f"column {self.markdown!r}: kind must be label, mark or number, got {self.kind!r}")


@dataclass(frozen=True)
class Cell:
    """One cell: its text and, for OOD deltas, its tone."""

    text: str
    """The value as shown (without Markdown marks)."""
    tone: str | None = None
    """`drop` (red), `stable` (blue) or None."""

    def __post_init__(self) -> None:
        if self.tone not in (None, *TONE_MARKS):
            raise AnalysisError(f"cell {self.text!r}: tone must be one of {list(TONE_MARKS)} or None")


@dataclass(frozen=True)
class Row:
    """One setting of the sweep."""

    label: str
    """The setting's name (recipe, plus data conditions the sweep varies)."""
    cells: tuple[Cell, ...]
    """One per column, in column order."""
    kept: bool
    """All three OOD deltas within ±MARGIN_PP (grey row)."""
    frontier: bool
    """On the ID-gain / OOD-retention frontier."""


@dataclass(frozen=True)
class Table1:
    """Table 1 ready to render."""

    columns: tuple[Column, ...]
    """Header."""
    rows: tuple[Row, ...]
    """Body, one row per setting."""
    best_label: str
    """The setting with the highest final ID accuracy (the reference in parentheses)."""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row.cells) != len(self.columns):
                raise AnalysisError(f"row {row.label}: {len(row.cells)} cells for {len(self.columns)} columns")


def delta_tone(delta_pp: float) -> str | None:
    """`drop` below -MARGIN_PP, `stable` within ±MARGIN_PP, None for larger gains (as shown, 2 decimals)."""
    shown = round(delta_pp, 2)
    if shown < -MARGIN_PP:
        return "drop"
    return "stable" if shown <= MARGIN_PP else None


def format_pp(value: float) -> str:
    """Signed, two decimals, no negative zero: +0.46, -16.56."""
    return f"{round(value, 2) + 0.0:+.2f}"


def format_spread(value: float, spread: float | None) -> str:
    """``format_pp(value)``, then `` ± spread`` (over seeds, or a standard error) when there is one."""
    return format_pp(value) if spread is None else f"{format_pp(value)} ± {spread:.2f}"


def build_table1(sweep: Sweep, outcomes: list[Outcome], frontier: list[Outcome]) -> Table1:
    """Table 1 rows for the outcomes (their order), marking the frontier and the best ID accuracy."""
    if not outcomes:
        raise AnalysisError(f"sweep {sweep.parent_run_name}: no outcomes to tabulate")
    best = max(outcomes, key=lambda o: o.final_id)
    columns = (
        Column("Mark", "mark"),
        Column("Recipe", "label"),
        Column("Seeds", "number"),
        Column("Final ID acc. (%)", "number"),
        *(Column(f"Δ {quadrant_name(q)} (pp)", "number") for q in ("id_id", *OOD_QUADRANTS)),
        Column("OOD retention (pp)", "number"),
    )
    rows = tuple(_row(sweep.setting_label(o.setting), o, best, o in frontier) for o in outcomes)
    return Table1(columns=columns, rows=rows, best_label=sweep.setting_label(best.setting))


def _row(label: str, outcome: Outcome, best: Outcome, on_frontier: bool) -> Row:
    tones = [delta_tone(outcome.deltas[q]) for q in OOD_QUADRANTS]
    kept = all(tone == "stable" for tone in tones)
    marks = " ".join(mark for mark, shown in ((FRONTIER_MARK, on_frontier), (STABLE_ROW_MARK, kept)) if shown)
    final = f"{outcome.final_id:.2f}"
    if outcome is not best:
        final += f" ({format_pp(outcome.final_id - best.final_id)})"
    cells = (
        Cell(marks),
        Cell(label),
        Cell(str(len(outcome.trials))),
        Cell(final),
        Cell(format_spread(outcome.id_gain, outcome.delta_error(TARGET_QUADRANT))),
        *(
            Cell(format_spread(outcome.deltas[q], outcome.delta_error(q)), tone)
            for q, tone in zip(OOD_QUADRANTS, tones)
        ),
        Cell(format_spread(outcome.ood_retention, outcome.retention_error)),
    )
    return Row(label=label, cells=cells, kept=kept, frontier=on_frontier)


def legend_lines(table: Table1) -> list[str]:
    """What the numbers and marks mean (plain text, shared by Markdown and HTML)."""
    return [
        f"Final ID acc. = {quadrant_name('id_id')} accuracy at the last checkpoint, mean over seeds; "
        f"in parentheses: difference to the best ({table.best_label}).",
        "Δ = change vs the zero-shot model (step 0) in percentage points; "
        "OOD retention = mean Δ of the three OOD quadrants; "
        "± = standard deviation over seeds (settings with two or more seeds); with one seed, the "
        "standard error of the change from the question counts (final and zero-shot combined).",
        f"{TONE_MARKS['drop']} drop of more than {MARGIN_PP:g} pp (red) · "
        f"{TONE_MARKS['stable']} within ±{MARGIN_PP:g} pp (blue) · "
        f"{STABLE_ROW_MARK} all three OOD Δ within ±{MARGIN_PP:g} pp (grey row) · "
        f"{FRONTIER_MARK} frontier: no other recipe is better on both ID gain and OOD retention.",
    ]


def _markdown_text(cell: Cell) -> str:
    return f"{cell.text} {TONE_MARKS[cell.tone]}" if cell.tone else cell.text


def table_markdown(table: Table1, title: str = "Table 1: ID accuracy and forgetting per recipe") -> str:
    """The table as GitHub Markdown, columns padded so it also reads well in a terminal."""
    grid = [[c.markdown for c in table.columns]] + [[_markdown_text(c) for c in row.cells] for row in table.rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(table.columns))]

    def line(values: list[str]) -> str:
        padded = [v.ljust(w) if c.kind != "number" else v.rjust(w) for v, w, c in zip(values, widths, table.columns)]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "| "
        + " | ".join(("-" * (w - 1) + ":") if c.kind == "number" else "-" * w for w, c in zip(widths, table.columns))
        + " |"
    )
    body = [line(grid[0]), rule, *(line(values) for values in grid[1:])]
    return "\n".join([f"**{title}**", "", *body, "", *legend_lines(table)]) + "\n"


def table_html(table: Table1) -> Markup:
    """The table as an HTML fragment (its CSS: the ``css`` macro of table1.html.j2)."""
    return macro("table1.html.j2", "table")(table, legend_lines(table))


def table_html_document(table: Table1, title: str = "Table 1: ID accuracy and forgetting per recipe") -> str:
    """A standalone HTML page with the table and its colours."""
    return str(render("table1_page.html.j2", title=title, table=table, legend=legend_lines(table)))
