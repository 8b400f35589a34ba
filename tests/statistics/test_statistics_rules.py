"""One set of statistics rules: what the client refuses at the call is what the server refuses.

Each bad value a user reported in the field ("51%" as an accuracy, a bool loss, an empty
stage name, a document over 1 MiB, an integer JSON cannot carry, ``epoch`` past
``num_epochs``) is refused by ``Statistics``, ``check_document`` and
``APIClient.update_statistics`` before any request, and the emulator (the server's rules)
refuses the same document when it is sent raw.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import requests

from abeja_runtime import APIClient, Statistics
from abeja_runtime.emulator import Emulator
from abeja_runtime.errors import StatisticsError
from abeja_runtime.jsonsafe import to_json_safe
from abeja_runtime.statistics_rules import (
    MAX_DOCUMENT_BYTES,
    body_size,
    check_document,
    check_metric,
    check_value,
    check_wire_document,
    size_bound,
)

BIG_TEXT = "x" * (MAX_DOCUMENT_BYTES + 10)

# (id, document): each is refused by the platform's rules
BAD_DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    ("accuracy-percent-string", {"stages": {"train": {"loss": 0.5, "accuracy": "51%"}}}),
    ("accuracy-true", {"stages": {"train": {"accuracy": True}}}),
    ("loss-list", {"stages": {"train": {"loss": [0.1]}}}),
    ("loss-dict", {"stages": {"validation": {"loss": {"a": 1}}}}),
    ("loss-np-bool", {"stages": {"train": {"loss": np.bool_(True)}}}),
    ("empty-stage-name", {"stages": {"": {"loss": 0.1}}}),
    ("control-char-stage-name", {"stages": {"tr\nain": {"loss": 0.1}}}),
    ("over-1-mib", {"notes": BIG_TEXT}),
    ("int-over-4300-digits", {"big": 10**4400}),
    ("int-over-double-range", {"stages": {"train": {"loss": 2**1100}}}),
    ("epoch-past-num-epochs", {"epoch": 5, "num_epochs": 3}),
    ("progress-over-one", {"progress_percentage": 1.5}),
    ("negative-epoch", {"epoch": -1}),
]


def _python_form_refused(document: dict[str, Any]) -> None:
    with pytest.raises(StatisticsError):
        check_document(document)


@pytest.mark.parametrize(("name", "document"), BAD_DOCUMENTS, ids=[n for n, _ in BAD_DOCUMENTS])
def test_bad_documents_are_refused_at_the_call(name: str, document: dict[str, Any]) -> None:
    _python_form_refused(document)


@pytest.mark.parametrize(
    "metric",
    ["51%", True, False, np.bool_(False), [0.1], {"v": 1}, "", "nan"],
    ids=repr,
)
def test_add_stage_refuses_what_the_platform_refuses_as_a_metric(metric: Any) -> None:
    statistics = Statistics(num_epochs=3, epoch=1)
    with pytest.raises(StatisticsError, match=r"stages\.train"):
        statistics.add_stage("train", accuracy=metric)
    with pytest.raises(StatisticsError, match=r"stages\.train"):
        statistics.add_stage("train", loss=metric)
    assert statistics.stages == {}  # nothing half-added


def test_statistics_refuses_the_rest_at_the_call() -> None:
    with pytest.raises(StatisticsError, match="greater than num_epochs"):
        Statistics(num_epochs=3, epoch=4)
    with pytest.raises(StatisticsError, match="empty"):
        Statistics().add_stage("", loss=0.1)
    with pytest.raises(StatisticsError, match="too large for a JSON number"):
        Statistics(big=10**4400)
    statistics = Statistics(notes=BIG_TEXT)
    with pytest.raises(StatisticsError, match="over the limit"):
        statistics.get_statistics()


def test_good_values_pass_and_nonfinite_strings_are_numbers() -> None:
    document = {
        "epoch": 3,
        "num_epochs": 3,
        "progress_percentage": 1,
        "stages": {"train": {"loss": float("nan"), "accuracy": np.float32(0.5)}},
        "text": "51%",  # a formatted value is fine under another key
        "flag": np.bool_(True),  # and a bool too
        "big": 2**1000,
    }
    checked = check_document(document)
    wire = to_json_safe(checked)
    assert check_wire_document(wire) is wire
    assert wire["stages"]["train"] == {"loss": "NaN", "accuracy": 0.5}
    assert check_metric("Infinity", "x") == "Infinity"


def test_size_bound_is_an_upper_bound_of_the_encoded_size() -> None:
    samples: list[Any] = [
        {"a": 1.0 / 3, "b": -1e-308, "c": 2**1000, "d": "é" * 50, "e": "😀" * 10},
        {"stages": {"train": {"loss": 0.1, "accuracy": None, "x": [1, 2, 3, True]}}},
        ['a\nb"c' * 100, -(2**63), 0, "\x01" * 63],
        "x" * 100_000,
    ]
    for sample in samples:
        assert size_bound({"statistics": sample}) >= body_size(sample)  # type: ignore[arg-type]


def test_size_limit_is_the_encoded_body() -> None:
    fits = {"notes": "x" * (MAX_DOCUMENT_BYTES - 100)}
    assert body_size(fits) <= MAX_DOCUMENT_BYTES
    check_wire_document(fits)
    check_document(fits)
    with pytest.raises(StatisticsError, match="over the limit"):
        check_wire_document({"notes": "x" * MAX_DOCUMENT_BYTES})


def test_check_value_refuses_non_numeric_dtypes_without_reading_them() -> None:
    with pytest.raises(StatisticsError, match="not a JSON number"):
        check_value(np.complex64(1 + 2j), "x")
    with pytest.raises(StatisticsError, match="shape"):
        check_value(np.zeros(3), "x")
    assert check_value(np.int64(3), "x") == 3


def _raw_post(emu: Emulator, env: dict[str, str], body: bytes) -> requests.Response:
    url = (
        f"{emu.url}/organizations/{emu.organization_id}/training/definitions/"
        f"{env['TRAINING_JOB_DEFINITION_NAME']}/jobs/{env['TRAINING_JOB_ID']}/statistics"
    )
    return requests.post(
        url,
        data=body,
        headers={"Authorization": f"Bearer {emu.token}", "Content-Type": "application/json"},
        timeout=30,
    )


def _history(emu: Emulator, env: dict[str, str]) -> list[Any]:
    return emu.statistics_history(env["TRAINING_JOB_DEFINITION_NAME"], env["TRAINING_JOB_ID"])


@pytest.mark.parametrize(("name", "document"), BAD_DOCUMENTS, ids=[n for n, _ in BAD_DOCUMENTS])
def test_client_refuses_before_any_request_and_the_server_refuses_the_same(
    emu: Emulator, name: str, document: dict[str, Any]
) -> None:
    env = emu.create_job("rules")
    client: APIClient = emu.client()
    with pytest.raises(StatisticsError):
        client.update_statistics(
            env["ABEJA_ORGANIZATION_ID"],
            env["TRAINING_JOB_DEFINITION_NAME"],
            env["TRAINING_JOB_ID"],
            document,
        )
    assert _history(emu, env) == []
    # The same document, converted as far as JSON allows and posted raw: the server's
    # rules (the emulator) refuse it too, so the client never refuses what would pass.
    try:
        wire = json.dumps({"statistics": to_json_safe(document)})
    except ValueError:  # Python itself cannot write an integer of over 4,300 digits
        assert name == "int-over-4300-digits"
        return
    response = _raw_post(emu, env, wire.encode())
    assert response.status_code == 400, response.text
    assert _history(emu, env) == []


def test_a_good_document_passes_both(emu: Emulator) -> None:
    env = emu.create_job("rules")
    client = emu.client()
    statistics = Statistics(num_epochs=3, epoch=3, progress_percentage=1.0, text="51%")
    statistics.add_stage("train", loss=float("inf"), accuracy=np.float32(0.25))
    client.update_statistics(
        env["ABEJA_ORGANIZATION_ID"],
        env["TRAINING_JOB_DEFINITION_NAME"],
        env["TRAINING_JOB_ID"],
        statistics,
    )
    [entry] = _history(emu, env)
    assert entry["statistics"]["stages"]["train"] == {"loss": "Infinity", "accuracy": 0.25}


@pytest.mark.framework
def test_torch_bool_and_complex_tensors_are_refused_without_reading_them() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(StatisticsError, match="boolean"):
        check_metric(torch.tensor(True), "stages.train.loss")
    with pytest.raises(StatisticsError, match="not a JSON number"):
        check_value(torch.tensor(1 + 1j), "x")
    kept = check_value(torch.tensor(0.5, requires_grad=True) * 2, "x")
    assert not kept.requires_grad  # detached: the graph is not kept alive until sent
