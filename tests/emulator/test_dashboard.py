"""The emulator's dashboard over plain HTTP: login, every page, escaping, the poll endpoint, paging.

Each test talks to a real emulator on 127.0.0.1 with ``requests``, as a
browser would (cookies, redirects, headers); the browser itself is in
``test_dashboard_browser.py``.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

import pytest
import requests

from abeja_runtime.cli.emulator import _banner
from abeja_runtime.emulator import Emulator
from abeja_runtime.emulator.dashboard import (
    CONTENT_SECURITY_POLICY,
    JOBS_PER_PAGE,
    STATIC_DIR,
    session_value,
)

DEF = "demo"
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def login(fresh_emu: Emulator) -> requests.Session:
    session = requests.Session()
    response = session.post(
        f"{fresh_emu.url}/_dashboard/login", json={"token": fresh_emu.token}, timeout=30
    )
    assert response.status_code == 204, response.text
    return session


def make_job(fresh_emu: Emulator, name: str = DEF, **kwargs: Any) -> str:
    return fresh_emu.create_job(name, **kwargs)["TRAINING_JOB_ID"]


def post_statistics(
    fresh_emu: Emulator, job_id: str, statistics: dict[str, Any], name: str = DEF
) -> None:
    response = requests.post(
        f"{fresh_emu.url}/organizations/{fresh_emu.organization_id}/training/definitions/{name}/jobs/"
        f"{job_id}/statistics",
        json={"statistics": statistics},
        headers={"Authorization": f"Bearer {fresh_emu.token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def upload_model(
    fresh_emu: Emulator, job_id: str | None, data: bytes, **params: Any
) -> dict[str, Any]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.bin", data)
    buf.seek(0)
    if job_id is not None:
        params["training_job_id"] = job_id
    return fresh_emu.client().create_training_model(fresh_emu.organization_id, DEF, buf, params)


def page_paths(job_id: str, model_id: str) -> list[str]:
    return [
        "/",
        f"/definitions/{DEF}",
        f"/definitions/{DEF}/jobs/{job_id}",
        f"/definitions/{DEF}/compare?jobs={job_id}",
    ]


@pytest.fixture()
def seeded(fresh_emu: Emulator) -> dict[str, str]:
    job_id = make_job(fresh_emu, description="first run", environment={"LR": "0.1"})
    post_statistics(
        fresh_emu, job_id, {"epoch": 1, "num_epochs": 2, "stages": {"train": {"loss": 0.5}}}
    )
    model = upload_model(fresh_emu, job_id, b"weights", description="the model")
    return {"job": job_id, "model": model["training_model_id"]}


# -- login -------------------------------------------------------------------------


def test_every_page_needs_the_session_cookie(fresh_emu: Emulator, seeded: dict[str, str]) -> None:
    anonymous = requests.Session()
    for path in page_paths(seeded["job"], seeded["model"]):
        response = anonymous.get(fresh_emu.url + path, timeout=30)
        assert response.status_code == 401, path
        assert response.headers["Content-Type"].startswith("text/html")
        assert 'id="login-form"' in response.text
        # nothing of the store on the login page
        assert "first run" not in response.text and "0.5" not in response.text
        assert fresh_emu.token not in response.text
    api = f"/_dashboard/api/definitions/{DEF}/jobs/{seeded['job']}/statistics"
    response = anonymous.get(fresh_emu.url + api, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    download = f"/definitions/{DEF}/models/{seeded['model']}/download"
    response = anonymous.get(fresh_emu.url + download, allow_redirects=False, timeout=30)
    assert response.status_code == 401
    assert "Location" not in response.headers
    # a forged cookie (the raw token, or anything else) is not a session
    for forged in (fresh_emu.token, "0" * 64, session_value(fresh_emu.token, b"another key")):
        anonymous.cookies.set(f"abeja_emulator_dashboard_{fresh_emu.organization_id}", forged)
        assert anonymous.get(fresh_emu.url + "/", timeout=30).status_code == 401


def test_every_page_renders_with_the_cookie(fresh_emu: Emulator, seeded: dict[str, str]) -> None:
    session = login(fresh_emu)
    expected = {
        "/": [DEF],
        f"/definitions/{DEF}": [seeded["job"], seeded["model"], "first run", "the model"],
        f"/definitions/{DEF}/jobs/{seeded['job']}": ["first run", "LR", "0.1", "epoch 1/2"],
        f"/definitions/{DEF}/compare?jobs={seeded['job']}": [seeded["job"]],
    }
    for path, needles in expected.items():
        response = session.get(fresh_emu.url + path, timeout=30)
        assert response.status_code == 200, (path, response.text[:300])
        assert response.headers["Content-Type"].startswith("text/html")
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Cache-Control"] == "no-store"
        for needle in needles:
            assert needle in response.text, (path, needle)
        assert fresh_emu.token not in response.text


def test_login_sets_an_httponly_strict_cookie_that_is_not_the_token(fresh_emu: Emulator) -> None:
    response = requests.post(
        f"{fresh_emu.url}/_dashboard/login", json={"token": fresh_emu.token}, timeout=30
    )
    assert response.status_code == 204
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"abeja_emulator_dashboard_{fresh_emu.organization_id}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert fresh_emu.token not in cookie
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert len(value) == 64 and value != fresh_emu.token


def test_wrong_token_is_refused_and_sets_nothing(fresh_emu: Emulator) -> None:
    for body in ({"token": fresh_emu.token + "x"}, {"token": ""}, {"nope": 1}, ["x"]):
        response = requests.post(f"{fresh_emu.url}/_dashboard/login", json=body, timeout=30)
        assert response.status_code in (400, 401), body
        assert "Set-Cookie" not in response.headers
    response = requests.post(
        f"{fresh_emu.url}/_dashboard/login", data={"token": "wrong", "next": "/"}, timeout=30
    )
    assert response.status_code == 401
    assert "not this emulator" in response.text
    assert "Set-Cookie" not in response.headers


def test_form_login_redirects_to_next_but_never_off_site(fresh_emu: Emulator) -> None:
    cases = {
        "/definitions/x": "/definitions/x",
        "//evil.example/": "/",
        "https://evil.example/": "/",
        "/\\evil.example": "/",
    }
    for target, location in cases.items():
        response = requests.post(
            f"{fresh_emu.url}/_dashboard/login",
            data={"token": fresh_emu.token, "next": target},
            allow_redirects=False,
            timeout=30,
        )
        assert response.status_code == 303
        assert response.headers["Location"] == location, target
        assert "HttpOnly" in response.headers["Set-Cookie"]


def test_cross_origin_login_and_logout_are_refused(fresh_emu: Emulator) -> None:
    for path in ("/_dashboard/login", "/_dashboard/logout"):
        response = requests.post(
            fresh_emu.url + path,
            data={"token": fresh_emu.token},
            headers={"Origin": "http://evil.example"},
            allow_redirects=False,
            timeout=30,
        )
        assert response.status_code == 403, path
        assert "Set-Cookie" not in response.headers
        response = requests.post(
            fresh_emu.url + path,
            data={"token": fresh_emu.token},
            headers={"Sec-Fetch-Site": "cross-site"},
            allow_redirects=False,
            timeout=30,
        )
        assert response.status_code == 403, path


def test_logout_clears_the_cookie(fresh_emu: Emulator) -> None:
    session = login(fresh_emu)
    assert session.get(fresh_emu.url + "/", timeout=30).status_code == 200
    response = session.post(fresh_emu.url + "/_dashboard/logout", allow_redirects=False, timeout=30)
    assert response.status_code == 303
    assert session.get(fresh_emu.url + "/", timeout=30).status_code == 401


def test_a_non_loopback_host_header_is_refused(fresh_emu: Emulator) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own host name: no dashboard for it."""
    session = login(fresh_emu)
    response = session.get(fresh_emu.url + "/", headers={"Host": "evil.example"}, timeout=30)
    assert response.status_code == 403
    cookie = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    for host in (
        f"localhost:{fresh_emu.port}",
        f"127.0.0.1:{fresh_emu.port}",
        f"[::1]:{fresh_emu.port}",
    ):
        response = requests.get(
            fresh_emu.url + "/", headers={"Host": host, "Cookie": cookie}, timeout=30
        )
        assert response.status_code == 200, host


