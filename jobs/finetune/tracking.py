"""MLflow logging for one trial, safe to resume: a (metric, step) pair is logged at most once.

A trial killed after logging step 130 and resumed from its step-100 checkpoint replays steps
101..130; the tracker reads what the run already holds when it starts and skips those, so
the run ends with every step exactly once. While a tracking server is unreachable, overloaded
or restarting, MLflow's client retries each request (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``) and
the tracker makes a write (a metric batch, an artifact, tags) again with backoff (at most 15 s
apart) for up to ``FORGETLESS_TRACKING_WAIT_S`` seconds (900 by default), so training waits and
goes on. A retry
sends the very same metrics, timestamps included: the store keeps one row for an identical
(key, step, timestamp, value), so a batch the server took before its answer was lost is not
logged twice. A batch never taken raises ``TrackingUnavailable``, which fails the worker, and
Ray Train restarts it from the last checkpoint with a new tracker that re-reads the run. A batch
that took longer than ``SLOW_BATCH_S`` is reported as the server being the bottleneck.

The training window's metrics, logged every ``log_every`` steps, wait in a bounded buffer
(``log_soon``) and go out with the next write of the run (an evaluation's metrics, a status), when
``BUFFER_MAX_VALUES`` values wait or when the oldest has waited ``BUFFER_MAX_S``: one call per
evaluation instead of one per window, which is what a loaded server needs (docs/tracking.md).
A worker that dies loses at most its buffer, and only values of steps after its last checkpoint
(every checkpoint follows an evaluation, which flushes), which the restarted worker replays and
logs. Only rank 0 of a trial creates a tracker:

    tracker = TrialTracker(tracking_uri, run_id)
    tracker.log_soon({"train/loss": 0.7}, step=101)   # buffered; skipped if step 101 is already there
    tracker.log({"acc/id_id": 55.0}, step=150)        # sent now, with the buffered values
    tracker.log_table(predictions, "predictions/step_000100.parquet")
    tracker.set_status("finished")
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH

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
from recipes.common.redaction import redact, redact_uri

log = logging.getLogger(__name__)

TRACKING_WAIT_ENV = "FORGETLESS_TRACKING_WAIT_S"
"""Seconds a trial keeps sending one metric batch to a tracking server that does not take it."""
DEFAULT_TRACKING_WAIT_S = 900.0
RETRY_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)
"""Pauses between the tracker's sends of one batch; the last repeats."""
SLOW_BATCH_S = 10.0
"""A batch that took longer than this (retries included) is reported: the server is the bottleneck."""
BUFFER_MAX_VALUES = 500
"""Buffered values (``log_soon``) that make the tracker send them; MLflow takes at most 1,000 per batch."""
BUFFER_MAX_S = 60.0
"""Seconds the oldest buffered value may wait before the tracker sends the buffer."""


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
    """MLflow did not take a metric batch, even after its client's HTTP retries and the tracker's."""


def tracking_wait_s() -> float:
    """``FORGETLESS_TRACKING_WAIT_S``: how long one metric batch is retried (0: sent once)."""
    return float(os.environ.get(TRACKING_WAIT_ENV, DEFAULT_TRACKING_WAIT_S))


def retryable(error: MlflowException) -> bool:
    """Whether the server may take the batch later: it was unreachable, failing (5xx) or throttling (429);
    a request it refused as bad (other 4xx) would be refused again."""
    status = error.get_http_status_code()
    return status >= 500 or status == 429


