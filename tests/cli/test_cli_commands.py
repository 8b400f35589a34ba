"""``abeja-runtime definitions|versions|jobs|models`` against a real emulator.

The CLI runs in-process (``cli.main``) with the connection settings in the
environment, exactly as a shell would give them, and talks HTTP to an emulator
on 127.0.0.1.
"""

from __future__ import annotations

import io
import json
import socket
import zipfile
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("werkzeug")

from abeja_runtime.cli import main
from abeja_runtime.cli.tables import render_record, render_table
from abeja_runtime.emulator import Emulator
from abeja_runtime.runner.api_target import CREDENTIAL_ENV_NAMES


@pytest.fixture
def api(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    for name in (*CREDENTIAL_ENV_NAMES, "ABEJA_API_URL", "ABEJA_ORGANIZATION_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ABEJA_API_URL", emu.url)
    monkeypatch.setenv("PLATFORM_AUTH_TOKEN", emu.token)
    monkeypatch.setenv("ABEJA_ORGANIZATION_ID", emu.organization_id)
    monkeypatch.setenv("ABEJA_SDK_MAX_RETRY_COUNT", "0")
    return emu


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str) -> Result:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def _one_error_line(result: Result) -> str:
    """The one error line (the embedded emulator's start note may precede it)."""
    lines = [
        line
        for line in result.err.strip().splitlines()
        if not line.startswith("abeja-runtime: using the embedded emulator")
    ]
    assert len(lines) == 1, result.err
    assert lines[0].startswith("abeja-runtime: error: ")
    assert result.out == ""
    return lines[0]


def _source(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("def handler(context):\n    pass\n")
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"junk")
    return source


# --------------------------------------------------------------------------- definitions


def test_definitions_create_list_get(api: Emulator, cli: Any) -> None:
    created = cli("definitions", "create", "cli-defs")
    assert created.code == 0, created.err
    assert created.out.startswith("created job definition cli-defs (")

    listed = cli("definitions", "list")
    assert listed.code == 0
    header = listed.out.splitlines()[0].split()
    assert header == ["NAME", "VERSIONS", "MODELS", "ARCHIVED", "CREATED"]
    row = next(line for line in listed.out.splitlines() if line.startswith("cli-defs "))
    assert row.split()[1:4] == ["0", "0", "no"]

    as_json = cli("definitions", "list", "--json")
    assert as_json.code == 0
    names = [e["name"] for e in as_json.json()["entries"]]
    assert "cli-defs" in names

    shown = cli("definitions", "get", "cli-defs")
    assert shown.code == 0
    assert "name:" in shown.out and "cli-defs" in shown.out
    assert cli("definitions", "get", "cli-defs", "--json").json()["name"] == "cli-defs"


def test_definition_archive_unarchive_delete(api: Emulator, cli: Any) -> None:
    assert cli("definitions", "create", "cli-arch").code == 0
    archived = cli("definitions", "archive", "cli-arch")
    assert (archived.code, archived.out.strip()) == (0, "archived job definition cli-arch")
    assert cli("definitions", "get", "cli-arch", "--json").json()["archived"] is True
    hidden = cli("definitions", "list", "--exclude-archived", "--json").json()
    assert "cli-arch" not in [e["name"] for e in hidden["entries"]]
    shown = cli("definitions", "list", "--include-archived", "--limit", "100", "--json").json()
    assert "cli-arch" in [e["name"] for e in shown["entries"]]
    assert cli("definitions", "unarchive", "cli-arch").code == 0
    assert cli("definitions", "get", "cli-arch", "--json").json()["archived"] is False
    deleted = cli("definitions", "delete", "cli-arch")
    assert (deleted.code, deleted.out.strip()) == (0, "deleted job definition cli-arch")
    assert cli("definitions", "get", "cli-arch").code == 3


def test_not_found_is_one_line_and_exit_3(api: Emulator, cli: Any) -> None:
    result = cli("definitions", "get", "no-such-definition")
    assert result.code == 3
    line = _one_error_line(result)
    assert "no-such-definition" in line
    assert "404" in line
    assert api.token not in result.err


def test_duplicate_is_a_conflict_exit_5(api: Emulator, cli: Any) -> None:
    assert cli("definitions", "create", "cli-dup").code == 0
    result = cli("definitions", "create", "cli-dup")
    assert result.code == 5
    assert "409" in _one_error_line(result)


