"""Every Training API operation against a real server: method, raw path, query, JSON body."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from abeja_runtime.api.client import APIClient
from abeja_runtime.errors import JobContextError, StatisticsError

from tests.support.client_support import ANY, JOB, MODEL, ORG, raw_path


@pytest.fixture
def server(server: HTTPServer) -> HTTPServer:
    """The module's server (tests/conftest.py), answering every request by default."""
    server.expect_request(ANY).respond_with_json({"answer": "ok", "n": 1})
    return server


T = f"/organizations/{ORG}/training"
D = f"{T}/definitions/train%20job"
NAME = "train job"

Call = Callable[[APIClient], dict[str, Any]]

# (id, call, method, raw path, query, JSON body or None for "no body")
OPERATIONS: list[tuple[str, Call, str, str, dict[str, str], Any]] = [
    ("create_definition", lambda c: c.create_training_job_definition(ORG, NAME),
     "POST", f"{T}/definitions/", {}, {"name": NAME}),
    ("archive_definition", lambda c: c.archive_training_job_definition(ORG, NAME),
     "POST", f"{D}/archive", {}, {}),
    ("unarchive_definition", lambda c: c.unarchive_training_job_definition(ORG, NAME),
     "POST", f"{D}/unarchive", {}, {}),
    ("get_definitions", lambda c: c.get_training_job_definitions(ORG),
     "GET", f"{T}/definitions/", {}, None),
    ("get_definitions_paged",
     lambda c: c.get_training_job_definitions(ORG, filter_archived=True, offset=0, limit=20),
     "GET", f"{T}/definitions/",
     {"filter_archived": "exclude_archived", "offset": "0", "limit": "20"}, None),
    ("get_definitions_include_archived",
     lambda c: c.get_training_job_definitions(ORG, False),
     "GET", f"{T}/definitions/", {"filter_archived": "include_archived"}, None),
    ("get_definition", lambda c: c.get_training_job_definition(ORG, NAME),
     "GET", D, {}, None),
    ("get_definition_no_jobs", lambda c: c.get_training_job_definition(ORG, NAME, False),
     "GET", D, {"include_jobs": "false"}, None),
    ("get_definition_jobs", lambda c: c.get_training_job_definition(ORG, NAME, include_jobs=True),
     "GET", D, {"include_jobs": "true"}, None),
    ("delete_definition", lambda c: c.delete_training_job_definition(ORG, NAME),
     "DELETE", D, {}, None),
    ("get_versions", lambda c: c.get_training_job_definition_versions(ORG, NAME),
     "GET", f"{D}/versions", {}, None),
    ("get_versions_filtered",
     lambda c: c.get_training_job_definition_versions(ORG, NAME, filter_archived=True),
     "GET", f"{D}/versions", {"filter_archived": "exclude_archived"}, None),
    ("get_version", lambda c: c.get_training_job_definition_version(ORG, NAME, 3),
     "GET", f"{D}/versions/3", {}, None),
    ("patch_version",
     lambda c: c.patch_training_job_definition_version(ORG, NAME, 3, description="new version"),
     "PATCH", f"{D}/versions/3", {}, {"description": "new version"}),
    ("archive_version", lambda c: c.archive_training_job_definition_version(ORG, NAME, 3),
     "POST", f"{D}/versions/3/archive", {}, None),
    ("unarchive_version", lambda c: c.unarchive_training_job_definition_version(ORG, NAME, 3),
     "POST", f"{D}/versions/3/unarchive", {}, None),
    ("delete_version", lambda c: c.delete_training_job_definition_version(ORG, NAME, 3),
     "DELETE", f"{D}/versions/3", {}, None),
    ("create_job_minimal", lambda c: c.create_training_job(ORG, NAME, 1),
     "POST", f"{D}/versions/1/jobs", {}, {}),
    ("create_job_seed_positional",
     lambda c: c.create_training_job(ORG, NAME, 1, {"BATCH_SIZE": 50}, {"mnist": "1111111111111"}),
     "POST", f"{D}/versions/1/jobs", {},
     {"environment": {"BATCH_SIZE": 50}, "datasets": {"mnist": "1111111111111"}}),
    ("create_job_full",
     lambda c: c.create_training_job(
         ORG, NAME, "2", user_parameters={"OLD": "1"}, datasets={"d": "2222222222222"},
         instance_type="gpu:b-1", environment={"NEW": "2"}, description="d", export_log=False),
     "POST", f"{D}/versions/2/jobs", {},
     {"environment": {"NEW": "2"}, "datasets": {"d": "2222222222222"}, "instance_type": "gpu:b-1",
      "description": "d", "export_log": False}),
    ("get_jobs", lambda c: c.get_training_jobs(ORG, NAME),
     "GET", f"{D}/jobs", {}, None),
    ("get_jobs_paged", lambda c: c.get_training_jobs(ORG, NAME, 5, 10, False),
     "GET", f"{D}/jobs", {"limit": "5", "offset": "10", "filter_archived": "include_archived"},
     None),
    ("get_job", lambda c: c.get_training_job(ORG, NAME, JOB),
     "GET", f"{D}/jobs/{JOB}", {}, None),
    ("stop_job", lambda c: c.stop_training_job(ORG, NAME, JOB),
     "POST", f"{D}/jobs/{JOB}/stop", {}, None),
    ("archive_job", lambda c: c.archive_training_job(ORG, NAME, JOB),
     "POST", f"{D}/jobs/{JOB}/archive", {}, {}),
    ("unarchive_job", lambda c: c.unarchive_training_job(ORG, NAME, JOB),
     "POST", f"{D}/jobs/{JOB}/unarchive", {}, {}),
    ("get_result", lambda c: c.get_training_result(ORG, NAME, JOB),
     "GET", f"{D}/jobs/{JOB}/result", {}, None),
    ("update_statistics",
     lambda c: c.update_statistics(ORG, NAME, JOB, {"epoch": 0, "stages": {"train": {"loss": 0.0}}}),
     "POST", f"{D}/jobs/{JOB}/statistics", {},
     {"statistics": {"epoch": 0, "stages": {"train": {"loss": 0.0}}}}),
    ("get_models", lambda c: c.get_training_models(ORG, NAME),
     "GET", f"{D}/models", {}, None),
    ("get_models_filtered", lambda c: c.get_training_models(ORG, NAME, filter_archived=True),
     "GET", f"{D}/models", {"filter_archived": "exclude_archived"}, None),
    ("list_models", lambda c: c.list_models(ORG, NAME),
     "GET", f"{D}/models", {}, None),
    ("get_model", lambda c: c.get_training_model(ORG, NAME, MODEL),
     "GET", f"{D}/models/{MODEL}", {}, None),
    ("patch_model", lambda c: c.patch_training_model(ORG, NAME, MODEL, "new description"),
     "PATCH", f"{D}/models/{MODEL}", {}, {"description": "new description"}),
    ("download_model", lambda c: c.download_training_model(ORG, NAME, MODEL),
     "GET", f"{D}/models/{MODEL}/download", {}, None),
    ("archive_model", lambda c: c.archive_training_model(ORG, NAME, MODEL),
     "POST", f"{D}/models/{MODEL}/archive", {}, None),
    ("unarchive_model", lambda c: c.unarchive_training_model(ORG, NAME, MODEL),
     "POST", f"{D}/models/{MODEL}/unarchive", {}, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "method", "path", "query", "body"),
    [op[1:] for op in OPERATIONS],
    ids=[op[0] for op in OPERATIONS],
)
def test_operation_wire(
    server: HTTPServer,
    client: APIClient,
    call: Call,
    method: str,
    path: str,
    query: dict[str, str],
    body: Any,
) -> None:
    assert call(client) == {"answer": "ok", "n": 1}
    [(request, _)] = server.log
    assert request.method == method
    assert raw_path(request) == path
    assert dict(request.args) == query
    data = request.get_data()
    if body is None:
        assert data == b""
        assert "Content-Type" not in request.headers
    else:
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(data) == body


