"""Benchmark: the emulator dashboard's pages with a definition of 1,000 jobs and a job of 10,000 points.

Run: ``.venv/bin/python benchmarks/bench_dashboard.py [--requests 30] [--browser-runs 5]``

Fills an emulator (file-backed, as ``abeja-runtime emulator`` runs it) with a
definition of 1,000 jobs (one version each, as ``Emulator.create_job`` makes
them) and one job with 10,000 statistics points, then times, over HTTP with
the session cookie, ``--requests`` requests of each page and prints p50/p95:

- ``/`` (definitions), ``/definitions/<name>`` first and last job page,
  the job page, the statistics poll with the whole history (``after=0``,
  what a page asks first) and the steady poll (nothing new);
- as the baseline measured in the same run, two Training API calls on the
  same emulator: ``get_training_jobs`` with ``limit=50`` (the rows a
  definition page shows) and ``get_training_job``; ratios are against them.

With ``/usr/bin/chromium`` and playwright installed, it also times in the
browser: from navigation to the job page until all 10,000 points are in the
charts and drawn (the next animation frame), and from a statistics report
to the page holding it (the live latency; the page polls every second).
Target: every page under 300 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from abeja_runtime.emulator import Emulator

NAME = "bench"
JOBS = 1000
POINTS = 10_000
TARGET_MS = 300.0
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _document(i: int) -> dict[str, Any]:
    epochs, steps = 100, POINTS // 100
    epoch, step = divmod(i, steps)
    stages: dict[str, Any] = {"train": {"loss": 1.0 / (i + 1), "accuracy": i / POINTS}}
    if step == steps - 1:
        stages["validation"] = {"loss": 1.2 / (i + 1), "accuracy": i / POINTS - 0.01}
    return {
        "epoch": epoch + 1,
        "num_epochs": epochs,
        "progress_percentage": (i + 1) / POINTS,
        "stages": stages,
        "learning_rate": 0.001,
    }


def fill(emu: Emulator) -> str:
    """1,000 jobs in one definition; the newest gets 10,000 statistics points."""
    started = time.perf_counter()
    job_id = ""
    for _ in range(JOBS):
        job_id = emu.create_job(NAME)["TRAINING_JOB_ID"]
    # Straight into the store: 10,000 HTTP posts would only time the API here. The
    # documents are what update_statistics stores for a valid post.
    store = emu._require()  # benchmark setup: a private handle on the store
    for i in range(POINTS):
        store.update_statistics(emu.organization_id, NAME, job_id, _document(i))
    print(f"filled {JOBS} jobs and {POINTS} points in {time.perf_counter() - started:.1f} s")
    return job_id


def timed(session: requests.Session, url: str, n: int, **kwargs: Any) -> list[float]:
    session.get(url, timeout=60, **kwargs).raise_for_status()  # warm
    out = []
    for _ in range(n):
        start = time.perf_counter()
        response = session.get(url, timeout=60, **kwargs)
        response.content  # noqa: B018 - the whole body
        out.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def server(emu: Emulator, job_id: str, n: int) -> bool:
    session = requests.Session()
    session.post(f"{emu.url}/_dashboard/login", json={"token": emu.token}, timeout=30)
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {emu.token}"
    base = f"{emu.url}/organizations/{emu.organization_id}/training/definitions/{NAME}"
    stats_url = f"{emu.url}/_dashboard/api/definitions/{NAME}/jobs/{job_id}/statistics"
    last = session.get(stats_url, timeout=60).json()["next"]
    baseline_list = timed(api, f"{base}/jobs", n, params={"limit": 50})
    baseline_job = timed(api, f"{base}/jobs/{job_id}", n)
    rows = [
        ("definitions /", f"{emu.url}/", {}, baseline_list),
        ("definition, jobs page 1", f"{emu.url}/definitions/{NAME}", {}, baseline_list),
        (
            "definition, jobs page 20",
            f"{emu.url}/definitions/{NAME}",
            {"params": {"page": 20, "vpage": 50}},
            baseline_list,
        ),
        ("job page", f"{emu.url}/definitions/{NAME}/jobs/{job_id}", {}, baseline_job),
        (f"statistics JSON, {POINTS} pts", stats_url, {"params": {"after": 0}}, baseline_job),
        ("statistics JSON, steady poll", stats_url, {"params": {"after": last}}, baseline_job),
    ]
    b_list, b_job = statistics.median(baseline_list), statistics.median(baseline_job)
    print(f"\nserver render time over HTTP, {n} requests each (ms)")
    print(f"{'request':34} {'p50':>8} {'p95':>8} {'x baseline p50':>15}")
    print(f"{'[baseline] API jobs?limit=50':34} {b_list:8.1f} {pct(baseline_list, 0.95):8.1f}")
    print(f"{'[baseline] API get job':34} {b_job:8.1f} {pct(baseline_job, 0.95):8.1f}")
    ok = True
    for label, url, kwargs, baseline in rows:
        times = timed(session, url, n, **kwargs)
        p50, p95 = statistics.median(times), pct(times, 0.95)
        ok &= p95 < TARGET_MS
        ratio = p50 / statistics.median(baseline)
        print(f"{label:34} {p50:8.1f} {p95:8.1f} {ratio:14.1f}x")
    size = len(session.get(stats_url, timeout=60).content)
    print(f"(statistics JSON with the whole history: {size / 1e6:.2f} MB)")
    return ok


def browser(emu: Emulator, job_id: str, runs: int) -> bool | None:
    if not Path(CHROMIUM).exists():
        print(f"\nbrowser: skipped ({CHROMIUM} not installed)")
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("\nbrowser: skipped (playwright not installed)")
        return None
    drawn = (
        "() => window.abejaDashboard && window.abejaDashboard.points === "
        f"{POINTS} && Object.keys(window.abejaDashboard.charts).length > 0"
    )
    frame = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        page = context.new_page()
        page.goto(emu.dashboard_url)
        page.wait_for_selector('main[data-page="definitions"]')
        url = f"{emu.url}/definitions/{NAME}/jobs/{job_id}"
        page.goto(url)  # warm: caches the script files
        page.wait_for_function(drawn, timeout=60_000)
        loads = []
        for _ in range(runs):
            page.goto("about:blank")
            start = time.perf_counter()
            page.goto(url)
            page.wait_for_function(drawn, timeout=60_000, polling="raf")
            page.evaluate(frame)
            loads.append((time.perf_counter() - start) * 1000)
        latencies = []
        client = emu.client()
        for k in range(runs):
            count = page.evaluate("window.abejaDashboard.points")
            start = time.perf_counter()
            client.update_statistics(
                emu.organization_id, NAME, job_id, {**_document(POINTS - 1), "probe": k}
            )
            page.wait_for_function(
                f"() => window.abejaDashboard.points === {count + 1}", timeout=30_000
            )
            latencies.append((time.perf_counter() - start) * 1000)
        context.close()
    p50 = statistics.median(loads)
    print(f"\nbrowser (headless chromium), {runs} runs")
    print(
        f"job page, navigation -> {POINTS} points charted and drawn: "
        f"p50 {p50:.0f} ms, max {max(loads):.0f} ms"
    )
    print(
        f"report -> on the page (1 s poll): p50 {statistics.median(latencies):.0f} ms, "
        f"max {max(latencies):.0f} ms"
    )
    return p50 < TARGET_MS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--browser-runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir, Emulator(data_dir=data_dir) as emu:
        job_id = fill(emu)
        server_ok = server(emu, job_id, args.requests)
        browser_ok = browser(emu, job_id, args.browser_runs)
    verdict = server_ok and browser_ok is not False
    print(
        f"\ntarget < {TARGET_MS:.0f} ms (server p95, browser p50): {'met' if verdict else 'MISSED'}"
    )
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
