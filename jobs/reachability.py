"""Fail fast when the Ray cluster or the MLflow server a command needs cannot be reached.

``ray.init`` retries an unreachable cluster address for minutes and MLflow retries an
unreachable server for minutes, then ends in a traceback. Every command that starts Ray or
logs to MLflow asks these first, so a stale ``RAY_ADDRESS`` or a wrong tracking URI is one
clear line within seconds, before any trial or MLflow run is created:

    from jobs.reachability import ray_address_problem, tracking_problem
    problem = ray_address_problem() or tracking_problem("http://127.0.0.1:5000")
    if problem:
        print(f"error: {problem}", file=sys.stderr)   # and exit 2

Both checks open a TCP connection to the host and port (``CONNECT_TIMEOUT_S`` at most); they
say nothing about what answers there, which the command finds out when it connects.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from recipes.redaction import redact_uri

CONNECT_TIMEOUT_S = 5.0
"""Seconds a reachability check waits for a TCP connection."""

TRACKING_SCHEMES = (
    "file", "sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "databricks-uc", "uc",
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
    return f"{unreachable}; check the tracking URI or start the server" if unreachable else None


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
        return f"Ray address {shown!r}: expected host:port or ray://host:port"
    target = _host_port(address.removeprefix("ray://").split("/", 1)[0].rsplit("@", 1)[-1])
    if target is None:
        return f"Ray address {shown!r}: expected host:port or ray://host:port"
    unreachable = tcp_problem(*target, "Ray cluster")
    if unreachable:
        return f"{unreachable} (from RAY_ADDRESS or the last `ray start`); unset RAY_ADDRESS to start a local Ray"
    return None


def preflight_problem(tracking_uri: str | None = None, *, ray_needed: bool = True) -> str | None:
    """The first reason a command cannot start: an unreachable tracking server or Ray cluster; None when both answer."""
    problem = tracking_problem(tracking_uri) if tracking_uri else None
    if problem or not ray_needed:
        return problem
    import ray

    return None if ray.is_initialized() else ray_address_problem()
