"""Helpers for the emulator tests: raw HTTP calls with plain ``requests``.

The emulator tests talk to a real emulator over loopback HTTP, the way any
client does, so that they test the wire and not Python calls.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import requests

from abeja_runtime.emulator import Emulator


def job_statistics(emu: Emulator, env: dict[str, str]) -> list[dict[str, Any]]:
    """Every statistics document the job of ``env`` (a job's environment) received, in order."""
    entries = emu.statistics_history(env["TRAINING_JOB_DEFINITION_NAME"], env["TRAINING_JOB_ID"])
    return [entry["statistics"] for entry in entries]


def zip_bytes(files: dict[str, bytes] | None = None) -> bytes:
    """A small zip archive holding ``files``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in (files or {"train.py": b"def handler(ctx):\n    pass\n"}).items():
            zf.writestr(name, data)
    return buf.getvalue()


class Api:
    """Raw calls against one emulator, as its organization, with the bearer token."""

    def __init__(self, emu: Emulator, *, auth: Any = None) -> None:
        self.emu = emu
        self.session = requests.Session()
        if auth is None:
            self.session.headers["Authorization"] = f"Bearer {emu.token}"
        else:
            self.session.auth = auth
        self.base = f"{emu.url}/organizations/{emu.organization_id}/training"

    def close(self) -> None:
        self.session.close()

    def url(self, path: str) -> str:
        return self.base + path

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 60)
        return self.session.request(method, self.url(path), **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        assert response.status_code == 200, (response.status_code, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
        return response.json()

    def err(self, status: int, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.call(method, path, **kwargs)
        assert response.status_code == status, (response.status_code, response.text)
        body = response.json()
        assert set(body) <= {"error", "error_description", "error_detail"}, body
        assert body["error"] and body["error_description"], body
        return dict(body)

    def definition(self, name: str) -> dict[str, Any]:
        return dict(self.ok("POST", "/definitions/", json={"name": name}))

    def version(
        self,
        name: str,
        parameters: dict[str, Any] | None = None,
        source: bytes | None = None,
    ) -> dict[str, Any]:
        params = {"handler": "train:handler"} if parameters is None else parameters
        files = {
            "source_code": ("source_code.zip", source or zip_bytes(), "application/zip"),
            "parameters": ("params.json", json.dumps(params).encode(), "application/json"),
        }
        return dict(self.ok("POST", f"/definitions/{name}/versions", files=files))

    def job(self, name: str, version: int = 1, **body: Any) -> dict[str, Any]:
        return dict(self.ok("POST", f"/definitions/{name}/versions/{version}/jobs", json=body))

    def model(
        self, name: str, data: bytes = b"model-bytes", parameters: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        files = {
            "model_data": ("model_data.zip", data, "application/zip"),
            "parameters": (
                "params.json",
                json.dumps(parameters or {}).encode(),
                "application/json",
            ),
        }
        return dict(self.ok("POST", f"/definitions/{name}/models", files=files))