def test_all_29_operations_are_covered() -> None:
    seed_operations = {
        "create_training_job_definition", "archive_training_job_definition",
        "unarchive_training_job_definition", "get_training_job_definitions",
        "get_training_job_definition", "delete_training_job_definition",
        "create_training_job_definition_version_native_api",
        "create_training_job_definition_version", "get_training_job_definition_versions",
        "get_training_job_definition_version", "patch_training_job_definition_version",
        "archive_training_job_definition_version", "unarchive_training_job_definition_version",
        "delete_training_job_definition_version", "create_training_job", "get_training_jobs",
        "get_training_job", "stop_training_job", "archive_training_job",
        "unarchive_training_job", "get_training_result", "update_statistics",
        "get_training_models", "create_training_model", "get_training_model",
        "patch_training_model", "download_training_model", "archive_training_model",
        "unarchive_training_model",
    }  # fmt: skip
    assert len(seed_operations) == 29
    for name in seed_operations | {"list_models"}:
        assert callable(getattr(APIClient, name)), name


def test_keyword_names_match_the_seed(server: HTTPServer, client: APIClient) -> None:
    client.get_training_job(organization_id=ORG, job_definition_name=NAME, training_job_id=JOB)
    client.get_training_model(organization_id=ORG, job_definition_name=NAME, model_id=MODEL)
    client.archive_training_job_definition_version(
        organization_id=ORG, job_definition_name=NAME, version_id=1
    )
    client.get_training_jobs(ORG, NAME, limit=1, offset=2, filter_archived=None)
    assert len(server.log) == 4


