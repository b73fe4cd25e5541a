"""Fail fast when the Ray cluster or the MLflow server a command needs cannot be reached.

``ray.init`` retries an unreachable cluster address for minutes and MLflow retries an
unreachable server for minutes, then ends in a traceback. Every command that starts Ray or
logs to MLflow asks these first, so a stale ``RAY_ADDRESS`` or a wrong tracking URI is one
clear line within seconds, before any trial or MLflow run is created:

    from recipes.common.reachability import ray_address_problem, tracking_problem
    problem = ray_address_problem() or tracking_problem("http://127.0.0.1:5000")
    if problem:
        print(f"error: {problem}", file=sys.stderr)   # and exit 2

Both checks open a TCP connection to the host and port (``CONNECT_TIMEOUT_S`` at most), then
ask one cheap question of the protocol the command will speak there, once, with no retries
(``ANSWER_TIMEOUT_S`` at most), so a port that accepts connections but is not MLflow or Ray
(another service, a stale port forward, a silent listener) is refused too:

- an ``http(s)://`` tracking URI: ``GET <uri>/api/2.0/mlflow/experiments/search?max_results=1``
  with the credentials and TLS settings MLflow's client would send (``MLFLOW_TRACKING_*``); the
  answer must be HTTP 200 with MLflow's JSON (an ``experiments`` list). A 401/403 is reported as
  refused credentials, any other answer (or none) as "does not answer as MLflow".
- a ``host:port`` Ray address (the GCS): the gRPC call ``NodeInfoGcsService/GetClusterId``,
  over the channel Ray itself would open (``RAY_USE_TLS``, token authentication); it must
  return the cluster's id.
- a ``ray://host:port`` address (the Ray Client server): the Ray Client's own ``ClusterInfo``
  PING, which the server answers before a session exists.
"""

from __future__ import annotations

import json
import os
import socket
from urllib.parse import urlsplit

from recipes.common.redaction import redact_uri

CONNECT_TIMEOUT_S = 5.0
"""Seconds a reachability check waits for a TCP connection."""

ANSWER_TIMEOUT_ENV = "FORGETLESS_ANSWER_TIMEOUT_S"
"""Overrides ``ANSWER_TIMEOUT_S`` (seconds), for a slow link or a server known to be slow to answer."""
ANSWER_TIMEOUT_S = float(os.environ.get(ANSWER_TIMEOUT_ENV, "30"))
"""Seconds a reachability check waits for the answer to its one request (it is not retried). A real
server may take seconds: an MLflow server opens its store at its first request (tens of seconds on
a new PostgreSQL database or a loaded machine); a port that is not Ray or MLflow is refused after
this long at the most, instead of hanging for minutes."""

MLFLOW_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"
"""The MLflow REST request the tracking check sends (any MLflow server answers it, cheaply)."""

MLFLOW_PROBE_KEYS = frozenset({"experiments", "next_page_token"})
"""The only fields of MLflow's answer to ``MLFLOW_PROBE`` (both absent when there are no experiments)."""

MAX_ANSWER_BYTES = 1 << 20
"""The most of an answer the tracking check reads."""

TRACKING_SCHEMES = (
    "file",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "http",
    "https",
    "databricks",
    "databricks-uc",
    "uc",
)
"""MLflow tracking URI schemes (database schemes may carry a driver: ``postgresql+psycopg2``)."""

REMOTE_TRACKING_SCHEMES = ("http", "https")
"""Tracking schemes that name a server to reach."""


