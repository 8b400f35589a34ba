"""The HTTP transport under :class:`~abeja_runtime.api.client.APIClient`.

What it does differently from the public package, and why:

* **One pooled keep-alive ``requests.Session`` per client.** The public package
  builds a new ``Session`` (and so a new TCP and TLS connection) for every call;
  a training job that reports statistics every few seconds pays a handshake each
  time. One session with a connection pool is safe to share between threads:
  ``urllib3``'s pool is thread-safe and nothing here mutates the session after
  construction.
* **Separate connect and read timeouts** (a ``(connect, read)`` pair), so a
  dead host fails fast while a slow upload response may take its time.
* **Retries decided in one place** (:mod:`abeja_runtime.api.retry`), not by
  ``urllib3.Retry`` inside the adapter: the adapter never retries
  (``max_retries=0``), so a create is never repeated behind our back, and a
  ``Retry-After`` can be honoured with the same rules the statistics reporter uses.
* **Every failure is one of our exceptions.** Status codes map to the
  ``HttpError`` family (with the server's ``error``/``error_description``/
  ``error_detail``); a non-JSON or empty error body still gives a clear
  ``HttpError``; a 2xx whose body is not a JSON object gives
  ``InvalidResponseError``; connection failures become ``APIConnectionError``
  / ``APITimeoutError`` with ``sent`` saying whether the request may have
  reached the server.
* **Secrets stay secret.** The ``Authorization`` header is added by an auth
  hook (never stored in reprs), server text quoted in errors is scrubbed of the
  token, and log lines carry only method, URL, status and timing.
* **The environment is read once.** Proxy (``HTTPS_PROXY``/``NO_PROXY``) and
  CA bundle (``REQUESTS_CA_BUNDLE``) variables are taken when the transport is
  made, not re-read by ``requests`` on every call.
* **Redirects are not followed**: a 3xx from the API is unexpected, and
  following it could send the upload body (or, on the same host, the token)
  somewhere else.
"""

from __future__ import annotations

import contextlib
import http.client
import json as jsonlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
import requests.adapters
import requests.auth
import requests.utils
import urllib3.exceptions

from .._version import __version__
from ..config import DEFAULT_TIMEOUT, Credential, check_api_url, check_duration
from ..errors import (
    AbejaRuntimeError,
    APIConnectionError,
    APITimeoutError,
    BadRequest,
    HttpError,
    InvalidResponseError,
    error_for_status,
)
from .multipart import MultipartBody
from .retry import RetryPolicy, parse_retry_after

__all__ = [
    "USER_AGENT",
    "HttpTransport",
    "Timeout",
    "normalize_timeout",
]

logger = logging.getLogger("abeja_runtime.http")

USER_AGENT = f"abeja-runtime/{__version__}"

#: a single number (used for both) or a ``(connect, read)`` pair, in seconds
Timeout = float | tuple[float, float]

#: how much of a non-JSON body is quoted in an error message
_SNIPPET = 300
_REDACTED = "***"
#: a value shorter than this is not treated as a credential by :meth:`HttpTransport.redact`
#: (no platform credential is that short; masking 2-5 letter values only mangles words)
_MIN_SECRET_LENGTH = 6
#: a match next to one of these is part of a longer word, not the credential itself
_TOKEN_CHARS = "A-Za-z0-9"


def normalize_timeout(
    timeout: Timeout | None, default: float = DEFAULT_TIMEOUT
) -> tuple[float, float]:
    """A ``(connect, read)`` pair from a number, a pair, or ``None`` (the default).

    Raises:
        ConfigurationError: (a ``ValueError``) a value is not a positive finite number.
    """
    if timeout is None:
        return (default, default)
    if isinstance(timeout, tuple):
        if len(timeout) != 2:
            raise ValueError(f"timeout pair must be (connect, read), got {timeout!r}")
        connect, read = timeout
    else:
        connect = read = timeout
    for value in (connect, read):
        check_duration(value, "timeout", positive=True)
    return (float(connect), float(read))


class _CredentialAuth(requests.auth.AuthBase):
    """Adds the ``Authorization`` header at send time.

    Being the session's ``auth`` also stops ``requests`` from consulting
    ``~/.netrc`` (which would replace our header).
    """

    def __init__(self, credential: Credential) -> None:
        self._credential = credential

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._credential.authorization
        return request

    def __repr__(self) -> str:
        return f"<_CredentialAuth {self._credential.scheme}>"


