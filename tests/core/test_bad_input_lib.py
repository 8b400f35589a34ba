"""Bad input to the library: the job environment, client ids and settings, secrets, ranks.

Each value here was accepted (or mangled a message) before: refused now, with an error
naming the variable or argument, before any request, and with no secret in any message.
"""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from abeja_runtime import config
from abeja_runtime.api.client import APIClient
from abeja_runtime.config import check_api_url, check_duration
from abeja_runtime.errors import (
    APIConnectionError,
    BadRequest,
    ConfigurationError,
    JobContextError,
)
from abeja_runtime.job import JobContext, rank_info
from abeja_runtime.statistics.reporter import StatisticsReporter
from abeja_runtime.statistics.sinks import MemorySink
from abeja_runtime.validators import check_id, check_name, check_version

from tests.support.client_support import JOB, ORG, make_client

TOKEN = "tok-SeCrEt-4f9c2a7e1b"


def job_env(**overrides: str) -> dict[str, str]:
    env = {
        "ABEJA_ORGANIZATION_ID": "1102940376065",
        "TRAINING_JOB_DEFINITION_NAME": "mnist",
        "TRAINING_JOB_DEFINITION_VERSION": "3",
        "TRAINING_JOB_ID": "1443722127663",
        "PLATFORM_AUTH_TOKEN": TOKEN,
        "ABEJA_API_URL": "http://127.0.0.1:8080/",
    }
    env.update(overrides)
    return env


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- job environment


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PLATFORM_AUTH_TOKEN", "   "),
        ("PLATFORM_AUTH_TOKEN", " tok-with-spaces "),
        ("TRAINING_JOB_DEFINITION_NAME", "../../etc"),
        ("TRAINING_JOB_DEFINITION_NAME", "a/b"),
        ("TRAINING_JOB_DEFINITION_NAME", ".."),
        ("TRAINING_JOB_DEFINITION_NAME", "mnist\n"),
        ("TRAINING_JOB_DEFINITION_NAME", "mn\tist"),
        ("TRAINING_JOB_DEFINITION_VERSION", "\uff11"),  # a full-width 1
        ("ABEJA_API_URL", "http://"),
        ("ABEJA_API_URL", "https://host?x=1"),
        ("ABEJA_API_URL", "https://host:99999"),
        ("ABEJA_API_URL", "https://host#frag"),
        ("ABEJA_API_URL", "https://user:hunter2secret@host"),
    ],
)
def test_job_environment_refuses(name: str, value: str) -> None:
    with pytest.raises(JobContextError) as info:
        JobContext.from_env(job_env(**{name: value}))
    assert name in info.value.invalid, info.value
    assert name in str(info.value)
    assert not JobContext.is_available(job_env(**{name: value}))
    # secrets are never echoed
    assert "hunter2secret" not in str(info.value)
    assert TOKEN not in str(info.value)


def test_a_good_environment_still_reads() -> None:
    ctx = JobContext.from_env(job_env(TRAINING_JOB_DEFINITION_NAME="mnist-v2_x.1"))
    assert ctx.job_definition_name == "mnist-v2_x.1"
    assert ctx.api_url == "http://127.0.0.1:8080"


# ------------------------------------------------------------------------- ranks


@pytest.mark.parametrize(
    ("env", "rank", "main"),
    [
        ({"LOCAL_RANK": "1"}, 1, False),
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, 1, False),
        ({"LOCAL_RANK": "3", "WORLD_SIZE": "4"}, 3, False),
        ({"OMPI_COMM_WORLD_LOCAL_RANK": "2"}, 2, False),
    ],
)
def test_only_local_rank_set(env: dict[str, str], rank: int, main: bool) -> None:
    info = rank_info(env)
    assert (info.rank, info.local_rank, info.is_main) == (rank, rank, main)
    assert info.world_size > rank


def test_only_local_rank_set_is_malformed() -> None:
    with pytest.raises(JobContextError):
        rank_info({"LOCAL_RANK": "one"})


def test_local_rank_1_posts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HOROVOD_RANK", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    sink = MemorySink()
    reporter = StatisticsReporter(sink=sink, min_interval=0)
    try:
        reporter.report(epoch=1, epoch_end=True)
        assert reporter.flush(5)
        assert sink.documents == []
        assert "rank 1" in (reporter.disabled_reason or "")
    finally:
        reporter.close()


