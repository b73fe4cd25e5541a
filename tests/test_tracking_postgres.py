"""MLflow on PostgreSQL as the tracking store: a real sweep, and a server killed and restarted mid-trial.

    python -m pytest -q tests/test_tracking_postgres.py

The tests need PostgreSQL on 127.0.0.1:5432 with trust authentication for the user ``postgres``
(or ``$PGUSER``, or this machine's user) and the driver from the ``postgres`` extra; where either
is missing they are skipped with the reason. Each test session creates a fresh database, serves
it with `mlflow server` on 127.0.0.1 (artifacts on the session's moto S3 server) and drops it
afterwards.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from contract.layout import (
    DATASET_ACCURACY_PREFIX,
    GRID_ARTIFACT,
    KIND_TAG,
    PARENT_TAG,
    QUADRANT_DELTA_PREFIX,
    QUADRANT_STDERR_PREFIX,
    REPORT_ARTIFACT_DIR,
    RESUMED_TAG,
    SIGNAL_PREFIX,
    SIGNAL_TIME_PREFIX,
    STATUS_TAG,
    SWEEP_KIND,
    TARGET_QUADRANT,
    TIME_TRAIN_S,
    TRAIN_LOSS,
    TRAIN_LR,
    TRAIN_SECONDS_PER_STEP,
    TRAIN_TOKENS_PER_S,
    TRIAL_KIND,
    TRIALS_ARTIFACT,
    accuracy_metric,
    predictions_artifact,
)
from tests.conftest import S3_BUCKET, MlflowServer, metric_steps, wait_for
from tests.test_sweep import sweep_command, write_grid

pytestmark = pytest.mark.slow

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
TIMING_METRICS = (TIME_TRAIN_S.split("/")[0] + "/", SIGNAL_TIME_PREFIX, TRAIN_SECONDS_PER_STEP, TRAIN_TOKENS_PER_S)
"""Metrics that measure time: their steps must match between two runs, their values cannot."""
UNPAIRED_METRICS = (*TIMING_METRICS, SIGNAL_PREFIX)
"""Metrics whose values two side-by-side sweeps need not share: the times, and the signals (the two trials of a
sweep race to fill the base model's cached distributions, and the one that reads them back gets their stored
rounding); their steps must match."""
TRAINING_METRICS = (TRAIN_LOSS, TRAIN_LR, TRAIN_TOKENS_PER_S, TRAIN_SECONDS_PER_STEP)
"""Logged at every step of the trial below (``log_every=1``)."""
EVALUATION_PREFIXES = (DATASET_ACCURACY_PREFIX, QUADRANT_DELTA_PREFIX, QUADRANT_STDERR_PREFIX)
"""Logged at every evaluation."""


def postgres_admin():
    """(psycopg module, user) for an autocommit connection to the ``postgres`` database; skips the test
    with the reason when the driver is not installed or nothing answers on 127.0.0.1:5432."""
    psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: bash install.sh dev")
    errors = []
    for user in dict.fromkeys(filter(None, (os.environ.get("PGUSER"), "postgres", getpass.getuser()))):
        try:
            with psycopg.connect(
                host=POSTGRES_HOST, port=POSTGRES_PORT, user=user, dbname="postgres", connect_timeout=10
            ):
                return psycopg, user
        except psycopg.Error as error:
            errors.append(f"{user}: {str(error).strip().splitlines()[0]}")
    pytest.skip(
        f"PostgreSQL is not reachable on {POSTGRES_HOST}:{POSTGRES_PORT} with trust authentication "
        f"({'; '.join(errors)})"
    )


@pytest.fixture(scope="session")
def postgres_store() -> str:
    """The ``postgresql://`` URI of a fresh database for this test session, dropped afterwards."""
    psycopg, user = postgres_admin()
    name = f"forgetless_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = dict(host=POSTGRES_HOST, port=POSTGRES_PORT, user=user, dbname="postgres", autocommit=True)
    with psycopg.connect(**admin) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql://{user}@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    with psycopg.connect(**admin) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_mlflow(postgres_store, s3_endpoint, tmp_path_factory) -> MlflowServer:
    """`mlflow server` on 127.0.0.1 over the session's PostgreSQL database, artifacts on the moto S3 server."""
    server = MlflowServer(
        tmp_path_factory.mktemp("mlflow-postgres"),
        backend_store_uri=postgres_store,
        artifacts_destination=f"s3://{S3_BUCKET}/mlflow-postgres-{uuid.uuid4().hex[:8]}",
    )
    server.start()
    yield server
    server.stop()


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    """Every artifact file of a run, recursively."""
    paths = []
    for item in client.list_artifacts(run_id, path):
        paths += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(paths)


def experiment_digest(tracking_uri: str, experiment: str) -> dict:
    """What a sweep left in MLflow, without what differs between two runs of it (ids, times, paths):
    the nested runs with their params, tags and artifacts, every metric's (step, value) points (timing
    metrics: steps only), and the report's tables."""
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    (parent,) = [run for run in runs if run.data.tags.get(KIND_TAG) == SWEEP_KIND]
    trials = {}
    for run in (run for run in runs if run.data.tags.get(KIND_TAG) == TRIAL_KIND):
        run_id = run.info.run_id
        metrics = {}
        for key in run.data.metrics:
            points = [
                (m.step, None if key.startswith(UNPAIRED_METRICS) else m.value)
                for m in client.get_metric_history(run_id, key)
            ]
            metrics[key] = sorted(points, key=lambda point: point[0])
        trials[run.info.run_name] = {
            "nested": run.data.tags.get(PARENT_TAG) == parent.info.run_id,
            "status": (run.info.status, run.data.tags.get(STATUS_TAG)),
            "params": run.data.params,
            "metrics": metrics,
            "artifacts": artifact_paths(client, run_id),
        }
    report = {
        name: Path(client.download_artifacts(parent.info.run_id, name)).read_text()
        for name in (f"{REPORT_ARTIFACT_DIR}/table1.md", f"{REPORT_ARTIFACT_DIR}/frontier.md", TRIALS_ARTIFACT)
    }
    return {
        "sweep": (parent.info.status, parent.data.tags.get(STATUS_TAG), sorted(parent.data.params)),
        "sweep_artifacts": artifact_paths(client, parent.info.run_id),
        "report": report,
        "trials": trials,
    }


