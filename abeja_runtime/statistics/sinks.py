"""Where the reporter's statistics snapshots go.

A sink receives one complete, JSON-safe statistics document at a time, always on the
reporter's sender thread, and either returns (delivered) or raises. The reporter
decides everything else (throttling, coalescing, retrying, giving up), so a sink is
a few lines and easy to swap:

* :class:`APISink`: the Training API (``POST .../jobs/{id}/statistics``), through
  :class:`~abeja_runtime.api.client.APIClient` with its own retries turned off, because a
  retry loop inside the client would hold up newer snapshots that should replace the
  one being retried;
* :class:`JSONLinesSink`: a JSON-lines file, used outside a training job so that the
  same training code runs on a laptop and leaves its statistics somewhere readable;
* :class:`MemorySink`: a list in memory, for tests and notebooks.

Errors a sink raises are classified by the reporter: :class:`~abeja_runtime.errors.HttpError`
with a 429/5xx status and :class:`~abeja_runtime.errors.APIConnectionError` are retried,
other HTTP errors are permanent; any other exception is logged and the snapshot dropped.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover
    from ..api.client import APIClient
    from ..job import JobContext

__all__ = [
    "DEFAULT_STATISTICS_FILE_NAME",
    "APISink",
    "JSONLinesSink",
    "MemorySink",
    "StatisticsSink",
]

#: file name of the JSON-lines sink inside the result dir, outside a job
DEFAULT_STATISTICS_FILE_NAME = "statistics.jsonl"


@runtime_checkable
class StatisticsSink(Protocol):
    """Something that takes complete statistics documents, one at a time."""

    @property
    def description(self) -> str:
        """Where documents go, for log lines (never contains a credential)."""
        ...

    def send(self, document: dict[str, Any]) -> None:
        """Deliver ``document`` (already JSON-safe) or raise; called on the sender thread."""
        ...

    def close(self) -> None:
        """Release resources (connections, files); called once, after the last send."""
        ...


class APISink:
    """Posts documents to a training job's statistics on the Training API.

    The client is made on first use, on the sender thread, so that creating a
    reporter never imports ``requests`` or opens a connection on the training thread.

    Args:
        context: the job whose statistics are updated.
        timeout: seconds for connect and for read of one post. Kept short: the
            reporter retries by itself, and a long hang only delays newer snapshots.
        client: a ready client to use instead (its retry setting is left as it is).
    """

    def __init__(
        self,
        context: JobContext,
        *,
        timeout: float = 10.0,
        client: APIClient | None = None,
    ) -> None:
        self.context = context
        self.timeout = timeout
        self._client = client

    @property
    def description(self) -> str:
        ctx = self.context
        return (
            f"{ctx.api_url} (organization {ctx.organization_id}, job definition "
            f"{ctx.job_definition_name!r}, training job {ctx.training_job_id})"
        )

    @property
    def client(self) -> APIClient:
        """The client used for posting (made on first access)."""
        if self._client is None:
            from ..api.client import APIClient

            self._client = APIClient(
                self.context.credential,
                self.timeout,
                0,
                base_url=self.context.api_url,
            )
        return self._client

    def send(self, document: dict[str, Any]) -> None:
        ctx = self.context
        self.client.update_statistics(
            ctx.organization_id, ctx.job_definition_name, ctx.training_job_id, document
        )

    def close(self) -> None:
        client, self._client = self._client, None
        closer = getattr(client, "close", None)
        if callable(closer):
            closer()

    def __repr__(self) -> str:
        return f"APISink({self.description})"


class JSONLinesSink:
    """Appends each document to a JSON-lines file: ``{"time": ..., "statistics": {...}}``.

    The line has the same ``statistics`` body the API would receive, plus the UTC
    time, so a local run's file can be read back (or replayed to a job) as is. The
    file is opened on the first send (on the sender thread), in append mode, and each
    line is flushed to the OS at once so that a crashed run still leaves its lines.

    Args:
        path: the file; its parent directories are created.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self._file: Any = None
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return str(self.path)

    def send(self, document: dict[str, Any]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        line = json.dumps(
            {"time": now, "statistics": document}, allow_nan=False, separators=(",", ":")
        )
        with self._lock:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            file, self._file = self._file, None
        if file is not None:
            file.close()

    def read(self) -> list[dict[str, Any]]:
        """The ``statistics`` documents written so far, oldest first."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as file:
            return [json.loads(line)["statistics"] for line in file if line.strip()]

    def __repr__(self) -> str:
        return f"JSONLinesSink({str(self.path)!r})"


class MemorySink:
    """Keeps every document in :attr:`documents` (tests, notebooks)."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.closed = False

    @property
    def description(self) -> str:
        return "memory"

    def send(self, document: dict[str, Any]) -> None:
        self.documents.append(document)

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"MemorySink({len(self.documents)} documents)"
