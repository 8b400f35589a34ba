"""Issue 13, process level: leftovers first, SIGTERM from any thread, one shutdown budget.

Each test runs a small training-like script in a fresh interpreter against the
statistics server of tests/support/statistics_server.py; "the API is down" is a port nothing
listens on.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.support.processes import clean_env, run, start
from tests.support.statistics_server import StatisticsServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # closed: connection refused


def env_for(server: StatisticsServer, *, down: bool = False, **extra: str) -> dict[str, str]:
    env = clean_env(**server.job_env(), ABEJA_RUNTIME_REPORT_INTERVAL="3600", **extra)
    if down:
        env["ABEJA_API_URL"] = dead_url()
    return env


def spool_dir(server: StatisticsServer) -> Path:
    env = server.job_env()
    return Path(env["ABEJA_RUNTIME_SPOOL_DIR"]) / env["TRAINING_JOB_ID"]


KILLED_WHILE_DOWN = """
    import os, abeja_runtime
    for epoch in range(3):
        abeja_runtime.report(epoch=epoch, num_epochs=3, train={"loss": 1.0}, epoch_end=True)
    os._exit(0)  # as SIGKILL: no exit flush, the epoch ends are only in the spool
"""


def leave_leftovers(server: StatisticsServer) -> None:
    result = run(KILLED_WHILE_DOWN, env_for(server, down=True))
    assert result.returncode == 0, result.stderr
    assert (spool_dir(server) / "records.log").stat().st_size > 0
    assert server.documents == []


@pytest.mark.parametrize(
    "restart",
    [
        "from abeja_runtime.statistics.reporter import StatisticsReporter\n"
        "print(StatisticsReporter().flush(60))",
        "import abeja_runtime\nprint(abeja_runtime.flush(60))",
        "import abeja_runtime\nprint(True)",  # imports and exits, never reports
    ],
    ids=["explicit-reporter-flush", "module-flush", "import-and-exit"],
)
def test_a_restart_delivers_the_leftovers_without_a_new_report(
    server: StatisticsServer, restart: str
) -> None:
    leave_leftovers(server)
    result = run(restart, env_for(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"], result.stderr
    assert [d["epoch"] for d in server.documents] == [0, 1, 2]
    assert (spool_dir(server) / "records.log").stat().st_size == 0


def test_sigterm_after_first_use_on_a_worker_thread_delivers_the_latest(
    server: StatisticsServer,
) -> None:
    code = """
        import threading, time
        import abeja_runtime
        def work():
            abeja_runtime.report(epoch=0, num_epochs=2, train={"loss": 1.0})
            assert abeja_runtime.flush(20)
            abeja_runtime.report(epoch=1, train={"loss": 0.25}, final=True)
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        print("ready", flush=True)
        time.sleep(120)
    """
    proc = start(code, env_for(server))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
    assert server.documents[-1] == {
        "epoch": 1,
        "num_epochs": 2,
        "stages": {"train": {"loss": 0.25}},
        "final": True,
    }


def timed_run(code: str, env: dict[str, str], sigterm: bool = False) -> tuple[float, str]:
    """Seconds from the script's 'go' line to its exit, and its stderr."""
    proc = start(code, env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "go"
    began = time.monotonic()
    if sigterm:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return time.monotonic() - began, err


@pytest.mark.slow
def test_flush_then_exit_stays_within_one_budget_when_the_api_is_down(
    server: StatisticsServer,
) -> None:
    code = """
        import abeja_runtime
        abeja_runtime.report(epoch=0, num_epochs=2, train={"loss": 1.0}, epoch_end=True)
        abeja_runtime.report(epoch=1, train={"loss": 0.5})
        print("go", flush=True)
        print(abeja_runtime.flush(3), flush=True)  # as the README says; then exit
    """
    # before: its 3 s flush, then 3 s more at exit
    took, err = timed_run(code, env_for(server, down=True, ABEJA_RUNTIME_EXIT_TIMEOUT="3"))
    assert 2.5 < took < 5.0, err
    directory = spool_dir(server)
    assert f"2 snapshot(s) kept in the spool at {directory}" in err
    assert "abeja-runtime sync" in err


@pytest.mark.slow
def test_own_sigterm_handler_calling_sys_exit_stays_within_one_budget(
    server: StatisticsServer,
) -> None:
    code = """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
        import abeja_runtime
        abeja_runtime.report(epoch=0, num_epochs=2, train={"loss": 1.0}, epoch_end=True)
        print("go", flush=True)
        time.sleep(60)
    """
    env = env_for(
        server, down=True, ABEJA_RUNTIME_SIGTERM_TIMEOUT="3", ABEJA_RUNTIME_EXIT_TIMEOUT="3"
    )
    # before: 3 s SIGTERM flush, then sys.exit and 3 s more at exit
    took, err = timed_run(code, env, sigterm=True)
    assert 2.5 < took < 5.0, err
    assert "kept in the spool at" in err


def test_the_last_line_says_lost_when_the_disk_refused(
    server: StatisticsServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool root should be")
    code = """
        import abeja_runtime
        abeja_runtime.report(epoch=0, num_epochs=2, train={"loss": 1.0}, epoch_end=True)
        print("go", flush=True)
    """
    env = env_for(server, down=True, ABEJA_RUNTIME_EXIT_TIMEOUT="0.5")
    env["ABEJA_RUNTIME_SPOOL_DIR"] = str(blocker)
    _, err = timed_run(code, env)
    assert "could not write an epoch-end snapshot" in err
    assert str(blocker) in err
    assert "1 snapshot(s) lost because the disk refused them" in err
    assert "kept in the spool" not in err


def test_the_last_line_says_all_delivered(server: StatisticsServer) -> None:
    code = """
        import logging
        logging.basicConfig(level=logging.INFO)
        import abeja_runtime
        abeja_runtime.report(epoch=0, num_epochs=2, train={"loss": 1.0}, epoch_end=True)
        print("go", flush=True)
    """
    _, err = timed_run(code, env_for(server))
    assert "at exit: statistics: all delivered" in err.splitlines()[-1]


def test_a_child_forked_before_the_first_report_posts_nothing(server: StatisticsServer) -> None:
    code = """
        import os
        import abeja_runtime
        from abeja_runtime.statistics import reporter
        pid = os.fork()
        if pid == 0:
            abeja_runtime.report(epoch=9, num_epochs=9, epoch_end=True)
            print("child", abeja_runtime.get_reporter().enabled, flush=True)
            os._exit(0)
        os.waitpid(pid, 0)
        abeja_runtime.report(epoch=1, num_epochs=9, epoch_end=True)
        print("parent", abeja_runtime.flush(20), flush=True)
    """
    result = run(code, env_for(server))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["child", "False", "parent", "True"]
    assert server.documents == [{"epoch": 1, "num_epochs": 9}]
