"""Shared test fixtures: a real local Ray cluster, a real S3 API (moto server), trained tiny models.

Tests use the small toy world (``FORGETLESS_TOY_SIZE=small``) and the randomly initialised toy
model; Ray workers inherit this process's environment, so everything set here before
``ray.init`` reaches them (the S3 endpoint and its dummy credentials included).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from recipes.common.local_ports import free_port
from recipes.common.mlflow_server import mlflow_server_command

os.environ.setdefault("FORGETLESS_TOY_SIZE", "small")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# MLflow's client retries an unreachable server with backoff (factor 2 by default: waits of 4, 8,
# ... 128 s); the outage test's server is back within seconds, and half the backoff sees it sooner.
# Set before the session's Ray cluster starts, so its workers inherit them.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "10")

S3_BUCKET = "forgetless-test"
"""Bucket created on the moto server."""


ONE_RANK_ENV: dict[str, str] = {}
"""The environment of this test process's one-rank group (its port is taken at first use)."""


@contextlib.contextmanager
def one_rank_process_group() -> Iterator[None]:
    """A one-rank gloo process group for DeepSpeed in this test process, with its environment set inside.

    The group is made at first use and kept for the process's life: DeepSpeed keeps its communication
    backend for good, so a group destroyed and made again is one DeepSpeed no longer knows."""
    import deepspeed  # local: most tests never start DeepSpeed
    import torch.distributed as dist

    if not ONE_RANK_ENV:
        ONE_RANK_ENV.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1")
        ONE_RANK_ENV.update(LOCAL_RANK="0")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in ONE_RANK_ENV.items():
            patch.setenv(key, value)
        if not dist.is_initialized():
            deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
        yield


def metric_steps(tracking_uri: str, run_id: str, key: str) -> list[int]:
    """The steps at which an MLflow run has logged ``key``, sorted (duplicates kept)."""
    from mlflow.tracking import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, key))


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 600.0, every: float = 0.25) -> Any:
    """Poll ``condition()`` until it returns something truthy, and return that; fail after ``timeout`` s.

    Tests wait for readiness this way, with generous deadlines, never with a fixed sleep or a
    single short read: on a busy machine everything may take ten times longer than usual.
    """
    deadline = time.monotonic() + timeout
    while True:
        if value := condition():
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def latest_registered_checkpoint(storage: Path) -> int | None:
    """Step of the newest checkpoint a Ray Train controller has registered under ``storage``, if any.

    The controller writes its checkpoint list to the run's storage once it has taken a checkpoint
    in; from then on a restarted worker group gets that checkpoint.
    """
    steps = []
    for snapshot in storage.rglob("checkpoint_manager_snapshot.json"):
        record = wait_for(lambda s=snapshot: read_snapshot(s), f"{snapshot} to be whole", timeout=60, every=0.05)
        if latest := record.get("latest_checkpoint_result"):
            steps.append(int(latest["metrics"]["step"]))
    return max(steps, default=None)


def read_snapshot(path: Path) -> dict | None:
    """A Ray Train checkpoint-manager snapshot, or None while it is being rewritten."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def train_worker_pids() -> list[int]:
    """PIDs of this test process's live Ray Train workers (Ray titles them ``ray::RayTrainWorker...``):
    they descend from the Ray cluster it started, never from another process on the machine."""
    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("RayTrainWorker" in part for part in proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:  # exited meanwhile
            pass
    return pids


class WorkerKiller(threading.Thread):
    """SIGKILLs a Ray Train worker once ``ready()`` holds; records the checkpoint step registered then."""

    def __init__(self, ready, storage: Path) -> None:
        super().__init__(daemon=True)
        self.ready, self.storage = ready, storage
        self.killed: int | None = None
        self.checkpoint_at_kill: int | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            wait_for(lambda: self.ready() and train_worker_pids(), "a worker to kill", every=0.05)
            pid = train_worker_pids()[0]
            os.kill(pid, signal.SIGKILL)
            self.killed = pid
            self.checkpoint_at_kill = latest_registered_checkpoint(self.storage)
        except BaseException as error:  # reported by the test (pytest.fail raises a BaseException)
            self.error = error


def serving(url: str, accepted: tuple[int, ...]) -> bool:
    """Whether ``url`` answers now with one of the ``accepted`` statuses (a slow answer is waited for)."""
    try:
        return requests.get(url, timeout=60).status_code in accepted
    except requests.RequestException:  # not listening yet, or too busy to answer in time
        return False


def wait_until_serving(url: str, accepted: tuple[int, ...], what: str, timeout: float = 600) -> None:
    """Wait until ``url`` answers with one of the ``accepted`` statuses (a slow answer is waited for)."""
    wait_for(lambda: serving(url, accepted), f"{what} at {url}", timeout, every=0.5)


def signal_process_group(process: subprocess.Popen, signum: int) -> None:
    """Send ``signum`` to a server started in its own session and its children (gone already: nothing to do)."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


