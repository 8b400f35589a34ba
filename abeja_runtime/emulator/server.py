"""The threaded HTTP server and :class:`Emulator`, the Python handle on it.

``with Emulator() as emu:`` starts werkzeug's threaded server on 127.0.0.1
in a background thread and stops it (and closes the store) on exit. The
request log never holds a credential or a signed URL's query: the handler
logs method, path without query and status to the ``abeja_runtime.emulator``
logger, and redacts ``Authorization``-looking text in werkzeug's own error
lines.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from ..config import ENV_AUTH_TOKEN, Credential
from ..errors import AbejaRuntimeError, ConfigurationError
from ..job import job_environment
from . import validation as v
from .app import EmulatorApp
from .signing import DEFAULT_TTL_SECONDS, UrlSigner
from .store import Store

if TYPE_CHECKING:  # pragma: no cover
    from ..api.client import APIClient

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Emulator"]

logger = logging.getLogger("abeja_runtime.emulator")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Seconds :meth:`Emulator.stop` waits for requests in flight to finish.
STOP_GRACE_SECONDS = 5.0
#: The smallest valid zip file (an empty archive), the source of versions
#: that :meth:`Emulator.create_job` makes.
EMPTY_ZIP = b"PK\x05\x06" + b"\x00" * 18

_QUERY_RE = re.compile(r"\?[^\s\"']*")
_AUTH_RE = re.compile(r"\b(Bearer|Basic)\s+[^\s\"']+", re.IGNORECASE)


def _redact(text: str) -> str:
    """Log text without query strings (signed URLs) or credentials."""
    return _AUTH_RE.sub(r"\1 ***", _QUERY_RE.sub("?***", text))


class _Connections:
    """The open client connections and running handlers of one server.

    werkzeug's handler threads are daemons that the server does not wait
    for; stopping closes these sockets so no handler keeps serving a closed
    store, then waits a moment for the ones mid-request.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sockets: set[socket.socket] = set()
        self._active = 0

    def enter(self, sock: socket.socket) -> None:
        with self._cond:
            self._sockets.add(sock)
            self._active += 1

    def leave(self, sock: socket.socket) -> None:
        with self._cond:
            self._sockets.discard(sock)
            self._active -= 1
            self._cond.notify_all()

    def close_all(self, grace: float) -> None:
        with self._cond:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):  # already closed by the client
                    sock.shutdown(socket.SHUT_RDWR)
            self._cond.wait_for(lambda: self._active == 0, timeout=grace)


class _RequestHandler(WSGIRequestHandler):
    """werkzeug's handler with a log that cannot leak secrets, and connection tracking."""

    connections: _Connections  # set on the per-server subclass

    def handle(self) -> None:
        self.connections.enter(self.connection)
        try:
            super().handle()
        finally:
            self.connections.leave(self.connection)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = getattr(self, "path", "").split("?", 1)[0]
        path = path.translate(self._control_char_table)
        logger.info("%s %s %s", getattr(self, "command", "-"), path, code)

    def log(self, type: str, message: str, *args: Any) -> None:
        try:
            text = message % args if args else message
        except (TypeError, ValueError):
            text = message
        level = logging.ERROR if type == "error" else logging.INFO
        logger.log(level, "%s", _redact(text.rstrip()))


def _check_host(host: str) -> None:
    """Only loopback: the emulator speaks plain HTTP and prints its token."""
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigurationError(
            f"the emulator binds only to a loopback address (127.0.0.1, ::1, localhost), "
            f"got {host!r}: it serves plain HTTP with a development token"
        )


