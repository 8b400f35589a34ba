"""Plain PyTorch loop helper (track / epoch_end): real CPU training against the emulator."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

pytest.importorskip("werkzeug")
torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from abeja_runtime.integrations.torch import StepTracker, epoch_end, track  # noqa: E402
from abeja_runtime.statistics.reporter import StatisticsReporter  # noqa: E402
from abeja_runtime.statistics.sinks import MemorySink  # noqa: E402

from tests.support.integration_support import assert_stage_matches, emulator_job  # noqa: E402

pytestmark = pytest.mark.framework


def _loaders(n: int = 256, batch: int = 32) -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    split = n * 3 // 4
    train = DataLoader(TensorDataset(x[:split], y[:split]), batch_size=batch, shuffle=False)
    val = DataLoader(TensorDataset(x[split:], y[split:]), batch_size=batch)
    return train, val


def _train(
    num_epochs: int,
    reporter: StatisticsReporter | None,
    *,
    poison: bool = False,
    validate: bool = True,
) -> list[dict[str, dict[str, float]]]:
    """A tiny classifier; returns the loop's own history (floats read after the epoch)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5 if not poison else float("nan"))
    train_loader, val_loader = _loaders()
    history = []
    for epoch in range(num_epochs):
        model.train()
        steps = track(
            train_loader, epoch=epoch, num_epochs=num_epochs, reporter=reporter, progress_interval=0
        )
        total = torch.zeros(())
        correct = torch.zeros(())
        seen = 0
        for step, (x, y) in enumerate(steps):
            if epoch == 0 and step == 2 and reporter is not None:
                # deliver the step-level report of step 1 now: a loop this small would
                # otherwise finish before the reporter's first post, and the epoch end
                # would supersede it
                reporter.flush(10)
            out = model(x)
            loss = torch.nn.functional.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps.log(loss=loss)  # the tensor itself: never read on this thread
            total += loss.detach() * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
        train = {"loss": total / seen, "accuracy": correct / seen}
        stages: dict[str, Any] = {"train": train}
        if validate:
            model.eval()
            with torch.no_grad():
                vl, vc, vn = torch.zeros(()), torch.zeros(()), 0
                for x, y in val_loader:
                    out = model(x)
                    vl += torch.nn.functional.cross_entropy(out, y, reduction="sum")
                    vc += (out.argmax(1) == y).sum()
                    vn += len(y)
            stages["validation"] = {"loss": vl / vn, "accuracy": vc / vn}
        epoch_end(epoch, num_epochs=num_epochs, reporter=reporter, **stages)
        history.append({s: {k: float(v) for k, v in m.items()} for s, m in stages.items()})
    return history


def test_loop_statistics_follow_its_own_history() -> None:
    with emulator_job("torch-loop") as job:
        history = _train(3, job.reporter)
        assert job.reporter.flush(30)
        docs = job.epoch_ends()
        assert sorted(docs) == [1, 2, 3]
        for epoch, own in enumerate(history, start=1):
            doc = docs[epoch]
            assert doc["num_epochs"] == 3
            assert doc["progress_percentage"] == pytest.approx(epoch / 3)
            # the epoch's own train values, and loss keeps its epoch mean (not the step's)
            assert_stage_matches(doc["stages"]["train"], own["train"], f"train {epoch}")
            assert_stage_matches(
                doc["stages"]["validation"], own["validation"], f"validation {epoch}"
            )
        assert job.final() == docs[3]
        steps = [d for d in job.history() if d["progress_percentage"] * 3 % 1 > 0]
        assert steps, "no step-level progress arrived"
        assert all(isinstance(d["stages"]["train"]["loss"], float) for d in steps)
        progress = [d["progress_percentage"] for d in job.history()]
        assert progress == sorted(progress)
        assert job.reporter.counters["failed"] == 0


def test_nan_loss_and_missing_validation_never_break_the_loop() -> None:
    with emulator_job("torch-nan") as job:
        history = _train(2, job.reporter, poison=True, validate=False)
        assert job.reporter.flush(30)
        docs = job.epoch_ends()
    assert math.isnan(history[-1]["train"]["loss"])
    assert docs[2]["stages"]["train"]["loss"] == "NaN"
    assert "validation" not in docs[2]["stages"]
    assert docs[2]["epoch"] == 2 and docs[2]["progress_percentage"] == 1.0


