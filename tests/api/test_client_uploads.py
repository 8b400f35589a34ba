"""Version source archives and model uploads: multipart parts, zipping, streaming, refusals."""

from __future__ import annotations

import io
import json
import os
import threading
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from abeja_runtime.api.client import APIClient
from abeja_runtime.errors import BadRequest, HttpError, InvalidDataFormat

from tests.support.client_support import (
    ANY,
    ORG,
    KeepAliveServer,
    Part,
    make_client,
    parse_multipart,
    raw_path,
)


@pytest.fixture
def server(server: HTTPServer) -> HTTPServer:
    """The module's server (tests/conftest.py), answering every request by default."""
    server.expect_request(ANY, method="POST").respond_with_json({"created": True})
    return server


NAME = "mnist"
VERSIONS = f"/organizations/{ORG}/training/definitions/{NAME}/versions"
MODELS = f"/organizations/{ORG}/training/definitions/{NAME}/models"


def sent_parts(server: HTTPServer) -> tuple[str, list[Part]]:
    [(request, _)] = server.log
    assert request.method == "POST"
    assert "Transfer-Encoding" not in request.headers
    assert int(request.headers["Content-Length"]) == len(request.get_data())
    return raw_path(request), parse_multipart(request.get_data(), request.headers["Content-Type"])


def zip_entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def make_zip(path: Path, entries: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path.read_bytes()


# ---------------------------------------------------------------------- versions


def test_version_from_filepaths(server: HTTPServer, client: APIClient, tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("def handler(context):\n    pass\n")
    (tmp_path / "requirements.txt").write_text("numpy\n")
    out = client.create_training_job_definition_version(
        ORG,
        NAME,
        [str(tmp_path / "requirements.txt"), tmp_path / "train.py"],
        "train:handler",
        image="abeja-inc/all-gpu:19.04",
        environment={"key": "value"},
        description="description",
    )
    assert out == {"created": True}
    path, parts = sent_parts(server)
    assert path == VERSIONS
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("source_code", "source_code.zip", "application/zip"),
        ("parameters", "params.json", "application/json"),
    ]
    assert zip_entries(parts[0].data) == {
        "requirements.txt": b"numpy\n",
        "train.py": b"def handler(context):\n    pass\n",
    }
    assert json.loads(parts[1].data) == {
        "handler": "train:handler",
        "image": "abeja-inc/all-gpu:19.04",
        "environment": {"key": "value"},
        "description": "description",
    }


def test_version_sends_only_given_parameters(
    server: HTTPServer, client: APIClient, tmp_path: Path
) -> None:
    (tmp_path / "train.py").write_text("x = 1\n")
    client.create_training_job_definition_version(ORG, NAME, [tmp_path / "train.py"], "train:main")
    _, parts = sent_parts(server)
    assert json.loads(parts[1].data) == {"handler": "train:main"}


def test_version_with_a_directory_keeps_its_tree(
    server: HTTPServer, client: APIClient, tmp_path: Path
) -> None:
    pkg = tmp_path / "src"
    (pkg / "models").mkdir(parents=True)
    (pkg / "train.py").write_text("a")
    (pkg / "models" / "net.py").write_text("b")
    client.create_training_job_definition_version(ORG, NAME, [pkg], "src.train:handler")
    _, parts = sent_parts(server)
    assert zip_entries(parts[0].data) == {"src/models/net.py": b"b", "src/train.py": b"a"}


@pytest.mark.parametrize(
    ("make_paths", "message"),
    [
        (lambda d: [], "empty"),
        (lambda d: [d / "missing.py"], "does not exist"),
        (lambda d: [d / "a" / "train.py", d / "b" / "train.py"], "both be stored"),
        (lambda d: [42], "not a path"),
        (lambda d: 42, "list of paths"),
    ],
    ids=["empty", "missing", "duplicate-names", "not-a-path", "not-a-list"],
)
def test_version_refuses_bad_filepaths(
    server: HTTPServer, client: APIClient, tmp_path: Path, make_paths: Any, message: str
) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "train.py").write_text("x")
    with pytest.raises(InvalidDataFormat, match=message):
        client.create_training_job_definition_version(
            ORG, NAME, make_paths(tmp_path), "train:handler"
        )
    assert server.log == []


@pytest.mark.parametrize("handler", ["train", "train:", ":handler", "a:b:c", None, 3])
def test_version_refuses_bad_handlers(
    server: HTTPServer, client: APIClient, tmp_path: Path, handler: Any
) -> None:
    (tmp_path / "train.py").write_text("x")
    with pytest.raises(BadRequest, match="module:function"):
        client.create_training_job_definition_version(ORG, NAME, [tmp_path / "train.py"], handler)
    assert server.log == []


