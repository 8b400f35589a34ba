"""No duplicate models when the connection breaks after the body was sent.

A small loopback proxy in front of the emulator forwards requests one per
connection; for the first model upload it either forwards the request and then
drops the connection before the answer (the model exists, the client cannot
know), or reads the whole body and drops it without forwarding (no model).
Either way exactly one model must exist afterwards.
"""

from __future__ import annotations

import hashlib
import json
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from abeja_runtime import APIClient
from abeja_runtime.emulator import Emulator
from abeja_runtime.models import ModelChecksumError, upload_model

DEF = "dedupe-def"


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


class DroppingProxy:
    """Forwards one request per connection; drops the first model upload (``mode``)."""

    def __init__(self, upstream_port: int, mode: str) -> None:
        self.upstream_port = upstream_port
        self.mode = mode  # "after-forward" or "before-forward"
        self.dropped = 0
        self.posts = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if not request:
                return
            head = request.split(b"\r\n", 1)[0]
            is_upload = head.startswith(b"POST ") and b"/models " in head
            if is_upload:
                self.posts += 1
            drop = is_upload and self.dropped == 0
            if drop and self.mode == "before-forward":
                self.dropped += 1
                return
            # one request per upstream connection, closed by the upstream after it
            request = request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            with socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
                up.sendall(request)
                response = b""
                while chunk := up.recv(65536):
                    response += chunk
            if drop:
                self.dropped += 1
                return
            conn.sendall(response)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.mark.parametrize("mode", ["after-forward", "before-forward"])
def test_unknown_outcome_never_duplicates(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
) -> None:
    env = emu.create_job(DEF)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    proxy = DroppingProxy(emu.port, mode)
    src = tmp_path / "model.bin"
    src.write_bytes(b"weights" * 10_000 + mode.encode())
    before = emu.client().get_training_models(emu.organization_id, DEF)["entries"]
    try:
        with APIClient(
            emu.credential, base_url=f"http://127.0.0.1:{proxy.port}", max_retry_count=2
        ) as client:
            model = upload_model(src, client=client)
    finally:
        proxy.close()
    assert proxy.dropped == 1
    after = emu.client().get_training_models(emu.organization_id, DEF)["entries"]
    new = [
        m for m in after if m["training_model_id"] not in {b["training_model_id"] for b in before}
    ]
    assert len(new) == 1, new
    assert new[0]["training_model_id"] == model["training_model_id"]
    assert new[0]["training_job_id"] == env["TRAINING_JOB_ID"]
    # found by its checksum (after-forward) or sent again once (before-forward)
    assert proxy.posts == (1 if mode == "after-forward" else 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_server_checksum_mismatch_is_an_error(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ABEJA_ORGANIZATION_ID", "1234567890123")
    monkeypatch.setenv("TRAINING_JOB_DEFINITION_NAME", "d")
    monkeypatch.setenv("TRAINING_JOB_ID", "1111111111111")
    src = tmp_path / "m.bin"
    src.write_bytes(b"abc")
    body: dict[str, Any] = {"training_model_id": "1", "sha256": hashlib.sha256(b"x").hexdigest()}
    httpserver.expect_request(
        "/organizations/1234567890123/training/definitions/d/models", method="POST"
    ).respond_with_data(json.dumps(body), content_type="application/json")
    with (
        APIClient(
            {"auth_token": "test-token-not-in-text"},
            base_url=httpserver.url_for(""),
            max_retry_count=0,
        ) as c,
        pytest.raises(ModelChecksumError),
    ):
        upload_model(src, client=c)
