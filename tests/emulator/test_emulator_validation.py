"""The emulator refuses bad requests clearly and stores nothing for them.

Auth (401/403), routing (404/405), malformed bodies, unknown fields, wrong
types, oversized statistics and hostile names, over raw HTTP.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from abeja_runtime.emulator import Emulator
from abeja_runtime.emulator.validation import MAX_STATISTICS_BYTES

from tests.support.emulator_support import Api


@pytest.fixture(scope="module")
def emu(emu: Emulator) -> Emulator:
    """The module's emulator (tests/conftest.py), with a definition, version and job "base"."""
    api = Api(emu)
    api.definition("base")
    api.version("base")
    emu.base_job = api.job("base")["id"]  # type: ignore[attr-defined]
    api.close()
    return emu


@pytest.fixture
def api(emu: Emulator) -> Iterator[Api]:
    client = Api(emu)
    yield client
    client.close()


def _definition_count(api: Api) -> int:
    return int(api.ok("GET", "/definitions/", params={"limit": 1000})["total"])


def _raw(emu: Emulator, method: str, raw_path: str, body: bytes = b"") -> tuple[int, dict]:
    """A request with the path sent byte for byte (requests would normalise '..')."""
    parts = urlsplit(emu.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {emu.token}", "Content-Type": "application/json"}
        conn.request(method, raw_path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# -- authentication and organizations ------------------------------------------


def test_missing_or_wrong_credential_is_401(emu: Emulator) -> None:
    url = f"{emu.url}/organizations/{emu.organization_id}/training/definitions/"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {emu.token}x"},
        {"Authorization": "Token abc"},
        {"Authorization": "Basic !!!not-base64"},
    ):
        response = requests.get(url, headers=headers, timeout=30)
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
        assert emu.token not in response.text
    wrong_user = requests.get(url, auth=(f"user-{emu.user_id}", "nope"), timeout=30).status_code
    wrong_id = requests.get(
        url, auth=("user-1000000000000", emu.personal_access_token), timeout=30
    ).status_code
    assert wrong_user == wrong_id == 401


def test_bearer_and_user_basic_auth_are_accepted(emu: Emulator) -> None:
    bearer = Api(emu)
    basic = Api(emu, auth=(f"user-{emu.user_id}", emu.personal_access_token))
    assert bearer.ok("GET", "/definitions/base")["name"] == "base"
    assert basic.ok("GET", "/definitions/base")["name"] == "base"
    bearer.close()
    basic.close()


def test_other_organization_is_403(emu: Emulator) -> None:
    other = "1" * 13 if emu.organization_id != "1" * 13 else "2" * 13
    response = requests.get(
        f"{emu.url}/organizations/{other}/training/definitions/base",
        headers={"Authorization": f"Bearer {emu.token}"},
        timeout=30,
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


def test_auth_checked_before_names(emu: Emulator) -> None:
    response = requests.get(
        f"{emu.url}/organizations/{emu.organization_id}/training/definitions/%2e%2e", timeout=30
    )
    assert response.status_code == 401


# -- routing -------------------------------------------------------------------


def test_unknown_route_is_404_and_wrong_method_405(api: Api, emu: Emulator) -> None:
    api.err(404, "GET", "/nothing-here")
    # "/" is the dashboard (issue 9): unknown paths outside it are still the API's 404
    assert requests.get(f"{emu.url}/nothing-here", timeout=30).status_code == 404
    body = api.err(405, "PUT", "/definitions/base")
    assert "DELETE" in body["error_description"]
    response = api.call("DELETE", "/definitions/base/jobs")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


# -- names and ids ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../etc", "a/b", "a\\b", "..", ".hidden", "-x", "a b", "tab\tname", "nul\x00", "x" * 256, ""],
)
def test_bad_definition_names_are_400_and_not_stored(api: Api, name: str) -> None:
    before = _definition_count(api)
    body = api.err(400, "POST", "/definitions/", json={"name": name})
    assert "name" in body["error_description"]
    assert _definition_count(api) == before


@pytest.mark.parametrize("raw_segment", ["..", "a%2Fb", "%2e%2e", "a%00b", "%0a", "a%20b", "%ff"])
def test_bad_names_in_the_path_are_400(emu: Emulator, raw_segment: str) -> None:
    status, body = _raw(
        emu, "GET", f"/organizations/{emu.organization_id}/training/definitions/{raw_segment}"
    )
    assert status == 400, body
    assert body["error"] == "bad_request"


@pytest.mark.parametrize(
    "path",
    [
        "/definitions/base/versions/0",
        "/definitions/base/versions/x",
        "/definitions/base/versions/-1",
        "/definitions/base/jobs/123",
        "/definitions/base/models/abcdefghijklm",
    ],
)
def test_malformed_ids_are_400(api: Api, path: str) -> None:
    api.err(400, "GET", path)


def test_well_formed_unknown_ids_are_404(api: Api) -> None:
    api.err(404, "GET", "/definitions/base/versions/99")
    api.err(404, "GET", "/definitions/base/jobs/1000000000000")
    api.err(404, "GET", "/definitions/base/models/1000000000000")
    api.err(404, "GET", "/definitions/missing/jobs")


# -- JSON bodies -------------------------------------------------------------------


def test_non_json_bodies_are_400(api: Api) -> None:
    before = _definition_count(api)
    headers = {"Content-Type": "application/json"}
    for body in (b"{not json", b'{"name": NaN}', b"\xff\xfe", b'"just a string"', b"[1]"):
        api.err(400, "POST", "/definitions/", data=body, headers=headers)
    body = api.err(
        400, "POST", "/definitions/", data=b'{"name": "x"}', headers={"Content-Type": "text/plain"}
    )
    assert "application/json" in body["error_description"]
    api.err(400, "POST", "/definitions/", data=b"[" * 100_000 + b"]" * 100_000, headers=headers)
    assert _definition_count(api) == before


def test_unknown_fields_and_wrong_types_are_400(api: Api) -> None:
    before = _definition_count(api)
    body = api.err(400, "POST", "/definitions/", json={"name": "ok-name", "colour": "red"})
    assert "colour" in body["error_description"]
    api.err(400, "POST", "/definitions/", json={"name": 12})
    api.err(400, "POST", "/definitions/", json={})
    assert _definition_count(api) == before

    jobs_before = api.ok("GET", "/definitions/base/jobs")["total"]
    for bad in (
        {"environment": "A=1"},
        {"environment": {"1BAD": "x"}},
        {"environment": {"A": {"nested": 1}}},
        {"environment": {"A": None}},
        {"datasets": {"train": 1234567890123}},
        {"datasets": ["1234567890123"]},
        {"instance_type": "huge"},
        {"instance_type": "cpu-0"},
        {"instance_type": 4},
        {"description": 5},
        {"export_log": "yes"},
        {"user_parameters": {"A": 1}},
    ):
        api.err(400, "POST", "/definitions/base/versions/1/jobs", json=bad)
    assert api.ok("GET", "/definitions/base/jobs")["total"] == jobs_before

    api.err(400, "PATCH", "/definitions/base/versions/1", json={})
    api.err(400, "PATCH", "/definitions/base/versions/1", json={"description": 1})
    api.err(400, "PATCH", "/definitions/base/versions/1", json={"description": "x", "y": 1})
    # operations without a body take none or {}
    api.err(400, "POST", "/definitions/base/archive", json={"force": True})
    api.err(400, "GET", "/definitions/", params={"filter_archived": "true"})
    api.err(400, "GET", "/definitions/", params={"limit": 0})
    api.err(400, "GET", "/definitions/", params={"limit": "ten"})
    api.err(400, "GET", "/definitions/", params={"offset": -1})
    api.err(400, "GET", "/definitions/", params={"page": 2})
    api.err(400, "GET", "/definitions/base", params={"include_jobs": "yes"})


def test_status_extension_validation(api: Api, emu: Emulator) -> None:
    job = emu.base_job  # type: ignore[attr-defined]
    for bad in ({}, {"status": "Running"}, {"status": "Pending"}, {"status": "Active", "x": 1}):
        api.err(400, "POST", f"/definitions/base/jobs/{job}/status", json=bad)
    assert api.ok("GET", f"/definitions/base/jobs/{job}")["status"] == "Pending"


# -- statistics --------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        None,
        [],
        "loss=1",
        {"epoch": "1"},
        {"epoch": 1.5},
        {"epoch": -1},
        {"epoch": True},
        {"num_epochs": "ten"},
        {"progress_percentage": 50},
        {"progress_percentage": -0.1},
        {"progress_percentage": "half"},
        {"stages": []},
        {"stages": {"train": 0.5}},
        {"stages": {"train": {"loss": "low"}}},
        {"stages": {"train": {"accuracy": [1]}}},
    ],
)
def test_bad_statistics_are_400_and_not_recorded(api: Api, emu: Emulator, document: object) -> None:
    job = emu.base_job  # type: ignore[attr-defined]
    before = len(emu.statistics_history("base", job))
    api.err(400, "POST", f"/definitions/base/jobs/{job}/statistics", json={"statistics": document})
    assert len(emu.statistics_history("base", job)) == before


