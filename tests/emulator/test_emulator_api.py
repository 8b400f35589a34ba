"""The emulator serves every Training API operation with the platform's semantics.

Raw HTTP with ``requests`` against a real emulator on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest
import requests

from abeja_runtime.emulator import Emulator
from abeja_runtime.errors import BadRequest, Conflict, NotFound

from tests.support.emulator_support import Api

ISO_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
ID_RE = re.compile(r"[1-9]\d{12}")


@pytest.fixture
def api(emu: Emulator) -> Iterator[Api]:
    client = Api(emu)
    yield client
    client.close()


def _unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


def test_identity_is_platform_shaped(emu: Emulator) -> None:
    assert ID_RE.fullmatch(emu.organization_id)
    assert ID_RE.fullmatch(emu.user_id)
    assert emu.url.startswith("http://127.0.0.1:")
    assert emu.token not in repr(emu)
    assert emu.personal_access_token not in repr(emu)


def test_definition_lifecycle(api: Api, emu: Emulator) -> None:
    name = _unique("def")
    created = api.definition(name)
    assert created["name"] == name
    assert created["organization_id"] == emu.organization_id
    assert ID_RE.fullmatch(created["job_definition_id"])
    assert created["version_count"] == 0 and created["model_count"] == 0
    assert created["versions"] == [] and created["archived"] is False
    assert ISO_RE.fullmatch(created["created_at"]) and ISO_RE.fullmatch(created["modified_at"])

    # unique per organization
    api.err(409, "POST", "/definitions/", json={"name": name})
    # also reachable without the trailing slash
    api.err(409, "POST", "/definitions", json={"name": name})

    got = api.ok("GET", f"/definitions/{name}")
    assert got["jobs"] == []  # include_jobs defaults to true
    assert "jobs" not in api.ok("GET", f"/definitions/{name}", params={"include_jobs": "false"})

    assert api.ok("POST", f"/definitions/{name}/archive", json={})["message"]
    assert api.ok("GET", f"/definitions/{name}")["archived"] is True
    api.ok("POST", f"/definitions/{name}/archive", json={})  # idempotent
    api.ok("POST", f"/definitions/{name}/unarchive", json={})
    assert api.ok("GET", f"/definitions/{name}")["archived"] is False

    assert api.ok("DELETE", f"/definitions/{name}") == {"message": f"{name} deleted"}
    api.err(404, "GET", f"/definitions/{name}")


def test_definition_list_paging_and_filter_archived(emu: Emulator) -> None:
    # a fresh emulator, so that totals are exact
    with Emulator() as fresh:
        api = Api(fresh)
        names = [f"d{i:02d}" for i in range(13)]
        for name in names:
            api.definition(name)
        for name in names[:3]:
            api.ok("POST", f"/definitions/{name}/archive", json={})

        page = api.ok("GET", "/definitions/")
        assert (page["limit"], page["offset"], page["total"]) == (10, 0, 13)
        assert [d["name"] for d in page["entries"]] == names[:10]
        page = api.ok("GET", "/definitions/", params={"offset": 10, "limit": 5})
        assert [d["name"] for d in page["entries"]] == names[10:]

        kept = api.ok("GET", "/definitions/", params={"filter_archived": "exclude_archived"})
        assert kept["total"] == 10
        assert all(not d["archived"] for d in kept["entries"])
        everything = api.ok(
            "GET", "/definitions/", params={"filter_archived": "include_archived", "limit": 100}
        )
        assert everything["total"] == 13
        assert {d["name"] for d in everything["entries"] if d["archived"]} == set(names[:3])
        api.close()


def test_versions(api: Api) -> None:
    name = _unique("ver")
    api.definition(name)
    source = b"source-zip-bytes"
    v1 = api.version(
        name,
        {
            "handler": "train:handler",
            "image": "abeja-inc/all-gpu:19.04",
            "environment": {"BATCH_SIZE": 32, "MODE": "fast"},
            "description": "first",
        },
        source=source,
    )
    assert v1["job_definition_version"] == 1
    assert v1["handler"] == "train:handler"
    assert v1["image"] == "abeja-inc/all-gpu:19.04"
    assert v1["environment"] == {"BATCH_SIZE": 32, "MODE": "fast"}
    assert v1["description"] == "first" and v1["archived"] is False
    assert v1["user_parameters"] == {} and v1["datasets"] == {}
    v2 = api.version(name)
    v3 = api.version(name)
    assert [v2["job_definition_version"], v3["job_definition_version"]] == [2, 3]
    assert api.ok("GET", f"/definitions/{name}")["version_count"] == 3

    # numbers are never reused
    assert api.ok("DELETE", f"/definitions/{name}/versions/3") == {"message": "deleted"}
    assert api.version(name)["job_definition_version"] == 4
    api.err(404, "GET", f"/definitions/{name}/versions/3")

    patched = api.ok("PATCH", f"/definitions/{name}/versions/2", json={"description": "new"})
    assert patched["description"] == "new"
    assert api.ok("GET", f"/definitions/{name}/versions/2")["description"] == "new"

    assert api.ok("POST", f"/definitions/{name}/versions/2/archive") == {"message": "archived"}
    listed = api.ok("GET", f"/definitions/{name}/versions")["entries"]
    assert [v["job_definition_version"] for v in listed] == [1, 2, 4]
    kept = api.ok(
        "GET", f"/definitions/{name}/versions", params={"filter_archived": "exclude_archived"}
    )["entries"]
    assert [v["job_definition_version"] for v in kept] == [1, 4]
    assert api.ok("POST", f"/definitions/{name}/versions/2/unarchive") == {"message": "unarchived"}

    # a definition with versions cannot be deleted
    body = api.err(409, "DELETE", f"/definitions/{name}")
    assert "version" in body["error_description"]


def test_jobs_statuses_and_paging(api: Api, emu: Emulator) -> None:
    name = _unique("job")
    api.definition(name)
    api.version(name, {"handler": "train:handler", "datasets": {"train": "1111111111111"}})
    job = api.job(
        name,
        environment={"EPOCHS": 3},
        datasets={"val": "2222222222222"},
        instance_type="gpu:b-4",
        description="try",
        export_log=True,
    )
    assert job["status"] == "Pending"
    assert job["training_job_id"] == job["id"] and ID_RE.fullmatch(job["id"])
    assert job["environment"] == {"EPOCHS": 3}
    assert job["datasets"] == {"train": "1111111111111", "val": "2222222222222"}
    assert job["instance_type"] == "gpu:b-4" and job["exec_env"] == "cloud"
    assert job["statistics"] is None and job["start_time"] is None
    assert job["creator"]["id"] == emu.user_id
    default = api.job(name)
    assert default["instance_type"] == "cpu-1"

    # a version with jobs cannot be deleted
    api.err(409, "DELETE", f"/definitions/{name}/versions/1")

    job_id = job["id"]
    # the runner's status extension: legal transitions only
    api.err(409, "POST", f"/definitions/{name}/jobs/{job_id}/status", json={"status": "Complete"})
    active = api.ok("POST", f"/definitions/{name}/jobs/{job_id}/status", json={"status": "Active"})
    assert active["status"] == "Active" and ISO_RE.fullmatch(active["start_time"])
    assert active["completion_time"] is None
    api.err(409, "POST", f"/definitions/{name}/jobs/{job_id}/status", json={"status": "Active"})
    done = api.ok(
        "POST",
        f"/definitions/{name}/jobs/{job_id}/status",
        json={"status": "Complete", "status_message": "all good"},
    )
    assert done["status"] == "Complete" and done["status_message"] == "all good"
    assert ISO_RE.fullmatch(done["completion_time"])
    assert done["completion_time"] >= done["start_time"]

    # stop only from Pending/Active
    body = api.err(409, "POST", f"/definitions/{name}/jobs/{job_id}/stop")
    assert "Complete" in body["error_description"]
    stopped = api.ok("POST", f"/definitions/{name}/jobs/{default['id']}/stop")
    assert stopped == {"message": f"{name}:{default['id']} stopped"}
    after = api.ok("GET", f"/definitions/{name}/jobs/{default['id']}")
    assert after["status"] == "Stopped" and after["completion_time"] is not None
    api.err(409, "POST", f"/definitions/{name}/jobs/{default['id']}/stop")

    # paging: newest first, server default limit 10
    ids = [api.job(name)["id"] for _ in range(10)]
    page = api.ok("GET", f"/definitions/{name}/jobs")
    assert (page["limit"], page["offset"], page["total"]) == (10, 0, 12)
    assert [j["id"] for j in page["entries"]] == ids[::-1]
    rest = api.ok("GET", f"/definitions/{name}/jobs", params={"offset": 10})
    assert [j["id"] for j in rest["entries"]] == [default["id"], job_id]

    api.ok("POST", f"/definitions/{name}/jobs/{job_id}/archive", json={})
    kept = api.ok(
        "GET",
        f"/definitions/{name}/jobs",
        params={"filter_archived": "exclude_archived", "limit": 100},
    )
    assert kept["total"] == 11 and job_id not in {j["id"] for j in kept["entries"]}
    api.ok("POST", f"/definitions/{name}/jobs/{job_id}/unarchive", json={})
    assert api.ok("GET", f"/definitions/{name}/jobs/{job_id}")["archived"] is False

    # include_jobs lists them on the definition
    assert len(api.ok("GET", f"/definitions/{name}")["jobs"]) == 12


def test_create_job_exec_env_extension(api: Api) -> None:
    name = _unique("execenv")
    api.definition(name)
    api.version(name)
    assert api.job(name, exec_env="local")["exec_env"] == "local"
    assert api.job(name)["exec_env"] == "cloud"
    api.err(400, "POST", f"/definitions/{name}/versions/1/jobs", json={"exec_env": "mars"})


def test_no_new_jobs_on_archived_version(api: Api) -> None:
    name = _unique("arch")
    api.definition(name)
    api.version(name)
    api.ok("POST", f"/definitions/{name}/versions/1/archive")
    api.err(409, "POST", f"/definitions/{name}/versions/1/jobs", json={})
    api.ok("POST", f"/definitions/{name}/versions/1/unarchive")
    api.ok("POST", f"/definitions/{name}/archive", json={})
    api.err(409, "POST", f"/definitions/{name}/versions/1/jobs", json={})


def test_statistics_replace_and_history(api: Api, emu: Emulator) -> None:
    name = _unique("stats")
    api.definition(name)
    api.version(name)
    job_id = api.job(name)["id"]
    docs = [
        {"epoch": 0, "num_epochs": 2, "progress_percentage": 0, "stages": {"train": {"loss": 0.0}}},
        {
            "epoch": 1,
            "num_epochs": 2,
            "progress_percentage": 0.5,
            "stages": {"train": {"loss": "NaN", "accuracy": 1}},
            "lr": 0.001,
        },
    ]
    for doc in docs:
        answer = api.ok(
            "POST", f"/definitions/{name}/jobs/{job_id}/statistics", json={"statistics": doc}
        )
        assert answer == {"statistics": doc}
    # the job holds the latest document, zeros included
    assert api.ok("GET", f"/definitions/{name}/jobs/{job_id}")["statistics"] == docs[-1]
    history = emu.statistics_history(name, job_id)
    assert [h["statistics"] for h in history] == docs
    assert all(ISO_RE.fullmatch(h["received_at"]) for h in history)
    assert history[0]["received_at"] <= history[1]["received_at"]


def test_models_result_and_signed_downloads(api: Api, emu: Emulator) -> None:
    name = _unique("model")
    api.definition(name)
    api.version(name)
    job = api.job(name)
    api.err(404, "GET", f"/definitions/{name}/jobs/{job['id']}/result")

    data = b"\x00model\xff" * 1000
    model = api.model(
        name,
        data,
        {
            "training_job_id": job["id"],
            "description": "best",
            "user_parameters": {"lr": 0.1},
            "metrics": {"acc": 0.9},
        },
    )
    assert model["training_model_id"] == model["id"] and ID_RE.fullmatch(model["id"])
    assert model["training_job_id"] == job["id"]
    assert model["size"] == len(data)
    assert model["sha256"] == hashlib.sha256(data).hexdigest()
    assert model["exec_env"] == "cloud" and model["archived"] is False
    assert (model["description"], model["user_parameters"], model["metrics"]) == (
        "best",
        {"lr": 0.1},
        {"acc": 0.9},
    )
    loose = api.model(name, b"pretrained")
    assert loose["training_job_id"] is None and loose["exec_env"] == "none"
    assert api.ok("GET", f"/definitions/{name}")["model_count"] == 2

    assert api.ok("GET", f"/definitions/{name}/models/{model['id']}") == model
    patched = api.ok(
        "PATCH", f"/definitions/{name}/models/{model['id']}", json={"description": "x"}
    )
    assert patched["description"] == "x"
    assert api.ok("POST", f"/definitions/{name}/models/{loose['id']}/archive") == {
        "message": f"{name}:{loose['id']} archived"
    }
    all_models = api.ok("GET", f"/definitions/{name}/models")["entries"]
    assert [m["id"] for m in all_models] == [model["id"], loose["id"]]
    kept = api.ok(
        "GET", f"/definitions/{name}/models", params={"filter_archived": "exclude_archived"}
    )["entries"]
    assert [m["id"] for m in kept] == [model["id"]]
    api.ok("POST", f"/definitions/{name}/models/{loose['id']}/unarchive")

    # download: a signed URL fetched without any credential
    uri = api.ok("GET", f"/definitions/{name}/models/{model['id']}/download")["download_uri"]
    assert urlsplit(uri).netloc == urlsplit(emu.url).netloc
    fetched = requests.get(uri, timeout=30)
    assert fetched.status_code == 200 and fetched.content == data
    # the result is the job's latest model
    newer = api.model(name, b"newer", {"training_job_id": job["id"]})
    result = api.ok("GET", f"/definitions/{name}/jobs/{job['id']}/result")
    assert requests.get(result["artifacts"]["complete"]["uri"], timeout=30).content == b"newer"
    assert newer["id"] in result["artifacts"]["complete"]["uri"]

    # tampering: another model id, another expiry, another signature
    tampered = [
        uri.replace(model["id"], loose["id"]),
        re.sub(r"expires=(\d+)", lambda m: f"expires={int(m.group(1)) + 1}", uri),
        uri[:-4] + ("0000" if not uri.endswith("0000") else "1111"),
        uri.split("?")[0],
    ]
    for bad in tampered:
        response = requests.get(bad, timeout=30)
        assert response.status_code == 403, bad
        assert response.json()["error"] == "forbidden"

    # models of a definition block its deletion
    api.err(409, "DELETE", f"/definitions/{name}")
    # the job must belong to the definition
    api.err(
        400,
        "POST",
        f"/definitions/{name}/models",
        files={
            "model_data": ("model_data.zip", b"x", "application/zip"),
            "parameters": (
                "params.json",
                b'{"training_job_id": "1000000000000"}',
                "application/json",
            ),
        },
    )


def test_signed_url_expires() -> None:
    with Emulator(signed_url_ttl=1.0) as emu:
        api = Api(emu)
        api.definition("exp")
        model = api.model("exp", b"abc")
        uri = api.ok("GET", f"/definitions/exp/models/{model['id']}/download")["download_uri"]
        assert requests.get(uri, timeout=30).status_code == 200
        deadline = time.monotonic() + 30
        while True:
            response = requests.get(uri, timeout=30)
            if response.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status_code == 403
        assert "expired" in response.json()["error_description"]
        api.close()


def test_python_api_create_job_environment(emu: Emulator) -> None:
    name = _unique("pyjob")
    env = emu.create_job(
        name,
        environment={"BATCH_SIZE": 50, "FLAG": True, "NAME": "x"},
        datasets={"train": "1234567890123"},
        handler="pkg.train:main",
        instance_type="cpu-2",
    )
    assert env["ABEJA_ORGANIZATION_ID"] == emu.organization_id
    assert env["TRAINING_JOB_DEFINITION_NAME"] == name
    assert env["TRAINING_JOB_DEFINITION_VERSION"] == "1"
    assert ID_RE.fullmatch(env["TRAINING_JOB_ID"])
    assert env["PLATFORM_AUTH_TOKEN"] == emu.token
    assert env["ABEJA_API_URL"] == emu.url
    assert env["HANDLER"] == "pkg.train:main"
    assert env["DATASETS"] == '{"train":"1234567890123"}'
    assert env["CONTEXT"] == "{}"
    assert (env["BATCH_SIZE"], env["FLAG"], env["NAME"]) == ("50", "true", "x")
    assert "ABEJA_TRAINING_RESULT_DIR" not in env
    assert all(isinstance(value, str) for value in env.values())

    # the definition is reused, with a new version
    again = emu.create_job(name)
    assert again["TRAINING_JOB_DEFINITION_VERSION"] == "2"

    job = emu.job(name, env["TRAINING_JOB_ID"])
    assert job["status"] == "Pending" and job["exec_env"] == "local"
    assert job["instance_type"] == "cpu-2"
    assert emu.set_job_status(name, env["TRAINING_JOB_ID"], "Active")["status"] == "Active"
    with pytest.raises(Conflict):
        emu.set_job_status(name, env["TRAINING_JOB_ID"], "Active")
    with pytest.raises(BadRequest):
        emu.set_job_status(name, env["TRAINING_JOB_ID"], "Pending")
    with pytest.raises(NotFound):
        emu.statistics_history(name, "1000000000000")
    with pytest.raises(BadRequest):
        emu.create_job("../etc")


def test_times_are_utc_iso(api: Api) -> None:
    name = _unique("time")
    created = api.definition(name)["created_at"]
    parsed = datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    assert abs((parsed - datetime.now(timezone.utc)).total_seconds()) < 3600
