"""python benchmarks/tracking_load.py [--trials 8,32] [--steps 20] [--eval-every 10] [--stores sqlite,postgres]
python benchmarks/tracking_load.py --trials 8 --restart --step-s 0.5
python benchmarks/tracking_load.py --trials 32 --unbuffered

How much load one MLflow tracking server takes from a sweep's trials, and whether anything is lost.
For each store (``sqlite``: `mlflow server` over a sqlite file; ``postgres``: `mlflow server` over a
fresh PostgreSQL database, created on ``--postgres`` and dropped afterwards; ``sqlite-direct``: no
server, every trial writes the sqlite file itself, as the local default has it) and each number of
trials N, it starts the server on 127.0.0.1, creates N trial runs and starts N processes, each with
the product's own tracker (``jobs.finetune.tracking.TrialTracker``, as a trial's rank 0 has), which
log a trial's stream as fast as the server takes it (``--step-s`` adds a pause per step): the
training metrics at every step for ``--steps`` steps, and every ``--eval-every`` steps the full
evaluation metric set of ``contract.layout`` for the toy suite plus a small JSON artifact. With
``--restart`` the server is SIGKILLed once every trial's step-0 evaluation is in, while the trials
train towards their next evaluation, and started again on its port (give the steps a pause,
``--step-s``, so that the trials are still training then, as real ones are).
The training metrics go through ``TrialTracker.log_soon`` as a trial sends them (buffered until
the next evaluation); ``--unbuffered`` sends each step's at once, one call per step.

It prints one row per run: logged values per second (all trials together), the write calls the
server took (``log_batch`` and artifacts), p50 and p99 latency of one log call as the trial sees
it, the calls that failed (the trial would have failed), the tracker's retries, the longest a
trial was blocked in one call, and, read back from the store afterwards, the (metric, step) values
missing or duplicated; both must be 0. A row takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from contract.layout import (
    FROZEN_TENSORS_CHANGED,
    QUADRANTS,
    TIME_EVAL_S,
    TIME_TRAIN_S,
    TRAIN_LOSS,
    TRAIN_LR,
    TRAIN_SECONDS_PER_STEP,
    TRAIN_TOKENS_PER_S,
    accuracy_metric,
    dataset_metric,
    delta_metric,
    stderr_metric,
)
from recipes.common.local_ports import free_port
from recipes.common.mlflow_server import mlflow_server_command

TOY_SUITE_DATASETS = (
    "toy-imagenet-vqa-val",
    "toy-imagenet-vqa-v2",
    "toy-attributes",
    "toy-digits",
    "toy-digit-tasks",
    "toy-styles",
    "toy-text-qa",
    "toy-wiki",
    "toy-wiki-classname",
)
"""The datasets whose accuracies a trial evaluated on the toy suite logs (``acc/<dataset>``)."""
TRAIN_KEYS = (TRAIN_LOSS, TRAIN_LR, TRAIN_TOKENS_PER_S, TRAIN_SECONDS_PER_STEP)
EVAL_KEYS = (
    *(dataset_metric(name) for name in TOY_SUITE_DATASETS),
    *(accuracy_metric(q) for q in QUADRANTS),
    *(delta_metric(q) for q in QUADRANTS),
    *(stderr_metric(q) for q in QUADRANTS),
    FROZEN_TENSORS_CHANGED,
    TIME_TRAIN_S,
    TIME_EVAL_S,
)


def expected_points(steps: int, eval_every: int) -> set[tuple[str, int]]:
    """Every (metric, step) one trial logs."""
    points = {(key, step) for step in range(1, steps + 1) for key in TRAIN_KEYS}
    points |= {(key, step) for step in range(0, steps + 1, eval_every) for key in EVAL_KEYS}
    return points


def trial_stream(uri: str, run_id: str, steps: int, eval_every: int, step_s: float, buffered: bool, out: str) -> None:
    """One trial's rank 0: log the stream through the product's tracker, write what it saw to ``out``."""
    from jobs.finetune.tracking import TrialTracker

    latencies, errors, writes = [], [], [0]
    tracker = TrialTracker(uri, run_id)
    for name in ("log_batch", "log_dict"):
        call = getattr(tracker.client, name)
        setattr(tracker.client, name, lambda *a, call=call, **k: writes.__setitem__(0, writes[0] + 1) or call(*a, **k))

    def timed(call, *args) -> None:
        started = time.perf_counter()
        try:
            call(*args)
        except Exception as error:
            errors.append(f"{type(error).__name__}: {str(error)[:200]}")
        latencies.append(time.perf_counter() - started)

    for step in range(0, steps + 1):
        if step > 0:
            log_training = tracker.log_soon if buffered else tracker.log
            timed(log_training, {key: 1.0 / step + i for i, key in enumerate(TRAIN_KEYS)}, step)
        if step % eval_every == 0:
            timed(tracker.log, {key: step + i / 100 for i, key in enumerate(EVAL_KEYS)}, step)
            timed(tracker.log_json, {"step": step, "rows": list(range(50))}, f"evals/step_{step:06d}.json")
        time.sleep(step_s)
    timed(tracker.flush)
    Path(out).write_text(
        json.dumps({"latencies": latencies, "errors": errors, "retries": tracker.retries, "writes": writes[0]})
    )


class Server:
    """`mlflow server` on 127.0.0.1 over ``store``, in its own session, restartable on its port."""

    def __init__(self, store: str, directory: Path) -> None:
        self.store, self.directory, self.port = store, directory, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        """Start it; returns the seconds until it answered /health."""
        import requests

        started = time.monotonic()
        with open(self.directory / "server.log", "a") as log:
            self.process = subprocess.Popen(
                mlflow_server_command(self.port, self.store, str(self.directory / "artifacts")),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while True:
            if self.process.poll() is not None:
                tail = (self.directory / "server.log").read_text(errors="replace")[-2000:]
                sys.exit(f"tracking_load: mlflow server exited ({self.process.returncode}); its log ends:\n{tail}")
            try:
                if requests.get(f"{self.uri}/health", timeout=30).status_code == 200:
                    return time.monotonic() - started
            except requests.RequestException:
                pass
            time.sleep(0.5)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()


def postgres_database(admin_uri: str) -> tuple[str, callable]:
    """A fresh database on the server of ``admin_uri``: (its URI, a function that drops it)."""
    import psycopg

    name = f"forgetless_load_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_uri, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_uri, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin_uri.rsplit("/", 1)[0] + f"/{name}", drop


def read_back(store: str, run_ids: list[str], expected: set[tuple[str, int]]) -> tuple[int, int]:
    """(missing, duplicated) (metric, step) values over all runs, read from the store itself."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    missing = duplicated = 0
    for run_id in run_ids:
        seen: dict[tuple[str, int], int] = {}
        for key in {key for key, _ in expected}:
            for metric in client.get_metric_history(run_id, key):
                seen[(key, metric.step)] = seen.get((key, metric.step), 0) + 1
        missing += len(expected - set(seen))
        duplicated += sum(count - 1 for count in seen.values())
    return missing, duplicated


