"""The public ``abeja-sdk`` low-level client drives every operation against the emulator.

``abeja-sdk`` reads ``ABEJA_API_URL`` once, at import, into the class
attribute ``Connection.BASE_URL``, so the tests patch that attribute. The
module is skipped where the package is not installed (it supports Python
before 3.12 only).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests

from abeja_runtime.emulator import Emulator

abeja_training = pytest.importorskip("abeja.training", reason="abeja-sdk is not installed")
sdk_connection = pytest.importorskip("abeja.common.connection")
sdk_exceptions = pytest.importorskip("abeja.exceptions")


@pytest.fixture
def sdk(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(sdk_connection.Connection, "BASE_URL", emu.url)
    return abeja_training.APIClient(credential={"auth_token": emu.token}, max_retry_count=1)


def _zip(name: str, data: bytes) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    buf.seek(0)
    return buf


def test_every_operation_through_the_public_sdk(sdk: Any, emu: Emulator, tmp_path: Path) -> None:
    org = emu.organization_id
    name = "sdk-def"

    # 1 create, 4 list, 5 get, 2/3 archive
    created = sdk.create_training_job_definition(org, name)
    assert created["name"] == name and created["version_count"] == 0
    listed = sdk.get_training_job_definitions(org, filter_archived=True, offset=0, limit=5)
    assert name in [d["name"] for d in listed["entries"]]
    assert listed["limit"] == 5
    assert sdk.get_training_job_definition(org, name, include_jobs=False)["name"] == name
    assert sdk.archive_training_job_definition(org, name)["message"]
    assert sdk.get_training_job_definition(org, name)["archived"] is True
    excluded = sdk.get_training_job_definitions(org, filter_archived=True)
    assert name not in [d["name"] for d in excluded["entries"]]
    included = sdk.get_training_job_definitions(org, filter_archived=False)
    assert name in [d["name"] for d in included["entries"]]
    sdk.unarchive_training_job_definition(org, name)

    # 7 native version, 8 version from files
    v1 = sdk.create_training_job_definition_version_native_api(
        org,
        name,
        _zip("train.py", b"def handler(ctx): pass\n"),
        parameters={
            "handler": "train:handler",
            "image": "abeja-inc/all-cpu:19.10",
            "environment": {"KEY": "value"},
            "description": "native",
        },
    )
    assert v1["job_definition_version"] == 1 and v1["environment"] == {"KEY": "value"}
    source = tmp_path / "train.py"
    source.write_text("def handler(ctx):\n    pass\n")
    v2 = sdk.create_training_job_definition_version(
        org,
        name,
        [str(source)],
        "train:handler",
        image="abeja-inc/all-gpu:19.04",
        environment={"BATCH": "8"},
        description="from files",
    )
    assert v2["job_definition_version"] == 2 and v2["image"] == "abeja-inc/all-gpu:19.04"

    # 9 list, 10 get, 11 patch, 12/13 archive
    versions = sdk.get_training_job_definition_versions(org, name)["entries"]
    assert [v["job_definition_version"] for v in versions] == [1, 2]
    assert sdk.get_training_job_definition_version(org, name, 2)["description"] == "from files"
    patched = sdk.patch_training_job_definition_version(org, name, 2, description="patched")
    assert patched["description"] == "patched"
    assert sdk.archive_training_job_definition_version(org, name, 2) == {"message": "archived"}
    kept = sdk.get_training_job_definition_versions(org, name, filter_archived=True)["entries"]
    assert [v["job_definition_version"] for v in kept] == [1]
    assert sdk.unarchive_training_job_definition_version(org, name, 2) == {"message": "unarchived"}

    # 15 create job (user_parameters goes out under "environment"), 16 list, 17 get
    job = sdk.create_training_job(
        org,
        name,
        1,
        user_parameters={"BATCH_SIZE": 50},
        datasets={"mnist": "1111111111111"},
        instance_type="cpu-1",
        description="sdk job",
        export_log=True,
    )
    assert job["status"] == "Pending" and job["environment"] == {"BATCH_SIZE": 50}
    other = sdk.create_training_job(org, name, 2, environment={"A": "1"})
    jobs = sdk.get_training_jobs(org, name, limit=1, offset=0)
    assert jobs["total"] == 2 and len(jobs["entries"]) == 1
    assert jobs["entries"][0]["id"] == other["id"]
    assert sdk.get_training_job(org, name, job["id"])["description"] == "sdk job"

    # 22 statistics: the public Statistics helper's document, then one with zeros
    from abeja.training.statistics import Statistics

    stats = Statistics(num_epochs=5, epoch=1, progress_percentage=0.2, key1="value1")
    stats.add_stage(name=Statistics.STAGE_TRAIN, accuracy=0.9, loss=0.05)
    answer = sdk.update_statistics(org, name, job["id"], stats.get_statistics())
    assert answer["statistics"]["stages"]["train"] == {"accuracy": 0.9, "loss": 0.05}
    sdk.update_statistics(org, name, job["id"], {"epoch": 0, "stages": {"train": {"loss": 0}}})
    history = emu.statistics_history(name, job["id"])
    assert [h["statistics"].get("epoch") for h in history] == [1, 0]

    # 18 stop, 19/20 archive
    assert sdk.stop_training_job(org, name, other["id"]) == {
        "message": f"{name}:{other['id']} stopped"
    }
    with pytest.raises(sdk_exceptions.Conflict) as stopped_twice:
        sdk.stop_training_job(org, name, other["id"])
    assert stopped_twice.value.status_code == 409
    assert "Stopped" in stopped_twice.value.error_description
    sdk.archive_training_job(org, name, other["id"])
    assert sdk.get_training_job(org, name, other["id"])["archived"] is True
    sdk.unarchive_training_job(org, name, other["id"])

    # 24 create model (a non-zip file is wrapped by the SDK), 23 list, 25 get, 26 patch
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x01\x02" * 1000)
    with weights.open("rb") as handle:
        model = sdk.create_training_model(
            org,
            name,
            handle,
            parameters={
                "training_job_id": job["id"],
                "description": "sdk model",
                "user_parameters": {"lr": 0.1},
                "metrics": {"acc": 0.9},
            },
        )
    assert model["training_job_id"] == job["id"] and model["size"] > 0
    assert [m["id"] for m in sdk.get_training_models(org, name)["entries"]] == [model["id"]]
    assert sdk.get_training_model(org, name, model["id"])["metrics"] == {"acc": 0.9}
    assert sdk.patch_training_model(org, name, model["id"], "renamed")["description"] == "renamed"

    # 27 download, 21 result: presigned URLs fetched without credentials
    uri = sdk.download_training_model(org, name, model["id"])["download_uri"]
    content = requests.get(uri, timeout=30).content
    with zipfile.ZipFile(io.BytesIO(content)) as zf:
        assert zf.read("weights.bin") == b"\x01\x02" * 1000
    result = sdk.get_training_result(org, name, job["id"])
    assert requests.get(result["artifacts"]["complete"]["uri"], timeout=30).content == content

    # 28/29 archive model
    assert sdk.archive_training_model(org, name, model["id"])["message"].endswith("archived")
    assert sdk.get_training_models(org, name, filter_archived=True)["entries"] == []
    sdk.unarchive_training_model(org, name, model["id"])

    # 14 delete version (refused while it has jobs), 6 delete definition
    sdk.create_training_job_definition_version_native_api(
        org, name, _zip("x.py", b""), parameters={"handler": "x:handler"}
    )
    with pytest.raises(sdk_exceptions.Conflict):
        sdk.delete_training_job_definition_version(org, name, 1)
    assert sdk.delete_training_job_definition_version(org, name, 3) == {"message": "deleted"}
    with pytest.raises(sdk_exceptions.Conflict):
        sdk.delete_training_job_definition(org, name)
    sdk.create_training_job_definition(org, "sdk-empty")
    assert sdk.delete_training_job_definition(org, "sdk-empty") == {"message": "sdk-empty deleted"}


def test_sdk_errors_and_user_auth(sdk: Any, emu: Emulator) -> None:
    org = emu.organization_id
    with pytest.raises(sdk_exceptions.NotFound) as missing:
        sdk.get_training_job_definition(org, "no-such-definition")
    assert missing.value.error == "not_found"
    assert "no-such-definition" in missing.value.error_description
    with pytest.raises(sdk_exceptions.BadRequest):
        sdk.create_training_job_definition(org, "../escape")

    user = abeja_training.APIClient(
        credential={"user_id": emu.user_id, "personal_access_token": emu.personal_access_token},
        max_retry_count=1,
    )
    user.create_training_job_definition(org, "sdk-user")
    assert user.get_training_job_definition(org, "sdk-user")["name"] == "sdk-user"

    wrong = abeja_training.APIClient(credential={"auth_token": "wrong"}, max_retry_count=1)
    with pytest.raises(sdk_exceptions.Unauthorized):
        wrong.get_training_job_definitions(org)
    with pytest.raises(sdk_exceptions.Forbidden):
        sdk.get_training_job_definitions("1" * 13 if org != "1" * 13 else "2" * 13)
