"""Fixtures shared by the whole suite.

* ``emu``: one emulator per test module (module scope: starting one costs a server
  thread and a store, and most modules only need their own jobs in it);
* ``fresh_emu``: an emulator of the test's own, for tests that look at everything in
  it (the dashboard's pages, a spool's deliveries under faults);
* ``_server`` / ``server``: a local HTTP server (pytest-httpserver) per test module,
  cleared before each test; a module that wants a default answer overrides ``server``
  by requesting it (``def server(server): server.expect_request(...)``).
  ``tests/statistics`` overrides ``server`` with its own statistics endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_httpserver import HTTPServer

    from abeja_runtime.emulator import Emulator


@pytest.fixture(autouse=True)
def _private_statistics_spool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test's reporters spool under its own temp dir (abeja_runtime.statistics.spool).

    Inside a job the spool is on by default, under the result dir (``.`` when unset):
    without this, tests would leave spools in the working tree, and tests that reuse
    a job id would deliver each other's leftovers.
    """
    monkeypatch.setenv("ABEJA_RUNTIME_SPOOL_DIR", str(tmp_path / "statistics-spool"))


def _emulator() -> type[Emulator]:
    # imported when first asked for: the emulator needs werkzeug (the emulator extra)
    pytest.importorskip("werkzeug")
    from abeja_runtime.emulator import Emulator

    return Emulator


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    """An in-memory emulator shared by the tests of one module."""
    with _emulator()() as emulator:
        yield emulator


@pytest.fixture
def fresh_emu() -> Iterator[Emulator]:
    """An in-memory emulator of this test's own."""
    with _emulator()() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def _server() -> Iterator[HTTPServer]:
    from tests.support.client_support import serving

    yield from serving()


@pytest.fixture
def server(_server: HTTPServer) -> HTTPServer:
    """The module's local HTTP server, with no expectations and an empty log."""
    _server.clear()
    return _server
