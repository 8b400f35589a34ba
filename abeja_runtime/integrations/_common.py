"""Plumbing shared by the framework integrations; imports no framework.

Why a layer between the callbacks and the reporter at all: a framework hands its
callbacks whatever its users logged (arrays, ``None``, odd names), at moments the user
does not control, so unlike a direct ``report()`` call a bad value must never raise into
training. :class:`SafeReporter` is that boundary: it checks each value on its own (so one
odd metric drops alone, logged once), throttles step-level reports with a clock read,
keeps epoch-end stages equal to what the framework logged for *that* epoch, and skips
everything on ranks other than 0.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import StatisticsError
from ..job import rank_info
from ..jsonsafe import is_tensor_like
from ..statistics import check_value
from ..statistics._documents import warn_once
from ..statistics.reporter import StatisticsReporter, get_reporter

__all__ = [
    "DEFAULT_PROGRESS_INTERVAL",
    "TRAIN",
    "VALIDATION",
    "SafeReporter",
    "add_accuracy_alias",
    "clean_metrics",
    "fraction_done",
    "is_main_process",
    "split_metrics",
]

logger = logging.getLogger("abeja_runtime.integrations")

TRAIN = "train"
VALIDATION = "validation"

#: seconds between step-level progress reports at most (the reporter coalesces anyway;
#: this only saves the report() calls that would be coalesced)
DEFAULT_PROGRESS_INTERVAL = 1.0

#: arrays up to this many elements are kept as lists (a per-class metric); bigger ones
#: are left out, since a statistics document is for charts, not tensors
_MAX_LIST = 256

#: keyword names report() takes for itself: a metric of that name at the top level
#: would clash with them
_RESERVED_TOP_LEVEL = frozenset(
    {"statistics", "epoch", "num_epochs", "progress", "epoch_end", "stages", "progress_percentage"}
)


def is_main_process() -> bool:
    """True unless the environment says this is a global rank other than 0.

    A malformed rank variable counts as rank 0 here: the reporter decides again (and says
    why) when it posts, and a wrong guess must not silence the only reporting process.
    """
    try:
        return rank_info().is_main
    except Exception:
        return True


def fraction_done(done: float, total: float | None) -> float | None:
    """``done / total`` clamped to [0, 1], or None when the total is unknown."""
    if not total or total <= 0 or not math.isfinite(total) or not math.isfinite(done):
        return None
    return float(min(1.0, max(0.0, done / total)))


def _warn_once(warned: set[str], key: str, message: str, *args: Any) -> None:
    warn_once(warned, key, message, *args, log=logger)


def clean_metrics(metrics: Mapping[Any, Any], path: str, warned: set[str]) -> dict[str, Any]:
    """The metrics that can be sent, each checked on its own; tensors are not read.

    ``None`` values are left out (a framework's "not computed"), small arrays (per-class
    metrics) become lists, anything else that cannot be sent is left out and logged once.
    """
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if value is None:
            continue
        if not isinstance(key, str):
            _warn_once(warned, f"{path}.{key!r}", "metric name %r is not a string; left out", key)
            continue
        where = f"{path}.{key}"
        try:
            out[key] = check_value(value, where)
            continue
        except StatisticsError as exc:
            error: Exception = exc
        except Exception as exc:  # an odd object failing its own check
            error = exc
        listed = _as_small_list(value, where)
        if listed is not None:
            out[key] = listed
        else:
            _warn_once(warned, where, "metric %s cannot be reported (%s); left out", where, error)
    return out


def _as_small_list(value: Any, path: str) -> list[Any] | None:
    """A per-class metric array as a list of numbers (reads it: epoch ends only)."""
    size = getattr(value, "size", None)
    numel = getattr(value, "numel", None)
    try:
        count = int(numel()) if callable(numel) else int(size) if size is not None else None
    except Exception:
        count = None
    tolist = getattr(value, "tolist", None)
    if count is None or count > _MAX_LIST or not callable(tolist):
        return None
    try:
        listed = tolist()
        if not isinstance(listed, list):
            return None
        checked = check_value(listed, path)
    except Exception:
        return None
    return checked if isinstance(checked, list) else None


def split_metrics(
    metrics: Mapping[str, Any],
    *,
    prefixes: Iterable[tuple[str, str]],
    default_stage: str | None = TRAIN,
    top_level: Iterable[str] = (),
    ignore: Iterable[str] = (),
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Split flat framework metrics into stages by name prefix.

    Args:
        metrics: flat ``name -> value`` (``val_loss``, ``eval_accuracy``, ``loss``).
        prefixes: ``(prefix, stage)`` pairs tried in order; the prefix is removed from
            the metric name (``val_loss`` -> ``validation.loss``).
        default_stage: stage of a name with no known prefix (None: top level).
        top_level: names kept as top-level values (``learning_rate``), not metrics.
        ignore: names left out entirely (``epoch``, which the integration computes).

    Returns:
        ``(stages, extra)``: metrics per stage, and top-level values.
    """
    pairs = tuple(prefixes)
    top = frozenset(top_level)
    skip = frozenset(ignore)
    stages: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or name in skip:
            continue
        if name in top:
            extra[name] = value
            continue
        for prefix, stage in pairs:
            if name.startswith(prefix) and len(name) > len(prefix):
                stages.setdefault(stage, {})[name[len(prefix) :]] = value
                break
        else:
            if default_stage is None:
                extra[name] = value
            else:
                stages.setdefault(default_stage, {})[name] = value
    return stages, extra


