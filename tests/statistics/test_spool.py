"""The on-disk statistics spool (abeja_runtime.statistics.spool): format, damage, locks, processes.

Processes and the Training API are real: the emulator on 127.0.0.1, behind the fault
proxy of tests/support/fault_proxy.py where a fault is needed, and training processes started
with ``subprocess`` (killed with SIGKILL where the test says so).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("werkzeug")

from abeja_runtime import cli
from abeja_runtime.emulator import Emulator
from abeja_runtime.statistics.reporter import StatisticsReporter
from abeja_runtime.statistics.sinks import MemorySink
from abeja_runtime.statistics.spool import DATA_FILE_NAME, Spool, SpoolBusyError, default_spool_dir

from tests.support import REPO
from tests.support.emulator_support import job_statistics
from tests.support.fault_proxy import FaultProxy

ROOT = REPO


def child_env(env: dict[str, str], spool_root: Path, **extra: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ABEJA_", "TRAINING_", "PLATFORM_")) and k not in ("RANK",)
    }
    base.update(env)
    base["ABEJA_RUNTIME_SPOOL_DIR"] = str(spool_root)
    base["PYTHONPATH"] = str(ROOT)
    base.update(extra)
    return base


# ---------------------------------------------------------------------------- format


def test_records_in_order_acked_then_removed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", job={"training_job_id": "1234567890123"})
    seqs = [spool.append({"epoch": i, "loss": float("nan") if i == 1 else 0.0}) for i in range(3)]
    assert seqs == [1, 2, 3]
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o700
    for name in os.listdir(tmp_path / "s"):
        assert stat.S_IMODE(os.stat(tmp_path / "s" / name).st_mode) == 0o600, name
    records = spool.pending()
    assert [r.document["epoch"] for r in records] == [0, 1, 2]
    assert records[1].document["loss"] == "NaN"  # strict JSON
    assert records[0].job == {"training_job_id": "1234567890123"}
    spool.acknowledge_seq(1)
    # a new sender (another process, or a restart) sees only what is unacknowledged
    spool.close()
    again = Spool(tmp_path / "s")
    assert [r.seq for r in again.pending()] == [2, 3]
    again.acknowledge_seq(2)
    again.acknowledge_seq(3)
    assert (tmp_path / "s" / DATA_FILE_NAME).stat().st_size == 0  # removed once accepted
    assert again.append({"epoch": 9}) == 4  # seq keeps growing across compaction
    again.close()


def test_damaged_and_truncated_records_are_skipped_with_one_warning_each(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    for i in range(5):
        spool.append({"epoch": i})
    spool.close()
    data = tmp_path / DATA_FILE_NAME
    lines = data.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b'"epoch":1', b'"epoch":7')  # bit rot: CRC mismatch
    data.write_bytes(b"\n".join(lines)[:-20])  # and the last record cut mid-write
    writer = Spool(tmp_path)
    writer.append({"epoch": 5})  # an append after the torn line stays whole
    writer.close()
    caplog.set_level(logging.WARNING, logger="abeja_runtime.spool")
    reader = Spool(tmp_path)
    assert [r.document["epoch"] for r in reader.pending()] == [0, 2, 3, 5]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings
    assert f"{data}: line 2 is damaged (checksum mismatch)" in warnings[0]
    assert f"{data}: line 5 is damaged" in warnings[1]
    reader.close()


def test_damaged_state_file_is_rebuilt(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"epoch": 0})
    spool.append({"epoch": 1})
    spool.pending()
    spool.acknowledge_seq(1)
    spool.close()
    (tmp_path / "state").write_bytes(b"garbage")
    again = Spool(tmp_path)
    assert again.append({"epoch": 2}) == 3  # no seq reused
    assert [r.seq for r in again.pending()] == [2, 3]
    again.close()


def test_one_sender_at_a_time(tmp_path: Path) -> None:
    first, second = Spool(tmp_path), Spool(tmp_path)
    assert first.try_become_sender()
    assert not second.try_become_sender()
    with pytest.raises(SpoolBusyError):
        second.pending()
    first.close()
    assert second.try_become_sender()
    second.close()


@pytest.mark.slow
def test_token_never_written(fresh_emu: Emulator, tmp_path: Path) -> None:
    env = fresh_emu.create_job("spool-token")
    proxy = FaultProxy(fresh_emu.port)
    proxy.refuse()
    env["ABEJA_API_URL"] = proxy.url
    code = """
        import abeja_runtime
        abeja_runtime.report(epoch=0, train={"loss": 0.5}, epoch_end=True)
        abeja_runtime.report(epoch=0, train={"loss": 0.4})
        abeja_runtime.flush(0.5)
    """
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=child_env(env, tmp_path / "spool"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    spool_dir = default_spool_dir(
        env["TRAINING_JOB_ID"], {"ABEJA_RUNTIME_SPOOL_DIR": str(tmp_path / "spool")}
    )
    blob = b"".join(p.read_bytes() for p in spool_dir.iterdir())
    assert b'"loss":0.4' in blob  # the flush made the last step document durable
    assert env["PLATFORM_AUTH_TOKEN"].encode() not in blob
    assert env["PLATFORM_AUTH_TOKEN"] not in run.stderr
    proxy.close()


# ---------------------------------------------------------------------------- processes

WRITER = """
    import sys, time
    from abeja_runtime.statistics.spool import Spool
    spool = Spool(sys.argv[1])
    name = sys.argv[2]
    for i in range(int(sys.argv[3])):
        spool.append({"writer": name, "i": i, "pad": "x" * (i % 97) * 40})
    spool.close()
