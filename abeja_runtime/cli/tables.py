"""Tables and records for the terminal: what the control commands print without ``--json``.

Formatted here (a dozen lines) rather than with a table library: the core package may
depend only on requests, psutil, filelock and zipstream-ng.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "jobs_table",
    "models_table",
    "render_record",
    "render_table",
    "versions_table",
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False) if value else "-"
    text = " ".join(str(value).split())
    return text


def _time(value: Any) -> str:
    """``2024-01-02T03:04:05.123456Z`` as ``2024-01-02 03:04:05`` (UTC, to the second)."""
    if not isinstance(value, str) or len(value) < 19:
        return _cell(value)
    return value[:19].replace("T", " ")


def _clip(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    lines = []
    for row in [list(headers), *cells]:
        padded = [text.ljust(widths[i]) for i, text in enumerate(row[:-1])]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def render_record(record: Mapping[str, Any], fields: Sequence[str] | None = None) -> str:
    """``field: value`` lines, aligned; nested values as compact JSON."""
    keys = [k for k in (fields or list(record)) if k in record]
    width = max((len(k) for k in keys), default=0)
    lines = []
    for key in keys:
        value = record[key]
        text = _time(value) if key.endswith(("_at", "_time")) else _cell(value)
        lines.append(f"{key + ':':<{width + 1}} {text}")
    return "\n".join(lines)


def _entries(response: Any) -> list[dict[str, Any]]:
    if isinstance(response, Mapping):
        entries = response.get("entries")
        if isinstance(entries, list):
            return [e for e in entries if isinstance(e, dict)]
    if isinstance(response, list):
        return [e for e in response if isinstance(e, dict)]
    return []


def _paging(response: Any, shown: int) -> str:
    if not isinstance(response, Mapping) or response.get("total") is None:
        return ""
    offset = int(response.get("offset") or 0)
    total = int(response["total"])
    if shown == 0:
        return f"\n({total} in all)"
    return f"\n(showing {offset + 1}-{offset + shown} of {total})"


def _progress_cell(job: Mapping[str, Any]) -> str:
    from ..statistics_rules import progress_fraction

    stats = job.get("statistics")
    if not isinstance(stats, Mapping) or not stats:
        return "-"
    parts = []
    if stats.get("epoch") is not None:
        total = stats.get("num_epochs")
        parts.append(f"{stats['epoch']}/{total}" if total is not None else str(stats["epoch"]))
    fraction = progress_fraction(stats)
    if fraction is not None:
        parts.append(f"{fraction * 100:.0f}%")
    return " ".join(parts) or "-"


def versions_table(versions: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            v.get("job_definition_version"),
            v.get("handler"),
            v.get("image"),
            v.get("archived"),
            _time(v.get("created_at")),
            _clip(_cell(v.get("description"))),
        ]
        for v in versions
    ]
    return render_table(["VERSION", "HANDLER", "IMAGE", "ARCHIVED", "CREATED", "DESCRIPTION"], rows)


def jobs_table(jobs: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            j.get("training_job_id") or j.get("id"),
            j.get("job_definition_version"),
            j.get("status"),
            _progress_cell(j),
            _time(j.get("created_at")),
            _clip(_cell(j.get("description"))),
        ]
        for j in jobs
    ]
    return render_table(["JOB ID", "VERSION", "STATUS", "PROGRESS", "CREATED", "DESCRIPTION"], rows)


def models_table(models: Sequence[Mapping[str, Any]]) -> str:
    rows = [
        [
            m.get("training_model_id") or m.get("id"),
            m.get("training_job_id"),
            m.get("exec_env"),
            m.get("archived"),
            _time(m.get("created_at")),
            _clip(_cell(m.get("description"))),
        ]
        for m in models
    ]
    return render_table(
        ["MODEL ID", "JOB ID", "EXEC ENV", "ARCHIVED", "CREATED", "DESCRIPTION"], rows
    )
