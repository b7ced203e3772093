"""A loopback HTTP server that speaks the part of the Hugging Face Hub API that downloads use.

It serves one local folder as a model repo at one commit, so that huggingface_hub's real download
code (repo info, recursive tree listing, HEAD/GET of resolve URLs with X-Repo-Commit, ETag and
Content-Length) runs against it. Point ``HF_ENDPOINT`` at :attr:`HubServer.url` before importing
huggingface_hub. Every request path is recorded in :attr:`HubServer.requests`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    def __init__(self, repo_id: str, folder: Path) -> None:
        self.repo_id = repo_id
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        self.files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _json(self, payload) -> None:
                body = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _file(self, name: str, with_body: bool) -> None:
                data = hub.files.get(name)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if with_body:
                    self.wfile.write(data)

            def _route(self, with_body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                api = f"/api/models/{hub.repo_id}"
                resolve = f"/{hub.repo_id}/resolve/"
                if path.startswith(f"{api}/revision/") or path == api:
                    self._json({"id": hub.repo_id, "modelId": hub.repo_id, "sha": COMMIT, "private": False,
                                "siblings": [{"rfilename": name} for name in hub.files]})
                elif path.startswith(f"{api}/tree/"):
                    self._json([
                        {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        for name, data in hub.files.items()
                    ])
                elif path.startswith(resolve):
                    _revision, _, name = path[len(resolve):].partition("/")
                    self._file(name, with_body)
                else:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "RepoNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def do_GET(self) -> None:
                self._route(with_body=True)

            def do_HEAD(self) -> None:
                self._route(with_body=False)

        return Handler
