"""Fixtures of the statistics tests.

``server`` here is the local statistics endpoint of tests/support/statistics_server.py
(one per test: it records every document it received), not the suite's
pytest-httpserver of the same name.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.statistics_server import StatisticsServer


@pytest.fixture
def server() -> Iterator[StatisticsServer]:
    with StatisticsServer() as srv:
        yield srv
