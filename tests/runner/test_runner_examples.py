"""The shipped examples, each trained end to end through ``abeja-runtime run``.

Every ``examples/<name>/train.py`` is run as the README's first command runs one:
``python -m abeja_runtime run train:handler --source examples/<name>`` against the
embedded emulator (on a temporary data dir). The job must end Complete with the
statistics the handler reported, and its model must hold the result files.

An example whose framework is not installed is skipped (its requirements.txt names
it); the CI image decides which frameworks it carries.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest
import requests

pytest.importorskip("werkzeug")

from abeja_runtime.emulator import Emulator
from abeja_runtime.errors import NotFound
from abeja_runtime.runner.api_target import CREDENTIAL_ENV_NAMES

from tests.support import REPO

EXAMPLES = sorted(p.parent for p in (REPO / "examples").glob("*/train.py"))

#: requirement name -> module to import, where they differ
_MODULE_OF = {
    "pytorch-lightning": "pytorch_lightning",
    "scikit-learn": "sklearn",
    "tf-keras": "tf_keras",
}


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV_NAMES}
    env.pop("ABEJA_API_URL", None)
    env.pop("ABEJA_ORGANIZATION_ID", None)
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "ABEJA_RUNTIME_EMULATOR_DIR": str(tmp_path / "emulator"),
            "ABEJA_STORAGE_DIR_PATH": str(tmp_path / "storage"),
            "ABEJA_RUNTIME_POLL_INTERVAL": "0.2",
        }
    )
    return env


def _required_modules(example: Path) -> list[str]:
    requirements = example / "requirements.txt"
    if not requirements.exists():
        return []
    modules = []
    for line in requirements.read_text().splitlines():
        name = re.split(r"[\s<>=!~\[;@]", line.strip(), maxsplit=1)[0]
        if name and not name.startswith(("#", "-")):
            modules.append(_MODULE_OF.get(name.lower(), name.lower().replace("-", "_")))
    return modules


@pytest.mark.framework
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_trains_through_abeja_runtime_run(example: Path, tmp_path: Path) -> None:
    missing = [m for m in _required_modules(example) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{example.name} needs {', '.join(missing)}")
    env = _clean_env(tmp_path)
    outcome_file = tmp_path / "outcome.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "abeja_runtime",
            "run",
            "train:handler",
            "--source",
            str(example),
            "--result-dir",
            str(tmp_path / "result"),
            "--output-json",
            str(outcome_file),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    outcome = json.loads(outcome_file.read_text())
    assert outcome["status"] == "Complete"
    statistics = outcome["statistics"]
    assert statistics, "the example reported no statistics"

    with Emulator(data_dir=str(tmp_path / "emulator")) as emu:
        client = emu.client()
        name = outcome["job_definition_name"]
        job = client.get_training_job(emu.organization_id, name, outcome["training_job_id"])
        assert job["status"] == "Complete"
        assert job["exec_env"] == "local"
        assert job["statistics"] == statistics
        if statistics.get("num_epochs") is not None:
            assert statistics.get("epoch") == statistics["num_epochs"]
        model_id = outcome["training_model_id"]
        assert model_id, outcome["model_note"]
        model = client.get_training_model(emu.organization_id, name, model_id)
        assert model["training_job_id"] == outcome["training_job_id"]
        # the model keeps the final statistics, less the machine's load ("system")
        assert model["metrics"] == {k: v for k, v in statistics.items() if k != "system"}
        uri = client.download_training_model(emu.organization_id, name, model_id)["download_uri"]
        archive = zipfile.ZipFile(io.BytesIO(requests.get(uri, timeout=60).content))
        result_files = sorted(
            p.relative_to(tmp_path / "result").as_posix()
            for p in (tmp_path / "result").rglob("*")
            if p.is_file()
        )
        assert sorted(archive.namelist()) == result_files


# --------------------------------------------------------------------------- the PyTorch
# example when things go wrong: a real exception, SIGTERM and a stop through the API.

PYTORCH = REPO / "examples" / "pytorch_loop"


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "abeja_runtime", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def torch_example() -> Path:
    if not (PYTORCH / "train.py").exists():
        pytest.skip("no examples/pytorch_loop")
    pytest.importorskip("torch")
    return PYTORCH


@pytest.mark.framework
def test_pytorch_example_exception_fails_the_job(torch_example: Path, tmp_path: Path) -> None:
    outcome_file = tmp_path / "outcome.json"
    done = _run_cli(
        [
            "run",
            "train:handler",
            "--source",
            str(torch_example),
            "--env",
            "LEARNING_RATE=fast",
            "--result-dir",
            str(tmp_path / "result"),
            "--output-json",
            str(outcome_file),
        ],
        _clean_env(tmp_path),
        tmp_path,
    )
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Traceback (most recent call last)" in done.stderr
    outcome = json.loads(outcome_file.read_text())
    assert outcome["status"] == "Failed"
    assert outcome["training_model_id"] is None
    with Emulator(data_dir=str(tmp_path / "emulator")) as emu:
        job = emu.client().get_training_job(
            emu.organization_id, "pytorch_loop", outcome["training_job_id"]
        )
    assert job["status"] == "Failed"
    assert job["status_message"].startswith("ValueError: could not convert string to float")


@pytest.mark.framework
@pytest.mark.parametrize(
    ("example", "how"),
    [("pytorch_loop", "sigterm"), ("pytorch_loop", "api"), ("torchrun_ddp", "sigterm")],
)
def test_example_stopped_mid_training(
    tmp_path: Path, external_emulator: Emulator, example: str, how: str
) -> None:
    """A training stopped midway ends Stopped, with its whole process tree gone.

    The torchrun example is a tree (handler, torchrun's agent, two workers): all of it
    must go, not just the process the signal reached.
    """
    source = REPO / "examples" / example
    if not (source / "train.py").exists():
        pytest.skip(f"no examples/{example}")
    pytest.importorskip("torch")
    emu = external_emulator
    client = emu.client()
    env = dict(
        _clean_env(tmp_path),
        ABEJA_API_URL=emu.url,
        PLATFORM_AUTH_TOKEN=emu.token,
        ABEJA_ORGANIZATION_ID=emu.organization_id,
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "abeja_runtime",
            "run",
            "train:handler",
            "--source",
            str(source),
            "--env",
            "EPOCHS=10000",
            "--result-dir",
            str(tmp_path / "result"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the job is training: Active with an epoch's statistics on the API.
        deadline = time.monotonic() + 300
        job: dict[str, object] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            jobs = []
            with contextlib.suppress(NotFound):  # the definition does not exist yet
                jobs = client.get_training_jobs(emu.organization_id, example)["entries"]
            if jobs and jobs[0]["status"] == "Active" and jobs[0].get("statistics"):
                job = jobs[0]
                break
            time.sleep(0.1)
        assert job, "the example never started training"
        handler_tree = psutil.Process(proc.pid).children(recursive=True)
        assert handler_tree
        if example == "torchrun_ddp":
            assert len(handler_tree) >= 4, handler_tree  # handler, agent, 2 workers
        job_id = str(job["training_job_id"])
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        else:
            client.stop_training_job(emu.organization_id, example, job_id)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (143 if how == "sigterm" else 7), out[-4000:] + err[-4000:]
    deadline = time.monotonic() + 30
    alive = handler_tree
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    assert not alive, alive
    final = client.get_training_job(emu.organization_id, example, job_id)
    assert final["status"] == "Stopped"
    history = emu.statistics_history(example, job_id)
    assert history and final["statistics"] == history[-1]["statistics"]
    assert client.get_training_models(emu.organization_id, example)["entries"] == []
