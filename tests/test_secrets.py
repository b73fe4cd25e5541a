"""Secrets and untrusted files: credentials never reach MLflow, checkpoints, reports or logs, and a
checkpoint from shared storage is read as data, never run as code."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from deepspeed.runtime.fp16.loss_scaler import LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum

from jobs.checkpoints import CHECKPOINT_TAG, trained_state_dict, weights_only_loading
from recipes.common.input_errors import InputError
from recipes.common.redaction import MASK, RedactingFilter, credential_problem, redact, redact_uri

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "uri, redacted",
    [
        ("https://alice:pw123@host:5000/x", "https://***@host:5000/x"),
        ("https://TOKEN123@github.com/org/repo", "https://***@github.com/org/repo"),
        (
            "s3://bucket/x.parquet?X-Amz-Signature=abc&versionId=3",
            "s3://bucket/x.parquet?X-Amz-Signature=***&versionId=3",
        ),
        ("https://h/x.jsonl?token=abc", "https://h/x.jsonl?token=***"),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("./relative/path.jsonl", "./relative/path.jsonl"),
    ],
)
def test_redact_uri(uri, redacted):
    assert redact_uri(uri) == redacted
    assert (credential_problem("f", uri) is None) == (uri == redacted)


def test_redact_masks_uris_in_text_and_secret_environment_values(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter2-hunter2")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to mask without mangling ordinary words
    text = "cannot reach http://bob:pw@h:5000 (password hunter2-hunter2), abc"
    assert redact(text) == f"cannot reach http://{MASK}@h:5000 (password {MASK}), abc"


def test_log_records_and_their_tracebacks_are_redacted():
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed on %s", ("http://u:pw@h",), None)
    try:
        raise RuntimeError("http://u:pw@h refused")
    except RuntimeError:
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    assert record.getMessage() == f"failed on http://{MASK}@h"
    assert "pw" not in record.exc_text and f"http://{MASK}@h refused" in record.exc_text


class Payload:
    """What a hostile checkpoint pickles: unpickling it runs a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_from_storage_is_never_run_as_code(tmp_path):
    original_load = torch.load
    marker = tmp_path / "code-ran"
    state = tmp_path / "checkpoint" / CHECKPOINT_TAG
    state.mkdir(parents=True)
    with open(state / "mp_rank_00_model_states.pt", "wb") as handle:
        torch.save({"module": {"w": torch.zeros(1)}, "hook": Payload(marker)}, handle)
    with pytest.raises(InputError, match="mp_rank_00_model_states.pt: refused"):  # pickle's UnpicklingError, named
        trained_state_dict(tmp_path / "checkpoint")
    assert not marker.exists()
    assert torch.load is original_load


class ByName:
    """Pickles as ``getattr(owner, name)``: how some Python versions pickle enum members."""

    def __init__(self, owner, name: str):
        self.owner, self.name = owner, name

    def __reduce__(self):
        return (getattr, (self.owner, self.name))


@pytest.mark.parametrize(
    "owner, name, loads_as",
    [
        (ZeroStageEnum, "weights", ZeroStageEnum.weights),  # DeepSpeed's optimizer state on Python 3.11.2
        (ZeroStageEnum, "__init__", None),  # no other attribute of a record enum
        (LossScaler, "__init__", None),  # nor of a record class that is not an enum
        (Path, "touch", None),  # nor of anything else
    ],
)
def test_checkpoints_may_name_record_enum_members_and_nothing_else(tmp_path, owner, name, loads_as):
    path = tmp_path / "state.pt"
    torch.save({"zero_stage": ByName(owner, name)}, path)
    with weights_only_loading():
        if loads_as is None:
            with pytest.raises(pickle.UnpicklingError):
                torch.load(path)
        else:
            assert torch.load(path)["zero_stage"] is loads_as


