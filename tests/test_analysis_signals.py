"""The report's forgetting-signals section, from a real MLflow store (sqlite) with planted signals.

Three trials at steps 0/50/100/150 (zero-shot: id_id 50, id_ood 60, ood_id 40, ood_ood 30): ``output_kl``
is planted to rise exactly with the worst OOD drop (rho +1), ``top1_agreement`` to fall with it
(rho -1), ``counting_bias`` to run against nothing in particular; one trial's OOD accuracy falls 6 pp
and comes back (a recovering trajectory).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.forgetting_signals import (
    correlations,
    recovers,
    signal_points,
    spearman_interval,
    verdict,
)
from analysis.mlflow_reader import load_sweep
from analysis.report import write_report
from contract import layout
from tests.synthetic_sweeps import SyntheticTrial, log_sweep

ZERO = {"id_id": 50.0, "id_ood": 60.0, "ood_id": 40.0, "ood_ood": 30.0}


def planted(name_lr: str, ood_id_drops: list[float], counting: list[float]) -> SyntheticTrial:
    """A trial whose ood_id falls by ``ood_id_drops`` (the worst quadrant; the others fall by a tenth of it)."""
    accuracy = {
        "id_id": [50.0 + 10 * index for index in range(len(ood_id_drops))],
        "id_ood": [ZERO["id_ood"] - drop / 10 for drop in ood_id_drops],
        "ood_id": [ZERO["ood_id"] - drop for drop in ood_id_drops],
        "ood_ood": [ZERO["ood_ood"] - drop / 10 for drop in ood_id_drops],
    }
    signals = {
        "output_kl": [drop / 100 for drop in ood_id_drops],
        "top1_agreement": [100 - drop for drop in ood_id_drops],
        "counting_bias": counting,
    }
    return SyntheticTrial("llm", "full", name_lr, accuracy=accuracy, signals=signals)


TRIALS = (
    planted("1e-05", [0, 4, 9, 15], [0.1, 0.3, 0.2, 0.1]),
    planted("1e-06", [0, 1, 4, 3], [0.1, 0.1, 0.4, 0.3]),  # fell 4 pp, regained 1: less than half, no recovery
    planted("3e-06", [0, 6, 5, 1], [0.1, 0.2, 0.1, 0.4]),  # fell 6 pp, came back to 1: recovers
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('signals') / 'mlflow.db'}"
    log_sweep(uri, "planted-signals", TRIALS)
    return load_sweep("planted-signals", uri)


def test_each_checkpoint_is_a_point_and_the_planted_signal_ranks_perfectly(sweep):
    points = signal_points(sweep)
    assert len(points) == 9  # 3 trials x steps 50, 100, 150
    by_step = {(p.trial, p.step): p for p in points}
    first = by_step[(TRIALS[0].name, 150)]
    assert first.worst_ood_drop == pytest.approx(15.0) and first.ood_id_drop == pytest.approx(15.0)
    assert first.signals["output_kl"] == pytest.approx(0.15)
    rows = {(row.signal, row.target): row for row in correlations(points)}
    assert rows[("output_kl", "worst_ood_drop")].rho == pytest.approx(1.0)
    assert rows[("top1_agreement", "ood_id_drop")].rho == pytest.approx(-1.0)
    counting = rows[("counting_bias", "worst_ood_drop")]
    assert abs(counting.rho) < 0.9 and counting.low <= counting.rho <= counting.high
    assert verdict(list(rows.values())).startswith("On this sweep, output_kl tracks forgetting best")


def test_recovering_trajectories_are_marked(sweep):
    assert [recovers(trial) for trial in sorted(sweep.trials, key=lambda t: t.name)] == [
        name == TRIALS[2].name for name in sorted(t.name for t in sweep.trials)
    ]


def test_spearman_matches_the_ranks_by_hand():
    x = np.array([0.1, 0.4, 0.2, 0.8, 0.5])
    y = np.array([1.0, 3.0, 5.0, 4.0, 2.0])
    ranks_x, ranks_y = x.argsort().argsort(), y.argsort().argsort()  # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1))
    by_hand = 1 - 6 * float(((ranks_x - ranks_y) ** 2).sum()) / (5 * (25 - 1))
    rho, low, high = spearman_interval(x, y)
    assert rho == pytest.approx(by_hand) and low <= rho <= high
    assert all(math.isnan(v) for v in spearman_interval(x, np.ones(5)))


def test_the_report_has_the_signals_section_and_figure(sweep, tmp_path):
    paths = write_report("planted-signals", sweep.tracking_uri, tmp_path, log_artifacts=False)
    page = paths.report_html.read_text()
    assert "Which forgetting signal predicts forgetting" in page and "output_kl tracks forgetting best" in page
    assert TRIALS[2].name in page.split("fell and came back")[1]
    assert (tmp_path / "figures" / "signals.png").is_file()
    markdown = (tmp_path / "signals.md").read_text()
    assert (
        "| output_kl | +1.00" in markdown
        and "output_drift: 0.50 s per measurement, 5.0% of evaluation time" in markdown
    )


@pytest.mark.parametrize(
    "signal, threshold, falling, stops_at",
    [
        ({50: 0.01, 100: 0.2, 150: 0.5}, 0.1, False, 100),  # output_kl passes max 0.1 at step 100
        ({50: 90.0, 100: 70.0, 150: 60.0}, 80.0, True, 100),  # top1_agreement falls below min 80 at step 100
        ({50: 0.01, 100: 0.02, 150: 0.03}, 0.1, False, 150),  # never passes: the trial runs to its end
        ({100: 0.5}, 0.1, False, 100),  # an evaluation without the signal does not stop it
    ],
)
def test_a_replayed_trial_stops_at_its_first_evaluation_past_the_threshold(signal, threshold, falling, stops_at):
    from types import SimpleNamespace

    from benchmarks.signal_stop_replay import stop_step

    history = {q: {0: 50.0, 50: 50.0, 100: 50.0, 150: 50.0} for q in layout.QUADRANTS}
    trial = SimpleNamespace(history=history, steps=lambda quadrant: sorted(history[quadrant]))
    assert stop_step(trial, signal, threshold, falling) == stops_at
