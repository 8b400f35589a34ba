"""Bad arguments are refused before any request; odd names are quoted, never mis-routed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import pytest
from pytest_httpserver import HTTPServer

from abeja_runtime.api.client import APIClient, validate_instance_type
from abeja_runtime.errors import BadRequest

from tests.support.client_support import ANY, JOB, MODEL, ORG, raw_path


@pytest.fixture
def server(server: HTTPServer) -> HTTPServer:
    """The module's server (tests/conftest.py), answering every request by default."""
    server.expect_request(ANY).respond_with_json({"ok": True})
    return server


BAD_SEGMENTS = [
    None,
    "",
    "   ",
    ".",
    "..",
    "a/b",
    "../x",
    "/",
    "tab\there",
    "nl\n",
    True,
    1.5,
    [],
    {},
]

# an operation for each kind of path argument: (label, call with the bad value put in)
TARGETS: list[tuple[str, Callable[[APIClient, Any], Any]]] = [
    ("organization_id", lambda c, v: c.get_training_job_definitions(v)),
    ("organization_id", lambda c, v: c.create_training_job_definition(v, "name")),
    ("job_definition_name", lambda c, v: c.get_training_job_definition(ORG, v)),
    ("job_definition_name", lambda c, v: c.create_training_job_definition(ORG, v)),
    ("job_definition_name", lambda c, v: c.get_training_jobs(ORG, v)),
    ("training_job_id", lambda c, v: c.get_training_job(ORG, "d", v)),
    ("training_job_id", lambda c, v: c.stop_training_job(ORG, "d", v)),
    ("training_job_id", lambda c, v: c.update_statistics(ORG, "d", v, {"epoch": 1})),
    ("model_id", lambda c, v: c.get_training_model(ORG, "d", v)),
    ("model_id", lambda c, v: c.archive_training_model(ORG, "d", v)),
]


@pytest.mark.parametrize("value", BAD_SEGMENTS, ids=repr)
@pytest.mark.parametrize(
    ("label", "call"), TARGETS, ids=[f"{t[0]}-{i}" for i, t in enumerate(TARGETS)]
)
def test_bad_ids_and_names_are_refused_before_any_request(
    server: HTTPServer, client: APIClient, label: str, call: Any, value: Any
) -> None:
    with pytest.raises(BadRequest) as info:
        call(client, value)
    assert info.value.status_code == 400
    assert info.value.error == "invalid_argument"
    assert label in str(info.value)
    assert server.log == []


@pytest.mark.parametrize(
    "name",
    ["with space", "caf\u00e9", "a?b#c", "100%", "%2F", "x;y=z", "a+b", "...", "a.b", "~user"],
)
def test_names_are_quoted_into_the_right_path(
    server: HTTPServer, client: APIClient, name: str
) -> None:
    client.get_training_job(ORG, name, JOB)
    client.get_training_model(ORG, name, MODEL)
    [(job_request, _), (model_request, _)] = server.log
    for request, tail in ((job_request, ["jobs", JOB]), (model_request, ["models", MODEL])):
        path = raw_path(request)
        assert (
            path
            == f"/organizations/{ORG}/training/definitions/{quote(name, safe='')}/" + "/".join(tail)
        )
        segments = path.split("/")
        assert [unquote(s) for s in segments] == [
            "",
            "organizations",
            ORG,
            "training",
            "definitions",
            name,
            *tail,
        ]
        assert request.query_string == b""


def test_numeric_ids_are_accepted(server: HTTPServer, client: APIClient) -> None:
    client.get_training_job(int(ORG), "d", int(JOB))
    [(request, _)] = server.log
    assert raw_path(request) == f"/organizations/{ORG}/training/definitions/d/jobs/{JOB}"


@pytest.mark.parametrize(
    "version", [1.5, "abc", "1.0", "-1", -1, 0, "0", True, None, "\u0663", [1]]
)
def test_bad_version_ids_are_refused(server: HTTPServer, client: APIClient, version: Any) -> None:
    calls = [
        lambda: client.get_training_job_definition_version(ORG, "d", version),
        lambda: client.patch_training_job_definition_version(ORG, "d", version, "x"),
        lambda: client.archive_training_job_definition_version(ORG, "d", version),
        lambda: client.delete_training_job_definition_version(ORG, "d", version),
        lambda: client.create_training_job(ORG, "d", version),
    ]
    for call in calls:
        with pytest.raises(BadRequest, match="version_id"):
            call()
    assert server.log == []


