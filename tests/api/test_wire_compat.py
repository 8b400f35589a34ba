"""The same call through ``abeja-sdk`` 2.3.6 and through us puts the same request on the wire.

Both clients talk to one pytest-httpserver on 127.0.0.1; for every operation
the method, the raw path, the query, the auth header, the JSON body and the
multipart parts (names, filenames, content types, bytes) are compared. Where
SPEC.md says the public package is wrong (NaN in statistics), only our side is
checked, against the SPEC.

abeja-sdk is a test-only dependency for Python < 3.12; elsewhere this module skips.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request

from abeja_runtime.api.client import APIClient

from tests.support.client_support import (
    ANY,
    JOB,
    MODEL,
    ORG,
    TOKEN,
    base_url,
    parse_multipart,
    raw_uri,
)

sdk_training = pytest.importorskip("abeja.training", reason="abeja-sdk is not installed")
sdk_connection = pytest.importorskip("abeja.common.connection")


@pytest.fixture
def server(server: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    """The module's server (tests/conftest.py), answering every request, for both clients."""
    server.expect_request(ANY).respond_with_json({"ok": True})
    # abeja-sdk reads ABEJA_API_URL once, at import time, into a class attribute
    monkeypatch.setattr(sdk_connection.Connection, "BASE_URL", base_url(server))
    return server


@pytest.fixture
def clients(server: HTTPServer) -> Iterator[tuple[Any, APIClient]]:
    sdk = sdk_training.APIClient(credential={"auth_token": TOKEN}, max_retry_count=1)
    with APIClient({"auth_token": TOKEN}, base_url=base_url(server), max_retry_count=0) as ours:
        yield sdk, ours


def describe(request: Request) -> dict[str, Any]:
    """What matters on the wire, boundary-independent."""
    out: dict[str, Any] = {
        "method": request.method,
        "uri_path": raw_uri(request).split("?", 1)[0],
        "query": sorted(request.args.items(multi=True)),
        "authorization": request.headers.get("Authorization"),
        "content_length": request.headers.get("Content-Length"),
    }
    content_type = request.headers.get("Content-Type")
    data = request.get_data()
    if content_type is None:
        out["body"] = data
    elif content_type.startswith("application/json"):
        out["content_type"] = content_type
        out["json"] = json.loads(data)
    elif content_type.startswith("multipart/form-data"):
        # the boundaries differ (random), the parts must not; both boundaries are
        # 32 hex digits, so the Content-Length must match as well
        out["parts"] = parse_multipart(data, content_type)
    else:  # pragma: no cover - nothing else is sent
        raise AssertionError(content_type)
    return out


