"""When to retry a failed API call, and how long to wait first: decided here only.

Modelled on urllib3's ``Retry`` and the Stainless-generated SDKs (OpenAI,
Anthropic): exponential backoff from 0.5 s doubling up to 8 s, with up to 25 %
taken off at random (jitter, so that many jobs hit by the same outage do not
come back in lock step), and a server's ``Retry-After`` honoured but capped so a
confused proxy cannot park a training job for an hour.

What is retried, and why only that:

* connection failures and timeouts (:class:`~abeja_runtime.errors.APIConnectionError`);
* ``429 Too Many Requests``, ``502``, ``503`` and ``504`` (the server or a proxy
  in front of it says "not now"). ``500`` is *not* retried: it usually means a
  bug that a second try repeats, and the public package's habit of retrying it
  on ``POST`` is how it creates duplicate jobs and models.

An *idempotent* call (GET, PATCH, DELETE, archive/unarchive/stop, statistics)
may be retried after any of those. A *create* (definition, version, job, model)
is retried only when the request surely never reached the server
(``APIConnectionError.sent is False``: connection refused, DNS failure, connect
timeout), because any other failure may have happened after the server made the
resource, and a retry would make a second one.

The policy is a small immutable value so that the HTTP transport and the
statistics reporter (which runs its own retry loop around ``max_retry_count=0``
clients) share one set of rules. Its random source and every delay are
injectable, so tests run the whole table in milliseconds.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..config import DEFAULT_MAX_RETRY_COUNT
from ..errors import APIConnectionError, ConfigurationError, HttpError

__all__ = [
    "DEFAULT_BACKOFF_INITIAL",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_JITTER",
    "DEFAULT_RETRY_AFTER_MAX",
    "RETRYABLE_STATUSES",
    "RetryPolicy",
    "parse_retry_after",
]

#: statuses that mean "try again later" rather than "this request is wrong"
RETRYABLE_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})
DEFAULT_BACKOFF_INITIAL = 0.5
DEFAULT_BACKOFF_MAX = 8.0
DEFAULT_JITTER = 0.25
DEFAULT_RETRY_AFTER_MAX = 60.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or ``None``.

    Both forms of RFC 9110 are accepted: delay-seconds (``"120"``; a fraction
    such as ``"1.5"`` is tolerated) and an HTTP-date, which is turned into the
    seconds from ``now`` (never negative). Anything else is ignored rather than
    failing the call, as urllib3 does.

    Args:
        value: the header value, or ``None`` when absent.
        now: the current UNIX time (for tests); ``time.time()`` by default.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _check_non_negative(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"RetryPolicy.{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"RetryPolicy.{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, how often, and after how long.

    Attributes:
        max_retries: retries after the first try (``0`` = never retry).
        backoff_initial: seconds before the first retry (before jitter).
        backoff_max: cap on the exponential delay (before jitter).
        backoff_multiplier: growth factor between retries.
        jitter: fraction in [0, 1] of the delay that may be removed at random
            (``0`` gives exact delays, handy in tests).
        retry_after_max: cap on a server's ``Retry-After``.
        retry_statuses: HTTP statuses that are worth another try.
        random: source of uniform numbers in [0, 1), injectable for tests.
    """

    max_retries: int = DEFAULT_MAX_RETRY_COUNT
    backoff_initial: float = DEFAULT_BACKOFF_INITIAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    backoff_multiplier: float = 2.0
    jitter: float = DEFAULT_JITTER
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    retry_statuses: frozenset[int] = RETRYABLE_STATUSES
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ConfigurationError(
                f"RetryPolicy.max_retries must be an integer >= 0, got {self.max_retries!r}"
            )
        for name in ("backoff_initial", "backoff_max", "backoff_multiplier", "retry_after_max"):
            _check_non_negative(name, getattr(self, name))
        _check_non_negative("jitter", self.jitter)
        if self.jitter > 1:
            raise ConfigurationError(f"RetryPolicy.jitter must be in [0, 1], got {self.jitter!r}")
        object.__setattr__(self, "retry_statuses", frozenset(self.retry_statuses))

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that gives up after the first failure."""
        return cls(max_retries=0)

    def with_max_retries(self, max_retries: int) -> RetryPolicy:
        """A copy with another retry count (the rest unchanged)."""
        return replace(self, max_retries=max_retries)

    def is_retryable(self, error: BaseException, *, idempotent: bool) -> bool:
        """Whether ``error`` is worth another try, ignoring how many were made.

        Args:
            error: what the last try raised.
            idempotent: whether repeating the call cannot change the outcome
                (reads, updates, archive/unarchive/stop, statistics). For a
                create this must be ``False``; it is then retried only when
                the request surely never reached the server.
        """
        if isinstance(error, APIConnectionError):
            return idempotent or not error.sent
        if isinstance(error, HttpError):
            return idempotent and error.status_code in self.retry_statuses
        return False

    def backoff(self, attempt: int) -> float:
        """The jittered exponential delay before retry number ``attempt`` (1-based)."""
        exponent = max(0, attempt - 1)
        try:
            base = self.backoff_initial * self.backoff_multiplier**exponent
        except OverflowError:
            base = self.backoff_max
        base = min(base, self.backoff_max)
        return base * (1.0 - self.jitter * self.random())

    def delay_for(self, attempt: int, error: BaseException, *, idempotent: bool) -> float | None:
        """Seconds to wait before the next try, or ``None`` to give up.

        Args:
            attempt: how many tries have been made so far (1 after the first
                failure); the call is given up once it exceeds ``max_retries``.
            error: what the last try raised.
            idempotent: see :meth:`is_retryable`.

        Returns:
            The server's ``Retry-After`` (capped at ``retry_after_max``) when it
            sent one, else :meth:`backoff` for this attempt; ``None`` when the
            retries are used up or the error is not worth retrying.
        """
        if attempt < 1 or attempt > self.max_retries:
            return None
        if not self.is_retryable(error, idempotent=idempotent):
            return None
        retry_after = getattr(error, "retry_after", None)
        if (
            isinstance(retry_after, (int, float))
            and math.isfinite(retry_after)
            and retry_after >= 0
        ):
            return float(min(retry_after, self.retry_after_max))
        return self.backoff(attempt)
