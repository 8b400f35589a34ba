"""Construction, configuration, auth schemes, retries, redaction and the escape hatch."""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from abeja_runtime.api.client import APIClient
from abeja_runtime.api.retry import RetryPolicy
from abeja_runtime.config import Credential
from abeja_runtime.errors import (
    AbejaRuntimeError,
    APIConnectionError,
    ConfigurationError,
    HttpError,
    Unauthorized,
)

from tests.support.client_support import (
    ANY,
    DATASOURCE_SECRET,
    FAST_RETRY,
    JOB,
    ORG,
    TOKEN,
    USER_TOKEN,
    base_url,
    make_client,
    raw_path,
)

ENV_NAMES = [
    "ABEJA_API_URL",
    "PLATFORM_AUTH_TOKEN",
    "ABEJA_PLATFORM_USER_ID",
    "ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN",
    "ABEJA_PLATFORM_DATASOURCE_ID",
    "ABEJA_PLATFORM_DATASOURCE_SECRET",
    "ABEJA_SDK_CONNECTION_TIMEOUT",
    "ABEJA_SDK_MAX_RETRY_COUNT",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


@pytest.mark.parametrize(
    ("credential", "env", "header"),
    [
        ({"auth_token": TOKEN}, {}, f"Bearer {TOKEN}"),
        (Credential.bearer(TOKEN), {}, f"Bearer {TOKEN}"),
        (
            {"user_id": "1234567890123", "personal_access_token": USER_TOKEN},
            {},
            basic("user-1234567890123", USER_TOKEN),
        ),
        (
            {"datasource_id": "99", "datasource_secret": DATASOURCE_SECRET},
            {},
            basic("datasource-99", DATASOURCE_SECRET),
        ),
        (None, {"PLATFORM_AUTH_TOKEN": TOKEN}, f"Bearer {TOKEN}"),
        (
            None,
            {
                "ABEJA_PLATFORM_USER_ID": "user-5",
                "ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN": USER_TOKEN,
            },
            basic("user-5", USER_TOKEN),
        ),
        (
            None,
            {
                "ABEJA_PLATFORM_DATASOURCE_ID": "7",
                "ABEJA_PLATFORM_DATASOURCE_SECRET": DATASOURCE_SECRET,
            },
            basic("datasource-7", DATASOURCE_SECRET),
        ),
        (None, {}, None),
    ],
    ids=["bearer-dict", "bearer", "user", "datasource", "env-token", "env-user", "env-ds", "none"],
)
def test_auth_schemes(
    server: HTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    credential: Any,
    env: dict[str, str],
    header: str | None,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    server.expect_request(ANY).respond_with_json({"ok": True})
    with APIClient(credential, base_url=base_url(server)) as client:
        client.get_training_job(ORG, "d", JOB)
    [(request, _)] = server.log
    assert request.headers.get("Authorization") == header


def test_base_url_is_read_when_the_client_is_made(
    server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.expect_request(ANY).respond_with_json({"ok": True})
    monkeypatch.setenv("ABEJA_API_URL", base_url(server) + "/")
    client = APIClient({"auth_token": TOKEN})
    assert client.base_url == base_url(server)
    client.get_training_result(ORG, "d", JOB)
    assert (
        raw_path(server.log[0][0])
        == f"/organizations/{ORG}/training/definitions/d/jobs/{JOB}/result"
    )
    monkeypatch.setenv("ABEJA_API_URL", "https://other.example")
    assert APIClient({"auth_token": TOKEN}).base_url == "https://other.example"
    assert APIClient({"auth_token": TOKEN}, base_url="http://127.0.0.1:9").base_url == (
        "http://127.0.0.1:9"
    )


def test_defaults() -> None:
    client = APIClient()
    assert client.base_url == "https://api.abeja.io"
    assert client.timeout == (30.0, 30.0)
    assert client.max_retry_count == 5
    assert client.credential is None


def test_numbers_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABEJA_SDK_CONNECTION_TIMEOUT", "7.5")
    monkeypatch.setenv("ABEJA_SDK_MAX_RETRY_COUNT", "2")
    client = APIClient()
    assert client.timeout == (7.5, 7.5)
    assert client.max_retry_count == 2
    # arguments win over the environment
    client = APIClient(timeout=3, max_retry_count=0)
    assert client.timeout == (3.0, 3.0)
    assert client.max_retry_count == 0
    assert APIClient(timeout=(1, 60)).timeout == (1.0, 60.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ABEJA_SDK_CONNECTION_TIMEOUT", "abc"),
        ("ABEJA_SDK_CONNECTION_TIMEOUT", "-1"),
        ("ABEJA_SDK_CONNECTION_TIMEOUT", "0"),
        ("ABEJA_SDK_CONNECTION_TIMEOUT", "nan"),
        ("ABEJA_SDK_MAX_RETRY_COUNT", "three"),
        ("ABEJA_SDK_MAX_RETRY_COUNT", "1.5"),
        ("ABEJA_SDK_MAX_RETRY_COUNT", "-2"),
        ("ABEJA_API_URL", "ftp://x"),
    ],
)
def test_bad_environment_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        APIClient()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timeout": 0},
        {"timeout": "10"},
        {"timeout": (1, 2, 3)},
        {"timeout": (1, -2)},
        {"max_retry_count": -1},
        {"max_retry_count": 1.5},
        {"credential": {"token": "x"}},
        {"credential": "a-token-string"},
        {"base_url": "api.abeja.io"},
    ],
    ids=repr,
)
def test_bad_arguments_are_configuration_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        APIClient(**kwargs)