def send_both(
    server: HTTPServer, clients: tuple[Any, APIClient], call: Callable[[Any], Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    sdk, ours = clients
    server.clear_log()
    assert call(sdk) == {"ok": True}
    assert call(ours) == {"ok": True}
    [(sdk_request, _), (our_request, _)] = server.log
    return describe(sdk_request), describe(our_request)


N = "train-job_1"

# every operation that takes no files, called identically on both clients
SIMPLE_CALLS: list[tuple[str, Callable[[Any], Any]]] = [
    ("create_training_job_definition", lambda c: c.create_training_job_definition(ORG, N)),
    ("archive_training_job_definition", lambda c: c.archive_training_job_definition(ORG, N)),
    ("unarchive_training_job_definition", lambda c: c.unarchive_training_job_definition(ORG, N)),
    ("get_training_job_definitions", lambda c: c.get_training_job_definitions(ORG)),
    ("get_training_job_definitions+args",
     lambda c: c.get_training_job_definitions(ORG, filter_archived=True, offset=10, limit=5)),
    ("get_training_job_definitions+include",
     lambda c: c.get_training_job_definitions(ORG, False)),
    ("get_training_job_definition", lambda c: c.get_training_job_definition(ORG, N)),
    ("get_training_job_definition+false",
     lambda c: c.get_training_job_definition(ORG, N, include_jobs=False)),
    ("get_training_job_definition+true", lambda c: c.get_training_job_definition(ORG, N, True)),
    ("delete_training_job_definition", lambda c: c.delete_training_job_definition(ORG, N)),
    ("get_training_job_definition_versions",
     lambda c: c.get_training_job_definition_versions(ORG, N)),
    ("get_training_job_definition_versions+filter",
     lambda c: c.get_training_job_definition_versions(ORG, N, filter_archived=False)),
    ("get_training_job_definition_version",
     lambda c: c.get_training_job_definition_version(ORG, N, 2)),
    ("patch_training_job_definition_version",
     lambda c: c.patch_training_job_definition_version(ORG, N, 2, description="new version")),
    ("archive_training_job_definition_version",
     lambda c: c.archive_training_job_definition_version(ORG, N, 2)),
    ("unarchive_training_job_definition_version",
     lambda c: c.unarchive_training_job_definition_version(ORG, N, 2)),
    ("delete_training_job_definition_version",
     lambda c: c.delete_training_job_definition_version(ORG, N, 2)),
    ("create_training_job", lambda c: c.create_training_job(ORG, N, 1)),
    ("create_training_job+seed",
     lambda c: c.create_training_job(ORG, N, 1, {"BATCH_SIZE": 50}, {"mnist": "1111111111111"})),
    ("create_training_job+all",
     lambda c: c.create_training_job(
         ORG, N, 1, user_parameters={"A": "1"}, datasets={"train": "3333333333333"}, instance_type="cpu-0.25",
         environment={"B": "2"}, description="desc", export_log=True)),
    ("create_training_job+user_parameters",
     lambda c: c.create_training_job(ORG, N, 1, user_parameters={"A": "1"},
                                     instance_type="gpu:b-1")),
    ("get_training_jobs", lambda c: c.get_training_jobs(ORG, N)),
    ("get_training_jobs+args",
     lambda c: c.get_training_jobs(ORG, N, limit=3, offset=6, filter_archived=True)),
    ("get_training_job", lambda c: c.get_training_job(ORG, N, JOB)),
    ("stop_training_job", lambda c: c.stop_training_job(ORG, N, JOB)),
    ("archive_training_job", lambda c: c.archive_training_job(ORG, N, JOB)),
    ("unarchive_training_job", lambda c: c.unarchive_training_job(ORG, N, JOB)),
    ("get_training_result", lambda c: c.get_training_result(ORG, N, JOB)),
    ("update_statistics",
     lambda c: c.update_statistics(ORG, N, JOB, {
         "num_epochs": 5, "epoch": 0, "progress_percentage": 0.5, "key1": "value1",
         "stages": {"train": {"accuracy": 0.9, "loss": 0.0},
                    "validation": {"accuracy": 0.8, "loss": 0.1, "key2": 2}}})),
    ("get_training_models", lambda c: c.get_training_models(ORG, N)),
    ("get_training_models+filter", lambda c: c.get_training_models(ORG, N, filter_archived=True)),
    ("get_training_model", lambda c: c.get_training_model(ORG, N, MODEL)),
    ("patch_training_model", lambda c: c.patch_training_model(ORG, N, MODEL, "new description")),
    ("download_training_model", lambda c: c.download_training_model(ORG, N, MODEL)),
    ("archive_training_model", lambda c: c.archive_training_model(ORG, N, MODEL)),
    ("unarchive_training_model", lambda c: c.unarchive_training_model(ORG, N, MODEL)),
]  # fmt: skip


@pytest.mark.parametrize("call", [c for _, c in SIMPLE_CALLS], ids=[n for n, _ in SIMPLE_CALLS])
def test_same_request_as_abeja_sdk(
    server: HTTPServer, clients: tuple[Any, APIClient], call: Callable[[Any], Any]
) -> None:
    theirs, ours = send_both(server, clients, call)
    assert ours == theirs


def test_every_operation_is_compared() -> None:
    compared = {name.split("+")[0] for name, _ in SIMPLE_CALLS}
    compared |= {
        "create_training_job_definition_version",
        "create_training_job_definition_version_native_api",
        "create_training_model",
    }  # the upload tests below
    public = {
        name
        for name in vars(sdk_training.APIClient)
        if not name.startswith("_") and callable(getattr(sdk_training.APIClient, name))
    }
    assert public == compared
    assert len(compared) == 29


def sample_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train.py", "def handler(context):\n    print(context)\n")
        archive.writestr("requirements.txt", "numpy\n")
    return buffer.getvalue()


def part_summary(description: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(p.name, p.filename, p.content_type) for p in description["parts"]]


def test_native_api_version_upload(server: HTTPServer, clients: tuple[Any, APIClient]) -> None:
    archive = sample_zip()
    params = {
        "handler": "train:handler",
        "image": "abeja-inc/all-gpu:19.04",
        "environment": {"key": "value"},
        "description": "description",
    }
    theirs, ours = send_both(
        server,
        clients,
        lambda c: c.create_training_job_definition_version_native_api(
            ORG, N, io.BytesIO(archive), parameters=params
        ),
    )
    assert ours == theirs
    assert part_summary(ours) == [
        ("source_code", "source_code.zip", "application/zip"),
        ("parameters", "params.json", "application/json"),
    ]
    assert ours["parts"][0].data == archive


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"image": "abeja-inc/all-cpu:19.10", "environment": {"A": "1"}, "description": "d"},
        {"image": "", "environment": {}, "description": ""},  # empty values are left out
    ],
    ids=["handler-only", "all", "empty-values"],
)
def test_version_upload_from_filepaths(
    server: HTTPServer, clients: tuple[Any, APIClient], tmp_path: Path, options: dict[str, Any]
) -> None:
    (tmp_path / "train.py").write_text("def handler(context):\n    pass\n")
    (tmp_path / "requirements.txt").write_text("numpy\nrequests\n")
    files = [str(tmp_path / "train.py"), str(tmp_path / "requirements.txt")]
    theirs, ours = send_both(
        server,
        clients,
        lambda c: c.create_training_job_definition_version(
            ORG, N, files, "train:handler", **options
        ),
    )
    # the zip itself is byte-identical: same entries, time stamps, modes and compression
    assert ours == theirs


