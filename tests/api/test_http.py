"""The HTTP transport against real servers on 127.0.0.1: headers, pooling, errors, retries."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from abeja_runtime import __version__
from abeja_runtime.api.retry import RetryPolicy
from abeja_runtime.api.transport import USER_AGENT, HttpTransport, normalize_timeout
from abeja_runtime.config import Credential
from abeja_runtime.errors import (
    AbejaRuntimeError,
    APIConnectionError,
    APITimeoutError,
    BadRequest,
    Conflict,
    Forbidden,
    HttpError,
    InternalServerError,
    InvalidResponseError,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
)

from tests.support.client_support import (
    ANY,
    DATASOURCE_SECRET,
    TOKEN,
    USER_TOKEN,
    KeepAliveServer,
    base_url,
    serving,
)


@pytest.fixture(scope="module")
def _threaded() -> Iterator[HTTPServer]:
    yield from serving(threaded=True)


@pytest.fixture
def threaded(_threaded: HTTPServer) -> HTTPServer:
    _threaded.clear()
    return _threaded


class Sleeps(list[float]):
    """Records the delays the transport asked for, instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def transport(
    url: str,
    *,
    credential: Credential | None = None,
    retries: int = 3,
    sleep: Sleeps | None = None,
    timeout: Any = 10,
) -> HttpTransport:
    return HttpTransport(
        url,
        credential if credential is not None else Credential.bearer(TOKEN),
        timeout=timeout,
        retry=RetryPolicy(max_retries=retries, jitter=0),
        sleep=sleep if sleep is not None else Sleeps(),
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ----------------------------------------------------------------- headers, auth


@pytest.mark.parametrize(
    ("credential", "expected"),
    [
        (Credential.bearer(TOKEN), f"Bearer {TOKEN}"),
        (
            Credential.user("1234567890123", USER_TOKEN),
            "Basic " + base64.b64encode(f"user-1234567890123:{USER_TOKEN}".encode()).decode(),
        ),
        (
            Credential.datasource("9876543210987", DATASOURCE_SECRET),
            "Basic "
            + base64.b64encode(f"datasource-9876543210987:{DATASOURCE_SECRET}".encode()).decode(),
        ),
    ],
    ids=["bearer", "user", "datasource"],
)
def test_headers_for_each_auth_scheme(
    server: HTTPServer, credential: Credential, expected: str
) -> None:
    server.expect_request("/x").respond_with_json({"ok": 1})
    t = transport(base_url(server), credential=credential)
    assert t.request("GET", "/x") == {"ok": 1}
    [(request, _)] = server.log
    assert request.headers["Authorization"] == expected
    assert request.headers["User-Agent"] == USER_AGENT == f"abeja-runtime/{__version__}"
    assert request.headers["Accept"] == "application/json"
    t.close()


def test_no_credential_sends_no_authorization(server: HTTPServer) -> None:
    server.expect_request("/x").respond_with_json({})
    t = HttpTransport(base_url(server), None)
    t.request("GET", "/x")
    [(request, _)] = server.log
    assert "Authorization" not in request.headers
    assert t.auth_scheme == "none"


def test_json_body_query_and_extra_headers(server: HTTPServer) -> None:
    server.expect_request("/x", method="PATCH").respond_with_json({"done": True})
    t = transport(base_url(server))
    out = t.request(
        "patch",
        "/x",
        params={"a": "1", "skip": None},
        json={"description": "caf\u00e9"},
        headers={"X-Extra": "yes"},
    )
    assert out == {"done": True}
    [(request, _)] = server.log
    assert request.method == "PATCH"
    assert request.query_string == b"a=1"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Extra"] == "yes"
    assert json.loads(request.get_data()) == {"description": "caf\u00e9"}


def test_non_json_body_values_are_refused_before_sending(server: HTTPServer) -> None:
    t = transport(base_url(server))
    with pytest.raises(BadRequest, match="strict JSON"):
        t.request("POST", "/x", json={"loss": float("nan")})
    with pytest.raises(BadRequest, match="strict JSON"):
        t.request("POST", "/x", json={"obj": object()})
    assert server.log == []


@pytest.mark.parametrize("path", ["x", "//evil.example/x", "", "@evil.example/x"])
def test_paths_must_be_relative_to_the_base_url(server: HTTPServer, path: str) -> None:
    with pytest.raises(BadRequest, match="path must"):
        transport(base_url(server)).request("GET", path)
    assert server.log == []


# ------------------------------------------------------------ pooling, threads


@pytest.fixture
def keepalive() -> Iterator[KeepAliveServer]:
    server = KeepAliveServer()
    try:
        yield server
    finally:
        server.close()


def test_one_connection_is_reused_across_calls(keepalive: KeepAliveServer) -> None:
    t = transport(keepalive.url)
    for _ in range(5):
        t.request("GET", "/organizations/1/training/definitions/")
    t.close()
    assert len(keepalive.ports) == 5
    assert len(set(keepalive.ports)) == 1, keepalive.ports
    # what the public package does (a new Session per call) opens one per call
    keepalive.ports.clear()
    for _ in range(3):
        with requests.Session() as session:
            session.get(keepalive.url + "/y", timeout=10)
    assert len(set(keepalive.ports)) == 3


def test_one_transport_is_safe_to_share_between_threads(keepalive: KeepAliveServer) -> None:
    t = transport(keepalive.url)
    errors: list[BaseException] = []
    results: list[dict[str, Any]] = []

    def worker(n: int) -> None:
        try:
            for i in range(15):
                results.append(t.request("GET", f"/w{n}/{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    t.close()
    assert errors == []
    assert sorted(r["path"] for r in results) == sorted(
        f"/w{n}/{i}" for n in range(6) for i in range(15)
    )
    # connections are pooled (at most one per thread), not one per call
    assert len(set(keepalive.ports)) <= 6, len(set(keepalive.ports))


def test_closed_transport_refuses_requests(server: HTTPServer) -> None:
    t = transport(base_url(server))
    t.close()
    t.close()
    assert t.closed
    with pytest.raises(AbejaRuntimeError, match="closed"):
        t.request("GET", "/x")
    assert server.log == []


# ----------------------------------------------------------------- error mapping


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (405, MethodNotAllowed),
        (409, Conflict),
        (500, InternalServerError),
        (418, HttpError),
        (422, HttpError),
        (429, HttpError),
        (502, HttpError),
        (503, HttpError),
    ],
)
def test_json_error_bodies_map_to_classes(
    server: HTTPServer, status: int, cls: type[HttpError]
) -> None:
    body = {"error": "some_error", "error_description": "what went wrong", "error_detail": {"k": 1}}
    server.expect_request("/e").respond_with_json(body, status=status)
    with pytest.raises(HttpError) as info:
        transport(base_url(server), retries=0).request("GET", "/e")
    err = info.value
    assert type(err) is cls
    assert err.error == "some_error"
    assert err.error_description == "what went wrong"
    assert err.error_detail == {"k": 1}
    assert err.status_code == status
    assert err.url == server.url_for("/e")
    assert "what went wrong" in str(err)


def test_json_error_without_the_usual_keys(server: HTTPServer) -> None:
    server.expect_request("/e").respond_with_json({"message": "nope"}, status=404)
    with pytest.raises(NotFound) as info:
        transport(base_url(server)).request("GET", "/e")
    assert info.value.error == "Not Found"
    assert "nope" in info.value.error_description
    assert info.value.error_detail is None


def test_non_json_error_body_is_a_clear_error(server: HTTPServer) -> None:
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    server.expect_request("/e").respond_with_data(html, status=502, content_type="text/html")
    with pytest.raises(HttpError) as info:
        transport(base_url(server), retries=0).request("GET", "/e")
    err = info.value
    assert err.status_code == 502
    assert err.error == "Bad Gateway"
    assert "non-JSON" in err.error_description
    assert "text/html" in err.error_description
    assert "502 Bad Gateway" in err.error_description


def test_empty_error_body_is_a_clear_error(server: HTTPServer) -> None:
    server.expect_request("/e").respond_with_data("", status=403)
    with pytest.raises(Forbidden) as info:
        transport(base_url(server)).request("GET", "/e")
    assert info.value.error == "Forbidden"
    assert "empty body" in info.value.error_description


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        ("<html>maintenance</html>", "text/html", "text/html"),
        ("", "application/json", "empty body"),
        ("   ", "application/json", "empty body"),
        ("[1, 2]", "application/json", "JSON list"),
        ('"text"', "application/json", "JSON str"),
        ("{not json", "application/json", "expected a JSON object"),
    ],
)
def test_bad_success_bodies_are_invalid_responses(
    server: HTTPServer, body: str, content_type: str, match: str
) -> None:
    server.expect_request("/ok").respond_with_data(body, status=200, content_type=content_type)
    sleeps = Sleeps()
    with pytest.raises(InvalidResponseError, match=match) as info:
        transport(base_url(server), sleep=sleeps).request("GET", "/ok")
    assert info.value.status_code == 200
    assert isinstance(info.value, HttpError)
    assert sleeps == []  # not something a retry fixes
    assert len(server.log) == 1