SECRETS = {
    "MLFLOW_TRACKING_PASSWORD": "mlflow-pw-4b1d9c",
    "MLFLOW_TRACKING_TOKEN": "mlflow-token-77e0aa",
    "AWS_SESSION_TOKEN": "aws-session-31f5be",
    "HF_TOKEN": "hf_token_c0ffee42",
}
COMMENT_SECRET = "comment-pw-5ac3e1"


def files_under(*roots: Path):
    for root in roots:
        if root.is_dir():
            yield from (path for path in root.rglob("*") if path.is_file())


def test_no_secret_reaches_mlflow_checkpoints_reports_or_logs(tmp_path, monkeypatch, ray_cluster, capfd):
    """A real sweep with secrets in the environment and in the grid file's comments."""
    from orchestrator.sweep import main

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    grid = yaml.safe_load((REPO / "grids" / "ci.yaml").read_text())
    grid.update(
        name="secrets",
        grid={"parts": ["llm"], "method": ["full"], "lr": [1e-3]},
        storage=str(tmp_path / "sweeps"),
        tracking={"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    grid["train"].update(steps=2, eval_every=2)
    text = (
        f"# data mirror: https://reader:{COMMENT_SECRET}@data.example.org/toy\n"
        f"# token for the hub: {SECRETS['HF_TOKEN']}\n" + yaml.safe_dump(grid)
    )
    (tmp_path / "grid.yaml").write_text(text)

    assert main(["grid.yaml"]) == 0
    captured = capfd.readouterr()
    session_logs = Path(ray_cluster._private.worker._global_node.get_session_dir_path()) / "logs"
    secrets = [*SECRETS.values(), COMMENT_SECRET]
    places = {"stdout/stderr": (captured.out + captured.err).encode()}
    for path in files_under(tmp_path, session_logs):
        places[str(path)] = path.read_bytes()
    assert any("checkpoint_" in place for place in places), "the sweep wrote no checkpoint to search"
    assert any(place.endswith("report.html") for place in places)
    assert any(place.endswith("grid.yaml") and "mlruns" in place for place in places), "grid artifact not found"
    leaks = {(place, secret) for place, content in places.items() for secret in secrets if secret.encode() in content}
    # Ray Tune forwards the driver's AWS_* variables to trials in their runtime env, and Ray's
    # runtime-env agent logs it on the cluster (docs/security.md).
    ray_forwarded = {
        (place, secret)
        for place, secret in leaks
        if Path(place).name == "runtime_env_agent.log" and secret == SECRETS["AWS_SESSION_TOKEN"]
    }
    assert leaks - ray_forwarded == {
        (str(tmp_path / "grid.yaml"), COMMENT_SECRET),
        (str(tmp_path / "grid.yaml"), SECRETS["HF_TOKEN"]),
    }


def test_a_run_param_holding_a_key_never_reaches_the_report(tmp_path):
    """A run logged by anything (not only a sweep, which refuses such URIs) may quote a key in a param."""
    from analysis.report import write_report
    from tests.synthetic_sweeps import SyntheticTrial, log_sweep

    secret = "AKIAxSECRETx9c1e"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    accuracy = {"id_id": [50.0, 60.0], "id_ood": [60.0, 59.0], "ood_id": [40.0, 39.0], "ood_ood": [30.0, 29.0]}
    mixed = SyntheticTrial(
        "llm", "full", "1e-05", accuracy=accuracy, mix=(f"s3://id:{secret}@bucket/mix.parquet",), mix_ratio=0.3
    )
    log_sweep(uri, "keyed", [mixed, SyntheticTrial("llm", "full", "1e-06", accuracy=accuracy)])
    paths = write_report("keyed", uri, tmp_path / "report", log_artifacts=False)
    written = [path for path in paths.out_dir.rglob("*") if path.is_file()]
    assert paths.report_html in written
    for path in written:
        assert secret.encode() not in path.read_bytes(), path
    assert "s3://***@bucket/mix.parquet" in paths.table_markdown.read_text() + paths.report_html.read_text()
