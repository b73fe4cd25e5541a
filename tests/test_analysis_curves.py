"""Data-fraction and mix-ratio curves, drawn only for sweeps that vary those axes; choosing the sweep."""

from __future__ import annotations

import pytest

from analysis.errors import AnalysisError
from analysis.mlflow_reader import load_sweep
from analysis.report import ReportPaths, write_report
from tests.synthetic_sweeps import PAPER_FRACTIONS, PAPER_MIX, log_sweep, paper_fraction_trials, paper_mix_trials

KINDS = {"fraction": paper_fraction_trials, "mix": paper_mix_trials}
SWEEPS = {"first": (1_000, slice(0, 1)), "second": (2_000, slice(1, 3))}
"""Two sweeps of one experiment: name -> (start time, which mix trials)."""


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """(tracking URI, sweep name -> parent run id)."""
    root = tmp_path_factory.mktemp("curves")
    uri = f"sqlite:///{root}/mlflow.db"
    for name, trials in KINDS.items():
        log_sweep(uri, name, trials(checkpoints=3), artifact_location=str(root / "artifacts"))
    parents = {
        name: log_sweep(
            uri, "two-sweeps", paper_mix_trials(checkpoints=2)[picked], sweep_name=name, start_time_ms=start
        )
        for name, (start, picked) in SWEEPS.items()
    }
    return uri, parents


@pytest.fixture(scope="module")
def uri(store: tuple[str, dict[str, str]]) -> str:
    return store[0]


@pytest.fixture(scope="module")
def reports(uri: str, tmp_path_factory) -> dict[str, ReportPaths]:
    out = tmp_path_factory.mktemp("reports")
    return {name: write_report(name, uri, out / name, log_artifacts=False) for name in KINDS}


@pytest.mark.parametrize(
    "experiment, stems",
    [
        ("fraction", {"trajectory", "steps", "fraction", "frontier"}),
        ("mix", {"trajectory", "steps", "mix_ratio", "frontier"}),
    ],
)
def test_curves_are_drawn_for_the_varied_axis_only(reports: dict[str, ReportPaths], experiment: str, stems: set):
    paths = reports[experiment]
    assert {p.stem for p in paths.figures} == stems
    assert all(p.stat().st_size > 5_000 for p in paths.figures if p.suffix != ".md")
    assert paths.artifact_uri is None


@pytest.mark.parametrize(
    "experiment, label, final",
    [
        *(
            ("fraction", f"llm · full · lr {lr} · {share} data", f"{finals[i]:.2f}")
            for lr, finals in PAPER_FRACTIONS.items()
            for i, share in enumerate(("100%", "25%", "2.5%", "0.25%"))
        ),
        ("mix", "llm · full · lr 1e-06 · no mix", f"{PAPER_MIX[0.0][0]:.2f}"),
        ("mix", "llm · full · lr 1e-06 · mix 50% llava-665k", f"{PAPER_MIX[0.5][0]:.2f}"),
    ],
)
def test_table_labels_name_the_varied_condition(
    reports: dict[str, ReportPaths], experiment: str, label: str, final: str
):
    [row] = [line for line in reports[experiment].table_markdown.read_text().splitlines() if f"| {label} " in line]
    assert row.split("|")[4].strip().split(" ")[0] == final


def test_fraction_figure_uses_percent_ticks(reports: dict[str, ReportPaths]):
    svg = (reports["fraction"].out_dir / "figures" / "fraction.svg").read_text()
    for tick in ("0.25%", "2.5%", "25%", "100%", "Final ID accuracy (%)", "log scale"):
        assert tick in svg


@pytest.mark.parametrize("chosen, expected", [(None, "second"), ("first", "first"), ("second", "second")])
def test_the_latest_sweep_is_the_default_and_a_parent_run_id_picks_one(store, chosen: str | None, expected: str):
    uri, parents = store
    sweep = load_sweep("two-sweeps", uri, parents[chosen] if chosen else None)
    assert (sweep.parent_run_name, sweep.parent_run_id) == (expected, parents[expected])
    assert len(sweep.trials) == SWEEPS[expected][1].stop - SWEEPS[expected][1].start


def test_an_unknown_parent_run_lists_the_sweeps(uri: str):
    with pytest.raises(AnalysisError, match=r"no sweep parent run 0123.*latest first: \w+ \(second\), \w+ \(first\)"):
        load_sweep("two-sweeps", uri, "0123")
