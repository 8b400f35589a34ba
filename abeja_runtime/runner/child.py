"""The training job's process: import ``module:function`` and call ``handler(context)``.

``python -m abeja_runtime.runner.child`` is what :mod:`abeja_runtime.runner` starts in
a child process, from the source directory, with the job's environment
(``HANDLER``, ``CONTEXT``, ``DATASETS`` and the job identity of SPEC.md). It does
what the platform's own entrypoint does: the handler is ``module:function`` with
exactly one colon, it is called once with the ``CONTEXT`` dict whose
``"datasets"`` key holds the ``DATASETS`` mapping, its return value is ignored and
an exception fails the job.

Why a module of its own (and not ``python -c``): the parent needs the very same
resolution rules twice, once as a dry check before any job exists
(``--check``: import the module and look the function up, call nothing) and once
for real, and both must find the module exactly as the job will (same
interpreter, source directory first on ``sys.path``). Keeping both in one
importable module makes that sameness structural instead of a copy.

Exit codes (the parent reads them):

* ``0``: the handler returned (or called ``sys.exit(0)``);
* ``1``: the handler raised; the traceback is on stderr;
* ``2``: the handler could not be loaded (malformed ``HANDLER``, module not found,
  import failed, function missing or not callable) or ``CONTEXT``/``DATASETS``
  are not JSON objects; one clear line on stderr;
* ``130``: the handler was interrupted (``KeyboardInterrupt``, the runner forwards
  Ctrl-C as ``SIGINT``);
* anything else: the code the handler passed to ``sys.exit``.

When ``ABEJA_RUNTIME_OUTCOME_FILE`` names a file, a one-line JSON outcome
(``{"outcome": "ok"|"failed"|"invalid"|"interrupted"|"exit", "error": ...}``) is
written there so the runner can put the exception's message into the job's
``status_message`` without parsing stderr.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from ..config import ENV_CONTEXT, ENV_DATASETS, ENV_HANDLER, ENV_OUTCOME_FILE
from ..exit_codes import EXIT_INTERRUPTED, EXIT_OK
from ..validators import HandlerError, HandlerSpec, parse_handler

__all__ = [
    "ENV_OUTCOME_FILE",
    "EXIT_BAD_HANDLER",
    "EXIT_HANDLER_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "HandlerError",
    "HandlerSpec",
    "build_context",
    "load_handler",
    "main",
    "parse_handler",
]


EXIT_HANDLER_FAILED = 1
EXIT_BAD_HANDLER = 2


def _module_location(module: ModuleType) -> str:
    return str(getattr(module, "__file__", None) or module.__name__)


def _import_module(spec: HandlerSpec, source_dir: str) -> ModuleType:
    try:
        return importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (spec.module == missing or spec.module.startswith(missing + ".")):
            path = spec.module.replace(".", os.sep)
            raise HandlerError(
                f"HANDLER '{spec}': module {spec.module!r} not found in {source_dir} "
                f"(looked for {path}.py or {path}{os.sep}__init__.py there and on sys.path)"
            ) from None
        raise HandlerError(
            f"HANDLER '{spec}': importing module {spec.module!r} failed: "
            f"{type(exc).__name__}: {exc} (a dependency of the handler is not installed "
            f"in {sys.executable})"
        ) from exc
    except (Exception, SystemExit) as exc:
        where = ""
        frames = traceback.extract_tb(exc.__traceback__)
        if frames and not isinstance(exc, SyntaxError):
            where = f" (at {frames[-1].filename}:{frames[-1].lineno})"
        raise HandlerError(
            f"HANDLER '{spec}': importing module {spec.module!r} failed: {_describe(exc)}{where}"
        ) from exc


def load_handler(spec: HandlerSpec, source_dir: str | None = None) -> Callable[..., Any]:
    """Import ``spec.module`` from ``source_dir`` and return ``spec.function``.

    ``source_dir`` (default: the current directory) goes first on ``sys.path``,
    as the platform runs the handler from the unpacked source code.

    Raises:
        HandlerError: module not found, import failed, function missing, or the
            attribute is not callable.
    """
    directory = os.path.abspath(source_dir or os.getcwd())
    if not sys.path or os.path.abspath(sys.path[0] or os.getcwd()) != directory:
        sys.path.insert(0, directory)
    module = _import_module(spec, directory)
    if not hasattr(module, spec.function):
        defined = sorted(
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and inspect.isfunction(value)
            and getattr(value, "__module__", None) == module.__name__
        )
        hint = f"; it defines: {', '.join(defined)}" if defined else ""
        raise HandlerError(
            f"HANDLER '{spec}': module {spec.module!r} ({_module_location(module)}) "
            f"has no function {spec.function!r}{hint}"
        )
    function = getattr(module, spec.function)
    if not callable(function):
        raise HandlerError(
            f"HANDLER '{spec}': {spec.module}.{spec.function} is a "
            f"{type(function).__name__}, not a function"
        )
    return function  # type: ignore[no-any-return]


def _json_object(environ: Mapping[str, str], name: str) -> dict[str, Any]:
    raw = environ.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise HandlerError(f"{name} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise HandlerError(f"{name} must be a JSON object, got {type(value).__name__}")
    return value


def build_context(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The ``context`` argument: ``CONTEXT`` with ``"datasets"`` set from ``DATASETS``.

    Raises:
        HandlerError: either variable is set but is not a JSON object.
    """
    env = os.environ if environ is None else environ
    context = _json_object(env, ENV_CONTEXT)
    context["datasets"] = _json_object(env, ENV_DATASETS)
    return context