def test_model_upload_of_a_zip_file(
    server: HTTPServer, clients: tuple[Any, APIClient], tmp_path: Path
) -> None:
    (tmp_path / "model.zip").write_bytes(sample_zip())
    parameters = {"training_job_id": JOB, "description": "d", "user_parameters": {"a": 1}}

    def call(client: Any) -> Any:
        with open(tmp_path / "model.zip", "rb") as model_data:
            return client.create_training_model(ORG, N, model_data, parameters)

    theirs, ours = send_both(server, clients, call)
    assert ours == theirs
    assert part_summary(ours) == [
        ("model_data", "model_data.zip", "application/zip"),
        ("parameters", "params.json", "application/json"),
    ]


def test_model_upload_of_a_named_non_zip_file(
    server: HTTPServer, clients: tuple[Any, APIClient], tmp_path: Path
) -> None:
    (tmp_path / "model.h5").write_bytes(b"\x89HDF\r\n" + bytes(range(256)) * 40)

    def call(client: Any) -> Any:
        with open(tmp_path / "model.h5", "rb") as model_data:
            return client.create_training_model(ORG, N, model_data)

    theirs, ours = send_both(server, clients, call)
    # wrapped in a zip exactly as abeja-sdk wraps it (ZipFile.write of the named file)
    assert ours == theirs


def test_model_upload_of_an_unnamed_stream(
    server: HTTPServer, clients: tuple[Any, APIClient]
) -> None:
    payload = b"weights" * 500
    theirs, ours = send_both(
        server, clients, lambda c: c.create_training_model(ORG, N, io.BytesIO(payload), {})
    )
    # abeja-sdk names the entry after a random temporary file; the content is the same
    assert part_summary(ours) == part_summary(theirs)
    for side in (theirs, ours):
        with zipfile.ZipFile(io.BytesIO(side["parts"][0].data)) as archive:
            [entry] = archive.namelist()
            assert archive.read(entry) == payload
    assert ours["parts"][1] == theirs["parts"][1]
    for key in ("method", "uri_path", "query", "authorization"):
        assert ours[key] == theirs[key]


def test_statistics_follow_spec_where_the_public_package_cannot(
    server: HTTPServer, clients: tuple[Any, APIClient]
) -> None:
    _, ours = clients
    stats = {"epoch": 0, "stages": {"train": {"loss": float("nan"), "acc": float("-inf")}}}
    ours.update_statistics(ORG, N, JOB, stats)
    [(request, _)] = server.log
    assert json.loads(request.get_data()) == {
        "statistics": {"epoch": 0, "stages": {"train": {"loss": "NaN", "acc": "-Infinity"}}}
    }