def test_session_survives_a_restart_on_the_same_data_dir(tmp_path: Any) -> None:
    with Emulator(data_dir=tmp_path) as first:
        cookies = login(first).cookies
    with Emulator(data_dir=tmp_path) as second:
        session = requests.Session()
        session.cookies.update(cookies)
        assert session.get(second.url + "/", timeout=30).status_code == 200


# -- content -------------------------------------------------------------------------


def test_values_from_the_store_are_escaped_everywhere(fresh_emu: Emulator) -> None:
    """Stored XSS: descriptions, environment, datasets, statistics and model fields are text."""
    job_id = make_job(
        fresh_emu,
        description=XSS,
        environment={"XSS": XSS, "PLAIN": "ok"},
        datasets={"train": "1234567890123"},
    )
    fresh_emu.set_job_status(DEF, job_id, "Active", None)
    post_statistics(
        fresh_emu,
        job_id,
        {
            "epoch": 1,
            "stages": {XSS: {"loss": 0.25, XSS: XSS}},
            XSS: {"nested": XSS},
            "note": XSS,
        },
    )
    model = upload_model(fresh_emu, job_id, b"m", description=XSS, metrics={XSS: XSS})
    session = login(fresh_emu)
    for path in page_paths(job_id, model["training_model_id"]):
        text = session.get(fresh_emu.url + path, timeout=30).text
        assert "<script>alert" not in text, path
        assert "<img src=x" not in text, path
        assert "onerror=alert(1)>" not in text, path
    job_page = session.get(f"{fresh_emu.url}/definitions/{DEF}/jobs/{job_id}", timeout=30).text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in job_page
    # the page's only scripts are our own files
    assert re.findall(r"<script[^>]*>", job_page) == [
        '<script src="/_dashboard/static/vendor/uplot/uPlot.iife.min.js" defer>',
        '<script src="/_dashboard/static/dashboard.js" defer>',
    ]


