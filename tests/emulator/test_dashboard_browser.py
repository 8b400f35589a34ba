"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

A training reports statistics into the emulator (through our
``StatisticsReporter``, over HTTP) while the job's page is open; the test
watches the chart gain points without a reload, then checks that every
value the charts hold is the statistics history's, and saves a screenshot
(under pytest's ``tmp_path`` and, when set, ``$ABEJA_RUNTIME_ARTIFACTS``).

Chromium is Debian's ``/usr/bin/chromium`` (``.ci/run`` installs it), never
a browser Playwright downloads. Without it the tests skip, except under CI
(``CI`` set), where a silent skip would hide a broken dashboard.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from abeja_runtime.emulator import Emulator
from abeja_runtime.job import JobContext
from abeja_runtime.statistics.reporter import StatisticsReporter

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
ABSENT = "absent"
#: what the page's charts hold: per chart, its series labels and columns, with
#: ``undefined`` (no value reported) told apart from ``null`` (a NaN/Infinity gap)
READ_CHARTS = """() => {
  const out = {};
  for (const [key, u] of Object.entries(window.abejaDashboard.charts)) {
    out[key] = {
      labels: u.series.slice(1).map(s => s.label),
      data: u.data.map(col => Array.from(col, v => v === undefined ? "absent" : v)),
    };
  }
  return out;
}"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser test (.ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install playwright)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def _save_screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    artifacts = os.environ.get("ABEJA_RUNTIME_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


def _log_in(page: Any, fresh_emu: Emulator) -> None:
    page.goto(fresh_emu.dashboard_url)
    page.wait_for_selector('main[data-page="definitions"]', timeout=30_000)
    assert "#" not in page.url and fresh_emu.token not in page.url  # the fragment is gone


def _chart_value(value: Any) -> Any:
    """A history value as the chart must hold it: NaN/Infinity are gaps (null)."""
    if isinstance(value, str):
        return None  # "NaN", "Infinity", "-Infinity"
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _x(doc: dict[str, Any], index: int) -> float:
    p, total = doc.get("progress_percentage"), doc.get("num_epochs")
    if isinstance(p, (int, float)) and isinstance(total, int) and total > 0:
        return float(p * total)
    if isinstance(doc.get("epoch"), int):
        return float(doc["epoch"])
    return float(index + 1)


def _expected_stage_chart(
    history: list[dict[str, Any]], metric: str, stages: list[str]
) -> dict[str, Any]:
    xs = [_x(h["statistics"], i) for i, h in enumerate(history)]
    columns = []
    for stage in stages:
        column = []
        for h in history:
            values = h["statistics"].get("stages", {}).get(stage, {})
            column.append(_chart_value(values[metric]) if metric in values else ABSENT)
        columns.append(column)
    return {"labels": stages, "data": [xs, *columns]}


def _close(actual: list[Any], expected: list[Any]) -> bool:
    if len(actual) != len(expected):
        return False
    for a, e in zip(actual, expected, strict=True):
        if isinstance(e, float) and isinstance(a, (int, float)):
            if not math.isclose(a, e, rel_tol=1e-12, abs_tol=1e-12):
                return False
        elif a != e:
            return False
    return True


def _train(reporter: StatisticsReporter, epochs: int, steps: int, pause: float) -> None:
    """A small fake training: step reports, an epoch-end with validation, one NaN loss."""
    for epoch in range(1, epochs + 1):
        for step in range(1, steps + 1):
            done = (epoch - 1 + step / steps) / epochs
            loss = 2.0 / (epoch * steps + step)
            reporter.report(
                epoch=epoch,
                num_epochs=epochs,
                progress=done,
                train={
                    "loss": float("nan") if (epoch, step) == (2, 3) else loss,
                    "accuracy": 1.0 - loss,
                },
            )
            time.sleep(pause)
        reporter.report(
            validation={"loss": 0.5 / epoch, "accuracy": 0.5 + epoch / 10}, epoch_end=True
        )
        time.sleep(pause)
        # the next epoch's steps carry no validation values (None removes a metric)
        reporter.report(validation={"loss": None, "accuracy": None})


@pytest.mark.slow
def test_job_page_chart_gains_points_while_a_training_reports(
    browser: Any, fresh_emu: Emulator, tmp_path: Path
) -> None:
    name = "live-demo"
    env = fresh_emu.create_job(name, description="browser test", environment={"LR": "0.01"})
    job_id = env["TRAINING_JOB_ID"]
    fresh_emu.set_job_status(name, job_id, "Active")
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    _log_in(page, fresh_emu)
    cookie = next(c for c in browser.cookies() if c["name"].startswith("abeja_emulator_dashboard"))
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["value"] != fresh_emu.token
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{fresh_emu.url}/definitions/{name}/jobs/{job_id}")
    page.wait_for_function(
        "() => window.abejaDashboard && window.abejaDashboard.ready", timeout=30_000
    )
    assert page.evaluate("window.abejaDashboard.points") == 0

    reporter = StatisticsReporter(
        context=JobContext.from_env(env),
        min_interval=0.05,
        handle_sigterm=False,
        flush_at_exit=False,
        rank=0,
    )
    training = threading.Thread(target=_train, args=(reporter, 3, 12, 0.12), daemon=True)
    training.start()
    seen_while_training: list[int] = []
    while training.is_alive():
        seen_while_training.append(page.evaluate("window.abejaDashboard.points"))
        time.sleep(0.2)
    training.join()
    assert reporter.flush(timeout=60)
    reporter.close(timeout=30)
    # the page drew points while the training was still reporting, more than once, no reload
    growing = sorted({n for n in seen_while_training if n > 0})
    assert len(growing) >= 2, seen_while_training

    history = fresh_emu.statistics_history(name, job_id)
    assert len(history) >= 10
    page.wait_for_function(f"() => window.abejaDashboard.points === {len(history)}", timeout=30_000)
    charts = page.evaluate(READ_CHARTS)
    assert set(charts) == {"loss", "accuracy"}
    for metric in ("loss", "accuracy"):
        expected = _expected_stage_chart(history, metric, ["train", "validation"])
        assert charts[metric]["labels"] == expected["labels"]
        for column, (actual, wanted) in enumerate(
            zip(charts[metric]["data"], expected["data"], strict=True)
        ):
            assert _close(actual, wanted), (metric, column, actual, wanted)
    # the NaN loss is a gap (null), an unreported validation value is not
    train_loss = charts["loss"]["data"][1]
    assert train_loss.count(None) == 1
    assert ABSENT in charts["loss"]["data"][2]

    # a report after the training shows up without a reload, and so does the status;
    # "within two seconds" without a wall-clock bound: the page polls every second and the
    # report shows at the first or second poll after it was made
    assert page.evaluate("window.abejaDashboard.pollMs") <= 1000
    polls_before = page.evaluate("window.abejaDashboard.polls")
    started = time.monotonic()
    fresh_emu.client().update_statistics(
        fresh_emu.organization_id,
        name,
        job_id,
        {
            "epoch": 3,
            "num_epochs": 3,
            "progress_percentage": 1.0,
            "stages": {"train": {"loss": 0.001}},
        },
    )
    fresh_emu.set_job_status(name, job_id, "Complete")
    page.wait_for_function(
        f"() => window.abejaDashboard.points === {len(history) + 1}", timeout=30_000
    )
    polls_needed = page.evaluate("window.abejaDashboard.polls") - polls_before
    assert 1 <= polls_needed <= 2, polls_needed
    page.wait_for_function(
        "() => document.getElementById('job-status').textContent === 'Complete'",
        timeout=30_000,
    )
    latency = time.monotonic() - started
    assert page.text_content("#job-progress-text") == "epoch 3/3 · 100 %"
    assert "0.001" in (page.text_content("#latest-statistics") or "")
    screenshot = _save_screenshot(page, tmp_path, "dashboard-job.png")
    assert screenshot.stat().st_size > 10_000
    print(f"report-to-page latency {latency:.2f} s; screenshot {screenshot}")
    assert errors == []
    page.close()


def test_compare_page_overlays_jobs_with_their_own_values(
    browser: Any, fresh_emu: Emulator, tmp_path: Path
) -> None:
    name = "compare-demo"
    jobs = [fresh_emu.create_job(name)["TRAINING_JOB_ID"] for _ in range(2)]
    client = fresh_emu.client()
    for n, job_id in enumerate(jobs):
        for epoch in range(1, 6):
            client.update_statistics(
                fresh_emu.organization_id,
                name,
                job_id,
                {
                    "epoch": epoch,
                    "num_epochs": 5,
                    "progress_percentage": epoch / 5,
                    "stages": {"train": {"loss": (n + 1) / epoch}},
                },
            )
    page = browser.new_page()
    _log_in(page, fresh_emu)
    page.goto(f"{fresh_emu.url}/definitions/{name}")
    for job_id in jobs:
        page.check(f'input[name="jobs"][value="{job_id}"]')
    page.click("#compare-form button[type=submit]")
    page.wait_for_function(
        "() => window.abejaDashboard && window.abejaDashboard.ready", timeout=30_000
    )
    page.wait_for_function("() => window.abejaDashboard.points === 10", timeout=30_000)
    charts = page.evaluate(READ_CHARTS)
    assert list(charts) == ["loss\u0000train"]
    chart = charts["loss\u0000train"]
    assert sorted(chart["labels"]) == sorted(jobs)
    assert chart["data"][0] == [1, 2, 3, 4, 5]
    for label, column in zip(chart["labels"], chart["data"][1:], strict=True):
        n = jobs.index(label)
        history = fresh_emu.statistics_history(name, label)
        assert column == [h["statistics"]["stages"]["train"]["loss"] for h in history]
        assert _close(column, [(n + 1) / e for e in range(1, 6)])
    _save_screenshot(page, tmp_path, "dashboard-compare.png")
    page.close()


def test_statistics_names_never_become_markup(browser: Any, fresh_emu: Emulator) -> None:
    """Stage and metric names are the user's: the script puts them in the page as text."""
    name = "xss-demo"
    payload = '<img src=x onerror="window.__xss=1">'
    job_id = fresh_emu.create_job(name)["TRAINING_JOB_ID"]
    fresh_emu.client().update_statistics(
        fresh_emu.organization_id,
        name,
        job_id,
        {"epoch": 1, "stages": {payload: {"loss": 0.5, payload: 1.5}}, payload: 2.5},
    )
    page = browser.new_page()
    _log_in(page, fresh_emu)
    page.goto(f"{fresh_emu.url}/definitions/{name}/jobs/{job_id}")
    page.wait_for_function("() => window.abejaDashboard.points === 1", timeout=30_000)
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.evaluate("window.__xss") is None
    assert payload in (page.text_content("#latest-statistics") or "")
    assert sorted(page.evaluate("Object.keys(window.abejaDashboard.charts)")) == [payload, "loss"]
    page.close()


GIB = 2**30
#: per-GPU figures of three epochs, in the shape abeja_runtime.statistics.sysmetrics posts
GPU_UTIL = [[35, 97, 64], [12, 40, 88]]
GPU_MEMORY = [[1.5 * GIB, 6 * GIB, 6.25 * GIB], [0.5 * GIB, 2 * GIB, 3 * GIB]]
GPU_TEMPERATURE = [[55, 71, 73], [50, 60, 66]]
GPU_POWER = [[120.5, 287.4, 301.0], [80.0, 150.2, 210.7]]
#: what the page may never show on an axis or in a legend
RAW_NUMBER = r"\d\.\d+e[+-]?\d|\d{7,}"
READ_AXES = """(keys) => keys.map(key => {
  const u = window.abejaDashboard.charts[key];
  const fmt = window.abejaDashboard.format;
  const ticks = u.axes[1]._values || [];
  return {unit: u.abejaUnit, title: u.root.querySelector('.u-title').textContent,
          ticks: Array.from(ticks), width: u.axes[1]._size};
})"""
#: the legend's values after the cursor is put on the last point of a chart
READ_LEGEND = """(key) => {
  const u = window.abejaDashboard.charts[key];
  const last = u.data[0].length - 1;
  u.setCursor({left: u.valToPos(u.data[0][last], 'x'), top: 10});
  return Array.from(u.root.querySelectorAll('.u-legend .u-series'))
    .slice(1).map(tr => [tr.querySelector('.u-label').textContent,
                         tr.querySelector('.u-value').textContent]);
}"""
#: elements whose text is laid out on more than one line
WRAPPED = """(selector) => Array.from(document.querySelectorAll(selector)).filter(el => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const tops = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top)));
  return tops.size > 1;
}).map(el => el.textContent)"""


def _system_document(epoch: int) -> dict[str, Any]:
    i = epoch - 1
    gpus = [
        {
            "index": g,
            "uuid": f"GPU-{g}0000000-test",
            "utilization_percent": GPU_UTIL[g][i],
            "memory_used_bytes": int(GPU_MEMORY[g][i]),
            "memory_total_bytes": 80 * GIB,
            "temperature_c": GPU_TEMPERATURE[g][i],
            "power_w": GPU_POWER[g][i],
        }
        for g in range(2)
    ]
    return {
        "cpu_percent": 180.5,
        "memory_rss_bytes": 140_000_000 + epoch,  # the 1.4e+8 the axis once showed
        "gpus": gpus,
        "mean": {"cpu_percent": 150.0, "gpus": [{**g, "utilization_percent": 50} for g in gpus]},
        "max": {"cpu_percent": 199.0, "gpus": gpus},
        "samples": 6,
        "interval_s": 10.0,
    }


def test_per_gpu_charts_one_line_per_gpu_with_units(
    browser: Any, fresh_emu: Emulator, tmp_path: Path
) -> None:
    name = "gpu-demo"
    job_id = fresh_emu.create_job(name)["TRAINING_JOB_ID"]
    client = fresh_emu.client()
    for epoch in range(1, 4):  # epochs only: no progress_percentage
        client.update_statistics(
            fresh_emu.organization_id,
            name,
            job_id,
            {
                "epoch": epoch,
                "num_epochs": 3,
                "stages": {"train": {"loss": 1 / epoch}},
                "system": _system_document(epoch),
            },
        )
    page = browser.new_page()
    _log_in(page, fresh_emu)
    page.goto(f"{fresh_emu.url}/definitions/{name}/jobs/{job_id}")
    page.wait_for_function("() => window.abejaDashboard.points === 3", timeout=30_000)
    charts = page.evaluate(READ_CHARTS)
    # every numeric series is charted, the per-GPU ones with one line per GPU
    for metric in ("utilization_percent", "memory_used_bytes", "temperature_c", "power_w"):
        for prefix in ("system.gpus.", "system.mean.gpus.", "system.max.gpus."):
            assert charts[prefix + metric]["labels"] == ["GPU 0", "GPU 1"], prefix + metric
    assert {
        "system.cpu_percent",
        "system.memory_rss_bytes",
        "system.mean.cpu_percent",
        "system.samples",
        "loss",
    } <= set(charts)
    assert "system.gpus.index" not in charts  # an element's identity is not a figure
    expected = {
        "system.gpus.utilization_percent": GPU_UTIL,
        "system.gpus.memory_used_bytes": [[int(v) for v in g] for g in GPU_MEMORY],
        "system.gpus.temperature_c": GPU_TEMPERATURE,
        "system.gpus.power_w": GPU_POWER,
    }
    for key, columns in expected.items():
        assert charts[key]["data"] == [[1, 2, 3], *columns], key
    assert charts["system.mean.gpus.utilization_percent"]["data"][1:] == [[50] * 3] * 2

    units = {
        "system.gpus.utilization_percent": ("%", " %"),
        "system.gpus.memory_used_bytes": ("B", " GiB"),
        "system.gpus.temperature_c": ("°C", " °C"),
        "system.gpus.power_w": ("W", " W"),
        "system.memory_rss_bytes": ("B", " MiB"),
        "system.cpu_percent": ("%", " %"),
    }
    axes = page.evaluate(READ_AXES, list(units))
    for (key, (unit, suffix)), axis in zip(units.items(), axes, strict=True):
        assert axis["unit"] == unit, (key, axis)
        assert axis["ticks"], (key, axis)
        for tick in axis["ticks"]:
            assert tick.endswith(suffix), (key, axis)
            assert not re.search(RAW_NUMBER, tick), (key, axis)
        # the axis is wide enough for its longest label (7 px a character at least)
        assert axis["width"] >= 7 * max(len(t) for t in axis["ticks"]), (key, axis)
    # byte axes tick at binary steps: 0, 2, 4, 6 GiB, not 1.07374e+9
    memory_ticks = axes[1]["ticks"]
    assert all(re.fullmatch(r"\d+(\.\d+)? GiB", t) for t in memory_ticks), memory_ticks

    legend = page.evaluate(READ_LEGEND, "system.gpus.utilization_percent")
    assert legend == [["GPU 0", "64 %"], ["GPU 1", "88 %"]]
    legend = page.evaluate(READ_LEGEND, "system.gpus.memory_used_bytes")
    assert legend == [["GPU 0", "6.25 GiB"], ["GPU 1", "3 GiB"]]
    legend = page.evaluate(READ_LEGEND, "system.gpus.power_w")
    assert legend == [["GPU 0", "301 W"], ["GPU 1", "210.7 W"]]
    legend = page.evaluate(READ_LEGEND, "system.memory_rss_bytes")
    assert legend == [["system.memory_rss_bytes", "133.5 MiB"]]

    # the progress bar falls back to epoch / num_epochs
    assert page.evaluate("document.getElementById('job-progress').value") == 1
    assert "epoch 3/3" in (page.text_content("#job-progress-text") or "")
    # the latest values table gives each GPU figure a row of its own
    rows = page.evaluate(
        "Array.from(document.querySelectorAll('#latest-statistics tbody tr'))"
        ".map(tr => Array.from(tr.cells, td => td.textContent))"
    )
    assert ["—", "system.gpus[1].power_w", "210.7"] in rows
    assert ["—", "system.gpus[0].uuid", "GPU-00000000-test"] in rows
    _save_screenshot(page, tmp_path, "dashboard-gpus.png")
    page.close()


def test_headers_and_ids_never_wrap_mid_word(browser: Any, fresh_emu: Emulator) -> None:
    name = "a-definition-with-a-long-name"
    jobs = [fresh_emu.create_job(name)["TRAINING_JOB_ID"] for _ in range(3)]
    page = browser.new_page()
    page.set_viewport_size({"width": 520, "height": 900})  # narrow: the table must squeeze
    _log_in(page, fresh_emu)
    page.goto(f"{fresh_emu.url}/definitions/{name}")
    page.wait_for_selector("table")
    assert page.evaluate(WRAPPED, "th") == []
    ids = page.evaluate(
        "(ids) => Array.from(document.querySelectorAll('td a, td code'))"
        ".filter(a => ids.includes(a.textContent.trim())).length",
        jobs,
    )
    assert ids >= 3  # the ids are in the table ...
    assert page.evaluate(WRAPPED, "td a") == []  # ... each on one line
    page.close()