# ---------------------------------------------------------------------- client ids


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_training_job(ORG, "mnist", "abc"),
        lambda c: c.get_training_job(ORG, "mnist", "12345"),
        lambda c: c.get_training_job(ORG, "mnist", "1234567890123456789"),
        lambda c: c.get_training_job(ORG, "mnist", "\uff11" * 13),
        lambda c: c.stop_training_job(ORG, "mnist", "abc"),
        lambda c: c.get_training_model(ORG, "mnist", "notanid"),
        lambda c: c.get_training_jobs("123", "mnist"),
        lambda c: c.create_training_job(ORG, "mnist", 1, datasets={"train": "notanid"}),
        lambda c: c.create_training_job(ORG, "mnist", 1, datasets={"train": 12345}),
        lambda c: c.update_statistics(ORG, "mnist", "1", {"epoch": 1}),
    ],
)
def test_bad_ids_are_refused_before_any_request(server: HTTPServer, call: Any) -> None:
    client = make_client(server)
    with pytest.raises(BadRequest) as info:
        call(client)
    assert info.value.status_code == 400
    assert server.log == []


def test_validators_accept_what_the_platform_gives() -> None:
    assert check_id(1102940376065, "x") == "1102940376065"
    assert check_id(JOB, "x") == JOB
    assert check_name("mnist-v2_x.1", "x") == "mnist-v2_x.1"
    assert check_version("12", "x") == 12
    for bad in (True, 12.0, None, "", " 1102940376065"):
        with pytest.raises(ConfigurationError):
            check_id(bad, "x")


# ----------------------------------------------------------------------- settings


@pytest.mark.parametrize("timeout", [float("inf"), (1.0, float("inf"))])
def test_client_timeout_is_a_configuration_error(timeout: Any) -> None:
    with pytest.raises(ConfigurationError, match="timeout"):
        APIClient({"auth_token": TOKEN}, timeout=timeout, base_url="http://127.0.0.1:1")


def test_duration_check() -> None:
    assert check_duration(0, "d") == 0.0
    assert check_duration(2.5, "d", positive=True) == 2.5
    for bad in (-1, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ConfigurationError, match=r"^d "):
            check_duration(bad, "d")
    with pytest.raises(ConfigurationError):
        check_duration(0, "d", positive=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://",
        "https://",
        "https://host?x=1",
        "https://host/?",
        "https://host#x",
        "https://host:99999",
        "https://host:",
        "https://ho st",
        "https://user:hunter2secret@host",
    ],
)
def test_api_url_check(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        APIClient({"auth_token": TOKEN}, base_url=url)
    assert "base_url" in str(info.value)
    assert "hunter2secret" not in str(info.value)


def test_api_url_check_keeps_good_urls() -> None:
    assert check_api_url("https://api.abeja.io/", "u") == "https://api.abeja.io"
    assert check_api_url("http://127.0.0.1:8080/prefix", "u") == "http://127.0.0.1:8080/prefix"
    assert check_api_url("http://[::1]:8080", "u") == "http://[::1]:8080"


# ------------------------------------------------------------------------ secrets


def test_password_in_the_url_is_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://user:hunter2secret@127.0.0.1:{closed_port()}"
    monkeypatch.setenv("ABEJA_API_URL", url)
    with pytest.raises(ConfigurationError) as info:
        APIClient({"auth_token": TOKEN})
    assert "hunter2secret" not in str(info.value)
    assert "***@127.0.0.1" in str(info.value)
    assert config.ENV_API_URL in str(info.value)


@pytest.mark.parametrize("token", ["t", "e", "Co", "ion", "Error"])
def test_redaction_leaves_words_intact(token: str) -> None:
    """A short credential is not a reason to mangle every message that contains its letters."""
    client = APIClient(
        {"auth_token": token}, base_url=f"http://127.0.0.1:{closed_port()}", max_retry_count=0
    )
    with pytest.raises(APIConnectionError) as info:
        client.get_training_job_definitions(ORG)
    text = str(info.value)
    assert "***" not in text, text
    assert re.search(r"NewConnectionError|Connection refused|Errno", text), text


def test_whole_credential_is_redacted(server: HTTPServer) -> None:
    token = "Connection"  # a whole word inside "NewConnectionError"
    server.expect_request(re.compile(".*")).respond_with_json(
        {"error": "unauthorized", "error_description": f"bad token {token}; NewConnectionError"},
        status=401,
    )
    client = make_client(server, credential={"auth_token": token})
    with pytest.raises(Exception) as info:
        client.get_training_job_definitions(ORG)
    text = str(info.value)
    assert "bad token ***; NewConnectionError" in text, text


def test_transport_made_directly_refuses_a_password_in_its_url() -> None:
    from abeja_runtime.api.transport import HttpTransport

    with pytest.raises(ConfigurationError) as info:
        HttpTransport(f"http://user:hunter2secret@127.0.0.1:{closed_port()}")
    assert "hunter2secret" not in str(info.value)
