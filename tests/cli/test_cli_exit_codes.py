"""Every bad input to the ``abeja-runtime`` command: one line, the documented code, nothing half-done.

Each command runs as a real process (``python -m abeja_runtime``) against an emulator on
127.0.0.1, so what is checked is what a shell sees: the exit status, and stderr being
one line without a traceback. The exit codes come from the README's table: a row added
there without a command here fails :func:`test_every_readme_exit_code_has_a_command`.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("werkzeug")

from abeja_runtime.config import CREDENTIAL_ENV
from abeja_runtime.emulator import Emulator
from abeja_runtime.errors import Conflict

from tests.support import REPO
from tests.support.fault_proxy import FaultProxy
from tests.support.processes import with_signals

README = REPO / "README.md"


def readme_exit_codes() -> list[int]:
    """The codes of the README's exit-code table (``130 / 143`` counts as two)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    codes: list[int] = []
    for line in section.splitlines():
        match = re.match(r"\|\s*([0-9][0-9 /]*)\|", line)
        if match:
            codes.extend(int(c) for c in match.group(1).split("/"))
    return codes


def base_env(emu: Emulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
    for name in ("ABEJA_ORGANIZATION_ID", "ABEJA_RUNTIME_STOP_GRACE", "TRAINING_JOB_ID"):
        env.pop(name, None)
    env.update(
        PYTHONPATH=str(REPO),
        ABEJA_API_URL=emu.url,
        PLATFORM_AUTH_TOKEN=emu.token,
        ABEJA_ORGANIZATION_ID=emu.organization_id,
        ABEJA_SDK_MAX_RETRY_COUNT="0",
    )
    env.update(extra)
    return env


class Ran:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def one_line(self) -> str:
        """stderr: exactly one line, no traceback; returns it."""
        assert "Traceback" not in self.err, self.err
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        return lines[0]


def cli(env: dict[str, str], *argv: str, cwd: Path | None = None, **kwargs: Any) -> Ran:
    proc = subprocess.run(
        # SIGINT/SIGTERM as from a terminal, however pytest itself was started
        with_signals([sys.executable, "-m", "abeja_runtime", *argv]),
        env=env,
        cwd=cwd or REPO,
        capture_output="stdout" not in kwargs,
        text=True,
        timeout=120,
        **kwargs,
    )
    return Ran(proc)


def handler_dir(tmp_path: Path, body: str) -> Path:
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "train.py").write_text(textwrap.dedent(body))
    return source


def definition_names(emu: Emulator) -> set[str]:
    entries = emu.client().get_training_job_definitions(emu.organization_id)["entries"]
    return {e["name"] for e in entries}


def ensure_definition(emu: Emulator, name: str) -> None:
    with contextlib.suppress(Conflict):
        emu.client().create_training_job_definition(emu.organization_id, name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# A handler that stops its own job through the API, then waits to be stopped.
STOPS_ITSELF = """
import os, time
from abeja_runtime import APIClient

def handler(context):
    APIClient().stop_training_job(
        os.environ["ABEJA_ORGANIZATION_ID"],
        os.environ["TRAINING_JOB_DEFINITION_NAME"],
        os.environ["TRAINING_JOB_ID"],
    )
    time.sleep(60)
"""

# A handler that signals the runner (its parent), as Ctrl-C or a kill would.
SIGNALS_RUNNER = """
import os, signal, time

def handler(context):
    os.kill(os.getppid(), signal.{name})
    time.sleep(60)
"""


def _row_0(emu: Emulator, tmp: Path) -> Ran:
    return cli(base_env(emu), "definitions", "list")


def _row_1(emu: Emulator, tmp: Path) -> Ran:
    proxy = FaultProxy(emu.port, target=b"/definitions", mode="status")
    proxy.status = 500
    try:
        return cli(base_env(emu, ABEJA_API_URL=proxy.url), "definitions", "create", "exit-1")
    finally:
        proxy.close()


def _row_2(emu: Emulator, tmp: Path) -> Ran:
    return cli(base_env(emu), "definitions", "create", "a/b")


def _row_3(emu: Emulator, tmp: Path) -> Ran:
    ensure_definition(emu, "exit-3")
    return cli(base_env(emu), "jobs", "get", "exit-3", "1234567890123")


def _row_4(emu: Emulator, tmp: Path) -> Ran:
    return cli(base_env(emu, PLATFORM_AUTH_TOKEN="not-the-token-at-all"), "definitions", "list")


def _row_5(emu: Emulator, tmp: Path) -> Ran:
    ensure_definition(emu, "exit-5")
    return cli(base_env(emu), "definitions", "create", "exit-5")


def _row_6(emu: Emulator, tmp: Path) -> Ran:
    url = f"http://127.0.0.1:{free_port()}"
    return cli(base_env(emu, ABEJA_API_URL=url), "definitions", "list")


def _run_row(emu: Emulator, tmp: Path, body: str, name: str) -> Ran:
    source = handler_dir(tmp, body)
    env = base_env(emu, ABEJA_RUNTIME_STOP_GRACE="10")
    return cli(env, "run", "train:handler", "--source", str(source), "--job-definition", name)


def _row_7(emu: Emulator, tmp: Path) -> Ran:
    return _run_row(emu, tmp, STOPS_ITSELF, "exit-7")


def _row_130(emu: Emulator, tmp: Path) -> Ran:
    return _run_row(emu, tmp, SIGNALS_RUNNER.format(name="SIGINT"), "exit-130")


def _row_141(emu: Emulator, tmp: Path) -> Ran:
    ensure_definition(emu, "exit-141")
    read, write = os.pipe()
    os.close(read)  # like `| head -0`: the reader is gone before the first write
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "abeja_runtime", "definitions", "list", "--json"],
            env=base_env(emu),
            cwd=REPO,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    return Ran(proc)


