"""The emulator's WSGI application: routing, authentication, request parsing, errors.

Each of the 29 Training API operations (see ``SPEC.md``) plus the runner's
status extension is one method here that checks its inputs with
:mod:`.validation` and calls :class:`~.store.Store`. Errors leave as the
platform's JSON ``{"error": ..., "error_description": ...}`` with the status
codes of the SPEC.

Order of checks for an API request: route (404 unknown path, 405 known path
with another method), credential (401), organization (403), path names and
ids (400), then the operation (400 body, 404, 409).

Why a small router instead of :class:`werkzeug.routing.Map`: names must be
validated *after* percent-decoding each path segment (``a%2Fb`` is one
segment holding a slash, which must be a 400, not another route), and
werkzeug's map matches the already-decoded ``PATH_INFO``, where that
distinction is lost. The routes are a flat table of literal segments and
placeholders; matching is a loop over it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from ..errors import Forbidden, HttpError, MethodNotAllowed, NotFound, Unauthorized
from . import validation as v
from .dashboard import Dashboard
from .signing import BLOB_PREFIX, UrlSigner
from .store import Store
from .uploads import MultipartUpload

if TYPE_CHECKING:  # pragma: no cover
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["EmulatorApp"]

logger = logging.getLogger("abeja_runtime.emulator")

_PREFIX = ("organizations", "{org}", "training")

Handler = Callable[[Request, dict[str, str]], "dict[str, Any] | Response"]


@dataclass(frozen=True)
class _Route:
    method: str
    segments: tuple[str, ...]
    handler: Handler
    public: bool = False  # no credential needed (health, signed downloads)


def _json_response(body: Any, status: int = 200) -> Response:
    data = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(data.encode(), status=status, mimetype="application/json")


def _error_body(exc: HttpError) -> dict[str, Any]:
    body: dict[str, Any] = {"error": exc.error, "error_description": exc.error_description}
    if exc.error_detail:
        body["error_detail"] = exc.error_detail
    return body


class EmulatorApp:
    """The WSGI callable serving the Training API from a :class:`Store`.

    Args:
        store: the state.
        signer: signs and checks download URLs.
    """

    def __init__(self, store: Store, signer: UrlSigner) -> None:
        self.store = store
        self.signer = signer
        ident = store.identity
        self._org = ident.organization_id
        self._token = ident.token.encode()
        self._basic_user = f"user-{ident.user_id}".encode()
        self._basic_secret = ident.personal_access_token.encode()
        self._routes = self._build_routes()
        #: the web dashboard, served at ``/`` and ``/definitions/...`` (see :mod:`.dashboard`)
        self.dashboard = Dashboard(store, signer)

    def __repr__(self) -> str:
        return f"EmulatorApp(organization_id={self._org!r})"

    # -- routing -------------------------------------------------------------

    def _build_routes(self) -> list[_Route]:
        d = (*_PREFIX, "definitions")
        dn = (*d, "{name}")
        ver = (*dn, "versions", "{version}")
        job = (*dn, "jobs", "{job}")
        model = (*dn, "models", "{model}")
        table: list[tuple[str, tuple[str, ...], Handler]] = [
            ("POST", d, self.create_definition),  # 1
            ("GET", d, self.list_definitions),  # 4
            ("POST", (*dn, "archive"), self.archive_definition),  # 2
            ("POST", (*dn, "unarchive"), self.unarchive_definition),  # 3
            ("GET", dn, self.get_definition),  # 5
            ("DELETE", dn, self.delete_definition),  # 6
            ("POST", (*dn, "versions"), self.create_version),  # 7, 8
            ("GET", (*dn, "versions"), self.list_versions),  # 9
            ("GET", ver, self.get_version),  # 10
            ("PATCH", ver, self.patch_version),  # 11
            ("POST", (*ver, "archive"), self.archive_version),  # 12
            ("POST", (*ver, "unarchive"), self.unarchive_version),  # 13
            ("DELETE", ver, self.delete_version),  # 14
            ("POST", (*ver, "jobs"), self.create_job),  # 15
            ("GET", (*dn, "jobs"), self.list_jobs),  # 16
            ("GET", job, self.get_job),  # 17
            ("POST", (*job, "stop"), self.stop_job),  # 18
            ("POST", (*job, "archive"), self.archive_job),  # 19
            ("POST", (*job, "unarchive"), self.unarchive_job),  # 20
            ("GET", (*job, "result"), self.get_result),  # 21
            ("POST", (*job, "statistics"), self.update_statistics),  # 22
            ("POST", (*job, "status"), self.set_job_status),  # runner extension
            ("GET", (*dn, "models"), self.list_models),  # 23
            ("POST", (*dn, "models"), self.create_model),  # 24
            ("GET", model, self.get_model),  # 25
            ("PATCH", model, self.patch_model),  # 26
            ("GET", (*model, "download"), self.download_model),  # 27
            ("POST", (*model, "archive"), self.archive_model),  # 28
            ("POST", (*model, "unarchive"), self.unarchive_model),  # 29
        ]
        routes = [_Route(m, s, h) for m, s, h in table]
        routes.append(_Route("GET", ("_emulator", "health"), self.health, public=True))
        routes.append(
            _Route("GET", ("_emulator", "blobs", "models", "{model}"), self.blob, public=True)
        )
        return routes

    def _match(self, method: str, segments: list[str]) -> tuple[_Route, dict[str, str]]:
        allowed: set[str] = set()
        for route in self._routes:
            if len(route.segments) != len(segments):
                continue
            params: dict[str, str] = {}
            for pattern, segment in zip(route.segments, segments, strict=True):
                if pattern.startswith("{"):
                    params[pattern[1:-1]] = segment
                elif pattern != segment:
                    break
            else:
                if route.method == method or (method == "HEAD" and route.method == "GET"):
                    return route, params
                allowed.add(route.method)
        if allowed:
            raise MethodNotAllowed(
                "method_not_allowed",
                f"{method} is not allowed here; allowed: {', '.join(sorted(allowed))}",
                {"allowed": sorted(allowed)},
                405,
            )
        raise NotFound("not_found", "no such API path", None, 404)

    # -- WSGI ----------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        request = Request(environ)
        try:
            response = self._dispatch(request)
        except HttpError as exc:
            response = _json_response(_error_body(exc), exc.status_code or 500)
            if exc.status_code == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="abeja-emulator"'
            if isinstance(exc, MethodNotAllowed) and isinstance(exc.error_detail, dict):
                response.headers["Allow"] = ", ".join(exc.error_detail["allowed"])
        except Exception as exc:  # a bug: answer in the API's shape, log without secrets
            logger.exception("emulator error on %s %s", request.method, request.path)
            response = _json_response(
                {
                    "error": "internal_server_error",
                    "error_description": f"the emulator failed ({type(exc).__name__}); see its log",
                },
                500,
            )
        return response(environ, start_response)

    def _dispatch(self, request: Request) -> Response:
        segments = v.split_path(request.environ)
        if self.dashboard.owns(segments):
            return self.dashboard.handle(request, segments)
        route, params = self._match(request.method, segments)
        if not route.public:
            self._authenticate(request)
            if params["org"] != self._org:
                raise Forbidden(
                    "forbidden",
                    f"this credential has no access to organization {params['org'][:32]!r}",
                    None,
                    403,
                )
        self._check_params(params)
        result = route.handler(request, params)
        if isinstance(result, Response):
            return result
        return _json_response(result)

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        scheme = scheme.lower()
        if not header:
            raise Unauthorized(
                "unauthorized",
                "no credential: send 'Authorization: Bearer <token>' or basic auth "
                "'user-<id>:<personal access token>'",
                None,
                401,
            )
        if scheme == "bearer":
            if hmac.compare_digest(value.encode(), self._token):
                return
        elif scheme == "basic":
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            user, _, secret = decoded.partition(b":")
            # both compared every time, so timing does not tell which one was wrong
            user_ok = hmac.compare_digest(user, self._basic_user)
            secret_ok = hmac.compare_digest(secret, self._basic_secret)
            if user_ok and secret_ok:
                return
        else:
            raise Unauthorized(
                "unauthorized",
                "unsupported authorization scheme; use Bearer or Basic",
                None,
                401,
            )
        raise Unauthorized("unauthorized", "the credential is not valid", None, 401)

    @staticmethod
    def _check_params(params: dict[str, str]) -> None:
        if "name" in params:
            v.check_definition_name(params["name"])
        if "version" in params:
            v.check_version_number(params["version"])
        if "job" in params:
            v.check_id(params["job"], "training job id")
        if "model" in params:
            v.check_id(params["model"], "training model id")

    # -- request helpers -----------------------------------------------------

    @staticmethod
    def _query(request: Request, allowed: tuple[str, ...] = ()) -> Mapping[str, str]:
        unknown = sorted(set(request.args) - set(allowed))
        if unknown:
            v.bad_request(
                f"unknown query parameter(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )
        return request.args

    @staticmethod
    def _body(request: Request, *, limit: int = v.MAX_JSON_BYTES) -> Any:
        """The JSON body, or ``None`` when there is none. Over ``limit`` bytes is a 400."""
        data = request.stream.read(limit + 1)
        if not data:
            return None
        mimetype = request.mimetype
        if mimetype != "application/json" and not mimetype.endswith("+json"):
            v.bad_request(
                f"the request body must be JSON with Content-Type application/json, got "
                f"{mimetype or '(none)'!r}"
            )
        return v.parse_json(data, limit=limit)

    def _no_body(self, request: Request) -> None:
        """Operations without a body take none, ``{}`` (what the public package sends) or null."""
        self._query(request)
        body = self._body(request)
        if body is not None:
            v.check_fields(body, allowed=())

    def _object_body(
        self,
        request: Request,
        *,
        allowed: tuple[str, ...],
        required: tuple[str, ...] = (),
        limit: int = v.MAX_JSON_BYTES,
    ) -> dict[str, Any]:
        self._query(request)
        body = self._body(request, limit=limit)
        if body is None:
            body = {}
        return v.check_fields(body, allowed=allowed, required=required)

    # -- definitions ---------------------------------------------------------

    def create_definition(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        body = self._object_body(request, allowed=("name",), required=("name",))
        name = v.check_definition_name(body["name"])
        return self.store.create_definition(p["org"], name)

    def list_definitions(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        args = self._query(request, ("filter_archived", "offset", "limit"))
        offset, limit = v.parse_paging(args)
        return self.store.list_definitions(
            p["org"], filter_archived=v.parse_filter_archived(args), offset=offset, limit=limit
        )

    def get_definition(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        args = self._query(request, ("include_jobs",))
        include_jobs = v.parse_bool_query(args, "include_jobs", True)
        return self.store.get_definition(p["org"], p["name"], include_jobs=include_jobs)

    def archive_definition(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.set_definition_archived(p["org"], p["name"], True)

    def unarchive_definition(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.set_definition_archived(p["org"], p["name"], False)

    def delete_definition(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.delete_definition(p["org"], p["name"])

    # -- versions ------------------------------------------------------------

    def create_version(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._query(request)
        # fail before reading a large body if the definition does not exist
        self.store.get_definition(p["org"], p["name"], include_jobs=False)
        with MultipartUpload(
            request, self.store, {"source_code": True, "parameters": False}
        ) as upload:
            params = upload.json_part("parameters")
            if params is None:
                v.bad_request("the 'parameters' part (params.json) is missing")
            v.check_fields(
                params,
                allowed=(
                    "handler",
                    "image",
                    "environment",
                    "user_parameters",
                    "datasets",
                    "description",
                ),
                required=("handler",),
                what="parameters",
            )
            handler = v.check_handler(params["handler"])
            image = v.check_image(params["image"]) if params.get("image") is not None else None
            environment = v.check_environment(params.get("environment"))
            user_parameters = v.check_environment(params.get("user_parameters"), "user_parameters")
            datasets = v.check_datasets(params.get("datasets"))
            description = v.check_description(params.get("description"))
            source = upload.take_file("source_code")
            if source is None:
                v.bad_request("the 'source_code' part (source_code.zip) is missing")
            return self.store.create_version(
                p["org"],
                p["name"],
                source=source,
                handler=handler,
                image=image,
                environment=environment,
                user_parameters=user_parameters,
                datasets=datasets,
                description=description,
            )

    def list_versions(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        args = self._query(request, ("filter_archived",))
        return self.store.list_versions(
            p["org"], p["name"], filter_archived=v.parse_filter_archived(args)
        )

    def get_version(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._query(request)
        return self.store.get_version(p["org"], p["name"], int(p["version"]))

    def patch_version(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        body = self._object_body(request, allowed=("description",), required=("description",))
        return self.store.patch_version(
            p["org"],
            p["name"],
            int(p["version"]),
            description=v.check_description(body["description"]),
        )

    def archive_version(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.set_version_archived(p["org"], p["name"], int(p["version"]), True)

    def unarchive_version(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.set_version_archived(p["org"], p["name"], int(p["version"]), False)

    def delete_version(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.delete_version(p["org"], p["name"], int(p["version"]))

    # -- jobs ----------------------------------------------------------------

    def create_job(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        body = self._object_body(
            request,
            allowed=(
                "environment",
                "datasets",
                "instance_type",
                "description",
                "export_log",
                "exec_env",  # extension: a local runner records its job as "local"
            ),
        )
        export_log = body.get("export_log", False)
        if not isinstance(export_log, bool):
            v.bad_request("export_log must be true or false")
        instance_type = body.get("instance_type")
        return self.store.create_job(
            p["org"],
            p["name"],
            int(p["version"]),
            environment=v.check_environment(body.get("environment")),
            datasets=v.check_datasets(body.get("datasets")),
            instance_type=v.check_instance_type(instance_type)
            if instance_type is not None
            else None,
            description=v.check_description(body.get("description")),
            export_log=export_log,
            exec_env=v.check_exec_env(body["exec_env"]) if "exec_env" in body else "cloud",
        )

    def list_jobs(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        args = self._query(request, ("filter_archived", "offset", "limit"))
        offset, limit = v.parse_paging(args)
        return self.store.list_jobs(
            p["org"],
            p["name"],
            filter_archived=v.parse_filter_archived(args),
            offset=offset,
            limit=limit,
        )

    def get_job(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._query(request)
        return self.store.get_job(p["org"], p["name"], p["job"])

    def stop_job(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.stop_job(p["org"], p["name"], p["job"])

    def archive_job(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.set_job_archived(p["org"], p["name"], p["job"], True)

    def unarchive_job(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.set_job_archived(p["org"], p["name"], p["job"], False)

    def get_result(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._query(request)
        model_id = self.store.result_model_id(p["org"], p["name"], p["job"])
        uri = self.signer.sign(request.host_url, BLOB_PREFIX + model_id)
        return {"artifacts": {"complete": {"uri": uri}}}

    def update_statistics(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._query(request)
        body = self._body(request, limit=v.MAX_STATISTICS_BYTES)
        if body is None:
            v.bad_request('the request body must be JSON {"statistics": {...}}')
        statistics = v.check_statistics(body)
        return self.store.update_statistics(p["org"], p["name"], p["job"], statistics)

    def set_job_status(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        body = self._object_body(
            request, allowed=("status", "status_message"), required=("status",)
        )
        status = body["status"]
        if status not in ("Active", "Complete", "Failed", "Stopped"):
            v.bad_request(
                f"status must be one of Active, Complete, Failed, Stopped, got {status!r}"
            )
        message = v.check_description(body.get("status_message"), "status_message")
        return self.store.set_job_status(p["org"], p["name"], p["job"], status, message)

    # -- models --------------------------------------------------------------

    def list_models(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        args = self._query(request, ("filter_archived",))
        return self.store.list_models(
            p["org"], p["name"], filter_archived=v.parse_filter_archived(args)
        )

    def create_model(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._query(request)
        self.store.get_definition(p["org"], p["name"], include_jobs=False)
        with MultipartUpload(
            request, self.store, {"model_data": True, "parameters": False}
        ) as upload:
            params = upload.json_part("parameters")
            if params is None:
                params = {}
            v.check_fields(
                params,
                allowed=("training_job_id", "description", "user_parameters", "metrics"),
                what="parameters",
            )
            job_id = params.get("training_job_id")
            if job_id is not None:
                v.check_id(job_id, "training_job_id")
            description = v.check_description(params.get("description"))
            user_parameters = params.get("user_parameters")
            metrics = params.get("metrics")
            for key, value in (("user_parameters", user_parameters), ("metrics", metrics)):
                if value is not None and not isinstance(value, dict):
                    v.bad_request(f"parameters.{key} must be an object")
            data = upload.take_file("model_data")
            if data is None:
                v.bad_request("the 'model_data' part (model_data.zip) is missing")
            return self.store.create_model(
                p["org"],
                p["name"],
                data=data,
                training_job_id=job_id,
                description=description,
                user_parameters=user_parameters,
                metrics=metrics,
            )

    def get_model(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._query(request)
        return self.store.get_model(p["org"], p["name"], p["model"])

    def patch_model(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        body = self._object_body(request, allowed=("description",), required=("description",))
        return self.store.patch_model(
            p["org"], p["name"], p["model"], description=v.check_description(body["description"])
        )

    def download_model(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._query(request)
        model = self.store.get_model(p["org"], p["name"], p["model"])
        uri = self.signer.sign(request.host_url, BLOB_PREFIX + model["training_model_id"])
        return {"download_uri": uri}

    def archive_model(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.set_model_archived(p["org"], p["name"], p["model"], True)

    def unarchive_model(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        self._no_body(request)
        return self.store.set_model_archived(p["org"], p["name"], p["model"], False)

    # -- emulator-only -------------------------------------------------------

    def health(self, request: Request, p: dict[str, str]) -> dict[str, Any]:
        """``GET /_emulator/health``: liveness for scripts, no credential needed."""
        self._query(request)
        return {"status": "ok"}

    def blob(self, request: Request, p: dict[str, str]) -> Response:
        """A signed model download (no credential: the signature is the authorization)."""
        self._query(request, ("expires", "signature"))
        self.signer.verify(BLOB_PREFIX + p["model"], request.args)
        path, _size = self.store.model_blob(p["model"])
        response = send_file(
            path,
            request.environ,
            mimetype="application/zip",
            as_attachment=True,
            download_name=f"{p['model']}.zip",
            conditional=True,
            max_age=0,
        )
        del response.headers["Date"]  # the server adds its own; two would be merged
        return response