def tcp_problem(host: str, port: int, what: str) -> str | None:
    """Why a TCP connection to ``host:port`` fails (naming ``what`` it is), or None."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        return f"{what} {host}:{port} cannot be reached ({reason})"


def tracking_scheme_problem(uri: str) -> str | None:
    """Why ``uri`` is not an MLflow tracking URI MLflow can use, or None."""
    if "://" not in uri:
        return None  # a local folder
    scheme = uri.split("://", 1)[0].lower().split("+", 1)[0]
    if scheme not in TRACKING_SCHEMES:
        return f"unknown scheme {scheme + '://'!r}; expected one of {', '.join(s + '://' for s in TRACKING_SCHEMES)} or a local path"
    return None


def tracking_problem(uri: str) -> str | None:
    """Why the MLflow tracking server of ``uri`` cannot be used (bad scheme, unreachable), or None."""
    problem = tracking_scheme_problem(uri)
    if problem:
        return f"tracking URI {redact_uri(uri)!r}: {problem}"
    parts = urlsplit(uri)
    if parts.scheme.lower() not in REMOTE_TRACKING_SCHEMES:
        return None
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        return f"tracking URI {redact_uri(uri)!r}: the port is not a number"
    if not parts.hostname:
        return f"tracking URI {redact_uri(uri)!r}: no host"
    unreachable = tcp_problem(parts.hostname, port, "MLflow tracking server")
    if unreachable:
        return f"{unreachable}; check the tracking URI or start the server"
    return mlflow_answer_problem(uri, f"{parts.hostname}:{port}")


def _mlflow_request_settings(uri: str) -> dict:
    """The credentials and TLS settings MLflow's REST client sends to ``uri`` (``MLFLOW_TRACKING_*``)."""
    from mlflow.utils.credentials import get_default_host_creds

    creds = get_default_host_creds(uri)
    settings: dict = {"verify": creds.verify, "headers": {}}
    if creds.client_cert_path:
        settings["cert"] = creds.client_cert_path
    if creds.username and creds.password and creds.auth not in ("kubernetes", "kubernetes-namespaced"):
        settings["auth"] = (creds.username, creds.password)
    elif creds.token:
        settings["headers"]["Authorization"] = f"Bearer {creds.token}"
    if creds.aws_sigv4:
        from requests_auth_aws_sigv4 import AWSSigV4

        settings["auth"] = AWSSigV4("execute-api")
    elif creds.auth:
        from mlflow.tracking.request_auth.registry import fetch_auth

        settings["auth"] = fetch_auth(creds.auth)
    return settings


def _is_mlflow_answer(body: bytes) -> bool:
    try:
        answer = json.loads(body)
    except ValueError:
        return False
    return isinstance(answer, dict) and set(answer) <= MLFLOW_PROBE_KEYS


def mlflow_answer_problem(uri: str, where: str) -> str | None:
    """Why the server of ``uri`` (shown as ``where``) does not answer as MLflow, or None: one request, no retries."""
    import requests

    settings = _mlflow_request_settings(uri)
    url = uri.removesuffix("/") + MLFLOW_PROBE
    try:
        with requests.get(url, timeout=(CONNECT_TIMEOUT_S, ANSWER_TIMEOUT_S), stream=True, **settings) as response:
            status, body = response.status_code, response.raw.read(MAX_ANSWER_BYTES, decode_content=True)
    except requests.exceptions.SSLError:
        reason = "the TLS handshake failed"
    except requests.exceptions.Timeout:
        reason = f"no answer within {ANSWER_TIMEOUT_S:g} s"
    except (requests.exceptions.RequestException, OSError, ValueError):  # not HTTP: closed, garbage, bad chunks
        reason = "no HTTP answer"
    else:
        if status == 200 and _is_mlflow_answer(body):
            return None
        if status in (401, 403):
            return (
                f"MLflow tracking server {where} refused the request (HTTP {status}); set "
                "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN"
            )
        reason = f"HTTP {status}" + (", not MLflow's JSON" if status == 200 else "")
    path = MLFLOW_PROBE.split("?", 1)[0]
    return (
        f"MLflow tracking server {where} accepts connections but does not answer as MLflow "
        f"(GET {path}: {reason}); check the tracking URI"
    )


