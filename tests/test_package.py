"""Package-level guarantees: cheap import, no framework imports, public names."""

from __future__ import annotations

import json
import subprocess
import sys

import abeja_runtime


def test_version_is_exported() -> None:
    assert isinstance(abeja_runtime.__version__, str)
    assert abeja_runtime.__version__.count(".") >= 2


def test_import_pulls_in_no_framework() -> None:
    code = (
        "import sys, json, abeja_runtime; "
        "mods = ['torch','keras','tensorflow','lightning','pytorch_lightning','transformers',"
        "'werkzeug','numpy','tqdm']; "
        "print(json.dumps([m for m in mods if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_every_public_name_resolves() -> None:
    for name in abeja_runtime.__all__:
        assert getattr(abeja_runtime, name) is not None, name
