"""A free TCP port on 127.0.0.1, for a server started on this machine (an ``mlflow server``, moto's
S3 server, the tests' Hub server):

    port = free_port()
    subprocess.Popen(mlflow_server_command(store, port=port))
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (another process may take it before the server does)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
