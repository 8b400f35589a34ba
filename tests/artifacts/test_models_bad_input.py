"""upload_model's failures that happen after the input looked fine: a full disk while
compressing (``compress=True``, the one mode that writes a temporary zip), and a
server that refuses the model (e.g. too large). Clear errors, no model on the
server, no temporary file left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from abeja_runtime import APIClient
from abeja_runtime.artifacts.models import upload_model
from abeja_runtime.errors import BadRequest

_DISK_FULL = r"""
import os, resource, signal, sys, tempfile
from abeja_runtime.emulator import Emulator
from abeja_runtime.errors import AbejaRuntimeError
from abeja_runtime.artifacts.models import upload_model

src, scratch = sys.argv[1], sys.argv[2]
with Emulator() as emu:
    tempfile.tempdir = scratch  # after the emulator made its own data dir
    os.environ.update(emu.create_job("disk-full"))
    client = emu.client(max_retry_count=0)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, resource.RLIM_INFINITY))
    try:
        upload_model(src, client=client, compress=True)
    except AbejaRuntimeError as exc:
        print("ERROR:", exc)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    print("MODELS:", len(client.get_training_models(emu.organization_id, "disk-full")["entries"]))
    print("LEFT:", sorted(os.listdir(scratch)))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE stands in for a full disk")
def test_disk_full_while_compressing(tmp_path: Path) -> None:
    src = tmp_path / "result"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(2 * 1024 * 1024))  # incompressible
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, str(src), str(scratch)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout
    assert "ERROR: cannot write the temporary model zip" in out, (out, done.stderr)
    assert "MODELS: 0" in out
    assert "LEFT: []" in out


def test_server_refusal_is_clear_and_cleans_up(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ABEJA_ORGANIZATION_ID", "1234567890123")
    monkeypatch.setenv("TRAINING_JOB_DEFINITION_NAME", "d")
    monkeypatch.delenv("TRAINING_JOB_ID", raising=False)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    src = tmp_path / "m.bin"
    src.write_bytes(b"x" * 10_000)
    error = {"error": "bad_request", "error_description": "model_data is too large"}
    httpserver.expect_request(
        "/organizations/1234567890123/training/definitions/d/models", method="POST"
    ).respond_with_data(json.dumps(error), status=400, content_type="application/json")
    with (
        APIClient(
            {"auth_token": "test-token-not-in-text"},
            base_url=httpserver.url_for(""),
            max_retry_count=3,
        ) as c,
        pytest.raises(BadRequest, match="too large"),
    ):
        upload_model(src, client=c)
    assert len(httpserver.log) == 1  # a refusal is not retried
    assert list(scratch.iterdir()) == []
