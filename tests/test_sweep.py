"""The sweep end to end: `ray job submit` on a `ray start` cluster, resume after SIGKILL, early stopping, S3 storage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from contract import layout
from jobs.finetune.loop import RESUMED_TAG
from recipes.common.local_ports import free_port
from tests.conftest import (
    S3_BUCKET,
    MlflowServer,
    latest_registered_checkpoint,
    metric_steps,
    serving,
    start_service,
    stop_process_group,
    wait_for,
)

REPO = Path(__file__).resolve().parents[1]


def ci_grid() -> dict:
    """grids/ci.yaml as a dict."""
    return yaml.safe_load((REPO / "grids" / "ci.yaml").read_text())


def write_grid(path: Path, **overrides) -> Path:
    """grids/ci.yaml with top-level sections replaced by ``overrides``."""
    grid = ci_grid()
    grid.update(overrides)
    path.write_text(yaml.safe_dump(grid))
    return path


def sweep_command(grid: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.sweep", str(grid), *flags]


def trial_runs(tracking_uri: str, experiment: str) -> tuple[list, list]:
    """(parent runs, child runs) of a sweep's experiment."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    kind = lambda run: run.data.tags.get(layout.KIND_TAG)  # noqa: E731
    return [r for r in runs if kind(r) == "sweep"], [r for r in runs if kind(r) == "trial"]