"""


def test_two_processes_append_without_loss_or_interleaving(tmp_path: Path) -> None:
    count = 400
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), str(tmp_path), n, str(count)]
        )
        for n in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    records = Spool(tmp_path).pending()
    assert [r.seq for r in records] == list(range(1, 2 * count + 1))  # no gap, no repeat
    for name in ("a", "b"):
        assert [r.document["i"] for r in records if r.document["writer"] == name] == list(
            range(count)
        )


TRAINER = """
    import os, sys, time
    import abeja_runtime
    name, epochs, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    log = open(sys.argv[4], "a") if len(sys.argv) > 4 else None
    for epoch in range(epochs):
        for step in range(20):
            abeja_runtime.report(epoch=epoch, train={"loss": 1.0 / (step + 1)}, who=name)
        abeja_runtime.report(epoch=epoch, validation={"loss": epoch}, who=name, epoch_end=True)
        if log is not None:
            log.write(f"{epoch}\\n")
            log.flush()
        time.sleep(pause)
    print(abeja_runtime.flush(60))
"""


def test_two_processes_report_into_one_job(fresh_emu: Emulator, tmp_path: Path) -> None:
    env = fresh_emu.create_job("spool-two")
    spool_root = tmp_path / "spool"
    cenv = child_env(env, spool_root, ABEJA_RUNTIME_REPORT_INTERVAL="0.05")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(TRAINER), name, "15", "0.01"],
            env=cenv,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        assert out.split() == ["True"], err
    docs = job_statistics(fresh_emu, env)
    for name in ("a", "b"):
        ends = [d["epoch"] for d in docs if d.get("who") == name and "validation" in d["stages"]]
        # every epoch end of each process, in that process's order (duplicates harmless)
        assert sorted(set(ends)) == list(range(15)), (name, ends)
        assert ends == sorted(ends), (name, ends)
    spool_dir = spool_root / env["TRAINING_JOB_ID"]
    assert (spool_dir / DATA_FILE_NAME).stat().st_size == 0


def test_sigkill_then_restart_delivers_every_reported_epoch_end(
    fresh_emu: Emulator, tmp_path: Path
) -> None:
    env = fresh_emu.create_job("spool-kill")
    proxy = FaultProxy(fresh_emu.port)
    proxy.mode = "status"
    proxy.status = 503  # the API answers nothing useful while the first process runs
    env["ABEJA_API_URL"] = proxy.url
    spool_root = tmp_path / "spool"
    cenv = child_env(env, spool_root, ABEJA_RUNTIME_REPORT_INTERVAL="0.05")
    log = tmp_path / "reported.txt"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TRAINER), "first", "1000", "0.02", str(log)],
        env=cenv,
        cwd=tmp_path,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().split()) < 8):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    reported = [int(x) for x in log.read_text().split()]
    assert len(reported) >= 8
    proxy.restore()
    # the same job restarts: it replays what is left first, then reports anew
    again = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(TRAINER), "second", "1", "0"],
        env=cenv,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    docs = job_statistics(fresh_emu, env)
    first = [d["epoch"] for d in docs if d.get("who") == "first" and "validation" in d["stages"]]
    assert set(reported) <= set(first), (reported, first)
    assert first == sorted(first)
    # the replayed records went before anything new, and the job ends with the newest
    assert docs[-1]["who"] == "second"
    assert all(d.get("who") == "first" for d in docs[: len(first)])
    proxy.close()


@pytest.mark.slow
def test_429_storm_retry_after_honoured(fresh_emu: Emulator, tmp_path: Path) -> None:
    env = fresh_emu.create_job("spool-429")
    proxy = FaultProxy(fresh_emu.port)
    proxy.mode = "status"
    proxy.status = 429
    proxy.retry_after = 1.0
    reporter = StatisticsReporter(
        context=_context(env, proxy.url),
        min_interval=0.0,
        handle_sigterm=False,
        flush_at_exit=False,
        rank=0,
        spool_dir=tmp_path / "spool",
    )
    try:
        for epoch in range(5):
            for step in range(50):
                reporter.report(epoch=epoch, train={"loss": 1.0 / (step + 1)})
            reporter.report(epoch=epoch, validation={"loss": epoch}, epoch_end=True)
        time.sleep(4.5)
        storm = proxy.post_times("status")
        proxy.mode = "pass"
        assert reporter.flush(30)
    finally:
        reporter.close(5)
        proxy.close()
    assert 3 <= len(storm) <= 6, storm
    gaps = [b - a for a, b in itertools.pairwise(storm)]
    assert min(gaps) >= 0.9, gaps  # never more than one post per Retry-After interval
    docs = job_statistics(fresh_emu, env)
    assert [d["epoch"] for d in docs if "validation" in d.get("stages", {})] == list(range(5))


def _context(env: dict[str, str], url: str) -> Any:
    from abeja_runtime.job import JobContext

    return JobContext.from_env({**env, "ABEJA_API_URL": url})


def test_spool_default_location_and_switches(
    fresh_emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = fresh_emu.create_job("spool-default")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ABEJA_RUNTIME_SPOOL_DIR")
    monkeypatch.setenv("ABEJA_STORAGE_DIR_PATH", str(tmp_path / "storage"))
    reporter = StatisticsReporter(handle_sigterm=False, flush_at_exit=False, rank=0)
    reporter.report(epoch=0, epoch_end=True)
    assert reporter.flush(30)
    reporter.close(5)
    assert (tmp_path / "storage/.abeja-runtime/spool" / env["TRAINING_JOB_ID"]).is_dir()
    monkeypatch.setenv("ABEJA_RUNTIME_SPOOL", "0")
    off = StatisticsReporter(handle_sigterm=False, flush_at_exit=False, rank=0)
    assert off.spool_directory is None
    off.close(1)
    assert StatisticsReporter(sink=MemorySink(), flush_at_exit=False).spool_directory is None


# ---------------------------------------------------------------------------- sync


def test_sync_dir_delivers_a_leftover_spool_then_removes_it(
    fresh_emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    env = fresh_emu.create_job("spool-sync")
    job = {
        "organization_id": env["ABEJA_ORGANIZATION_ID"],
        "job_definition_name": env["TRAINING_JOB_DEFINITION_NAME"],
        "training_job_id": env["TRAINING_JOB_ID"],
    }
    directory = tmp_path / "left"
    spool = Spool(directory, job=job)
    for epoch in range(3):
        spool.append({"epoch": epoch, "stages": {"train": {"loss": 1 / (epoch + 1)}}})
    spool.close()
    with open(directory / DATA_FILE_NAME, "ab") as file:
        file.write(b"deadbeef {torn")  # a killed writer's last line
    for key in ("TRAINING_JOB_ID", "TRAINING_JOB_DEFINITION_NAME", "ABEJA_ORGANIZATION_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PLATFORM_AUTH_TOKEN", env["PLATFORM_AUTH_TOKEN"])
    monkeypatch.setenv("ABEJA_API_URL", env["ABEJA_API_URL"])
    assert cli.main(["sync", "--dir", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "sent 3, skipped 0" in out and "damaged" in out
    assert [d["epoch"] for d in job_statistics(fresh_emu, env)] == [0, 1, 2]
    assert not directory.exists()
    capsys.readouterr()
    # a second sync after a successful one: nothing left is not an error
    assert cli.main(["sync", "--dir", str(directory)]) == 0
    assert "nothing to send" in capsys.readouterr().out


def test_sync_help_is_plain_text(capsys: Any) -> None:
    with pytest.raises(SystemExit):
        cli.main(["sync", "--help"])
    out = capsys.readouterr().out
    assert "abeja_runtime.statistics.spool" in out
    assert ":mod:" not in out and "``" not in out


def test_sync_stops_when_unreachable_and_keeps_the_rest(
    fresh_emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = fresh_emu.create_job("spool-sync-down")
    proxy = FaultProxy(fresh_emu.port)
    proxy.refuse()
    directory = tmp_path / "left"
    spool = Spool(
        directory,
        job={
            "organization_id": env["ABEJA_ORGANIZATION_ID"],
            "job_definition_name": env["TRAINING_JOB_DEFINITION_NAME"],
            "training_job_id": env["TRAINING_JOB_ID"],
        },
    )
    spool.append({"epoch": 0})
    spool.close()
    monkeypatch.setenv("PLATFORM_AUTH_TOKEN", env["PLATFORM_AUTH_TOKEN"])
    monkeypatch.setenv("ABEJA_API_URL", proxy.url)
    monkeypatch.setenv("ABEJA_SDK_MAX_RETRY_COUNT", "0")
    assert cli.main(["sync", "--dir", str(directory)]) == 6
    assert [r.document for r in Spool(directory).pending()] == [{"epoch": 0}]
    proxy.close()


def test_sync_refuses_a_missing_job_and_a_busy_spool_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.delenv("TRAINING_JOB_ID", raising=False)
    assert cli.main(["sync"]) == 2  # no --dir and no job in the environment
    assert "--dir" in capsys.readouterr().err
    directory = tmp_path / "busy"
    live = Spool(directory)  # a live process of the job, sending
    live.append({"epoch": 0})
    assert live.try_become_sender()
    try:
        assert cli.main(["sync", "--dir", str(directory)]) == 1
        captured = capsys.readouterr()
        assert "another process is sending" in captured.err and captured.out == ""
        assert [r.document for r in live.pending()] == [{"epoch": 0}]  # nothing lost
    finally:
        live.close()


def test_reporter_records_survive_a_broken_spool_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    sink = MemorySink()
    reporter = StatisticsReporter(
        sink=sink,
        spool_dir=blocker / "spool",
        handle_sigterm=False,
        flush_at_exit=False,
        rank=0,
        min_interval=0,
    )
    reporter.report(epoch=0, epoch_end=True)
    reporter.report(epoch=1, epoch_end=True)
    assert reporter.flush(10)
    reporter.close(1)
    assert [d["epoch"] for d in sink.documents] == [0, 1]


def test_spool_files_hold_json_lines(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append({"a": 1})
    spool.close()
    line = (tmp_path / DATA_FILE_NAME).read_text().splitlines()[0]
    crc, _, payload = line.partition(" ")
    assert len(crc) == 8
    record = json.loads(payload)
    assert set(record) == {"seq", "time", "pid", "writer", "lseq", "job", "doc"}
