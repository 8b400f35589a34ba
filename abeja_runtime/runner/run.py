"""Run a training handler locally exactly as the platform would, and watch it.

``abeja-runtime run train:handler --source DIR`` (or :func:`run_handler` from
Python) does what ABEJA Platform does with a training job, against the platform's
API or, with no credentials, against the embedded emulator:

1. checks ``HANDLER`` (form, module, function) before anything is created;
2. creates or reuses the job definition, uploads the source directory as a new
   version (a zip without ``.venv``, ``.git``, caches and the result directory)
   and creates a job;
3. starts ``python -m abeja_runtime.runner.child`` in the source directory, in a
   process group of its own, with every variable of SPEC.md set, and marks the
   job Active;
4. streams the handler's output, with the job's progress (epoch, a bar, the
   latest stage values) read back from the API every ``poll_interval`` seconds;
   a sticky status line on a terminal, plain progress lines otherwise (CI logs
   must stay readable: no carriage-return animation into a file);
5. on SIGINT/SIGTERM, or when the job is stopped through the API, forwards the
   signal (SIGTERM for an API stop), waits the platform's grace period (25 s)
   and then kills the handler's whole process tree;
6. marks the job Complete, Failed or Stopped, uploads the result directory as the
   job's model with the final statistics as metrics (only for a Complete job
   with a non-empty result directory: a failed or stopped run's files are not a
   result, and an empty model is noise), and prints what to look at next.

Job status on the API: our emulators take ``POST .../jobs/{id}/status`` from a
local runner; an API that does not know that call (404/405) is told nothing
beyond ``stop`` (standard operation 18) and the runner says so once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

from ..config import (
    ENV_CONTEXT,
    ENV_DATASETS,
    ENV_OUTCOME_FILE,
    ENV_POLL_INTERVAL,
    ENV_STOP_GRACE,
    ENV_STORAGE_DIR,
    check_duration,
    env_float,
)
from ..errors import (
    AbejaRuntimeError,
)
from ..exit_codes import (
    EXIT_FAILURE,
    EXIT_JOB_STOPPED,
    EXIT_OK,
    exit_code_for_signal,
)
from ..job import job_environment
from ..validators import HandlerSpec, check_name
from .api_target import CREDENTIAL_ENV_NAMES, ApiTarget, open_target
from .child import EXIT_BAD_HANDLER

if TYPE_CHECKING:  # pragma: no cover
    from ..emulator import Emulator
from .console import _Console, _is_live, _start_pumps, format_progress
from .inputs import (
    DEFAULT_GRACE_PERIOD,
    DEFAULT_POLL_INTERVAL,
    _default_storage_dir,
    _prepare_result_dir,
    _validate_datasets,
    _validate_env,
    check_handler,
    default_definition_name,
)
from .job_api import (
    RunResult,
    _JobStatus,
    _JobWatcher,
    create_job,
    deliver_spool_leftovers,
    ensure_definition,
    upload_version,
)
from .process import (
    _child_pythonpath,
    _forwarded_signals,
    _ProcessTree,
    _read_outcome,
    _signal_name,
    kill_process_tree,
)
from .source import (
    _directory_is_empty,
    upload_result_dir_as_model,
)

__all__ = ["run_handler"]


@dataclass
class _Prepared:
    name: str
    version: int
    job_id: str
    result_dir: Path


class _Run:
    """One run's state; :func:`run_handler` is its public face."""

    def __init__(
        self,
        api: ApiTarget,
        spec: HandlerSpec,
        source: Path,
        console: _Console,
        *,
        datasets: dict[str, str],
        env: dict[str, str],
        result_dir: Path | None,
        job_definition_name: str | None,
        description: str | None,
        image: str | None,
        grace_period: float,
        poll_interval: float,
        handle_signals: bool,
    ) -> None:
        self.api = api
        self.spec = spec
        self.source = source
        self.console = console
        self.datasets = datasets
        self.env = env
        self.result_dir_arg = result_dir
        self.name = job_definition_name or default_definition_name(source)
        self.description = description
        self.image = image
        self.grace_period = grace_period
        self.poll_interval = poll_interval
        self.handle_signals = handle_signals

    # -- set-up -------------------------------------------------------------------------

    def _ensure_definition(self) -> None:
        ensure_definition(self.api, self.name, self.console)

    def _upload_version(self, result_dir: Path | None) -> int:
        return upload_version(
            self.api, self.name, self.spec, self.source, self.image, result_dir, self.console
        )

    def _create_job(self, version: int) -> str:
        return create_job(
            self.api,
            self.name,
            version,
            description=self.description or f"abeja-runtime run {self.spec}",
            env=self.env,
            datasets=self.datasets,
            console=self.console,
        )

    def _child_env(self, prepared: _Prepared, outcome: Path) -> dict[str, str]:
        env = dict(os.environ)
        for name in CREDENTIAL_ENV_NAMES:
            env.pop(name, None)
        env.update(self.env)
        env.update(self.api.job_env)
        storage = os.environ.get(ENV_STORAGE_DIR) or str(_default_storage_dir())
        Path(storage).mkdir(parents=True, exist_ok=True)
        env.update(
            job_environment(
                organization_id=self.api.organization_id,
                job_definition_name=prepared.name,
                job_definition_version=prepared.version,
                training_job_id=prepared.job_id,
                api_url=self.api.url,
                handler=str(self.spec),
                datasets=self.datasets,
                result_dir=prepared.result_dir,
                storage_dir=storage,
            )
        )
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                ENV_OUTCOME_FILE: str(outcome),
                "PYTHONPATH": _child_pythonpath(os.environ.get("PYTHONPATH")),
            }
        )
        return env

    # -- the child ----------------------------------------------------------------------

    def _supervise(
        self, proc: subprocess.Popen[bytes], watcher: _JobWatcher, received: list[int]
    ) -> tuple[str | None, int | None]:
        """Wait for the child, forwarding signals and API stops; returns (reason, signal).

        ``received`` is filled by the signal guard the caller holds, so that a
        signal that came while the child was being started is passed on too.
        """
        tree = _ProcessTree(proc.pid)
        reason: str | None = None
        reason_signal: int | None = None
        kill_at: float | None = None
        handled = 0
        next_refresh = time.monotonic() + 1.0
        while proc.poll() is None:
            while handled < len(received):
                signum = received[handled]
                handled += 1
                if reason is None:
                    reason, reason_signal = _signal_name(signum), signum
                    self.console.note(
                        f"{reason}: passing it to the handler; its process tree is "
                        f"killed if it is still running in {self.grace_period:g} s "
                        "(again to kill it now)"
                    )
                    with contextlib.suppress(OSError):
                        os.kill(proc.pid, signum)
                    kill_at = time.monotonic() + self.grace_period
                else:
                    self.console.note(f"{_signal_name(signum)} again: killing the handler now")
                    tree.kill()
            if reason is None and watcher.stopped.is_set():
                reason = "api"
                self.console.note(
                    "the job was stopped through the API: sending SIGTERM to the handler "
                    f"(killed if still running in {self.grace_period:g} s)"
                )
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGTERM)
                kill_at = time.monotonic() + self.grace_period
            now = time.monotonic()
            if kill_at is not None and now >= kill_at:
                self.console.note(
                    f"the handler is still running after {self.grace_period:g} s: "
                    "killing its process tree"
                )
                tree.kill()
                kill_at = None
            if now >= next_refresh:
                tree.refresh()
                next_refresh = now + 1.0
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.1)
        # The handler is gone; whatever it left behind goes too, as when the
        # platform's container ends.
        tree.kill()
        return reason, reason_signal

    def run(self) -> RunResult:
        self._ensure_definition()
        result_dir_hint = self.result_dir_arg.resolve() if self.result_dir_arg else None
        version = self._upload_version(result_dir_hint)
        job_id = self._create_job(version)
        status = _JobStatus(self.api, self.name, job_id, self.console)
        try:
            return self._run_job(job_id, version, status)
        except BaseException as exc:
            # Whatever broke after the job exists must not leave it Pending/Active.
            if isinstance(exc, KeyboardInterrupt):
                with contextlib.suppress(Exception):
                    status.stop("interrupted while starting")
            else:
                with contextlib.suppress(Exception):
                    status.set("Failed", f"runner error: {type(exc).__name__}: {exc}")
            raise

    def _announce_dashboard(self, job_id: str) -> None:
        """The job's live dashboard page, when this run started its own emulator.

        (The platform has its own console.) The link that logs a browser in
        holds the emulator's token, so it is printed only on a terminal; in a
        log the page's address goes alone.
        """
        emulator = self.api.emulator
        if not self.api.owns_emulator or emulator is None:
            return
        path = f"/definitions/{quote(self.name, safe='')}/jobs/{job_id}"
        if self.console.live:
            self.console.note(f"live dashboard: {emulator.dashboard_link(path)}")
        else:
            self.console.note(
                f"live dashboard: {emulator.url}{path} (a terminal gets a link that logs in; "
                "it is left out of non-terminal output because it holds the token)"
            )

    def _run_job(self, job_id: str, version: int, status: _JobStatus) -> RunResult:
        if self.result_dir_arg is not None:
            result_dir = self.result_dir_arg.resolve()
        else:
            result_dir = (Path.cwd() / ".abeja-runtime" / "results" / job_id).resolve()
        result_dir.mkdir(parents=True, exist_ok=True)
        if not _directory_is_empty(result_dir):
            self.console.note(
                f"result dir {result_dir} is not empty: its files will be part of the model"
            )
        prepared = _Prepared(self.name, version, job_id, result_dir)
        with tempfile.TemporaryDirectory(prefix="abeja-runtime-") as scratch:
            outcome_path = Path(scratch) / "outcome.json"
            env = self._child_env(prepared, outcome_path)
            status.set("Active")
            self.console.note(f"running {self.spec} in {self.source} (results in {result_dir})")
            self._announce_dashboard(job_id)
            started = time.monotonic()
            watcher = _JobWatcher(self.api, self.name, job_id, self.poll_interval, self.console)
            pumps: list[threading.Thread] = []
            received: list[int] = []
            # The guard is up before the child exists: a Ctrl-C that comes while
            # it starts is passed on to it like any other, not raised here.
            signals = (
                _forwarded_signals(received) if self.handle_signals else contextlib.nullcontext()
            )
            try:
                with signals:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "abeja_runtime.runner.child"],
                        cwd=str(self.source),
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        start_new_session=True,
                    )
                    pumps = _start_pumps(proc, self.console)
                    watcher.start()
                    try:
                        reason, reason_signal = self._supervise(proc, watcher, received)
                    except BaseException:
                        if proc.poll() is None:  # never leave a handler running behind us
                            kill_process_tree(proc.pid)
                            proc.wait()
                        raise
            finally:
                watcher.done.set()
                for pump in pumps:
                    pump.join(timeout=10)
                if watcher.ident is not None:
                    watcher.join(timeout=30)
            elapsed = time.monotonic() - started
            outcome = _read_outcome(outcome_path)
        deliver_spool_leftovers(self.api, self.source, job_id, env, self.console.note)
        self.console.close()
        returncode = proc.returncode
        if reason is None and watcher.stopped.is_set():
            reason = "api"  # stopped through the API just as the handler ended
        final_status, message = self._decide(reason, returncode, outcome)
        if final_status == "Stopped":
            if reason != "api":
                status.stop(message or "stopped")
        else:
            status.set(final_status, message if final_status == "Failed" else None)
        job = self._final_job(watcher)
        statistics = dict(job.get("statistics") or {}) if job else {}
        model, model_note, upload_failed = self._model(final_status, job_id, result_dir, statistics)
        if final_status == "Complete":
            exit_code = EXIT_FAILURE if upload_failed else EXIT_OK
        elif final_status == "Failed":
            exit_code = EXIT_FAILURE
        elif reason == "api":
            exit_code = EXIT_JOB_STOPPED
        else:
            exit_code = exit_code_for_signal(reason_signal or signal.SIGTERM)
        result = RunResult(
            job_definition_name=self.name,
            job_definition_version=version,
            training_job_id=job_id,
            status=final_status,
            status_message=message,
            returncode=returncode,
            statistics=statistics,
            model=model,
            model_note=model_note,
            result_dir=result_dir,
            exit_code=exit_code,
            organization_id=self.api.organization_id,
            api_url=self.api.url,
            emulator_dir=self.api.emulator_dir,
            stop_reason=reason,
        )
        self._summary(result, elapsed)
        return result

    @staticmethod
    def _decide(
        reason: str | None, returncode: int | None, outcome: Mapping[str, Any]
    ) -> tuple[str, str | None]:
        if reason == "api":
            return "Stopped", "stopped through the API"
        if reason is not None:
            return "Stopped", f"stopped by {reason} to the runner"
        if returncode == 0:
            return "Complete", None
        error = outcome.get("error")
        if isinstance(error, str) and error:
            return "Failed", error
        if returncode is not None and returncode < 0:
            return "Failed", f"handler killed by {_signal_name(-returncode)}"
        if returncode == EXIT_BAD_HANDLER:
            return "Failed", "the handler could not be loaded"
        return "Failed", f"handler exited with code {returncode}"

    def _final_job(self, watcher: _JobWatcher) -> dict[str, Any] | None:
        for attempt in range(3):
            try:
                return dict(
                    self.api.client.get_training_job(
                        self.api.organization_id, self.name, watcher.job_id
                    )
                )
            except AbejaRuntimeError as exc:
                if attempt == 2:
                    self.console.note(f"cannot read the job's final state: {exc}", error=True)
                time.sleep(0.5 * (attempt + 1))
        return watcher.latest

    def _model(
        self, final_status: str, job_id: str, result_dir: Path, statistics: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, str | None, bool]:
        if final_status != "Complete":
            return None, f"no model uploaded: the job is {final_status}", False
        if _directory_is_empty(result_dir):
            return None, f"no model uploaded: the result dir {result_dir} is empty", False
        try:
            model = upload_result_dir_as_model(
                self.api,
                self.name,
                job_id,
                result_dir,
                metrics=statistics,
                description=f"result of job {job_id} ({self.spec})",
            )
        except (AbejaRuntimeError, OSError) as exc:
            message = " ".join(str(exc).split())
            self.console.note(f"model upload failed: {message}", error=True)
            return None, f"model upload failed: {message}", True
        return model, None, False

    def _summary(self, result: RunResult, elapsed: float) -> None:
        note = self.console.note
        tail = f": {result.status_message}" if result.status_message else ""
        note(f"job {result.training_job_id} {result.status} after {elapsed:.1f} s{tail}")
        if result.statistics:
            self.console.status(format_progress(result.statistics), final=True)
            note(f"final statistics: {json.dumps(result.statistics)}")
        else:
            note("final statistics: none (the handler reported nothing)")
        if result.model_id:
            note(f"model {result.model_id} uploaded from {result.result_dir}")
        elif result.model_note:
            note(result.model_note)
        org = "" if result.emulator_dir else f" --organization {result.organization_id}"
        note("next:")
        note(f"  abeja-runtime jobs get {result.job_definition_name} {result.training_job_id}{org}")
        if result.model_id:
            note(
                f"  abeja-runtime models download {result.job_definition_name} "
                f"{result.model_id}{org}"
            )
        note(f"  result files: {result.result_dir}")
        if result.emulator_dir:
            note(f"  emulator state: {result.emulator_dir}")


