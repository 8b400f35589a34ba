"""StatisticsReporter behaviour, with in-process sinks (fast, no HTTP).

The HTTP path is in test_reporter_http.py, process-level behaviour (exit, SIGTERM,
fork) in test_reporter_process.py.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from abeja_runtime.errors import APIConnectionError, BadRequest, HttpError, StatisticsError
from abeja_runtime.statistics import Statistics
from abeja_runtime.statistics.reporter import StatisticsReporter
from abeja_runtime.statistics.sinks import MemorySink


class TimedSink:
    """Records (monotonic time, document, thread name) and can fail or be slow on demand."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.errors: deque[BaseException] = deque()
        self.always: BaseException | None = None
        self.attempts = 0
        self.closed = False
        self.lock = threading.Lock()

    @property
    def description(self) -> str:
        return "timed test sink"

    def send(self, document: dict[str, Any]) -> None:
        self.attempts += 1
        if self.delay:
            time.sleep(self.delay)
        with self.lock:
            error = self.errors.popleft() if self.errors else self.always
        if error is not None:
            raise error
        with self.lock:
            self.received.append((time.monotonic(), document))

    def close(self) -> None:
        self.closed = True

    @property
    def documents(self) -> list[dict[str, Any]]:
        with self.lock:
            return [doc for _, doc in self.received]


def unavailable(retry_after: float | None = None) -> HttpError:
    return HttpError(
        "service_unavailable", "down for a moment", status_code=503, retry_after=retry_after
    )


@pytest.fixture
def make_reporter() -> Iterator[Any]:
    made: list[StatisticsReporter] = []

    def make(**kwargs: Any) -> StatisticsReporter:
        kwargs.setdefault("sink", MemorySink())
        kwargs.setdefault("handle_sigterm", False)
        kwargs.setdefault("flush_at_exit", False)
        kwargs.setdefault("rank", 0)
        reporter = StatisticsReporter(**kwargs)
        made.append(reporter)
        return reporter

    yield make
    for reporter in made:
        reporter.close(timeout=5)


def test_keywords_merge_into_the_current_document(make_reporter: Any) -> None:
    sink = MemorySink()
    reporter = make_reporter(sink=sink, min_interval=0)
    reporter.report(epoch=0, num_epochs=3, progress=0.0, train={"loss": 1.0})
    reporter.report(train={"accuracy": 0.5}, validation={"loss": 2})
    reporter.report(lr=0.1, note="warmup")
    reporter.report(train={"loss": None}, note=None)
    expected = {
        "epoch": 0,
        "num_epochs": 3,
        "progress_percentage": 0.0,
        "stages": {"train": {"accuracy": 0.5}, "validation": {"loss": 2}},
        "lr": 0.1,
    }
    assert reporter.last_document == expected
    assert reporter.flush(10)
    assert sink.documents[-1] == expected


def test_statistics_or_document_replaces(make_reporter: Any) -> None:
    reporter = make_reporter(min_interval=0)
    reporter.report(epoch=1, extra=1, train={"loss": 1.0})
    statistics = Statistics(num_epochs=2, epoch=2)
    statistics.add_stage(Statistics.STAGE_VALIDATION, accuracy=0.0)
    reporter.report(statistics)
    assert reporter.last_document == {
        "num_epochs": 2,
        "epoch": 2,
        "stages": {"validation": {"accuracy": 0.0}},
    }
    reporter.report({"epoch": 3, "stages": {"train": {"loss": 0.5}}}, progress=1.0)
    assert reporter.last_document == {
        "epoch": 3,
        "progress_percentage": 1.0,
        "stages": {"train": {"loss": 0.5}},
    }
    reporter.report(stages={"test": {"accuracy": 1}}, progress_percentage=0.5)
    assert reporter.last_document["stages"] == {"train": {"loss": 0.5}, "test": {"accuracy": 1}}
    assert reporter.last_document["progress_percentage"] == 0.5
    reporter.report(statistics=Statistics(epoch=4))  # the keyword spelling
    assert reporter.last_document == {"epoch": 4}


