"""Importing the integrations package (and the plain-loop helper) imports no framework.

Each check runs in a fresh interpreter: this test process has the frameworks loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FRAMEWORKS = [
    "torch",
    "keras",
    "tensorflow",
    "jax",
    "lightning",
    "pytorch_lightning",
    "transformers",
    "accelerate",
    "numpy",
    "werkzeug",
]


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import sys, json\n{statement}\n"
        f"print(json.dumps([m for m in {FRAMEWORKS!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    loaded: list[str] = json.loads(done.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import abeja_runtime",
        "import abeja_runtime.integrations",
        "import abeja_runtime.integrations._common",
        "import abeja_runtime.integrations.torch",
    ],
)
def test_import_pulls_in_no_framework(statement: str) -> None:
    assert _loaded_after(statement) == []


@pytest.mark.framework
def test_the_check_itself_sees_a_framework() -> None:
    pytest.importorskip("torch")
    assert "torch" in _loaded_after("import abeja_runtime.integrations.lightning")


@pytest.mark.parametrize(
    ("module", "blocked", "hint"),
    [
        ("keras", ["keras"], "pip install keras"),
        (
            "lightning",
            ["lightning", "lightning.pytorch", "pytorch_lightning"],
            "pip install lightning",
        ),
        ("transformers", ["transformers"], "pip install transformers"),
    ],
)
def test_missing_framework_is_a_clear_import_error(
    module: str, blocked: list[str], hint: str
) -> None:
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "try:\n"
        f"    import abeja_runtime.integrations.{module}\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('imported')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert hint in done.stdout, done.stdout