def run_load(store_kind: str, trials: int, args, work: Path) -> dict:
    """One row: N trials against one fresh server."""
    from jobs.finetune.tracking import start_trial_run

    directory = work / f"{store_kind}-{trials}{'-restart' if args.restart else ''}"
    directory.mkdir(parents=True)
    drop = None
    if store_kind in ("sqlite", "sqlite-direct"):
        store = f"sqlite:///{directory / 'mlflow.db'}"
    else:
        store, drop = postgres_database(args.postgres)
    server = Server(store, directory)
    uri = store if store_kind == "sqlite-direct" else server.uri
    try:
        if uri != store:
            server.start()
        run_ids = [
            start_trial_run(uri, "tracking-load", f"trial-{i}", {"i": str(i)}, {"trial_id": str(i)})
            for i in range(trials)
        ]
        expected = expected_points(args.steps, args.eval_every)
        context = multiprocessing.get_context("spawn")
        outs = [directory / f"trial-{i}.json" for i in range(trials)]
        processes = [
            context.Process(
                target=trial_stream,
                args=(uri, run_id, args.steps, args.eval_every, args.step_s, not args.unbuffered, str(out)),
            )
            for run_id, out in zip(run_ids, outs)
        ]
        started = time.monotonic()
        for process in processes:
            process.start()
        outage = None
        if args.restart and uri != store:
            from mlflow.tracking import MlflowClient

            reader = MlflowClient(store)  # the store itself: it answers while the server is down
            first_evaluation = accuracy_metric(QUADRANTS[0])
            while not all(reader.get_metric_history(run_id, first_evaluation) for run_id in run_ids) and any(
                process.is_alive() for process in processes
            ):
                time.sleep(1)
            server.kill()
            killed = time.monotonic()
            server.start()
            outage = time.monotonic() - killed
        for process in processes:
            process.join()
        elapsed = time.monotonic() - started
        results = [
            json.loads(out.read_text())
            if out.exists()
            else {"latencies": [], "errors": ["crashed"], "retries": 0, "writes": 0}
            for out in outs
        ]
        missing, duplicated = read_back(store, run_ids, expected)
    finally:
        if uri != store:
            server.stop()
        if drop:
            drop()
        shutil.rmtree(directory / "artifacts", ignore_errors=True)
    latencies = sorted(latency for result in results for latency in result["latencies"])
    return {
        "store": store_kind,
        "trials": trials,
        "restart": f"{outage:.0f} s down" if outage is not None else "no",
        "training": "per step" if args.unbuffered else "buffered",
        "writes": sum(result["writes"] for result in results),
        "values": trials * len(expected),
        "values_s": trials * len(expected) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "blocked_s": latencies[-1],
        "errors": sum(len(result["errors"]) for result in results),
        "retries": sum(result["retries"] for result in results),
        "missing": missing,
        "duplicated": duplicated,
        "first_error": next((e for result in results for e in result["errors"]), ""),
    }