def test_invalid_and_unknown_paths(fresh_emu: Emulator, seeded: dict[str, str]) -> None:
    session = login(fresh_emu)
    cases = {
        "/definitions/nope": 404,
        f"/definitions/{DEF}/jobs/1234567890123": 404,
        f"/definitions/{DEF}/jobs/not-an-id": 400,
        "/definitions/%2E%2E": 400,
        "/definitions/a%2Fb": 400,
        f"/definitions/{DEF}/whatever": 404,
        f"/definitions/{DEF}?page=0": 400,
        f"/definitions/{DEF}?page=abc": 400,
        f"/definitions/{DEF}/compare?jobs=1234567890123": 404,
        f"/definitions/{DEF}/compare?jobs=x": 400,
        "/_dashboard/nothing": 404,
    }
    for path, status in cases.items():
        response = session.get(fresh_emu.url + path, timeout=30)
        assert response.status_code == status, (path, response.text[:200])
        assert response.headers["Content-Type"].startswith("text/html"), path
    assert session.post(fresh_emu.url + "/", timeout=30).status_code == 405


def test_the_api_still_answers_beside_the_dashboard(
    fresh_emu: Emulator, seeded: dict[str, str]
) -> None:
    base = f"{fresh_emu.url}/organizations/{fresh_emu.organization_id}/training/definitions/{DEF}"
    assert requests.get(base, timeout=30).status_code == 401
    response = requests.get(
        base, headers={"Authorization": f"Bearer {fresh_emu.token}"}, timeout=30
    )
    assert response.status_code == 200 and response.json()["name"] == DEF
    # the dashboard cookie is not an API credential
    session = login(fresh_emu)
    assert session.get(base, timeout=30).status_code == 401


def test_static_files_are_public_and_exactly_the_vendored_ones(fresh_emu: Emulator) -> None:
    for name in (
        "dashboard.js",
        "dashboard.css",
        "vendor/uplot/uPlot.iife.min.js",
        "vendor/uplot/uPlot.min.css",
        "vendor/uplot/LICENSE",
    ):
        response = requests.get(f"{fresh_emu.url}/_dashboard/static/{name}", timeout=30)
        assert response.status_code == 200, name
        assert response.content == (STATIC_DIR / name).read_bytes()
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    license_text = (STATIC_DIR / "vendor/uplot/LICENSE").read_text()
    assert "MIT License" in license_text
    for name in ("..%2Fdashboard.py", "vendor%2F..%2Fdashboard.py", "nope.js", "vendor"):
        response = requests.get(f"{fresh_emu.url}/_dashboard/static/{name}", timeout=30)
        assert response.status_code == 404, name


def test_model_download_link_redirects_to_a_fresh_signed_url(
    fresh_emu: Emulator, seeded: dict[str, str]
) -> None:
    session = login(fresh_emu)
    page = session.get(f"{fresh_emu.url}/definitions/{DEF}", timeout=30).text
    link = f"/definitions/{DEF}/models/{seeded['model']}/download"
    assert f'href="{link}"' in page
    response = session.get(fresh_emu.url + link, allow_redirects=False, timeout=30)
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.startswith(f"{fresh_emu.url}/_emulator/blobs/models/{seeded['model']}?")
    blob = requests.get(location, timeout=30)
    assert blob.status_code == 200
    with zipfile.ZipFile(io.BytesIO(blob.content)) as zf:
        assert zf.read("model.bin") == b"weights"


