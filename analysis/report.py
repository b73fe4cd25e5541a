"""python -m analysis.report --experiment NAME [--tracking-uri URI] [--parent-run-id ID] [--out DIR] [--no-log]

Writes the report of one sweep: figures (PNG + SVG: trajectories, accuracy per step, and the
data-fraction / mix-ratio curves when the sweep varies them), Table 1 (table1.md, table1.html),
for a continual-learning sweep Table 3 (table3.md) and the accuracy matrices, otherwise the
no-forgetting frontier (frontier.md and its figure: trials and WiSE-FT blends by ID gain and
worst OOD drop, with the compute the search spent), when trials logged forgetting signals which
of them predicts forgetting (signals.md and its figure), and one
self-contained report.html; then logs them as artifacts of the sweep's parent run under
`report/` so the MLflow UI shows them. Defaults: tracking URI from MLFLOW_TRACKING_URI, else
sqlite:///mlflow.db; out dir ./reports/<experiment>; the experiment's latest sweep.

The sweep calls `write_report(experiment, tracking_uri, out_dir)` when it ends. Problems a user
can fix (unknown experiment, no finished trials, missing metrics) raise `AnalysisError`; the
command prints its message and exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import DatabaseError

from analysis.continual import build_table3, load_continual_runs, matrix_figure, table3_html, table3_markdown
from analysis.errors import AnalysisError
from analysis.forgetting_signals import signals_report
from analysis.frontier import pareto_front
from analysis.mlflow_reader import load_sweep
from analysis.outcomes import summarize
from analysis.page import report_page
from analysis.plots import FigureFile, paper_style, render_figures, save_figure
from analysis.search_frontier import frontier_report
from analysis.tables import build_table1, table_html_document, table_markdown
from contract.defaults import DEFAULT_REPORTS_DIR, DEFAULT_TRACKING_URI
from contract.exits import EXIT_BAD_INPUT
from contract.layout import REPORT_ARTIFACT_DIR
from recipes.common.input_errors import input_boundary
from recipes.common.redaction import credential_problem, redact


@dataclass(frozen=True)
class ReportPaths:
    """Where a report was written (and logged)."""

    out_dir: Path
    """The output folder."""
    report_html: Path
    """The self-contained report page."""
    table_markdown: Path
    """Table 1 as Markdown."""
    table_html: Path
    """Table 1 as a standalone HTML page."""
    figures: tuple[Path, ...]
    """Every figure file (PNG and SVG), under out_dir/figures."""
    parent_run_id: str
    """The sweep's parent run."""
    artifact_uri: str | None
    """Artifact URI of `report/` on the parent run; None when not logged."""

    @property
    def files(self) -> tuple[Path, ...]:
        """All written files."""
        return (self.report_html, self.table_markdown, self.table_html, *self.figures)


def write_report(
    experiment: str, tracking_uri: str, out_dir: Path, parent_run_id: str | None = None, log_artifacts: bool = True
) -> ReportPaths:
    """Write figures, Table 1 and report.html for a sweep; log them on its parent run unless told not to."""
    out_dir = Path(out_dir)
    sweep = load_sweep(experiment, tracking_uri, parent_run_id)
    outcomes = summarize(sweep.trials)
    frontier = pareto_front(outcomes)
    table = build_table1(sweep, outcomes, frontier)
    figures: list[FigureFile] = render_figures(sweep, outcomes, out_dir / "figures")
    table_md, table_page, page = out_dir / "table1.md", out_dir / "table1.html", out_dir / "report.html"
    table_md.write_text(table_markdown(table), encoding="utf-8")
    table_page.write_text(table_html_document(table), encoding="utf-8")
    continual_files, continual_section = _continual_report(sweep, out_dir, figures)
    frontier_files, frontier_section = (
        frontier_report(sweep, out_dir, figures) if not continual_files else ((), Markup())
    )
    signal_files, signal_section = signals_report(sweep, out_dir, figures)
    page.write_text(
        report_page(sweep, outcomes, frontier, table, figures, continual_section + frontier_section + signal_section),
        encoding="utf-8",
    )
    paths = ReportPaths(
        out_dir=out_dir,
        report_html=page,
        table_markdown=table_md,
        table_html=table_page,
        figures=tuple(p for f in figures for p in (f.png, f.svg)) + continual_files + frontier_files + signal_files,
        parent_run_id=sweep.parent_run_id,
        artifact_uri=None,
    )
    if not log_artifacts:
        return paths
    return _log(paths, tracking_uri)


