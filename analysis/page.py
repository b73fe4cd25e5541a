"""report.html: one self-contained page (figures inlined as base64 SVG, no external assets).

    Path("report.html").write_text(report_page(sweep, outcomes, frontier, table, figures))

Sections: the sweep, the frontier, Table 1, the figures, every analysed trial, skipped runs.
"""

from __future__ import annotations

import base64
import html
from datetime import datetime, timezone

from analysis.continual import TABLE3_CSS
from analysis.outcomes import Outcome
from analysis.plots import FigureFile
from analysis.runs import Sweep, format_percent, quadrant_name
from contract.layout import OOD_QUADRANTS, QUADRANTS, TARGET_QUADRANT
from analysis.tables import TABLE_CSS, Table1, format_pp, html_text, table_html
from recipes.redaction import redact_uri

PAGE_CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 2em auto; max-width: 1280px; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; } dl.facts dt { color: #555; } dl.facts dd { margin: 0; }
figure { margin: 1em 0 2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 14px; margin-top: 4px; }
table.trials { border-collapse: collapse; font-size: 13px; } table.trials th, table.trials td { padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
table.trials th { border-bottom: 2px solid #555; } table.trials td.text, table.trials th.text { text-align: left; }
code { font-size: 13px; }
""".strip()

_TEXT = ' class="text"'
"""Left-aligned (text) cell of the trials table."""


def report_page(sweep: Sweep, outcomes: list[Outcome], frontier: list[Outcome], table: Table1,
                figures: list[FigureFile], continual_section: str = "") -> str:
    """The whole report as one HTML document (``continual_section``: Table 3 of a continual sweep)."""
    title = f"forgetless report: {sweep.experiment}"
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        _facts(sweep, outcomes),
        "<h2>Frontier</h2>", _frontier(sweep, frontier),
        "<h2>Table 1: ID accuracy and forgetting per recipe</h2>", table_html(table),
        continual_section,
        *(_figure(figure) for figure in figures),
        "<h2>Trials</h2>", _trials_table(sweep),
        *_skipped(sweep),
    ]
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>\n{PAGE_CSS}\n{TABLE_CSS}\n{TABLE3_CSS}\n</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


def _facts(sweep: Sweep, outcomes: list[Outcome]) -> str:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = (("Experiment", sweep.experiment), ("Sweep (parent run)", f"{sweep.parent_run_name} ({sweep.parent_run_id})"),
             ("Tracking URI", redact_uri(sweep.tracking_uri)),
             ("Trials analysed", f"{len(sweep.trials)} ({len(outcomes)} settings, {len(sweep.recipes)} recipes)"),
             ("Runs skipped", str(len(sweep.skipped))), ("Generated", generated))
    rows = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts)
    return f'<dl class="facts">{rows}</dl>'


def _frontier(sweep: Sweep, frontier: list[Outcome]) -> str:
    items = "".join(
        f"<li><b>{html.escape(sweep.setting_label(o.setting))}</b>: final ID {o.final_id:.2f}% "
        f"(ID gain {format_pp(o.id_gain)} pp), OOD retention {format_pp(o.ood_retention)} pp</li>"
        for o in frontier)
    return ("<p>Recipes no other recipe beats on both ID gain and OOD retention (mean change of the "
            f"three OOD quadrants vs zero-shot); marked ★ in Table 1.</p>\n<ul>{items}</ul>")


def _figure(figure: FigureFile) -> str:
    encoded = base64.b64encode(figure.svg.read_bytes()).decode("ascii")
    return (f"<h2>{html.escape(figure.title)}</h2>\n<figure id=\"{figure.stem}\">"
            f'<img alt="{html.escape(figure.title)}" src="data:image/svg+xml;base64,{encoded}">'
            f"<figcaption>{html_text(figure.caption)}</figcaption></figure>")


def _trials_table(sweep: Sweep) -> str:
    headers = (["Trial", "Run id", "Recipe", "Seed", "Data", "Mix", "Status", "Last step", "Final ID (%)"]
               + [f"Δ {quadrant_name(q, 'html')} (pp)" for q in QUADRANTS])
    text_columns = 7
    head = "".join(f"<th{_TEXT if i < text_columns else ''}>{h}</th>" for i, h in enumerate(headers))
    rows = []
    for trial in sweep.trials:
        values = [trial.name, trial.run_id, trial.setting.recipe.label, trial.seed,
                  format_percent(trial.setting.data_fraction), trial.setting.mix_label, trial.status_text,
                  str(max(trial.history[TARGET_QUADRANT])), f"{trial.final(TARGET_QUADRANT):.2f}",
                  *(format_pp(trial.delta(q)) for q in QUADRANTS)]
        cells = "".join(f"<td{_TEXT if i < text_columns else ''}>{html.escape(v)}</td>"
                        for i, v in enumerate(values))
        rows.append(f"<tr>{cells}</tr>")
    note = f"<p>OOD quadrants: {', '.join(quadrant_name(q, 'html') for q in OOD_QUADRANTS)}.</p>"
    return f'<table class="trials"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>\n{note}'


def _skipped(sweep: Sweep) -> list[str]:
    if not sweep.skipped:
        return []
    items = "".join(f"<li>{html.escape(s.name)} ({html.escape(s.run_id)}): {html.escape(s.status)}</li>"
                    for s in sweep.skipped)
    return ["<h2>Skipped runs</h2>", f"<p>Child runs not analysed (not finished):</p><ul>{items}</ul>"]
