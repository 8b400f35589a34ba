"""Fixtures of the runner's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from abeja_runtime.emulator import Emulator


@pytest.fixture
def external_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """An emulator started by the test (not the one ``run`` embeds), on a data dir of its own."""
    pytest.importorskip("werkzeug")
    from abeja_runtime.emulator import Emulator

    with Emulator(data_dir=str(tmp_path / "external")) as emu:
        yield emu