def test_later_mutation_by_the_caller_does_not_change_what_was_reported(
    make_reporter: Any,
) -> None:
    reporter = make_reporter(min_interval=0)
    stage = {"loss": 1.0}
    reporter.report(train=stage)
    stage["loss"] = 99.0
    assert reporter.last_document == {"stages": {"train": {"loss": 1.0}}}


def test_bad_input_raises_at_the_call_site_and_changes_nothing(make_reporter: Any) -> None:
    reporter = make_reporter(min_interval=0)
    reporter.report(epoch=1)
    with pytest.raises(StatisticsError, match=r"stages\.train\.model"):
        reporter.report(train={"loss": 1.0, "model": object()})
    with pytest.raises(StatisticsError, match="progress"):
        reporter.report(progress=42)
    with pytest.raises(StatisticsError, match="epoch"):
        reporter.report(epoch=-1)
    with pytest.raises(StatisticsError, match="whole document"):
        reporter.report(train=Statistics(epoch=1))  # type: ignore[arg-type]
    with pytest.raises(StatisticsError):
        reporter.report([1, 2])  # type: ignore[arg-type]
    assert reporter.last_document == {"epoch": 1}
    assert reporter.counters["reported"] == 1


def test_non_strict_logs_once_and_ignores(
    make_reporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = make_reporter(min_interval=0, strict=False)
    with caplog.at_level(logging.WARNING, logger="abeja_runtime.reporter"):
        for _ in range(3):
            reporter.report(train={"model": object()})
    assert len([r for r in caplog.records if "ignored a report" in r.message]) == 1
    assert reporter.counters["reported"] == 0


def test_every_epoch_end_arrives_in_order_and_steps_are_coalesced(make_reporter: Any) -> None:
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=60)
    step = 0
    for epoch in range(20):
        for _ in range(50):
            step += 1
            reporter.report(step=step, epoch=epoch, train={"loss": 1 / step}, ended=None)
        reporter.report(step=step, validation={"accuracy": epoch / 20}, ended=epoch, epoch_end=True)
    reporter.report(step=step + 1, ended=None)
    assert reporter.flush(10)
    docs = sink.documents
    steps = [doc["step"] for doc in docs]
    assert steps == sorted(set(steps)), "older document after a newer one"
    epoch_docs = [doc for doc in docs if "ended" in doc]
    assert [doc["ended"] for doc in epoch_docs] == list(range(20))
    assert [doc["epoch"] for doc in epoch_docs] == list(range(20))
    assert [doc["stages"]["validation"]["accuracy"] for doc in epoch_docs] == [
        e / 20 for e in range(20)
    ]
    # min_interval is 60 s: besides the epoch ends, only the first step and the flushed
    # last one went out
    assert docs[-1]["step"] == step + 1
    assert len(docs) <= 20 + 3
    counters = reporter.counters
    assert counters["reported"] == 20 * 51 + 1
    assert counters["epoch_ends"] == 20
    assert counters["pending"] == 0
    assert counters["sent"] == len(docs)
    assert counters["sent"] + counters["coalesced"] == counters["reported"]


def test_server_never_sees_older_after_newer_under_interleaving(make_reporter: Any) -> None:
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=0)
    for i in range(3000):
        reporter.report(i=i, epoch_end=(i % 7 == 0))
    assert reporter.flush(10)
    received = [doc["i"] for doc in sink.documents]
    assert received == sorted(set(received))
    assert {i for i in range(3000) if i % 7 == 0} <= set(received)
    assert received[-1] == 2999


def test_throttling_holds(make_reporter: Any) -> None:
    sink = TimedSink()
    interval = 0.25
    reporter = make_reporter(sink=sink, min_interval=interval)
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 1.5:
        i += 1
        reporter.report(i=i)
        time.sleep(0.0005)
    elapsed = time.monotonic() - started
    times = [at for at, _ in sink.received]
    # the sender may be late on a busy machine, never early
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= interval * 0.95 for gap in gaps), gaps
    assert 2 <= len(times) <= elapsed / interval + 2
    assert reporter.counters["coalesced"] > 10 * len(times)


