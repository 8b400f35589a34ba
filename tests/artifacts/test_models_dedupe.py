"""No duplicate models when the connection breaks after the body was sent.

The fault-injecting proxy (``tests/support/fault_proxy.py``) in front of the emulator
forwards requests one per connection; for the first model upload it either
forwards the request and then drops the connection before the answer (the model
exists, the client cannot know), or reads the whole body and drops it without
forwarding (no model).
Either way exactly one model must exist afterwards.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from abeja_runtime import APIClient
from abeja_runtime.artifacts.models import ModelChecksumError, upload_model
from abeja_runtime.emulator import Emulator

from tests.support.fault_proxy import FaultProxy

DEF = "dedupe-def"


@pytest.mark.parametrize("mode", ["drop", "swallow"])
def test_unknown_outcome_never_duplicates(
    emu: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mode: str
) -> None:
    env = emu.create_job(DEF)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    proxy = FaultProxy(emu.port, target=b"/models ", mode=mode)
    proxy.faults_left = 1
    src = tmp_path / "model.bin"
    src.write_bytes(b"weights" * 10_000 + mode.encode())
    before = emu.client().get_training_models(emu.organization_id, DEF)["entries"]
    try:
        with APIClient(emu.credential, base_url=proxy.url, max_retry_count=2) as client:
            model = upload_model(src, client=client)
    finally:
        proxy.close()
    assert [m for _, m in proxy.posts].count(mode) == 1
    after = emu.client().get_training_models(emu.organization_id, DEF)["entries"]
    new = [
        m for m in after if m["training_model_id"] not in {b["training_model_id"] for b in before}
    ]
    assert len(new) == 1, new
    assert new[0]["training_model_id"] == model["training_model_id"]
    assert new[0]["training_job_id"] == env["TRAINING_JOB_ID"]
    # found by its checksum (drop: the model exists) or sent again once (swallow)
    assert len(proxy.posts) == (1 if mode == "drop" else 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_server_checksum_mismatch_is_an_error(
    httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ABEJA_ORGANIZATION_ID", "1234567890123")
    monkeypatch.setenv("TRAINING_JOB_DEFINITION_NAME", "d")
    monkeypatch.setenv("TRAINING_JOB_ID", "1111111111111")
    src = tmp_path / "m.bin"
    src.write_bytes(b"abc")
    body: dict[str, Any] = {"training_model_id": "1", "sha256": hashlib.sha256(b"x").hexdigest()}
    httpserver.expect_request(
        "/organizations/1234567890123/training/definitions/d/models", method="POST"
    ).respond_with_data(json.dumps(body), content_type="application/json")
    with (
        APIClient(
            {"auth_token": "test-token-not-in-text"},
            base_url=httpserver.url_for(""),
            max_retry_count=0,
        ) as c,
        pytest.raises(ModelChecksumError),
    ):
        upload_model(src, client=c)
