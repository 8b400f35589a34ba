"""Concurrent clients: nothing lost, names unique, versions numbered without gaps."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from abeja_runtime.emulator import Emulator

from tests.support import REPO
from tests.support.emulator_support import Api

ROOT = REPO


@pytest.mark.slow
def test_scaled_down_statistics_load_loses_nothing(tmp_path: Path) -> None:
    """The benchmark at 8 jobs x 10 posts/s x 2 s: no failure, full history, in order."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_emulator.py"),
            "--jobs",
            "8",
            "--duration",
            "2",
            "--baseline-duration",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "160 sent, 160 ok, 0 failed" in result.stdout, result.stdout
    assert "0 missing, 0 jobs out of order" in result.stdout, result.stdout
    assert "RESULT: PASS" in result.stdout


def test_concurrent_creates_keep_names_unique_and_versions_dense(tmp_path: Path) -> None:
    with Emulator(data_dir=tmp_path) as emu:
        apis = [Api(emu) for _ in range(8)]

        def create(i: int) -> int:
            return apis[i % 8].call("POST", "/definitions/", json={"name": "race"}).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(create, range(16)))
        assert sorted(codes) == [200] + [409] * 15

        with ThreadPoolExecutor(8) as pool:
            versions = list(pool.map(lambda i: apis[i % 8].version("race"), range(16)))
        numbers = sorted(v["job_definition_version"] for v in versions)
        assert numbers == list(range(1, 17))

        with ThreadPoolExecutor(8) as pool:
            jobs = list(pool.map(lambda i: apis[i % 8].job("race", 1 + i % 16), range(32)))
        assert len({j["id"] for j in jobs}) == 32
        assert apis[0].ok("GET", "/definitions/race/jobs")["total"] == 32
        for api in apis:
            api.close()
