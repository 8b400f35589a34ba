"""A tiny Training API statistics endpoint on 127.0.0.1 for the reporter tests.

It records every posted ``statistics`` document with its arrival time and can be
made slow (``delay``), failing (a queue of statuses to answer, with ``Retry-After``)
or unreachable (:meth:`StatisticsServer.stop`, then :meth:`start` again on the same
port). Only what the reporter needs; the full API lives in the emulator.
"""

from __future__ import annotations

import json
import re
import socket
import tempfile
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ORG = "1234567890123"
JOB_DEFINITION = "reporter-test"
JOB_ID = "2345678901234"
TOKEN = "test-secret-token-Zq9"

_PATH = re.compile(
    r"^/organizations/(?P<org>\d{13})/training/definitions/(?P<name>[^/]+)"
    r"/jobs/(?P<job>\d{13})/statistics$"
)


def _key_paths(document: dict[str, Any]) -> set[str]:
    paths = set(document)
    for name, stage in (document.get("stages") or {}).items():
        paths.update(f"stages.{name}.{metric}" for metric in stage)
    return paths


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _answer(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        owner.attempts += 1
        match = _PATH.match(self.path)
        if match is None:
            self._answer(404, {"error": "not_found", "error_description": self.path}, {})
            return
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, {"error": "unauthorized", "error_description": "bad token"}, {})
            return
        if owner.delay:
            time.sleep(owner.delay)
        with owner.lock:
            failure = owner.failures.popleft() if owner.failures else None
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            owner.refused.append((time.monotonic(), status))
            self._answer(
                status,
                {"error": f"status_{status}", "error_description": f"injected {status}"},
                headers,
            )
            return
        body = json.loads(raw)  # strict: NaN tokens would fail here in the assertions
        assert set(body) == {"statistics"}, body
        refused_key = owner.refuse_key
        if refused_key is not None and refused_key in _key_paths(body["statistics"]):
            owner.refused.append((time.monotonic(), 400))
            self._answer(
                400,
                {"error": "bad_request", "error_description": f"unknown field {refused_key}"},
                {},
            )
            return
        with owner.lock:
            owner.received.append((time.monotonic(), body["statistics"]))
        self._answer(200, {"statistics": body["statistics"]}, {})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: StatisticsServer


class StatisticsServer:
    """Records posted statistics; see the module docstring."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.refused: list[tuple[float, int]] = []
        self.failures: deque[tuple[int, float | None]] = deque()
        self.delay = 0.0
        self.attempts = 0
        self.port = 0
        # a key path ("stages.train.f1", "note") whose documents are refused with a 400
        # the statistics rules do not foresee (what a newer server might do)
        self.refuse_key: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # this fake job's statistics spool (JOB_ID is fixed: a spool shared between
        # tests would replay one test's leftovers into the next)
        self._spool_root = tempfile.TemporaryDirectory(prefix="abeja-spool-")

    def start(self) -> StatisticsServer:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: later connections are refused."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> StatisticsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` posts with ``status``."""
        with self.lock:
            self.failures.extend([(status, retry_after)] * times)

    @property
    def documents(self) -> list[dict[str, Any]]:
        with self.lock:
            return [doc for _, doc in self.received]

    @property
    def times(self) -> list[float]:
        with self.lock:
            return [at for at, _ in self.received]

    def job_env(self) -> dict[str, str]:
        """A complete job environment pointing at this server."""
        return {
            "ABEJA_ORGANIZATION_ID": ORG,
            "TRAINING_JOB_DEFINITION_NAME": JOB_DEFINITION,
            "TRAINING_JOB_DEFINITION_VERSION": "1",
            "TRAINING_JOB_ID": JOB_ID,
            "PLATFORM_AUTH_TOKEN": TOKEN,
            "ABEJA_API_URL": self.url,
            "ABEJA_RUNTIME_SPOOL_DIR": self._spool_root.name,
            # on by default in a job; off here so that documents compare exactly
            # (tests/test_reporter_process.py turns them on to test them)
            "ABEJA_RUNTIME_SYSTEM_METRICS": "0",
        }

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``count`` documents arrived (or the timeout); return them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            docs = self.documents
            if len(docs) >= count:
                return docs
            time.sleep(0.01)
        return self.documents


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
