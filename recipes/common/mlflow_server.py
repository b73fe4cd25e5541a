"""The command line of a local `mlflow server`, as the tests, the tracking benchmark and the screenshots start it.

    subprocess.Popen(mlflow_server_command(5000, "sqlite:///mlflow.db", "/tmp/artifacts"))

The server listens on 127.0.0.1 only and serves artifacts itself (``--artifacts-destination``), as
the cluster guide's server does (docs/tracking.md).
"""

from __future__ import annotations

import sys


def mlflow_server_command(
    port: int, backend_store_uri: str, artifacts_destination: str, workers: int | None = None
) -> list[str]:
    """``python -m mlflow server`` on 127.0.0.1:``port`` over ``backend_store_uri`` (``workers``: its
    web workers, None for MLflow's default)."""
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    return command + ["--backend-store-uri", backend_store_uri, "--artifacts-destination", artifacts_destination]