COLUMNS = [
    ("store", "store", "{}"),
    ("trials", "trials", "{}"),
    ("restart", "restart", "{}"),
    ("training values", "training", "{}"),
    ("values", "values", "{}"),
    ("writes", "writes", "{}"),
    ("values/s", "values_s", "{:.0f}"),
    ("p50 ms", "p50_ms", "{:.0f}"),
    ("p99 ms", "p99_ms", "{:.0f}"),
    ("max blocked s", "blocked_s", "{:.1f}"),
    ("errors", "errors", "{}"),
    ("retries", "retries", "{}"),
    ("missing", "missing", "{}"),
    ("duplicated", "duplicated", "{}"),
]


def print_header() -> None:
    print("| " + " | ".join(title for title, _, _ in COLUMNS) + " |")
    print("|" + "|".join("---" for _ in COLUMNS) + "|", flush=True)


def print_row(row: dict) -> None:
    print("| " + " | ".join(spec.format(row[key]) for _, key, spec in COLUMNS) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--trials", default="8,32", help="comma-separated numbers of concurrent trials")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--step-s", type=float, default=0.0, help="pause per training step (0: as fast as it goes)")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database URI on the PostgreSQL server where the fresh databases are created "
        "(a password belongs in PGPASSWORD or ~/.pgpass, not here)",
    )
    parser.add_argument(
        "--restart", action="store_true", help="SIGKILL and restart the server once every step-0 evaluation is in"
    )
    parser.add_argument(
        "--unbuffered", action="store_true", help="send each step's training metrics at once (no log_soon buffer)"
    )
    parser.add_argument("--out", type=Path, default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="tracking-load-"))
    print_header()
    for store_kind in args.stores.split(","):
        for trials in (int(n) for n in args.trials.split(",")):
            row = run_load(store_kind, trials, args, work)
            print_row(row)
            if row["first_error"]:
                print(f"{store_kind} x {trials}: first error: {row['first_error']}", file=sys.stderr)


if __name__ == "__main__":
    main()