def summary_table(stdout: str) -> list[list[str]]:
    """The sweep's closing summary rows without their MLflow run id column."""
    rows = [line.split() for line in stdout.splitlines() if line.startswith("llm-")]
    return sorted(row[:-1] for row in rows)


def test_the_ci_sweep_on_postgres_matches_the_sqlite_path(tmp_path, postgres_mlflow):
    """grids/ci.yaml against `mlflow server` on PostgreSQL and, at the same time, against a sqlite store
    opened directly (the default path): nested runs, metrics, artifacts and report are the same."""
    sweeps = {"postgres": postgres_mlflow.uri, "sqlite": f"sqlite:///{tmp_path / 'sqlite' / 'mlflow.db'}"}
    processes = {}
    for store, uri in sweeps.items():
        (tmp_path / store).mkdir(exist_ok=True)
        grid = write_grid(tmp_path / store / "ci.yaml", storage=str(tmp_path / store / "sweeps"), tracking={"uri": uri})
        processes[store] = subprocess.Popen(
            sweep_command(grid), cwd=tmp_path / store, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    outputs = {store: process.communicate(timeout=1800)[0] for store, process in processes.items()}
    for store, process in processes.items():
        assert process.returncode == 0, f"the {store} sweep failed:\n{outputs[store][-3000:]}"

    postgres, sqlite = (experiment_digest(uri, "ci-smoke") for uri in sweeps.values())
    assert summary_table(outputs["postgres"]) == summary_table(outputs["sqlite"])
    assert len(summary_table(outputs["postgres"])) == 2
    # what the sweep must leave in either store (so that two equally broken paths cannot agree)
    assert postgres["sweep"][:2] == ("FINISHED", "finished")
    assert {
        GRID_ARTIFACT,
        TRIALS_ARTIFACT,
        f"{REPORT_ARTIFACT_DIR}/report.html",
        f"{REPORT_ARTIFACT_DIR}/table1.md",
    } <= set(postgres["sweep_artifacts"])
    assert sorted(postgres["trials"]) == ["llm-full-lr1e-03-f1.0-s0", "llm-lora-r4-lr1e-03-f1.0-s0"]
    for trial in postgres["trials"].values():
        assert trial["nested"] and trial["status"] == ("FINISHED", "finished")
        assert [step for step, _ in trial["metrics"][accuracy_metric(TARGET_QUADRANT)]] == [0, 3, 6]
        assert [step for step, _ in trial["metrics"][TRAIN_LOSS]] == [3, 6]
        for key, points in trial["metrics"].items():
            steps = [step for step, _ in points]
            assert len(steps) == len(set(steps)), f"{key} has a step twice: {steps}"
        assert trial["artifacts"] == [predictions_artifact(step) for step in (0, 3, 6)]
    assert postgres == sqlite


def test_a_server_killed_and_restarted_mid_trial_loses_and_duplicates_nothing(tmp_path, postgres_mlflow, ray_cluster):
    """The PostgreSQL-backed server is SIGKILLed once the trial has logged step 2 and started again on its port
    (as tests/test_finetune.py does with sqlite): the trial waits it out and finishes with no failure budget
    (``max_failures=0``: a worker that gave up on the server would fail the trial, not be restarted from a
    checkpoint), and every metric of every step is in the run exactly once."""
    from jobs.trial import ensure_trial_run, run_trial
    from tests.test_finetune import make_trial, refuses_connections

    server, steps = postgres_mlflow, 12
    trial = ensure_trial_run(make_trial(tmp_path, server.uri, steps=steps, eval_every=6, log_every=1, max_failures=0))
    outcome: list = []
    training = threading.Thread(target=lambda: outcome.append(run_trial(trial)), daemon=True)
    training.start()
    try:
        wait_for(lambda: 2 in metric_steps(server.uri, trial.run_id, TRAIN_LOSS), "the trial logging step 2")
        server.kill()
        wait_for(lambda: refuses_connections(server.port), "the tracking server to go away")
        went_away = time.time() * 1000
    finally:
        server.start()
    training.join(timeout=1200)
    assert outcome, "run_trial raised: the trial failed and could not even record it (see the log above)"
    assert outcome[0].status == "finished", outcome[0].error
    client = MlflowClient(server.uri)
    run = client.get_run(trial.run_id)
    assert RESUMED_TAG not in run.data.tags, "the trial was restarted from a checkpoint instead of waiting"
    evaluations = [0, 6, 12]
    for key in run.data.metrics:
        logged = metric_steps(server.uri, trial.run_id, key)
        assert len(logged) == len(set(logged)), f"{key} has a step twice: {logged}"
        if key in TRAINING_METRICS or key.startswith(EVALUATION_PREFIXES):
            assert logged == (list(range(1, steps + 1)) if key in TRAINING_METRICS else evaluations), key
    logged_at = [m.timestamp for m in client.get_metric_history(trial.run_id, TRAIN_LOSS)]
    # values made before and after the server went away, every one stored once: training went on
    # through the outage (its values waited in the tracker's buffer, the evaluation's write waited for the server)
    assert min(logged_at) <= went_away <= max(logged_at), "the trial did not run through the outage"