def _write_outcome(environ: Mapping[str, str], outcome: str, error: str | None = None) -> None:
    path = environ.get(ENV_OUTCOME_FILE)
    if not path:
        return
    record = {"outcome": outcome, "error": error}
    try:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
        os.replace(tmp, path)
    except OSError:
        # The outcome file only improves the status message; the exit code
        # already carries the outcome, so a failure to write it is not fatal.
        pass


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _undo_inherited_ignores() -> None:
    """Let SIGINT and SIGTERM reach the handler even if our parent ignored them.

    The runner starts this process in a session of its own, so those two come
    only from the runner (Ctrl-C forwarded as ``SIGINT``, a stop as ``SIGTERM``)
    or from someone who named the handler's pid. A runner started as a
    background job of a non-interactive shell (``abeja-runtime run ... &`` in a
    script or a CI step) has ``SIGINT`` ignored, and an ignored signal stays
    ignored across ``exec`` (Python keeps an ignored ``SIGINT`` ignored too):
    without this the forwarded Ctrl-C raised nothing, and the handler was killed
    at the end of the grace period with no ``KeyboardInterrupt`` and no exit
    flush. Runs before the handler's module is imported, so whatever the
    handler installs itself still wins.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(spec_text: str | None, check_only: bool) -> int:
    env = os.environ
    try:
        spec = parse_handler(spec_text)
        handler = load_handler(spec, os.getcwd())
        context = build_context(env)
    except HandlerError as exc:
        print(f"abeja-runtime: {exc}", file=sys.stderr, flush=True)
        if exc.__cause__ is not None and not check_only:
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        _write_outcome(env, "invalid", str(exc))
        return EXIT_BAD_HANDLER
    if check_only:
        return EXIT_OK
    try:
        handler(context)
    except KeyboardInterrupt:
        print("abeja-runtime: handler interrupted", file=sys.stderr, flush=True)
        _write_outcome(env, "interrupted", "interrupted")
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        code = exc.code
        if code is None or code == 0:
            _write_outcome(env, "ok")
            return EXIT_OK
        if isinstance(code, int):
            _write_outcome(env, "exit", f"handler called sys.exit({code})")
            return code
        print(code, file=sys.stderr, flush=True)
        _write_outcome(env, "exit", f"handler exited: {code}")
        return EXIT_HANDLER_FAILED
    except BaseException as exc:
        traceback.print_exc()
        sys.stderr.flush()
        _write_outcome(env, "failed", _describe(exc))
        return EXIT_HANDLER_FAILED
    _write_outcome(env, "ok")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or with ``--check`` only resolve) the handler named by ``HANDLER``.

    Returns:
        the process exit code (see the module docstring).
    """
    parser = argparse.ArgumentParser(
        prog="python -m abeja_runtime.runner.child",
        description="Call HANDLER (module:function) with the job's context, as the platform does.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="import the module and look the function up, but do not call it",
    )
    parser.add_argument("--handler", help="module:function (default: $HANDLER)")
    args = parser.parse_args(argv)
    # The handler sees a clean argv, as on the platform: its own argparse must
    # not trip over our flags.
    sys.argv = sys.argv[:1]
    _undo_inherited_ignores()
    return _run(
        args.handler if args.handler is not None else os.environ.get(ENV_HANDLER), args.check
    )


if __name__ == "__main__":  # pragma: no cover - exercised through subprocess tests
    sys.exit(main())