def stop_process_group(process: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM a server started in its own session (and its children); SIGKILL it if it lingers ``grace`` s."""
    signal_process_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_process_group(process, signal.SIGKILL)
        process.wait(timeout=20)


SERVICE_START_ATTEMPTS = 2
"""A service whose start fails is started once more before the test fails."""


def log_tail(path: Path, chars: int = 3000) -> str:
    """The last ``chars`` characters of a log file ("" while it does not exist)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return ""


def start_service(
    command: list[str],
    log: Path,
    ready: Callable[[], Any],
    what: str,
    timeout: float = 600,
    attempts: int = SERVICE_START_ATTEMPTS,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start a server process in its own session, its output appended to ``log``, and wait until ``ready()``.

    Every service the tests start (Ray heads and nodes, MLflow servers, moto) starts through here.
    Waiting stops as soon as the process exits; a start that fails (the process exited, or was not
    ready within ``timeout`` s, when it is stopped) is tried again, up to ``attempts`` starts in
    all, and then the test fails with why each start failed and the tail of the log. The log
    never records the command line, which may hold a URI with credentials.
    """
    failures = []
    for attempt in range(1, attempts + 1):
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            out.write(f"--- {what}: start {attempt} of {attempts} ---\n")
            out.flush()
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                failures.append(f"start {attempt} exited with status {process.returncode}")
                signal_process_group(process, signal.SIGKILL)  # children it left behind
                break
            if ready():
                return process
            if time.monotonic() > deadline:
                failures.append(f"start {attempt} was not ready within {timeout:.0f} s")
                stop_process_group(process, grace=5)
                break
            time.sleep(0.5)
    pytest.fail(f"{what} did not start ({'; '.join(failures)}); {log} ends with:\n{log_tail(log)}", pytrace=False)


class MlflowServer:
    """A real `mlflow server` on 127.0.0.1, which a test may stop and start again (same port, same store
    and artifacts): a sqlite store and local artifacts in ``directory`` unless told otherwise (a
    ``postgresql://`` store, an ``s3://`` artifact destination). Its output goes to
    ``directory/mlflow-server.log``."""

    def __init__(
        self, directory: Path, backend_store_uri: str | None = None, artifacts_destination: str | None = None
    ) -> None:
        self.directory, self.port = directory, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.backend_store_uri = backend_store_uri or f"sqlite:///{directory / 'server.db'}"
        self.artifacts_destination = artifacts_destination or str(directory / "artifacts")
        self.log = directory / "mlflow-server.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = start_service(
            mlflow_server_command(self.port, self.backend_store_uri, self.artifacts_destination),
            self.log,
            lambda: serving(f"{self.uri}/health", (200,)),
            f"mlflow server at {self.uri}",
        )

    def stop(self) -> None:
        stop_process_group(self.process)

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would (``stop`` lets it shut down, which takes seconds)."""
        signal_process_group(self.process, signal.SIGKILL)
        self.process.wait(timeout=20)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """A moto S3 server process on 127.0.0.1 with one bucket; its endpoint and dummy keys are in the env."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    port = endpoint.rsplit(":", 1)[1]
    server = start_service(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
        tmp_path_factory.mktemp("moto") / "moto.log",
        lambda: serving(endpoint, (200,)),
        f"moto server at {endpoint}",
    )
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=S3_BUCKET)
    yield endpoint
    stop_process_group(server, grace=5)


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """A real local Ray cluster (2 CPUs) for the whole session; a failed start is tried once more.

    ``ray.init`` starts it inside this process, so its failure is an exception, not an exit."""
    import ray

    failures = []
    for attempt in range(1, SERVICE_START_ATTEMPTS + 1):
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except Exception as error:
            failures.append(f"start {attempt}: {type(error).__name__}: {error}")
            ray.shutdown()
    else:
        pytest.fail(f"the local Ray cluster did not start ({'; '.join(failures)})", pytrace=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """A real MLflow sqlite store shared by the session's tests (each test uses its own experiment)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