def _host_port(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def ray_address() -> str | None:
    """The cluster ``ray.init()`` would join: ``RAY_ADDRESS``, else the one ``ray start`` recorded, else None."""
    address = os.environ.get("RAY_ADDRESS", "").strip()
    if address and address != "auto":
        return address
    from ray._private.services import find_bootstrap_address

    found = find_bootstrap_address(None)
    if found is None and address == "auto":
        return "auto"
    return found


def ray_address_problem() -> str | None:
    """Why the Ray cluster this process would join cannot be reached, or None (also None: start a local one)."""
    address = ray_address()
    if address is None or address == "local":
        return None
    shown = redact_uri(address)
    if address == "auto":
        return "RAY_ADDRESS=auto but no running Ray cluster was found on this machine; start one or unset RAY_ADDRESS"
    if "://" in address and not address.startswith("ray://"):
        http = address.lower().startswith(("http://", "https://"))
        dashboard = " (an http:// address is the dashboard's, for `ray job submit`)" if http else ""
        return f"Ray address {shown!r}: expected host:port or ray://host:port{dashboard}"
    target = _host_port(address.removeprefix("ray://").split("/", 1)[0].rsplit("@", 1)[-1])
    if target is None:
        return f"Ray address {shown!r}: expected host:port or ray://host:port"
    unreachable = tcp_problem(*target, "Ray cluster")
    if unreachable:
        return f"{unreachable} (from RAY_ADDRESS or the last `ray start`); unset RAY_ADDRESS to start a local Ray"
    return ray_answer_problem(*target, client=address.startswith("ray://"))


def ray_answer_problem(host: str, port: int, *, client: bool) -> str | None:
    """Why ``host:port`` does not answer as Ray, or None: one gRPC call, no retries, ``ANSWER_TIMEOUT_S`` at most.

    A GCS address gets ``NodeInfoGcsService/GetClusterId``; a Ray Client address (``client``,
    from ``ray://``) the Ray Client's ``ClusterInfo`` PING. The channel is the one Ray opens
    (TLS with ``RAY_USE_TLS``, the token with ``RAY_AUTH_MODE=token``)."""
    import grpc
    from ray._private.grpc_utils import init_grpc_channel

    where = f"{host}:{port}"
    what = "Ray Client server" if client else "Ray cluster (GCS)"
    channel = init_grpc_channel(f"[{host}]:{port}" if ":" in host else where)
    try:
        if client:
            from ray.core.generated import ray_client_pb2, ray_client_pb2_grpc

            request = ray_client_pb2.ClusterInfoRequest(type=ray_client_pb2.ClusterInfoType.PING)
            ray_client_pb2_grpc.RayletDriverStub(channel).ClusterInfo(request, timeout=ANSWER_TIMEOUT_S)
        else:
            from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

            reply = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetClusterId(
                gcs_service_pb2.GetClusterIdRequest(), timeout=ANSWER_TIMEOUT_S
            )
            if not reply.cluster_id:
                return f"{what} {where} answered without a cluster id; check RAY_ADDRESS"
        return None
    except grpc.RpcError as error:
        code = error.code() if callable(getattr(error, "code", None)) else None
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return (
                f"{what} {where} refused the request (token authentication); set RAY_AUTH_MODE=token "
                "with the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN"
            )
        reason = {
            grpc.StatusCode.DEADLINE_EXCEEDED: f"no answer within {ANSWER_TIMEOUT_S:g} s",
            grpc.StatusCode.UNAVAILABLE: "no gRPC answer",
            grpc.StatusCode.UNIMPLEMENTED: "a gRPC server without Ray's service",
        }.get(code, f"gRPC status {code.name if code else 'unknown'}")
        unimplemented = code == grpc.StatusCode.UNIMPLEMENTED and not client
        hint = ", perhaps a Ray Client port: use ray://host:port" if unimplemented else ""
        return (
            f"{what} {where} accepts connections but does not answer as Ray ({reason}{hint}; "
            "from RAY_ADDRESS or the last `ray start`); unset RAY_ADDRESS to start a local Ray"
        )
    finally:
        channel.close()


def preflight_problem(tracking_uri: str | None = None, *, ray_needed: bool = True) -> str | None:
    """The first reason a command cannot start: an unreachable tracking server or Ray cluster; None when both answer."""
    problem = tracking_problem(tracking_uri) if tracking_uri else None
    if problem or not ray_needed:
        return problem
    import ray

    return None if ray.is_initialized() else ray_address_problem()
