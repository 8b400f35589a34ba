"""``abeja-runtime run`` end to end: a real child process, a real emulator, real signals.

Each test runs ``python -m abeja_runtime run`` as a subprocess on a tiny pure-Python
handler written into a temporary source dir, then checks the job, its statistics
and its model on the emulator the run used (the embedded one, reopened on its
data dir, or one this test started and pointed the runner at through
``ABEJA_API_URL``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests

pytest.importorskip("werkzeug")

from abeja_runtime.emulator import Emulator
from abeja_runtime.runner.api_target import CREDENTIAL_ENV_NAMES

from tests.support import REPO
from tests.support.processes import wait_for, with_signals

GOOD = """
import json, os, pathlib, time
import abeja_runtime

def handler(context):
    pause = float(os.environ.get("EPOCH_PAUSE", "0"))
    n = 3
    for epoch in range(1, n + 1):
        abeja_runtime.report(
            epoch=epoch,
            num_epochs=n,
            progress=epoch / n,
            train={"loss": 1.0 / epoch, "accuracy": 0.5 + 0.1 * epoch},
            validation={"loss": 1.2 / epoch},
            epoch_end=True,
        )
        print(f"epoch {epoch} done", flush=True)
        time.sleep(pause)
    out = pathlib.Path(os.environ["ABEJA_TRAINING_RESULT_DIR"])
    (out / "model.txt").write_text("weights")
    (out / "sub").mkdir()
    (out / "sub" / "context.json").write_text(json.dumps(context))
"""

ENV_DUMP = """
import json, os, pathlib

NAMES = [
    "ABEJA_ORGANIZATION_ID", "TRAINING_JOB_DEFINITION_NAME", "TRAINING_JOB_DEFINITION_VERSION",
    "TRAINING_JOB_ID", "PLATFORM_AUTH_TOKEN", "ABEJA_API_URL", "ABEJA_TRAINING_RESULT_DIR",
    "ABEJA_STORAGE_DIR_PATH", "HANDLER", "DATASETS", "CONTEXT", "PYTHONUNBUFFERED",
    "LEARNING_RATE", "EMPTY_ONE", "ABEJA_PLATFORM_USER_ID",
]

def handler(context):
    out = pathlib.Path(os.environ["ABEJA_TRAINING_RESULT_DIR"])
    seen = {"env": {n: os.environ.get(n) for n in NAMES}, "context": context, "cwd": os.getcwd()}
    (out / "seen.json").write_text(json.dumps(seen))
"""

FAILING = """
import abeja_runtime

def handler(context):
    abeja_runtime.report(epoch=1, num_epochs=5, train={"loss": 0.9}, epoch_end=True)
    print("about to fail", flush=True)
    raise ValueError("boom at epoch 2")
"""

# Reports 50 steps quickly (with a long throttle, so all but the first wait in the
# reporter), leaves a grandchild process behind, then trains "forever".
LONG = """
import os, pathlib, subprocess, sys, time
import abeja_runtime

def handler(context):
    out = pathlib.Path(os.environ["ABEJA_TRAINING_RESULT_DIR"])
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (out / "grandchild.pid").write_text(str(grandchild.pid))
    (out / "handler.pid").write_text(str(os.getpid()))
    (out / "job.id").write_text(os.environ["TRAINING_JOB_ID"])
    for step in range(1, 51):
        abeja_runtime.report(epoch=1, num_epochs=10, step=step, train={"loss": 1.0 / step})
    (out / "ready").write_text("50")
    time.sleep(600)
"""

# Ignores SIGTERM: only the kill after the grace period ends it.
STUBBORN = """
import os, pathlib, signal, subprocess, sys, time

def handler(context):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = pathlib.Path(os.environ["ABEJA_TRAINING_RESULT_DIR"])
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    (out / "grandchild.pid").write_text(str(grandchild.pid))
    (out / "handler.pid").write_text(str(os.getpid()))
    (out / "ready").write_text("1")
    while True:
        time.sleep(0.1)
