"""The emulator store's foundation: the schema, the connection and the row conversions.

:class:`~abeja_runtime.emulator.store.Store` builds the Training API's operations on it.
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

from ..errors import ConfigurationError, Conflict, HttpError, NotFound

__all__ = ["Blob", "Identity", "now_iso"]

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


class _StoreBase:
    """The store's database, locks, files and row conversions; :class:`~.store.Store` adds
    the operations."""

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
