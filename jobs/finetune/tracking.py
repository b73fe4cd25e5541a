"""MLflow logging for one trial, safe to resume: a (metric, step) pair is logged at most once.

A trial killed after logging step 130 and resumed from its step-100 checkpoint replays steps
101..130; the tracker reads what the run already holds when it starts and skips those, so
the run ends with every step exactly once. While a tracking server is unreachable, MLflow's
client retries each request with backoff (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, about four
minutes by default) and training waits; a batch it never takes raises ``TrackingUnavailable``,
which fails the worker, and Ray Train restarts it from the last checkpoint with a new tracker
that re-reads the run. Only rank 0 of a trial creates a tracker:

    tracker = TrialTracker(tracking_uri, run_id)
    tracker.log({"train/loss": 0.7}, step=101)        # skipped if step 101 is already there
    tracker.log_table(predictions, "predictions/step_000100.parquet")
    tracker.set_status("finished")
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from contract.layout import (
    EARLY_STOP_TAG,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    KIND_TAG,
    LAYOUT_TAG,
    LAYOUT_VERSION,
    PARENT_TAG,
    STATUS_TAG,
    STATUSES,
    TRIAL_KIND,
)
from recipes.redaction import redact


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name``, created if missing; tagged so the MLflow UI opens on its runs."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def existing_metric_steps(client: MlflowClient, run_id: str) -> dict[str, set[int]]:
    """Steps already logged in ``run_id``, per metric key."""
    run = client.get_run(run_id)
    return {key: {m.step for m in client.get_metric_history(run_id, key)} for key in run.data.metrics}


class TrackingUnavailable(RuntimeError):
    """MLflow did not take a metric batch, even after its client's HTTP retries."""


class TrialTracker:
    """Logs a trial's metrics, tables and status into its MLflow run, without duplicate steps."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.logged = existing_metric_steps(self.client, run_id)

    def log(self, metrics: dict[str, float], step: int) -> int:
        """Log metrics at ``step``, skipping keys already logged there; returns how many were new."""
        timestamp = int(time.time() * 1000)
        new = [
            Metric(key, float(value), timestamp, step)
            for key, value in metrics.items()
            if step not in self.logged.get(key, ())
        ]
        if new:
            try:
                self.client.log_batch(self.run_id, metrics=new)
            except MlflowException as error:
                raise TrackingUnavailable(
                    f"MLflow at {self.tracking_uri} did not take step {step} of run {self.run_id} "
                    f"(after its HTTP retries): {error.message}"
                ) from error
            for metric in new:
                self.logged.setdefault(metric.key, set()).add(step)
        return len(new)

    def log_table(self, table: pa.Table, artifact_file: str) -> None:
        """Store a pyarrow table as a parquet artifact of the run."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / Path(artifact_file).name
            pq.write_table(table, path)
            self.client.log_artifact(self.run_id, str(path), str(Path(artifact_file).parent))

    def log_json(self, record: dict, artifact_file: str) -> None:
        """Store a JSON-able dict as a run artifact (replacing an earlier one of that name)."""
        self.client.log_dict(self.run_id, record, artifact_file)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(key, redact(str(value))) for key, value in tags.items()])

    def set_status(self, status: str, reason: str | None = None) -> None:
        """Record the trial's state (and why it stopped early)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        tags = {STATUS_TAG: status}
        if reason:
            tags[EARLY_STOP_TAG] = reason
        self.set_tags(tags)


def start_trial_run(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    params: dict[str, str],
    tags: dict[str, str],
    parent_run_id: str | None = None,
) -> str:
    """Create a trial run (a child of ``parent_run_id`` when given) with params and tags; returns its id."""
    client = MlflowClient(tracking_uri=tracking_uri)
    run_tags = {KIND_TAG: TRIAL_KIND, STATUS_TAG: "running", LAYOUT_TAG: str(LAYOUT_VERSION), **tags}
    if parent_run_id:
        run_tags[PARENT_TAG] = parent_run_id
    run = client.create_run(
        experiment_id(client, experiment), run_name=run_name, tags={k: redact(v) for k, v in run_tags.items()}
    )
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, redact(v)) for k, v in params.items()])
    return run.info.run_id