class Emulator:
    """A local Training API server, started in the background.

    Example::

        with Emulator() as emu:
            env = emu.create_job("mnist")      # what a job would see
            client = emu.client()              # an APIClient bound to it

    Args:
        data_dir: where state (SQLite) and uploaded blobs live; reused across
            restarts. ``None``: in memory, with blobs in a temporary dir
            removed by :meth:`stop`.
        port: TCP port; ``0`` picks a free one (see :attr:`url`).
        host: a loopback address to bind.
        signed_url_ttl: seconds a download URL stays valid.

    Raises:
        ConfigurationError: ``host`` is not loopback; (on start) the data
            dir is in use by another emulator.
        OSError: (on start) the port cannot be bound.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        port: int = 0,
        host: str = DEFAULT_HOST,
        *,
        signed_url_ttl: float = DEFAULT_TTL_SECONDS,
    ) -> None:
        _check_host(host)
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"port must be 0-65535, got {port}")
        self._data_dir = data_dir
        self._host = host
        self._port = port
        self._ttl = signed_url_ttl
        UrlSigner(b"check", signed_url_ttl)  # fail now on a bad ttl, not on start
        self._store: Store | None = None
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._connections = _Connections()
        self._url = ""

    def __repr__(self) -> str:
        if self._store is None:
            return "Emulator(stopped)"
        return f"Emulator(url={self._url!r}, organization_id={self.organization_id!r})"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Emulator:
        """Open the store, bind the port and serve in a daemon thread."""
        if self._store is not None:
            raise AbejaRuntimeError("the emulator is already running")
        store = Store(self._data_dir)
        try:
            app = EmulatorApp(store, UrlSigner(store.identity.signing_key, self._ttl))
            handler = type(
                "_BoundRequestHandler", (_RequestHandler,), {"connections": self._connections}
            )
            family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self._host, self._port))
                sock.listen(512)
                # werkzeug takes a listening socket by fd (and duplicates it), so a
                # bind error is a normal OSError here instead of werkzeug's sys.exit
                server = make_server(
                    self._host,
                    self._port,
                    app,
                    threaded=True,
                    request_handler=handler,
                    fd=sock.fileno(),
                )
        except BaseException:
            store.close()
            raise
        self._store = store
        self._server = server
        port = server.server_address[1]
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"abeja-emulator-{port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections, close the store (idempotent)."""
        server, thread, store = self._server, self._thread, self._store
        self._server = self._thread = self._store = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()
        self._connections.close_all(STOP_GRACE_SECONDS)
        if store is not None:
            store.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- identity ----------------------------------------------------------

    def _require(self) -> Store:
        if self._store is None:
            raise AbejaRuntimeError(
                "the emulator is not running; use 'with Emulator() as emu:' or call start()"
            )
        return self._store

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:8765`` (the value for ``ABEJA_API_URL``)."""
        self._require()
        return self._url

    @property
    def dashboard_url(self) -> str:
        """The dashboard's address that logs a browser in: ``<url>/#token=<token>``.

        The token is in the fragment, which a browser never sends to a server
        (so it is in no request log or ``Referer``); the page's script trades it
        for a session cookie and removes it from the address bar. It is a
        secret: print it only where the token itself could be printed.
        """
        return self.dashboard_link("/")

    def dashboard_link(self, path: str = "/") -> str:
        """Like :attr:`dashboard_url` for one page, e.g. ``/definitions/mnist/jobs/<id>``."""
        if not path.startswith("/"):
            raise ValueError(f"a dashboard path starts with '/', got {path!r}")
        return f"{self.url}{path}#token={self.token}"

    @property
    def port(self) -> int:
        """The bound TCP port."""
        self._require()
        return int(self._url.rsplit(":", 1)[1])

    @property
    def organization_id(self) -> str:
        """The one organization this emulator serves (13 digits)."""
        return self._require().identity.organization_id

    @property
    def token(self) -> str:
        """The bearer token (``PLATFORM_AUTH_TOKEN``)."""
        return self._require().identity.token

    @property
    def user_id(self) -> str:
        """The user id for basic auth (without the ``user-`` prefix)."""
        return self._require().identity.user_id

    @property
    def personal_access_token(self) -> str:
        """The user's personal access token for basic auth."""
        return self._require().identity.personal_access_token

    @property
    def data_dir(self) -> str | None:
        """Where the state lives, or ``None`` in memory."""
        store = self._require()
        return str(store.data_dir) if store.data_dir is not None else None

    @property
    def credential(self) -> Credential:
        """The bearer credential for :class:`~abeja_runtime.api.client.APIClient`."""
        return Credential.bearer(self.token)

    @property
    def user_credential(self) -> Credential:
        """The user basic-auth credential."""
        return Credential.user(self.user_id, self.personal_access_token)

    def client(self, **kwargs: Any) -> APIClient:
        """An :class:`~abeja_runtime.api.client.APIClient` bound to this emulator.

        Keyword arguments go to ``APIClient`` (``credential`` defaults to the
        bearer token, ``base_url`` to :attr:`url`).
        """
        from ..api.client import APIClient

        kwargs.setdefault("credential", self.credential)
        kwargs.setdefault("base_url", self.url)
        return APIClient(**kwargs)

    # -- jobs, from the Python side -----------------------------------------

    def create_job(
        self,
        job_definition_name: str,
        *,
        environment: dict[str, Any] | None = None,
        datasets: dict[str, str] | None = None,
        handler: str = "train:handler",
        description: str | None = None,
        instance_type: str | None = None,
        exec_env: str = "local",
    ) -> dict[str, str]:
        """Make a definition (reused if it exists), a version and a Pending job.

        Returns:
            The environment a training job would see (see
            :meth:`job_environment`), ready for ``subprocess`` or
            ``monkeypatch.setenv``.

        Raises:
            BadRequest: a name or value that the API would refuse.
            Conflict: the definition is archived.
        """
        store = self._require()
        org = self.organization_id
        name = v.check_definition_name(job_definition_name)
        env = v.check_environment(environment)
        ds = v.check_datasets(datasets)
        v.check_handler(handler)
        desc = v.check_description(description)
        itype = v.check_instance_type(instance_type) if instance_type is not None else None
        v.check_exec_env(exec_env)
        store.get_or_create_definition(org, name)
        version = store.create_version(
            org, name, source=store.blob_from_bytes(EMPTY_ZIP), handler=handler
        )
        job = store.create_job(
            org,
            name,
            version["job_definition_version"],
            environment=env,
            datasets=ds,
            instance_type=itype,
            description=desc,
            exec_env=exec_env,
        )
        return self.job_environment(name, job["training_job_id"])

    def job_environment(self, job_definition_name: str, training_job_id: str) -> dict[str, str]:
        """The environment variables of SPEC.md "Inside a running training job".

        The version's and then the job's ``environment`` come first (values
        as strings, non-strings JSON-encoded: ``true``, ``50``), and the
        platform's own variables override them. ``ABEJA_TRAINING_RESULT_DIR``
        and ``ABEJA_STORAGE_DIR_PATH`` are set only when an ``environment``
        sets them: where results go on a laptop is the runner's choice.
        """
        store = self._require()
        org = self.organization_id
        job = store.get_job(org, job_definition_name, training_job_id)
        version = store.job_version(org, job_definition_name, training_job_id)
        env: dict[str, str] = {}
        for source in (version["environment"], job["environment"]):
            for key, value in source.items():
                env[key] = value if isinstance(value, str) else json.dumps(value)
        env.update(
            job_environment(
                organization_id=org,
                job_definition_name=job_definition_name,
                job_definition_version=job["job_definition_version"],
                training_job_id=job["training_job_id"],
                api_url=self.url,
                handler=version["handler"],
                datasets=job["datasets"],
            )
        )
        env[ENV_AUTH_TOKEN] = self.token
        return env

    def job(self, job_definition_name: str, training_job_id: str) -> dict[str, Any]:
        """The job as ``get_training_job`` returns it."""
        return self._require().get_job(self.organization_id, job_definition_name, training_job_id)

    def statistics_history(
        self, job_definition_name: str, training_job_id: str
    ) -> list[dict[str, Any]]:
        """Every statistics document the job received, oldest first.

        Each entry is ``{"received_at": <ISO time>, "statistics": {...}}``.
        """
        return self._require().statistics_history(
            self.organization_id, job_definition_name, training_job_id
        )

    def set_job_status(
        self,
        job_definition_name: str,
        training_job_id: str,
        status: str,
        status_message: str | None = None,
    ) -> dict[str, Any]:
        """Move a job along its legal transitions (see the module docs); returns the job.

        Raises:
            BadRequest: an unknown status.
            Conflict: the transition is not allowed from the current status.
        """
        if status not in v.JOB_STATUSES or status == "Pending":
            v.bad_request(
                f"status must be one of Active, Complete, Failed, Stopped, got {status!r}"
            )
        v.check_description(status_message, "status_message")
        return self._require().set_job_status(
            self.organization_id, job_definition_name, training_job_id, status, status_message
        )
