"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_statistics_spool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test's reporters spool under its own temp dir (abeja_runtime.statistics.spool).

    Inside a job the spool is on by default, under the result dir (``.`` when unset):
    without this, tests would leave spools in the working tree, and tests that reuse
    a job id would deliver each other's leftovers.
    """
    monkeypatch.setenv("ABEJA_RUNTIME_SPOOL_DIR", str(tmp_path / "statistics-spool"))
