"""HANDLER resolution: the static form check, the ``--check`` child and the job entrypoint.

These need no API: they run ``python -m abeja_runtime.runner.child`` in temporary
source directories, the way the runner does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from abeja_runtime.errors import ConfigurationError
from abeja_runtime.runner.child import (
    EXIT_BAD_HANDLER,
    EXIT_HANDLER_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    HandlerError,
    HandlerSpec,
    build_context,
    parse_handler,
)
from abeja_runtime.runner.inputs import check_handler, parse_assignments

from tests.support import REPO
from tests.support.processes import wait_for, with_signals


def _write(directory: Path, name: str, code: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return path


def _child(
    source: Path, env: dict[str, str], *args: str, module: str = "abeja_runtime.runner.child"
) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full["PYTHONPATH"] = str(REPO)
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=source,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --------------------------------------------------------------------------- static form


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("train:handler", HandlerSpec("train", "handler")),
        ("pkg.sub.train:main", HandlerSpec("pkg.sub.train", "main")),
        (" train : handler ", HandlerSpec("train", "handler")),
    ],
)
def test_parse_handler_accepts_module_function(value: str, expected: HandlerSpec) -> None:
    spec = parse_handler(value)
    assert spec == expected
    assert str(spec) == f"{spec.module}:{spec.function}"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "HANDLER is empty"),
        ("train", "has no colon"),
        ("train.py", "did you mean 'train:handler'"),
        ("a:b:c", "has 2 colons"),
        (":handler", "no module before the colon"),
        ("train:", "no function after the colon"),
        ("src/train.py:handler", "is a file path"),
        ("my-train:handler", "is not a Python module name"),
        ("train:handle-it", "is not a Python function name"),
        ("class:handler", "is not a Python module name"),
    ],
)
def test_parse_handler_refuses_malformed_values_clearly(value: str, fragment: str) -> None:
    with pytest.raises(HandlerError) as info:
        parse_handler(value)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, ConfigurationError)


# --------------------------------------------------------------------------- --check child


def test_check_handler_passes_for_a_real_handler(tmp_path: Path) -> None:
    _write(tmp_path, "train.py", "def handler(context):\n    raise SystemExit('must not run')\n")
    assert check_handler("train:handler", tmp_path) == HandlerSpec("train", "handler")


def test_check_handler_finds_packages_and_reexports(tmp_path: Path) -> None:
    _write(tmp_path, "pkg/__init__.py", "")
    _write(tmp_path, "pkg/impl.py", "def _real(context):\n    pass\n")
    _write(tmp_path, "pkg/entry.py", "from .impl import _real as handler\n")
    assert check_handler("pkg.entry:handler", tmp_path).module == "pkg.entry"


def test_check_handler_module_not_found(tmp_path: Path) -> None:
    with pytest.raises(HandlerError) as info:
        check_handler("nosuchmodule:handler", tmp_path)
    message = str(info.value)
    assert "module 'nosuchmodule' not found" in message
    assert str(tmp_path) in message


def test_check_handler_function_missing_lists_what_exists(tmp_path: Path) -> None:
    _write(tmp_path, "train.py", "def fit(context):\n    pass\n\ndef main():\n    pass\n")
    with pytest.raises(HandlerError) as info:
        check_handler("train:handler", tmp_path)
    message = str(info.value)
    assert "has no function 'handler'" in message
    assert "it defines: fit, main" in message


def test_check_handler_not_callable(tmp_path: Path) -> None:
    _write(tmp_path, "train.py", "handler = 42\n")
    with pytest.raises(HandlerError, match=r"train\.handler is a int, not a function"):
        check_handler("train:handler", tmp_path)


def test_check_handler_import_error_inside_the_module(tmp_path: Path) -> None:
    _write(tmp_path, "train.py", "import not_installed_dependency_xyz\ndef handler(c):\n    pass\n")
    with pytest.raises(HandlerError) as info:
        check_handler("train:handler", tmp_path)
    message = str(info.value)
    assert "importing module 'train' failed" in message
    assert "not_installed_dependency_xyz" in message


def test_check_handler_exception_at_import_names_the_line(tmp_path: Path) -> None:
    _write(tmp_path, "train.py", "x = 1\nraise RuntimeError('bad config')\n")
    with pytest.raises(HandlerError) as info:
        check_handler("train:handler", tmp_path)
    message = str(info.value)
    assert "RuntimeError: bad config" in message
    assert "train.py:2" in message


def test_check_handler_static_errors_start_no_child(tmp_path: Path) -> None:
    # A missing source dir would make any child fail differently: the form is
    # refused first, in this process.
    with pytest.raises(HandlerError, match="has no colon"):
        check_handler("train", tmp_path / "does-not-exist")


def test_check_handler_refuses_a_missing_source_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="is not a directory"):
        check_handler("train:handler", tmp_path / "nope")


# --------------------------------------------------------------------------- job entrypoint


def test_entrypoint_calls_handler_with_context_and_datasets(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "train.py",
        """
        import json, os, sys
        def handler(context):
            print("argv", sys.argv[1:])
            with open(os.environ["OUT"], "w") as fh:
                json.dump(context, fh)
        """,
    )
    out = tmp_path / "context.json"
    outcome = tmp_path / "outcome.json"
    done = _child(
        tmp_path,
        {
            "HANDLER": "train:handler",
            "CONTEXT": json.dumps({"lr": 0.1}),
            "DATASETS": json.dumps({"train": "1234567890123"}),
            "OUT": str(out),
            "ABEJA_RUNTIME_OUTCOME_FILE": str(outcome),
        },
    )
    assert done.returncode == EXIT_OK, done.stderr
    assert json.loads(out.read_text()) == {"lr": 0.1, "datasets": {"train": "1234567890123"}}
    assert "argv []" in done.stdout  # our own flags never reach the handler's argv
    assert json.loads(outcome.read_text())["outcome"] == "ok"


def test_entrypoint_exception_fails_with_traceback_and_outcome(tmp_path: Path) -> None:
    _write(tmp_path, "train.py", "def handler(context):\n    raise ValueError('boom at epoch 3')\n")
    outcome = tmp_path / "outcome.json"
    done = _child(
        tmp_path, {"HANDLER": "train:handler", "ABEJA_RUNTIME_OUTCOME_FILE": str(outcome)}
    )
    assert done.returncode == EXIT_HANDLER_FAILED
    assert "Traceback (most recent call last)" in done.stderr
    assert "ValueError: boom at epoch 3" in done.stderr
    assert json.loads(outcome.read_text()) == {
        "outcome": "failed",
        "error": "ValueError: boom at epoch 3",
    }


def test_entrypoint_sys_exit_codes(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "train.py",
        "import sys, os\ndef handler(context):\n    sys.exit(int(os.environ['CODE']))\n",
    )
    assert _child(tmp_path, {"HANDLER": "train:handler", "CODE": "0"}).returncode == 0
    assert _child(tmp_path, {"HANDLER": "train:handler", "CODE": "5"}).returncode == 5


def test_entrypoint_bad_handler_and_bad_context(tmp_path: Path) -> None:
    _write(tmp_path, "train.py", "def handler(context):\n    pass\n")
    done = _child(tmp_path, {"HANDLER": "train:nothere"})
    assert done.returncode == EXIT_BAD_HANDLER
    assert "has no function 'nothere'" in done.stderr
    done = _child(tmp_path, {"HANDLER": "train:handler", "CONTEXT": "[1, 2]"})
    assert done.returncode == EXIT_BAD_HANDLER
    assert "CONTEXT must be a JSON object" in done.stderr
    done = _child(tmp_path, {"HANDLER": "train:handler", "DATASETS": "{nope"})
    assert done.returncode == EXIT_BAD_HANDLER
    assert "DATASETS is not valid JSON" in done.stderr


def test_check_mode_never_calls_the_handler(tmp_path: Path) -> None:
    marker = tmp_path / "called"
    _write(
        tmp_path,
        "train.py",
        f"def handler(context):\n    open({str(marker)!r}, 'w').close()\n",
    )
    done = _child(tmp_path, {"HANDLER": "train:handler"}, "--check")
    assert done.returncode == 0, done.stderr
    assert not marker.exists()


def test_the_old_handler_main_path_still_runs_the_handler(tmp_path: Path) -> None:
    # ``python -m abeja_runtime.handler_main`` was documented before the move (issue 16)
    _write(
        tmp_path,
        "train.py",
        "import sys, os\ndef handler(context):\n    sys.exit(int(os.environ['CODE']))\n",
    )
    old = "abeja_runtime.handler_main"
    assert _child(tmp_path, {"HANDLER": "train:handler", "CODE": "5"}, module=old).returncode == 5
    done = _child(tmp_path, {"HANDLER": "train:nothere"}, "--check", module=old)
    assert done.returncode == EXIT_BAD_HANDLER
    assert "has no function 'nothere'" in done.stderr


@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [
        (signal.SIGINT, EXIT_INTERRUPTED, "handler interrupted"),
        (signal.SIGTERM, -signal.SIGTERM, ""),
    ],
    ids=["SIGINT", "SIGTERM"],
)
def test_the_handler_hears_sigint_and_sigterm_its_parent_ignored(
    tmp_path: Path, sig: int, code: int, line: str
) -> None:
    # A runner in the background of a script starts with SIGINT ignored, and an
    # ignored signal stays ignored across exec: the handler must still get the
    # Ctrl-C and the stop the runner passes on to it.
    _write(
        tmp_path,
        "train.py",
        """
        import pathlib, time
        def handler(context):
            pathlib.Path("ready").touch()
            time.sleep(120)
        """,
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), HANDLER="train:handler")
    proc = subprocess.Popen(
        with_signals(
            [sys.executable, "-m", "abeja_runtime.runner.child"],
            ignored=(signal.SIGINT, signal.SIGTERM),
        ),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (tmp_path / "ready").exists(), "the handler to start")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert line in err


def test_build_context_defaults() -> None:
    assert build_context({}) == {"datasets": {}}
    assert build_context({"CONTEXT": "{}", "DATASETS": '{"a": "1"}'}) == {"datasets": {"a": "1"}}


def test_parse_assignments() -> None:
    assert parse_assignments(["A=1", "B=x=y", "C="], "--env") == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ConfigurationError, match="expected KEY=VALUE"):
        parse_assignments(["novalue"], "--env")
    with pytest.raises(ConfigurationError, match="given twice"):
        parse_assignments(["A=1", "A=2"], "--env")
    with pytest.raises(ConfigurationError, match="expected KEY=VALUE"):
        parse_assignments(["=1"], "--dataset")
