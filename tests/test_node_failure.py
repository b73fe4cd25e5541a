"""A trial outlives the node it trains on: Ray Train restarts it from its last checkpoint.

A two-node Ray cluster on this machine stands in for a cloud cluster: a head without CPUs (it
runs the sweep and the trial drivers, as the CPU head of cluster/ does) and a one-CPU worker
node (the GPU node of a real cluster) where the trial's Ray Train worker must run. A one-trial
sweep is submitted with `ray job submit`. Once Ray Train has registered the trial's first
checkpoint, every process of the worker node is killed at once with SIGKILL, as when a spot
instance is reclaimed, and a fresh worker node joins, as the autoscaler would bring one. The
trial must finish in the same sweep, in its one MLflow run, continuing after its checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from contract import layout
from jobs.finetune.loop import RESUMED_TAG
from recipes.common.local_ports import free_port
from tests.conftest import (
    latest_registered_checkpoint,
    log_tail,
    metric_steps,
    start_service,
    wait_for,
    wait_until_serving,
)
from tests.test_sweep import (
    REPO,
    ci_grid,
    sweep_command,
    token_env,
    trial_runs,
    wait_for_job_agent,
    write_grid,
)

pytestmark = pytest.mark.slow

GRID_NAME = "node-failure"
STEPS, EVAL_EVERY = 30, 5
"""Checkpoints after every 5 of 30 steps: the node dies after the first, with most of the work to come."""
NODE_START_ATTEMPTS = 3


@dataclass
class RayNode:
    """One `ray start --block` process, in a session of its own, with its own temp dir."""

    process: subprocess.Popen
    temp_dir: Path

    @classmethod
    def start(cls, *flags: str, prefix: str) -> RayNode:
        """A node that has joined its cluster.

        A raylet gives its dashboard agent 15 s to come up and aborts otherwise, which a busy
        machine sometimes exceeds; a node whose start fails that way is started again
        (``start_service``: it stops waiting when ``ray start`` exits).
        """
        temp_dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))  # short: unix socket paths <= 107 bytes
        log = temp_dir / "ray-start.log"
        started = lambda: "Ray runtime started." in log_tail(log, chars=1_000_000)  # noqa: E731
        process = start_service(
            [
                "ray",
                "start",
                "--block",
                *flags,
                f"--dashboard-agent-listen-port={free_port()}",
                f"--temp-dir={temp_dir}",
            ],
            log,
            started,
            f"ray start {' '.join(flags)}",
            attempts=NODE_START_ATTEMPTS,
            env=token_env(),
        )
        return cls(process, temp_dir)

    def session_pids(self) -> list[int]:
        """Every live process of this node: Ray's workers leave the process group but not the session."""
        pids = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                zombie = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
                if os.getsid(int(entry)) == self.process.pid and not zombie:
                    pids.append(int(entry))
            except (FileNotFoundError, ProcessLookupError):  # exited meanwhile
                pass
        return pids

    def kill(self) -> None:
        """SIGKILL every process of the node at once, like a reclaimed machine: nothing shuts down cleanly."""
        for _ in range(10):
            pids = self.session_pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        """Kill the node (a graceful `ray stop` of a head takes tens of seconds) and delete its files."""
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@dataclass
class LocalCluster:
    """A head node and worker nodes on this machine; ``dashboard`` is the job submission address."""

    gcs_address: str
    dashboard: str
    head: RayNode
    workers: list[RayNode] = field(default_factory=list)

    def add_worker(self, num_cpus: int = 1) -> RayNode:
        node = RayNode.start(f"--address={self.gcs_address}", f"--num-cpus={num_cpus}", prefix="rw")
        self.workers.append(node)
        return node

    def state(self, kind: str, *filters: str) -> list[dict]:
        """`ray list KIND` through the state API (dead nodes and actors included)."""
        result = subprocess.run(
            [
                "ray",
                "list",
                kind,
                "--address",
                self.dashboard,
                "--format",
                "json",
                "--limit",
                "10000",
                *(f"--filter={condition}" for condition in filters),
            ],
            capture_output=True,
            text=True,
            env=token_env(),
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads(result.stdout)

    def actors_that_died_with_a_node(self) -> set[str]:
        """Class names of the actors that lived on the one node that died."""
        (dead,) = self.state("nodes", "state=DEAD")
        return {actor["class_name"] for actor in self.state("actors", f"node_id={dead['node_id']}")}


@pytest.fixture
def local_cluster():
    """A `ray start --head` with no CPUs plus one `ray start --address` worker node with one CPU."""
    port, dashboard_port = free_port(), free_port()
    head = RayNode.start(
        "--head",
        "--num-cpus=0",
        f"--port={port}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        f"--ray-client-server-port={free_port()}",
        prefix="rh",
    )
    cluster = LocalCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", head)
    try:
        wait_until_serving(f"{cluster.dashboard}/api/version", (200, 401), "ray head")  # 401: token auth is on
        wait_for_job_agent(cluster.dashboard)
        cluster.add_worker()
        yield cluster
    finally:
        for node in [*cluster.workers, head]:
            node.stop()


def wait_for_checkpoint(storage: Path, sweep: subprocess.Popen, timeout: float) -> int:
    def registered() -> int | None:
        assert sweep.poll() is None, f"job submit exited ({sweep.returncode}):\n{sweep.communicate()[0][-3000:]}"
        return latest_registered_checkpoint(storage)

    return wait_for(registered, "a registered checkpoint", timeout)


def test_trial_resumes_from_its_checkpoint_after_its_worker_node_dies(tmp_path, local_cluster):
    storage, uri = tmp_path / "sweeps", f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = write_grid(
        tmp_path / "node-failure.yaml",
        name=GRID_NAME,
        grid={"parts": ["llm"], "method": ["full"], "lr": [1.0e-3]},
        train={**ci_grid()["train"], "steps": STEPS, "eval_every": EVAL_EVERY, "keep_last": 2},
        resources={"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0, "max_failures": 1},
        storage=str(storage),  # one machine: the "nodes" share this directory as a cluster shares a bucket
        tracking={"uri": uri},
        report={"enabled": False},
    )
    job_env = {"env_vars": {"FORGETLESS_TOY_SIZE": os.environ["FORGETLESS_TOY_SIZE"]}}
    sweep = subprocess.Popen(
        [
            "ray",
            "job",
            "submit",
            "--address",
            local_cluster.dashboard,
            "--working-dir",
            str(REPO),
            "--runtime-env-json",
            json.dumps(job_env),
            "--",
            *sweep_command(grid),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=token_env(),
    )
    try:
        checkpoint_step = wait_for_checkpoint(storage, sweep, timeout=600)
        (lost,) = local_cluster.workers
        lost.kill()
        replacement = local_cluster.add_worker()  # what the autoscaler does when a node is gone
        output, _ = sweep.communicate(timeout=900)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert checkpoint_step < STEPS, "the trial finished before its node could be killed"
    assert sweep.returncode == 0, output[-4000:]
    assert "succeeded" in output
    # The node took the trial's training worker with it, not the trial's driver (the Tune trial)
    # or the Ray Train controller that restarted the worker: those stay on the head.
    lost_actors = local_cluster.actors_that_died_with_a_node()
    assert "RayTrainWorker" in lost_actors
    assert not lost_actors & {"ImplicitFunc", "TrainController"}, lost_actors

    parents, children = trial_runs(uri, GRID_NAME)
    assert len(parents) == 1 and len(children) == 1, "one sweep run and one trial run, however often it restarts"
    (run,) = children
    assert run.data.tags[layout.STATUS_TAG] == "finished" and run.info.status == "FINISHED"
    # The worker group restarted on the new node from a checkpoint, not from step 0: the loop tags
    # the run with the step it resumed after, and logs it on the node that resumed.
    assert RESUMED_TAG in run.data.tags, "the trial never resumed from a checkpoint"
    resumed_after = int(run.data.tags[RESUMED_TAG])
    assert checkpoint_step <= resumed_after < STEPS and resumed_after % EVAL_EVERY == 0
    assert node_logs_mention(replacement, f"resumed after step {resumed_after}")
    # One metric history, evaluated at every checkpoint step up to the end, each step once.
    assert metric_steps(uri, run.info.run_id, layout.accuracy_metric("id_id")) == list(range(0, STEPS + 1, EVAL_EVERY))


def node_logs_mention(node: RayNode, text: str) -> bool:
    """Whether any log file the node's Ray processes wrote contains ``text``."""
    return any(
        text in path.read_text(errors="replace") for path in node.temp_dir.glob("session_*/logs/**/*") if path.is_file()
    )