def test_statistics_envelope_and_tokens(api: Api, emu: Emulator) -> None:
    job = emu.base_job  # type: ignore[attr-defined]
    path = f"/definitions/base/jobs/{job}/statistics"
    before = len(emu.statistics_history("base", job))
    api.err(400, "POST", path, json={"epoch": 1})  # not wrapped in "statistics"
    api.err(400, "POST", path, json={"statistics": {}, "extra": 1})
    api.err(400, "POST", path)  # no body
    headers = {"Content-Type": "application/json"}
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"statistics": {"stages": {"train": {"loss": ' + token + b"}}}}"
        answer = api.err(400, "POST", path, data=body, headers=headers)
        assert '"NaN"' in answer["error_description"]
    assert len(emu.statistics_history("base", job)) == before


def test_statistics_size_limit(api: Api, emu: Emulator) -> None:
    job = emu.base_job  # type: ignore[attr-defined]
    path = f"/definitions/base/jobs/{job}/statistics"
    before = len(emu.statistics_history("base", job))
    big = {"statistics": {"blob": "x" * MAX_STATISTICS_BYTES}}
    body = api.err(400, "POST", path, json=big)
    assert str(MAX_STATISTICS_BYTES) in body["error_description"]
    fits = {"statistics": {"blob": "x" * (MAX_STATISTICS_BYTES - 100)}}
    api.ok("POST", path, json=fits)
    assert len(emu.statistics_history("base", job)) == before + 1


# -- uploads -------------------------------------------------------------------


def test_bad_version_uploads_store_nothing(api: Api, emu: Emulator) -> None:
    api.definition("upl")
    path = "/definitions/upl/versions"
    zip_part = ("source_code.zip", b"PK\x05\x06" + b"\x00" * 18, "application/zip")

    def params(value: object) -> tuple[str, bytes, str]:
        return ("params.json", json.dumps(value).encode(), "application/json")

    cases = [
        {"source_code": zip_part},  # no parameters
        {"parameters": params({"handler": "train:handler"})},  # no source
        {"source_code": zip_part, "parameters": params({})},  # no handler
        {"source_code": zip_part, "parameters": params({"handler": "train"})},
        {"source_code": zip_part, "parameters": params({"handler": "a:b:c"})},
        {"source_code": zip_part, "parameters": params({"handler": "t:h", "gpu": 1})},
        {"source_code": zip_part, "parameters": params({"handler": "t:h", "image": "bad"})},
        {"source_code": zip_part, "parameters": params({"handler": "t:h", "environment": []})},
        {"source_code": zip_part, "parameters": ("params.json", b"{oops", "application/json")},
        {
            "source_code": zip_part,
            "parameters": params({"handler": "t:h"}),
            "extra": ("x.bin", b"x", "application/octet-stream"),
        },
    ]
    for files in cases:
        api.err(400, "POST", path, files=files)
    api.err(400, "POST", path, json={"handler": "train:handler"})  # not multipart
    assert api.ok("GET", path)["entries"] == []
    store = emu._store  # the tmp dir of uploads in progress is empty again
    assert store is not None and list(store.tmp_dir.iterdir()) == []


def test_base64_garbage_in_basic_auth_does_not_crash(emu: Emulator) -> None:
    url = f"{emu.url}/organizations/{emu.organization_id}/training/definitions/"
    token = base64.b64encode(b"\xff\xfe:\x00").decode()
    response = requests.get(url, headers={"Authorization": f"Basic {token}"}, timeout=30)
    assert response.status_code == 401
