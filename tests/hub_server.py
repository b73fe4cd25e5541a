"""A Hugging Face Hub on 127.0.0.1 serving model folders as repositories, for download tests.

    with HubServer({"forgetless-test/toy": Path("recipes/toyworld/shipped/toy-qwen2.5-vl")}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "hub")}
        ...                                   # processes that run snapshot_download("forgetless-test/toy")
        hub.requests                          # Counter of (method, path) served

It answers what ``huggingface_hub.snapshot_download`` asks for: the revision info
(``GET /api/models/{repo}/revision/{rev}``: ``sha`` and ``siblings``), the file tree
(``GET /api/models/{repo}/tree/{rev}``, one page) and every file (``HEAD`` and ``GET
/{repo}/resolve/{rev}/{file}`` with ``X-Repo-Commit``, ``ETag`` and ``Content-Length``). It sends no
``X-Xet-*`` header and no ``xetHash``, so huggingface_hub downloads over plain HTTP from here.
``hold`` names a file whose first ``GET`` waits until ``release()``: a download is then in flight
for as long as a test needs.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

REVISIONS = ("main",)
"""Branch names the server knows, besides each repository's commit sha."""


class HubServer:
    """``repos`` (repo id -> folder) served as Hub model repositories on 127.0.0.1, in a thread."""

    def __init__(self, repos: dict[str, Path], hold: str | None = None):
        self.repos = {repo_id: Path(folder) for repo_id, folder in repos.items()}
        self.files = {
            repo_id: sorted(p.name for p in folder.iterdir() if p.is_file()) for repo_id, folder in self.repos.items()
        }
        self.shas = {repo_id: hashlib.sha1(repo_id.encode()).hexdigest() for repo_id in self.repos}
        self.hold = hold
        self.held = threading.Event()  # set when a GET of ``hold`` arrived
        self._released = threading.Event()
        self.requests: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The endpoint to give huggingface_hub as ``HF_ENDPOINT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def release(self) -> None:
        """Let the held ``GET`` (and every later one) answer."""
        self._released.set()

    def count(self, method: str, suffix: str) -> int:
        """Requests of ``method`` whose path ends with ``suffix``."""
        with self._lock:
            return sum(n for (m, path), n in self.requests.items() if m == method and path.endswith(suffix))

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                with hub._lock:
                    hub.requests[(self.command, path)] += 1
                parts = path.strip("/").split("/")
                if parts[:2] == ["api", "models"] and len(parts) >= 6:
                    self._api(f"{parts[2]}/{parts[3]}", parts[4], parts[5], body)
                elif len(parts) >= 5 and parts[2] == "resolve":
                    self._file(f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), body)
                else:
                    self._send(404, b"", {})

            def _known(self, repo_id: str, revision: str) -> bool:
                if repo_id not in hub.repos:
                    self._send(404, b"", {"X-Error-Code": "RepoNotFound"})
                    return False
                if revision not in (*REVISIONS, hub.shas[repo_id]):
                    self._send(404, b"", {"X-Error-Code": "RevisionNotFound"})
                    return False
                return True

            def _api(self, repo_id: str, kind: str, revision: str, body: bool) -> None:
                if not self._known(repo_id, revision):
                    return
                folder, files = hub.repos[repo_id], hub.files[repo_id]
                if kind == "revision":
                    data = {
                        "id": repo_id,
                        "sha": hub.shas[repo_id],
                        "private": False,
                        "siblings": [{"rfilename": name} for name in files],
                    }
                elif kind == "tree":
                    data = [
                        {
                            "type": "file",
                            "path": name,
                            "size": (folder / name).stat().st_size,
                            "oid": _oid(folder / name),
                        }
                        for name in files
                    ]
                else:
                    self._send(404, b"", {})
                    return
                payload = json.dumps(data).encode()
                self._send(200, payload if body else b"", {"Content-Type": "application/json"}, len(payload))

            def _file(self, repo_id: str, revision: str, name: str, body: bool) -> None:
                if not self._known(repo_id, revision):
                    return
                if name not in hub.files[repo_id]:
                    self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": hub.shas[repo_id]})
                    return
                content = (hub.repos[repo_id] / name).read_bytes()
                if body and name == hub.hold and not hub.held.is_set():
                    hub.held.set()
                    hub._released.wait(timeout=300)
                headers = {"X-Repo-Commit": hub.shas[repo_id], "ETag": f'"{hashlib.sha256(content).hexdigest()}"'}
                self._send(200, content if body else b"", headers, len(content))

            def _send(self, status: int, payload: bytes, headers: dict[str, str], length: int | None = None) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload) if length is None else length))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

        return Handler


def _oid(path: Path) -> str:
    """The git blob id of a file, as the Hub's tree listing gives it."""
    content = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
