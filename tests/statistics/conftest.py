"""Fixtures of the statistics tests.

``server`` here is the local statistics endpoint of tests/support/statistics_server.py
(one per test: it records every document it received), not the suite's
pytest-httpserver of the same name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from abeja_runtime.job import JobContext
from abeja_runtime.statistics.reporter import StatisticsReporter

from tests.support.statistics_server import StatisticsServer


@pytest.fixture
def server() -> Iterator[StatisticsServer]:
    with StatisticsServer() as srv:
        yield srv


@pytest.fixture
def make_reporter(server: StatisticsServer) -> Iterator[Any]:
    """Reporters posting to ``server`` as its job, with no process hooks; closed after."""
    made: list[StatisticsReporter] = []

    def make(**kwargs: Any) -> StatisticsReporter:
        kwargs.setdefault("context", JobContext.from_env(server.job_env()))
        kwargs.setdefault("handle_sigterm", False)
        kwargs.setdefault("flush_at_exit", False)
        kwargs.setdefault("rank", 0)
        kwargs.setdefault("request_timeout", 5)
        reporter = StatisticsReporter(**kwargs)
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        reporter.close(timeout=5)