# --------------------------------------------------------------------------- versions


def test_versions_lifecycle(api: Emulator, cli: Any, tmp_path: Path) -> None:
    assert cli("definitions", "create", "cli-versions").code == 0
    source = _source(tmp_path)
    created = cli(
        "versions",
        "create",
        "cli-versions",
        "--source",
        str(source),
        "--handler",
        "train:handler",
        "--env",
        "A=1",
        "--description",
        "first",
    )
    assert created.code == 0, created.err
    assert created.out.startswith("created version 1 of cli-versions (1 files from")

    listed = cli("versions", "list", "cli-versions")
    assert listed.out.splitlines()[0].split()[:3] == ["VERSION", "HANDLER", "IMAGE"]
    assert listed.out.splitlines()[1].split()[:2] == ["1", "train:handler"]

    version = cli("versions", "get", "cli-versions", "1", "--json").json()
    assert version["handler"] == "train:handler"
    assert version["environment"] == {"A": "1"}
    assert version["description"] == "first"

    assert cli("versions", "update", "cli-versions", "1", "--description", "second").code == 0
    assert cli("versions", "get", "cli-versions", "1", "--json").json()["description"] == "second"
    assert cli("versions", "archive", "cli-versions", "1").code == 0
    assert cli("versions", "get", "cli-versions", "1", "--json").json()["archived"] is True
    assert cli("versions", "unarchive", "cli-versions", "1").code == 0
    deleted = cli("versions", "delete", "cli-versions", "1")
    assert (deleted.code, deleted.out.strip()) == (0, "deleted version 1 of cli-versions")
    assert cli("versions", "get", "cli-versions", "1").code == 3


def test_versions_create_refuses_a_bad_handler_before_any_request(
    api: Emulator, cli: Any, tmp_path: Path
) -> None:
    result = cli(
        "versions", "create", "never-created", "--source", str(_source(tmp_path)), "--handler", "x"
    )
    assert result.code == 2
    assert "has no colon" in _one_error_line(result)
    assert cli("definitions", "get", "never-created").code == 3


def test_usage_errors_exit_2(api: Emulator, cli: Any) -> None:
    with pytest.raises(SystemExit) as info:
        cli("jobs")
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli("versions", "get", "x", "not-a-number")
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli("jobs", "list", "x", "--limit", "-1")
    assert info.value.code == 2


# --------------------------------------------------------------------------- jobs


@pytest.fixture
def version(api: Emulator, cli: Any, tmp_path: Path) -> str:
    name = f"cli-jobs-{tmp_path.name[-20:]}".replace("_", "-")
    assert cli("definitions", "create", name).code == 0
    assert (
        cli(
            "versions", "create", name, "--source", str(_source(tmp_path)), "--handler", "train:h"
        ).code
        == 0
    )
    return name


def test_jobs_create_list_get_stop(api: Emulator, cli: Any, version: str) -> None:
    created = cli(
        "jobs",
        "create",
        version,
        "1",
        "--dataset",
        "train=1234567890123",
        "--env",
        "EPOCHS=3",
        "--instance-type",
        "cpu-1",
        "--description",
        "from the cli",
        "--json",
    )
    assert created.code == 0, created.err
    job = created.json()
    job_id = job["training_job_id"]
    assert job["status"] == "Pending"
    assert job["datasets"] == {"train": "1234567890123"}
    assert job["environment"] == {"EPOCHS": "3"}

    second = cli("jobs", "create", version, "1")
    assert second.code == 0
    assert second.out.startswith("created job ") and "(Pending)" in second.out

    listed = cli("jobs", "list", version)
    lines = listed.out.splitlines()
    assert lines[0].split()[:4] == ["JOB", "ID", "VERSION", "STATUS"]
    assert any(line.startswith(job_id) and " Pending " in line for line in lines)
    assert lines[-1] == "(showing 1-2 of 2)"
    page = cli("jobs", "list", version, "--limit", "1", "--offset", "1")
    assert page.out.splitlines()[-1] == "(showing 2-2 of 2)"

    api.client().update_statistics(
        api.organization_id,
        version,
        job_id,
        {"epoch": 2, "num_epochs": 4, "stages": {"train": {"loss": 0.25}}},
    )
    shown = cli("jobs", "get", version, job_id)
    assert shown.code == 0
    assert "status:" in shown.out and "Pending" in shown.out
    assert "epoch 2/4 [##########----------]  50% | train loss=0.25" in shown.out
    assert "2/4 50%" in cli("jobs", "list", version).out

    stopped = cli("jobs", "stop", version, job_id)
    assert (stopped.code, stopped.out.strip()) == (0, f"stopped job {job_id}")
    assert cli("jobs", "get", version, job_id, "--json").json()["status"] == "Stopped"
    again = cli("jobs", "stop", version, job_id)
    assert again.code == 5
    assert "Stopped" in _one_error_line(again)

    assert cli("jobs", "archive", version, job_id).code == 0
    assert cli("jobs", "get", version, job_id, "--json").json()["archived"] is True
    assert cli("jobs", "unarchive", version, job_id).code == 0
    assert cli("jobs", "get", version, job_id, "--json").json()["archived"] is False


