"""State survives a restart on the same data dir, from Python and from the CLI."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from abeja_runtime.emulator import Emulator
from abeja_runtime.errors import ConfigurationError

from tests.support.emulator_support import Api


def test_state_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    with Emulator(data_dir=data_dir) as emu:
        identity = (emu.organization_id, emu.token, emu.user_id, emu.personal_access_token)
        api = Api(emu)
        api.definition("keep")
        api.version("keep", {"handler": "train:handler", "environment": {"A": "1"}})
        job = api.job("keep", description="persist me")
        api.ok(
            "POST",
            f"/definitions/keep/jobs/{job['id']}/statistics",
            json={"statistics": {"epoch": 1}},
        )
        model = api.model("keep", b"weights", {"training_job_id": job["id"]})
        old_uri = api.ok("GET", f"/definitions/keep/models/{model['id']}/download")["download_uri"]
        api.close()

    with Emulator(data_dir=data_dir) as emu:
        assert (emu.organization_id, emu.token, emu.user_id, emu.personal_access_token) == identity
        api = Api(emu)
        assert api.ok("GET", f"/definitions/keep/jobs/{job['id']}")["description"] == "persist me"
        assert api.ok("GET", f"/definitions/keep/jobs/{job['id']}")["statistics"] == {"epoch": 1}
        assert [h["statistics"] for h in emu.statistics_history("keep", job["id"])] == [
            {"epoch": 1}
        ]
        assert api.ok("GET", "/definitions/keep/versions/1")["environment"] == {"A": "1"}
        assert api.ok("GET", f"/definitions/keep/models/{model['id']}")["sha256"] == model["sha256"]
        uri = api.ok("GET", f"/definitions/keep/models/{model['id']}/download")["download_uri"]
        assert requests.get(uri, timeout=30).content == b"weights"
        # a URL signed before the restart is still valid (same key), on the new port
        old_path = old_uri.split("/", 3)[3]
        assert requests.get(f"{emu.url}/{old_path}", timeout=30).content == b"weights"
        # numbering continues
        assert api.version("keep")["job_definition_version"] == 2
        api.close()


def test_in_memory_state_is_gone_and_blobs_removed() -> None:
    with Emulator() as emu:
        api = Api(emu)
        api.definition("tmp")
        api.model("tmp", b"x" * 1000)
        store = emu._store
        assert store is not None
        blob_root = store.tmp_dir.parent
        assert blob_root.exists()
        api.close()
    assert not blob_root.exists()
    with Emulator() as emu:
        Api(emu).err(404, "GET", "/definitions/tmp")


def test_one_emulator_per_data_dir(tmp_path: Path) -> None:
    with Emulator(data_dir=tmp_path) as first:
        with pytest.raises(ConfigurationError, match="in use"):
            Emulator(data_dir=tmp_path).start()
        assert requests.get(f"{first.url}/_emulator/health", timeout=30).json() == {"status": "ok"}
    # released on stop
    with Emulator(data_dir=tmp_path):
        pass


def test_only_loopback_hosts() -> None:
    with pytest.raises(ConfigurationError, match="loopback"):
        Emulator(host="0.0.0.0")
    with pytest.raises(ConfigurationError, match="loopback"):
        Emulator(host="192.168.1.10")


def test_port_in_use_is_an_oserror() -> None:
    with Emulator() as emu, pytest.raises(OSError):
        Emulator(port=emu.port).start()


def _start_cli(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ABEJA_", "PLATFORM_"))}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "abeja_runtime",
            "emulator",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl+C" in line:
            break
    text = "".join(lines)
    found = dict(re.findall(r"export (\w+)=(\S+)", text))
    assert {"ABEJA_API_URL", "ABEJA_ORGANIZATION_ID", "PLATFORM_AUTH_TOKEN"} <= set(found), text
    return proc, found, lines


def _stop_cli(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    return stderr


def test_cli_prints_credentials_and_keeps_state(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli-state"
    proc, found, _ = _start_cli(data_dir)
    try:
        url = found["ABEJA_API_URL"]
        assert url.startswith("http://127.0.0.1:")
        headers = {"Authorization": f"Bearer {found['PLATFORM_AUTH_TOKEN']}"}
        base = f"{url}/organizations/{found['ABEJA_ORGANIZATION_ID']}/training"
        created = requests.post(
            f"{base}/definitions/", json={"name": "from-cli"}, headers=headers, timeout=30
        )
        assert created.status_code == 200, created.text
        basic = requests.get(
            f"{base}/definitions/from-cli",
            auth=(
                f"user-{found['ABEJA_PLATFORM_USER_ID']}",
                found["ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN"],
            ),
            timeout=30,
        )
        assert basic.status_code == 200
        # a credential in the URL's query must not reach the log either
        requests.get(f"{url}/_emulator/blobs/models/1000000000000?signature=s3cr3t", timeout=30)
    finally:
        stderr = _stop_cli(proc)
    # requests are logged, credentials and query strings are not
    assert "/definitions/from-cli" in stderr
    assert found["PLATFORM_AUTH_TOKEN"] not in stderr
    assert found["ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN"] not in stderr
    assert "s3cr3t" not in stderr

    proc, again, _ = _start_cli(data_dir)
    try:
        assert again["ABEJA_ORGANIZATION_ID"] == found["ABEJA_ORGANIZATION_ID"]
        assert again["PLATFORM_AUTH_TOKEN"] == found["PLATFORM_AUTH_TOKEN"]
        headers = {"Authorization": f"Bearer {again['PLATFORM_AUTH_TOKEN']}"}
        base = f"{again['ABEJA_API_URL']}/organizations/{again['ABEJA_ORGANIZATION_ID']}/training"
        got = requests.get(f"{base}/definitions/from-cli", headers=headers, timeout=30)
        assert got.status_code == 200 and got.json()["name"] == "from-cli"
    finally:
        _stop_cli(proc)


def test_cli_without_werkzeug_says_how_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['werkzeug'] = None\n"
        "from abeja_runtime.cli import main\n"
        f"sys.exit(main(['emulator', '--data-dir', {str(tmp_path)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2  # missing configuration (an extra): the usage code
    assert "abeja-runtime[emulator]" in result.stderr
    # --help works without werkzeug too
    help_result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['werkzeug'] = None\n"
            "from abeja_runtime.cli import main\n"
            "main(['emulator', '--help'])\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_result.returncode == 0 and "--data-dir" in help_result.stdout


def test_importing_the_package_does_not_import_werkzeug() -> None:
    code = (
        "import sys, abeja_runtime, abeja_runtime.emulator, abeja_runtime.cli.emulator\n"
        "print('werkzeug' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
