"""The emulator's state: SQLite for records, a directory for uploaded blobs.

Every Training API semantic lives here (unique names, version numbering,
archive flags, dependants that block deletes, job status transitions,
statistics history), so the HTTP layer and the Python API of
:class:`~abeja_runtime.emulator.Emulator` share one implementation and raise
the same :mod:`abeja_runtime.errors` exceptions a client would see.

Concurrency: one SQLite connection guarded by one lock. SQLite serialises
writers anyway, and the emulator's work per request is a few indexed
statements, so a lock costs nothing measurable while making the in-memory
mode (a ``:memory:`` database exists per connection) and the file mode behave
the same. The file mode uses WAL with ``synchronous=NORMAL``: a commit is an
append to the log without an fsync, durable across a process crash and
losing at most the last moments on a power cut, which is the right trade for
a development server receiving hundreds of statistics posts a second. A
:class:`filelock.FileLock` keeps a second emulator off the same data dir.

Blobs are written by the upload parser into ``blobs/tmp`` and moved into
place with :func:`os.replace` once their record commits; their file names
are numeric ids only, never names taken from a request.
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from ..errors import BadRequest, Conflict, NotFound
from ._store_base import (
    DEFAULT_IMAGE,
    DEFAULT_INSTANCE_TYPE,
    TERMINAL_STATUSES,
    TRANSITIONS,
    Blob,
    Identity,
    _conflict,
    _dumps,
    _new_id,
    _not_found,
    _StoreBase,
    now_iso,
)

__all__ = ["Blob", "Identity", "Store", "now_iso"]


class Store(_StoreBase):
    """SQLite-backed Training API state for one organization.

    Args:
        data_dir: directory for ``state.sqlite3`` and ``blobs/``; created if
            missing; state persists across restarts. ``None`` keeps the
            database in memory and the blobs in a temporary directory that
            :meth:`close` removes.

    Raises:
        ConfigurationError: another emulator holds ``data_dir``, or the
            database there is from an unknown schema.
    """

    # -- definitions ---------------------------------------------------------

    def create_definition(self, org: str, name: str) -> dict[str, Any]:
        """Operation 1. Names are unique per organization (archived ones included)."""
        now = now_iso()
        with self._tx() as c:
            exists = c.execute(
                "SELECT 1 FROM definitions WHERE organization_id = ? AND name = ?", (org, name)
            ).fetchone()
            if exists:
                raise _conflict(f"training job definition {name!r} already exists")
            c.execute(
                "INSERT INTO definitions(id, organization_id, name, created_at, modified_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (self._unused_id(c, "definitions"), org, name, now, now),
            )
            return self._definition_dict(c, self._definition(c, org, name), include_jobs=False)

    def get_or_create_definition(self, org: str, name: str) -> dict[str, Any]:
        """The definition ``name``, created first if missing (for ``Emulator.create_job``)."""
        try:
            return self.get_definition(org, name, include_jobs=False)
        except NotFound:
            try:
                return self.create_definition(org, name)
            except Conflict:  # created by another thread meanwhile
                return self.get_definition(org, name, include_jobs=False)

    @staticmethod
    def _unused_id(c: sqlite3.Connection, table: str) -> str:
        while True:
            candidate = _new_id()
            if c.execute(f"SELECT 1 FROM {table} WHERE id = ?", (candidate,)).fetchone() is None:
                return candidate

    def list_definitions(
        self, org: str, *, filter_archived: bool | None, offset: int, limit: int
    ) -> dict[str, Any]:
        """Operation 4: creation order, paged."""
        where = "organization_id = ?" + self._archived_clause(filter_archived)
        with self._read() as c:
            total = c.execute(f"SELECT COUNT(*) FROM definitions WHERE {where}", (org,)).fetchone()[
                0
            ]
            rows = c.execute(
                f"SELECT * FROM definitions WHERE {where} ORDER BY rowid LIMIT ? OFFSET ?",
                (org, limit, offset),
            ).fetchall()
            entries = [self._definition_dict(c, d, include_jobs=False) for d in rows]
        return {"entries": entries, "limit": limit, "offset": offset, "total": total}

    def get_definition(self, org: str, name: str, *, include_jobs: bool) -> dict[str, Any]:
        """Operation 5."""
        with self._read() as c:
            return self._definition_dict(
                c, self._definition(c, org, name), include_jobs=include_jobs
            )

    def set_definition_archived(self, org: str, name: str, archived: bool) -> dict[str, Any]:
        """Operations 2 and 3 (idempotent)."""
        with self._tx() as c:
            d = self._definition(c, org, name)
            c.execute(
                "UPDATE definitions SET archived = ?, modified_at = ? WHERE id = ?",
                (int(archived), now_iso(), d["id"]),
            )
        return {"message": f"{name} {'archived' if archived else 'unarchived'}"}

    def delete_definition(self, org: str, name: str) -> dict[str, Any]:
        """Operation 6: refused (409) while the definition has versions or models."""
        with self._tx() as c:
            d = self._definition(c, org, name)
            versions = c.execute(
                "SELECT COUNT(*) FROM versions WHERE definition_id = ?", (d["id"],)
            ).fetchone()[0]
            models = c.execute(
                "SELECT COUNT(*) FROM models WHERE definition_id = ?", (d["id"],)
            ).fetchone()[0]
            if versions or models:
                raise _conflict(
                    f"training job definition {name!r} still has {versions} version(s) and "
                    f"{models} model(s); delete the versions first, or archive the definition"
                )
            c.execute("DELETE FROM definitions WHERE id = ?", (d["id"],))
        return {"message": f"{name} deleted"}

    # -- versions ------------------------------------------------------------

    def create_version(
        self,
        org: str,
        name: str,
        *,
        source: Blob,
        handler: str,
        image: str | None = None,
        environment: dict[str, Any] | None = None,
        user_parameters: dict[str, Any] | None = None,
        datasets: dict[str, str] | None = None,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Operations 7/8: numbered from 1 per definition, numbers never reused."""
        now = now_iso()
        with self._tx() as c:
            d = self._definition(c, org, name)
            version = int(d["last_version"]) + 1
            c.execute(
                "UPDATE definitions SET last_version = ?, modified_at = ? WHERE id = ?",
                (version, now, d["id"]),
            )
            c.execute(
                "INSERT INTO versions(definition_id, version, handler, image, environment, "
                "user_parameters, datasets, description, source_size, source_sha256, "
                "created_at, modified_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    d["id"],
                    version,
                    handler,
                    image or DEFAULT_IMAGE,
                    _dumps(environment or {}),
                    _dumps(user_parameters or {}),
                    _dumps(datasets or {}),
                    description,
                    source.size,
                    source.sha256,
                    now,
                    now,
                ),
            )
            os.replace(source.path, self._source_path(d["id"], version))
            return self._version_dict(self._version(c, d, version))

    def list_versions(self, org: str, name: str, *, filter_archived: bool | None) -> dict[str, Any]:
        """Operation 9: by version number."""
        with self._read() as c:
            d = self._definition(c, org, name)
            rows = c.execute(
                "SELECT * FROM versions WHERE definition_id = ?"
                + self._archived_clause(filter_archived)
                + " ORDER BY version",
                (d["id"],),
            ).fetchall()
        return {"entries": [self._version_dict(v) for v in rows]}

    def get_version(self, org: str, name: str, version: int) -> dict[str, Any]:
        """Operation 10."""
        with self._read() as c:
            return self._version_dict(self._version(c, self._definition(c, org, name), version))

    def patch_version(
        self, org: str, name: str, version: int, *, description: str | None
    ) -> dict[str, Any]:
        """Operation 11: only the description changes."""
        with self._tx() as c:
            d = self._definition(c, org, name)
            self._version(c, d, version)
            c.execute(
                "UPDATE versions SET description = ?, modified_at = ? "
                "WHERE definition_id = ? AND version = ?",
                (description, now_iso(), d["id"], version),
            )
            return self._version_dict(self._version(c, d, version))

    def set_version_archived(
        self, org: str, name: str, version: int, archived: bool
    ) -> dict[str, Any]:
        """Operations 12 and 13 (idempotent)."""
        with self._tx() as c:
            d = self._definition(c, org, name)
            self._version(c, d, version)
            c.execute(
                "UPDATE versions SET archived = ?, modified_at = ? "
                "WHERE definition_id = ? AND version = ?",
                (int(archived), now_iso(), d["id"], version),
            )
        return {"message": "archived" if archived else "unarchived"}

    def delete_version(self, org: str, name: str, version: int) -> dict[str, Any]:
        """Operation 14: refused (409) while jobs of the version exist."""
        with self._tx() as c:
            d = self._definition(c, org, name)
            self._version(c, d, version)
            jobs = c.execute(
                "SELECT COUNT(*) FROM jobs WHERE definition_id = ? AND version = ?",
                (d["id"], version),
            ).fetchone()[0]
            if jobs:
                raise _conflict(
                    f"version {version} of training job definition {name!r} still has "
                    f"{jobs} training job(s); archive the version instead"
                )
            c.execute(
                "DELETE FROM versions WHERE definition_id = ? AND version = ?", (d["id"], version)
            )
            c.execute("UPDATE definitions SET modified_at = ? WHERE id = ?", (now_iso(), d["id"]))
        self._source_path(d["id"], version).unlink(missing_ok=True)
        return {"message": "deleted"}

    # -- jobs ----------------------------------------------------------------

    def create_job(
        self,
        org: str,
        name: str,
        version: int,
        *,
        environment: dict[str, Any] | None = None,
        datasets: dict[str, str] | None = None,
        instance_type: str | None = None,
        description: str | None = None,
        export_log: bool = False,
        exec_env: str = "cloud",
    ) -> dict[str, Any]:
        """Operation 15: a Pending job; datasets default to (and merge over) the version's.

        Refused (409) on an archived definition or version, which the platform
        no longer offers for new jobs.
        """
        now = now_iso()
        with self._tx() as c:
            d = self._definition(c, org, name)
            v = self._version(c, d, version)
            if d["archived"]:
                raise _conflict(f"training job definition {name!r} is archived; unarchive it first")
            if v["archived"]:
                raise _conflict(
                    f"version {version} of training job definition {name!r} is archived; "
                    "unarchive it first"
                )
            merged_datasets = {**json.loads(v["datasets"]), **(datasets or {})}
            job_id = self._unused_id(c, "jobs")
            c.execute(
                "INSERT INTO jobs(id, definition_id, version, environment, datasets, "
                "instance_type, exec_env, status, description, export_log, created_at, "
                "modified_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'Pending', ?, ?, ?, ?)",
                (
                    job_id,
                    d["id"],
                    version,
                    _dumps(environment or {}),
                    _dumps(merged_datasets),
                    instance_type or DEFAULT_INSTANCE_TYPE,
                    exec_env,
                    description,
                    int(export_log),
                    now,
                    now,
                ),
            )
            return self._job_dict(self._job(c, d, job_id))

    def list_jobs(
        self, org: str, name: str, *, filter_archived: bool | None, offset: int, limit: int
    ) -> dict[str, Any]:
        """Operation 16: newest first, so the default page shows the latest 10."""
        where = "definition_id = ?" + self._archived_clause(filter_archived)
        with self._read() as c:
            d = self._definition(c, org, name)
            total = c.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", (d["id"],)).fetchone()[0]
            rows = c.execute(
                f"SELECT * FROM jobs WHERE {where} ORDER BY rowid DESC LIMIT ? OFFSET ?",
                (d["id"], limit, offset),
            ).fetchall()
        return {
            "entries": [self._job_dict(j) for j in rows],
            "limit": limit,
            "offset": offset,
            "total": total,
        }

    def get_job(self, org: str, name: str, job_id: str) -> dict[str, Any]:
        """Operation 17."""
        with self._read() as c:
            return self._job_dict(self._job(c, self._definition(c, org, name), job_id))

    def job_version(self, org: str, name: str, job_id: str) -> dict[str, Any]:
        """The version record a job runs (for the environment a job sees)."""
        with self._read() as c:
            d = self._definition(c, org, name)
            return self._version_dict(self._version(c, d, self._job(c, d, job_id)["version"]))

    def set_job_status(
        self, org: str, name: str, job_id: str, status: str, status_message: str | None = None
    ) -> dict[str, Any]:
        """The runner's status change; only the transitions in :data:`TRANSITIONS`.

        ``Active`` stamps ``start_time``; a terminal status stamps
        ``completion_time``. Anything else is a 409 naming the current status.
        """
        now = now_iso()
        with self._tx() as c:
            d = self._definition(c, org, name)
            job = self._job(c, d, job_id)
            current = job["status"]
            if status not in TRANSITIONS.get(current, frozenset()):
                allowed = ", ".join(sorted(TRANSITIONS.get(current, ()))) or "none"
                raise _conflict(
                    f"training job {job_id} is {current}; it cannot become {status} "
                    f"(allowed from {current}: {allowed})"
                )
            start = now if status == "Active" else job["start_time"]
            completion = now if status in TERMINAL_STATUSES else None
            c.execute(
                "UPDATE jobs SET status = ?, status_message = ?, start_time = ?, "
                "completion_time = ?, modified_at = ? WHERE id = ?",
                (status, status_message, start, completion, now, job_id),
            )
            return self._job_dict(self._job(c, d, job_id))

    def stop_job(self, org: str, name: str, job_id: str) -> dict[str, Any]:
        """Operation 18: only a Pending or Active job can be stopped (409 otherwise)."""
        with self._tx() as c:
            d = self._definition(c, org, name)
            status = self._job(c, d, job_id)["status"]
            if status not in ("Pending", "Active"):
                raise _conflict(
                    f"training job {job_id} is {status}; only Pending or Active jobs can be stopped"
                )
            now = now_iso()
            c.execute(
                "UPDATE jobs SET status = 'Stopped', completion_time = ?, modified_at = ? "
                "WHERE id = ?",
                (now, now, job_id),
            )
        return {"message": f"{name}:{job_id} stopped"}

    def set_job_archived(self, org: str, name: str, job_id: str, archived: bool) -> dict[str, Any]:
        """Operations 19 and 20 (idempotent)."""
        with self._tx() as c:
            self._job(c, self._definition(c, org, name), job_id)
            c.execute(
                "UPDATE jobs SET archived = ?, modified_at = ? WHERE id = ?",
                (int(archived), now_iso(), job_id),
            )
        return {"message": f"{name}:{job_id} {'archived' if archived else 'unarchived'}"}

    def update_statistics(
        self, org: str, name: str, job_id: str, statistics: dict[str, Any]
    ) -> dict[str, Any]:
        """Operation 22: replaces the job's statistics and appends to its history.

        Accepted in every status: a reporter's last flush may land after the
        runner marked the job finished, and refusing it would lose data.
        """
        text = _dumps(statistics)
        now = now_iso()
        with self._tx() as c:
            d = self._definition(c, org, name)
            self._job(c, d, job_id)
            c.execute(
                "UPDATE jobs SET statistics = ?, modified_at = ? WHERE id = ?",
                (text, now, job_id),
            )
            c.execute(
                "INSERT INTO statistics_history(job_id, received_at, statistics) VALUES (?, ?, ?)",
                (job_id, now, text),
            )
        return {"statistics": statistics}

    def statistics_history(self, org: str, name: str, job_id: str) -> list[dict[str, Any]]:
        """Every statistics document the job received, oldest first."""
        with self._read() as c:
            self._job(c, self._definition(c, org, name), job_id)
            rows = c.execute(
                "SELECT received_at, statistics FROM statistics_history WHERE job_id = ? "
                "ORDER BY seq",
                (job_id,),
            ).fetchall()
        return [
            {"received_at": r["received_at"], "statistics": json.loads(r["statistics"])}
            for r in rows
        ]

    def result_model_id(self, org: str, name: str, job_id: str) -> str:
        """Operation 21's artifact: the job's latest model (404 while it has none)."""
        with self._read() as c:
            self._job(c, self._definition(c, org, name), job_id)
            row = c.execute(
                "SELECT id FROM models WHERE job_id = ? ORDER BY rowid DESC LIMIT 1", (job_id,)
            ).fetchone()
        if row is None:
            raise _not_found(
                f"training job {job_id} has no result yet: its result is the latest model "
                f"uploaded with training_job_id={job_id}, and there is none"
            )
        return str(row["id"])

    # -- models --------------------------------------------------------------

    def create_model(
        self,
        org: str,
        name: str,
        *,
        data: Blob,
        training_job_id: str | None = None,
        description: str | None = None,
        user_parameters: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Operation 24. ``exec_env`` is the job's, or ``none`` without a job."""
        now = now_iso()
        with self._tx() as c:
            d = self._definition(c, org, name)
            exec_env = "none"
            if training_job_id is not None:
                job = c.execute(
                    "SELECT exec_env FROM jobs WHERE id = ? AND definition_id = ?",
                    (training_job_id, d["id"]),
                ).fetchone()
                if job is None:
                    raise BadRequest(
                        "bad_request",
                        f"training_job_id {training_job_id} is not a training job of job "
                        f"definition {name!r}",
                        None,
                        400,
                    )
                exec_env = job["exec_env"]
            model_id = self._unused_id(c, "models")
            c.execute(
                "INSERT INTO models(id, definition_id, job_id, user_parameters, metrics, "
                "description, exec_env, size, sha256, created_at, modified_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model_id,
                    d["id"],
                    training_job_id,
                    _dumps(user_parameters or {}),
                    _dumps(metrics or {}),
                    description,
                    exec_env,
                    data.size,
                    data.sha256,
                    now,
                    now,
                ),
            )
            c.execute("UPDATE definitions SET modified_at = ? WHERE id = ?", (now, d["id"]))
            os.replace(data.path, self._model_path(model_id))
            return self._model_dict(self._model(c, d, model_id))

    def list_models(self, org: str, name: str, *, filter_archived: bool | None) -> dict[str, Any]:
        """Operation 23: upload order."""
        with self._read() as c:
            d = self._definition(c, org, name)
            rows = c.execute(
                "SELECT * FROM models WHERE definition_id = ?"
                + self._archived_clause(filter_archived)
                + " ORDER BY rowid",
                (d["id"],),
            ).fetchall()
        return {"entries": [self._model_dict(m) for m in rows]}

    def get_model(self, org: str, name: str, model_id: str) -> dict[str, Any]:
        """Operation 25 (and the check before 27)."""
        with self._read() as c:
            return self._model_dict(self._model(c, self._definition(c, org, name), model_id))

    def patch_model(
        self, org: str, name: str, model_id: str, *, description: str | None
    ) -> dict[str, Any]:
        """Operation 26: only the description changes."""
        with self._tx() as c:
            d = self._definition(c, org, name)
            self._model(c, d, model_id)
            c.execute(
                "UPDATE models SET description = ?, modified_at = ? WHERE id = ?",
                (description, now_iso(), model_id),
            )
            return self._model_dict(self._model(c, d, model_id))

    def set_model_archived(
        self, org: str, name: str, model_id: str, archived: bool
    ) -> dict[str, Any]:
        """Operations 28 and 29 (idempotent)."""
        with self._tx() as c:
            self._model(c, self._definition(c, org, name), model_id)
            c.execute(
                "UPDATE models SET archived = ?, modified_at = ? WHERE id = ?",
                (int(archived), now_iso(), model_id),
            )
        return {"message": f"{name}:{model_id} {'archived' if archived else 'unarchived'}"}
