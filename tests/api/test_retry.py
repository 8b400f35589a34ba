"""The retry rules as a table: what is retried, how often, and after how long."""

from __future__ import annotations

import email.utils

import pytest

from abeja_runtime.api.retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after
from abeja_runtime.errors import (
    APIConnectionError,
    APITimeoutError,
    BadRequest,
    ConfigurationError,
    Conflict,
    HttpError,
    InternalServerError,
    InvalidResponseError,
    NotFound,
    StatisticsError,
    Unauthorized,
)


def http(status: int, retry_after: float | None = None) -> HttpError:
    cls = {
        400: BadRequest,
        401: Unauthorized,
        404: NotFound,
        409: Conflict,
        500: InternalServerError,
    }
    return cls.get(status, HttpError)(
        "e", "d", status_code=status, url="http://127.0.0.1/x", retry_after=retry_after
    )


REFUSED = APIConnectionError("refused", sent=False)
RESET = APIConnectionError("reset", sent=True)
CONNECT_TIMEOUT = APITimeoutError("connect timeout", sent=False)
READ_TIMEOUT = APITimeoutError("read timeout", sent=True)

# (error, retried when idempotent, retried for a create)
TABLE = [
    (REFUSED, True, True),
    (CONNECT_TIMEOUT, True, True),
    (RESET, True, False),
    (READ_TIMEOUT, True, False),
    (http(429), True, False),
    (http(502), True, False),
    (http(503), True, False),
    (http(504), True, False),
    (http(500), False, False),
    (http(400), False, False),
    (http(401), False, False),
    (http(404), False, False),
    (http(409), False, False),
    (http(501), False, False),
    (InvalidResponseError("invalid_response", "html", status_code=200), False, False),
    (StatisticsError("bad value"), False, False),
    (ValueError("not ours"), False, False),
    (KeyboardInterrupt(), False, False),
]


@pytest.mark.parametrize(("error", "idempotent_ok", "create_ok"), TABLE, ids=repr)
def test_retry_table(error: BaseException, idempotent_ok: bool, create_ok: bool) -> None:
    policy = RetryPolicy(jitter=0)
    assert policy.is_retryable(error, idempotent=True) is idempotent_ok
    assert policy.is_retryable(error, idempotent=False) is create_ok
    assert (policy.delay_for(1, error, idempotent=True) is not None) is idempotent_ok
    assert (policy.delay_for(1, error, idempotent=False) is not None) is create_ok


def test_retryable_statuses_are_exactly_the_documented_ones() -> None:
    assert frozenset({429, 502, 503, 504}) == RETRYABLE_STATUSES


def test_exponential_backoff_without_jitter_is_exact_and_capped() -> None:
    policy = RetryPolicy(max_retries=10, backoff_initial=0.5, backoff_max=8.0, jitter=0)
    delays = [policy.delay_for(n, http(503), idempotent=True) for n in range(1, 9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]


def test_jitter_takes_off_at_most_its_fraction() -> None:
    low = RetryPolicy(jitter=0.25, random=lambda: 0.999999)
    high = RetryPolicy(jitter=0.25, random=lambda: 0.0)
    for attempt in (1, 2, 3):
        base = min(0.5 * 2 ** (attempt - 1), 8.0)
        assert high.backoff(attempt) == pytest.approx(base)
        assert low.backoff(attempt) == pytest.approx(base * 0.75, rel=1e-4)


def test_default_jitter_varies_delays() -> None:
    policy = RetryPolicy()
    delays = {policy.backoff(3) for _ in range(50)}
    assert len(delays) > 1
    assert all(1.5 <= d <= 2.0 for d in delays)


def test_gives_up_after_max_retries() -> None:
    policy = RetryPolicy(max_retries=2, jitter=0)
    assert policy.delay_for(1, REFUSED, idempotent=True) is not None
    assert policy.delay_for(2, REFUSED, idempotent=True) is not None
    assert policy.delay_for(3, REFUSED, idempotent=True) is None
    assert policy.delay_for(0, REFUSED, idempotent=True) is None


def test_zero_retries_means_never() -> None:
    for policy in (RetryPolicy(max_retries=0), RetryPolicy.never()):
        assert policy.delay_for(1, REFUSED, idempotent=True) is None
        assert policy.delay_for(1, http(503), idempotent=True) is None
        # the rule itself still says what would be worth retrying
        assert policy.is_retryable(http(503), idempotent=True)


def test_retry_after_is_honoured_and_capped() -> None:
    policy = RetryPolicy(jitter=0, retry_after_max=30)
    assert policy.delay_for(1, http(503, retry_after=3), idempotent=True) == 3
    assert policy.delay_for(4, http(429, retry_after=0), idempotent=True) == 0
    assert policy.delay_for(1, http(503, retry_after=3600), idempotent=True) == 30
    # Retry-After does not make an unretryable error retryable
    assert policy.delay_for(1, http(500, retry_after=1), idempotent=True) is None
    assert policy.delay_for(1, http(503, retry_after=1), idempotent=False) is None


def test_with_max_retries_keeps_the_rest() -> None:
    policy = RetryPolicy(backoff_initial=0.01, jitter=0).with_max_retries(1)
    assert policy.max_retries == 1
    assert policy.backoff(1) == 0.01


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_retries": -1},
        {"max_retries": 1.5},
        {"max_retries": True},
        {"backoff_initial": -1},
        {"backoff_max": float("nan")},
        {"jitter": 1.5},
        {"retry_after_max": float("inf")},
    ],
)
def test_bad_policy_values_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_repr_is_readable() -> None:
    assert "max_retries=5" in repr(RetryPolicy())


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("7", 7.0),
        (" 2 ", 2.0),
        ("1.5", 1.5),
        ("-3", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    later = email.utils.formatdate(now + 90, usegmt=True)
    earlier = email.utils.formatdate(now - 90, usegmt=True)
    assert parse_retry_after(later, now=now) == pytest.approx(90, abs=1)
    assert parse_retry_after(earlier, now=now) == 0.0
