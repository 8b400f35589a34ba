"""The streaming multipart body: same bytes as requests, flat memory, repeatable."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pytest_httpserver import HTTPServer
from urllib3.fields import RequestField
from urllib3.filepost import encode_multipart_formdata

from abeja_runtime.api.multipart import MultipartBody, ensure_binary_readable
from abeja_runtime.errors import InvalidDataFormat

from tests.support.client_support import ANY, parse_multipart


def write(path: Path, size: int, seed: int = 0) -> bytes:
    data = bytes((i * 31 + seed) % 251 for i in range(size))
    path.write_bytes(data)
    return data


def test_bytes_equal_requests_encoding(tmp_path: Path) -> None:
    data = write(tmp_path / "m.bin", 3000)
    body = MultipartBody(boundary="b0undary", chunk_size=7)
    body.add_file(
        "model_data", tmp_path / "m.bin", filename="model_data.zip", content_type="application/zip"
    )
    body.add_bytes(
        "parameters", b'{"a": 1}', filename="params.json", content_type="application/json"
    )
    body.add_bytes("plain", "caf\u00e9")

    fields = []
    for name, payload, filename, ctype in [
        ("model_data", data, "model_data.zip", "application/zip"),
        ("parameters", b'{"a": 1}', "params.json", "application/json"),
    ]:
        field = RequestField(name=name, data=payload, filename=filename)
        field.make_multipart(content_type=ctype)
        fields.append(field)
    fields.append(("plain", "caf\u00e9".encode()))  # type: ignore[arg-type]
    expected, content_type = encode_multipart_formdata(fields, boundary="b0undary")

    assert body.to_bytes() == expected
    assert body.content_type == content_type
    assert len(body) == body.content_length == len(expected)


def test_quoting_of_names_matches_urllib3() -> None:
    body = MultipartBody(boundary="x")
    body.add_bytes('we"ird name', b"1", filename='f\u00fcr "x".json', content_type="text/plain")
    field = RequestField(name='we"ird name', data=b"1", filename='f\u00fcr "x".json')
    field.make_multipart(content_type="text/plain")
    expected, _ = encode_multipart_formdata([field], boundary="x")
    assert body.to_bytes() == expected


def test_file_object_is_read_from_its_position_on_every_pass(tmp_path: Path) -> None:
    raw = b"HEADER" + b"payload" * 100
    fileobj = io.BytesIO(raw)
    fileobj.seek(6)
    body = MultipartBody(chunk_size=10)
    part = body.add_file("f", fileobj, filename="f.bin", sha256=True)
    first = body.to_bytes()
    fileobj.seek(0)
    second = body.to_bytes()
    assert first == second
    [parsed] = parse_multipart(first, body.content_type)
    assert parsed.data == raw[6:]
    assert part.sha256 == hashlib.sha256(raw[6:]).hexdigest()


def test_progress_and_sha256_hooks(tmp_path: Path) -> None:
    data = write(tmp_path / "a.bin", 100_000)
    seen: list[tuple[int, int]] = []
    body = MultipartBody(
        chunk_size=16_384, on_progress=lambda sent, total: seen.append((sent, total))
    )
    part = body.add_file("a", tmp_path / "a.bin", sha256=True)
    assert part.sha256 is None
    assert part.filename == "a.bin"
    assert part.content_type == "application/octet-stream"
    out = body.to_bytes()
    assert part.sha256 == hashlib.sha256(data).hexdigest()
    assert seen[-1] == (len(out), len(out))
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    assert len(seen) >= 100_000 // 16_384
    # a second pass (a retry) starts the count again
    seen.clear()
    body.to_bytes()
    assert seen[0][0] < 200


def test_file_that_changes_size_fails_instead_of_lying_about_length(tmp_path: Path) -> None:
    path = tmp_path / "grow.bin"
    write(path, 1000)
    body = MultipartBody()
    body.add_file("f", path)
    path.write_bytes(b"short")
    with pytest.raises(InvalidDataFormat, match="shrank"):
        body.to_bytes()
    write(path, 2000)
    with pytest.raises(InvalidDataFormat, match="grew"):
        body.to_bytes()


def test_memory_does_not_grow_with_file_size(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        block = os.urandom(1024 * 1024)
        for _ in range(48):
            fh.write(block)
    body = MultipartBody(chunk_size=1024 * 1024)
    body.add_file("model_data", big, content_type="application/zip")
    tracemalloc.start()
    try:
        total = 0
        for chunk in body:
            total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == body.content_length > 48 * 1024 * 1024
    # a few chunks at most, against a 48 MiB file
    assert peak < 8 * 1024 * 1024, peak


def test_streams_over_http_with_content_length(server: HTTPServer, tmp_path: Path) -> None:
    data = write(tmp_path / "model.zip", 3 * 1024 * 1024 + 17)
    server.expect_request(ANY, method="POST").respond_with_json({"ok": True})
    body = MultipartBody(chunk_size=64 * 1024)
    body.add_file(
        "model_data",
        tmp_path / "model.zip",
        filename="model_data.zip",
        content_type="application/zip",
    )
    body.add_bytes("parameters", b"{}", filename="params.json", content_type="application/json")
    response = requests.post(
        server.url_for("/upload"),
        data=body,
        headers={"Content-Type": body.content_type},
        timeout=30,
    )
    assert response.json() == {"ok": True}
    [(request, _)] = server.log
    assert request.headers["Content-Length"] == str(body.content_length)
    assert "Transfer-Encoding" not in request.headers
    parts = parse_multipart(request.get_data(), request.headers["Content-Type"])
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("model_data", "model_data.zip", "application/zip"),
        ("parameters", "params.json", "application/json"),
    ]
    assert parts[0].data == data
    assert parts[1].data == b"{}"


class _Unseekable(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        return 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "None"),
        (lambda p: 42, "binary file object"),
        (lambda p: open(p, encoding="utf-8"), "text mode"),  # noqa: SIM115
        (lambda p: io.StringIO("x"), "text mode"),
        (lambda p: open(p, "ab"), "not opened for reading"),  # noqa: SIM115
        (lambda p: _closed(p), "closed"),
        (lambda p: _Unseekable(), "not seekable"),
    ],
)
def test_unreadable_sources_are_refused(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "f.txt"
    path.write_text("hello")
    source = make(path)  # type: ignore[operator]
    try:
        with pytest.raises(InvalidDataFormat, match=message):
            MultipartBody().add_file("f", source)
    finally:
        close = getattr(source, "close", None)
        if callable(close):
            close()


def _closed(path: Path) -> io.BufferedReader:
    fh = open(path, "rb")  # noqa: SIM115
    fh.close()
    return fh


def test_missing_or_directory_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidDataFormat, match="does not exist"):
        MultipartBody().add_file("f", tmp_path / "nope.bin")
    with pytest.raises(InvalidDataFormat, match="is a directory"):
        MultipartBody().add_file("f", tmp_path)


def test_ensure_binary_readable_accepts_binary_files(tmp_path: Path) -> None:
    path = tmp_path / "b.bin"
    path.write_bytes(b"x")
    with open(path, "rb") as fh:
        ensure_binary_readable(fh)
        assert fh.tell() == 0
    ensure_binary_readable(io.BytesIO(b"x"))


class _Chunks:
    """A sized source of ``count`` random chunks (a stand-in for a StreamedZip)."""

    def __init__(self, count: int, size: int = 4096) -> None:
        self.chunks = [os.urandom(size) for _ in range(count)]

    def __len__(self) -> int:
        return sum(map(len, self.chunks))

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks


@pytest.mark.parametrize("switch_at_look", [None, 1, 3])
def test_stream_part_sha256_is_the_same_inline_or_on_the_helper_thread(
    monkeypatch: pytest.MonkeyPatch, switch_at_look: int | None
) -> None:
    import threading

    from abeja_runtime.api import multipart

    looks: list[bool] = []

    def thread_pays(hash_cpu_seconds: float, send_seconds: float) -> bool:
        looks.append(True)
        return switch_at_look is not None and len(looks) >= switch_at_look

    monkeypatch.setattr(multipart, "_thread_pays", thread_pays)
    monkeypatch.setattr(multipart, "_HASH_PROBE_SKIP", 2)
    monkeypatch.setattr(multipart, "_HASH_PROBE_WINDOW", 2)
    monkeypatch.setattr(multipart, "_HASH_PROBE_STREAK", 1)
    source = _Chunks(40)
    part = multipart.StreamPart("model_data", source, sha256=True)
    out = []
    threaded = False
    for chunk in part.chunks(1024):
        out.append(chunk)
        threaded = threaded or any(t.name == "upload-sha256" for t in threading.enumerate())
    assert b"".join(out) == b"".join(source.chunks)
    assert part.sha256 == hashlib.sha256(b"".join(source.chunks)).hexdigest()
    assert threaded == (switch_at_look is not None)
    if switch_at_look is None:
        assert len(looks) == (40 - 2) // 2  # looked at every window, stayed inline
    else:
        assert len(looks) == switch_at_look  # no look once the thread runs
    assert not any(t.name == "upload-sha256" for t in threading.enumerate())


def test_stream_part_abandoned_midway_has_no_sha256_and_no_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from abeja_runtime.api import multipart

    monkeypatch.setattr(multipart, "_thread_pays", lambda hash_cpu, send: True)
    monkeypatch.setattr(multipart, "_HASH_PROBE_SKIP", 1)
    monkeypatch.setattr(multipart, "_HASH_PROBE_WINDOW", 1)
    part = multipart.StreamPart("model_data", _Chunks(20), sha256=True)
    chunks = part.chunks(1024)
    for _ in range(10):
        next(chunks)
    assert any(t.name == "upload-sha256" for t in threading.enumerate())
    chunks.close()  # the connection failed: the pass is abandoned
    assert part.sha256 is None
    assert not any(t.name == "upload-sha256" for t in threading.enumerate())


def test_thread_pays_only_when_the_sender_waits_less_than_it_hashes() -> None:
    from abeja_runtime.api.multipart import _thread_pays

    # a 10 GbE link: 1 MiB handed over in 0.15 ms, hashed in 0.55 ms of CPU
    assert _thread_pays(hash_cpu_seconds=0.55e-3, send_seconds=0.15e-3)
    # a server slower than the sender: each hand-over waits for room
    assert not _thread_pays(hash_cpu_seconds=0.55e-3, send_seconds=1.5e-3)