def test_job_not_found(api: Emulator, cli: Any, version: str) -> None:
    result = cli("jobs", "get", version, "1234567890123")
    assert result.code == 3
    assert "1234567890123" in _one_error_line(result)


def test_bad_instance_type_is_refused(api: Emulator, cli: Any, version: str) -> None:
    result = cli("jobs", "create", version, "1", "--instance-type", "huge")
    assert result.code == 2  # a bad argument, refused before any request
    assert "instance" in _one_error_line(result)
    assert cli("jobs", "list", version, "--json").json()["entries"] == []


# --------------------------------------------------------------------------- models


def test_models_create_list_get_download(
    api: Emulator, cli: Any, version: str, tmp_path: Path
) -> None:
    job_id = cli("jobs", "create", version, "1", "--json").json()["training_job_id"]
    model_dir = tmp_path / "model"
    (model_dir / "nested").mkdir(parents=True)
    (model_dir / "weights.bin").write_bytes(b"\x00\x01" * 100)
    (model_dir / "nested" / "config.json").write_text('{"a": 1}')
    created = cli(
        "models",
        "create",
        version,
        str(model_dir),
        "--job",
        job_id,
        "--description",
        "best",
        "--metrics",
        '{"accuracy": 0.9}',
        "--json",
    )
    assert created.code == 0, created.err
    model = created.json()
    model_id = model["training_model_id"]
    assert model["metrics"] == {"accuracy": 0.9}

    listed = cli("models", "list", version)
    assert listed.out.splitlines()[0].split()[:2] == ["MODEL", "ID"]
    assert any(line.startswith(model_id) for line in listed.out.splitlines())

    shown = cli("models", "get", version, model_id)
    assert "best" in shown.out and job_id in shown.out

    assert cli("models", "update", version, model_id, "--description", "better").code == 0
    assert cli("models", "get", version, model_id, "--json").json()["description"] == "better"
    assert cli("models", "archive", version, model_id).code == 0
    assert cli("models", "get", version, model_id, "--json").json()["archived"] is True
    assert cli("models", "unarchive", version, model_id).code == 0

    target = tmp_path / "out" / "model.zip"
    downloaded = cli("models", "download", version, model_id, "--output", str(target))
    assert downloaded.code == 0, downloaded.err
    assert downloaded.out.startswith(f"saved model {model_id} to {target}")
    with zipfile.ZipFile(io.BytesIO(target.read_bytes())) as archive:
        assert sorted(archive.namelist()) == ["nested/config.json", "weights.bin"]
        assert archive.read("weights.bin") == b"\x00\x01" * 100
    assert "?" not in downloaded.out  # the signed URL is not printed

    refused = cli("models", "download", version, model_id, "--output", str(target))
    assert refused.code == 2
    assert "--force" in _one_error_line(refused)
    forced = cli("models", "download", version, model_id, "--output", str(target), "--force")
    assert forced.code == 0

    # The job's result is its latest model on the emulator.
    uri = cli("jobs", "result", version, job_id)
    assert uri.code == 0, uri.err
    assert uri.out.startswith("http://127.0.0.1:")
    assert "artifacts" in cli("jobs", "result", version, job_id, "--json").json()
    saved = tmp_path / "result.zip"
    fetched = cli("jobs", "result", version, job_id, "--output", str(saved))
    assert fetched.code == 0, fetched.err
    assert saved.read_bytes() == target.read_bytes()
    other_job = cli("jobs", "create", version, "1", "--json").json()["training_job_id"]
    assert cli("jobs", "result", version, other_job).code == 3


