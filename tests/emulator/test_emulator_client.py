"""``abeja_runtime.APIClient`` drives all 29 Training API operations against the emulator.

Through ``emu.client()``: real HTTP on 127.0.0.1, the emulator's semantics
checked from the client's side, errors mapped to the library's exceptions.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from abeja_runtime.emulator import Emulator
from abeja_runtime.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized


@pytest.fixture
def client(emu: Emulator) -> Iterator[Any]:
    api = emu.client(max_retry_count=0)
    yield api
    api.close()


def _zip(name: str, data: bytes) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    buf.seek(0)
    return buf


def test_all_29_operations(client: Any, emu: Emulator, tmp_path: Path) -> None:
    org = emu.organization_id
    name = "client-def"
    seen: set[int] = set()

    created = client.create_training_job_definition(org, name)  # 1
    seen.add(1)
    assert created["name"] == name and created["organization_id"] == org
    assert client.archive_training_job_definition(org, name)["message"]  # 2
    seen.add(2)
    excluded = client.get_training_job_definitions(org, filter_archived=True)  # 4
    assert name not in [d["name"] for d in excluded["entries"]]
    assert client.unarchive_training_job_definition(org, name)  # 3
    seen.update({3, 4})
    page = client.get_training_job_definitions(org, offset=0, limit=1)
    assert page["limit"] == 1 and page["total"] >= 1
    got = client.get_training_job_definition(org, name, include_jobs=False)  # 5
    seen.add(5)
    assert got["archived"] is False and "jobs" not in got

    v1 = client.create_training_job_definition_version_native_api(  # 7
        org,
        name,
        _zip("train.py", b"def handler(ctx): pass\n"),
        {"handler": "train:handler", "environment": {"A": "1"}, "description": "native"},
    )
    seen.add(7)
    assert v1["job_definition_version"] == 1 and v1["environment"] == {"A": "1"}
    (tmp_path / "train.py").write_text("def handler(ctx):\n    pass\n")
    v2 = client.create_training_job_definition_version(  # 8
        org,
        name,
        [str(tmp_path / "train.py")],
        "train:handler",
        image="abeja-inc/all-gpu:19.04",
        environment={"B": "2"},
        description="files",
    )
    seen.add(8)
    assert v2["job_definition_version"] == 2 and v2["image"] == "abeja-inc/all-gpu:19.04"
    entries = client.get_training_job_definition_versions(org, name)["entries"]  # 9
    seen.add(9)
    assert [v["job_definition_version"] for v in entries] == [1, 2]
    assert client.get_training_job_definition_version(org, name, 2)["description"] == "files"  # 10
    seen.add(10)
    patched = client.patch_training_job_definition_version(org, name, 2, "patched")  # 11
    seen.add(11)
    assert patched["description"] == "patched"
    client.archive_training_job_definition_version(org, name, 2)  # 12
    seen.add(12)
    kept = client.get_training_job_definition_versions(org, name, filter_archived=True)
    assert [v["job_definition_version"] for v in kept["entries"]] == [1]
    client.unarchive_training_job_definition_version(org, name, 2)  # 13
    seen.add(13)

    job = client.create_training_job(  # 15
        org,
        name,
        1,
        datasets={"train": "1111111111111"},
        instance_type="gpu:b-1",
        environment={"EPOCHS": "2"},
        description="client job",
        export_log=False,
    )
    seen.add(15)
    assert job["status"] == "Pending" and job["instance_type"] == "gpu:b-1"
    other = client.create_training_job(org, name, 2, user_parameters={"OLD": "style"})
    assert other["environment"] == {"OLD": "style"}
    jobs = client.get_training_jobs(org, name, limit=1, offset=1)  # 16
    seen.add(16)
    assert jobs["total"] == 2 and [j["id"] for j in jobs["entries"]] == [job["id"]]
    assert client.get_training_job(org, name, job["id"])["description"] == "client job"  # 17
    seen.add(17)

    statistics = {
        "num_epochs": 2,
        "epoch": 0,
        "progress_percentage": 0.0,
        "stages": {"train": {"loss": 0.0, "accuracy": float("nan")}},
    }
    client.update_statistics(org, name, job["id"], statistics)  # 22
    seen.add(22)
    history = emu.statistics_history(name, job["id"])
    assert history[-1]["statistics"] == {
        "num_epochs": 2,
        "epoch": 0,
        "progress_percentage": 0.0,
        "stages": {"train": {"loss": 0.0, "accuracy": "NaN"}},
    }

    assert client.stop_training_job(org, name, other["id"])["message"]  # 18
    seen.add(18)
    with pytest.raises(Conflict) as twice:
        client.stop_training_job(org, name, other["id"])
    assert twice.value.status_code == 409 and "Stopped" in twice.value.error_description
    client.archive_training_job(org, name, other["id"])  # 19
    seen.add(19)
    assert client.get_training_job(org, name, other["id"])["archived"] is True
    client.unarchive_training_job(org, name, other["id"])  # 20
    seen.add(20)

    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00\x01" * 5000)
    model = client.create_training_model(  # 24
        org,
        name,
        str(weights),
        {"training_job_id": job["id"], "description": "m", "metrics": {"acc": 0.5}},
    )
    seen.add(24)
    assert model["training_job_id"] == job["id"] and model["size"] > 0
    listed = client.get_training_models(org, name)["entries"]  # 23
    seen.add(23)
    assert [m["id"] for m in listed] == [model["id"]]
    assert client.get_training_model(org, name, model["id"])["metrics"] == {"acc": 0.5}  # 25
    seen.add(25)
    assert client.patch_training_model(org, name, model["id"], "renamed")["description"] == (  # 26
        "renamed"
    )
    seen.add(26)
    uri = client.download_training_model(org, name, model["id"])["download_uri"]  # 27
    seen.add(27)
    content = requests.get(uri, timeout=30).content
    assert hashlib.sha256(content).hexdigest() == model["sha256"]
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        assert zf.read("weights.bin") == weights.read_bytes()
    result = client.get_training_result(org, name, job["id"])  # 21
    seen.add(21)
    assert requests.get(result["artifacts"]["complete"]["uri"], timeout=30).content == content
    client.archive_training_model(org, name, model["id"])  # 28
    seen.add(28)
    assert client.get_training_models(org, name, filter_archived=True)["entries"] == []
    client.unarchive_training_model(org, name, model["id"])  # 29
    seen.add(29)

    client.create_training_job_definition_version_native_api(
        org, name, _zip("x.py", b""), {"handler": "x:handler"}
    )
    with pytest.raises(Conflict):
        client.delete_training_job_definition_version(org, name, 1)
    assert client.delete_training_job_definition_version(org, name, 3) == {  # 14
        "message": "deleted"
    }
    seen.add(14)
    with pytest.raises(Conflict):
        client.delete_training_job_definition(org, name)
    client.create_training_job_definition(org, "client-empty")
    assert client.delete_training_job_definition(org, "client-empty")["message"]  # 6
    seen.add(6)

    assert seen == set(range(1, 30))


def test_job_side_spellings_from_the_environment(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``update_statistics(statistics)`` and ``list_models()`` take the ids from the job's env."""
    env = emu.create_job("client-env")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = emu.client()
    client.update_statistics({"epoch": 3, "stages": {"train": {"loss": 0.5}}})
    history = emu.statistics_history("client-env", env["TRAINING_JOB_ID"])
    assert history[-1]["statistics"]["epoch"] == 3
    assert client.list_models()["entries"] == []
    client.close()


def test_errors_are_mapped(client: Any, emu: Emulator) -> None:
    org = emu.organization_id
    with pytest.raises(NotFound) as missing:
        client.get_training_job_definition(org, "client-missing")
    assert missing.value.status_code == 404 and "client-missing" in str(missing.value)
    client.create_training_job_definition(org, "client-dup")
    with pytest.raises(Conflict):
        client.create_training_job_definition(org, "client-dup")
    other = "1" * 13 if org != "1" * 13 else "2" * 13
    with pytest.raises(Forbidden):
        client.get_training_job_definitions(other)
    bad = emu.client(credential={"auth_token": "wrong"}, max_retry_count=0)
    with pytest.raises(Unauthorized) as unauthorized:
        bad.get_training_job_definitions(org)
    assert emu.token not in str(unauthorized.value)
    bad.close()
    user = emu.client(credential=emu.user_credential)
    assert user.get_training_job_definition(org, "client-dup")["name"] == "client-dup"
    user.close()
    with pytest.raises(BadRequest):
        client.create_training_job_definition(org, "bad name")