def test_version_id_as_digit_string_is_the_integer(server: HTTPServer, client: APIClient) -> None:
    client.get_training_job_definition_version(ORG, "d", "7")
    client.get_training_job_definition_version(ORG, "d", 7)
    assert [raw_path(r) for r, _ in server.log] == [
        f"/organizations/{ORG}/training/definitions/d/versions/7"
    ] * 2


@pytest.mark.parametrize("value", [-1, -100, 1.5, "10", True, [1]])
def test_bad_limit_and_offset_are_refused(
    server: HTTPServer, client: APIClient, value: Any
) -> None:
    for call in (
        lambda: client.get_training_jobs(ORG, "d", limit=value),
        lambda: client.get_training_jobs(ORG, "d", offset=value),
        lambda: client.get_training_job_definitions(ORG, limit=value),
        lambda: client.get_training_job_definitions(ORG, offset=value),
    ):
        with pytest.raises(BadRequest, match=r"limit|offset"):
            call()
    assert server.log == []


def test_zero_limit_and_offset_are_sent(server: HTTPServer, client: APIClient) -> None:
    client.get_training_jobs(ORG, "d", limit=0, offset=0)
    [(request, _)] = server.log
    assert dict(request.args) == {"limit": "0", "offset": "0"}


@pytest.mark.parametrize("value", ["true", 1, 0, "exclude_archived"])
def test_flags_must_be_booleans(server: HTTPServer, client: APIClient, value: Any) -> None:
    for call in (
        lambda: client.get_training_jobs(ORG, "d", filter_archived=value),
        lambda: client.get_training_models(ORG, "d", filter_archived=value),
        lambda: client.get_training_job_definition(ORG, "d", include_jobs=value),
        lambda: client.create_training_job(ORG, "d", 1, export_log=value),
    ):
        with pytest.raises(BadRequest):
            call()
    assert server.log == []


INVALID_INSTANCE_TYPES = [
    "", "cpu", "gpu", "cpu-", "cpu-0", "gpu-0.0", "tpu-1", "CPU-1", "cpu-1 ", " cpu-1",
    "gpu:-1", "cpu--1", "gpu:b", "gpu:B-1", "gpu:b-x", "cpu-1-2", "gpu-1.", "m5.large",
]  # fmt: skip
VALID_INSTANCE_TYPES = ["cpu-1", "cpu-0.25", "cpu-16", "gpu-1", "gpu:a-1", "gpu:b-4", "gpu:b-8"]


@pytest.mark.parametrize("instance_type", INVALID_INSTANCE_TYPES, ids=repr)
def test_unknown_instance_types_are_a_400_before_any_request(
    server: HTTPServer, client: APIClient, instance_type: str
) -> None:
    with pytest.raises(BadRequest) as info:
        client.create_training_job(ORG, "d", 1, instance_type=instance_type)
    assert info.value.status_code == 400
    assert "instance_type" in str(info.value)
    assert server.log == []


@pytest.mark.parametrize("instance_type", VALID_INSTANCE_TYPES)
def test_known_instance_types_are_sent(
    server: HTTPServer, client: APIClient, instance_type: str
) -> None:
    assert validate_instance_type(instance_type) == instance_type
    client.create_training_job(ORG, "d", 1, instance_type=instance_type)
    [(request, _)] = server.log
    assert request.get_json() == {"instance_type": instance_type}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"environment": ["A=1"]}, "environment"),
        ({"user_parameters": "A=1"}, "user_parameters"),
        ({"datasets": ["1"]}, "datasets"),
        ({"description": 5}, "description"),
    ],
)
def test_create_job_argument_types(
    server: HTTPServer, client: APIClient, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(BadRequest, match=match):
        client.create_training_job(ORG, "d", 1, **kwargs)
    assert server.log == []


def test_description_must_be_a_string(server: HTTPServer, client: APIClient) -> None:
    with pytest.raises(BadRequest, match="description"):
        client.patch_training_model(ORG, "d", MODEL, 3)  # type: ignore[arg-type]
    with pytest.raises(BadRequest, match="description"):
        client.patch_training_job_definition_version(ORG, "d", 1, ["x"])  # type: ignore[arg-type]
    assert server.log == []


@pytest.mark.parametrize("path", ["organizations/1", "//host/x", "http://127.0.0.1/x", ""])
def test_request_escape_hatch_refuses_non_relative_paths(
    server: HTTPServer, client: APIClient, path: str
) -> None:
    with pytest.raises(BadRequest, match="path"):
        client.request("GET", path)
    assert server.log == []