def test_models_create_refuses_bad_metrics(
    api: Emulator, cli: Any, version: str, tmp_path: Path
) -> None:
    (tmp_path / "m.bin").write_bytes(b"x")
    job = "1443722127663"
    result = cli(
        "models", "create", version, str(tmp_path / "m.bin"), "--job", job, "--metrics", "[1]"
    )
    assert result.code == 2
    assert "--metrics must be a JSON object" in _one_error_line(result)


# --------------------------------------------------------------------------- connection


def test_wrong_token_exit_4(api: Emulator, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLATFORM_AUTH_TOKEN", "not-the-token")
    result = cli("definitions", "list")
    assert result.code == 4
    line = _one_error_line(result)
    assert "401" in line
    assert "not-the-token" not in result.err


def test_unreachable_exit_6(api: Emulator, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("ABEJA_API_URL", f"http://127.0.0.1:{port}")
    result = cli("definitions", "list")
    assert result.code == 6
    _one_error_line(result)


def test_url_without_credentials_is_a_usage_error(
    api: Emulator, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLATFORM_AUTH_TOKEN")
    result = cli("definitions", "list")
    assert result.code == 2
    assert "ABEJA_API_URL is set but no credential" in _one_error_line(result)


def test_credentials_without_organization_is_a_usage_error(
    api: Emulator, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ABEJA_ORGANIZATION_ID")
    result = cli("definitions", "list")
    assert result.code == 2
    assert "--organization" in _one_error_line(result)
    explicit = cli("definitions", "list", "--organization", api.organization_id)
    assert explicit.code == 0


def test_embedded_emulator_keeps_state_and_identity(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (*CREDENTIAL_ENV_NAMES, "ABEJA_API_URL", "ABEJA_ORGANIZATION_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ABEJA_RUNTIME_EMULATOR_DIR", str(tmp_path / "emu"))
    empty = cli("definitions", "list")
    assert empty.code == 0
    assert empty.out.strip().startswith("no job definitions")
    assert "using the embedded emulator" in empty.err
    assert str(tmp_path / "emu") in empty.err
    assert cli("definitions", "create", "kept").code == 0
    first_org = cli("definitions", "get", "kept", "--json").json()["organization_id"]
    again = cli("definitions", "list", "--json")
    assert [e["name"] for e in again.json()["entries"]] == ["kept"]
    assert cli("definitions", "get", "kept", "--json").json()["organization_id"] == first_org
    other = cli("definitions", "list", "--organization", "1111111111111")
    assert other.code == 2
    assert "not the embedded emulator's" in _one_error_line(other)


# --------------------------------------------------------------------------- rendering


def test_render_table_and_record() -> None:
    table = render_table(["A", "LONGER"], [["x", None], ["wide value", True]])
    assert table.splitlines() == ["A           LONGER", "x           -", "wide value  yes"]
    record = render_record(
        {"name": "n", "created_at": "2024-01-02T03:04:05.123456Z", "extra": {"k": 1}},
        ["name", "created_at", "extra", "missing"],
    )
    assert record.splitlines() == [
        "name:       n",
        "created_at: 2024-01-02 03:04:05",
        'extra:      {"k": 1}',
    ]


def test_embedded_emulator_dir_in_use_says_how_to_share(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (*CREDENTIAL_ENV_NAMES, "ABEJA_API_URL", "ABEJA_ORGANIZATION_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ABEJA_RUNTIME_EMULATOR_DIR", str(tmp_path / "busy"))
    with Emulator(data_dir=str(tmp_path / "busy")):
        result = cli("jobs", "list", "anything")
    assert result.code == 2
    line = _one_error_line(result)
    assert "is in use by another process" in line
    assert "abeja-runtime emulator --data-dir" in line


def test_models_create_refuses_bad_paths_with_no_model_made(
    api: Emulator, cli: Any, version: str, tmp_path: Path
) -> None:
    job_id = cli("jobs", "create", version, "1", "--json").json()["training_job_id"]
    empty = tmp_path / "empty"
    empty.mkdir()
    for path, words in ((tmp_path / "missing", "does not exist"), (empty, "holds no files")):
        refused = cli("models", "create", version, str(path), "--job", job_id)
        assert refused.code == 2, refused.err
        assert words in _one_error_line(refused)
    assert cli("models", "list", version, "--json").json()["entries"] == []
