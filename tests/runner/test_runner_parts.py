"""The runner's parts: source zips, progress text, the console, process-tree kills,
and :func:`run_handler` called from Python against an emulator."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from abeja_runtime.runner import run_handler
from abeja_runtime.runner.console import _Console, format_progress, progress_fraction
from abeja_runtime.runner.process import kill_process_tree
from abeja_runtime.runner.source import (
    SOURCE_EXCLUDED_DIRS,
    SOURCE_EXCLUDED_SUFFIXES,
    zip_directory,
)

from tests.support import REPO

# --------------------------------------------------------------------------- zips


def test_zip_directory_excludes_environments_caches_and_the_result_dir(tmp_path: Path) -> None:
    root = tmp_path / "src"
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("x")
    (root / "pkg" / "mod.py").write_text("y")
    for junk in (".venv/lib/big.py", ".git/HEAD", "pkg/__pycache__/mod.pyc", "results/model.bin"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    (root / "stray.pyc").write_text("junk")
    outside = tmp_path / "dataset.bin"
    outside.write_bytes(b"d" * 100)
    (root / "data.bin").symlink_to(outside)  # points outside: not uploaded
    (root / "alias.py").symlink_to(root / "train.py")  # inside: uploaded as a file
    (root / "loop").symlink_to(root, target_is_directory=True)  # never followed

    buffer = io.BytesIO()
    count, size = zip_directory(
        root,
        buffer,
        exclude_dirs=[root / "results"],
        exclude_names=SOURCE_EXCLUDED_DIRS,
        exclude_suffixes=SOURCE_EXCLUDED_SUFFIXES,
    )
    names = sorted(zipfile.ZipFile(io.BytesIO(buffer.getvalue())).namelist())
    assert names == ["alias.py", "pkg/mod.py", "train.py"]
    assert (count, size) == (3, 3)


def test_zip_directory_of_an_empty_dir_is_a_valid_empty_zip(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    assert zip_directory(tmp_path, buffer) == (0, 0)
    assert zipfile.ZipFile(io.BytesIO(buffer.getvalue())).namelist() == []


# --------------------------------------------------------------------------- progress


def test_format_progress_full_document() -> None:
    text = format_progress(
        {
            "epoch": 2,
            "num_epochs": 8,
            "progress_percentage": 0.25,
            "stages": {"train": {"loss": 0.123456, "acc": 0.5}, "validation": {"loss": 0.2}},
            "lr": 0.001,
            "system": {"cpu": 12},
        },
        width=8,
    )
    assert text == (
        "epoch 2/8 [##------]  25% | train loss=0.1235 acc=0.5 | validation loss=0.2 | lr=0.001"
    )


def test_format_progress_partial_documents() -> None:
    assert format_progress(None) == "no statistics yet"
    assert format_progress({}) == "no statistics yet"
    assert format_progress({"epoch": 0}) == "epoch 0"
    assert format_progress({"epoch": 1, "num_epochs": 4}, width=4) == "epoch 1/4 [#---]  25%"
    assert format_progress({"stages": {"train": {"loss": 0.0}}}) == "train loss=0"


def test_progress_fraction_is_clamped_and_falls_back_to_epochs() -> None:
    assert progress_fraction({"progress_percentage": 1.5}) == 1.0
    assert progress_fraction({"progress_percentage": True}) is None
    assert progress_fraction({"epoch": 3, "num_epochs": 4}) == 0.75
    assert progress_fraction({"epoch": 3, "num_epochs": 0}) is None
    assert progress_fraction({}) is None


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_plain_mode_prints_each_change_once() -> None:
    out, err = io.StringIO(), io.StringIO()
    console = _Console(out, err, live=False)
    console.status("epoch 1")
    console.status("epoch 1")
    console.line("handler says hi")
    console.line("oops", error=True)
    console.status("epoch 2")
    console.status("epoch 2", final=True)
    console.note("done")
    assert out.getvalue().splitlines() == [
        "abeja-runtime: epoch 1",
        "handler says hi",
        "abeja-runtime: epoch 2",
        "abeja-runtime: done",
    ]
    assert err.getvalue() == "oops\n"
    assert "\r" not in out.getvalue()


def test_console_live_mode_keeps_one_sticky_line() -> None:
    out = _Tty()
    console = _Console(out, out, live=True)
    console.status("epoch 1")
    console.line("hello")
    console.close()
    assert out.getvalue() == "epoch 1\r\x1b[Khello\nepoch 1\r\x1b[K"
    # after close nothing is redrawn
    console.line("after")
    assert out.getvalue().endswith("\r\x1b[Kafter\n")


# --------------------------------------------------------------------------- processes


def test_kill_process_tree_kills_descendants_and_the_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = textwrap.dedent(
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the grandchild never started"
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        kill_process_tree(proc.pid)
        assert proc.wait(timeout=30) < 0
        deadline = time.monotonic() + 30
        while psutil.pid_exists(grandchild):
            status = psutil.Process(grandchild).status()
            if status == psutil.STATUS_ZOMBIE:
                break
            assert time.monotonic() < deadline, "the grandchild survived"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_process_tree_of_a_gone_process_is_harmless() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait(timeout=30)
    kill_process_tree(proc.pid)


# --------------------------------------------------------------------------- Python API


def test_run_handler_from_python_against_an_emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("werkzeug")
    from abeja_runtime.emulator import Emulator

    source = tmp_path / "proj"
    source.mkdir()
    (source / "job.py").write_text(
        textwrap.dedent(
            """
            import os, pathlib
            import abeja_runtime

            def main(context):
                abeja_runtime.report(epoch=1, num_epochs=1, train={"loss": 0.5}, epoch_end=True)
                out = pathlib.Path(os.environ["ABEJA_TRAINING_RESULT_DIR"])
                (out / "weights.txt").write_text(context["datasets"]["d"])
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("ABEJA_STORAGE_DIR_PATH", str(tmp_path / "storage"))
    out = io.StringIO()
    with Emulator() as emu:
        result = run_handler(
            "job:main",
            source=source,
            datasets={"d": "1234567890123"},
            result_dir=tmp_path / "result",
            job_definition_name="from-python",
            description="python api",
            api=emu,
            stdout=out,
            stderr=out,
            handle_signals=False,
        )
        assert result.status == "Complete"
        assert result.exit_code == 0
        assert result.returncode == 0
        statistics = dict(result.statistics or {})
        assert statistics.pop("system")["memory_rss_bytes"] > 0  # on by default in a job
        assert statistics == {
            "epoch": 1,
            "num_epochs": 1,
            "stages": {"train": {"loss": 0.5}},
        }
        assert result.model_id is not None
        assert result.result_dir == (tmp_path / "result").resolve()
        assert (result.result_dir / "weights.txt").read_text() == "1234567890123"
        job = emu.client().get_training_job(
            emu.organization_id, "from-python", result.training_job_id
        )
        assert job["description"] == "python api"
        assert job["status"] == "Complete"
        model = emu.client().get_training_model(emu.organization_id, "from-python", result.model_id)
        assert model["training_job_id"] == result.training_job_id
    assert "using the embedded emulator" not in out.getvalue()
    assert os.environ.get("TRAINING_JOB_ID") is None  # the runner never changes its own env


