"""Process-level behaviour of the default reporter: exit, SIGTERM, fork, ranks, no job.

Each test runs a small training-like script in a fresh interpreter against the
statistics server of tests/support/statistics_server.py (or no server at all).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.processes import clean_env, run, start
from tests.support.statistics_server import StatisticsServer

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and fork")


def job_env(server: StatisticsServer, **extra: str) -> dict[str, str]:
    # a long interval: the last snapshot is only delivered by the exit/SIGTERM flush;
    # system metrics (on in a job) are off in server.job_env() unless asked
    return clean_env(**{**server.job_env(), "ABEJA_RUNTIME_REPORT_INTERVAL": "3600", **extra})


FIRST_THEN_FINAL = """
    import abeja_runtime
    abeja_runtime.report(epoch=0, num_epochs=2, train={"loss": 1.0})
    assert abeja_runtime.flush(20)
    abeja_runtime.report(epoch=1, train={"loss": 0.25}, final=True)
"""
FINAL = {"epoch": 1, "num_epochs": 2, "stages": {"train": {"loss": 0.25}}, "final": True}


def test_exit_flush_delivers_the_last_snapshot(server: StatisticsServer) -> None:
    result = run(FIRST_THEN_FINAL, job_env(server))
    assert result.returncode == 0, result.stderr
    assert server.documents[-1] == FINAL
    assert len(server.documents) == 2


def test_exit_flush_is_bounded_when_the_server_is_down(server: StatisticsServer) -> None:
    code = FIRST_THEN_FINAL + "\n    print('ready', flush=True)\n    input()\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=job_env(server, ABEJA_RUNTIME_EXIT_TIMEOUT="0.5"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    server.stop()
    _, err = proc.communicate("\n", timeout=60)  # exits instead of retrying forever
    assert proc.returncode == 0, err
    assert "at exit: statistics not fully delivered within 0.5 s" in err


def test_sigterm_flushes_then_dies_of_sigterm(server: StatisticsServer) -> None:
    code = FIRST_THEN_FINAL + "\n    print('ready', flush=True)\n    import time; time.sleep(120)\n"
    proc = start(code, job_env(server))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err  # the default action, as before
    assert server.documents[-1] == FINAL


def test_sigterm_chains_to_the_previous_handler(server: StatisticsServer) -> None:
    code = (
        """
    import os, signal
    def mine(signum, frame):
        print("user handler", flush=True)
        os._exit(7)  # no atexit: only the reporter's SIGTERM flush can deliver FINAL
    signal.signal(signal.SIGTERM, mine)
    """
        + FIRST_THEN_FINAL
        + "\n    print('ready', flush=True)\n    import time; time.sleep(120)\n"
    )
    proc = start(code, job_env(server))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 7, err
    assert "user handler" in out
    assert server.documents[-1] == FINAL


def test_sigterm_flush_is_bounded_when_the_server_is_down(server: StatisticsServer) -> None:
    code = FIRST_THEN_FINAL + "\n    print('ready', flush=True)\n    import time; time.sleep(120)\n"
    proc = start(code, job_env(server, ABEJA_RUNTIME_SIGTERM_TIMEOUT="0.5"))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    server.stop()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)  # far below the 120 s sleep
    assert proc.returncode == -signal.SIGTERM, err
    assert "not fully delivered" in err


def test_other_rank_posts_nothing(server: StatisticsServer) -> None:
    code = """
        import abeja_runtime
        abeja_runtime.report(epoch=1, epoch_end=True)
        print(abeja_runtime.get_reporter().enabled, abeja_runtime.flush(5))
    """
    result = run(code, job_env(server, RANK="1", LOCAL_RANK="1", WORLD_SIZE="2"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]
    assert server.attempts == 0
    rank0 = run(code, job_env(server, RANK="0", LOCAL_RANK="0", WORLD_SIZE="2"))
    assert rank0.stdout.split() == ["True", "True"]
    assert server.documents == [{"epoch": 1}]


def test_forked_children_post_nothing_and_do_not_deadlock(server: StatisticsServer) -> None:
    code = """
        import os, sys, threading, abeja_runtime
        abeja_runtime.report(who="parent", n=0)
        assert abeja_runtime.flush(20)
        stop = False
        def hammer():  # keeps the reporter's lock busy while we fork
            i = 0
            while not stop:
                i += 1
                abeja_runtime.report(who="parent", n=i)
        thread = threading.Thread(target=hammer)
        thread.start()
        children = []
        for k in range(6):
            pid = os.fork()
            if pid == 0:
                for i in range(500):
                    abeja_runtime.report(who="child", i=i, epoch_end=(i % 100 == 0))
                ok = abeja_runtime.flush(2)
                enabled = abeja_runtime.get_reporter().enabled
                os.write(1, f"child {enabled} {ok}\\n".encode())  # one write: no interleaving
                if k % 2:
                    os._exit(0)
                sys.exit(0)  # runs atexit handlers in the child too
            children.append(pid)
        codes = [os.waitpid(pid, 0)[1] for pid in children]
        stop = True
        thread.join()
        abeja_runtime.report(who="parent-final", epoch_end=True)
        assert abeja_runtime.flush(20)
        print("parent", codes, flush=True)
    """
    result = run(code, job_env(server))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines.count("child False True") == 6
    assert lines[-1] == "parent [0, 0, 0, 0, 0, 0]"
    who = [doc["who"] for doc in server.documents]
    assert "child" not in who
    assert who[-1] == "parent-final"


def test_outside_a_job_statistics_go_to_a_json_lines_file(tmp_path: Path) -> None:
    code = """
        import abeja_runtime
        abeja_runtime.report(epoch=0, train={"loss": 0.0}, epoch_end=True)
        abeja_runtime.report(epoch=1, train={"loss": float("nan")}, epoch_end=True)
    """
    result = run(code, clean_env(ABEJA_TRAINING_RESULT_DIR=str(tmp_path / "out")), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "out" / "statistics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["statistics"] for line in lines] == [
        {"epoch": 0, "stages": {"train": {"loss": 0.0}}},
        {"epoch": 1, "stages": {"train": {"loss": "NaN"}}},
    ]
    assert all(line["time"].endswith("Z") for line in lines)
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1, result.stderr
    assert str(path) in notes[0]


def test_broken_job_environment_is_explained_and_does_not_fail(tmp_path: Path) -> None:
    code = """
        import abeja_runtime
        abeja_runtime.report(epoch=3, epoch_end=True)
    """
    env = clean_env(TRAINING_JOB_ID="not-an-id", ABEJA_ORGANIZATION_ID="1234567890123")
    result = run(code, env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "TRAINING_JOB_ID" in result.stderr and "PLATFORM_AUTH_TOKEN" in result.stderr
    assert "abeja-runtime run" in result.stderr
    assert (tmp_path / "statistics.jsonl").exists()


@pytest.mark.framework
def test_dataloader_workers_post_nothing(server: StatisticsServer, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    (tmp_path / "reporting_data.py").write_text(
        textwrap.dedent(
            """
            import abeja_runtime, torch
            from torch.utils.data import Dataset

            class Reporting(Dataset):
                def __len__(self):
                    return 4

                def __getitem__(self, index):
                    abeja_runtime.report(who="worker", epoch_end=True)
                    return torch.tensor(float(abeja_runtime.get_reporter().enabled))
            """
        )
    )
    (tmp_path / "main.py").write_text(
        textwrap.dedent(
            """
            import abeja_runtime
            from torch.utils.data import DataLoader
            from reporting_data import Reporting

            def enabled_in_workers(context):
                loader = DataLoader(Reporting(), num_workers=1, multiprocessing_context=context)
                return [int(batch.item()) for batch in loader]

            if __name__ == "__main__":
                # spawn: a fresh interpreter; the default reporter is made in the worker
                spawned = enabled_in_workers("spawn")
                abeja_runtime.report(who="main")
                assert abeja_runtime.flush(20)
                # fork: the main process's reporter exists and is inherited
                forked = enabled_in_workers("fork")
                abeja_runtime.report(who="main-final", epoch_end=True)
                assert abeja_runtime.flush(20)
                print(spawned, forked)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "main.py"],
        env=job_env(server),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 0, 0, 0] [0, 0, 0, 0]"
    who = [doc["who"] for doc in server.documents]
    assert "worker" not in who
    assert who[-1] == "main-final"


