"""python -m benchmarks.read_runs [--trials 1000] [--server] [--postgres URI]

How long the report takes to read a large sweep back from MLflow. It logs a synthetic sweep of
``--trials`` finished trial runs (``tests.synthetic_sweeps``: the contract's tags and params, the
four quadrants' accuracy, delta and standard error at 9 checkpoints, per-dataset accuracies and
the training loss, about 110 values a run) into a fresh store, then times what
``python -m analysis.report`` reads (``analysis.mlflow_reader.load_sweep``: the paged
``search_runs`` of the sweep's children and each trial's metric histories) and the paged search
alone (``analysis.mlflow_reader.all_runs``). The store is a sqlite file (the local default), or a
fresh PostgreSQL database with ``--postgres``; the runs are written into it directly, and with
``--server`` read through an ``mlflow server`` on 127.0.0.1 in front of it, as on a cluster.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from analysis.mlflow_reader import all_runs, load_sweep
from benchmarks.tracking_load import free_port
from contract.layout import PARENT_TAG, QUADRANTS
from recipes.common.mlflow_server import mlflow_server_command
from recipes.common.reachability import preflight_problem
from tests.synthetic_sweeps import SyntheticTrial, log_sweep

CHECKPOINTS = 9


def synthetic_trials(count: int) -> list[SyntheticTrial]:
    """``count`` finished trials with distinct settings and noisy falling OOD curves."""
    rng = random.Random(0)
    trials = []
    for index in range(count):
        start = {quadrant: rng.uniform(40, 80) for quadrant in QUADRANTS}
        accuracy = {
            quadrant: [start[quadrant] + step * rng.uniform(-2, 2) for step in range(CHECKPOINTS)]
            for quadrant in QUADRANTS
        }
        trials.append(
            SyntheticTrial("llm", "full", f"{1 + index % 9}e-{5 + index // 9 % 3:02d}", accuracy, seed=index // 27)
        )
    return trials


def start_server(store: str, directory: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    command = mlflow_server_command(port, store, str(directory / "artifacts"))
    log = (directory / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while preflight_problem(uri) and time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"mlflow server exited: {(directory / 'server.log').read_text()[-2000:]}")
        time.sleep(1)
    return uri, server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--server", action="store_true", help="read through an mlflow server on 127.0.0.1")
    parser.add_argument("--postgres", default=None, help="a fresh PostgreSQL database URI to use as the store")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" line per run
    directory = Path(tempfile.mkdtemp(prefix="read-runs-"))
    store = args.postgres or f"sqlite:///{directory / 'mlflow.db'}"
    started = time.perf_counter()
    parent = log_sweep(store, "read-runs", synthetic_trials(args.trials), sweep_name="read-runs")
    logged = time.perf_counter() - started
    server = None
    uri = store
    if args.server:
        uri, server = start_server(store, directory)
    try:
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("read-runs").experiment_id
        started = time.perf_counter()
        children = sum(1 for _ in all_runs(client, experiment, f"tags.`{PARENT_TAG}` = '{parent}'"))
        searched = time.perf_counter() - started
        started = time.perf_counter()
        sweep = load_sweep("read-runs", uri)
        loaded = time.perf_counter() - started
    finally:
        if server:
            server.terminate()
            server.wait(30)
    where = ("mlflow server over " if args.server else "") + ("PostgreSQL" if args.postgres else "sqlite")
    print(f"store: {where}; {args.trials} trial runs logged in {logged:.1f} s")
    print(f"all_runs (paged search_runs): {children} runs in {searched:.2f} s")
    print(f"load_sweep (what analysis.report reads): {len(sweep.trials)} trials in {loaded:.1f} s")


if __name__ == "__main__":
    main()