def test_repr_shows_url_and_scheme_never_the_secret() -> None:
    for credential, scheme, secrets in [
        ({"auth_token": TOKEN}, "bearer", [TOKEN]),
        ({"user_id": "1", "personal_access_token": USER_TOKEN}, "basic", [USER_TOKEN]),
        (
            {"datasource_id": "1", "datasource_secret": DATASOURCE_SECRET},
            "basic",
            [DATASOURCE_SECRET],
        ),
    ]:
        client = APIClient(credential, base_url="http://127.0.0.1:1")
        text = repr(client) + str(client) + repr(client.credential) + repr(client.retry_policy)
        assert "http://127.0.0.1:1" in repr(client)
        assert f"auth={scheme}" in repr(client)
        for secret in secrets:
            assert secret not in text
            assert base64.b64encode(secret.encode()).decode()[:8] not in text


def test_context_manager_closes(server: HTTPServer) -> None:
    server.expect_request(ANY).respond_with_json({"ok": True})
    with make_client(server) as client:
        assert client.get_training_job(ORG, "d", JOB) == {"ok": True}
    with pytest.raises(AbejaRuntimeError, match="closed"):
        client.get_training_job(ORG, "d", JOB)
    assert len(server.log) == 1


def flaky(server: HTTPServer, *codes: int) -> list[Request]:
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        code = codes[len(seen)] if len(seen) < len(codes) else 200
        seen.append(request)
        body = {"ok": True} if code == 200 else {"error": "busy", "error_description": "later"}
        return Response(json.dumps(body), status=code, content_type="application/json")

    server.expect_request(ANY).respond_with_handler(handler)
    return seen


def test_client_retries_503_503_then_succeeds(server: HTTPServer) -> None:
    seen = flaky(server, 503, 503)
    with make_client(server) as client:
        assert client.get_training_job(ORG, "d", JOB) == {"ok": True}
        assert client.update_statistics(ORG, "d", JOB, {"epoch": 1}) == {"ok": True}
    assert len(seen) == 4
    assert [r.method for r in seen] == ["GET", "GET", "GET", "POST"]


def test_max_retry_count_zero_means_one_try(server: HTTPServer) -> None:
    seen = flaky(server, 503, 503)
    with make_client(server, max_retry_count=0) as client, pytest.raises(HttpError) as info:
        client.update_statistics(ORG, "d", JOB, {"epoch": 1})
    assert info.value.status_code == 503
    assert len(seen) == 1


def test_max_retry_count_replaces_the_policy_count(server: HTTPServer) -> None:
    seen = flaky(server, 503, 503, 503)
    with make_client(server, max_retry_count=1) as client:
        assert client.retry_policy.backoff_initial == FAST_RETRY.backoff_initial
        assert client.max_retry_count == 1
        with pytest.raises(HttpError):
            client.get_training_job(ORG, "d", JOB)
    assert len(seen) == 2


@pytest.mark.parametrize(
    "create",
    [
        lambda c: c.create_training_job_definition(ORG, "d"),
        lambda c: c.create_training_job(ORG, "d", 1),
    ],
    ids=["definition", "job"],
)
def test_creates_are_not_retried_after_503(server: HTTPServer, create: Any) -> None:
    seen = flaky(server, 503)
    with make_client(server) as client, pytest.raises(HttpError):
        create(client)
    assert len(seen) == 1


def test_creates_are_retried_when_the_server_was_never_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import socket

    caplog.set_level(logging.INFO, logger="abeja_runtime.http")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    policy = RetryPolicy(max_retries=2, backoff_initial=0.001, jitter=0)
    with (
        APIClient(
            {"auth_token": TOKEN}, base_url=f"http://127.0.0.1:{port}", retry_policy=policy
        ) as client,
        pytest.raises(APIConnectionError) as info,
    ):
        client.create_training_job_definition(ORG, "d")
    assert info.value.sent is False
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2, retries
    assert "retry 2/2" in retries[-1]


def test_errors_and_logs_never_show_the_token(
    server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.expect_request(ANY).respond_with_json(
        {"error": "unauthorized", "error_description": f"token {TOKEN} is expired"}, status=401
    )
    with make_client(server) as client, pytest.raises(Unauthorized) as info:
        client.get_training_job(ORG, "d", JOB)
    text = "\n".join(
        [str(info.value), repr(info.value), str(info.value._asdict())]
        + [r.getMessage() for r in caplog.records]
    )
    assert TOKEN not in text
    assert "expired" in text
    assert any(f"/jobs/{JOB}" in r.getMessage() for r in caplog.records)


def test_escape_hatch_request(server: HTTPServer) -> None:
    server.expect_request(ANY).respond_with_json({"status": "Active"})
    path = f"/organizations/{ORG}/training/definitions/d/jobs/{JOB}/status"
    with make_client(server) as client:
        out = client.request(
            "POST", path, params={"q": "1"}, json={"status": "Active"}, idempotent=False, timeout=5
        )
    assert out == {"status": "Active"}
    [(request, _)] = server.log
    assert raw_path(request) == path
    assert request.args["q"] == "1"
    assert request.get_json() == {"status": "Active"}
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_escape_hatch_honours_idempotent_flag(server: HTTPServer) -> None:
    seen = flaky(server, 503)
    path = f"/organizations/{ORG}/training/definitions/d/jobs/{JOB}/status"
    with make_client(server) as client:
        with pytest.raises(HttpError):
            client.request("POST", path, json={}, idempotent=False)
        assert len(seen) == 1
        assert client.request("POST", path, json={}) == {"ok": True}
    assert len(seen) == 2