class TrialTracker:
    """Logs a trial's metrics, tables and status into its MLflow run, without duplicate steps."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.logged = existing_metric_steps(self.client, run_id)
        self.retries = 0
        """Metric batches sent again because the server did not take them (this tracker's life)."""
        self.waited_s = 0.0
        """Seconds spent waiting between such sends."""
        self.buffered: list[Metric] = []
        """Values ``log_soon`` took that are not sent yet, oldest first."""

    def _new_metrics(self, metrics: dict[str, float], step: int) -> list[Metric]:
        """The values of ``metrics`` at ``step`` neither logged nor buffered yet."""
        timestamp = int(time.time() * 1000)
        waiting = {(metric.key, metric.step) for metric in self.buffered}
        return [
            Metric(key, float(value), timestamp, step)
            for key, value in metrics.items()
            if step not in self.logged.get(key, ()) and (key, step) not in waiting
        ]

    def log(self, metrics: dict[str, float], step: int) -> int:
        """Log metrics at ``step`` now, with the buffered ones, skipping keys already logged there;
        returns how many were new."""
        new = self._new_metrics(metrics, step)
        self._send([*self.buffered, *new], f"step {step}")
        self.buffered = []
        return len(new)

    def log_soon(self, metrics: dict[str, float], step: int) -> int:
        """Buffer metrics at ``step`` (skipping keys already logged there) for the next write; sends the
        buffer when it is full or old (``BUFFER_MAX_VALUES``, ``BUFFER_MAX_S``); returns how many were new."""
        new = self._new_metrics(metrics, step)
        self.buffered.extend(new)
        oldest_ms = self.buffered[0].timestamp if self.buffered else None
        if len(self.buffered) >= BUFFER_MAX_VALUES or (
            oldest_ms is not None and time.time() * 1000 - oldest_ms >= BUFFER_MAX_S * 1000
        ):
            self.flush()
        return len(new)

    def flush(self) -> None:
        """Send the buffered values."""
        if self.buffered:
            self._send(self.buffered, f"the values up to step {self.buffered[-1].step}")
            self.buffered = []

    def _send(self, metrics: list[Metric], what: str) -> None:
        """``log_batch`` calls of at most MLflow's batch size; what the server took counts as logged."""
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            batch = metrics[start : start + MAX_METRICS_PER_BATCH]
            self.persist(lambda batch=batch: self.client.log_batch(self.run_id, metrics=batch), what)
            for metric in batch:
                self.logged.setdefault(metric.key, set()).add(metric.step)

    def persist(self, call: Callable[[], object], what: str) -> None:
        """Make ``call`` (one write: a metric batch of the same ``Metric`` objects, an artifact, tags; each
        idempotent) until the server takes it; ``what`` names it in messages ("step 7")."""
        started, wait = time.monotonic(), tracking_wait_s()
        uri = redact_uri(self.tracking_uri)
        for attempt in itertools.count():
            try:
                call()
                break
            except MlflowException as error:
                pause = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
                if not retryable(error) or time.monotonic() + pause - started > wait:
                    raise TrackingUnavailable(
                        f"MLflow at {uri} did not take {what} of run {self.run_id} "
                        f"(after its HTTP retries): {redact(error.message)}"
                    ) from error
                if attempt == 0:
                    log.warning(
                        "MLflow at %s did not take %s of run %s; sending it again for up to %.0f s: %s",
                        uri,
                        what,
                        self.run_id,
                        wait,
                        redact(error.message)[:300],
                    )
                self.retries += 1
                self.waited_s += pause
                time.sleep(pause)
        took = time.monotonic() - started
        if took > SLOW_BATCH_S:
            log.warning(
                "MLflow at %s took %.0f s to take %s of run %s: the tracking server is the "
                "bottleneck of this trial (docs/tracking.md)",
                uri,
                took,
                what,
                self.run_id,
            )

    def log_table(self, table: pa.Table, artifact_file: str) -> None:
        """Store a pyarrow table as a parquet artifact of the run."""
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / Path(artifact_file).name
            pq.write_table(table, path)
            self.persist(
                lambda: self.client.log_artifact(self.run_id, str(path), str(Path(artifact_file).parent)), artifact_file
            )

    def log_json(self, record: dict, artifact_file: str) -> None:
        """Store a JSON-able dict as a run artifact (replacing an earlier one of that name)."""
        self.persist(lambda: self.client.log_dict(self.run_id, record, artifact_file), artifact_file)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set run tags, after sending the buffered values (a status follows everything before it)."""
        self.flush()
        run_tags = [RunTag(key, redact(str(value))) for key, value in tags.items()]
        self.persist(lambda: self.client.log_batch(self.run_id, tags=run_tags), "tags")

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
