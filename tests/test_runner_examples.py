"""The shipped examples, each trained end to end through ``abeja-runtime run``.

Every ``examples/<name>/train.py`` is run as the README's first command runs one:
``python -m abeja_runtime run train:handler --source examples/<name>`` against the
embedded emulator (on a temporary data dir). The job must end Complete with the
statistics the handler reported, and its model must hold the result files.

An example whose framework is not installed is skipped (its requirements.txt names
it); the CI image decides which frameworks it carries.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

pytest.importorskip("werkzeug")

from abeja_runtime.api_target import CREDENTIAL_ENV_NAMES
from abeja_runtime.emulator import Emulator

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.parent for p in (REPO / "examples").glob("*/train.py"))

#: requirement name -> module to import, where they differ
_MODULE_OF = {
    "pytorch-lightning": "pytorch_lightning",
    "scikit-learn": "sklearn",
    "tf-keras": "tf_keras",
}


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
@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_trains_through_abeja_runtime_run(example: Path, tmp_path: Path) -> None:
    missing = [m for m in _required_modules(example) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{example.name} needs {', '.join(missing)}")
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV_NAMES}
    env.pop("ABEJA_API_URL", None)
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "ABEJA_RUNTIME_EMULATOR_DIR": str(tmp_path / "emulator"),
            "ABEJA_STORAGE_DIR_PATH": str(tmp_path / "storage"),
        }
    )
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
        assert model["metrics"] == statistics
        uri = client.download_training_model(emu.organization_id, name, model_id)["download_uri"]
        archive = zipfile.ZipFile(io.BytesIO(requests.get(uri, timeout=60).content))
        result_files = sorted(
            p.relative_to(tmp_path / "result").as_posix()
            for p in (tmp_path / "result").rglob("*")
            if p.is_file()
        )
        assert sorted(archive.namelist()) == result_files
