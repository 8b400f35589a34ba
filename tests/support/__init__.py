"""Helpers shared by the tests (servers, proxies, job environments), imported as
``tests.support.<module>``; the repository root is on ``sys.path`` through the
``pythonpath`` setting of pytest in pyproject.toml."""

from __future__ import annotations

from pathlib import Path

#: the repository root (where pyproject.toml is)
REPO = Path(__file__).resolve().parents[2]