class Stats:
    """Duck-typed Statistics: only get_statistics()."""

    def get_statistics(self) -> dict[str, Any]:
        return {
            "num_epochs": 5,
            "epoch": 0,
            "progress_percentage": 0.0,
            "stages": {"train": {"accuracy": 0.9, "loss": float("nan")}},
            "lr": float("inf"),
        }


EXPECTED_STATS = {
    "statistics": {
        "num_epochs": 5,
        "epoch": 0,
        "progress_percentage": 0.0,
        "stages": {"train": {"accuracy": 0.9, "loss": "NaN"}},
        "lr": "Infinity",
    }
}


def set_job_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABEJA_ORGANIZATION_ID", ORG)
    monkeypatch.setenv("TRAINING_JOB_DEFINITION_NAME", NAME)
    monkeypatch.setenv("TRAINING_JOB_ID", JOB)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.update_statistics(Stats()),
        lambda c: c.update_statistics(Stats().get_statistics()),
        lambda c: c.update_statistics(statistics=Stats()),
        lambda c: c.update_statistics(None, None, None, Stats()),
        lambda c: c.update_statistics(ORG, NAME, JOB, Stats()),
        lambda c: c.update_statistics(
            organization_id=ORG, job_definition_name=NAME, training_job_id=JOB, statistics=Stats()
        ),
    ],
    ids=["short-object", "short-dict", "keyword", "nones", "full", "full-keywords"],
)
def test_update_statistics_forms(
    server: HTTPServer, client: APIClient, monkeypatch: pytest.MonkeyPatch, call: Call
) -> None:
    set_job_env(monkeypatch)
    assert call(client) == {"answer": "ok", "n": 1}
    [(request, _)] = server.log
    assert request.method == "POST"
    assert raw_path(request) == f"{D}/jobs/{JOB}/statistics"
    assert b"NaN" not in request.get_data().replace(b'"NaN"', b"")
    assert json.loads(request.get_data()) == EXPECTED_STATS


def test_numpy_scalars_in_statistics(server: HTTPServer, client: APIClient) -> None:
    np = pytest.importorskip("numpy")
    client.update_statistics(
        ORG, NAME, JOB, {"epoch": np.int64(3), "stages": {"train": {"loss": np.float32(0.5)}}}
    )
    [(request, _)] = server.log
    assert json.loads(request.get_data()) == {
        "statistics": {"epoch": 3, "stages": {"train": {"loss": 0.5}}}
    }


def test_short_forms_outside_a_job_say_what_is_missing(
    server: HTTPServer, client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ABEJA_ORGANIZATION_ID", "TRAINING_JOB_DEFINITION_NAME", "TRAINING_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ABEJA_ORGANIZATION_ID", ORG)
    with pytest.raises(JobContextError) as info:
        client.update_statistics({"epoch": 1})
    assert info.value.missing == ["TRAINING_JOB_DEFINITION_NAME", "TRAINING_JOB_ID"]
    with pytest.raises(JobContextError, match="TRAINING_JOB_DEFINITION_NAME"):
        client.list_models()
    assert server.log == []


def test_list_models_reads_the_job_environment(
    server: HTTPServer, client: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_job_env(monkeypatch)
    client.list_models(organization_id=ORG)
    client.list_models()
    assert [raw_path(r) for r, _ in server.log] == [f"{D}/models", f"{D}/models"]


@pytest.mark.parametrize(
    "statistics",
    [None, "epoch=1", 3, ["epoch", 1], {"x": object()}, {1: "non-string key"}],
    ids=repr,
)
def test_bad_statistics_are_refused_before_sending(
    server: HTTPServer, client: APIClient, statistics: Any
) -> None:
    with pytest.raises(StatisticsError, match="statistics"):
        client.update_statistics(ORG, NAME, JOB, statistics)
    assert server.log == []


def test_statistics_error_names_the_path(server: HTTPServer, client: APIClient) -> None:
    with pytest.raises(StatisticsError, match=r"statistics\.stages\.train\.loss"):
        client.update_statistics(ORG, NAME, JOB, {"stages": {"train": {"loss": object()}}})
    assert server.log == []