def test_dry_run_lists_trials_and_resources_without_starting_ray(tmp_path):
    result = subprocess.run(
        sweep_command(REPO / "grids" / "demo.yaml", "--dry-run"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "llm-full-lr" in result.stdout and "projector-full-lr" in result.stdout
    assert "Started a local Ray instance" not in result.stdout + result.stderr


def test_invalid_grid_fails_before_any_compute(tmp_path):
    grid = write_grid(tmp_path / "bad.yaml", grid={"parts": ["llm", "llm.mlp"], "method": ["full"], "lr": [-1.0]})
    result = subprocess.run(sweep_command(grid), capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2
    assert "grid.parts[1]: unknown part 'llm.mlp'" in result.stderr
    assert "grid.lr[0]: must be > 0" in result.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with a sqlite store; yields its URI."""
    server = MlflowServer(tmp_path)
    server.start()
    yield server.uri
    server.stop()


@pytest.fixture
def ray_head():
    """A real `ray start --head` cluster on this machine; yields its dashboard (job) address.

    Its temp dir is its own (short: unix socket paths are limited to 107 bytes), so other
    ``ray.init()`` calls on this machine do not find and join it, and so is its dashboard
    agent's HTTP port: the default (52365) is taken by any other local Ray cluster of the test
    session, and a head whose agent cannot bind it never accepts jobs.
    """
    dashboard = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    address = f"http://127.0.0.1:{dashboard}"
    head = start_service(
        [
            "ray",
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            f"--port={free_port()}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--temp-dir={temp_dir}",
        ],
        Path(temp_dir) / "ray-start.log",
        lambda: serving(f"{address}/api/version", (200, 401)),  # 401: token authentication is on
        f"ray head at {address}",
    )
    wait_for_job_agent(address)
    yield address
    stop_process_group(head, grace=5)  # a test cluster: nothing in it needs a graceful shutdown
    shutil.rmtree(temp_dir, ignore_errors=True)


def token_env() -> dict[str, str]:
    """This environment for the job CLI: Ray >= 2.59 clusters require their token (from ~/.ray/auth_token)."""
    return {**os.environ, "RAY_AUTH_MODE": "token"}


def wait_for_job_agent(address: str, timeout: float = 600) -> None:
    """Block until the head's job agent accepts a job: the dashboard answers before the agent
    registers, and submissions in between fail with "No available agent to submit job"."""

    def accepts() -> bool:
        probe = subprocess.run(
            ["ray", "job", "submit", "--address", address, "--", "true"],
            capture_output=True,
            text=True,
            env=token_env(),
            timeout=300,
        )
        return probe.returncode == 0

    wait_for(accepts, f"the ray head's job agent at {address} accepting a job", timeout, every=2)


def test_ray_job_submit_runs_the_ci_grid(tmp_path, mlflow_server, ray_head, s3_endpoint):
    """grids/ci.yaml through `ray job submit`, logging to an MLflow server, checkpoints on S3."""
    import boto3

    prefix = f"sweeps-{tmp_path.name}"
    grid = write_grid(tmp_path / "ci.yaml", storage=f"s3://{S3_BUCKET}/{prefix}", tracking={"uri": mlflow_server})
    job_env = {
        name: os.environ[name]
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")
    }  # the moto server's dummy keys
    job_env["FORGETLESS_TOY_SIZE"] = "small"
    result = subprocess.run(
        [
            "ray",
            "job",
            "submit",
            "--address",
            ray_head,
            "--working-dir",
            str(REPO),
            "--runtime-env-json",
            json.dumps({"env_vars": job_env}),
            "--",
            *sweep_command(grid),
        ],
        capture_output=True,
        text=True,
        env=token_env(),
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    parents, children = trial_runs(mlflow_server, "ci-smoke")
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.params[layout.PARAM_METHOD] for c in children} == {"full", "lora"}
    for child in children:
        assert child.data.tags[layout.PARENT_TAG] == parents[0].info.run_id
        assert child.data.tags[layout.STATUS_TAG] == "finished"
        assert metric_steps(mlflow_server, child.info.run_id, layout.accuracy_metric("id_id")) == [0, 3, 6]
        assert metric_steps(mlflow_server, child.info.run_id, layout.delta_metric("ood_id"))[-1] == 6
    artifacts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(parents[0].info.run_id)}
    assert {layout.GRID_ARTIFACT, layout.TRIALS_ARTIFACT, layout.REPORT_ARTIFACT_DIR} <= artifacts
    listing = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix)
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert any("/checkpoint_" in key and key.endswith("trainer_state.json") for key in keys)
    assert any(key.startswith(f"{prefix}/ci-smoke/tune/") for key in keys)


def checkpoint_steps_by_trial(storage: Path) -> dict[str, int | None]:
    """Per Ray Train run (trial) directory under a sweep's storage, its newest registered checkpoint step."""
    return {
        run.name: latest_registered_checkpoint(run) for run in storage.iterdir() if run.is_dir() and run.name != "tune"
    }


def kill_with_its_ray(process: subprocess.Popen) -> None:
    """SIGKILL a sweep driver and, at the same moment, the local Ray it started (as when its machine or
    login session dies): nothing of the killed sweep trains on or writes checkpoints afterwards."""
    spawned = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    for child in spawned:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait()
    psutil.wait_procs(spawned, timeout=60)
    assert not [p for p in spawned if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "a Ray process survived"


RESUME_STEPS, RESUME_EVERY = 16, 4
"""The killed sweep's trials: 16 steps, evaluated and checkpointed every 4."""


def test_sweep_killed_mid_training_resumes_each_trial_from_its_checkpoint(tmp_path):
    """SIGKILL the sweep driver and its local Ray while both trials are between checkpoints; the re-run resumes each
    from its own newest checkpoint into the same MLflow run, and a third run has nothing to do."""
    name, storage, uri = "resume-sweep", tmp_path / "sweeps", f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = write_grid(
        tmp_path / "resume.yaml",
        name=name,
        grid={"parts": ["llm", "projector"], "method": ["full"], "lr": [1.0e-3]},
        train={**ci_grid()["train"], "steps": RESUME_STEPS, "eval_every": RESUME_EVERY, "log_every": 1, "keep_last": 2},
        resources={"workers_per_trial": 1, "cpus_per_worker": 1, "gpus_per_worker": 0},
        storage=str(storage),
        report={"enabled": False},
    )
    sweep = subprocess.Popen(sweep_command(grid), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def both_mid_training() -> bool:
        assert sweep.poll() is None, f"the sweep exited ({sweep.returncode}) before it could be killed"
        steps = checkpoint_steps_by_trial(storage / name) if (storage / name).is_dir() else {}
        return len(steps) == 2 and all(step is not None and 0 < step < RESUME_STEPS for step in steps.values())

    try:
        wait_for(both_mid_training, "both trials holding a checkpoint before their last step")
    finally:
        kill_with_its_ray(sweep)
    at_kill = checkpoint_steps_by_trial(storage / name)
    assert all(step < RESUME_STEPS for step in at_kill.values()), f"a trial finished before the kill: {at_kill}"
    _, children = trial_runs(uri, name)
    logged_at_kill = {run.info.run_id: max(metric_steps(uri, run.info.run_id, layout.TRAIN_LOSS)) for run in children}

    rerun_started = time.time() * 1000
    again = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "0 already finished, 2 to run" in again.stdout
    parents, children = trial_runs(uri, name)
    assert len(parents) == 1 and sorted(c.data.params[layout.PARAM_PARTS] for c in children) == ["llm", "projector"]
    client = MlflowClient(uri)
    for child in children:
        run_id = child.info.run_id
        assert child.data.tags[layout.STATUS_TAG] == "finished"
        resumed_after = int(child.data.tags[RESUMED_TAG])
        assert (
            resumed_after
            == at_kill[f"{child.data.params[layout.PARAM_TRIAL_NAME]}-{child.data.params[layout.PARAM_TRIAL_ID]}"]
        )
        assert metric_steps(uri, run_id, layout.accuracy_metric("id_id")) == list(
            range(0, RESUME_STEPS + 1, RESUME_EVERY)
        )
        assert metric_steps(uri, run_id, layout.TRAIN_LOSS) == list(range(1, RESUME_STEPS + 1))
        # the re-run trained on from its checkpoint: its first new step is the one after what the
        # killed run had logged, which is past the checkpoint it resumed after
        rerun_steps = [
            m.step for m in client.get_metric_history(run_id, layout.TRAIN_LOSS) if m.timestamp >= rerun_started
        ]
        assert min(rerun_steps) == logged_at_kill[run_id] + 1 > resumed_after

    third = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0
    assert "2 already finished, 0 to run" in third.stdout
    assert len(trial_runs(uri, name)[1]) == 2


EARLY_STOP_AT = 3
"""The early-stop sweep evaluates every 3 steps; a 0.01 pp threshold stops its trial at the first."""


def test_a_trial_stops_early_on_both_ranks_with_a_checkpoint_and_is_skipped_on_rerun(tmp_path):
    name, storage, uri = "early-stop", tmp_path / "sweeps", f"sqlite:///{tmp_path / 'mlflow.db'}"
    grid = write_grid(
        tmp_path / "early.yaml",
        name=name,
        grid={"parts": ["llm"], "method": ["full"], "lr": [1.0e-3]},
        train={**ci_grid()["train"], "steps": 12, "eval_every": EARLY_STOP_AT, "deepspeed": {"zero_stage": 2}},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
        early_stop={"max_ood_drop_pp": 0.01},
        storage=str(storage),
        report={"enabled": False},
    )
    done = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = trial_runs(uri, name)[1]
    assert run.data.tags[layout.STATUS_TAG] == "early_stopped"
    assert run.data.tags[layout.EARLY_STOP_TAG].startswith("OOD drop beyond 0.01 pp vs zero-shot: ")
    assert metric_steps(uri, run.info.run_id, layout.accuracy_metric("id_id")) == [0, EARLY_STOP_AT]
    assert max(metric_steps(uri, run.info.run_id, layout.TRAIN_LOSS)) == EARLY_STOP_AT
    summary = next(line for line in done.stdout.splitlines() if line.startswith("llm-full-"))
    assert summary.split()[1] == "early_stopped" and run.info.run_id[:12] in summary
    # the final checkpoint is the stop step's, with both ranks' shares of the ZeRO-2 state in it
    run_dir = next((storage / name).glob("llm-full-*"))
    assert latest_registered_checkpoint(run_dir) == EARLY_STOP_AT
    (checkpoint,) = [path for path in run_dir.glob("checkpoint_*") if path.is_dir()]
    assert json.loads((checkpoint / "trainer_state.json").read_text())["step"] == EARLY_STOP_AT
    assert {path.name for path in (checkpoint / "state").glob("*optim_states.pt")} == {
        f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt" for rank in (0, 1)
    }

    again = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "1 already finished, 0 to run" in again.stdout
    assert metric_steps(uri, run.info.run_id, layout.accuracy_metric("id_id")) == [0, EARLY_STOP_AT]


def test_failed_trials_make_the_exit_code_non_zero(tmp_path):
    config = tmp_path / "deepspeed.json"
    config.write_text('{"zero_optimization": {"stage": 7}}')  # valid JSON, rejected by DeepSpeed in the workers
    train = {**ci_grid()["train"], "deepspeed": str(config)}
    grid = write_grid(
        tmp_path / "fail.yaml",
        name="fail-sweep",
        report={"enabled": False},
        train=train,
        grid={"parts": ["llm"], "method": ["full"], "lr": [1.0e-3]},
        resources={"workers_per_trial": 1, "max_failures": 0},
    )
    result = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 trial(s) failed" in result.stderr
    _, children = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "fail-sweep")
    assert [c.data.tags[layout.STATUS_TAG] for c in children] == ["failed"]
    assert [c.info.status for c in children] == ["FAILED"]


def test_bad_dataset_rows_are_reported_before_trials_start(tmp_path):
    import pyarrow.parquet as pq

    from recipes.data.registry import resolve_dataset

    rows = pq.read_table(resolve_dataset("toy-text-qa")).to_pylist()
    rows[3]["answer"] = "Z"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps({**row, "image": None}) for row in rows))
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        yaml.safe_dump(
            {
                "name": "broken",
                "quadrants": {
                    "id_id": ["toy-imagenet-vqa-val"],
                    "id_ood": ["toy-digits"],
                    "ood_id": ["toy-wiki"],
                    "ood_ood": [str(bad)],
                },
            }
        )
    )
    grid = write_grid(
        tmp_path / "bad-suite.yaml",
        name="bad-suite",
        report={"enabled": False},
        eval={"mode": "logits", "suite": str(suite), "batch_size": 8},
    )
    result = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{bad}: 1 bad row" in result.stderr
    assert "answer 'Z' is not a letter of the options" in result.stderr
    assert "Started a local Ray instance" not in result.stdout + result.stderr