def test_no_content_is_an_empty_dict(server: HTTPServer) -> None:
    server.expect_request("/nc").respond_with_data("", status=204)
    assert transport(base_url(server)).request("DELETE", "/nc") == {}


def test_redirects_are_not_followed(server: HTTPServer) -> None:
    server.expect_request("/r").respond_with_data(
        "", status=302, headers={"Location": "http://127.0.0.1:1/elsewhere?sig=abc"}
    )
    with pytest.raises(HttpError) as info:
        transport(base_url(server)).request("GET", "/r")
    assert info.value.status_code == 302
    assert "redirect" in info.value.error_description
    assert "sig=abc" not in str(info.value)
    assert len(server.log) == 1


# ----------------------------------------------------------------------- retries


def sequence(server: HTTPServer, *responses: Response) -> list[Request]:
    seen: list[Request] = []
    queue = list(responses)

    def handler(request: Request) -> Response:
        seen.append(request)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    server.expect_request(ANY).respond_with_handler(handler)
    return seen


def status(code: int, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": "busy", "error_description": f"status {code}"})
    return Response(body, status=code, headers=headers, content_type="application/json")


def ok() -> Response:
    return Response('{"ok": true}', status=200, content_type="application/json")


def test_503_503_200_succeeds_after_two_backoffs(server: HTTPServer) -> None:
    seen = sequence(server, status(503), status(503), ok())
    sleeps = Sleeps()
    out = transport(base_url(server), sleep=sleeps).request("GET", "/x")
    assert out == {"ok": True}
    assert len(seen) == 3
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("code", [429, 502, 503, 504])
def test_each_retryable_status_is_retried_for_idempotent_calls(
    server: HTTPServer, code: int
) -> None:
    seen = sequence(server, status(code), ok())
    assert transport(base_url(server)).request("POST", "/archive") == {"ok": True}
    assert len(seen) == 2


@pytest.mark.parametrize("code", [400, 401, 404, 409, 500])
def test_other_statuses_are_not_retried(server: HTTPServer, code: int) -> None:
    seen = sequence(server, status(code), ok())
    with pytest.raises(HttpError):
        transport(base_url(server)).request("GET", "/x")
    assert len(seen) == 1


def test_creates_are_not_retried_after_reaching_the_server(server: HTTPServer) -> None:
    seen = sequence(server, status(503), ok())
    sleeps = Sleeps()
    with pytest.raises(HttpError) as info:
        transport(base_url(server), sleep=sleeps).request(
            "POST", "/create", json={"name": "x"}, idempotent=False
        )
    assert info.value.status_code == 503
    assert len(seen) == 1
    assert sleeps == []


def test_retries_run_out_and_the_last_error_is_raised(server: HTTPServer) -> None:
    seen = sequence(server, status(503))
    sleeps = Sleeps()
    with pytest.raises(HttpError) as info:
        transport(base_url(server), retries=2, sleep=sleeps).request("GET", "/x")
    assert info.value.status_code == 503
    assert len(seen) == 3
    assert sleeps == [0.5, 1.0]


def test_zero_retries_sends_once(server: HTTPServer) -> None:
    seen = sequence(server, status(503), ok())
    with pytest.raises(HttpError):
        transport(base_url(server), retries=0).request("GET", "/x")
    assert len(seen) == 1


def test_retry_after_is_honoured(server: HTTPServer) -> None:
    seen = sequence(server, status(429, {"Retry-After": "7"}), ok())
    sleeps = Sleeps()
    assert transport(base_url(server), sleep=sleeps).request("GET", "/x") == {"ok": True}
    assert len(seen) == 2
    assert sleeps == [7.0]


def test_retry_after_is_capped(server: HTTPServer) -> None:
    sequence(server, status(503, {"Retry-After": "86400"}), ok())
    sleeps = Sleeps()
    transport(base_url(server), sleep=sleeps).request("GET", "/x")
    assert sleeps == [60.0]


def test_retry_after_is_on_the_error(server: HTTPServer) -> None:
    sequence(server, status(503, {"Retry-After": "12"}))
    with pytest.raises(HttpError) as info:
        transport(base_url(server), retries=0).request("GET", "/x")
    assert info.value.retry_after == 12.0


def test_multipart_body_is_sent_again_on_retry(server: HTTPServer, tmp_path: Any) -> None:
    from abeja_runtime.api.multipart import MultipartBody

    (tmp_path / "f.bin").write_bytes(b"abc" * 1000)
    seen = sequence(server, status(502), ok())
    body = MultipartBody()
    body.add_file("f", tmp_path / "f.bin")
    transport(base_url(server)).request("POST", "/upload", data=body)
    assert len(seen) == 2
    assert seen[0].get_data() == seen[1].get_data() == body.to_bytes()


# ------------------------------------------------------------- connection errors


def test_refused_connection_never_reached_the_server_so_creates_retry() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sleeps = Sleeps()
    with pytest.raises(APIConnectionError) as info:
        transport(url, retries=2, sleep=sleeps).request(
            "POST", "/create", json={}, idempotent=False
        )
    assert info.value.sent is False
    assert not isinstance(info.value, APITimeoutError)
    assert info.value.url == url + "/create"
    assert "cannot connect" in str(info.value)
    assert sleeps == [0.5, 1.0]


def test_read_timeout_is_a_timeout_error(threaded: HTTPServer) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return ok()

    threaded.expect_request(ANY).respond_with_handler(slow)
    sleeps = Sleeps()
    t = transport(base_url(threaded), retries=2, timeout=(5, 0.1), sleep=sleeps)
    with pytest.raises(APITimeoutError) as info:
        t.request("POST", "/create", json={}, idempotent=False)
    assert info.value.sent is True
    assert "0.1s" in str(info.value)
    assert sleeps == []  # may have been processed: a create is not repeated
    with pytest.raises(APITimeoutError):
        t.request("GET", "/read", timeout=0.1)
    assert sleeps == [0.5, 1.0]  # a read is
    assert isinstance(info.value, APIConnectionError)


class DroppingServer:
    """Accepts a connection, reads the request, then closes without answering."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.settimeout(2)
            with contextlib.suppress(OSError):
                conn.recv(65536)
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_dropped_connection_may_have_been_received() -> None:
    dropper = DroppingServer()
    try:
        url = f"http://127.0.0.1:{dropper.port}"
        sleeps = Sleeps()
        with pytest.raises(APIConnectionError) as info:
            transport(url, retries=3, sleep=sleeps).request(
                "POST", "/create", json={"a": 1}, idempotent=False
            )
        assert info.value.sent is True
        assert sleeps == []
        assert dropper.accepted == 1
        with pytest.raises(APIConnectionError):
            transport(url, retries=1, sleep=sleeps).request("GET", "/read")
        assert sleeps == [0.5]
    finally:
        dropper.close()


def test_connect_timeout_is_a_timeout_that_never_reached_the_server() -> None:
    # A listening socket whose accept queue is full drops further SYNs, so a
    # connect attempt hangs until the connect timeout.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.1)
        sleeps = Sleeps()
        t = transport(f"http://127.0.0.1:{port}", retries=1, timeout=(0.2, 5), sleep=sleeps)
        try:
            t.request("POST", "/create", json={}, idempotent=False)
        except APITimeoutError as exc:
            assert exc.sent is False
            assert "could not connect within 0.2s" in str(exc)
            assert sleeps == [0.5]
        except APIConnectionError as exc:  # pragma: no cover - kernel accepted anyway
            pytest.skip(f"the kernel did not drop the SYN here: {exc}")
        else:  # pragma: no cover
            pytest.skip("the kernel accepted the connection")
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# --------------------------------------------------------------------- redaction


def test_secrets_never_reach_messages_reprs_or_logs(
    server: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    user = Credential.user("1234567890123", USER_TOKEN)
    header = user.authorization
    echo = {
        "error": "unauthorized",
        "error_description": f"bad header {header} / {USER_TOKEN}",
        "error_detail": {"headers": [f"Authorization: {header}"], "token": USER_TOKEN},
    }
    server.expect_request("/echo").respond_with_json(echo, status=401)
    server.expect_request("/html").respond_with_data(
        f"<p>{USER_TOKEN}</p>", status=500, content_type="text/html"
    )
    server.expect_request("/ok").respond_with_data(f"not json {USER_TOKEN}", status=200)
    t = transport(base_url(server), credential=user, retries=0)
    texts = [repr(t), str(t)]
    for path in ("/echo", "/html", "/ok"):
        with pytest.raises(HttpError) as info:
            t.request("GET", path)
        texts += [
            str(info.value),
            repr(info.value),
            info.value.error_description,
            json.dumps(info.value.error_detail),
        ]
    with pytest.raises(APIConnectionError) as conn:
        transport(f"http://127.0.0.1:{free_port()}", credential=user, retries=1).request(
            "GET", "/x"
        )
    texts += [str(conn.value), repr(conn.value)]
    texts += [record.getMessage() for record in caplog.records]
    assert any("GET" in record.getMessage() for record in caplog.records)
    blob = "\n".join(texts)
    for secret in (USER_TOKEN, header, header.split(" ")[1]):
        assert secret not in blob
    assert "***" in blob


def test_normalize_timeout() -> None:
    assert normalize_timeout(None) == (30.0, 30.0)
    assert normalize_timeout(3) == (3.0, 3.0)
    assert normalize_timeout((1, 20)) == (1.0, 20.0)
    for bad in (0, -1, float("inf"), (1,), (1, 0), "3", True):
        with pytest.raises(ValueError):
            normalize_timeout(bad)  # type: ignore[arg-type]


def test_proxy_environment_is_read_when_the_transport_is_made(
    server: HTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the test server plays the proxy: requests for http://api.abeja.test go to it
    server.expect_request(ANY).respond_with_json({"via": "proxy"})
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", base_url(server))
    t = transport("http://api.abeja.test")
    monkeypatch.delenv("HTTP_PROXY")  # later changes do not matter: read once
    assert t.request("GET", "/x") == {"via": "proxy"}
    [(request, _)] = server.log
    assert request.environ["REQUEST_URI"] == "http://api.abeja.test/x"
    # NO_PROXY is honoured: a direct connection (refused here), not the proxy
    monkeypatch.setenv("HTTP_PROXY", base_url(server))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with pytest.raises(APIConnectionError) as info:
        transport(f"http://127.0.0.1:{free_port()}", retries=0).request("GET", "/x")
    assert info.value.sent is False
    assert len(server.log) == 1
