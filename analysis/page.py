"""report.html: one self-contained page (figures inlined as base64 SVG, no external assets).

    Path("report.html").write_text(report_page(sweep, outcomes, frontier, table, figures))

Sections: the sweep, the frontier, Table 1, the figures, every analysed trial, skipped runs.
The markup is the template analysis/templates/report.html.j2 (autoescaped: names from MLflow
are shown as text); this module gathers the values it shows.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

from markupsafe import Markup

from analysis.markup import render
from analysis.mlflow_reader import Sweep, format_percent, quadrant_name
from analysis.outcomes import Outcome
from analysis.plots import FigureFile
from analysis.tables import Table1, format_pp, legend_lines
from contract.layout import OOD_QUADRANTS, QUADRANTS, TARGET_QUADRANT
from recipes.common.redaction import redact_uri

TRIAL_TEXT_COLUMNS = 7
"""The first columns of the trials table hold text (left-aligned)."""


def report_page(
    sweep: Sweep,
    outcomes: list[Outcome],
    frontier: list[Outcome],
    table: Table1,
    figures: list[FigureFile],
    sections: Markup = Markup(),
) -> str:
    """The whole report as one HTML document.

    ``sections``: rendered sections placed after Table 1 (Table 3 of a continual sweep, the
    search frontier); a plain string would be shown as text.
    """
    return str(
        render(
            "report.html.j2",
            title=f"forgetless report: {sweep.experiment}",
            facts=_facts(sweep, outcomes),
            frontier=_frontier(sweep, frontier),
            table=table,
            legend=legend_lines(table),
            sections=sections,
            figures=[_figure(figure) for figure in figures],
            trials=_trials(sweep),
            skipped=sweep.skipped,
        )
    )


def _facts(sweep: Sweep, outcomes: list[Outcome]) -> list[tuple[str, str]]:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        ("Experiment", sweep.experiment),
        ("Sweep (parent run)", f"{sweep.parent_run_name} ({sweep.parent_run_id})"),
        ("Tracking URI", redact_uri(sweep.tracking_uri)),
        ("Trials analysed", f"{len(sweep.trials)} ({len(outcomes)} settings, {len(sweep.recipes)} recipes)"),
        ("Runs skipped", str(len(sweep.skipped))),
        ("Generated", generated),
    ]


def _frontier(sweep: Sweep, frontier: list[Outcome]) -> list[dict[str, str]]:
    return [
        {
            "label": sweep.setting_label(o.setting),
            "final_id": f"{o.final_id:.2f}",
            "id_gain": format_pp(o.id_gain),
            "retention": format_pp(o.ood_retention),
        }
        for o in frontier
    ]


def _figure(figure: FigureFile) -> dict[str, str]:
    return {
        "title": figure.title,
        "stem": figure.stem,
        "caption": figure.caption,
        "svg_base64": base64.b64encode(figure.svg.read_bytes()).decode("ascii"),
    }


def _trials(sweep: Sweep) -> dict[str, object]:
    """Headers (plain quadrant names: the template writes them with <sup>) and one row of text per trial."""
    headers = ["Trial", "Run id", "Recipe", "Seed", "Data", "Mix", "Status", "Last step", "Final ID (%)"] + [
        f"Δ {quadrant_name(q)} (pp)" for q in QUADRANTS
    ]
    rows = [
        [
            trial.name,
            trial.run_id,
            trial.setting.recipe.label,
            trial.seed,
            format_percent(trial.setting.data_fraction),
            trial.setting.mix_label,
            trial.status_text,
            str(max(trial.history[TARGET_QUADRANT])),
            f"{trial.final(TARGET_QUADRANT):.2f}",
            *(format_pp(trial.delta(q)) for q in QUADRANTS),
        ]
        for trial in sweep.trials
    ]
    return {
        "headers": headers,
        "rows": rows,
        "text_columns": TRIAL_TEXT_COLUMNS,
        "ood_quadrants": [quadrant_name(q) for q in OOD_QUADRANTS],
    }
