"""The tests' own services start through one helper (tests.conftest.start_service), which stops waiting as
soon as a server process exits, retries a failed start once and fails with the tail of its log.

    python -m pytest -q tests/test_services.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import boto3
import pytest

from recipes.common.local_ports import free_port
from tests.conftest import S3_BUCKET, MlflowServer, serving, start_service, stop_process_group

FAILS_FIRST = """
import http.server, pathlib, sys
marker = pathlib.Path(sys.argv[1])
if not marker.exists():
    marker.write_text("tried")
    print("first start: address already in use", flush=True)
    sys.exit(4)
http.server.test(HandlerClass=http.server.SimpleHTTPRequestHandler, port=int(sys.argv[2]), bind="127.0.0.1")
"""


def test_a_server_that_exits_is_not_waited_for_and_its_log_tail_says_why(tmp_path):
    """The deadline is 600 s; the failure comes as soon as the process exits (twice: one retry)."""
    log = tmp_path / "service.log"
    command = [sys.executable, "-c", "import sys; print('cannot bind 127.0.0.1:1: permission denied'); sys.exit(3)"]
    with pytest.raises(pytest.fail.Exception) as failure:
        start_service(command, log, lambda: False, "the test server", timeout=600)
    message = str(failure.value)
    assert message.startswith(
        "the test server did not start (start 1 exited with status 3; start 2 exited with status 3)"
    )
    assert "cannot bind 127.0.0.1:1: permission denied" in message
    assert log.read_text().count("permission denied") == 2


def test_a_server_not_ready_by_its_deadline_is_stopped_and_tried_again(tmp_path):
    command = [sys.executable, "-c", "import time; print('warming up', flush=True); time.sleep(600)"]
    with pytest.raises(pytest.fail.Exception) as failure:
        start_service(command, tmp_path / "service.log", lambda: False, "the slow server", timeout=1)
    assert "start 1 was not ready within 1 s; start 2 was not ready within 1 s" in str(failure.value)
    assert "warming up" in str(failure.value)


def test_a_failed_first_start_is_retried_once(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-c", FAILS_FIRST, str(tmp_path / "marker"), str(port)]
    process = start_service(command, tmp_path / "service.log", lambda: serving(url, (200,)), "the flaky server")
    try:
        assert process.poll() is None and serving(url, (200,))
        log = (tmp_path / "service.log").read_text()
        assert "first start: address already in use" in log and "the flaky server: start 2 of 2" in log
    finally:
        stop_process_group(process, grace=5)


def test_mlflow_server_logs_to_its_directory_and_restarts_on_its_port(tmp_path: Path):
    server = MlflowServer(tmp_path)
    server.start()
    try:
        server.kill()
        assert not serving(f"{server.uri}/health", (200,))
        server.start()
        assert serving(f"{server.uri}/health", (200,))
        assert server.log.read_text().count(f"mlflow server at {server.uri}: start 1 of 2") == 2
    finally:
        server.stop()


def test_the_moto_server_process_serves_the_bucket(s3_endpoint):
    buckets = boto3.client("s3", endpoint_url=s3_endpoint).list_buckets()["Buckets"]
    assert S3_BUCKET in [bucket["Name"] for bucket in buckets]
