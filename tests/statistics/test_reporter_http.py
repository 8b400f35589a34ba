"""The reporter against a real HTTP statistics endpoint on 127.0.0.1.

The server (tests/support/statistics_server.py) records what it received and can be slow,
failing or stopped, so these tests cover the whole path: JobContext -> APISink ->
APIClient -> wire, with the reporter's own retry loop.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import Any

import pytest

from abeja_runtime.job import JobContext
from abeja_runtime.statistics import Statistics

from tests.support.statistics_server import TOKEN, StatisticsServer


def test_server_statistics_equal_what_was_reported(
    server: StatisticsServer, make_reporter: Any
) -> None:
    np = pytest.importorskip("numpy")
    reporter = make_reporter(min_interval=0)
    for epoch in range(3):
        reporter.report(
            epoch=epoch,
            num_epochs=3,
            progress=(epoch + 1) / 3,
            train={"loss": np.float32(1 / (epoch + 1)), "accuracy": 0.0},
            validation={"loss": float("nan")},
            lr=0.01,
            epoch_end=True,
        )
    statistics = Statistics(num_epochs=3, epoch=3, progress_percentage=1.0, done=True)
    statistics.add_stage(Statistics.STAGE_TRAIN, accuracy=0, loss=0.0)
    reporter.report(statistics)
    assert reporter.flush(20)
    docs = server.documents
    assert docs[:3] == [
        {
            "epoch": epoch,
            "num_epochs": 3,
            "progress_percentage": (epoch + 1) / 3,
            "stages": {
                "train": {"loss": float(np.float32(1 / (epoch + 1))), "accuracy": 0.0},
                "validation": {"loss": "NaN"},
            },
            "lr": 0.01,
        }
        for epoch in range(3)
    ]
    assert docs[-1] == statistics.get_statistics() == reporter.last_document
    assert reporter.counters["sent"] == len(docs) == 4


def test_throttling_over_http(server: StatisticsServer, make_reporter: Any) -> None:
    interval = 0.3
    reporter = make_reporter(min_interval=interval)
    started = time.monotonic()
    step = 0
    while time.monotonic() - started < 1.8:
        step += 1
        reporter.report(step=step, train={"loss": 1 / step})
        time.sleep(0.001)
    elapsed = time.monotonic() - started
    times = server.times
    assert 2 <= len(times) <= elapsed / interval + 2
    assert all(b - a >= interval * 0.9 for a, b in itertools.pairwise(times))
    assert reporter.flush(10)
    assert server.documents[-1]["step"] == step


@pytest.mark.slow
def test_loop_not_blocked_while_server_is_slow(
    server: StatisticsServer, make_reporter: Any
) -> None:
    # Not a wall-clock bound per call (a loaded machine pauses any thread for tens of
    # ms): 2,000 reports, an epoch end among them, all return while the first post is
    # still held by the server.
    server.delay = 3.0
    reporter = make_reporter(min_interval=0)
    reporter.report(step=0)
    deadline = time.monotonic() + 10
    while not server.attempts and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.attempts == 1
    for calls in range(1, 2001):
        reporter.report(step=calls, train={"loss": 0.5}, epoch_end=calls == 1000)
    assert not server.documents  # the first post is still in the server's hands
    server.delay = 0.0
    assert reporter.flush(20)
    assert server.documents[-1]["step"] == 2000
    assert any(document["step"] == 1000 for document in server.documents)


def test_outage_then_recovery_delivers_every_epoch_end_in_order(
    server: StatisticsServer, make_reporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = make_reporter(min_interval=0.05)
    reporter.report(epoch=0, epoch_end=True)
    assert reporter.flush(10)
    server.stop()  # connection refused from now on
    worst = 0.0
    with caplog.at_level(logging.WARNING, logger="abeja_runtime.reporter"):
        for epoch in range(1, 6):
            for step in range(2000):
                before = time.perf_counter()
                reporter.report(epoch=epoch, step=step, train={"loss": step / 2000})
                worst = max(worst, time.perf_counter() - before)
            reporter.report(epoch=epoch, validation={"accuracy": epoch / 10}, epoch_end=True)
        assert not reporter.flush(0.3)  # the server is down: not delivered, and bounded
        assert reporter.counters["retried"] >= 1
        assert reporter.counters["pending"] >= 5
        server.start()  # back, on the same port
        assert reporter.flush(60)
    epoch_docs = [doc for doc in server.documents if "validation" in doc.get("stages", {})]
    assert [doc["epoch"] for doc in epoch_docs[:5]] == [1, 2, 3, 4, 5]
    assert [doc["stages"]["validation"]["accuracy"] for doc in epoch_docs[:5]] == [
        e / 10 for e in range(1, 6)
    ]
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1  # logged once, not per try
    assert worst < 0.05, worst


def test_429_retry_after_is_honoured(server: StatisticsServer, make_reporter: Any) -> None:
    server.fail(429, times=2, retry_after=0.4)
    reporter = make_reporter(min_interval=0)
    reporter.report(epoch=1, epoch_end=True)
    assert reporter.flush(20)
    refused_at = [at for at, _ in server.refused]
    assert len(refused_at) == 2
    assert refused_at[1] - refused_at[0] >= 0.4 * 0.95
    assert server.times[0] - refused_at[1] >= 0.4 * 0.95
    assert server.documents == [{"epoch": 1}]
    assert reporter.counters["retried"] == 2


def test_a_flush_never_cuts_a_servers_retry_after_short(
    server: StatisticsServer, make_reporter: Any
) -> None:
    server.fail(429, times=1, retry_after=1.0)
    reporter = make_reporter(min_interval=0)
    reporter.report(epoch=1, epoch_end=True)
    deadline = time.monotonic() + 20
    while not server.refused and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.refused
    assert reporter.flush(20)  # a flush cuts our own backoff short, not the server's wait
    assert server.times[0] - server.refused[0][0] >= 1.0 * 0.95
    assert server.documents == [{"epoch": 1}]


def test_5xx_is_retried_with_backoff(server: StatisticsServer, make_reporter: Any) -> None:
    server.fail(503, times=2)
    reporter = make_reporter(min_interval=0)
    reporter.report(epoch=7, epoch_end=True)
    assert reporter.flush(30)
    assert server.documents == [{"epoch": 7}]
    assert server.attempts == 3


def test_permanent_4xx_is_logged_once_with_the_server_message(
    server: StatisticsServer, make_reporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server.fail(400, times=3)
    reporter = make_reporter(min_interval=0)
    with caplog.at_level(logging.WARNING, logger="abeja_runtime.reporter"):
        for epoch in range(3):
            reporter.report(epoch=epoch, epoch_end=True)
        assert not reporter.flush(10)
        reporter.report(epoch=3, epoch_end=True)
        assert reporter.flush(10)
    assert server.attempts == 4  # each refused snapshot tried exactly once
    assert server.documents == [{"epoch": 3}]
    refused = [r.getMessage() for r in caplog.records if "injected 400" in r.getMessage()]
    assert len(refused) == 1
    assert reporter.counters["failed"] == 3


def test_wrong_token_is_permanent_and_never_logged(
    server: StatisticsServer, make_reporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    env = server.job_env()
    env["PLATFORM_AUTH_TOKEN"] = "wrong-token-value-123"
    reporter = make_reporter(context=JobContext.from_env(env), min_interval=0)
    with caplog.at_level(logging.DEBUG):
        reporter.report(epoch=1, epoch_end=True)
        assert not reporter.flush(10)
    assert reporter.counters["failed"] == 1
    assert server.attempts == 1
    text = caplog.text + repr(reporter) + str(reporter.last_error)
    assert "wrong-token-value-123" not in text
    assert TOKEN not in text


def test_nothing_counts_as_pending_once_a_flush_returned(
    server: StatisticsServer, make_reporter: Any
) -> None:
    # the post that settles a flush must have left the in-flight slot by then (before the
    # fix about 1 run in 100 counted it as still pending, more with the spool's ack write)
    for _ in range(60):
        before = len(server.documents)
        reporter = make_reporter(min_interval=0)
        for epoch in range(3):
            reporter.report(epoch=epoch, num_epochs=3, train={"loss": 1.0}, epoch_end=True)
        reporter.report(epoch=3, train={"loss": 0.0})
        assert reporter.flush(20)
        assert reporter.counters["pending"] == 0
        assert reporter.counters["sent"] == len(server.documents) - before
        reporter.close(5)