def test_flush_sends_the_throttled_snapshot_at_once(make_reporter: Any) -> None:
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=3600)
    reporter.report(epoch=1)
    reporter.report(epoch=2)
    assert reporter.flush(10)
    assert sink.documents[-1] == {"epoch": 2}
    assert reporter.flush(10)  # nothing new: immediately true


def test_flush_while_another_thread_keeps_reporting(make_reporter: Any) -> None:
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=3600)
    reporter.report(i=0)
    assert reporter.flush(10)
    stop = threading.Event()
    reported = [0]

    def loop() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            reporter.report(i=i)
            reported[0] = i

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        for _ in range(5):
            time.sleep(0.05)
            floor = reported[0]  # reported before this flush: must be on the "server"
            assert reporter.flush(10)
            assert sink.documents[-1]["i"] >= floor
    finally:
        stop.set()
        thread.join()
    assert len(sink.documents) <= 6  # the flushes posted, the 3600 s throttle did not


def test_flush_works_while_this_thread_holds_the_report_lock(make_reporter: Any) -> None:
    # what a SIGTERM handler sees when it interrupted report() on the main thread: the
    # sender cannot take the lock, so flush() copies the document itself (re-entrantly)
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=3600)
    reporter.report(i=1)
    assert reporter.flush(10)
    reporter.report(i=2)
    reporter._lock.acquire()
    try:
        assert reporter.flush(10)
    finally:
        reporter._lock.release()
    assert sink.documents[-1] == {"i": 2}


def test_flush_without_sender_or_reports(make_reporter: Any) -> None:
    reporter = make_reporter()
    assert reporter.flush(0)
    assert reporter.close()


def test_other_ranks_post_nothing(make_reporter: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = MemorySink()
    explicit = make_reporter(sink=sink, rank=1, min_interval=0)
    explicit.report(epoch=1, epoch_end=True)
    assert not explicit.enabled
    assert "rank 1" in (explicit.disabled_reason or "")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    from_env = make_reporter(sink=sink, rank=None, min_interval=0)
    from_env.report(epoch=1)
    assert from_env.flush(1) and explicit.flush(1)
    assert sink.documents == []
    assert from_env.counters["reported"] == 0


def test_permanent_error_is_logged_once_and_later_snapshots_still_go(
    make_reporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=0)
    refusal = BadRequest("bad_request", "stage names must be short", status_code=400)
    sink.errors.extend([refusal, refusal])
    with caplog.at_level(logging.WARNING, logger="abeja_runtime.reporter"):
        reporter.report(epoch=1, epoch_end=True)
        reporter.report(epoch=2, epoch_end=True)
        assert not reporter.flush(10)
        reporter.report(epoch=3, epoch_end=True)
        assert reporter.flush(10)
    assert sink.documents == [{"epoch": 3}]
    assert reporter.counters["failed"] == 2
    assert sink.attempts == 3  # never retried
    messages = [r.getMessage() for r in caplog.records]
    refused = [m for m in messages if "stage names must be short" in m]
    assert len(refused) == 1 and "timed test sink" in refused[0]


def test_transient_errors_are_retried_honouring_retry_after(make_reporter: Any) -> None:
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=0)
    sink.errors.extend([unavailable(retry_after=0.2), APIConnectionError("refused", sent=False)])
    started = time.monotonic()
    reporter.report(epoch=1, epoch_end=True)
    assert reporter.flush(20)
    assert sink.documents == [{"epoch": 1}]
    assert sink.received[0][0] - started >= 0.2
    assert reporter.counters["retried"] == 2
    assert reporter.counters["sent"] == 1
    assert reporter.last_error is not None


def test_newer_step_snapshot_replaces_the_one_being_retried(make_reporter: Any) -> None:
    sink = TimedSink()
    sink.always = unavailable(retry_after=0.05)
    reporter = make_reporter(sink=sink, min_interval=0)
    for i in range(200):
        reporter.report(i=i)
        time.sleep(0.001)
    sink.always = None
    assert reporter.flush(20)
    assert sink.documents[-1] == {"i": 199}
    assert len(sink.documents) <= 2
    assert reporter.counters["retried"] >= 1