def _never_sent(exc: BaseException) -> bool:
    """True when a ``requests`` connection error surely happened before any byte was sent.

    That is the case for a refused connection, a DNS failure, a connect timeout
    and a failed TLS handshake; a reset or close after connecting (urllib3's
    ``ProtocolError``) may have happened after the server read the request.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, urllib3.exceptions.ProtocolError):
            return False
        if isinstance(
            err,
            (
                urllib3.exceptions.NewConnectionError,
                urllib3.exceptions.ConnectTimeoutError,
                urllib3.exceptions.NameResolutionError,
                urllib3.exceptions.SSLError,
                urllib3.exceptions.ProxyError,
            ),
        ):
            return True
        reason = getattr(err, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
        todo.extend(arg for arg in err.args if isinstance(arg, BaseException))
        for linked in (err.__cause__, err.__context__):
            if linked is not None:
                todo.append(linked)
    return False


def _describe(exc: BaseException) -> str:
    """The innermost useful reason of a ``requests``/``urllib3`` error, as text."""
    reason: BaseException = exc
    for _ in range(5):
        inner = getattr(reason, "reason", None)
        if isinstance(inner, BaseException):
            reason = inner
            continue
        args = [a for a in reason.args if isinstance(a, BaseException)]
        if args:
            reason = args[0]
            continue
        break
    text = str(reason) or type(reason).__name__
    return f"{type(reason).__name__}: {text}" if type(reason).__name__ not in text else text


class HttpTransport:
    """Sends API requests with auth, timeouts, retries and error mapping.

    Thread-safe: one instance may be used by many threads at once.

    Args:
        base_url: the API root, e.g. ``https://api.abeja.io`` (no trailing slash).
        credential: how to authenticate, or ``None`` to send no ``Authorization``.
        timeout: seconds, one number for both or a ``(connect, read)`` pair.
        retry: the retry policy (the default :class:`RetryPolicy` when ``None``).
        pool_maxsize: connections kept open per host (the most threads that
            can talk to the API at once without opening extra connections).
        sleep: how to wait between retries (injectable for tests).
    """

    def __init__(
        self,
        base_url: str,
        credential: Credential | None = None,
        *,
        timeout: Timeout | None = None,
        retry: RetryPolicy | None = None,
        pool_maxsize: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # the one URL check again: a transport made directly (the reporter's) must not
        # carry a password in the URL it prints with every error
        self.base_url = check_api_url(base_url, "base_url")
        self.credential = credential
        self.timeout = normalize_timeout(timeout)
        self.retry = retry if retry is not None else RetryPolicy()
        self._sleep = sleep
        self._closed = False
        self._lock = threading.Lock()
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=2, pool_maxsize=pool_maxsize, max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        # Proxy and CA-bundle variables are read once, here, like every other
        # setting: with trust_env on, requests re-reads the whole environment
        # (and ~/.netrc) on every call, a third of the cost of a small call.
        session.trust_env = False
        session.proxies.update(requests.utils.get_environ_proxies(self.base_url))
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if ca_bundle:
            session.verify = ca_bundle  # still verifying, against the given CAs
        if credential is not None:
            session.auth = _CredentialAuth(credential)
        self._session = session
        self._secrets = self._secret_strings(credential)

    @staticmethod
    def _secret_strings(credential: Credential | None) -> re.Pattern[str] | None:
        """One pattern matching the secret and its header forms as whole tokens."""
        if credential is None:
            return None
        header = credential.authorization
        values = {credential.secret, header, header.split(" ", 1)[-1]}
        # Longest first, so the full header is masked rather than the secret inside it.
        ordered = sorted(values, key=len, reverse=True)
        alternatives = "|".join(re.escape(v) for v in ordered if len(v) >= _MIN_SECRET_LENGTH)
        if not alternatives:
            return None
        return re.compile(rf"(?<![{_TOKEN_CHARS}])(?:{alternatives})(?![{_TOKEN_CHARS}])")

    def redact(self, text: str) -> str:
        """``text`` with the credential's secret (and header forms of it) masked.

        Only whole credentials are masked (not a run of the same letters inside a
        longer word), and only values long enough to be one: a substring
        replacement with a one-letter token turned "NewConnectionError" into
        "NewConnec***ionError" while hiding nothing.
        """
        if self._secrets is None:
            return text
        return self._secrets.sub(_REDACTED, text)

    def _redact_value(self, value: Any) -> Any:
        """``value`` (a JSON value) with :meth:`redact` applied to every string in it."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self._redact_value(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._redact_value(item) for item in value]
        return value

    @property
    def auth_scheme(self) -> str:
        """``"bearer"``, ``"basic"`` or ``"none"`` (safe to show)."""
        return self.credential.scheme if self.credential is not None else "none"

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def close(self) -> None:
        """Close the pooled connections. Later requests raise an error."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._session.close()

    def __repr__(self) -> str:
        return f"<HttpTransport {self.base_url} auth={self.auth_scheme}>"

    # ------------------------------------------------------------------ request

    def url_for(self, path: str) -> str:
        """The absolute URL of an API path (which must start with ``/``)."""
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
            raise BadRequest(
                "invalid_argument",
                f"path must be a string starting with a single '/', got {path!r}",
                status_code=400,
            )
        return self.base_url + path

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: bytes | str | MultipartBody | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        timeout: Timeout | None = None,
    ) -> dict[str, Any]:
        """Send one API call (retrying per the policy) and return its JSON object.

        Args:
            method: HTTP method.
            path: path under the base URL, starting with ``/`` (already quoted).
            params: query parameters (``None`` values are left out).
            json: a value sent as a JSON body (strict JSON: no NaN/Infinity).
            data: a raw body, or a :class:`MultipartBody` (streamed).
            headers: extra headers.
            idempotent: whether the call may be repeated after a failure that
                may have reached the server (see :mod:`abeja_runtime.api.retry`).
            timeout: overrides the transport's timeout for this call.

        Raises:
            HttpError: the server answered with an error status (a subclass per status).
            InvalidResponseError: a 2xx answer whose body is not a JSON object.
            APIConnectionError: the server could not be reached (``APITimeoutError``
                for timeouts).
            BadRequest: the body cannot be sent as JSON (refused before sending).
        """
        if self._closed:
            raise AbejaRuntimeError("this API client is closed")
        method = method.upper()
        url = self.url_for(path)
        send_headers: dict[str, str] = dict(headers or {})
        body: Any = data
        if json is not None and data is not None:
            raise BadRequest(
                "invalid_argument", "give either json or data, not both", status_code=400
            )
        if json is not None:
            try:
                body = jsonlib.dumps(json, allow_nan=False).encode("utf-8")
            except (TypeError, ValueError) as exc:
                raise BadRequest(
                    "invalid_argument",
                    f"request body is not strict JSON: {exc}",
                    status_code=400,
                ) from None
            send_headers.setdefault("Content-Type", "application/json")
        elif isinstance(data, MultipartBody):
            send_headers.setdefault("Content-Type", data.content_type)
            send_headers["Content-Length"] = str(data.content_length)
        elif isinstance(data, str):
            body = data.encode("utf-8")
        pair = normalize_timeout(timeout, self.timeout[1]) if timeout is not None else self.timeout
        query = {k: v for k, v in (params or {}).items() if v is not None} or None

        attempt = 0
        while True:
            attempt += 1
            try:
                return self._send_once(method, url, query, body, send_headers, pair)
            except (HttpError, APIConnectionError) as exc:
                delay = self.retry.delay_for(attempt, exc, idempotent=idempotent)
                if delay is None or self._closed:
                    raise
                logger.info(
                    "%s %s failed (%s); retry %d/%d in %.2fs",
                    method,
                    url,
                    _short(exc),
                    attempt,
                    self.retry.max_retries,
                    delay,
                )
                self._sleep(delay)

    def _send_once(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        body: Any,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
    ) -> dict[str, Any]:
        started = time.monotonic()
        try:
            response = self._session.request(
                method,
                url,
                params=params,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            error = self._connection_error(exc, method, url, timeout)
            logger.debug("%s %s -> %s after %.3fs", method, url, _short(error), _since(started))
            raise error from exc
        logger.debug("%s %s -> %d in %.3fs", method, url, response.status_code, _since(started))
        try:
            return self._parse(response, url)
        finally:
            response.close()

    def _connection_error(
        self,
        exc: requests.exceptions.RequestException,
        method: str,
        url: str,
        timeout: tuple[float, float],
    ) -> APIConnectionError:
        reason = self.redact(_describe(exc))
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return APITimeoutError(
                f"{method} {url}: could not connect within {timeout[0]:g}s ({reason})",
                url=url,
                sent=False,
            )
        if isinstance(exc, requests.exceptions.Timeout):
            return APITimeoutError(
                f"{method} {url}: no response within {timeout[1]:g}s ({reason})",
                url=url,
                sent=True,
            )
        if isinstance(exc, requests.exceptions.ConnectionError):
            sent = not _never_sent(exc)
            what = "connection failed" if sent else "cannot connect"
            return APIConnectionError(f"{method} {url}: {what} ({reason})", url=url, sent=sent)
        return APIConnectionError(f"{method} {url}: request failed ({reason})", url=url, sent=True)

    # ----------------------------------------------------------------- response

    def _parse(self, response: requests.Response, url: str) -> dict[str, Any]:
        status = response.status_code
        if 200 <= status < 300:
            if status == 204:
                return {}
            content = response.content
            if not content.strip():
                raise InvalidResponseError(
                    "invalid_response",
                    f"the server answered {status} with an empty body; expected a JSON object",
                    status_code=status,
                    url=url,
                )
            try:
                value = jsonlib.loads(content)
            except ValueError:
                raise InvalidResponseError(
                    "invalid_response",
                    "expected a JSON object, got " + self._body_summary(response),
                    status_code=status,
                    url=url,
                ) from None
            if not isinstance(value, dict):
                raise InvalidResponseError(
                    "invalid_response",
                    f"expected a JSON object, got a JSON {type(value).__name__}",
                    status_code=status,
                    url=url,
                )
            return value
        raise self._error(response, url)

    def _body_summary(self, response: requests.Response) -> str:
        content_type = response.headers.get("Content-Type") or "no Content-Type"
        text = response.content[:_SNIPPET].decode("utf-8", "replace")
        text = self.redact(" ".join(text.split()))
        more = "..." if len(response.content) > _SNIPPET else ""
        return f"{content_type}, {len(response.content)} bytes: {text!r}{more}"

    def _error(self, response: requests.Response, url: str) -> HttpError:
        status = response.status_code
        reason = http.client.responses.get(status, "unknown")
        cls = error_for_status(status)
        headers = response.headers
        retry_after = parse_retry_after(headers.get("Retry-After"))
        retry_after_ms = headers.get("Retry-After-Ms")
        if retry_after_ms is not None:
            with contextlib.suppress(ValueError):
                retry_after = max(0.0, float(retry_after_ms) / 1000.0)
        if 300 <= status < 400:
            location = headers.get("Location", "")
            return cls(
                reason,
                f"unexpected redirect to {location.split('?', 1)[0] or '(no Location)'}",
                status_code=status,
                url=url,
                retry_after=retry_after,
            )
        content = response.content
        payload: Any = None
        if content.strip():
            try:
                payload = jsonlib.loads(content)
            except ValueError:
                payload = None
        if isinstance(payload, dict):
            error = payload.get("error")
            description = payload.get("error_description")
            return cls(
                self.redact(str(error)) if error is not None else reason,
                self.redact(str(description))
                if description is not None
                else self.redact(content[: _SNIPPET * 4].decode("utf-8", "replace")),
                error_detail=self._redact_value(payload.get("error_detail")),
                status_code=status,
                url=url,
                retry_after=retry_after,
            )
        if not content.strip():
            description = f"the server answered {status} with an empty body"
        else:
            description = (
                f"the server answered {status} with a non-JSON body: "
                + self._body_summary(response)
            )
        return cls(reason, description, status_code=status, url=url, retry_after=retry_after)


def _since(started: float) -> float:
    return time.monotonic() - started


def _short(exc: BaseException) -> str:
    if isinstance(exc, HttpError):
        return f"{exc.status_code} {exc.error}"
    return f"{type(exc).__name__}"
