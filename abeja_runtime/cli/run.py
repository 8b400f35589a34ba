"""``abeja-runtime run``: the command line of :func:`~abeja_runtime.runner.run_handler`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import (
    ENV_API_URL,
    ENV_STOP_GRACE,
    check_duration,
)
from ..errors import (
    AbejaRuntimeError,
    ConfigurationError,
)
from ..exit_codes import (
    exit_code_for_error,
)
from ..runner.api_target import ENV_ORGANIZATION_ID

if TYPE_CHECKING:  # pragma: no cover
    pass
from ..runner.inputs import parse_assignments
from ..runner.run import run_handler

__all__ = ["register"]


# --------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``abeja-runtime run`` to the CLI."""
    parser = subparsers.add_parser(
        "run",
        help="run a training handler locally as the platform would (emulator by default)",
        description=(
            "Run HANDLER (module:function) from --source as a training job: against the "
            "embedded emulator when no platform credentials are set, else against "
            f"{ENV_API_URL}. Exit code 0 when the job is Complete."
        ),
    )
    parser.add_argument("handler", metavar="HANDLER", help="module:function, e.g. train:handler")
    parser.add_argument("--source", default=".", metavar="DIR", help="the handler's directory")
    parser.add_argument(
        "--dataset",
        action="append",
        default=[],
        metavar="ALIAS=ID",
        help="a dataset for the job (repeatable)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the job (repeatable)",
    )
    parser.add_argument(
        "--result-dir",
        metavar="DIR",
        help="ABEJA_TRAINING_RESULT_DIR (default ./.abeja-runtime/results/<job id>)",
    )
    parser.add_argument(
        "--job-definition", metavar="NAME", help="default: the source directory's name"
    )
    parser.add_argument("--description", metavar="TEXT", help="the job's description")
    parser.add_argument("--organization", metavar="ID", help=f"default: ${ENV_ORGANIZATION_ID}")
    parser.add_argument("--image", metavar="IMAGE", help="the version's image (platform only)")
    parser.add_argument(
        "--grace",
        type=_grace_seconds,
        metavar="SECONDS",
        help=f"stop grace period before the kill (default ${ENV_STOP_GRACE} or 25)",
    )
    parser.add_argument(
        "--output-json",
        metavar="FILE",
        help="also write the outcome (job id, status, statistics, model id) as JSON to FILE",
    )
    parser.set_defaults(func=_cli_run)


def _grace_seconds(text: str) -> float:
    """``--grace``: the same check as ``ABEJA_RUNTIME_STOP_GRACE`` (seconds >= 0)."""
    try:
        return check_duration(float(text), "--grace")
    except (ValueError, ConfigurationError):
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds >= 0, got {text!r}"
        ) from None


def _cli_run(args: argparse.Namespace) -> int:
    try:
        datasets = parse_assignments(args.dataset, "--dataset")
        env = parse_assignments(args.env, "--env")
        result = run_handler(
            args.handler,
            source=args.source,
            datasets=datasets,
            env=env,
            result_dir=args.result_dir,
            job_definition_name=args.job_definition,
            description=args.description,
            organization=args.organization,
            image=args.image,
            grace_period=args.grace,
        )
    except AbejaRuntimeError as exc:
        print(f"abeja-runtime: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exit_code_for_error(exc)
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return result.exit_code
