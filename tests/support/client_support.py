"""Helpers shared by the client, transport, multipart and wire tests.

A real HTTP server on 127.0.0.1 (pytest-httpserver) records what the client
puts on the wire; these helpers start it and read requests back in their raw
form (the path exactly as sent, the multipart parts in order).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request

from abeja_runtime.api.client import APIClient
from abeja_runtime.api.retry import RetryPolicy

TOKEN = "tok-SeCrEt-4f9c2a7e1b"
USER_TOKEN = "pat-SeCrEt-user-77aa"
DATASOURCE_SECRET = "ds-SeCrEt-9911"
ORG = "1102940376065"
JOB = "1443722127663"
MODEL = "1111111111111"

#: retries with delays of about a millisecond, so retry tests stay fast
FAST_RETRY = RetryPolicy(max_retries=5, backoff_initial=0.001, backoff_max=0.002, jitter=0)

ANY = re.compile(".*")


def serving(threaded: bool = False) -> Iterator[HTTPServer]:
    """Start a pytest-httpserver bound to 127.0.0.1 only; stop it afterwards."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=threaded)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        server.stop()


def base_url(server: HTTPServer) -> str:
    return server.url_for("/").rstrip("/")


def make_client(server: HTTPServer, **kwargs: Any) -> APIClient:
    kwargs.setdefault("credential", {"auth_token": TOKEN})
    kwargs.setdefault("retry_policy", FAST_RETRY)
    kwargs.setdefault("timeout", 10)
    return APIClient(base_url=base_url(server), **kwargs)


def raw_uri(request: Request) -> str:
    """The request target exactly as the client sent it (not percent-decoded)."""
    return str(request.environ.get("REQUEST_URI") or request.environ["RAW_URI"])


def raw_path(request: Request) -> str:
    return raw_uri(request).split("?", 1)[0]


@dataclass(frozen=True)
class Part:
    name: str | None
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """Split a multipart/form-data body into its parts, in order, bytes untouched."""
    match = re.search(r"boundary=([^;]+)", content_type)
    assert match, content_type
    boundary = match.group(1).strip('"').encode()
    assert body.endswith(b"--" + boundary + b"--\r\n"), body[-80:]
    pieces = body.split(b"--" + boundary)
    assert pieces[0] == b"", pieces[0][:80]
    parts: list[Part] = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n") and piece.endswith(b"\r\n")
        head, _, data = piece[2:-2].partition(b"\r\n\r\n")
        headers: dict[str, str] = {}
        for line in head.decode("utf-8").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = re.search(r'\bname="([^"]*)"', disposition)
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        parts.append(
            Part(
                name.group(1) if name else None,
                filename.group(1) if filename else None,
                headers.get("content-type"),
                data,
            )
        )
    return parts


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, unlike werkzeug's dev server
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        received = 0
        while received < length:  # read and drop in small pieces: no big buffers here
            chunk = self.rfile.read(min(65536, length - received))
            if not chunk:
                break
            received += len(chunk)
        server: KeepAliveServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.ports.append(self.client_address[1])
            server.received.append(received)
        body = json.dumps({"path": self.path, "port": self.client_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class KeepAliveServer(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server on 127.0.0.1 that records each request's client port."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _KeepAliveHandler)
        self.lock = threading.Lock()
        self.ports: list[int] = []
        self.received: list[int] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()