class _ReadSpy(torch.Tensor):  # type: ignore[misc]
    """A tensor that records which thread reads its value."""

    reads: list[str] = []
    _READS = frozenset({"item", "__float__", "tolist", "numpy", "cpu", "__bool__", "__int__"})

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if getattr(func, "__name__", "") in cls._READS:
            cls.reads.append(threading.current_thread().name)
        return super().__torch_function__(func, types, args, kwargs or {})


def test_tensors_are_read_on_the_sender_thread_only() -> None:
    """Stand-in for a CUDA loss on CPU: the training thread never reads a value."""
    _ReadSpy.reads = []
    sink = MemorySink()
    reporter = StatisticsReporter(sink=sink, min_interval=0, handle_sigterm=False, rank=0)
    try:
        for epoch in range(2):
            steps = track(
                range(50), epoch=epoch, num_epochs=2, reporter=reporter, progress_interval=0
            )
            for i in steps:
                steps.log(loss=torch.tensor(1.0 / (i + 1)).as_subclass(_ReadSpy))
            epoch_end(
                epoch,
                num_epochs=2,
                reporter=reporter,
                train={"loss": torch.tensor(0.5).as_subclass(_ReadSpy)},
                validation={"loss": torch.tensor(0.25, requires_grad=True).as_subclass(_ReadSpy)},
            )
        assert reporter.flush(10)
    finally:
        reporter.close(5)
    assert _ReadSpy.reads, "the spy saw no read at all"
    assert threading.main_thread().name not in _ReadSpy.reads, _ReadSpy.reads
    assert set(_ReadSpy.reads) == {"abeja-runtime-statistics"}
    assert sink.documents[-1]["stages"] == {"train": {"loss": 0.5}, "validation": {"loss": 0.25}}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_loss_costs_no_device_sync() -> None:
    """With sync debug mode "error", any host-device synchronisation raises."""
    sink = MemorySink()
    reporter = StatisticsReporter(sink=sink, min_interval=0, handle_sigterm=False, rank=0)
    device = torch.device("cuda")
    model = torch.nn.Linear(64, 1).to(device)
    x = torch.randn(32, 64, device=device)
    try:
        torch.cuda.set_sync_debug_mode("error")
        try:
            steps = track(range(20), epoch=0, num_epochs=1, reporter=reporter, progress_interval=0)
            for _ in steps:
                loss = model(x).pow(2).mean()
                loss.backward()
                steps.log(loss=loss)
            epoch_end(0, num_epochs=1, reporter=reporter, train={"loss": loss})
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert reporter.flush(10)
    finally:
        reporter.close(5)
    assert isinstance(sink.documents[-1]["stages"]["train"]["loss"], float)


def test_odd_values_are_left_out_not_raised() -> None:
    sink = MemorySink()
    reporter = StatisticsReporter(sink=sink, min_interval=0, handle_sigterm=False, rank=0)
    try:
        steps = track(iter(range(3)), epoch=0, num_epochs=1, reporter=reporter, progress_interval=0)
        with pytest.raises(TypeError):
            len(steps)
        for _ in steps:
            steps.log(loss=object(), lr=0.1)  # an object cannot be sent; lr can
        epoch_end(
            0,
            num_epochs=1,
            reporter=reporter,
            train={"loss": torch.ones(3), "accuracy": torch.tensor(0.75)},
            validation=None,
            note="text",
            model=object(),
        )
        assert reporter.flush(10)
    finally:
        reporter.close(5)
    final = sink.documents[-1]
    assert final["epoch"] == 1 and final["progress_percentage"] == 1.0
    assert final["note"] == "text" and "model" not in final
    # a 3-element tensor is a per-class value: kept as a list, not as the platform's loss
    assert final["stages"]["train"] == {"lr": 0.1, "accuracy": 0.75}
    with pytest.raises(ValueError, match="0-based"):
        track([], epoch=-1)


def test_other_ranks_only_iterate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    sink = MemorySink()
    reporter = StatisticsReporter(sink=sink, min_interval=0, handle_sigterm=False, rank=0)
    try:
        steps: StepTracker[int] = track(range(5), epoch=0, num_epochs=1, reporter=reporter)
        assert not steps.active
        assert list(steps) == [0, 1, 2, 3, 4]
        steps.log(loss=1.0)
        epoch_end(0, num_epochs=1, reporter=reporter, train={"loss": 1.0})
        assert reporter.counters["reported"] == 0
    finally:
        reporter.close(5)
