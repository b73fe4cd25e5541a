"""Report of a sweep read from a real MLflow store (sqlite) with known numbers.

Five recipes at steps 0/50/100 (zero-shot: id_id 50, id_ood 60, ood_id 40, ood_ood 30), one of
them with two seeds, plus a failed and a running trial that the report must skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from analysis.errors import AnalysisError
from analysis.mlflow_reader import load_sweep
from analysis.report import ReportPaths, main, write_report
from contract import layout
from tests.synthetic_sweeps import SyntheticTrial, log_sweep


def trial(parts: str, method: str, lr: str, id_id, id_ood, ood_id, ood_ood, **settings) -> SyntheticTrial:
    return SyntheticTrial(
        parts, method, lr, accuracy={"id_id": id_id, "id_ood": id_ood, "ood_id": ood_id, "ood_ood": ood_ood}, **settings
    )


KNOWN_TRIALS = (
    # aggressive: big ID gain, drops > 3 pp everywhere; stopped early by the sweep
    trial(
        "llm",
        "full",
        "1e-05",
        [50, 70, 80],
        [60, 55, 52],
        [40, 30, 25],
        [30, 28, 26],
        status="early_stopped",
        early_stop_reason="ood_id fell 15.0 pp",
    ),
    # two seeds, averaged: final ID 77, deltas 0 / -1 / +1
    trial("llm", "lora", "1e-04", [50, 65, 78], [60, 61, 61], [40, 40, 38], [30, 30, 33], seed=0),
    trial("llm", "lora", "1e-04", [50, 66, 76], [60, 60, 59], [40, 39, 40], [30, 31, 29], seed=1),
    # boundaries: +3.00 and -3.00 are within the margin (blue), +4.00 is a gain (no colour)
    trial("projector", "full", "1e-06", [50, 55, 58], [60, 60, 63], [40, 40, 37], [30, 31, 34]),
    # same ID gain as lora (27), worse retention: a tie on ID gain does not dominate
    trial("vision", "full", "1e-05", [50, 60, 77], [60, 58, 56.5], [40, 41, 41], [30, 30, 30.5]),
    # dominated by lora (lower ID gain and lower retention); one seed with standard errors logged
    # (400 questions per quadrant): its ± are the standard errors of its changes
    trial("vision", "full", "1e-06", [50, 55, 60], [60, 60, 59], [40, 40, 39], [30, 30, 29.5], questions=400),
    trial("llm", "full", "1e-04", [50, 70], [60, 40], [40, 20], [30, 10], status="failed"),
    trial("llm", "full", "3e-05", [50], [60], [40], [30], status="running"),
)
EXPERIMENT = "known-numbers"
ANALYSED = [t for t in KNOWN_TRIALS if t.status in ("finished", "early_stopped")]
SKIPPED = [t for t in KNOWN_TRIALS if t not in ANALYSED]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A sqlite MLflow store with the known sweep and a few broken experiments."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    artifacts = str(root / "artifacts")
    log_sweep(uri, EXPERIMENT, KNOWN_TRIALS, artifact_location=artifacts)
    log_sweep(uri, "only-failed", [KNOWN_TRIALS[-2], KNOWN_TRIALS[-1]], artifact_location=artifacts)
    log_sweep(
        uri,
        "missing-metrics",
        [
            KNOWN_TRIALS[0],
            SyntheticTrial("vision", "full", "1e-05", accuracy={"id_id": [50, 60], "id_ood": [60, 61]}),
        ],
        artifact_location=artifacts,
    )
    return root


@pytest.fixture(scope="module")
def uri(store: Path) -> str:
    return f"sqlite:///{store}/mlflow.db"


@pytest.fixture(scope="module")
def report(store: Path, uri: str) -> ReportPaths:
    return write_report(EXPERIMENT, uri, store / "report")


TABLE_ROWS = {
    # label: (mark, seeds, final ID, ΔID, ΔID^T-OOD^I, ΔOOD^T-ID^I, ΔOOD^T-OOD^I, retention)
    "llm · full · lr 1e-05": ("★", "1", "80.00", "+30.00", "-8.00 ▼", "-15.00 ▼", "-4.00 ▼", "-9.00"),
    "llm · lora · lr 1e-04": (
        "★ ░",
        "2",
        "77.00 (-3.00)",
        "+27.00 ± 1.41",
        "+0.00 ± 1.41 ≈",
        "-1.00 ± 1.41 ≈",
        "+1.00 ± 2.83 ≈",
        "+0.00 ± 0.94",
    ),
    "projector · full · lr 1e-06": ("★", "1", "58.00 (-22.00)", "+8.00", "+3.00 ≈", "-3.00 ≈", "+4.00", "+1.33"),
    "vision · full · lr 1e-05": ("★", "1", "77.00 (-3.00)", "+27.00", "-3.50 ▼", "+1.00 ≈", "+0.50 ≈", "-0.67"),
    "vision · full · lr 1e-06": (
        "░",
        "1",
        "60.00 (-20.00)",
        "+10.00 ± 3.50",
        "-1.00 ± 3.47 ≈",
        "-1.00 ± 3.46 ≈",
        "-0.50 ± 3.23 ≈",
        "-0.83 ± 1.96",
    ),
}


@pytest.mark.parametrize("label", list(TABLE_ROWS))
def test_markdown_row_has_the_expected_cells(report: ReportPaths, label: str):
    rows = [line for line in report.table_markdown.read_text().splitlines() if f"| {label} " in line]
    assert len(rows) == 1, rows
    cells = [cell.strip() for cell in rows[0].strip("|").split("|")]
    mark, seeds, final, gain, *deltas, retention = TABLE_ROWS[label]
    assert cells == [mark, label, seeds, final, gain, *deltas, retention]


def test_markdown_has_header_legend_and_only_analysed_recipes(report: ReportPaths):
    text = report.table_markdown.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Mark"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "Mark",
        "Recipe",
        "Seeds",
        "Final ID acc. (%)",
        "Δ ID^T-ID^I (pp)",
        "Δ ID^T-OOD^I (pp)",
        "Δ OOD^T-ID^I (pp)",
        "Δ OOD^T-OOD^I (pp)",
        "OOD retention (pp)",
    ]
    assert "difference to the best (llm · full · lr 1e-05)" in text
    assert "▼ drop of more than 3 pp (red)" in text and "≈ within ±3 pp (blue)" in text
    assert "llm · full · lr 1e-04" not in text and "lr 3e-05" not in text  # failed and running trials


@pytest.mark.parametrize(
    "cell",
    [
        '<td class="number drop">-15.00</td>',
        '<td class="number drop">-3.50</td>',
        '<td class="number stable">-3.00</td>',
        '<td class="number stable">+3.00</td>',
        '<td class="number">+4.00</td>',
        '<td class="number">77.00 (-3.00)</td>',
        '<td class="mark">★ ░</td>',
    ],
)
def test_html_table_colours_cells(report: ReportPaths, cell: str):
    assert cell in report.table_html.read_text()
    assert cell in report.report_html.read_text()


def test_html_table_shades_rows_with_all_ood_deltas_within_margin(report: ReportPaths):
    text = report.table_html.read_text()
    kept = [line for line in text.splitlines() if line.startswith('<tr class="kept">')]
    assert [label for label in TABLE_ROWS if any(f">{label}<" in line for line in kept)] == [
        "llm · lora · lr 1e-04",
        "vision · full · lr 1e-06",
    ]
    assert "color: #c62828" in text and "color: #1f5fbf" in text and "background: #e9e9e9" in text


def test_report_names_the_frontier(report: ReportPaths):
    text = report.report_html.read_text()
    frontier = text.split("<h2>Frontier</h2>")[1].split("<h2>")[0]
    named = [label for label in TABLE_ROWS if f"<b>{label}</b>" in frontier]
    assert named == [
        "llm · full · lr 1e-05",
        "llm · lora · lr 1e-04",
        "projector · full · lr 1e-06",
        "vision · full · lr 1e-05",
    ]


@pytest.mark.parametrize("stem", ["trajectory", "steps"])
def test_figures_are_written_as_png_and_svg(report: ReportPaths, stem: str):
    png, svg = report.out_dir / "figures" / f"{stem}.png", report.out_dir / "figures" / f"{stem}.svg"
    assert {png, svg} <= set(report.figures)
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 1000 and image.height > 500
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "</svg>" in text
    assert "ID accuracy (%)" in text or "Training step" in text  # matplotlib keeps label text as comments


@pytest.mark.parametrize("stem", ["fraction", "mix_ratio"])
def test_curves_are_not_drawn_when_the_sweep_does_not_vary_the_axis(report: ReportPaths, stem: str):
    assert not (report.out_dir / "figures" / f"{stem}.png").exists()


def test_report_html_is_self_contained_and_lists_every_trial(report: ReportPaths, uri: str):
    text = report.report_html.read_text()
    sweep = load_sweep(EXPERIMENT, uri)
    assert len(sweep.trials) == len(ANALYSED)
    for analysed in sweep.trials:
        assert f'<td class="text">{analysed.name}</td>' in text and analysed.run_id in text
    for skipped in SKIPPED:
        assert skipped.name in text.split("<h2>Skipped runs</h2>")[1]
    assert '<td class="text">early_stopped (ood_id fell 15.0 pp)</td>' in text
    assert text.count('src="data:image/svg+xml;base64,') == 3  # trajectory, steps, frontier
    assert "No-forgetting frontier" in text
    for external in ("http://", "https://", "<link", "<script"):
        assert external not in text


def test_trajectory_panels_show_the_standard_errors_a_run_logged(uri: str):
    from matplotlib.container import ErrorbarContainer

    from analysis.plots import trajectory_figure

    figure = trajectory_figure(load_sweep(EXPERIMENT, uri))
    for axes in figure.axes:
        bars = [container for container in axes.containers if isinstance(container, ErrorbarContainer)]
        assert len(bars) == 1  # only the one-seed vision 1e-06 run logged standard errors
        across, up = (collection.get_segments()[0] for collection in bars[0].lines[2])
        assert across[1][0] - across[0][0] == pytest.approx(2 * 100 * (0.6 * 0.4 / 400) ** 0.5)  # ID 60 % of 400
        assert up[0][0] == pytest.approx(60.0)  # the vertical bar stands at the run's final ID accuracy
    assert "± standard error (last checkpoint)" in [text.get_text() for text in figure.legends[0].get_texts()]


HOSTILE = "<script>alert(1)</script> & co"
"""Markup and an ampersand in an experiment name and a trial's trainable parts (hence its name and recipe)."""


