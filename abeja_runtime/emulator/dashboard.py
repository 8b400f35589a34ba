"""The emulator's live web dashboard: routes, login, the statistics poll endpoint.

The pages show what the platform's console would for local runs: the
definitions, a definition's versions, jobs (paged) and models, a job with its
status, timings, parameters, latest statistics and live charts, and several
jobs of a definition overlaid. The HTML is rendered on the server
(:mod:`.dashboard_pages`); one small script (``static/dashboard.js``) draws
the charts with the vendored uPlot and polls for new statistics.

URLs (everything else goes to the Training API routes of :mod:`.app`)::

    GET  /                                        definitions
    GET  /definitions/<name>                      versions, jobs, models (paged)
    GET  /definitions/<name>/jobs/<id>            one job, live
    GET  /definitions/<name>/compare?jobs=a,b     jobs overlaid
    GET  /definitions/<name>/models/<id>/download 303 to a fresh signed blob URL
    GET  /_dashboard/api/definitions/<name>/jobs/<id>/statistics?after=<seq>
    POST /_dashboard/login                        token -> session cookie
    POST /_dashboard/logout
    GET  /_dashboard/static/...                   script, CSS, vendored uPlot

Why polling and not server-sent events: werkzeug's threaded server holds a
thread per open connection, so every open page would pin one; a 1 s poll
that returns only the points after a cursor costs a few indexed rows.

Auth: nothing but the static files and the login form is served without the
session cookie. The cookie's value is an HMAC of the emulator's token keyed
with its signing key (never the token itself), set ``HttpOnly`` and
``SameSite=Strict``; its name carries the organization id so that two
emulators on one host (cookies ignore the port) do not overwrite each other.
The URL the CLI prints carries the token in the fragment
(``/#token=...``), which browsers never send to a server or in a
``Referer``; the page's script posts it to the login endpoint and strips it.
Requests whose ``Host`` is not a loopback name are refused (a DNS-rebinding
page must not reach the dashboard), and login/logout refuse cross-origin
posts. Every value from the store reaches HTML through markupsafe's
escaping and a strict Content-Security-Policy (scripts from ``'self'``
only) backs that up.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from ..errors import HttpError, NotFound
from . import dashboard_pages as pages
from . import dashboard_queries as queries
from . import validation as v

if TYPE_CHECKING:  # pragma: no cover
    from .signing import UrlSigner
    from .store import Store

__all__ = [
    "API_PREFIX",
    "COOKIE_PREFIX",
    "DASHBOARD_PREFIX",
    "MAX_POINTS_PER_POLL",
    "Dashboard",
    "session_value",
]

logger = logging.getLogger("abeja_runtime.emulator")

DASHBOARD_PREFIX = "_dashboard"
API_PREFIX = f"/{DASHBOARD_PREFIX}/api"
COOKIE_PREFIX = "abeja_emulator_dashboard_"
#: History points one poll returns at most; the script asks again at once when
#: ``more`` is true, so a long history arrives in a few large answers.
MAX_POINTS_PER_POLL = 20_000
#: Jobs one compare view overlays at most (each is one poll per second).
MAX_COMPARE_JOBS = 12
JOBS_PER_PAGE = 50
VERSIONS_PER_PAGE = 20
MODELS_PER_PAGE = 20
DEFINITIONS_PER_PAGE = 100

STATIC_DIR = Path(__file__).with_name("static")
#: The static files, by URL path below ``/_dashboard/static/``: an explicit
#: table, so no request path is ever joined onto a directory.
STATIC_FILES: dict[str, tuple[str, str]] = {
    "dashboard.js": ("dashboard.js", "text/javascript"),
    "dashboard.css": ("dashboard.css", "text/css"),
    "vendor/uplot/uPlot.iife.min.js": ("vendor/uplot/uPlot.iife.min.js", "text/javascript"),
    "vendor/uplot/uPlot.min.css": ("vendor/uplot/uPlot.min.css", "text/css"),
    "vendor/uplot/LICENSE": ("vendor/uplot/LICENSE", "text/plain"),
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

_TERMINAL = frozenset({"Complete", "Failed", "Stopped"})


def session_value(token: str, signing_key: bytes) -> str:
    """The dashboard session cookie's value for an emulator.

    An HMAC of the token, not the token: a cookie read off a disk or a
    browser profile does not give the API credential. It stays valid while
    the token does (the emulator keeps both in its state), so a login
    survives an emulator restart on the same data dir.
    """
    message = b"abeja-runtime dashboard session v1\n" + token.encode()
    return hmac.new(signing_key, message, hashlib.sha256).hexdigest()


def _is_loopback_host(host: str) -> bool:
    hostname = urlsplit(f"//{host}").hostname or ""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def _json(body: Any, status: int = 200) -> Response:
    data = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(data.encode(), status=status, mimetype="application/json")


def _int_arg(request: Request, name: str, default: int, minimum: int, maximum: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or len(raw) > 18:
        v.bad_request(f"{name} must be an integer from {minimum} to {maximum}")
    value = int(raw)
    if not minimum <= value <= maximum:
        v.bad_request(f"{name} must be an integer from {minimum} to {maximum}")
    return value


class _Unauthenticated(Exception):
    """No valid session cookie on a request that needs one."""


class Dashboard:
    """The dashboard's routes, called by :class:`~.app.EmulatorApp` for its paths.

    Args:
        store: the emulator's state (read only, except nothing: the dashboard
            never writes).
        signer: signs model download URLs, as the API's download operation does.
    """

    def __init__(self, store: Store, signer: UrlSigner) -> None:
        self.store = store
        self.signer = signer
        ident = store.identity
        self._org = ident.organization_id
        self._token = ident.token.encode()
        self._session = session_value(ident.token, ident.signing_key).encode()
        self.cookie_name = COOKIE_PREFIX + ident.organization_id

    def __repr__(self) -> str:
        return f"Dashboard(organization_id={self._org!r})"

    @staticmethod
    def owns(segments: list[str]) -> bool:
        """Whether a (decoded) request path is the dashboard's rather than the API's."""
        return not segments or segments[0] in ("definitions", DASHBOARD_PREFIX)

    # -- entry -----------------------------------------------------------------

    def handle(self, request: Request, segments: list[str]) -> Response:
        """Answer one dashboard request (errors become an HTML or JSON page)."""
        is_api = segments[:2] == [DASHBOARD_PREFIX, "api"]
        try:
            if not _is_loopback_host(request.host):
                raise HttpError(
                    "forbidden",
                    "the dashboard answers only on a loopback host name (127.0.0.1, ::1, "
                    "localhost)",
                    None,
                    403,
                )
            response = self._route(request, segments)
        except _Unauthenticated:
            if is_api or request.method != "GET":
                response = _json(
                    {
                        "error": "unauthorized",
                        "error_description": "log in to the dashboard first",
                    },
                    401,
                )
            else:
                response = self._html(pages.login_page(request.full_path.rstrip("?")), 401)
        except HttpError as exc:
            status = exc.status_code or 500
            if is_api or request.method != "GET":
                response = _json(
                    {"error": exc.error, "error_description": exc.error_description}, status
                )
            else:
                response = self._html(pages.error_page(status, exc.error_description), status)
        self._secure(response)
        return response

    @staticmethod
    def _secure(response: Response) -> None:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"
        headers["X-Frame-Options"] = "DENY"
        headers.setdefault("Cache-Control", "no-store")

    @staticmethod
    def _html(markup: str, status: int = 200) -> Response:
        return Response(markup.encode(), status=status, mimetype="text/html")

    def _route(self, request: Request, s: list[str]) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        n = len(s)
        if n >= 2 and s[0] == DASHBOARD_PREFIX:
            if s[1] == "static" and method == "GET":
                return self._static("/".join(s[2:]), request)
            if n == 2 and s[1] == "login":
                self._allow(method, "POST")
                return self._login(request)
            if n == 2 and s[1] == "logout":
                self._allow(method, "POST")
                return self._logout(request)
            if n == 7 and s[1:3] == ["api", "definitions"] and s[4:7:2] == ["jobs", "statistics"]:
                self._allow(method, "GET")
                self._authenticate(request)
                return self._statistics(request, s[3], s[5])
            raise NotFound("not_found", "no such dashboard path", None, 404)
        self._allow(method, "GET")
        self._authenticate(request)
        if n == 0:
            return self._html(self._definitions_page(request))
        name = v.check_definition_name(s[1])
        if n == 2:
            return self._html(self._definition_page(request, name))
        if n == 3 and s[2] == "compare":
            return self._html(self._compare_page(request, name))
        if n == 4 and s[2] == "jobs":
            return self._html(self._job_page(name, v.check_id(s[3], "training job id")))
        if n == 5 and s[2] == "models" and s[4] == "download":
            return self._download(request, name, v.check_id(s[3], "training model id"))
        raise NotFound("not_found", "no such dashboard page", None, 404)

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise HttpError(
                "method_not_allowed", f"{method} is not allowed here; use {allowed}", None, 405
            )

    # -- auth ------------------------------------------------------------------

    def _authenticate(self, request: Request) -> None:
        cookie = request.cookies.get(self.cookie_name, "")
        if not hmac.compare_digest(cookie.encode(), self._session):
            raise _Unauthenticated()

    @staticmethod
    def _check_same_origin(request: Request) -> None:
        """Refuse a cross-site form post (login CSRF, forced logout)."""
        origin = request.headers.get("Origin")
        expected = request.host_url.rstrip("/")
        if origin is not None and origin != expected:
            raise HttpError("forbidden", "cross-origin dashboard request refused", None, 403)
        if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise HttpError("forbidden", "cross-site dashboard request refused", None, 403)

    def _login(self, request: Request) -> Response:
        """``POST /_dashboard/login``: JSON ``{"token"}`` (the script) or a form post."""
        self._check_same_origin(request)
        is_json = request.mimetype == "application/json"
        token = ""
        target = "/"
        if is_json:
            body = v.parse_json(request.get_data(cache=False), limit=4096)
            if isinstance(body, dict) and isinstance(body.get("token"), str):
                token = body["token"]
        else:
            token = request.form.get("token", "")
            target = pages.safe_next(request.form.get("next", "/"))
        if not hmac.compare_digest(token.strip().encode(), self._token):
            if is_json:
                return _json(
                    {"error": "unauthorized", "error_description": "that is not this token"},
                    401,
                )
            return self._html(pages.login_page(target, failed=True), 401)
        response = Response(status=204) if is_json else Response(status=303)
        if not is_json:
            response.headers["Location"] = target
        response.set_cookie(
            self.cookie_name,
            self._session.decode(),
            httponly=True,
            samesite="Strict",
            path="/",
        )
        return response

    def _logout(self, request: Request) -> Response:
        self._check_same_origin(request)
        response = Response(status=303)
        response.headers["Location"] = "/"
        response.delete_cookie(self.cookie_name, path="/", httponly=True, samesite="Strict")
        return response

    # -- static ----------------------------------------------------------------

    def _static(self, path: str, request: Request) -> Response:
        entry = STATIC_FILES.get(path)
        if entry is None:
            raise NotFound("not_found", "no such static file", None, 404)
        file_path = STATIC_DIR / entry[0]
        response = send_file(
            file_path, request.environ, mimetype=entry[1], conditional=True, max_age=0
        )
        response.headers["Cache-Control"] = "no-cache"
        del response.headers["Date"]  # the server adds its own
        return response

    # -- pages -----------------------------------------------------------------

    def _definitions_page(self, request: Request) -> str:
        page = _int_arg(request, "page", 1, 1, 10**9)
        summaries = queries.definition_summaries(
            self.store,
            self._org,
            offset=(page - 1) * DEFINITIONS_PER_PAGE,
            limit=DEFINITIONS_PER_PAGE,
        )
        return pages.definitions_page(summaries, page)

    def _definition_page(self, request: Request, name: str) -> str:
        job_page = _int_arg(request, "page", 1, 1, 10**9)
        version_page = _int_arg(request, "vpage", 1, 1, 10**9)
        model_page = _int_arg(request, "mpage", 1, 1, 10**9)
        definition = self.store.get_definition(self._org, name, include_jobs=False)
        definition.pop("versions", None)
        versions = queries.list_versions_page(
            self.store,
            self._org,
            name,
            offset=(version_page - 1) * VERSIONS_PER_PAGE,
            limit=VERSIONS_PER_PAGE,
        )
        jobs = self.store.list_jobs(
            self._org,
            name,
            filter_archived=None,
            offset=(job_page - 1) * JOBS_PER_PAGE,
            limit=JOBS_PER_PAGE,
        )
        models = queries.list_models_page(
            self.store,
            self._org,
            name,
            offset=(model_page - 1) * MODELS_PER_PAGE,
            limit=MODELS_PER_PAGE,
        )
        return pages.definition_page(
            definition,
            versions,
            jobs,
            models,
            pages.Paging(page=job_page, vpage=version_page, mpage=model_page),
        )

    def _job_page(self, name: str, job_id: str) -> str:
        job = self.store.get_job(self._org, name, job_id)
        models = queries.list_models_page(
            self.store, self._org, name, offset=0, limit=MODELS_PER_PAGE, training_job_id=job_id
        )
        return pages.job_page(name, job, models, self._statistics_url(name, job_id))

    def _compare_page(self, request: Request, name: str) -> str:
        ids: list[str] = []
        for value in request.args.getlist("jobs"):
            for part in value.split(","):
                part = part.strip()
                if part and part not in ids:
                    ids.append(v.check_id(part, "training job id"))
        if len(ids) > MAX_COMPARE_JOBS:
            v.bad_request(f"compare at most {MAX_COMPARE_JOBS} jobs at once, got {len(ids)}")
        self.store.get_definition(self._org, name, include_jobs=False)  # 404 first
        jobs = [self.store.get_job(self._org, name, job_id) for job_id in ids]
        urls = [self._statistics_url(name, job_id) for job_id in ids]
        return pages.compare_page(name, jobs, urls)

    @staticmethod
    def _statistics_url(name: str, job_id: str) -> str:
        return f"{API_PREFIX}/definitions/{name}/jobs/{job_id}/statistics"

    def _download(self, request: Request, name: str, model_id: str) -> Response:
        """A fresh signed URL each click: a link in a page left open never goes stale."""
        from .signing import BLOB_PREFIX

        model = self.store.get_model(self._org, name, model_id)
        response = Response(status=303)
        response.headers["Location"] = self.signer.sign(
            request.host_url, BLOB_PREFIX + model["training_model_id"]
        )
        return response

    # -- the poll endpoint -----------------------------------------------------

    def _statistics(self, request: Request, raw_name: str, raw_job: str) -> Response:
        """The job's status and its statistics history after ``after`` (a ``seq`` cursor).

        Answer: ``{"job": {status fields}, "points": [{"seq", "received_at",
        "statistics"}], "next": <cursor for the next poll>, "more": bool}``.
        The points are the stored documents verbatim (spliced in as stored
        JSON text: no parse/encode per poll), so the page's numbers are the
        history's numbers.
        """
        unknown = sorted(set(request.args) - {"after", "limit"})
        if unknown:
            v.bad_request(f"unknown query parameter(s) {', '.join(unknown)}; allowed: after, limit")
        name = v.check_definition_name(raw_name)
        job_id = v.check_id(raw_job, "training job id")
        after = _int_arg(request, "after", 0, 0, 2**62)
        limit = _int_arg(request, "limit", MAX_POINTS_PER_POLL, 1, MAX_POINTS_PER_POLL)
        job = self.store.get_job(self._org, name, job_id)
        rows = queries.statistics_history_text(
            self.store, self._org, name, job_id, after=after, limit=limit
        )
        head = {
            key: job[key]
            for key in (
                "status",
                "status_message",
                "start_time",
                "completion_time",
                "modified_at",
            )
        }
        head["terminal"] = job["status"] in _TERMINAL
        points = ",".join(
            f'{{"seq":{seq},"received_at":{json.dumps(received)},"statistics":{text}}}'
            for seq, received, text in rows
        )
        body = (
            f'{{"job":{json.dumps(head, ensure_ascii=False)},"points":[{points}],'
            f'"next":{rows[-1][0] if rows else after},"more":{"true" if len(rows) == limit else "false"}}}'
        )
        return Response(body.encode(), mimetype="application/json")
