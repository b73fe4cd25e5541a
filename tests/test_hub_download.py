"""python -m pytest -q tests/test_hub_download.py

Models that are not on the machine: a Hub model missing from the Hugging Face cache is downloaded
once per node, by one process, while the others wait; validating a grid never downloads it; and
``HF_HUB_OFFLINE=1`` refuses it with a clear error. The Hub is ``tests.hub_server`` on 127.0.0.1,
serving the shipped toy base under a made-up repo id; huggingface_hub itself does the downloading.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import constants

from contract.exits import EXIT_BAD_INPUT
from orchestrator.grid import GridError, parse_grid
from tests.hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]
TOY_FILES = ROOT / "recipes" / "toyworld" / "shipped" / "toy-qwen2.5-vl"
REPO_ID = "forgetless-test/toy-qwen2.5-vl"
WEIGHTS = "model.safetensors"
WAITING = "waiting for another process downloading"
LOGGING = (
    "import logging, sys; logging.basicConfig(format='%(message)s', stream=sys.stderr); "
    "logging.getLogger('forgetless').setLevel(logging.INFO); "
)
RESOLVE = LOGGING + (
    "from recipes.models.catalog import resolve_model_dir; print(resolve_model_dir(sys.argv[1], download=True))"
)
"""What a process that resolves the model runs (the trial's first worker, here)."""
LOAD = LOGGING + (
    "from recipes.models.registry import load_model; loaded = load_model(sys.argv[1]); "
    "print(loaded.path); print(type(loaded.model).__name__, loaded.family.name)"
)
"""What a Ray Train worker runs: ``load_model``, which resolves (and downloads) the model first."""


def hub_env(tmp_path: Path, endpoint: str, offline: bool = False) -> dict[str, str]:
    """This process's environment with an empty Hugging Face cache under ``tmp_path`` and the Hub at ``endpoint``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.pop("TRANSFORMERS_OFFLINE", None)
    return {
        **env,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_CACHE": str(tmp_path / "hf-home" / "hub"),
        "HF_ENDPOINT": endpoint,
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DOWNLOAD_TIMEOUT": "600",  # the held download waits longer than the default 10 s between bytes
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }


def start(code: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, REPO_ID],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stderr_lines(process: subprocess.Popen) -> queue.Queue:
    """A queue that receives ``process``'s stderr lines as they come (None at its end)."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue, text: str, seen: list[str], timeout: float = 240) -> bool:
    """Whether a line containing ``text`` arrives before the stream ends (lines read are kept in ``seen``)."""
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            return False
        if line is None:
            return False
        seen.append(line)
        if text in line:
            return True


def test_two_processes_download_a_missing_hub_model_once_and_load_it(tmp_path):
    repo = shutil.copytree(TOY_FILES, tmp_path / "repo")
    (repo / "tf_model.h5").write_bytes(b"TensorFlow weights, never read by the PyTorch classes")
    with HubServer({REPO_ID: repo}, hold=WEIGHTS) as hub:
        env = hub_env(tmp_path, hub.url)
        first, worker = start(RESOLVE, env), None
        try:
            # the first process holds the lock and is downloading: the weights' GET waits on the server
            assert hub.held.wait(timeout=240), first.communicate(timeout=60)
            worker = start(LOAD, env)
            try:
                seen: list[str] = []
                waited = wait_for_line(stderr_lines(worker), WAITING, seen)
            finally:
                hub.release()
            first_out, first_err = first.communicate(timeout=240)
            worker_out = worker.stdout.read()  # its stderr goes to the lines already read
            worker.wait(timeout=240)
        finally:
            for process in (first, worker):
                if process is not None and process.poll() is None:
                    process.kill()
        assert first.returncode == 0, first_err[-2000:]
        assert worker.returncode == 0, "".join(seen)[-2000:]
        snapshot = Path(first_out.strip())
        assert snapshot.is_relative_to(tmp_path / "hf-home" / "hub") and (snapshot / WEIGHTS).is_file()
        assert worker_out.splitlines() == [str(snapshot), "Qwen2_5_VLForConditionalGeneration qwen2_5_vl"]
        assert (snapshot / WEIGHTS).read_bytes() == (TOY_FILES / WEIGHTS).read_bytes()
        # one process asked the Hub and downloaded; the other waited and found it cached
        assert hub.count("GET", f"/api/models/{REPO_ID}/revision/main") == 1
        assert hub.count("GET", f"/{WEIGHTS}") == 1
        assert hub.count("HEAD", f"/{WEIGHTS}") == 1
        assert hub.count("GET", "/tf_model.h5") == 0 and not (snapshot / "tf_model.h5").exists()
        assert waited, "".join(seen)[-2000:]


def test_offline_refuses_a_hub_model_that_is_not_cached(tmp_path):
    """``HF_HUB_OFFLINE=1`` with an empty cache: the plan exits 2 naming the model and how to fetch it."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"name: offline\nmodel: {REPO_ID}\ngrid: {{lr: [1.0e-4]}}\n")
    with HubServer({REPO_ID: TOY_FILES}) as hub:
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator.plan", str(grid)],
            cwd=ROOT,
            env=hub_env(tmp_path, hub.url, offline=True),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert not hub.requests  # nothing asked the Hub
    assert result.returncode == EXIT_BAD_INPUT, result.stderr[-2000:]
    assert f"model: model '{REPO_ID}' ({REPO_ID}) is not in the local Hugging Face cache" in result.stderr
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in result.stderr
    assert f"`hf download {REPO_ID}`" in result.stderr


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    """This process's huggingface_hub pointed at an empty cache, online (what HF_HUB_CACHE and HF_HUB_OFFLINE set)."""
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hub"


def test_validation_accepts_a_missing_hub_model_and_the_plan_says_it_will_be_downloaded(empty_hub_cache, monkeypatch):
    from orchestrator.expand import expand_trials
    from orchestrator.plan import render_plan

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: validation must not ask
    grid = parse_grid({"name": "hub", "model": "qwen2.5-vl-3b", "grid": {"lr": [1e-4]}}, check_paths=True)
    plan = render_plan(grid, expand_trials(grid), {"CPU": 8.0})
    assert (
        f"note: model 'qwen2.5-vl-3b' (Qwen/Qwen2.5-VL-3B-Instruct) is not in the Hugging Face cache here "
        f"({empty_hub_cache}): each node downloads it once, before its workers load it" in plan
    )
    assert not empty_hub_cache.exists() or not any(empty_hub_cache.rglob("*.safetensors"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GridError) as caught:
        parse_grid({"name": "hub", "model": "qwen2.5-vl-3b", "grid": {"lr": [1e-4]}}, check_paths=True)
    (problem,) = caught.value.problems
    assert problem.startswith("model: model 'qwen2.5-vl-3b' (Qwen/Qwen2.5-VL-3B-Instruct) is not in the local")


def test_a_repository_the_hub_does_not_have_is_one_clear_error(empty_hub_cache, monkeypatch):
    from recipes.models.catalog import ModelNotFoundError, resolve_model_dir

    with HubServer({REPO_ID: TOY_FILES}) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # what HF_ENDPOINT sets
        with pytest.raises(ModelNotFoundError) as caught:
            resolve_model_dir("forgetless-test/no-such-model", download=True)
    assert str(caught.value) == (
        f"model 'forgetless-test/no-such-model': forgetless-test/no-such-model is not a model repository on "
        f"{hub.url} (or it is private: set HF_TOKEN)"
    )
    assert hub.count("GET", "/api/models/forgetless-test/no-such-model/revision/main") == 1


def test_the_sweep_driver_leaves_a_missing_hub_model_to_the_nodes(empty_hub_cache, monkeypatch, capsys):
    from orchestrator.sweep import prepare_shared_inputs

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the driver must not ask
    prepare_shared_inputs([SimpleNamespace(model=REPO_ID)], cpu_workers=False)
    assert f"note: model '{REPO_ID}' ({REPO_ID}) is not in the Hugging Face cache here" in capsys.readouterr().err
    assert not (empty_hub_cache / "models--forgetless-test--toy-qwen2.5-vl").exists()