#: stage metrics the Training API requires to be numbers (a list or string there makes it
#: refuse the whole document)
_NUMERIC_ONLY = ("accuracy", "loss")


def _numeric(value: Any) -> bool:
    """A number, or a scalar tensor (read later); not a bool, string or list."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or is_tensor_like(value)


def _is_accuracy_name(name: str) -> bool:
    lowered = name.lower()
    if "top" in lowered:  # top_k_categorical_accuracy is not *the* accuracy
        return False
    return lowered in ("acc", "accuracy") or lowered.endswith(("accuracy", "_acc", "/acc"))


def add_accuracy_alias(stage: dict[str, Any]) -> None:
    """Also report the stage's one accuracy-like metric as ``accuracy``.

    The platform charts each stage's ``accuracy`` and ``loss``; Keras names the same
    metric ``acc`` or ``sparse_categorical_accuracy`` depending on how it was asked for.
    Nothing is added when ``accuracy`` exists or the choice is ambiguous (several
    candidates, none of them Keras' short ``acc``).
    """
    if "accuracy" in stage:
        return
    candidates = [name for name in stage if _is_accuracy_name(name)]
    if len(candidates) > 1 and "acc" in candidates:  # Keras' own short name wins
        candidates = ["acc"]
    if len(candidates) == 1 and _numeric(stage[candidates[0]]):
        stage["accuracy"] = stage[candidates[0]]


class SafeReporter:
    """A reporter seen from a framework callback: never raises, rank-0 only, throttled.

    Args:
        reporter: the reporter to use; default: the process-wide one
            (:func:`abeja_runtime.get_reporter`), resolved on first use so that a callback
            can be made before the job environment is complete.
        progress_interval: seconds between step-level reports at most; default
            ``min(DEFAULT_PROGRESS_INTERVAL, reporter.min_interval)``.
        accuracy_alias: add ``accuracy`` to a stage (see :func:`add_accuracy_alias`).
    """

    def __init__(
        self,
        reporter: StatisticsReporter | None = None,
        *,
        progress_interval: float | None = None,
        accuracy_alias: bool = True,
    ) -> None:
        if progress_interval is not None and not progress_interval >= 0:
            raise ValueError(f"progress_interval must be >= 0, got {progress_interval!r}")
        self._given = reporter
        self._reporter: StatisticsReporter | None = None
        self._interval = progress_interval
        self.accuracy_alias = accuracy_alias
        #: False until :meth:`start` decides this process reports
        self.active = False
        self.warned: set[str] = set()
        self._next_progress = 0.0
        #: metric names per stage that the job's document holds through us, so that an
        #: epoch end can remove the ones this epoch did not log
        self._keys: dict[str, set[str]] = {}

    def start(self, *, main_process: bool | None = None) -> bool:
        """Decide whether this process reports (call at train begin); returns that.

        Args:
            main_process: what the framework says (Lightning's ``is_global_zero``);
                default: from the environment's rank variables.
        """
        self.active = is_main_process() if main_process is None else bool(main_process)
        self._next_progress = 0.0
        if self.active:
            self.active = self.reporter is not None
        return self.active

    @property
    def reporter(self) -> StatisticsReporter | None:
        """The reporter, resolved on first use (None if it could not be made)."""
        if self._reporter is None:
            try:
                self._reporter = self._given if self._given is not None else get_reporter()
            except Exception as exc:  # get_reporter never raises; belt and braces
                _warn_once(self.warned, "reporter", "no statistics reporter: %s", exc)
                return None
        return self._reporter

    @property
    def progress_interval(self) -> float:
        """Seconds between step-level reports at most."""
        if self._interval is not None:
            return self._interval
        reporter = self.reporter
        floor = reporter.min_interval if reporter is not None else DEFAULT_PROGRESS_INTERVAL
        return min(DEFAULT_PROGRESS_INTERVAL, floor)

    def progress_due(self) -> bool:
        """True at most once per ``progress_interval`` (one clock read otherwise)."""
        now = time.monotonic()
        if now < self._next_progress:
            return False
        self._next_progress = now + self.progress_interval
        return True

    def stages(self, raw: Mapping[str, Mapping[str, Any]], path: str = "") -> dict[str, Any]:
        """Checked stages (odd values left out, accuracy alias added), empty ones dropped."""
        out: dict[str, Any] = {}
        for name, metrics in raw.items():
            stage = clean_metrics(metrics, f"{path}{name}", self.warned)
            for key in _NUMERIC_ONLY:
                if key in stage and not _numeric(stage[key]):
                    _warn_once(
                        self.warned,
                        f"{name}.{key}",
                        "metric %s.%s must be a number for the platform, got %s; left out",
                        name,
                        key,
                        type(stage[key]).__name__,
                    )
                    del stage[key]
            if self.accuracy_alias:
                add_accuracy_alias(stage)
            if stage:
                out[name] = stage
        return out

    def extras(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """Checked top-level values, without names that clash with report()'s own."""
        clean = clean_metrics(raw, "statistics", self.warned)
        return {key: value for key, value in clean.items() if key not in _RESERVED_TOP_LEVEL}

    def report(
        self,
        *,
        epoch: int | None = None,
        num_epochs: int | None = None,
        progress: float | None = None,
        stages: Mapping[str, dict[str, Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
        epoch_end: bool = False,
        replace_stages: bool = False,
    ) -> None:
        """Report checked values; never raises.

        Args:
            epoch, num_epochs, progress: as :meth:`StatisticsReporter.report` takes them.
            stages: checked stages (see :meth:`stages`).
            extra: checked top-level values (see :meth:`extras`).
            epoch_end: a must-deliver epoch-end snapshot.
            replace_stages: make the document's stages exactly ``stages``: metrics this
                integration reported before and that are missing now are removed (an
                epoch without validation shows no stale validation metrics).
        """
        if not self.active:
            return
        reporter = self.reporter
        if reporter is None:
            return
        values: dict[str, Any] = dict(extra or {})
        merged: dict[str, dict[str, Any]] = {name: dict(m) for name, m in (stages or {}).items()}
        if replace_stages:
            for name, keys in self._keys.items():
                stage = merged.setdefault(name, {})
                for key in keys:
                    if key not in stage:
                        stage[key] = None
            self._keys = {}
        for name, stage in merged.items():
            if stage:
                self._keys.setdefault(name, set()).update(
                    key for key, value in stage.items() if value is not None
                )
                values[name] = stage
        try:
            reporter.report(
                epoch=epoch,
                num_epochs=num_epochs,
                progress=progress,
                epoch_end=epoch_end,
                **values,
            )
        except Exception as exc:  # strict reporters raise StatisticsError; not into training
            _warn_once(
                self.warned, f"report:{type(exc).__name__}", "statistics not reported: %s", exc
            )

    def flush(self, timeout: float | None = None, when: str = "") -> bool:
        """Flush the reporter (bounded); never raises. True when all was delivered.

        Args:
            timeout: seconds to wait at most (None: the reporter's ``exit_timeout``; 0:
                start sending, do not wait).
            when: for the log line when not everything was delivered in time
                (``"at the end of fit()"``); nothing is logged for ``timeout=0``.
        """
        if not self.active or self._reporter is None:
            return True
        try:
            delivered = self._reporter.flush(timeout)
        except Exception as exc:
            _warn_once(self.warned, "flush", "flushing statistics failed: %s", exc)
            return False
        if not delivered and timeout != 0:
            logger.warning(
                "statistics not fully delivered %s (%s); the reporter keeps sending",
                when or "on flush",
                self._reporter.last_error or "no answer in time",
            )
        return delivered
