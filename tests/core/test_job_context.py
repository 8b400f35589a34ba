"""JobContext.from_env and rank detection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from abeja_runtime.config import Credential
from abeja_runtime.errors import ConfigurationError, JobContextError
from abeja_runtime.job import REQUIRED_ENV, JobContext, RankInfo, rank_info

TOKEN = "very-secret-job-token-42"


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


def test_from_env_reads_every_field() -> None:
    env = job_env(
        ABEJA_TRAINING_RESULT_DIR="/tmp/results",
        ABEJA_STORAGE_DIR_PATH="/tmp/storage",
        HANDLER="train:handler",
        DATASETS=json.dumps({"train": "1111111111111", "val": 2222222222222}),
        CONTEXT=json.dumps({"lr": 0.1, "datasets": "overwritten"}),
    )
    ctx = JobContext.from_env(env)
    assert ctx.organization_id == "1102940376065"
    assert ctx.job_definition_name == "mnist"
    assert ctx.job_definition_version == 3
    assert ctx.training_job_id == "1443722127663"
    assert ctx.api_url == "http://127.0.0.1:8080"
    assert ctx.credential == Credential.bearer(TOKEN)
    assert ctx.result_dir == Path("/tmp/results")
    assert ctx.storage_dir == Path("/tmp/storage")
    assert ctx.handler == "train:handler"
    assert ctx.datasets == {"train": "1111111111111", "val": "2222222222222"}
    assert ctx.context == {"lr": 0.1, "datasets": ctx.datasets}
    assert ctx.rank_info == RankInfo()
    assert ctx.is_main_process and ctx.world_size == 1


def test_defaults_for_optional_variables() -> None:
    env = job_env()
    del env["ABEJA_API_URL"]
    ctx = JobContext.from_env(env)
    assert ctx.result_dir == Path(".")
    assert ctx.storage_dir is None
    assert ctx.handler is None
    assert ctx.datasets == {}
    assert ctx.context == {"datasets": {}}
    assert ctx.api_url == "https://api.abeja.io"


def test_missing_variables_are_all_named_at_once() -> None:
    with pytest.raises(JobContextError) as info:
        JobContext.from_env({})
    err = info.value
    assert err.missing == list(REQUIRED_ENV)
    message = str(err)
    for name in REQUIRED_ENV:
        assert name in message
    assert "abeja-runtime run train:handler" in message
    assert "Emulator" in message


def test_malformed_and_missing_are_reported_together() -> None:
    env = job_env(
        ABEJA_ORGANIZATION_ID="123",
        TRAINING_JOB_DEFINITION_VERSION="one",
        DATASETS="[1, 2]",
        CONTEXT="{not json",
        HANDLER="train.handler",
        RANK="x",
    )
    del env["TRAINING_JOB_ID"]
    with pytest.raises(JobContextError) as info:
        JobContext.from_env(env)
    err = info.value
    assert err.missing == ["TRAINING_JOB_ID"]
    assert set(err.invalid) == {
        "ABEJA_ORGANIZATION_ID",
        "TRAINING_JOB_DEFINITION_VERSION",
        "DATASETS",
        "CONTEXT",
        "HANDLER",
        "RANK",
    }
    assert "13 digits" in err.invalid["ABEJA_ORGANIZATION_ID"]
    assert "{not json" not in str(err)  # the value may hold user parameters


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRAINING_JOB_ID", "14437221276630"),
        ("TRAINING_JOB_ID", "abcdefghijklm"),
        ("TRAINING_JOB_DEFINITION_VERSION", "0"),
        ("ABEJA_API_URL", "ftp://example"),
        ("DATASETS", json.dumps({"train": {"id": 1}})),
    ],
)
def test_each_malformed_value_is_refused(name: str, value: str) -> None:
    with pytest.raises(JobContextError) as info:
        JobContext.from_env(job_env(**{name: value}))
    assert list(info.value.invalid) == [name]


def test_token_never_appears_in_repr_or_errors() -> None:
    ctx = JobContext.from_env(job_env())
    assert TOKEN not in repr(ctx)
    assert TOKEN not in str(ctx)
    with pytest.raises(JobContextError) as info:
        JobContext.from_env(job_env(TRAINING_JOB_ID="bad"))
    assert TOKEN not in str(info.value)


def test_is_available_and_looks_like_job() -> None:
    assert JobContext.is_available(job_env())
    assert not JobContext.is_available({})
    assert not JobContext.looks_like_job({})
    broken = job_env(TRAINING_JOB_ID="bad")
    assert not JobContext.is_available(broken)
    assert JobContext.looks_like_job(broken)


def test_user_credential_is_accepted_instead_of_a_token() -> None:
    env = job_env()
    del env["PLATFORM_AUTH_TOKEN"]
    env["ABEJA_PLATFORM_USER_ID"] = "1234"
    env["ABEJA_PLATFORM_PERSONAL_ACCESS_TOKEN"] = "pat"
    assert JobContext.from_env(env).credential == Credential.user("1234", "pat")


def test_as_env_round_trips() -> None:
    ctx = JobContext.from_env(
        job_env(DATASETS='{"a": "1111111111111"}', CONTEXT='{"x": 1}', HANDLER="m:f")
    )
    assert JobContext.from_env(ctx.as_env()) == ctx


def test_context_is_a_job_error_and_a_configuration_error() -> None:
    assert issubclass(JobContextError, ConfigurationError)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, RankInfo(0, 0, 1, None)),
        ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"}, RankInfo(3, 1, 4, "torchrun")),
        ({"RANK": "0", "WORLD_SIZE": "2"}, RankInfo(0, 0, 2, "torchrun")),
        (
            {
                "OMPI_COMM_WORLD_RANK": "2",
                "OMPI_COMM_WORLD_LOCAL_RANK": "0",
                "OMPI_COMM_WORLD_SIZE": "8",
            },
            RankInfo(2, 0, 8, "openmpi"),
        ),
        ({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2"}, RankInfo(1, 1, 2, "horovod")),
        ({"PMI_RANK": "5", "PMI_SIZE": "6"}, RankInfo(5, 5, 6, "mpich")),
        (
            {"SLURM_PROCID": "7", "SLURM_LOCALID": "3", "SLURM_NTASKS": "8"},
            RankInfo(7, 3, 8, "slurm"),
        ),
        # torchrun inside a SLURM allocation: the torchrun variables win
        ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0"}, RankInfo(1, 1, 2, "torchrun")),
    ],
)
def test_rank_info(env: dict[str, str], expected: RankInfo) -> None:
    assert rank_info(env) == expected
    assert rank_info(env).is_main == (expected.rank == 0)


@pytest.mark.parametrize(
    "env",
    [
        {"RANK": "-1"},
        {"RANK": "one"},
        {"RANK": "2", "WORLD_SIZE": "2"},
        {"RANK": "0", "WORLD_SIZE": "x"},
    ],
)
def test_malformed_rank_is_an_error(env: dict[str, str]) -> None:
    with pytest.raises(JobContextError):
        rank_info(env)


def test_rank_in_job_context() -> None:
    ctx = JobContext.from_env(job_env(RANK="1", LOCAL_RANK="1", WORLD_SIZE="2"))
    assert (ctx.rank, ctx.local_rank, ctx.world_size) == (1, 1, 2)
    assert not ctx.is_main_process