"""

# Reports three epoch ends while its API is unreachable (so they wait in the spool), then
# dies by SIGKILL: no exit flush, nothing posted.
KILLED = """
import os, signal
import abeja_runtime

def handler(context):
    os.environ["ABEJA_API_URL"] = "http://127.0.0.1:9"  # read when the reporter is made
    for epoch in range(1, 4):
        abeja_runtime.report(
            epoch=epoch, num_epochs=3, train={"loss": 1.0 / epoch}, epoch_end=True
        )
    os.kill(os.getpid(), signal.SIGKILL)
"""

BROKEN = """
notcallable = 42

def handler(context):
    pass
"""


@pytest.fixture
def source(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    for name, code in {
        "train.py": GOOD,
        "envdump.py": ENV_DUMP,
        "fail.py": FAILING,
        "long.py": LONG,
        "stubborn.py": STUBBORN,
        "broken.py": BROKEN,
        "killed.py": KILLED,
    }.items():
        (directory / name).write_text(textwrap.dedent(code), encoding="utf-8")
    return directory


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    """No credentials (embedded emulator on a temp data dir), fast polling and grace."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV_NAMES}
    env.pop("ABEJA_API_URL", None)
    env.pop("ABEJA_ORGANIZATION_ID", None)
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "ABEJA_RUNTIME_EMULATOR_DIR": str(tmp_path / "emulator"),
            "ABEJA_STORAGE_DIR_PATH": str(tmp_path / "storage"),
            "ABEJA_RUNTIME_POLL_INTERVAL": "0.2",
            "ABEJA_RUNTIME_STOP_GRACE": "20",
            "ABEJA_RUNTIME_REPORT_INTERVAL": "0.2",
        }
    )
    return env


