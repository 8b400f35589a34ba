"""Uploads are parsed as a stream to disk: memory stays flat, size and sha256 are exact.

The emulator runs in this process, so its resident memory is this process's;
the client side streams its body from a generator (chunked) or a file
(Content-Length) and holds one chunk at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import requests

from abeja_runtime.emulator import Emulator

from tests.support.emulator_support import Api

MIB = 1024 * 1024


def _chunks(total: int, seed: bytes = b"abeja") -> Iterator[bytes]:
    """``total`` bytes of varied content, 1 MiB at a time."""
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    sent = 0
    counter = 0
    while sent < total:
        piece = (counter.to_bytes(8, "big") + block)[: min(MIB, total - sent)]
        counter += 1
        sent += len(piece)
        yield piece


def _multipart(
    boundary: str, data: Iterator[bytes], parameters: dict[str, object]
) -> Iterator[bytes]:
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="parameters"; filename="params.json"\r\n'
        "Content-Type: application/json\r\n\r\n"
    ).encode()
    yield json.dumps(parameters).encode()
    yield (
        f"\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="model_data"; filename="model_data.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    yield from data
    yield f"\r\n--{boundary}--\r\n".encode()


class _PeakRss:
    """Samples this process's resident memory in a thread and keeps the maximum."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def test_200_mb_chunked_upload_is_streamed_to_disk() -> None:
    size = 200 * MIB
    expected = hashlib.sha256()
    for piece in _chunks(size):
        expected.update(piece)
    with Emulator() as emu:
        api = Api(emu)
        api.definition("big")
        boundary = uuid.uuid4().hex
        with _PeakRss() as rss:
            response = api.call(
                "POST",
                "/definitions/big/models",
                data=_multipart(boundary, _chunks(size), {"description": "large"}),
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                timeout=300,
            )
        assert response.status_code == 200, response.text
        model = response.json()
        assert model["size"] == size
        assert model["sha256"] == expected.hexdigest()
        assert model["description"] == "large"
        # the server never held the model: peak growth is a small fraction of it
        assert rss.growth < size // 4, f"RSS grew by {rss.growth / MIB:.0f} MiB"

        # and the download streams it back intact
        uri = api.ok("GET", f"/definitions/big/models/{model['id']}/download")["download_uri"]
        got = hashlib.sha256()
        length = 0
        with requests.get(uri, stream=True, timeout=300) as download:
            assert download.status_code == 200
            assert int(download.headers["Content-Length"]) == size
            for piece in download.iter_content(MIB):
                got.update(piece)
                length += len(piece)
        assert (length, got.hexdigest()) == (size, expected.hexdigest())
        api.close()


def test_content_length_upload_from_a_file(tmp_path: Path) -> None:
    size = 20 * MIB
    boundary = uuid.uuid4().hex
    body = tmp_path / "body.bin"
    with body.open("wb") as out:
        for piece in _multipart(boundary, _chunks(size, b"file"), {}):
            out.write(piece)
    expected = hashlib.sha256(b"".join(_chunks(size, b"file"))).hexdigest()
    with Emulator() as emu:
        api = Api(emu)
        api.definition("cl")
        with body.open("rb") as handle:
            response = api.call(
                "POST",
                "/definitions/cl/models",
                data=handle,
                headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(os.path.getsize(body)),
                },
            )
        assert response.status_code == 200, response.text
        assert (response.json()["size"], response.json()["sha256"]) == (size, expected)
        api.close()


def test_cut_off_upload_stores_nothing() -> None:
    """A body that ends before the closing boundary is a 400 and leaves no file behind."""
    with Emulator() as emu:
        api = Api(emu)
        api.definition("cut")
        boundary = uuid.uuid4().hex
        parts = list(_multipart(boundary, _chunks(3 * MIB), {}))[:-1]  # no closing boundary
        response = api.call(
            "POST",
            "/definitions/cut/models",
            data=iter(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 400, response.text
        assert api.ok("GET", "/definitions/cut/models")["entries"] == []
        store = emu._store
        assert store is not None
        assert list(store.tmp_dir.iterdir()) == []
        assert list((store.tmp_dir.parent / "models").iterdir()) == []
        api.close()


def test_upload_to_missing_definition_is_404_before_reading() -> None:
    with Emulator() as emu:
        api = Api(emu)
        boundary = uuid.uuid4().hex
        response = api.call(
            "POST",
            "/definitions/absent/models",
            data=_multipart(boundary, _chunks(MIB), {}),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert response.status_code == 404
        api.close()
