"""The sweep's MLflow bookkeeping: one parent run per sweep, one child run per trial, no duplicates.

Running a grid again finds what the previous runs left: the newest parent run of the sweep is
reused (its ``grid.yaml`` (redacted: ``recipes.common.redaction``) and ``trials.csv`` artifacts are refreshed), trials whose child run
is finished or early-stopped are skipped, and unfinished trials keep their child run and resume
from their checkpoints:

    parent = open_parent_run(grid, trials)
    plan = plan_children(trials, parent)      # TrialPlan(pending=[...], done=[...])
"""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from contract.layout import (
    DONE_STATUSES,
    GRID_ARTIFACT,
    KIND_TAG,
    LAYOUT_TAG,
    LAYOUT_VERSION,
    STATUS_TAG,
    SWEEP_KIND,
    SWEEP_TAG,
    TRIAL_ID_TAG,
    TRIALS_ARTIFACT,
    TRIALS_COLUMNS,
    TRIALS_TAG,
)
from jobs.finetune.config import TrialConfig
from jobs.finetune.tracking import experiment_id, start_trial_run
from jobs.trial import find_trial_run
from recipes.common.redaction import redact

RUNS_VIEW = "#/experiments/{experiment_id}/runs?workflowType=machine_learning"
"""The MLflow UI's runs table of an experiment (MLflow 3's UI opens on its GenAI view otherwise)."""


@dataclass
class TrialPlan:
    """Which trials of a sweep still need to run."""

    pending: list[TrialConfig] = field(default_factory=list)
    """Trials to run (``run_id`` set: a new child run, or the unfinished one being resumed)."""
    done: list[tuple[TrialConfig, str, str]] = field(default_factory=list)
    """(trial, run id, status) of trials that already finished."""


def trials_csv(trials: list[TrialConfig]) -> str:
    """The resolved trial table as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(TRIALS_COLUMNS)
    for trial in trials:
        params = trial.mlflow_params()
        writer.writerow([trial.trial_id, trial.name, *(params[c] for c in TRIALS_COLUMNS[2:])])
    return buffer.getvalue()


def open_parent_run(tracking_uri: str, sweep: str, grid_file: str, trials: list[TrialConfig]) -> str:
    """The sweep's parent run (the newest one of this sweep, or a new one), with fresh artifacts."""
    client = MlflowClient(tracking_uri=tracking_uri)
    sweep_experiment = experiment_id(client, sweep)
    runs = client.search_runs(
        [sweep_experiment],
        filter_string=f"tags.`{KIND_TAG}` = '{SWEEP_KIND}' and tags.`{SWEEP_TAG}` = '{sweep}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if runs:
        run_id = runs[0].info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        tags = {KIND_TAG: SWEEP_KIND, SWEEP_TAG: sweep, LAYOUT_TAG: str(LAYOUT_VERSION)}
        run = client.create_run(sweep_experiment, run_name=sweep, tags=tags)
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param("grid_file", grid_file), Param("trials", str(len(trials)))])
    client.log_batch(run_id, tags=[RunTag(TRIALS_TAG, str(len(trials)))])
    with tempfile.TemporaryDirectory() as directory:
        grid_copy = Path(directory) / GRID_ARTIFACT
        grid_copy.write_text(redact(Path(grid_file).read_text()))
        (Path(directory) / TRIALS_ARTIFACT).write_text(trials_csv(trials))
        client.log_artifact(run_id, str(grid_copy))
        client.log_artifact(run_id, str(Path(directory) / TRIALS_ARTIFACT))
    return run_id


def plan_children(trials: list[TrialConfig], parent_run_id: str) -> TrialPlan:
    """Split trials into done ones and pending ones, creating child runs for new trials."""
    plan = TrialPlan()
    for trial in trials:
        existing = find_trial_run(trial)
        if existing and existing[1] in DONE_STATUSES:
            plan.done.append((trial, existing[0], existing[1]))
            continue
        if existing:
            run_id = existing[0]
        else:
            tags = {TRIAL_ID_TAG: trial.trial_id, SWEEP_TAG: trial.sweep or trial.experiment}
            run_id = start_trial_run(
                trial.tracking_uri, trial.experiment, trial.name, trial.mlflow_params(), tags, parent_run_id
            )
        plan.pending.append(trial.with_run(run_id=run_id))
    return plan


def runs_page_hint(tracking_uri: str, experiment_id: str) -> str:
    """One line telling where the MLflow UI shows the sweep's trials side by side."""
    view = RUNS_VIEW.format(experiment_id=experiment_id)
    if tracking_uri.startswith(("http://", "https://")):
        return f"compare the trials: {tracking_uri.rstrip('/')}/{view}"
    return f"compare the trials: mlflow ui --backend-store-uri {tracking_uri}, then open http://127.0.0.1:5000/{view}"


def parent_experiment_id(tracking_uri: str, parent_run_id: str) -> str:
    """The experiment that holds a sweep's parent run."""
    return MlflowClient(tracking_uri=tracking_uri).get_run(parent_run_id).info.experiment_id


def close_parent_run(tracking_uri: str, run_id: str, status: str) -> None:
    """End the parent run with MLflow status FINISHED, FAILED or KILLED."""
    client = MlflowClient(tracking_uri=tracking_uri)
    client.set_tag(run_id, STATUS_TAG, status.lower())
    client.set_terminated(run_id, status=status)
