"""Issue 13: bad values refused at the call, unforeseen refusals, flags, flush after an outage.

Against the local statistics server of tests/support/statistics_server.py (real HTTP on
127.0.0.1), plus the reporter's queue/sequence state driven without threads.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from abeja_runtime.config import env_flag
from abeja_runtime.errors import ConfigurationError, StatisticsError
from abeja_runtime.statistics import _sender
from abeja_runtime.statistics._delivery_state import DeliveryState
from abeja_runtime.statistics.reporter import StatisticsReporter
from abeja_runtime.statistics.spool import spool_enabled

from tests.support.statistics_server import StatisticsServer


@pytest.fixture
def make_reporter(make_reporter: Any) -> Any:
    """The statistics tests' reporter, posting every report at once by default."""

    def make(**kwargs: Any) -> StatisticsReporter:
        kwargs.setdefault("min_interval", 0)
        reporter: StatisticsReporter = make_reporter(**kwargs)
        return reporter

    return make


# every value of issue 13, point 1: the platform refuses each of them
BAD_REPORTS: list[tuple[str, dict[str, Any]]] = [
    ("formatted accuracy", {"train": {"loss": 0.5, "accuracy": "51%"}}),
    ("bool loss", {"train": {"loss": True}}),
    ("list loss", {"train": {"loss": [0.1]}}),
    ("dict accuracy", {"train": {"accuracy": {"top1": 0.5}}}),
    ("numpy bool loss", {"train": {"loss": np.bool_(True)}}),
    ("empty stage name", {"": {"loss": 0.1}}),
    ("document over 1 MiB", {"note": "x" * (1024 * 1024 + 10)}),
    ("int over 4,300 digits", {"big": 10**5000}),
    ("epoch > num_epochs", {"epoch": 5}),
]


@pytest.mark.parametrize(("what", "bad"), BAD_REPORTS, ids=[what for what, _ in BAD_REPORTS])
def test_a_bad_value_is_an_error_at_the_call_and_later_reports_arrive(
    server: StatisticsServer, make_reporter: Any, what: str, bad: dict[str, Any]
) -> None:
    reporter = make_reporter()
    reporter.report(epoch=1, num_epochs=3, train={"loss": 0.6}, epoch_end=True)
    before = reporter.last_document
    for epoch_end in (False, True):
        with pytest.raises(StatisticsError):
            reporter.report(**bad, epoch_end=epoch_end)
        assert reporter.last_document == before, what  # left exactly as it was
    reporter.report(epoch=2, num_epochs=3, validation={"loss": 0.4}, epoch_end=True)
    assert reporter.flush(10)
    docs = server.documents
    assert docs[-1] == {
        "epoch": 2,
        "num_epochs": 3,
        "stages": {"train": {"loss": 0.6}, "validation": {"loss": 0.4}},
    }
    assert reporter.counters["failed"] == 0
    assert reporter.counters["reported"] == 2


def test_epoch_beyond_num_epochs_is_checked_against_the_merged_document(
    make_reporter: Any,
) -> None:
    reporter = make_reporter()
    reporter.report(num_epochs=3)
    reporter.report(epoch=3)  # the hot path: plain ints
    with pytest.raises(StatisticsError, match="num_epochs"):
        reporter.report(epoch=4)
    with pytest.raises(StatisticsError, match="num_epochs"):
        reporter.report(num_epochs=2)
    assert reporter.last_document == {"epoch": 3, "num_epochs": 3}


def test_many_small_reports_reach_the_size_limit_at_the_call(make_reporter: Any) -> None:
    reporter = make_reporter(min_interval=3600)
    reporter.report(train={"loss": 1.0})
    with pytest.raises(StatisticsError, match="1,048,576"):
        for i in range(20_000):  # short keys and values: the hot path's running bound
            reporter.report(**{f"k{i:06d}": "\u00e9" * 60})  # 6 JSON bytes per character
    assert 2_000 < reporter.counters["reported"] < 20_000