def run_handler(
    handler: str,
    *,
    source: str | os.PathLike[str] = ".",
    datasets: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    result_dir: str | os.PathLike[str] | None = None,
    job_definition_name: str | None = None,
    description: str | None = None,
    api: ApiTarget | Emulator | None = None,
    organization: str | None = None,
    image: str | None = None,
    grace_period: float | None = None,
    poll_interval: float | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    live: bool | None = None,
    handle_signals: bool = True,
) -> RunResult:
    """Run ``handler`` (``module:function``) from ``source`` as a training job.

    See the module docstring for the steps. Nothing is created on the API when
    the handler cannot be loaded.

    Args:
        handler: ``module:function``, e.g. ``"train:handler"``.
        source: the directory with the handler's code (uploaded as the version).
        datasets: alias -> dataset id, given to the job and as ``DATASETS``.
        env: extra environment variables for the job (not the reserved ones).
        result_dir: ``ABEJA_TRAINING_RESULT_DIR``; default
            ``./.abeja-runtime/results/<job id>``.
        job_definition_name: default: the source directory's name.
        description: the job's description.
        api: an :class:`~abeja_runtime.runner.api_target.ApiTarget` or a running
            ``Emulator``; default: chosen from the environment (embedded emulator
            without credentials).
        organization: with credentials, the organization (default
            ``ABEJA_ORGANIZATION_ID``).
        image: the version's ``image`` (the platform needs one; the emulator does not).
        grace_period: seconds between forwarding a stop and killing the tree
            (default ``ABEJA_RUNTIME_STOP_GRACE`` or 25).
        poll_interval: seconds between reads of the job's progress/status
            (default ``ABEJA_RUNTIME_POLL_INTERVAL`` or 1).
        stdout: where handler stdout and our lines go (default ``sys.stdout``).
        stderr: where handler stderr and our errors go (default ``sys.stderr``).
        live: sticky progress line; default: when ``stdout`` is a terminal.
        handle_signals: catch SIGINT/SIGTERM while the handler runs (main thread only).

    Raises:
        HandlerError: ``handler`` cannot be loaded from ``source`` (no job created).
        ConfigurationError: bad ``source``, ``env`` or ``datasets``, or no usable API.
        HttpError, APIConnectionError: the API refused or could not be reached.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    console = _Console(out, err, _is_live(out) if live is None else live)
    source_dir = Path(source).resolve()
    clean_env = _validate_env(env or {})
    clean_datasets = _validate_datasets(datasets or {})
    grace = (
        check_duration(grace_period, "grace_period")
        if grace_period is not None
        else env_float(ENV_STOP_GRACE, DEFAULT_GRACE_PERIOD, minimum=0.0)
    )
    interval = (
        check_duration(poll_interval, "poll_interval", minimum=0.05)
        if poll_interval is not None
        else env_float(ENV_POLL_INTERVAL, DEFAULT_POLL_INTERVAL, minimum=0.05)
    )
    if job_definition_name is not None:
        check_name(job_definition_name, "job_definition_name")
    if result_dir is not None:
        _prepare_result_dir(Path(result_dir))
    check_env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV_NAMES}
    check_env.update(clean_env)
    check_env[ENV_DATASETS] = json.dumps(clean_datasets)
    check_env[ENV_CONTEXT] = "{}"
    spec = check_handler(handler, source_dir, env=check_env)

    with contextlib.ExitStack() as stack:
        if api is None:
            target = stack.enter_context(
                open_target(organization, announce=lambda line: console.note(line))
            )
        elif isinstance(api, ApiTarget):
            target = api
        else:
            target = ApiTarget.from_emulator(api)
        if not target.is_emulator:
            console.note(f"using the API at {target.url} (organization {target.organization_id})")
        run = _Run(
            target,
            spec,
            source_dir,
            console,
            datasets=clean_datasets,
            env=clean_env,
            result_dir=Path(result_dir) if result_dir is not None else None,
            job_definition_name=job_definition_name,
            description=description,
            image=image,
            grace_period=grace,
            poll_interval=interval,
            handle_signals=handle_signals,
        )
        return run.run()
    raise AssertionError("unreachable")  # pragma: no cover