def _run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "abeja_runtime", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _start(
    args: list[str], env: dict[str, str], cwd: Path, *, ignored: tuple[int, ...] = ()
) -> subprocess.Popen[str]:
    """The runner, with SIGINT/SIGTERM as from a terminal unless ``ignored`` says otherwise."""
    return subprocess.Popen(
        with_signals([sys.executable, "-m", "abeja_runtime", *args], ignored=ignored),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclasses.dataclass
class _Stopped:
    """How a run stopped once its handler was training ended, and what it had started."""

    returncode: int
    out: str
    err: str
    handler_pid: int
    grandchild_pid: int
    job_id: str  # "" for a handler that does not write job.id

    @property
    def log(self) -> str:
        return self.out + self.err


def _stop_once_training(
    handler: str,
    source: Path,
    env: dict[str, str],
    tmp_path: Path,
    *,
    signals: tuple[int, ...] = (),
    on_ready: Callable[[str], None] | None = None,
    ignored: tuple[int, ...] = (),
) -> _Stopped:
    """Run ``handler`` (LONG or STUBBORN); once it wrote ``ready``, stop it and wait.

    The stop is ``signals`` sent to the runner in order, or ``on_ready(job_id)``.
    """
    result = tmp_path / "results"
    proc = _start(
        ["run", handler, "--source", str(source), "--result-dir", str(result)],
        env,
        tmp_path,
        ignored=ignored,
    )
    try:
        wait_for(lambda: (result / "ready").exists(), "the handler to start training")
        handler_pid = int((result / "handler.pid").read_text())
        grandchild_pid = int((result / "grandchild.pid").read_text())
        job_file = result / "job.id"
        job_id = job_file.read_text() if job_file.exists() else ""
        if on_ready is not None:
            on_ready(job_id)
        for sig in signals:
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    return _Stopped(proc.returncode, out, err, handler_pid, grandchild_pid, job_id)


def _gone(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return True
    return proc.status() == psutil.STATUS_ZOMBIE


@pytest.fixture
def reopen(tmp_path: Path) -> Iterator[Callable[[], Emulator]]:
    """Open the embedded emulator's data dir after the run, as a later command would."""
    opened: list[Emulator] = []

    def open_it() -> Emulator:
        emu = Emulator(data_dir=str(tmp_path / "emulator"))
        emu.start()
        opened.append(emu)
        return emu

    yield open_it
    for emu in opened:
        emu.stop()


def _job_id(output: str) -> str:
    for line in output.splitlines():
        words = line.split()
        if line.startswith("abeja-runtime: job ") and "created" in words:
            return words[2]
    raise AssertionError(f"no job id in output:\n{output}")


def _model_zip(emu: Emulator, name: str, model_id: str) -> zipfile.ZipFile:
    uri = emu.client().download_training_model(emu.organization_id, name, model_id)["download_uri"]
    response = requests.get(uri, timeout=30)
    response.raise_for_status()
    return zipfile.ZipFile(io.BytesIO(response.content))


# --------------------------------------------------------------------------- outcomes


def test_success_complete_with_statistics_and_model(
    source: Path, base_env: dict[str, str], tmp_path: Path, reopen: Callable[[], Emulator]
) -> None:
    (source / ".venv").mkdir()
    (source / ".venv" / "big.bin").write_bytes(b"x" * 1000)
    summary = tmp_path / "outcome.json"
    done = _run(
        ["run", "train:handler", "--source", str(source), "--output-json", str(summary)],
        base_env,
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "using the embedded emulator" in out
    assert str(tmp_path / "emulator") in out
    assert "epoch 3 done" in out
    job_id = _job_id(out)
    assert f"job {job_id} Complete" in out
    assert "abeja-runtime: model " in out

    emu = reopen()
    assert emu.token not in done.stdout + done.stderr
    client = emu.client()
    job = client.get_training_job(emu.organization_id, "project", job_id)
    assert job["status"] == "Complete"
    assert job["exec_env"] == "local"
    assert job["start_time"] and job["completion_time"]
    expected = {
        "epoch": 3,
        "num_epochs": 3,
        "progress_percentage": 1.0,
        "stages": {
            "train": {"loss": 1.0 / 3, "accuracy": 0.5 + 0.1 * 3},
            "validation": {"loss": 1.2 / 3},
        },
    }
    statistics = dict(job["statistics"])
    assert statistics.pop("system")["memory_rss_bytes"] > 0  # on by default in a job
    assert statistics == expected
    history = [h["statistics"] for h in emu.statistics_history("project", job_id)]
    assert [h["epoch"] for h in history if "epoch" in h][-3:] == [1, 2, 3]

    models = client.get_training_models(emu.organization_id, "project")["entries"]
    mine = [m for m in models if m["training_job_id"] == job_id]
    assert len(mine) == 1
    model = mine[0]
    assert model["metrics"] == expected
    assert model["exec_env"] == "local"
    assert f"model {model['training_model_id']} uploaded" in out
    outcome = json.loads(summary.read_text())
    assert outcome["training_job_id"] == job_id
    assert outcome["training_model_id"] == model["training_model_id"]
    assert (outcome["status"], outcome["exit_code"]) == ("Complete", 0)
    assert {k: v for k, v in outcome["statistics"].items() if k != "system"} == expected
    archive = _model_zip(emu, "project", model["training_model_id"])
    assert sorted(archive.namelist()) == ["model.txt", "sub/context.json"]
    assert archive.read("model.txt") == b"weights"

    version = client.get_training_job_definition_version(
        emu.organization_id, "project", job["job_definition_version"]
    )
    assert version["handler"] == "train:handler"


@pytest.mark.slow
def test_progress_lines_are_plain_when_not_a_terminal(
    source: Path, base_env: dict[str, str], tmp_path: Path
) -> None:
    done = _run(
        ["run", "train:handler", "--source", str(source), "--env", "EPOCH_PAUSE=0.6"],
        base_env,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout
    assert "\x1b[" not in done.stdout
    progress = [
        line
        for line in done.stdout.splitlines()
        if line.startswith("abeja-runtime: epoch ") and "] " in line
    ]
    # polled while the handler ran: at least one line before the end, each one different
    assert len(progress) >= 2, done.stdout
    assert len(set(progress)) == len(progress)
    assert any("| train loss=" in line for line in progress)
    assert progress[-1].startswith("abeja-runtime: epoch 3/3 [####################] 100%")


def test_control_cli_sees_the_run_on_the_same_data_dir(
    source: Path, base_env: dict[str, str], tmp_path: Path
) -> None:
    done = _run(["run", "train:handler", "--source", str(source)], base_env, tmp_path)
    assert done.returncode == 0, done.stderr
    job_id = _job_id(done.stdout)
    shown = _run(["jobs", "get", "project", job_id, "--json"], base_env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "Complete"
    assert "next:" in done.stdout and f"abeja-runtime jobs get project {job_id}" in done.stdout


def test_handler_exception_fails_the_job(
    source: Path, base_env: dict[str, str], tmp_path: Path, reopen: Callable[[], Emulator]
) -> None:
    done = _run(["run", "fail:handler", "--source", str(source)], base_env, tmp_path)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert "ValueError: boom at epoch 2" in done.stderr
    assert "about to fail" in done.stdout
    job_id = _job_id(done.stdout)
    assert "no model uploaded: the job is Failed" in done.stdout
    emu = reopen()
    client = emu.client()
    job = client.get_training_job(emu.organization_id, "project", job_id)
    assert job["status"] == "Failed"
    assert job["status_message"] == "ValueError: boom at epoch 2"
    assert job["statistics"]["stages"]["train"] == {"loss": 0.9}
    models = client.get_training_models(emu.organization_id, "project")["entries"]
    assert [m for m in models if m["training_job_id"] == job_id] == []


def test_what_a_killed_handler_left_in_its_spool_is_delivered_before_the_status(
    source: Path, base_env: dict[str, str], tmp_path: Path, reopen: Callable[[], Emulator]
) -> None:
    done = _run(["run", "killed:handler", "--source", str(source)], base_env, tmp_path)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "delivered 3 statistics the handler left in its spool" in done.stdout + done.stderr
    job_id = _job_id(done.stdout)
    emu = reopen()
    history = emu.statistics_history("project", job_id)
    assert [entry["statistics"]["epoch"] for entry in history] == [1, 2, 3]
    job = emu.client().get_training_job(emu.organization_id, "project", job_id)
    assert job["status"] == "Failed"
    assert job["statistics"]["epoch"] == 3
    assert job["statistics"]["stages"]["train"] == {"loss": 1.0 / 3}


def test_every_job_variable_dataset_and_env_reach_the_handler(
    source: Path, base_env: dict[str, str], tmp_path: Path, reopen: Callable[[], Emulator]
) -> None:
    result = tmp_path / "results"
    env = dict(base_env, ABEJA_PLATFORM_USER_ID="1234567890123")  # no token: no credential
    done = _run(
        [
            "run",
            "envdump:handler",
            "--source",
            str(source),
            "--dataset",
            "train=1111111111111",
            "--dataset",
            "val=2222222222222",
            "--env",
            "LEARNING_RATE=0.01",
            "--env",
            "EMPTY_ONE=",
            "--result-dir",
            str(result),
            "--job-definition",
            "envcheck",
        ],
        env,
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = _job_id(done.stdout)
    seen = json.loads((result / "seen.json").read_text())
    emu = reopen()
    variables = seen["env"]
    assert variables["ABEJA_ORGANIZATION_ID"] == emu.organization_id
    assert variables["TRAINING_JOB_DEFINITION_NAME"] == "envcheck"
    assert variables["TRAINING_JOB_ID"] == job_id
    assert variables["PLATFORM_AUTH_TOKEN"] == emu.token
    assert variables["ABEJA_API_URL"].startswith("http://127.0.0.1:")
    assert variables["ABEJA_TRAINING_RESULT_DIR"] == str(result.resolve())
    assert variables["ABEJA_STORAGE_DIR_PATH"] == str(tmp_path / "storage")
    assert variables["HANDLER"] == "envdump:handler"
    assert json.loads(variables["DATASETS"]) == {"train": "1111111111111", "val": "2222222222222"}
    assert json.loads(variables["CONTEXT"]) == {}
    assert variables["PYTHONUNBUFFERED"] == "1"
    assert variables["LEARNING_RATE"] == "0.01"
    assert variables["EMPTY_ONE"] == ""
    assert variables["ABEJA_PLATFORM_USER_ID"] is None  # the runner's credentials stay out
    assert seen["context"] == {"datasets": {"train": "1111111111111", "val": "2222222222222"}}
    assert seen["cwd"] == str(source.resolve())
    job = emu.client().get_training_job(emu.organization_id, "envcheck", job_id)
    assert job["datasets"] == {"train": "1111111111111", "val": "2222222222222"}
    assert job["environment"] == {"LEARNING_RATE": "0.01", "EMPTY_ONE": ""}
    version = int(variables["TRAINING_JOB_DEFINITION_VERSION"])
    assert job["job_definition_version"] == version


def test_reserved_env_is_a_usage_error(
    source: Path, base_env: dict[str, str], tmp_path: Path
) -> None:
    done = _run(
        ["run", "train:handler", "--source", str(source), "--env", "TRAINING_JOB_ID=1"],
        base_env,
        tmp_path,
    )
    assert done.returncode == 2
    assert "the runner sets this variable" in done.stderr
    assert not (tmp_path / "emulator").exists()


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("train", "has no colon"),
        ("train:handler:x", "has 2 colons"),
        ("nosuchmodule:handler", "module 'nosuchmodule' not found"),
        ("train:missing", "has no function 'missing'"),
        ("broken:notcallable", "is a int, not a function"),
    ],
)
def test_handler_errors_are_one_clear_line_and_create_nothing(
    source: Path,
    base_env: dict[str, str],
    tmp_path: Path,
    handler: str,
    message: str,
) -> None:
    done = _run(["run", handler, "--source", str(source)], base_env, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("abeja-runtime: error: HANDLER")
    assert message in lines[0]
    assert done.stdout == ""
    # Nothing was created: the API (the embedded emulator) was never even started.
    assert not (tmp_path / "emulator").exists()


# --------------------------------------------------------------------------- stopping


def test_sigterm_mid_training_stops_the_job_and_flushes_statistics(
    source: Path, base_env: dict[str, str], tmp_path: Path, reopen: Callable[[], Emulator]
) -> None:
    env = dict(base_env, ABEJA_RUNTIME_REPORT_INTERVAL="120")
    run = _stop_once_training("long:handler", source, env, tmp_path, signals=(signal.SIGTERM,))
    log = run.log
    assert run.returncode == 143, log
    assert "SIGTERM: passing it to the handler" in run.out, log
    assert _gone(run.handler_pid), log
    assert _gone(run.grandchild_pid), log
    emu = reopen()
    job = emu.client().get_training_job(emu.organization_id, "project", run.job_id)
    assert job["status"] == "Stopped", (job, log)
    assert "SIGTERM" in (job["status_message"] or ""), (job, log)
    # Steps 2..50 were still waiting in the throttled reporter: the flush on
    # SIGTERM delivered the last one.
    assert job["statistics"]["step"] == 50, (job, log)
    assert job["statistics"]["stages"]["train"] == {"loss": 1.0 / 50}
    assert "no model uploaded: the job is Stopped" in run.out, log


def test_sigint_is_forwarded_as_ctrl_c(
    source: Path, base_env: dict[str, str], tmp_path: Path, reopen: Callable[[], Emulator]
) -> None:
    run = _stop_once_training("long:handler", source, base_env, tmp_path, signals=(signal.SIGINT,))
    assert run.returncode == 130, run.log
    assert "handler interrupted" in run.err
    assert _gone(run.handler_pid)
    emu = reopen()
    job = emu.client().get_training_job(emu.organization_id, "project", run.job_id)
    assert job["status"] == "Stopped"


def test_a_runner_started_with_sigint_ignored_leaves_it_ignored(
    source: Path, base_env: dict[str, str], tmp_path: Path
) -> None:
    # As a background job of a script (`abeja-runtime run ... &`): a Ctrl-C meant
    # for the foreground command must not stop the job; SIGTERM still does.
    run = _stop_once_training(
        "long:handler",
        source,
        base_env,
        tmp_path,
        signals=(signal.SIGINT, signal.SIGTERM),  # handled in order: a counted SIGINT shows first
        ignored=(signal.SIGINT,),
    )
    assert "SIGINT" not in run.log
    assert "SIGTERM: passing it to the handler" in run.out
    assert "still running after" not in run.out  # the handler heard the SIGTERM itself
    assert _gone(run.handler_pid)


@pytest.mark.slow
def test_a_handler_ignoring_sigterm_is_killed_after_the_grace_period(
    source: Path, base_env: dict[str, str], tmp_path: Path, reopen: Callable[[], Emulator]
) -> None:
    env = dict(base_env, ABEJA_RUNTIME_STOP_GRACE="1")
    run = _stop_once_training("stubborn:handler", source, env, tmp_path, signals=(signal.SIGTERM,))
    assert run.returncode == 143, run.log
    assert "still running after 1 s: killing its process tree" in run.out
    assert _gone(run.handler_pid)
    assert _gone(run.grandchild_pid)
    emu = reopen()
    jobs = emu.client().get_training_jobs(emu.organization_id, "project")["entries"]
    assert [j["status"] for j in jobs] == ["Stopped"]


def test_stop_through_the_api_ends_the_handler(
    source: Path,
    base_env: dict[str, str],
    tmp_path: Path,
    external_emulator: Emulator,
) -> None:
    emu = external_emulator
    env = dict(
        base_env,
        ABEJA_API_URL=emu.url,
        PLATFORM_AUTH_TOKEN=emu.token,
        ABEJA_ORGANIZATION_ID=emu.organization_id,
    )
    client = emu.client()

    def stop_through_the_api(job_id: str) -> None:
        assert client.get_training_job(emu.organization_id, "project", job_id)["status"] == (
            "Active"
        )
        client.stop_training_job(emu.organization_id, "project", job_id)

    run = _stop_once_training("long:handler", source, env, tmp_path, on_ready=stop_through_the_api)
    assert run.returncode == 7, run.log
    assert "using the API at " + emu.url in run.out
    assert "stopped through the API" in run.out
    assert _gone(run.handler_pid)
    assert _gone(run.grandchild_pid)
    job = emu.client().get_training_job(emu.organization_id, "project", run.job_id)
    assert job["status"] == "Stopped"
    assert job["exec_env"] == "local"


def test_run_with_a_user_credential_passes_it_to_the_job(
    source: Path,
    base_env: dict[str, str],
    tmp_path: Path,
    external_emulator: Emulator,
) -> None:
    emu = external_emulator
    result = tmp_path / "results"
    env = dict(
        base_env,
        ABEJA_API_URL=emu.url,
        ABEJA_PLATFORM_USER_ID=emu.user_id,
        ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN=emu.personal_access_token,
        ABEJA_ORGANIZATION_ID=emu.organization_id,
    )
    done = _run(
        ["run", "train:handler", "--source", str(source), "--result-dir", str(result)],
        env,
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job_id = _job_id(done.stdout)
    job = emu.client().get_training_job(emu.organization_id, "project", job_id)
    assert job["status"] == "Complete"
    assert job["statistics"]["epoch"] == 3  # the handler's reporter used the user credential
    assert emu.personal_access_token not in done.stdout + done.stderr