def _row_143(emu: Emulator, tmp: Path) -> Ran:
    return _run_row(emu, tmp, SIGNALS_RUNNER.format(name="SIGTERM"), "exit-143")


ROWS: dict[int, Callable[[Emulator, Path], Ran]] = {
    0: _row_0,
    1: _row_1,
    2: _row_2,
    3: _row_3,
    4: _row_4,
    5: _row_5,
    6: _row_6,
    7: _row_7,
    130: _row_130,
    141: _row_141,
    143: _row_143,
}


def test_every_readme_exit_code_has_a_command() -> None:
    assert sorted(readme_exit_codes()) == sorted(ROWS)


def _ends_cleanly(ran: Ran, code: int) -> None:
    """stderr is at most one line of ours, never a traceback (run's notes are on stdout)."""
    assert "Traceback" not in ran.err, ran.err
    lines = ran.err.strip().splitlines()
    assert len(lines) <= 1, ran.err
    if code != 0:
        assert len(lines) == 1 or code in (7, 130, 143), ran.err


@pytest.mark.parametrize("code", readme_exit_codes())
def test_readme_exit_code_row(emu: Emulator, tmp_path: Path, code: int) -> None:
    ran = ROWS[code](emu, tmp_path)
    assert ran.code == code, (ran.out, ran.err)
    if code in (7, 130, 143):
        # run: the handler's own output and the runner's notes go to stdout
        _ends_cleanly(ran, code)
        assert "abeja-runtime:" in ran.out
    elif code == 0:
        assert ran.err == ""
    else:
        assert ran.one_line().startswith("abeja-runtime")


# ------------------------------------------------------------- nothing half-done


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--dataset", "x=notanid"], "13 digits"),
        (["--grace", "-1"], "--grace"),
        (["--result-dir", "/dev/null/x"], "/dev/null/x"),
        (["--job-definition", "../../etc"], "job_definition_name"),
    ],
)
def test_run_refuses_a_bad_argument_before_creating_anything(
    emu: Emulator, tmp_path: Path, option: list[str], message: str
) -> None:
    source = handler_dir(tmp_path, "def handler(context):\n    pass\n")
    before = definition_names(emu)
    name = ["--job-definition", "never-created"] if "--job-definition" not in option else []
    ran = cli(base_env(emu), "run", "train:handler", "--source", str(source), *name, *option)
    assert ran.code == 2, ran.err
    assert message in ran.one_line()
    assert definition_names(emu) == before


@pytest.mark.parametrize(
    "argv",
    [
        ["--dataset", "x=notanid"],
        ["--dataset", "x=12345"],
        ["--instance-type", "gpu-huge"],
    ],
)
def test_jobs_create_refuses_before_any_request(emu: Emulator, argv: list[str]) -> None:
    client = emu.client()
    org = emu.organization_id
    emu.create_job("jobs-create-bad")  # version 1 exists, with one job
    before = client.get_training_jobs(org, "jobs-create-bad")["total"]
    ran = cli(base_env(emu), "jobs", "create", "jobs-create-bad", "1", *argv)
    assert ran.code == 2, ran.err
    assert ran.one_line().startswith("abeja-runtime: error: ")
    assert client.get_training_jobs(org, "jobs-create-bad")["total"] == before


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["definitions", "create", "a/b"], "'/'"),
        (["definitions", "create", ".."], "'..'"),
        (["jobs", "get", "demo", "123"], "training_job_id"),
        (["jobs", "get", "demo", "abc"], "training_job_id"),
        (["jobs", "get", "demo", "1234567890123456789"], "training_job_id"),
        (["models", "get", "demo", "notanid"], "model_id"),
        (["jobs", "list", "demo", "--limit", "-1"], "--limit"),
        (["jobs", "create", "demo", "0"], "VERSION"),
        (["definitions", "get"], "NAME"),
        (["versions", "get", "demo", "\uff11"], "VERSION"),
        (["models", "create", "demo", "README.md", "--job", "notanid"], "--job"),
        (["definitions", "list", "--organization", "12"], "organization_id"),
    ],
)
def test_argument_errors_exit_2_with_one_line(emu: Emulator, argv: list[str], message: str) -> None:
    before = definition_names(emu)
    ran = cli(base_env(emu), *argv)
    assert ran.code == 2, ran.err
    assert message in ran.one_line()
    assert definition_names(emu) == before


