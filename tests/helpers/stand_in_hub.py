"""A stand-in for the Hugging Face Hub: the few endpoints ``snapshot_download`` uses, served on localhost.

Repositories are folders a test saved (tiny models, tokenizers); a gated one answers as the Hub does when
the licence is not accepted (403, ``X-Error-Code: GatedRepo``), an unknown one with 404
(``RepoNotFound``). Point ``huggingface_hub`` at it with ``HF_ENDPOINT`` (read when it is imported,
so in a subprocess).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

__all__ = ["StandInHub"]


@dataclass
class StandInHub:
    repos: dict[str, Path] = field(default_factory=dict)  # repo id -> folder served
    gated: set[str] = field(default_factory=set)  # repo ids whose licence this account has not accepted
    requests: list[str] = field(default_factory=list)  # "METHOD path" of every request, for assertions

    def __enter__(self) -> StandInHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._answer(body=False)

            def do_GET(self):
                self._answer(body=True)

            def _send(self, code: int, headers: dict[str, str], data: bytes, body: bool) -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, code: int, error_code: str, message: str, body: bool) -> None:
                data = json.dumps({"error": message}).encode()
                self._send(
                    code,
                    {
                        "X-Error-Code": error_code,
                        "X-Error-Message": message,
                        "Content-Type": "application/json",
                    },
                    data,
                    body,
                )

            def _answer(self, body: bool) -> None:
                path = unquote(self.path.split("?", 1)[0])
                hub.requests.append(f"{self.command} {path}")
                if path.startswith("/api/models/"):
                    repo = path.removeprefix("/api/models/").split("/revision/")[0].split("/tree/")[0]
                else:
                    parts = path.lstrip("/").split("/resolve/")
                    repo = parts[0]
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound", f"Repository {repo} not found", body)
                if repo in hub.gated:
                    return self._error(403, "GatedRepo", f"Access to model {repo} is restricted", body)
                folder = hub.repos[repo]
                files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
                sha = hashlib.sha1("".join(files).encode()).hexdigest()
                if "/tree/" in path:  # list_repo_tree(recursive=True): every file with its size
                    tree = [
                        {
                            "type": "file",
                            "path": f,
                            "size": (folder / f).stat().st_size,
                            "oid": hashlib.sha1((folder / f).read_bytes()).hexdigest(),
                        }
                        for f in files
                    ]
                    return self._send(
                        200, {"Content-Type": "application/json"}, json.dumps(tree).encode(), body
                    )
                if path.startswith("/api/models/"):
                    info = {
                        "id": repo,
                        "modelId": repo,
                        "sha": sha,
                        "private": False,
                        "gated": False,
                        "siblings": [{"rfilename": f} for f in files],
                    }
                    return self._send(
                        200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body
                    )
                name = path.split("/resolve/", 1)[1].split("/", 1)[1]
                target = folder / name
                if not target.is_file():
                    return self._error(404, "EntryNotFound", f"{name} not in {repo}", body)
                data = target.read_bytes()
                etag = f'"{hashlib.sha256(data).hexdigest()}"'
                self._send(
                    200,
                    {"X-Repo-Commit": sha, "ETag": etag, "Content-Type": "application/octet-stream"},
                    data,
                    body,
                )

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