def test_run_handler_with_an_empty_result_dir_uploads_no_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("werkzeug")
    from abeja_runtime.emulator import Emulator

    source = tmp_path / "proj"
    source.mkdir()
    (source / "job.py").write_text("def main(context):\n    print('nothing to save')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("ABEJA_STORAGE_DIR_PATH", str(tmp_path / "storage"))
    out = io.StringIO()
    with Emulator() as emu:
        result = run_handler(
            "job:main",
            source=source,
            result_dir=tmp_path / "result",
            api=emu,
            stdout=out,
            stderr=out,
            handle_signals=False,
        )
        assert result.status == "Complete"
        assert result.exit_code == 0
        assert result.model is None
        assert result.model_note is not None and "is empty" in result.model_note
        assert emu.client().get_training_models(emu.organization_id, "proj")["entries"] == []
    assert "no model uploaded: the result dir" in out.getvalue()
    assert "nothing to save" in out.getvalue()


def test_a_handler_killed_by_a_signal_fails_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("werkzeug")
    from abeja_runtime.emulator import Emulator

    source = tmp_path / "proj"
    source.mkdir()
    (source / "job.py").write_text(
        "import os, signal\ndef main(context):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("ABEJA_STORAGE_DIR_PATH", str(tmp_path / "storage"))
    out = io.StringIO()
    with Emulator() as emu:
        result = run_handler(
            "job:main", source=source, api=emu, stdout=out, stderr=out, handle_signals=False
        )
        assert result.status == "Failed"
        assert result.returncode == -9
        assert result.exit_code == 1
        assert result.status_message == "handler killed by SIGKILL"
        job = emu.client().get_training_job(emu.organization_id, "proj", result.training_job_id)
        assert job["status_message"] == "handler killed by SIGKILL"