@pytest.fixture(scope="module")
def hostile_report(store: Path, uri: str) -> ReportPaths:
    trials = [trial(f"llm{HOSTILE}", "full", "1e-05", [50, 70], [60, 55], [40, 30], [30, 28]), KNOWN_TRIALS[1]]
    log_sweep(uri, f"x{HOSTILE}", trials, artifact_location=str(store / "artifacts"))
    return write_report(f"x{HOSTILE}", uri, store / "hostile", log_artifacts=False)


@pytest.mark.parametrize("page", ["report_html", "table_html"])
def test_names_from_mlflow_are_escaped_and_quadrant_names_keep_their_superscripts(
    hostile_report: ReportPaths, page: str
):
    text = getattr(hostile_report, page).read_text()
    assert "<script" not in text and "& co" not in text
    assert "llm&lt;script&gt;alert(1)&lt;/script&gt; &amp; co · full · lr 1e-05" in text
    assert '<th class="number">Δ OOD<sup>T</sup>-ID<sup>I</sup> (pp)</th>' in text
    assert '<span class="drop">(red)</span>' in text and "ID<sup>T</sup>-ID<sup>I</sup> accuracy" in text


def test_report_page_escapes_the_experiment_and_trial_names(hostile_report: ReportPaths):
    text = hostile_report.report_html.read_text()
    assert "<title>forgetless report: x&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</title>" in text
    assert '<td class="text">llm&lt;script&gt;alert(1)&lt;/script&gt; &amp; co-full-lr1e-05-f1.0-s0</td>' in text
    assert "<th>Δ OOD<sup>T</sup>-ID<sup>I</sup> (pp)</th>" in text
    assert (
        "OOD quadrants: ID<sup>T</sup>-OOD<sup>I</sup>, OOD<sup>T</sup>-ID<sup>I</sup>, OOD<sup>T</sup>-OOD<sup>I</sup>."
        in text
    )