def test_epoch_end_queue_is_bounded_and_drops_are_counted(make_reporter: Any) -> None:
    sink = TimedSink()
    sink.always = unavailable(retry_after=0.05)
    reporter = make_reporter(sink=sink, min_interval=0, max_pending_epoch_ends=5)
    for epoch in range(50):
        reporter.report(epoch=epoch, epoch_end=True)
    counters = reporter.counters
    assert counters["pending"] <= 6
    assert counters["dropped"] >= 50 - 6
    sink.always = None
    assert not reporter.flush(20)  # some of what was reported was dropped
    epochs = [doc["epoch"] for doc in sink.documents]
    assert epochs == sorted(epochs)
    assert epochs[-5:] == [45, 46, 47, 48, 49]
    assert counters["dropped"] + len(epochs) == 50


class BlockedSink(TimedSink):
    """A sink whose sends block until released: a server that stopped answering."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def send(self, document: dict[str, Any]) -> None:
        self.entered.set()
        self.release.wait(30)
        super().send(document)


def test_report_never_waits_for_a_blocked_sink(make_reporter: Any) -> None:
    # Not a timing bound (a loaded machine can pause any thread for tens of ms): every
    # report, steps and an epoch end, returns while the sink's send is still blocked.
    sink = BlockedSink()
    reporter = make_reporter(sink=sink, min_interval=0)
    reporter.report(i=0)
    assert sink.entered.wait(10)  # the sender is inside send() and stays there
    done = threading.Event()

    def loop() -> None:
        for i in range(1, 2001):
            reporter.report(i=i, train={"loss": 0.1}, epoch_end=(i == 1000))
        done.set()

    threading.Thread(target=loop, daemon=True).start()
    try:
        assert done.wait(20), "report() waited for the blocked sink"
        assert not sink.received  # nothing got through: the first send is still blocked
    finally:
        sink.release.set()
    assert reporter.flush(20)
    assert sink.documents[-1]["i"] == 2000
    assert any(doc.get("i") == 1000 for doc in sink.documents)  # the epoch end too


class FakeDeviceScalar:
    """Tensor-like value that records which thread read it (a CUDA tensor's .item() syncs)."""

    shape = ()

    def __init__(self, value: float) -> None:
        self.value = value
        self.read_by: list[str] = []

    def item(self) -> float:
        self.read_by.append(threading.current_thread().name)
        return self.value


def test_tensor_values_are_read_on_the_sender_thread_only(make_reporter: Any) -> None:
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=0)
    loss = FakeDeviceScalar(0.25)
    reporter.report(train={"loss": loss}, epoch_end=True)
    assert reporter.flush(10)
    assert sink.documents == [{"stages": {"train": {"loss": 0.25}}}]
    assert loss.read_by and threading.current_thread().name not in loss.read_by
    assert set(loss.read_by) == {"abeja-runtime-statistics"}


def test_an_unreadable_value_is_left_out_not_fatal(
    make_reporter: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(FakeDeviceScalar):
        def item(self) -> float:
            raise RuntimeError("device lost")

    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=0)
    with caplog.at_level(logging.WARNING, logger="abeja_runtime.reporter"):
        reporter.report(epoch=1, train={"loss": Broken(1.0), "accuracy": 0.5})
        assert reporter.flush(10)
    assert sink.documents == [{"epoch": 1, "stages": {"train": {"accuracy": 0.5}}}]
    assert any("stages.train.loss" in r.getMessage() for r in caplog.records)


@pytest.mark.framework
def test_torch_tensors(make_reporter: Any) -> None:
    torch = pytest.importorskip("torch")
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=0)
    weight = torch.tensor(2.0, requires_grad=True)
    reporter.report(train={"loss": weight * 0.25, "n": torch.tensor(3)}, epoch=torch.tensor(1))
    accumulated = torch.tensor(1.0)
    reporter.report(validation={"loss": accumulated}, epoch_end=True)
    accumulated += 100  # in place, after the epoch-end report: must not leak into it
    assert reporter.flush(10)
    assert sink.documents[-1] == {
        "epoch": 1,
        "stages": {"train": {"loss": 0.5, "n": 3}, "validation": {"loss": 1.0}},
    }


