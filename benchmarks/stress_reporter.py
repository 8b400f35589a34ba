"""Run the reporter's cross-process tests many times in a row on a loaded machine.

The ordering and restart guarantees of the statistics spool (issue 13) are races when
they are wrong: a test that passes alone may fail one run in ten when the cores are
busy. This script keeps every core busy with ``--busy`` processes running
``while 1: pass`` and runs, ``--runs`` times in a row, the two tests that show it:

* ``tests/statistics/test_spool.py::test_two_processes_report_into_one_job`` (two processes of
  one job: each one's epoch ends arrive, in that process's order);
* ``tests/statistics/test_spool.py::test_sigkill_then_restart_delivers_every_reported_epoch_end``
  (a process SIGKILLed during an outage; the restart sends its leftovers first).

It stops at the first failure (its output is printed) and exits 1; otherwise it
prints ``N/N runs passed`` with the time taken and exits 0.

Usage::

    python benchmarks/stress_reporter.py               # 50 runs, 2 busy loops
    python benchmarks/stress_reporter.py --runs 5 --busy 0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = [
    "tests/statistics/test_spool.py::test_two_processes_report_into_one_job",
    "tests/statistics/test_spool.py::test_sigkill_then_restart_delivers_every_reported_epoch_end",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="runs in a row (default 50)")
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes (default 2)")
    parser.add_argument("tests", nargs="*", default=TESTS, help="pytest node ids to repeat")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    busy = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(args.busy)]
    started = time.monotonic()
    try:
        for run in range(1, args.runs + 1):
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *args.tests],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            took = time.monotonic() - started
            if result.returncode != 0:
                print(result.stdout[-8000:])
                print(result.stderr[-4000:], file=sys.stderr)
                print(f"run {run} FAILED after {run - 1}/{args.runs} passed ({took:.0f} s)")
                return 1
            print(f"run {run}/{args.runs} passed ({took:.0f} s)", flush=True)
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    took = time.monotonic() - started
    print(
        f"{args.runs}/{args.runs} runs passed with {args.busy} busy loops on "
        f"{os.cpu_count()} cores ({took:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
