"""The dashboard's read-only queries of the emulator's store.

Pages of versions and models (a definition made by ``Emulator.create_job`` has a
version per job), one summary row per definition, and the statistics history after a
cursor, as stored JSON text so that a poll of 10,000 points is not parsed and
re-encoded on every request. The API's own reads and every write are the store's
(:mod:`.store`); these serve :mod:`.dashboard` only.
"""

from __future__ import annotations

from typing import Any

from .store import Store

__all__ = [
    "definition_summaries",
    "list_models_page",
    "list_versions_page",
    "statistics_history_text",
]


def definition_summaries(store: Store, org: str, *, offset: int, limit: int) -> dict[str, Any]:
    """Definitions in creation order with version/job/model counts and the latest job."""
    with store._read() as c:
        total = c.execute(
            "SELECT COUNT(*) FROM definitions WHERE organization_id = ?", (org,)
        ).fetchone()[0]
        rows = c.execute(
            "SELECT d.name, d.archived, d.created_at, d.modified_at, "
            "(SELECT COUNT(*) FROM versions v WHERE v.definition_id = d.id) AS versions, "
            "(SELECT COUNT(*) FROM jobs j WHERE j.definition_id = d.id) AS jobs, "
            "(SELECT COUNT(*) FROM models m WHERE m.definition_id = d.id) AS models, "
            "(SELECT j.status FROM jobs j WHERE j.definition_id = d.id "
            " ORDER BY j.rowid DESC LIMIT 1) AS latest_status, "
            "(SELECT j.id FROM jobs j WHERE j.definition_id = d.id "
            " ORDER BY j.rowid DESC LIMIT 1) AS latest_job "
            "FROM definitions d WHERE d.organization_id = ? ORDER BY d.rowid "
            "LIMIT ? OFFSET ?",
            (org, limit, offset),
        ).fetchall()
    entries = [
        {
            "name": r["name"],
            "archived": bool(r["archived"]),
            "created_at": r["created_at"],
            "modified_at": r["modified_at"],
            "version_count": r["versions"],
            "job_count": r["jobs"],
            "model_count": r["models"],
            "latest_job_status": r["latest_status"],
            "latest_job_id": r["latest_job"],
        }
        for r in rows
    ]
    return {"entries": entries, "offset": offset, "limit": limit, "total": total}


def list_versions_page(
    store: Store, org: str, name: str, *, offset: int, limit: int
) -> dict[str, Any]:
    """Versions newest first, paged (``entries``, ``offset``, ``limit``, ``total``)."""
    with store._read() as c:
        d = store._definition(c, org, name)
        total = c.execute(
            "SELECT COUNT(*) FROM versions WHERE definition_id = ?", (d["id"],)
        ).fetchone()[0]
        rows = c.execute(
            "SELECT * FROM versions WHERE definition_id = ? ORDER BY version DESC LIMIT ? OFFSET ?",
            (d["id"], limit, offset),
        ).fetchall()
    return {
        "entries": [store._version_dict(v) for v in rows],
        "offset": offset,
        "limit": limit,
        "total": total,
    }


def list_models_page(
    store: Store,
    org: str,
    name: str,
    *,
    offset: int,
    limit: int,
    training_job_id: str | None = None,
) -> dict[str, Any]:
    """Models newest first, paged; only one job's with ``training_job_id``."""
    with store._read() as c:
        d = store._definition(c, org, name)
        where = "definition_id = ?"
        args: tuple[Any, ...] = (d["id"],)
        if training_job_id is not None:
            where += " AND job_id = ?"
            args += (training_job_id,)
        total = c.execute(f"SELECT COUNT(*) FROM models WHERE {where}", args).fetchone()[0]
        rows = c.execute(
            f"SELECT * FROM models WHERE {where} ORDER BY rowid DESC LIMIT ? OFFSET ?",
            (*args, limit, offset),
        ).fetchall()
    return {
        "entries": [store._model_dict(m) for m in rows],
        "offset": offset,
        "limit": limit,
        "total": total,
    }


def statistics_history_text(
    store: Store, org: str, name: str, job_id: str, *, after: int = 0, limit: int = 10_000
) -> list[tuple[int, str, str]]:
    """History entries with ``seq > after``, oldest first: ``(seq, received_at, json)``.

    ``seq`` only grows (it is the history's AUTOINCREMENT key), so it is a
    cursor a poller can hand back to get only what is new. The JSON text is
    what :meth:`update_statistics` stored (compact, no NaN tokens).
    """
    with store._read() as c:
        store._job(c, store._definition(c, org, name), job_id)
        rows = c.execute(
            "SELECT seq, received_at, statistics FROM statistics_history "
            "WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        ).fetchall()
    return [(int(r["seq"]), str(r["received_at"]), str(r["statistics"])) for r in rows]
