"""Statistics: the public class's contract, without its defects."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from abeja_runtime.errors import StatisticsError
from abeja_runtime.statistics import Statistics, check_document, check_value


def test_seed_example() -> None:
    statistics = Statistics(progress_percentage=0.5, epoch=1, num_epochs=5, key1="value1")
    statistics.add_stage(name=Statistics.STAGE_TRAIN, accuracy=0.9, loss=0.05)
    statistics.add_stage(name=Statistics.STAGE_VALIDATION, accuracy=0.8, loss=0.1, key2=2)
    assert statistics.get_statistics() == {
        "num_epochs": 5,
        "epoch": 1,
        "progress_percentage": 0.5,
        "stages": {
            "train": {"accuracy": 0.9, "loss": 0.05},
            "validation": {"accuracy": 0.8, "loss": 0.1, "key2": 2},
        },
        "key1": "value1",
    }
    assert Statistics.STAGE_TRAIN == "train"
    assert Statistics.STAGE_VALIDATION == "validation"


def test_zeros_are_kept() -> None:
    statistics = Statistics(num_epochs=10, epoch=0, progress_percentage=0.0)
    statistics.add_stage(Statistics.STAGE_TRAIN, accuracy=0, loss=0.0)
    assert statistics.get_statistics() == {
        "num_epochs": 10,
        "epoch": 0,
        "progress_percentage": 0.0,
        "stages": {"train": {"accuracy": 0, "loss": 0.0}},
    }


def test_none_is_left_out() -> None:
    statistics = Statistics()
    statistics.add_stage("train", loss=0.5)
    assert statistics.get_statistics() == {"stages": {"train": {"loss": 0.5}}}
    assert Statistics().get_statistics() == {}


def test_nan_and_infinity_become_strings_and_strict_json() -> None:
    statistics = Statistics(epoch=1)
    statistics.add_stage("train", loss=float("nan"), accuracy=float("inf"), other=-math.inf)
    doc = statistics.get_statistics()
    assert doc["stages"]["train"] == {"loss": "NaN", "accuracy": "Infinity", "other": "-Infinity"}
    json.dumps(doc, allow_nan=False)


def test_numpy_scalars_become_numbers() -> None:
    statistics = Statistics(num_epochs=np.int64(5), epoch=np.int32(2), lr=np.float32(0.5))
    statistics.add_stage("train", loss=np.float32(0.25), accuracy=np.array(0.75), n=np.int64(3))
    doc = statistics.get_statistics()
    assert doc == {
        "num_epochs": 5,
        "epoch": 2,
        "lr": 0.5,
        "stages": {"train": {"loss": 0.25, "accuracy": 0.75, "n": 3}},
    }
    assert type(doc["epoch"]) is int
    assert type(doc["stages"]["train"]["loss"]) is float
    json.dumps(doc, allow_nan=False)


@pytest.mark.framework
def test_torch_scalars_and_tensors() -> None:
    torch = pytest.importorskip("torch")
    weight = torch.tensor(2.0, requires_grad=True)
    loss = weight * 3
    statistics = Statistics(epoch=torch.tensor(1))
    statistics.add_stage("train", loss=loss, accuracy=torch.tensor([0.5]))
    assert statistics.get_statistics() == {
        "epoch": 1,
        "stages": {"train": {"loss": 6.0, "accuracy": 0.5}},
    }
    # the stored loss is detached: reporting it does not keep the autograd graph
    assert not statistics.stages["train"]["loss"].requires_grad
    with pytest.raises(StatisticsError, match=r"stages\.train\.loss.*shape"):
        statistics.add_stage("train", loss=torch.ones(3))


@pytest.mark.parametrize("progress", [-0.1, 1.01, 50, float("nan"), "half"])
def test_progress_must_be_a_fraction(progress: Any) -> None:
    with pytest.raises(StatisticsError, match="progress_percentage"):
        Statistics(progress_percentage=progress)


def test_progress_bounds_are_allowed() -> None:
    assert Statistics(progress_percentage=0).get_statistics() == {"progress_percentage": 0}
    assert Statistics(progress_percentage=1.0).get_statistics() == {"progress_percentage": 1.0}


@pytest.mark.parametrize("epoch", [-1, 1.5, "2", True, float("inf")])
def test_epoch_must_be_a_whole_non_negative_number(epoch: Any) -> None:
    with pytest.raises(StatisticsError, match="epoch"):
        Statistics(epoch=epoch)


def test_whole_float_epoch_becomes_int() -> None:
    assert Statistics(epoch=3.0).get_statistics() == {"epoch": 3}


def test_attributes_are_validated_on_assignment() -> None:
    statistics = Statistics()
    statistics.epoch = 0
    assert statistics.epoch == 0
    with pytest.raises(StatisticsError):
        statistics.progress_percentage = 2


def test_unserializable_values_fail_at_the_call_site() -> None:
    statistics = Statistics()
    with pytest.raises(StatisticsError, match=r"stages\.train\.model: object"):
        statistics.add_stage("train", loss=0.1, model=object())
    with pytest.raises(StatisticsError, match=r"statistics\.when"):
        Statistics(when={1, 2})
    with pytest.raises(StatisticsError, match="shape"):
        statistics.add_stage("train", loss=np.zeros(4))
    with pytest.raises(StatisticsError, match="keys must be strings"):
        statistics.add_stage("train", extra={1: 2})


def test_add_stage_replaces_and_needs_a_metric() -> None:
    statistics = Statistics()
    statistics.add_stage("train", accuracy=0.5, loss=1.0)
    statistics.add_stage("train", loss=0.5)
    assert statistics.get_statistics() == {"stages": {"train": {"loss": 0.5}}}
    with pytest.raises(StatisticsError, match="at least one metric"):
        statistics.add_stage("train")
    with pytest.raises(StatisticsError):
        statistics.add_stage("", loss=1.0)


def test_from_response_round_trips_without_mutating_the_response() -> None:
    response = {
        "num_epochs": 5,
        "epoch": 0,
        "stages": {"train": {"loss": 0.0, "accuracy": 1}},
        "key1": "v",
    }
    copy = json.loads(json.dumps(response))
    statistics = Statistics.from_response(response)
    assert statistics is not None
    assert statistics.get_statistics() == copy
    assert response == copy
    assert Statistics.from_response(None) is None


def test_check_value_copies_containers_and_keeps_plain_values() -> None:
    values = [1, 2.5]
    checked = check_value({"a": values, "b": None}, "x")
    values.append(3)
    assert checked == {"a": [1, 2.5], "b": None}


def test_check_document_validates_structure() -> None:
    assert check_document({"epoch": 0, "stages": {"train": {"loss": 0.0}}, "x": 1}) == {
        "epoch": 0,
        "stages": {"train": {"loss": 0.0}},
        "x": 1,
    }
    with pytest.raises(StatisticsError, match="stages"):
        check_document({"stages": {"train": 0.5}})
    with pytest.raises(StatisticsError, match="stages"):
        check_document({"stages": [1]})
    with pytest.raises(StatisticsError, match="progress_percentage"):
        check_document({"progress_percentage": 90})


def test_equality() -> None:
    a = Statistics(epoch=1)
    b = Statistics(epoch=1)
    assert a == b
    b.add_stage("train", loss=1.0)
    assert a != b
