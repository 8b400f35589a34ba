"""Fixtures of the API client's tests: a client of the module's local HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.client_support import make_client

if TYPE_CHECKING:
    from pytest_httpserver import HTTPServer

    from abeja_runtime.api.client import APIClient


@pytest.fixture
def client(server: HTTPServer) -> Iterator[APIClient]:
    """An APIClient of ``server`` (a token, fast retries), closed afterwards."""
    with make_client(server) as api:
        yield api
