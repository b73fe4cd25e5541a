"""The sweep end to end: `ray job submit` on a `ray start` cluster, resume after Ctrl-C, S3 storage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import requests
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import S3_BUCKET, free_port, metric_steps, wait_for

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
    kind = lambda run: run.data.tags.get("forgetless.kind")  # noqa: E731
    return [r for r in runs if kind(r) == "sweep"], [r for r in runs if kind(r) == "trial"]


def wait_until_serving(url: str, accepted: tuple[int, ...], what: str, timeout: float = 600) -> None:
    """Wait until ``url`` answers with one of the ``accepted`` statuses (a slow answer is waited for)."""

    def answers() -> bool:
        try:
            return requests.get(url, timeout=60).status_code in accepted
        except requests.RequestException:  # not listening yet, or too busy to answer in time
            return False

    wait_for(answers, f"{what} at {url}", timeout, every=0.5)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM a server started in its own session (and its children); SIGKILL it if it lingers."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


def test_dry_run_lists_trials_and_resources_without_starting_ray(tmp_path):
    result = subprocess.run(sweep_command(REPO / "grids" / "demo.yaml", "--dry-run"), capture_output=True, text=True,
                            cwd=tmp_path, timeout=300)
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
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{uri}/health", (200,), "mlflow server")
    yield uri
    stop_process_group(server)


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
    head = subprocess.Popen(
        ["ray", "start", "--head", "--block", "--num-cpus=2", f"--port={free_port()}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--dashboard-agent-listen-port={free_port()}",
         f"--temp-dir={temp_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard}"
    wait_until_serving(f"{address}/api/version", (200, 401), "ray head")  # 401: token authentication is on
    wait_for_job_agent(address)
    yield address
    stop_process_group(head)
    shutil.rmtree(temp_dir, ignore_errors=True)


def token_env() -> dict[str, str]:
    """This environment for the job CLI: Ray >= 2.59 clusters require their token (from ~/.ray/auth_token)."""
    return {**os.environ, "RAY_AUTH_MODE": "token"}


def wait_for_job_agent(address: str, timeout: float = 600) -> None:
    """Block until the head's job agent accepts a job: the dashboard answers before the agent
    registers, and submissions in between fail with "No available agent to submit job"."""
    def accepts() -> bool:
        probe = subprocess.run(["ray", "job", "submit", "--address", address, "--", "true"],
                               capture_output=True, text=True, env=token_env(), timeout=300)
        return probe.returncode == 0

    wait_for(accepts, f"the ray head's job agent at {address} accepting a job", timeout, every=2)


def test_ray_job_submit_runs_the_ci_grid(tmp_path, mlflow_server, ray_head, s3_endpoint):
    """grids/ci.yaml through `ray job submit`, logging to an MLflow server, checkpoints on S3."""
    import boto3

    prefix = f"sweeps-{tmp_path.name}"
    grid = write_grid(tmp_path / "ci.yaml", storage=f"s3://{S3_BUCKET}/{prefix}", tracking={"uri": mlflow_server})
    job_env = {name: os.environ[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                                    "AWS_ENDPOINT_URL_S3")}  # the moto server's dummy keys
    job_env["FORGETLESS_TOY_SIZE"] = "small"
    result = subprocess.run(
        ["ray", "job", "submit", "--address", ray_head, "--working-dir", str(REPO),
         "--runtime-env-json", json.dumps({"env_vars": job_env}), "--", *sweep_command(grid)],
        capture_output=True, text=True, env=token_env(), timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout + result.stderr
    parents, children = trial_runs(mlflow_server, "ci-smoke")
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.params["method"] for c in children} == {"full", "lora"}
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.tags["forgetless.status"] == "finished"
        assert metric_steps(mlflow_server, child.info.run_id, "acc/q/id_id") == [0, 3, 6]
        assert metric_steps(mlflow_server, child.info.run_id, "delta/q/ood_id")[-1] == 6
    artifacts = {a.path for a in MlflowClient(mlflow_server).list_artifacts(parents[0].info.run_id)}
    assert {"grid.yaml", "trials.csv", "report"} <= artifacts
    listing = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=S3_BUCKET, Prefix=prefix)
    keys = [item["Key"] for item in listing.get("Contents", [])]
    assert any("/checkpoint_" in key and key.endswith("trainer_state.json") for key in keys)
    assert any(key.startswith(f"{prefix}/ci-smoke/tune/") for key in keys)


def wait_for_finished_trial(tracking_uri: str, experiment: str, process: subprocess.Popen, timeout: float) -> None:
    def finished() -> bool:
        assert process.poll() is None, f"the sweep exited ({process.returncode}) before a trial finished"
        try:
            _, children = trial_runs(tracking_uri, experiment)
        except Exception:  # the store is not created yet
            return False
        return any(c.data.tags.get("forgetless.status") == "finished" for c in children)

    wait_for(finished, "a finished trial", timeout, every=1)


def test_interrupted_sweep_resumes_with_exactly_one_run_per_trial(tmp_path):
    grid = write_grid(
        tmp_path / "resume.yaml",
        name="resume-sweep",
        grid={"parts": ["llm", "projector"], "method": ["full"], "lr": [1.0e-3]},
        train={**ci_grid()["train"], "steps": 8, "eval_every": 4},
        resources={"workers_per_trial": 2, "cpus_per_worker": 1, "gpus_per_worker": 0},
        report={"enabled": False},
    )
    sweep = subprocess.Popen(sweep_command(grid), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    wait_for_finished_trial(uri, "resume-sweep", sweep, timeout=600)
    sweep.send_signal(signal.SIGINT)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, output[-3000:]
    assert "Resume with: python -m orchestrator.sweep" in output

    again = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already finished" in again.stdout
    parents, children = trial_runs(uri, "resume-sweep")
    assert len(parents) == 1
    assert sorted(c.data.params["parts"] for c in children) == ["llm", "projector"]
    assert all(c.data.tags["forgetless.status"] == "finished" for c in children)
    for child in children:
        assert metric_steps(uri, child.info.run_id, "acc/q/id_id") == [0, 4, 8]

    third = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0
    assert "2 already finished, 0 to run" in third.stdout
    assert len(trial_runs(uri, "resume-sweep")[1]) == 2


def test_failed_trials_make_the_exit_code_non_zero(tmp_path):
    config = tmp_path / "deepspeed.json"
    config.write_text('{"zero_optimization": {"stage": 7}}')  # valid JSON, rejected by DeepSpeed in the workers
    train = {**ci_grid()["train"], "deepspeed": str(config)}
    grid = write_grid(tmp_path / "fail.yaml", name="fail-sweep", report={"enabled": False}, train=train,
                      grid={"parts": ["llm"], "method": ["full"], "lr": [1.0e-3]},
                      resources={"workers_per_trial": 1, "max_failures": 0})
    result = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 trial(s) failed" in result.stderr
    _, children = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "fail-sweep")
    assert [c.data.tags["forgetless.status"] for c in children] == ["failed"]
    assert [c.info.status for c in children] == ["FAILED"]


def test_bad_dataset_rows_are_reported_before_trials_start(tmp_path):
    import pyarrow.parquet as pq

    from recipes.data.registry import resolve_dataset

    rows = pq.read_table(resolve_dataset("toy-text-qa")).to_pylist()
    rows[3]["answer"] = "Z"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps({**row, "image": None}) for row in rows))
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({"name": "broken", "quadrants": {
        "id_id": ["toy-imagenet-vqa-val"], "id_ood": ["toy-digits"], "ood_id": ["toy-wiki"], "ood_ood": [str(bad)]}}))
    grid = write_grid(tmp_path / "bad-suite.yaml", name="bad-suite", report={"enabled": False},
                      eval={"mode": "logits", "suite": str(suite), "batch_size": 8})
    result = subprocess.run(sweep_command(grid), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{bad}: 1 bad row" in result.stderr
    assert "answer 'Z' is not a letter of the options" in result.stderr
    assert "Started a local Ray instance" not in result.stdout + result.stderr