def test_default_reporter_adds_system_metrics_when_asked(tmp_path: Path) -> None:
    code = """
        import abeja_runtime
        abeja_runtime.report(epoch=1)
        assert abeja_runtime.flush(10)
    """
    path = tmp_path / "stats.jsonl"
    env = clean_env(ABEJA_RUNTIME_SYSTEM_METRICS="1", ABEJA_RUNTIME_STATISTICS_FILE=str(path))
    result = run(code, env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(path.read_text().splitlines()[-1])["statistics"]
    assert document["epoch"] == 1
    assert document["system"]["memory_rss_bytes"] > 0


@pytest.mark.parametrize(("setting", "on"), [("", True), ("1", True), ("0", False), ("off", False)])
def test_default_reporter_adds_system_metrics_inside_a_job_unless_turned_off(
    server: StatisticsServer, setting: str, on: bool
) -> None:
    code = """
        import threading
        import abeja_runtime
        abeja_runtime.report(epoch=1)
        assert abeja_runtime.flush(20)
        print(sorted(t.name for t in threading.enumerate()))
    """
    result = run(code, job_env(server, ABEJA_RUNTIME_SYSTEM_METRICS=setting))
    assert result.returncode == 0, result.stderr
    document = server.documents[-1]
    assert document["epoch"] == 1
    if on:  # sampled on the library's own timer thread, never the caller's
        assert document["system"]["memory_rss_bytes"] > 0
        assert document["system"]["samples"] >= 1
        assert "abeja-runtime-sysmetrics" in result.stdout
    else:
        assert "system" not in document
        assert "abeja-runtime-sysmetrics" not in result.stdout


def test_a_bad_system_metrics_interval_keeps_statistics_and_metrics(
    server: StatisticsServer,
) -> None:
    code = """
        import abeja_runtime
        abeja_runtime.report(epoch=1)
        assert abeja_runtime.flush(20)
    """
    env = job_env(
        server, ABEJA_RUNTIME_SYSTEM_METRICS="1", ABEJA_RUNTIME_SYSTEM_METRICS_INTERVAL="soon"
    )
    result = run(code, env)
    assert result.returncode == 0, result.stderr
    assert "ABEJA_RUNTIME_SYSTEM_METRICS_INTERVAL" in result.stderr
    assert "every 10 s" in result.stderr
    assert server.documents[-1]["system"]["interval_s"] == 10.0


@pytest.mark.parametrize(("setting", "installed"), [("", True), ("0", False), ("false", False)])
def test_default_reporter_sigterm_handler_can_be_turned_off(
    tmp_path: Path, setting: str, installed: bool
) -> None:
    code = """
        import signal
        import abeja_runtime
        abeja_runtime.report(epoch=1)
        print(signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)
    """
    env = clean_env(ABEJA_RUNTIME_STATISTICS_FILE=str(tmp_path / "stats.jsonl"))
    if setting:
        env["ABEJA_RUNTIME_HANDLE_SIGTERM"] = setting
    result = run(code, env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(installed)
