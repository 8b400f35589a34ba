"""upload_model / download_model against the emulator: byte-for-byte round trips, bad input.

Real HTTP on 127.0.0.1; the job identity comes from the environment the
emulator gives a job, as inside a real training job.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from abeja_runtime.artifacts.models import download_model, download_training_result, upload_model
from abeja_runtime.emulator import Emulator
from abeja_runtime.errors import InvalidDataFormat

DEF = "models-def"


@pytest.fixture
def job_env(emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    env = emu.create_job(DEF)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return env


@pytest.fixture
def client(emu: Emulator) -> Iterator[Any]:
    api = emu.client(max_retry_count=0)
    yield api
    api.close()


def _count(client: Any, emu: Emulator) -> int:
    return len(client.get_training_models(emu.organization_id, DEF)["entries"])


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def test_upload_file_round_trip(job_env: dict[str, str], client: Any, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    src = tmp_path / "weights.bin"
    src.write_bytes(data)
    model = upload_model(src, description="a file", metrics={"acc": 0.5}, client=client)
    assert model["training_job_id"] == job_env["TRAINING_JOB_ID"]
    assert model["description"] == "a file"
    assert model["metrics"] == {"acc": 0.5}
    out = download_model(model["training_model_id"], tmp_path / "out", client=client)
    assert (out / "weights.bin").read_bytes() == data
    assert list(Path(tempfile.gettempdir()).iterdir()) == []  # temp zip removed


def test_upload_directory_tree(job_env: dict[str, str], client: Any, tmp_path: Path) -> None:
    root = tmp_path / "result"
    (root / "ckpt" / "deep").mkdir(parents=True)
    (root / "model.pt").write_bytes(os.urandom(10_000))
    (root / "ckpt" / "deep" / "w.npy").write_bytes(os.urandom(5_000))
    (root / "config.json").write_text('{"a": 1}')
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (root / "leak").symlink_to(secret)  # links out of the tree: skipped
    (root / "alias.json").symlink_to(root / "config.json")  # inside: its bytes are stored
    model = upload_model(root, client=client)
    out = download_model(model["training_model_id"], tmp_path / "out", client=client)
    expected = _tree(root) | {"alias.json": b'{"a": 1}'}
    assert _tree(out) == expected
    assert not (out / "leak").exists()


def test_statistics_spool_in_the_result_dir_is_not_uploaded(
    job_env: dict[str, str], client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a storage dir the spool defaults to the result dir, which is what a job
    # (and the runner) uploads as its model: the spool's files must stay out of it.
    from abeja_runtime.statistics.spool import Spool, default_spool_dir

    root = tmp_path / "result"
    root.mkdir()
    (root / "model.pt").write_bytes(os.urandom(1_000))
    monkeypatch.delenv("ABEJA_RUNTIME_SPOOL_DIR", raising=False)
    monkeypatch.delenv("ABEJA_STORAGE_DIR_PATH", raising=False)
    monkeypatch.setenv("ABEJA_TRAINING_RESULT_DIR", str(root))
    spool_dir = default_spool_dir(job_env["TRAINING_JOB_ID"])
    spool = Spool(spool_dir)
    try:
        spool.append({"epoch": 1, "train": {"loss": 0.5}})
        assert spool_dir.is_relative_to(root) and any(spool_dir.iterdir())
        model = upload_model(root, client=client, metrics={})
    finally:
        spool.close()
    out = download_model(model["training_model_id"], tmp_path / "out", client=client)
    assert _tree(out) == {"model.pt": (root / "model.pt").read_bytes()}


def test_upload_existing_zip_is_sent_as_is(
    job_env: dict[str, str], client: Any, emu: Emulator, tmp_path: Path
) -> None:
    src = tmp_path / "model.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("a/b.txt", b"hello")
    raw = src.read_bytes()
    model = upload_model(src, client=client)
    assert model["sha256"] == hashlib.sha256(raw).hexdigest()
    uri = client.download_training_model(emu.organization_id, DEF, model["training_model_id"])
    assert requests.get(uri["download_uri"], timeout=30).content == raw
    out = download_training_result(job_env["TRAINING_JOB_ID"], tmp_path / "res", client=client)
    assert (out / "a" / "b.txt").read_bytes() == b"hello"


def test_bad_input_sends_nothing(
    job_env: dict[str, str], client: Any, emu: Emulator, tmp_path: Path
) -> None:
    before = _count(client, emu)
    with pytest.raises(InvalidDataFormat, match="does not exist"):
        upload_model(tmp_path / "missing", client=client)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(InvalidDataFormat, match="no files"):
        upload_model(empty, client=client)
    with pytest.raises(InvalidDataFormat, match="device"):
        upload_model("/dev/null", client=client)
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(InvalidDataFormat, match="socket"):
            upload_model(sock_path, client=client)
    if sys.platform != "win32" and os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        (locked / "ok.bin").write_bytes(b"ok")
        (locked / "secret.bin").write_bytes(b"x")
        (locked / "secret.bin").chmod(0)
        with pytest.raises(InvalidDataFormat, match="cannot be read"):
            upload_model(locked, client=client)
    assert _count(client, emu) == before
    assert list(Path(tempfile.gettempdir()).iterdir()) == []


def test_metrics_default_to_last_reported_statistics(
    job_env: dict[str, str], client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class _LastDocument:
        last_document = {"num_epochs": 2, "epoch": 2, "stages": {"train": {"loss": 0.25}}}

    monkeypatch.setattr("abeja_runtime.statistics._default_reporter._default", _LastDocument())
    src = tmp_path / "m.bin"
    src.write_bytes(b"m")
    model = upload_model(src, client=client)
    assert model["metrics"] == _LastDocument.last_document
    explicit = upload_model(src, metrics={"acc": 1}, client=client)
    assert explicit["metrics"] == {"acc": 1}


def test_progress_bar_only_when_asked_or_on_a_terminal(
    job_env: dict[str, str], client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    upload_model(src, client=client)  # stderr is not a terminal under pytest: quiet
    assert "model upload" not in capsys.readouterr().err
    upload_model(src, client=client, progress=True)
    assert "model upload" in capsys.readouterr().err