def test_nan_and_numpy_are_json_safe(make_reporter: Any) -> None:
    np = pytest.importorskip("numpy")
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=0)
    reporter.report(epoch=np.int64(0), train={"loss": float("nan"), "acc": np.float32(0.5)})
    assert reporter.flush(10)
    assert sink.documents == [{"epoch": 0, "stages": {"train": {"loss": "NaN", "acc": 0.5}}}]
    assert reporter.last_document == sink.documents[0]


def test_concurrent_reporters_lose_no_merge(make_reporter: Any) -> None:
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=0.01)

    def work(k: int) -> None:
        for i in range(2000):
            reporter.report(**{f"t{k}": {"n": i}})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reporter.flush(10)
    expected = {"stages": {f"t{k}": {"n": 1999} for k in range(4)}}
    assert reporter.last_document == expected
    assert sink.documents[-1] == expected


def test_close_flushes_then_ignores_reports(make_reporter: Any) -> None:
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=3600)
    reporter.report(epoch=1)
    reporter.report(epoch=2)
    assert reporter.close(10)
    assert sink.documents[-1] == {"epoch": 2}
    assert sink.closed
    reporter.report(epoch=3)
    assert not reporter.enabled
    assert reporter.flush(1)
    assert sink.documents[-1] == {"epoch": 2}


def test_epoch_ends_are_on_disk_before_report_returns_and_removed_once_delivered(
    make_reporter: Any, tmp_path: Any
) -> None:
    from abeja_runtime.statistics.spool import Spool

    sink = TimedSink()
    sink.always = unavailable(retry_after=0.05)
    reporter = make_reporter(sink=sink, min_interval=0, spool_dir=tmp_path)
    reporter.report(epoch=1, epoch_end=True)
    reporter.report(epoch=2)
    reporter.report(epoch=3, epoch_end=True)
    written = (tmp_path / "records.log").read_text()
    assert '"epoch":1' in written and '"epoch":3' in written
    assert '"epoch":2' not in written  # step reports never touch the spool
    sink.always = None
    assert reporter.flush(10)
    assert [doc["epoch"] for doc in sink.documents] == [1, 3]
    assert (tmp_path / "records.log").stat().st_size == 0
    reporter.close(5)
    assert Spool(tmp_path).pending() == []


def test_system_metrics_are_added_under_one_key(make_reporter: Any) -> None:
    sink = TimedSink()
    reporter = make_reporter(sink=sink, min_interval=0, system_metrics=True)
    reporter.report(epoch=1)
    assert reporter.flush(10)
    doc = sink.documents[-1]
    assert doc["epoch"] == 1
    assert set(doc["system"]) >= {"cpu_percent", "memory_rss_bytes", "system_memory_percent"}
    assert "system" not in reporter.last_document


def test_counters_are_a_plain_dict(make_reporter: Any) -> None:
    reporter = make_reporter()
    assert set(reporter.counters) == {
        "reported",
        "epoch_ends",
        "sent",
        "coalesced",
        "retried",
        "failed",
        "dropped",
        "pending",
        "repaired",
    }
    assert "enabled" in repr(reporter)


def test_a_value_whose_own_check_fails_is_a_statistics_error(make_reporter: Any) -> None:
    class Hostile:
        def item(self) -> float:
            return 1.0

        @property
        def shape(self) -> tuple[int, ...]:
            raise RuntimeError("no shape for you")

    reporter = make_reporter(min_interval=0)
    with pytest.raises(StatisticsError, match="no shape for you"):
        reporter.report(train={"loss": Hostile()})
    quiet = make_reporter(min_interval=0, strict=False)
    quiet.report(train={"loss": Hostile()})  # ignored, never raised
    assert quiet.counters["reported"] == 0