def test_artifacts_are_logged_on_the_parent_run(report: ReportPaths, uri: str):
    client = MlflowClient(tracking_uri=uri)
    parent = client.get_run(report.parent_run_id)
    assert parent.data.tags[layout.KIND_TAG] == "sweep"
    top = {a.path for a in client.list_artifacts(report.parent_run_id, "report")}
    figures = {a.path for a in client.list_artifacts(report.parent_run_id, "report/figures")}
    assert top == {
        "report/report.html",
        "report/table1.md",
        "report/table1.html",
        "report/frontier.md",
        "report/figures",
    }
    assert figures == {
        f"report/figures/{stem}.{suffix}" for stem in ("trajectory", "steps", "frontier") for suffix in ("png", "svg")
    }
    assert report.artifact_uri.endswith("/report")


@pytest.mark.parametrize(
    "experiment, expected",
    [
        ("no-such-sweep", r"unknown experiment 'no-such-sweep' in sqlite:.*; experiments there: .*known-numbers"),
        ("only-failed", r"'only-failed'.* has no finished trials \(1 failed, 1 running\)"),
        (
            "missing-metrics",
            r"1 finished trial run\(s\) lack metrics .*vision-full-lr1e-05-f1\.0-s0 \(\w+\): "
            r"acc/q/ood_id, acc/q/ood_ood$",
        ),
    ],
)
def test_errors_say_what_is_wrong(store: Path, uri: str, experiment: str, expected: str):
    with pytest.raises(AnalysisError, match=expected):
        write_report(experiment, uri, store / "unused", log_artifacts=False)
    assert not (store / "unused").exists()


def test_a_missing_database_is_an_error_not_a_new_store(tmp_path: Path):
    with pytest.raises(AnalysisError, match="no MLflow database at"):
        load_sweep(EXPERIMENT, f"sqlite:///{tmp_path}/absent.db")
    assert not (tmp_path / "absent.db").exists()


def test_cli_prints_the_error_and_exits_2(uri: str, capsys):
    assert main(["--experiment", "no-such-sweep", "--tracking-uri", uri, "--no-log"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: unknown experiment 'no-such-sweep'")
    assert "Traceback" not in captured.err


def test_cli_writes_the_report_to_the_default_folder(store: Path, uri: str, tmp_path: Path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    done = subprocess.run(
        [sys.executable, "-m", "analysis.report", "--experiment", EXPERIMENT, "--no-log"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = tmp_path / "reports" / EXPERIMENT
    assert f"report:  reports/{EXPERIMENT}/report.html" in done.stdout
    assert {p.name for p in out.iterdir()} == {"report.html", "table1.md", "table1.html", "frontier.md", "figures"}
    assert "logged:" not in done.stdout