# -- the statistics poll ---------------------------------------------------------------


def test_statistics_endpoint_returns_exactly_the_history(fresh_emu: Emulator) -> None:
    job_id = make_job(fresh_emu)
    documents: list[dict[str, Any]] = [
        {
            "epoch": i // 3 + 1,
            "num_epochs": 4,
            "progress_percentage": (i + 1) / 12,
            "stages": {
                "train": {"loss": 1.0 / (i + 1), "accuracy": "NaN" if i == 4 else i / 12},
                **({"validation": {"loss": "Infinity" if i == 5 else 0.3}} if i % 3 == 2 else {}),
            },
            "lr": 0.001,
            "system": {"cpu_percent": 12.5, "gpus": [{"util": 3}]},
            "note": "text",
        }
        for i in range(12)
    ]
    documents.append({"epoch": 0, "stages": {"train": {"loss": 0.0}}})  # zeros are kept
    for doc in documents:
        post_statistics(fresh_emu, job_id, doc)
    session = login(fresh_emu)
    url = f"{fresh_emu.url}/_dashboard/api/definitions/{DEF}/jobs/{job_id}/statistics"
    body = session.get(url, params={"after": 0}, timeout=30).json()
    history = fresh_emu.statistics_history(DEF, job_id)
    assert [p["statistics"] for p in body["points"]] == [h["statistics"] for h in history]
    assert [p["statistics"] for p in body["points"]] == documents
    assert [p["received_at"] for p in body["points"]] == [h["received_at"] for h in history]
    seqs = [p["seq"] for p in body["points"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert body["next"] == seqs[-1] and body["more"] is False
    assert body["job"]["status"] == "Pending" and body["job"]["terminal"] is False
    # the cursor: only what is new
    assert session.get(url, params={"after": body["next"]}, timeout=30).json()["points"] == []
    tail = session.get(url, params={"after": seqs[9]}, timeout=30).json()
    assert [p["statistics"] for p in tail["points"]] == documents[10:]
    post_statistics(fresh_emu, job_id, {"epoch": 9})
    new = session.get(url, params={"after": body["next"]}, timeout=30).json()
    assert [p["statistics"] for p in new["points"]] == [{"epoch": 9}]
    # limit pages a long history; "more" says to ask again
    first = session.get(url, params={"after": 0, "limit": 5}, timeout=30).json()
    assert len(first["points"]) == 5 and first["more"] is True
    assert first["points"][-1]["seq"] == first["next"]
    # the job's status travels with the points
    fresh_emu.set_job_status(DEF, job_id, "Active")
    fresh_emu.set_job_status(DEF, job_id, "Complete")
    done = session.get(url, params={"after": new["next"]}, timeout=30).json()
    assert done["job"]["status"] == "Complete" and done["job"]["terminal"] is True
    assert done["job"]["completion_time"]


def test_statistics_endpoint_rejects_bad_queries(fresh_emu: Emulator) -> None:
    job_id = make_job(fresh_emu)
    other = make_job(fresh_emu, "other")
    session = login(fresh_emu)
    base = f"{fresh_emu.url}/_dashboard/api/definitions"
    cases = {
        f"{base}/{DEF}/jobs/{job_id}/statistics?after=-1": 400,
        f"{base}/{DEF}/jobs/{job_id}/statistics?after=x": 400,
        f"{base}/{DEF}/jobs/{job_id}/statistics?limit=0": 400,
        f"{base}/{DEF}/jobs/{job_id}/statistics?foo=1": 400,
        f"{base}/{DEF}/jobs/{other}/statistics": 404,  # another definition's job
        f"{base}/nope/jobs/{job_id}/statistics": 404,
        f"{base}/{DEF}/jobs/12/statistics": 400,
    }
    for url, status in cases.items():
        response = session.get(url, timeout=30)
        assert response.status_code == status, url
        assert response.json()["error_description"]
    assert session.post(f"{base}/{DEF}/jobs/{job_id}/statistics", timeout=30).status_code == 405


# -- paging --------------------------------------------------------------------------


def _job_ids(html: str) -> list[str]:
    return re.findall(r'name="jobs" value="(\d{13})"', html)


def test_jobs_versions_and_models_are_paged(fresh_emu: Emulator) -> None:
    total = JOBS_PER_PAGE * 2 + 7
    created = [make_job(fresh_emu) for _ in range(total)]  # one version per job, too
    session = login(fresh_emu)
    seen: list[str] = []
    page = 1
    while True:
        response = session.get(
            f"{fresh_emu.url}/definitions/{DEF}", params={"page": page}, timeout=30
        )
        assert response.status_code == 200
        ids = _job_ids(response.text)
        if not ids:
            break
        seen += ids
        assert f"page {page} of 3 ({total} in all)" in response.text
        page += 1
    assert page == 4
    assert seen == list(reversed(created))  # newest first, each once
    first = session.get(f"{fresh_emu.url}/definitions/{DEF}", timeout=30).text
    assert 'rel="next" href="/definitions/demo?page=2"' in first
    assert 'rel="prev"' not in first.split('aria-label="versions"')[0]
    last = session.get(f"{fresh_emu.url}/definitions/{DEF}?page=3&vpage=2", timeout=30).text
    assert len(_job_ids(last)) == 7
    assert 'rel="prev" href="/definitions/demo?page=2&amp;vpage=2"' in last
    # versions: 20 a page, newest first; the version pager keeps the job page
    version_numbers = re.findall(r'<tr><td class="num">(\d+)', last.split('id="versions"')[1])
    assert version_numbers == [str(n) for n in range(total - 20, total - 40, -1)]
    assert 'href="/definitions/demo?page=3&amp;vpage=3"' in last
    # past the end: an empty page, not an error
    beyond = session.get(f"{fresh_emu.url}/definitions/{DEF}?page=99", timeout=30)
    assert beyond.status_code == 200 and _job_ids(beyond.text) == []


def test_compare_takes_comma_lists_and_repeated_parameters(fresh_emu: Emulator) -> None:
    ids = [make_job(fresh_emu) for _ in range(3)]
    session = login(fresh_emu)
    for query in (f"jobs={ids[0]},{ids[1]}&jobs={ids[2]}", f"jobs={','.join(ids)}"):
        text = session.get(f"{fresh_emu.url}/definitions/{DEF}/compare?{query}", timeout=30).text
        assert re.findall(r'class="compare-job" data-job-id="(\d+)"', text) == ids
        for job_id in ids:
            assert f"/_dashboard/api/definitions/{DEF}/jobs/{job_id}/statistics" in text
    many = ",".join(make_job(fresh_emu) for _ in range(13))
    response = session.get(f"{fresh_emu.url}/definitions/{DEF}/compare?jobs={many}", timeout=30)
    assert response.status_code == 400
    empty = session.get(f"{fresh_emu.url}/definitions/{DEF}/compare", timeout=30)
    assert empty.status_code == 200 and "Pick jobs to compare" in empty.text


def test_definitions_page_counts(fresh_emu: Emulator) -> None:
    first = make_job(fresh_emu)
    make_job(fresh_emu)
    fresh_emu.set_job_status(DEF, first, "Active")
    make_job(fresh_emu, "second")
    session = login(fresh_emu)
    text = session.get(fresh_emu.url + "/", timeout=30).text
    rows = re.findall(r"<tr><td><a href=\"/definitions/([^\"]+)\">.*?</tr>", text)
    assert rows == [DEF, "second"]
    demo_row = text.split('href="/definitions/demo"')[1].split("</tr>")[0]
    assert re.findall(r'class="num">(\d+)<', demo_row) == ["2", "2", "0"]


# -- how people get there ----------------------------------------------------------------


def test_dashboard_url_holds_the_token_in_the_fragment_only(fresh_emu: Emulator) -> None:
    url = fresh_emu.dashboard_url
    assert url == f"{fresh_emu.url}/#token={fresh_emu.token}"
    before_fragment = url.split("#", 1)[0]
    assert fresh_emu.token not in before_fragment
    link = fresh_emu.dashboard_link(f"/definitions/{DEF}")
    assert link == f"{fresh_emu.url}/definitions/{DEF}#token={fresh_emu.token}"
    with pytest.raises(ValueError):
        fresh_emu.dashboard_link("definitions")
    # what a browser sends for that URL (no fragment) shows the login page
    assert requests.get(before_fragment, timeout=30).status_code == 401


def test_emulator_banner_prints_the_dashboard_url(fresh_emu: Emulator) -> None:
    banner = _banner(fresh_emu)
    assert f"dashboard:       {fresh_emu.dashboard_url}" in banner


def test_login_json_body_is_bounded(fresh_emu: Emulator) -> None:
    response = requests.post(
        f"{fresh_emu.url}/_dashboard/login",
        data=json.dumps({"token": "x" * 10_000}),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400


HANDLER = """
import os

import requests


def handler(context):
    base = os.environ["ABEJA_API_URL"]
    session = requests.Session()
    login = session.post(
        base + "/_dashboard/login", json={"token": os.environ["PLATFORM_AUTH_TOKEN"]}, timeout=30
    )
    name = os.environ["TRAINING_JOB_DEFINITION_NAME"]
    page = session.get(f"{base}/definitions/{name}/jobs/{os.environ['TRAINING_JOB_ID']}", timeout=30)
    print("dashboard-check", login.status_code, page.status_code, "status-Active" in page.text)
"""


@pytest.mark.parametrize("live", [False, True])
def test_run_prints_the_job_dashboard_of_its_embedded_emulator(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, live: bool
) -> None:
    """``abeja-runtime run`` on its own emulator: the job's live page, served while it runs.

    The link that logs in holds the token, so only a terminal gets it.
    """
    from abeja_runtime.runner import run_handler
    from abeja_runtime.runner.api_target import CREDENTIAL_ENV_NAMES

    for name in (*CREDENTIAL_ENV_NAMES, "ABEJA_API_URL", "ABEJA_ORGANIZATION_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ABEJA_RUNTIME_EMULATOR_DIR", str(tmp_path / "emulator"))
    source = tmp_path / "proj"
    source.mkdir()
    (source / "train.py").write_text(HANDLER, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    result = run_handler(
        "train:handler",
        source=source,
        result_dir=tmp_path / "result",
        stdout=out,
        stderr=err,
        live=live,
        handle_signals=False,
    )
    text = out.getvalue()
    assert result.status == "Complete", (text, err.getvalue())
    assert "dashboard-check 204 200 True" in text  # the page was live during the run
    lines = [line for line in text.splitlines() if "live dashboard: " in line]
    assert len(lines) == 1, text
    path = f"/definitions/proj/jobs/{result.training_job_id}"
    with Emulator(data_dir=tmp_path / "emulator") as fresh_emu:
        token = fresh_emu.token
    assert re.search(r"live dashboard: http://127\.0\.0\.1:\d+" + re.escape(path), lines[0])
    if live:
        assert lines[0].endswith(f"{path}#token={token}")
    else:
        assert token not in text + err.getvalue()


@pytest.mark.parametrize(
    ("statistics", "value", "text"),
    [
        ({"epoch": 2, "num_epochs": 8}, "0.25", "epoch 2/8"),  # epochs only: the bar still fills
        ({"epoch": 3, "num_epochs": 3}, "1.0", "epoch 3/3"),
        ({"epoch": 1, "num_epochs": 4, "progress_percentage": 0.5}, "0.5", "50 %"),
        ({"epoch": 1}, "0", "epoch 1"),
        ({"epoch": 0, "num_epochs": 0}, "0", "epoch 0/0"),  # no division by zero
    ],
)
def test_progress_bar_falls_back_to_epoch_over_num_epochs(
    fresh_emu: Emulator, statistics: dict[str, Any], value: str, text: str
) -> None:
    job_id = make_job(fresh_emu)
    fresh_emu.client().update_statistics(fresh_emu.organization_id, DEF, job_id, statistics)
    html = login(fresh_emu).get(f"{fresh_emu.url}/definitions/{DEF}/jobs/{job_id}", timeout=30).text
    assert f'<progress id="job-progress" max="1" value="{value}">' in html
    assert text in html


def test_latest_statistics_give_each_list_element_rows_of_its_own(fresh_emu: Emulator) -> None:
    job_id = make_job(fresh_emu)
    gpus = [{"index": 1, "uuid": "GPU-b", "utilization_percent": 97, "power_w": 287.4}]
    fresh_emu.client().update_statistics(
        fresh_emu.organization_id,
        DEF,
        job_id,
        {"epoch": 1, "system": {"gpus": gpus, "tags": [1, 2]}},
    )
    html = login(fresh_emu).get(f"{fresh_emu.url}/definitions/{DEF}/jobs/{job_id}", timeout=30).text
    assert "<td>system.gpus[0].utilization_percent</td><td>97</td>" in html
    assert "<td>system.gpus[0].power_w</td><td>287.4</td>" in html
    assert "<td>system.tags</td><td>[1, 2]</td>" in html  # a list of numbers stays one value