def test_password_in_api_url_is_never_printed(emu: Emulator) -> None:
    url = f"http://user:hunter2secret@127.0.0.1:{emu.port}"
    ran = cli(base_env(emu, ABEJA_API_URL=url), "definitions", "list")
    assert ran.code == 2
    line = ran.one_line()
    assert "ABEJA_API_URL" in line and "hunter2secret" not in line


def test_api_400_for_a_limit_is_a_usage_error(emu: Emulator) -> None:
    ensure_definition(emu, "limits")
    ran = cli(base_env(emu), "jobs", "list", "limits", "--limit", "100000")
    assert ran.code == 2, ran.err
    assert "limit" in ran.one_line()


# ------------------------------------------------------------- OS errors, one line


def test_emulator_port_in_use(tmp_path: Path, emu: Emulator) -> None:
    env = base_env(emu)
    ran = cli(env, "emulator", "--port", str(emu.port), "--in-memory")
    assert ran.code == 2
    line = ran.one_line()
    assert str(emu.port) in line and "--port" in line


def test_emulator_data_dir_is_a_file(tmp_path: Path, emu: Emulator) -> None:
    a_file = tmp_path / "state"
    a_file.write_text("not a dir")
    ran = cli(base_env(emu), "emulator", "--port", "0", "--data-dir", str(a_file))
    assert ran.code == 2
    assert "not a directory" in ran.one_line()
    assert a_file.read_text() == "not a dir"


@pytest.mark.parametrize("reader", ["closed", "true"])
def test_closed_output_pipe(emu: Emulator, reader: str) -> None:
    ensure_definition(emu, "pipe-def")
    if reader == "closed":
        ran = _row_141(emu, Path("."))
    else:
        command = f"{sys.executable} -m abeja_runtime jobs list pipe-def --json | true"
        proc = subprocess.run(
            ["bash", "-c", "set -o pipefail; " + command],
            env=base_env(emu),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        ran = Ran(proc)
        if ran.code == 0:  # `true` may exit after all was written: nothing broke then
            assert ran.err == ""
            return
    assert ran.code == 141
    assert "output closed" in ran.one_line()


def test_top_level_os_error_is_one_line(emu: Emulator, tmp_path: Path) -> None:
    """An OSError no command maps (a download to an impossible path) is one line, code 1."""
    client = emu.client()
    org = emu.organization_id
    job_env = emu.create_job("os-error-def")
    job_id = job_env["TRAINING_JOB_ID"]
    (tmp_path / "m.txt").write_text("weights")
    model = client.create_training_model(
        org, "os-error-def", str(tmp_path / "m.txt"), {"training_job_id": job_id}
    )
    model_id = model["training_model_id"]
    ran = cli(
        base_env(emu),
        "models",
        "download",
        "os-error-def",
        model_id,
        "--output",
        "/dev/null/x/model.zip",
    )
    assert ran.code == 1, ran.err
    assert "/dev/null" in ran.one_line()


# --------------------------------------------------- the README's variable tables


def _code_env_names() -> dict[str, list[str]]:
    """Every ``ENV_* = "NAME"`` defined in the package: name -> the files defining it."""
    defined: dict[str, list[str]] = {}
    for path in sorted((REPO / "abeja_runtime").rglob("*.py")):
        for match in re.finditer(r'^ENV_\w+ = "([A-Z0-9_]+)"', path.read_text(), re.M):
            defined.setdefault(match.group(1), []).append(path.name)
    return defined


def _readme_env_names() -> set[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Runner and CLI variables", 1)[1].split("\n## Benchmarks", 1)[0]
    return set(re.findall(r"`([A-Z][A-Z0-9_]{2,})`", section))


def test_each_variable_name_is_defined_once() -> None:
    twice = {name: files for name, files in _code_env_names().items() if len(files) > 1}
    assert twice == {}


def test_readme_variable_tables_match_the_code() -> None:
    in_code = set(_code_env_names())
    in_readme = _readme_env_names()
    assert in_code - in_readme == set(), "variables the README does not list"
    assert in_readme - in_code == set(), "variables the README lists that the code never reads"