def test_a_refusal_the_rules_did_not_foresee_lets_the_next_epoch_end_through(
    server: StatisticsServer, make_reporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server.refuse_key = "stages.train.f1"  # a newer server refuses a key the rules accept
    reporter = make_reporter()
    with caplog.at_level(logging.WARNING, logger="abeja_runtime.reporter"):
        reporter.report(epoch=0, num_epochs=3, train={"loss": 1.0}, epoch_end=True)
        assert reporter.flush(10)
        reporter.report(epoch=1, train={"loss": 0.5, "f1": 0.3}, epoch_end=True)
        assert not reporter.flush(10)  # that one was refused
        reporter.report(epoch=2, train={"loss": 0.4}, epoch_end=True)
        assert reporter.flush(10)
    docs = server.documents
    assert docs[-1] == {"epoch": 2, "num_epochs": 3, "stages": {"train": {"loss": 0.4}}}
    assert reporter.counters["repaired"] == 1
    assert "f1" not in reporter.last_document["stages"]["train"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "unknown field stages.train.f1" in message  # the server's reason
    assert "Keys added since the last accepted document: stages.train.f1" in message


@pytest.mark.slow
def test_flush_cuts_a_long_backoff_short_once_the_api_is_back(
    server: StatisticsServer, make_reporter: Any
) -> None:
    # a 503 asking for 60 s: the sender waits as it would at the backoff cap of a
    # long outage; the API is back at once, and a flush must not wait those 60 s
    server.fail(503, times=1, retry_after=60)
    reporter = make_reporter()
    reporter.report(epoch=0, epoch_end=True)
    deadline = time.monotonic() + 10
    while not server.refused and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.refused
    time.sleep(0.2)
    started = time.monotonic()
    assert reporter.flush(10)
    assert time.monotonic() - started < 2.0
    assert server.documents == [{"epoch": 0}]


def test_flush_cuts_the_backoff_ceiling_of_a_long_outage_short_once_the_api_is_back(
    server: StatisticsServer, make_reporter: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a minute of connection refused the sender's own backoff sits at its
    # 30 s ceiling: here the first retry already waits the ceiling (no jitter).
    # The API comes back; a flush must deliver within 2 s, not at the next try.
    ceiling = _sender.RETRY.backoff_max
    monkeypatch.setattr(
        _sender, "RETRY", dataclasses.replace(_sender.RETRY, backoff_initial=ceiling, jitter=0.0)
    )
    server.stop()  # connection refused
    reporter = make_reporter()
    reporter.report(epoch=0, num_epochs=3, epoch_end=True)
    deadline = time.monotonic() + 10
    while reporter.counters["retried"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reporter.counters["retried"] == 1  # the sender now sleeps the ceiling
    server.start()
    started = time.monotonic()
    assert reporter.flush(10)
    assert time.monotonic() - started < 2.0
    assert server.documents == [{"epoch": 0, "num_epochs": 3}]


def test_a_flush_during_the_post_of_the_latest_step_posts_it_once(
    server: StatisticsServer, make_reporter: Any, tmp_path: Path
) -> None:
    # The step is on the wire when the flush comes: the flush waits for that post
    # rather than spool (and post again) the very document it carries. A repeat is
    # allowed only after a post whose outcome was unknown (invariant of issue 13).
    server.delay = 0.3
    reporter = make_reporter(spool_dir=tmp_path / "spool")
    reporter.report(epoch=0, num_epochs=2, train={"loss": 1.0})
    deadline = time.monotonic() + 10
    while not server.attempts and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.attempts == 1  # in the server's hands, not answered yet
    assert reporter.flush(20)
    assert server.documents == [{"epoch": 0, "num_epochs": 2, "stages": {"train": {"loss": 1.0}}}]
    assert server.attempts == 1


# ---------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        (" TRUE ", True),
        ("yes", True),
        ("On", True),
        ("0", False),
        ("false", False),
        ("NO", False),
        ("off", False),
        ("", None),
    ],
)
def test_on_off_words(raw: str, expected: bool | None) -> None:
    for default in (True, False):
        want = default if expected is None else expected
        assert env_flag("ABEJA_RUNTIME_X", default, {"ABEJA_RUNTIME_X": raw}) is want


@pytest.mark.parametrize("raw", ["enabled", "disabled", "2", "y", "tru"])
def test_other_flag_values_name_the_variable(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="ABEJA_RUNTIME_SPOOL"):
        spool_enabled({"ABEJA_RUNTIME_SPOOL": raw})
    with pytest.raises(ConfigurationError, match="ABEJA_RUNTIME_HANDLE_SIGTERM"):
        env_flag("ABEJA_RUNTIME_HANDLE_SIGTERM", True, {"ABEJA_RUNTIME_HANDLE_SIGTERM": raw})


def test_spool_flag_off_words_turn_the_spool_off() -> None:
    assert spool_enabled({"ABEJA_RUNTIME_SPOOL": "off"}) is False
    assert spool_enabled({"ABEJA_RUNTIME_SPOOL": "No"}) is False
    assert spool_enabled({}) is True


def test_zero_report_timeout_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ABEJA_RUNTIME_REPORT_TIMEOUT", "0")
    with pytest.raises(ConfigurationError, match="ABEJA_RUNTIME_REPORT_TIMEOUT"):
        StatisticsReporter(handle_sigterm=False, flush_at_exit=False, spool=False)


# ---------------------------------------------------------------------------- state


def _step(state: DeliveryState, **values: Any) -> None:
    with state.lock:
        state.doc.update(values)
        state.step_seq = state.seq + 1
        state.seq = state.step_seq


def _epoch_end(state: DeliveryState, position: int | None, **values: Any) -> None:
    with state.lock:
        state.doc.update(values)
        state.must_seq = state.seq + 1
        state.seq += 1
        snapshot = state.begin_must()
    assert snapshot is not None
    state.store_must(snapshot, position)


def test_state_a_step_waits_for_older_spool_records_and_is_coalesced_by_an_epoch_end() -> None:
    state = DeliveryState(max_memory=10)
    _step(state, i=1)
    with state.lock:
        assert state.take_step(barrier=4)  # four records of the job are older
    assert state.next_local(acked=3) is None  # I1: not before record 4
    snapshot = state.next_local(acked=4)
    assert snapshot is not None and snapshot.document == {"i": 1}
    _epoch_end(state, position=5, i=2)
    assert state.next_local(acked=4) is None  # the step was overtaken: dropped
    assert state.step is None
    assert state.next_local(acked=5) is None
    assert state.settled_seq == 2  # the epoch end is delivered (acknowledged)


def test_state_memory_keeps_order_and_counts_drops() -> None:
    state = DeliveryState(max_memory=2)
    for i in range(4):
        _epoch_end(state, position=None, i=i)
    assert state.dropped == 2
    delivered = []
    while (snapshot := state.next_local(acked=0)) is not None:
        state.settle(snapshot, delivered=True)
        delivered.append(snapshot.document["i"])
    assert delivered == [2, 3]
    assert state.any_refused(0, 4)  # what was dropped counts as not delivered


def test_state_memory_waits_for_this_reporters_spooled_records() -> None:
    state = DeliveryState(max_memory=10)
    _epoch_end(state, position=7, i=0)  # on disk
    _epoch_end(state, position=None, i=1)  # the disk refused it: memory
    assert state.next_local(acked=6) is None  # record 7 goes first
    snapshot = state.next_local(acked=7)
    assert snapshot is not None and snapshot.document == {"i": 1}


def test_state_a_write_in_progress_holds_newer_steps_back() -> None:
    state = DeliveryState(max_memory=10)
    with state.lock:
        state.must_seq = state.seq + 1
        state.seq += 1
        snapshot = state.begin_must()  # written to the spool next, not yet stored
    _step(state, i=1)
    with state.lock:
        state.take_step(barrier=0)
    assert snapshot is not None
    assert state.next_local(acked=0) is None
    state.store_must(snapshot, 1)
    assert state.next_local(acked=0) is None  # the record goes first
    step = state.next_local(acked=1)
    assert step is not None and step.seq == 2


def test_state_a_flush_makes_the_latest_step_must_deliver_even_when_already_copied() -> None:
    state = DeliveryState(max_memory=10)
    _step(state, i=1)
    with state.lock:
        assert state.take_step(barrier=0)  # the sender holds a copy, not posted yet
        snapshot = state.begin_must(flushing=True)
    assert snapshot is not None and snapshot.document == {"i": 1}
    state.store_must(snapshot, 3)
    assert state.next_local(acked=2) is None
    assert state.step is None  # the copy is dropped: the spool record is posted once
    with state.lock:
        assert state.begin_must(flushing=True) is None  # already must-deliver