def test_native_api_streams_the_archive_as_given(
    server: HTTPServer, client: APIClient, tmp_path: Path
) -> None:
    archive = make_zip(tmp_path / "train.zip", {"train.py": b"code"})
    params = {"handler": "train:handler", "image": "abeja-inc/all-cpu:19.10"}
    with open(tmp_path / "train.zip", "rb") as source_code:
        client.create_training_job_definition_version_native_api(ORG, NAME, source_code, params)
    client.create_training_job_definition_version_native_api(
        ORG, NAME, str(tmp_path / "train.zip"), parameters=params
    )
    assert len(server.log) == 2
    for request, _ in server.log:
        assert raw_path(request) == VERSIONS
        parts = parse_multipart(request.get_data(), request.headers["Content-Type"])
        assert [(p.name, p.filename, p.content_type) for p in parts] == [
            ("source_code", "source_code.zip", "application/zip"),
            ("parameters", "params.json", "application/json"),
        ]
        assert parts[0].data == archive
        assert parts[1].data == json.dumps(params).encode()


def test_native_api_refuses_text_files_and_missing_parameters(
    server: HTTPServer, client: APIClient, tmp_path: Path
) -> None:
    (tmp_path / "train.zip").write_text("not binary")
    with (
        open(tmp_path / "train.zip", encoding="utf-8") as text,
        pytest.raises(InvalidDataFormat, match="text mode"),
    ):
        client.create_training_job_definition_version_native_api(
            ORG, NAME, text, {"handler": "a:b"}
        )
    with pytest.raises(BadRequest, match="parameters"):
        client.create_training_job_definition_version_native_api(
            ORG,
            NAME,
            io.BytesIO(b"zip"),
            None,  # type: ignore[arg-type]
        )
    assert server.log == []


# ------------------------------------------------------------------------ models


def check_model_request(server: HTTPServer) -> list[Part]:
    path, parts = sent_parts(server)
    assert path == MODELS
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("model_data", "model_data.zip", "application/zip"),
        ("parameters", "params.json", "application/json"),
    ]
    return parts


def test_model_zip_path_is_sent_as_it_is(
    server: HTTPServer, client: APIClient, tmp_path: Path
) -> None:
    data = make_zip(tmp_path / "model.zip", {"model.h5": b"weights"})
    parameters = {
        "training_job_id": "1443722127663",
        "description": "d",
        "user_parameters": {"a": 1},
        "metrics": {"acc": 0.9},
    }
    assert client.create_training_model(ORG, NAME, tmp_path / "model.zip", parameters) == {
        "created": True
    }
    parts = check_model_request(server)
    assert parts[0].data == data
    assert json.loads(parts[1].data) == parameters


def test_model_non_zip_path_is_wrapped(
    server: HTTPServer, client: APIClient, tmp_path: Path
) -> None:
    (tmp_path / "model.h5").write_bytes(b"\x89HDF weights")
    client.create_training_model(ORG, NAME, str(tmp_path / "model.h5"))
    parts = check_model_request(server)
    assert zip_entries(parts[0].data) == {"model.h5": b"\x89HDF weights"}
    assert json.loads(parts[1].data) == {}


def test_model_file_objects(server: HTTPServer, client: APIClient, tmp_path: Path) -> None:
    data = make_zip(tmp_path / "model.zip", {"w.bin": b"w"})
    (tmp_path / "model.pt").write_bytes(b"torch weights")
    with open(tmp_path / "model.zip", "rb") as fh:
        fh.read(3)  # sent from the first byte anyway, as the public package does
        client.create_training_model(ORG, NAME, fh)
    with open(tmp_path / "model.pt", "rb") as fh:
        client.create_training_model(ORG, NAME, fh, {"description": "pt"})
    client.create_training_model(ORG, NAME, io.BytesIO(b"raw bytes"))
    assert len(server.log) == 3
    bodies = [
        parse_multipart(r.get_data(), r.headers["Content-Type"])[0].data for r, _ in server.log
    ]
    assert bodies[0] == data
    assert zip_entries(bodies[1]) == {"model.pt": b"torch weights"}
    assert zip_entries(bodies[2]) == {"model_data": b"raw bytes"}


def test_model_from_a_pipe(server: HTTPServer, client: APIClient) -> None:
    read_fd, write_fd = os.pipe()
    payload = b"streamed weights" * 1000

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as writer:
            writer.write(payload)

    thread = threading.Thread(target=feed)
    thread.start()
    with os.fdopen(read_fd, "rb") as reader:
        client.create_training_model(ORG, NAME, reader)
    thread.join(10)
    parts = check_model_request(server)
    [(_, data)] = zip_entries(parts[0].data).items()
    assert data == payload


