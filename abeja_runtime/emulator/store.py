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

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import filelock

from ..errors import BadRequest, ConfigurationError, Conflict, HttpError, NotFound

__all__ = ["Blob", "Identity", "Store", "now_iso"]

SCHEMA_VERSION = 1
DB_FILE = "state.sqlite3"
LOCK_FILE = ".lock"
DEFAULT_IMAGE = "abeja-inc/all-cpu:19.10"
DEFAULT_INSTANCE_TYPE = "cpu-1"

#: Job status -> statuses it may move to (the runner's ``/status`` and ``/stop``).
TRANSITIONS: dict[str, frozenset[str]] = {
    "Pending": frozenset({"Active", "Failed", "Stopped"}),
    "Active": frozenset({"Complete", "Failed", "Stopped"}),
}
TERMINAL_STATUSES = frozenset({"Complete", "Failed", "Stopped"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS definitions (
    id TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL,
    name TEXT NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0,
    last_version INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    UNIQUE (organization_id, name)
);
CREATE TABLE IF NOT EXISTS versions (
    definition_id TEXT NOT NULL REFERENCES definitions(id),
    version INTEGER NOT NULL,
    handler TEXT NOT NULL,
    image TEXT NOT NULL,
    environment TEXT NOT NULL,
    user_parameters TEXT NOT NULL,
    datasets TEXT NOT NULL,
    description TEXT,
    archived INTEGER NOT NULL DEFAULT 0,
    source_size INTEGER NOT NULL,
    source_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    PRIMARY KEY (definition_id, version)
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    definition_id TEXT NOT NULL REFERENCES definitions(id),
    version INTEGER NOT NULL,
    environment TEXT NOT NULL,
    datasets TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    exec_env TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    description TEXT,
    export_log INTEGER NOT NULL DEFAULT 0,
    statistics TEXT,
    archived INTEGER NOT NULL DEFAULT 0,
    start_time TEXT,
    completion_time TEXT,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL,
    FOREIGN KEY (definition_id, version) REFERENCES versions(definition_id, version)
);
CREATE INDEX IF NOT EXISTS jobs_by_definition ON jobs(definition_id);
CREATE TABLE IF NOT EXISTS statistics_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id),
    received_at TEXT NOT NULL,
    statistics TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS statistics_by_job ON statistics_history(job_id, seq);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    definition_id TEXT NOT NULL REFERENCES definitions(id),
    job_id TEXT REFERENCES jobs(id),
    user_parameters TEXT NOT NULL,
    metrics TEXT NOT NULL,
    description TEXT,
    exec_env TEXT NOT NULL,
    archived INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    modified_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS models_by_definition ON models(definition_id);
CREATE INDEX IF NOT EXISTS models_by_job ON models(job_id);
"""


def now_iso() -> str:
    """The current time as the platform writes it: ISO-8601 UTC, microseconds, ``Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _new_id() -> str:
    """A random 13-digit id (no leading zero), like the platform's."""
    return str(10**12 + secrets.randbelow(9 * 10**12))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _not_found(description: str) -> NotFound:
    return NotFound("not_found", description, None, 404)


def _conflict(description: str) -> Conflict:
    return Conflict("conflict", description, None, 409)


@dataclass(frozen=True)
class Identity:
    """Who the emulator's one organization and user are, and their secrets.

    The secrets are kept out of ``repr`` so that an ``Identity`` can be
    printed in a debugger or a test failure without leaking them.
    """

    organization_id: str
    user_id: str
    token: str
    personal_access_token: str
    signing_key: bytes
    created_at: str

    def __repr__(self) -> str:
        return f"Identity(organization_id={self.organization_id!r}, user_id={self.user_id!r})"


@dataclass(frozen=True)
class Blob:
    """An uploaded file already on disk in the store's ``tmp`` dir, with its digest."""

    path: Path
    size: int
    sha256: str


class Store:
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

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self._lock = threading.RLock()
        self._closed = False
        self._file_lock: filelock.BaseFileLock | None = None
        self.data_dir = Path(data_dir).expanduser().resolve() if data_dir is not None else None
        if self.data_dir is None:
            self._blob_root = Path(tempfile.mkdtemp(prefix="abeja-emulator-"))
            self._owns_blob_root = True
            db_path = ":memory:"
        else:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._file_lock = filelock.FileLock(str(self.data_dir / LOCK_FILE))
            try:
                self._file_lock.acquire(timeout=0)
            except filelock.Timeout:
                raise ConfigurationError(
                    f"data dir {self.data_dir} is in use by another emulator; stop it or pick "
                    "another --data-dir"
                ) from None
            self._blob_root = self.data_dir / "blobs"
            self._owns_blob_root = False
            db_path = str(self.data_dir / DB_FILE)
        try:
            self.tmp_dir = self._blob_root / "tmp"
            for sub in ("tmp", "models", "sources"):
                (self._blob_root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            for leftover in self.tmp_dir.iterdir():  # uploads cut off by a previous stop
                leftover.unlink(missing_ok=True)
            self._conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
            self._conn.row_factory = sqlite3.Row
            if db_path != ":memory:":
                os.chmod(db_path, 0o600)  # it holds the emulator's own credentials
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            self.identity = self._load_identity()
        except BaseException:
            self._release_files()
            raise

    # -- lifecycle ---------------------------------------------------------

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise ConfigurationError(
                f"the emulator state in {self.data_dir} has schema {version}, this version "
                f"reads {SCHEMA_VERSION}; use a new --data-dir"
            )
        self._conn.executescript(_SCHEMA)
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _load_identity(self) -> Identity:
        with self._tx() as c:
            meta = {row["key"]: row["value"] for row in c.execute("SELECT key, value FROM meta")}
            if "organization_id" not in meta:
                meta = {
                    "organization_id": _new_id(),
                    "user_id": _new_id(),
                    "token": secrets.token_urlsafe(32),
                    "personal_access_token": secrets.token_hex(20),
                    "signing_key": secrets.token_hex(32),
                    "created_at": now_iso(),
                }
                c.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
        return Identity(
            organization_id=meta["organization_id"],
            user_id=meta["user_id"],
            token=meta["token"],
            personal_access_token=meta["personal_access_token"],
            signing_key=bytes.fromhex(meta["signing_key"]),
            created_at=meta["created_at"],
        )

    def close(self) -> None:
        """Close the database, release the data dir, remove a temporary blob dir."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
        self._release_files()

    def _release_files(self) -> None:
        if self._owns_blob_root:
            shutil.rmtree(self._blob_root, ignore_errors=True)
        if self._file_lock is not None:
            self._file_lock.release()
            self._file_lock = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under the store lock (``BEGIN IMMEDIATE`` ... ``COMMIT``)."""
        with self._lock:
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """Consistent reads: under the lock no writer can interleave."""
        with self._lock:
            self._check_open()
            yield self._conn

    def _check_open(self) -> None:
        if self._closed:
            raise HttpError("service_unavailable", "the emulator is shutting down", None, 503)

    # -- blobs ---------------------------------------------------------------

    def new_tmp_file(self) -> tuple[Path, Any]:
        """A new file in ``blobs/tmp`` for an upload in progress, opened ``w+b``."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, suffix=".part")
        return Path(name), os.fdopen(fd, "w+b")

    def blob_from_bytes(self, data: bytes) -> Blob:
        """Write ``data`` to a tmp blob (for uploads made through the Python API)."""
        path, handle = self.new_tmp_file()
        with handle:
            handle.write(data)
        return Blob(path, len(data), hashlib.sha256(data).hexdigest())

    def _model_path(self, model_id: str) -> Path:
        return self._blob_root / "models" / f"{model_id}.zip"

    def _source_path(self, definition_id: str, version: int) -> Path:
        return self._blob_root / "sources" / f"{definition_id}-{version}.zip"

    def model_blob(self, model_id: str) -> tuple[Path, int]:
        """The file and size of a model's data, for a signed download."""
        with self._read() as c:
            row = c.execute("SELECT size FROM models WHERE id = ?", (model_id,)).fetchone()
        path = self._model_path(model_id)
        if row is None or not path.is_file():
            raise _not_found(f"training model {model_id} does not exist")
        return path, int(row["size"])

    # -- lookups -------------------------------------------------------------

    @staticmethod
    def _definition(c: sqlite3.Connection, org: str, name: str) -> sqlite3.Row:
        row: sqlite3.Row | None = c.execute(
            "SELECT * FROM definitions WHERE organization_id = ? AND name = ?", (org, name)
        ).fetchone()
        if row is None:
            raise _not_found(f"training job definition {name!r} does not exist")
        return row

    @staticmethod
    def _version(c: sqlite3.Connection, d: sqlite3.Row, version: int) -> sqlite3.Row:
        row: sqlite3.Row | None = c.execute(
            "SELECT * FROM versions WHERE definition_id = ? AND version = ?", (d["id"], version)
        ).fetchone()
        if row is None:
            raise _not_found(f"training job definition {d['name']!r} has no version {version}")
        return row

    @staticmethod
    def _job(c: sqlite3.Connection, d: sqlite3.Row, job_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = c.execute(
            "SELECT * FROM jobs WHERE id = ? AND definition_id = ?", (job_id, d["id"])
        ).fetchone()
        if row is None:
            raise _not_found(
                f"training job {job_id} does not exist in job definition {d['name']!r}"
            )
        return row

    @staticmethod
    def _model(c: sqlite3.Connection, d: sqlite3.Row, model_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = c.execute(
            "SELECT * FROM models WHERE id = ? AND definition_id = ?", (model_id, d["id"])
        ).fetchone()
        if row is None:
            raise _not_found(
                f"training model {model_id} does not exist in job definition {d['name']!r}"
            )
        return row

    # -- rendering -----------------------------------------------------------

    def _creator(self) -> dict[str, Any]:
        ident = self.identity
        return {
            "id": ident.user_id,
            "email": "emulator@localhost",
            "display_name": "abeja-runtime emulator",
            "role": "admin",
            "is_registered": True,
            "created_at": ident.created_at,
            "updated_at": ident.created_at,
        }

    @staticmethod
    def _version_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "job_definition_id": row["definition_id"],
            "job_definition_version": row["version"],
            "handler": row["handler"],
            "image": row["image"],
            "environment": json.loads(row["environment"]),
            "user_parameters": json.loads(row["user_parameters"]),
            "datasets": json.loads(row["datasets"]),
            "description": row["description"],
            "archived": bool(row["archived"]),
            "created_at": row["created_at"],
            "modified_at": row["modified_at"],
        }

    def _job_dict(self, row: sqlite3.Row) -> dict[str, Any]:
        statistics = row["statistics"]
        return {
            "training_job_id": row["id"],
            "id": row["id"],
            "job_definition_id": row["definition_id"],
            "job_definition_version": row["version"],
            "user_parameters": {},
            "environment": json.loads(row["environment"]),
            "datasets": json.loads(row["datasets"]),
            "instance_type": row["instance_type"],
            "exec_env": row["exec_env"],
            "status": row["status"],
            "status_message": row["status_message"],
            "description": row["description"],
            "statistics": json.loads(statistics) if statistics is not None else None,
            "creator": self._creator(),
            "archived": bool(row["archived"]),
            "start_time": row["start_time"],
            "completion_time": row["completion_time"],
            "created_at": row["created_at"],
            "modified_at": row["modified_at"],
        }

    @staticmethod
    def _model_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "training_model_id": row["id"],
            "id": row["id"],
            "job_definition_id": row["definition_id"],
            "training_job_id": row["job_id"],
            "user_parameters": json.loads(row["user_parameters"]),
            "metrics": json.loads(row["metrics"]),
            "description": row["description"],
            "exec_env": row["exec_env"],
            "archived": bool(row["archived"]),
            "size": row["size"],
            "sha256": row["sha256"],
            "created_at": row["created_at"],
            "modified_at": row["modified_at"],
        }

    def _definition_dict(
        self, c: sqlite3.Connection, d: sqlite3.Row, *, include_jobs: bool
    ) -> dict[str, Any]:
        versions = [
            self._version_dict(v)
            for v in c.execute(
                "SELECT * FROM versions WHERE definition_id = ? ORDER BY version", (d["id"],)
            )
        ]
        model_count = c.execute(
            "SELECT COUNT(*) FROM models WHERE definition_id = ?", (d["id"],)
        ).fetchone()[0]
        out: dict[str, Any] = {
            "job_definition_id": d["id"],
            "organization_id": d["organization_id"],
            "name": d["name"],
            "version_count": len(versions),
            "model_count": model_count,
            "versions": versions,
            "archived": bool(d["archived"]),
            "created_at": d["created_at"],
            "modified_at": d["modified_at"],
        }
        if include_jobs:
            out["jobs"] = [
                self._job_dict(j)
                for j in c.execute(
                    "SELECT * FROM jobs WHERE definition_id = ? ORDER BY rowid DESC", (d["id"],)
                )
            ]
        return out

    @staticmethod
    def _archived_clause(filter_archived: bool | None) -> str:
        return " AND archived = 0" if filter_archived else ""

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

    # -- dashboard reads -----------------------------------------------------
    # Read-only queries for the web dashboard (:mod:`.dashboard`): pages of
    # versions and models (a definition made by ``Emulator.create_job`` has a
    # version per job), one summary row per definition, and the statistics
    # history after a cursor, as stored JSON text so that a poll of 10,000
    # points is not parsed and re-encoded on every request.

    def definition_summaries(self, org: str, *, offset: int, limit: int) -> dict[str, Any]:
        """Definitions in creation order with version/job/model counts and the latest job."""
        with self._read() as c:
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

    def list_versions_page(self, org: str, name: str, *, offset: int, limit: int) -> dict[str, Any]:
        """Versions newest first, paged (``entries``, ``offset``, ``limit``, ``total``)."""
        with self._read() as c:
            d = self._definition(c, org, name)
            total = c.execute(
                "SELECT COUNT(*) FROM versions WHERE definition_id = ?", (d["id"],)
            ).fetchone()[0]
            rows = c.execute(
                "SELECT * FROM versions WHERE definition_id = ? ORDER BY version DESC "
                "LIMIT ? OFFSET ?",
                (d["id"], limit, offset),
            ).fetchall()
        return {
            "entries": [self._version_dict(v) for v in rows],
            "offset": offset,
            "limit": limit,
            "total": total,
        }

    def list_models_page(
        self,
        org: str,
        name: str,
        *,
        offset: int,
        limit: int,
        training_job_id: str | None = None,
    ) -> dict[str, Any]:
        """Models newest first, paged; only one job's with ``training_job_id``."""
        with self._read() as c:
            d = self._definition(c, org, name)
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
            "entries": [self._model_dict(m) for m in rows],
            "offset": offset,
            "limit": limit,
            "total": total,
        }

    def statistics_history_text(
        self, org: str, name: str, job_id: str, *, after: int = 0, limit: int = 10_000
    ) -> list[tuple[int, str, str]]:
        """History entries with ``seq > after``, oldest first: ``(seq, received_at, json)``.

        ``seq`` only grows (it is the history's AUTOINCREMENT key), so it is a
        cursor a poller can hand back to get only what is new. The JSON text is
        what :meth:`update_statistics` stored (compact, no NaN tokens).
        """
        with self._read() as c:
            self._job(c, self._definition(c, org, name), job_id)
            rows = c.execute(
                "SELECT seq, received_at, statistics FROM statistics_history "
                "WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after, limit),
            ).fetchall()
        return [(int(r["seq"]), str(r["received_at"]), str(r["statistics"])) for r in rows]