def _continual_report(sweep, out_dir: Path, figures: list[FigureFile]) -> tuple[tuple[Path, ...], Markup]:
    """Table 3 (table3.md) and the accuracy matrices of a continual sweep; appends the figure.

    Returns the extra files and the report page's Table-3 section (nothing for a single-task sweep).
    """
    runs = load_continual_runs(sweep)
    if not runs:
        return (), Markup()
    table = build_table3(runs)
    table_md = out_dir / "table3.md"
    table_md.write_text(table3_markdown(table), encoding="utf-8")
    with paper_style():
        png, svg = save_figure(matrix_figure(runs), out_dir / "figures", "continual_matrix")
    figures.append(
        FigureFile(
            stem="continual_matrix",
            title="Continual learning: accuracy matrices",
            png=png,
            svg=svg,
            caption="Accuracy (%) on every task (columns) before training and after each task (rows), per trial.",
        )
    )
    return (table_md,), table3_html(table)


def _log(paths: ReportPaths, tracking_uri: str) -> ReportPaths:
    """Log the files under report/ (figures under report/figures/) on the parent run."""
    client = MlflowClient(tracking_uri=tracking_uri)
    for path in paths.files:
        folder = path.parent.relative_to(paths.out_dir).as_posix()
        client.log_artifact(
            paths.parent_run_id, str(path), REPORT_ARTIFACT_DIR if folder == "." else f"{REPORT_ARTIFACT_DIR}/{folder}"
        )
    root = client.get_run(paths.parent_run_id).info.artifact_uri
    return ReportPaths(**{**paths.__dict__, "artifact_uri": f"{root}/{REPORT_ARTIFACT_DIR}"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report",
        description="Write plots and tables of a forgetless sweep and log them on its MLflow parent run.",
    )
    parser.add_argument("--experiment", required=True, help="MLflow experiment (the grid's name)")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else {DEFAULT_TRACKING_URI})",
    )
    parser.add_argument(
        "--parent-run-id", default=None, help="sweep parent run to report on (default: the experiment's latest sweep)"
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: ./reports/<experiment>)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report as MLflow artifacts")
    return parser


def output_problem(experiment: str, out: Path | None, out_dir: Path) -> str | None:
    """Why the report cannot be written to ``out_dir``: an experiment name that leaves the reports folder, or a file."""
    if out is None and (Path(experiment).name != experiment or experiment in ("", ".", "..")):
        return f"--experiment {experiment[:100]!r} cannot name a folder under {DEFAULT_REPORTS_DIR}/; pass --out DIR"
    if out_dir.exists() and not out_dir.is_dir():
        return f"--out: {out_dir} is a file, not a folder"
    return None


@input_boundary
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    out_dir = args.out or Path(DEFAULT_REPORTS_DIR) / args.experiment
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from recipes.common.reachability import tracking_problem

    unreachable = (
        credential_problem("--tracking-uri", tracking_uri)
        or output_problem(args.experiment, args.out, out_dir)
        or tracking_problem(tracking_uri)
    )
    if unreachable:
        print(f"error: {redact(unreachable)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        paths = write_report(args.experiment, tracking_uri, out_dir, args.parent_run_id, log_artifacts=not args.no_log)
    except AnalysisError as error:
        print(f"error: {redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DatabaseError as error:  # a file at the sqlite URI that is not a database
        print(f"error: tracking URI {redact(tracking_uri)}: not an MLflow store ({error.orig})", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"report:  {paths.report_html}")
    print(f"table 1: {paths.table_markdown}, {paths.table_html}")
    print(f"figures: {', '.join(str(p) for p in paths.figures)}")
    if paths.artifact_uri:
        print(f"logged:  {paths.artifact_uri} (parent run {paths.parent_run_id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