class _WriteOnly(io.RawIOBase):
    def writable(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: None, "necessary"),
        (lambda d: b"bytes", "not bytes"),
        (lambda d: 12, "binary file object"),
        (lambda d: d / "missing.bin", "does not exist"),
        (lambda d: d, "not a regular file"),
        (lambda d: "", "empty path"),
        (lambda d: open(d / "m.bin", encoding="utf-8"), "text mode"),  # noqa: SIM115
        (lambda d: io.StringIO("text"), "text mode"),
        (lambda d: _WriteOnly(), "not opened for reading"),
    ],
    ids=["none", "bytes", "int", "missing", "directory", "empty", "text-file", "stringio", "wo"],
)
def test_model_refuses_unreadable_data_before_any_request(
    server: HTTPServer, client: APIClient, tmp_path: Path, make: Any, message: str
) -> None:
    (tmp_path / "m.bin").write_bytes(b"x")
    data = make(tmp_path)
    try:
        with pytest.raises(InvalidDataFormat, match=message):
            client.create_training_model(ORG, NAME, data)
    finally:
        if hasattr(data, "close"):
            data.close()
    assert server.log == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read anything")
def test_model_refuses_a_file_without_read_permission(
    server: HTTPServer, client: APIClient, tmp_path: Path
) -> None:  # pragma: no cover - CI may run as root
    path = tmp_path / "secret.bin"
    path.write_bytes(b"x")
    path.chmod(0)
    with pytest.raises(InvalidDataFormat, match="cannot be read"):
        client.create_training_model(ORG, NAME, path)
    assert server.log == []


def test_model_refuses_bad_parameters(
    server: HTTPServer, client: APIClient, tmp_path: Path
) -> None:
    (tmp_path / "m.zip").write_bytes(b"x")
    with pytest.raises(BadRequest, match="parameters must be a dict"):
        client.create_training_model(ORG, NAME, tmp_path / "m.zip", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(BadRequest, match=r"parameters\.metrics"):
        client.create_training_model(ORG, NAME, tmp_path / "m.zip", {"metrics": {"x": object()}})
    assert server.log == []


def test_model_metrics_are_strict_json(
    server: HTTPServer, client: APIClient, tmp_path: Path
) -> None:
    (tmp_path / "m.bin").write_bytes(b"x")
    client.create_training_model(ORG, NAME, tmp_path / "m.bin", {"metrics": {"loss": float("nan")}})
    parts = check_model_request(server)
    assert json.loads(parts[1].data) == {"metrics": {"loss": "NaN"}}


def test_creates_are_not_retried_on_503(_server: HTTPServer, tmp_path: Path) -> None:
    _server.clear()
    _server.expect_request(ANY).respond_with_json({"error": "busy"}, status=503)
    (tmp_path / "m.zip").write_bytes(b"x")
    with make_client(_server) as client, pytest.raises(HttpError) as info:
        client.create_training_model(ORG, NAME, tmp_path / "m.zip")
    assert info.value.status_code == 503
    assert len(_server.log) == 1


def test_model_upload_memory_does_not_grow_with_file_size(tmp_path: Path) -> None:
    size = 64 * 1024 * 1024
    path = tmp_path / "model.bin"
    with open(path, "wb") as fh:
        block = b"\0" * (1024 * 1024)
        for _ in range(size // len(block)):
            fh.write(block)
    server = KeepAliveServer()
    try:
        with APIClient({"auth_token": "t"}, base_url=server.url, max_retry_count=0) as client:
            tracemalloc.start()
            try:
                client.create_training_model(ORG, NAME, path, {"description": "big"})
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert server.received and server.received[0] > 60_000  # zipped zeros are small
    finally:
        server.close()
    assert peak < 16 * 1024 * 1024, peak


def test_big_zip_upload_streams_from_disk(tmp_path: Path) -> None:
    size = 48 * 1024 * 1024
    path = tmp_path / "model.zip"
    with (
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive,
        archive.open("weights.bin", "w", force_zip64=True) as entry,
    ):
        block = os.urandom(1024 * 1024)
        for _ in range(size // len(block)):
            entry.write(block)
    server = KeepAliveServer()
    try:
        with APIClient({"auth_token": "t"}, base_url=server.url, max_retry_count=0) as client:
            tracemalloc.start()
            try:
                client.create_training_model(ORG, NAME, path)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        assert server.received[0] > os.path.getsize(path)
    finally:
        server.close()
    assert peak < 16 * 1024 * 1024, peak
