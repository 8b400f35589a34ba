"""Training API operations from the shell: ``abeja-runtime definitions|versions|jobs|models``.

Each command is one (sometimes two) :class:`~abeja_runtime.api.client.APIClient`
calls. Output is a human table or record by default and the API's JSON with
``--json`` (for scripts: stable, complete, nothing else on stdout). Errors are
one line on stderr, and the exit code says what kind of failure it was (see
:mod:`abeja_runtime.exit_codes`: 3 not found, 4 not authorized, 5 conflict, 6
unreachable, 2 usage, 1 anything else).

Which API: the same choice as ``abeja-runtime run`` (:mod:`abeja_runtime.runner.api_target`):
platform credentials in the environment select ``ABEJA_API_URL`` and the
organization ``--organization``/``ABEJA_ORGANIZATION_ID``; without them the
embedded emulator on the per-user data dir answers, so the jobs and models of
earlier local runs can be listed, inspected and downloaded.

Tables and records are drawn by :mod:`abeja_runtime.cli.tables`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AbejaRuntimeError, ConfigurationError
from ..exit_codes import EXIT_OK, exit_code_for_error
from ..runner.api_target import ENV_ORGANIZATION_ID, ApiTarget, open_target
from ..validators import check_id, check_version
from .tables import (
    _entries,
    _paging,
    _time,
    jobs_table,
    models_table,
    render_record,
    render_table,
    versions_table,
)

__all__ = ["register"]

#: (human text, JSON value) a command produces
Output = tuple[str, Any]
Action = Callable[[ApiTarget, argparse.Namespace], Output]


def _archived_filter(args: argparse.Namespace) -> bool | None:
    if getattr(args, "include_archived", False):
        return False
    if getattr(args, "exclude_archived", False):
        return True
    return None


# --------------------------------------------------------------------------- definitions


def _definitions_list(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.get_training_job_definitions(
        t.organization_id, filter_archived=_archived_filter(a), offset=a.offset, limit=a.limit
    )
    entries = _entries(response)
    if not entries:
        return "no job definitions" + _paging(response, 0), response
    rows = [
        [
            e.get("name"),
            e.get("version_count"),
            e.get("model_count"),
            e.get("archived"),
            _time(e.get("created_at")),
        ]
        for e in entries
    ]
    table = render_table(["NAME", "VERSIONS", "MODELS", "ARCHIVED", "CREATED"], rows)
    return table + _paging(response, len(entries)), response


def _definitions_get(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.get_training_job_definition(
        t.organization_id, a.name, include_jobs=bool(a.jobs)
    )
    text = render_record(
        response,
        [
            "name",
            "job_definition_id",
            "version_count",
            "model_count",
            "archived",
            "created_at",
            "modified_at",
        ],
    )
    versions = [v for v in response.get("versions") or [] if isinstance(v, dict)]
    if versions:
        text += "\n\nversions:\n" + versions_table(versions)
    jobs = response.get("jobs")
    if a.jobs and isinstance(jobs, (list, dict)):
        job_list = _entries(jobs)
        text += "\n\njobs:\n" + (jobs_table(job_list) if job_list else "none")
    return text, response


def _definitions_create(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.create_training_job_definition(t.organization_id, a.name)
    return f"created job definition {a.name} ({response.get('job_definition_id')})", response


def _call(method: str, *names: str, done: str) -> Action:
    """An action that is one client call with the organization and ``names`` args.

    ``done`` is the human line, formatted with the parsed arguments.
    """

    def action(t: ApiTarget, a: argparse.Namespace) -> Output:
        response = getattr(t.client, method)(t.organization_id, *(getattr(a, n) for n in names))
        return done.format(**vars(a)), response

    return action


# --------------------------------------------------------------------------- versions


def _versions_list(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.get_training_job_definition_versions(
        t.organization_id, a.definition, filter_archived=_archived_filter(a)
    )
    entries = _entries(response)
    if not entries:
        return f"no versions of {a.definition}", response
    return versions_table(entries), response


_VERSION_FIELDS = [
    "job_definition_version",
    "job_definition_id",
    "handler",
    "image",
    "environment",
    "datasets",
    "description",
    "archived",
    "created_at",
    "modified_at",
]


def _versions_get(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.get_training_job_definition_version(
        t.organization_id, a.definition, a.version
    )
    return render_record(response, _VERSION_FIELDS), response


def _versions_create(t: ApiTarget, a: argparse.Namespace) -> Output:
    from ..runner.inputs import parse_assignments
    from ..runner.source import SOURCE_EXCLUDED_DIRS, SOURCE_EXCLUDED_SUFFIXES, source_archive
    from ..validators import parse_handler

    spec = parse_handler(a.handler)
    source = Path(a.source)
    if not source.is_dir():
        raise ConfigurationError(f"--source {a.source!r} is not a directory")
    parameters: dict[str, Any] = {"handler": str(spec)}
    if a.image:
        parameters["image"] = a.image
    environment = parse_assignments(a.env, "--env")
    if environment:
        parameters["environment"] = environment
    if a.description is not None:
        parameters["description"] = a.description
    archive, files, _size = source_archive(
        source,
        exclude_names=SOURCE_EXCLUDED_DIRS,
        exclude_suffixes=SOURCE_EXCLUDED_SUFFIXES,
    )
    response = t.client.create_training_job_definition_version_native_api(
        t.organization_id, a.definition, archive, parameters
    )
    number = response.get("job_definition_version")
    return f"created version {number} of {a.definition} ({files} files from {source})", response


def _versions_update(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.patch_training_job_definition_version(
        t.organization_id, a.definition, a.version, a.description
    )
    return f"updated version {a.version} of {a.definition}", response


# --------------------------------------------------------------------------- jobs


def _jobs_list(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.get_training_jobs(
        t.organization_id,
        a.definition,
        limit=a.limit,
        offset=a.offset,
        filter_archived=_archived_filter(a),
    )
    entries = _entries(response)
    if not entries:
        return f"no jobs of {a.definition}" + _paging(response, 0), response
    return jobs_table(entries) + _paging(response, len(entries)), response


_JOB_FIELDS = [
    "training_job_id",
    "job_definition_id",
    "job_definition_version",
    "status",
    "status_message",
    "exec_env",
    "instance_type",
    "description",
    "datasets",
    "environment",
    "archived",
    "created_at",
    "start_time",
    "completion_time",
    "modified_at",
]


def _jobs_get(t: ApiTarget, a: argparse.Namespace) -> Output:
    from ..runner.console import format_progress

    response = t.client.get_training_job(t.organization_id, a.definition, a.job)
    text = render_record(response, _JOB_FIELDS)
    stats = response.get("statistics")
    if stats:
        width = len("job_definition_version") + 1
        text += f"\n{'progress:':<{width}} {format_progress(stats)}"
        text += f"\n{'statistics:':<{width}} {json.dumps(stats, ensure_ascii=False)}"
    return text, response


def _jobs_create(t: ApiTarget, a: argparse.Namespace) -> Output:
    from ..runner.inputs import parse_assignments

    response = t.client.create_training_job(
        t.organization_id,
        a.definition,
        a.version,
        datasets=parse_assignments(a.dataset, "--dataset") or None,
        instance_type=a.instance_type,
        environment=parse_assignments(a.env, "--env") or None,
        description=a.description,
        export_log=True if a.export_log else None,
    )
    job_id = response.get("training_job_id") or response.get("id")
    return f"created job {job_id} ({response.get('status')})", response


def _jobs_result(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.get_training_result(t.organization_id, a.definition, a.job)
    uri = (((response.get("artifacts") or {}).get("complete") or {}).get("uri")) or None
    if a.output:
        if not uri:
            raise AbejaRuntimeError(f"job {a.job} has no result to download")
        from ..artifacts.models import job_model_checksums

        expected = job_model_checksums(t.client, t.organization_id, a.definition, a.job)
        path, size = _download(uri, Path(a.output), a.force, expected, f"result of job {a.job}")
        return f"saved the result of job {a.job} to {path} ({size} bytes)", {
            "path": str(path),
            "size": size,
        }
    return (uri or "no result"), response


# --------------------------------------------------------------------------- models


def _models_list(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.get_training_models(
        t.organization_id, a.definition, filter_archived=_archived_filter(a)
    )
    entries = _entries(response)
    if not entries:
        return f"no models of {a.definition}", response
    return models_table(entries), response


_MODEL_FIELDS = [
    "training_model_id",
    "job_definition_id",
    "training_job_id",
    "description",
    "exec_env",
    "user_parameters",
    "metrics",
    "archived",
    "created_at",
    "modified_at",
]


def _models_get(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.get_training_model(t.organization_id, a.definition, a.model)
    return render_record(response, _MODEL_FIELDS), response


def _models_create(t: ApiTarget, a: argparse.Namespace) -> Output:
    # the same path as the runner's final upload: streamed, checksum-verified, and
    # looked up before any retry so that a dropped connection makes no duplicate
    from ..artifacts.models import upload_model

    metrics: dict[str, Any] | None = None
    if a.metrics is not None:
        try:
            metrics = json.loads(a.metrics)
        except ValueError as exc:
            raise ConfigurationError(f"--metrics is not valid JSON: {exc}") from None
        if not isinstance(metrics, dict):
            raise ConfigurationError("--metrics must be a JSON object")
    response = upload_model(
        a.path,
        description=a.description,
        metrics=metrics,
        training_job_id=a.job,
        job_definition_name=a.definition,
        progress=False,
        client=t.client,
        organization_id=t.organization_id,
    )
    model_id = response.get("training_model_id") or response.get("id")
    return f"created model {model_id} of {a.definition} from {a.path}", response


def _models_update(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.patch_training_model(
        t.organization_id, a.definition, a.model, a.description
    )
    return f"updated model {a.model} of {a.definition}", response


def _download(
    uri: str, dest: Path, force: bool, expected_sha256: Any, what: str
) -> tuple[Path, int]:
    """Stream a presigned URL to ``dest`` through the one verified downloader.

    ``downloads.fetch_verified``: no credentials sent, the length and SHA-256
    checked, written beside ``dest`` and renamed at the end, so an interrupted
    or corrupted download never leaves a file under the final name.
    """
    from ..artifacts.downloads import fetch_verified

    if dest.exists() and not force:
        raise ConfigurationError(f"{dest} exists (use --force to overwrite)")
    path, size, _sha = fetch_verified(uri, dest, expected_sha256=expected_sha256, what=what)
    return path, size


def _models_download(t: ApiTarget, a: argparse.Namespace) -> Output:
    response = t.client.download_training_model(t.organization_id, a.definition, a.model)
    uri = response.get("download_uri")
    if not isinstance(uri, str) or not uri:
        raise AbejaRuntimeError(f"model {a.model} has no download_uri")
    dest = Path(a.output) if a.output else Path(f"model-{a.model}.zip")
    model = t.client.get_training_model(t.organization_id, a.definition, a.model)
    path, size = _download(uri, dest, a.force, model.get("sha256"), f"model {a.model}")
    return f"saved model {a.model} to {path} ({size} bytes)", {
        "path": str(path),
        "size": size,
        "training_model_id": a.model,
    }


# --------------------------------------------------------------------------- wiring


def _execute(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        def announce(line: str) -> None:
            print(f"abeja-runtime: {line}", file=sys.stderr)

        try:
            with open_target(args.organization, announce=announce, brief=True) as target:
                text, data = action(target, args)
        except AbejaRuntimeError as exc:
            print(f"abeja-runtime: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return exit_code_for_error(exc)
        if args.json:
            print(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            print(text)
        return EXIT_OK

    return run


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    common.add_argument(
        "--organization", metavar="ID", help=f"organization id (default ${ENV_ORGANIZATION_ID})"
    )
    return common


def _archived_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--include-archived", action="store_true", help="list archived too")
    group.add_argument("--exclude-archived", action="store_true", help="leave archived out")


def _paging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=_non_negative, metavar="N", help="at most N entries")
    parser.add_argument("--offset", type=_non_negative, metavar="N", help="skip N entries")


def _non_negative(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return int(text)


def _positive(text: str) -> int:
    """A version number: :func:`~abeja_runtime.validators.check_version` (ASCII, >= 1)."""
    try:
        return check_version(text, "")
    except ConfigurationError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None


def _job_id(text: str) -> str:
    """A job id given as an option: checked here, because it travels in an upload's body."""
    try:
        return check_id(text, "")
    except ConfigurationError:
        raise argparse.ArgumentTypeError(f"must be an id of 13 digits, got {text!r}") from None


class _Group:
    """Adds ``abeja-runtime <group> <action>`` parsers with the common options."""

    def __init__(
        self,
        subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_text: str,
    ) -> None:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        self.sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        self.common = _common()

    def add(self, name: str, help_text: str, action: Action) -> argparse.ArgumentParser:
        parser = self.sub.add_parser(
            name, help=help_text, description=help_text, parents=[self.common]
        )
        parser.set_defaults(func=_execute(action))
        return parser


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``definitions``, ``versions``, ``jobs`` and ``models`` to the CLI."""
    g = _Group(subparsers, "definitions", "training job definitions")
    p = g.add("list", "list job definitions", _definitions_list)
    _archived_options(p)
    _paging_options(p)
    p = g.add("get", "show a job definition and its versions", _definitions_get)
    p.add_argument("name", metavar="NAME")
    p.add_argument("--jobs", action="store_true", help="include the definition's jobs")
    p = g.add("create", "create a job definition", _definitions_create)
    p.add_argument("name", metavar="NAME")
    for verb in ("archive", "unarchive", "delete"):
        p = g.add(
            verb,
            f"{verb} a job definition",
            _call(
                f"{verb}_training_job_definition", "name", done=f"{verb}d job definition {{name}}"
            ),
        )
        p.add_argument("name", metavar="NAME")

    g = _Group(subparsers, "versions", "versions of a job definition (uploaded source code)")
    p = g.add("list", "list the versions of a job definition", _versions_list)
    p.add_argument("definition", metavar="DEFINITION")
    _archived_options(p)
    p = g.add("get", "show a version", _versions_get)
    p.add_argument("definition", metavar="DEFINITION")
    p.add_argument("version", metavar="VERSION", type=_positive)
    p = g.add("create", "upload a source directory as a new version", _versions_create)
    p.add_argument("definition", metavar="DEFINITION")
    p.add_argument("--source", default=".", metavar="DIR", help="directory to upload")
    p.add_argument("--handler", required=True, metavar="MODULE:FUNCTION")
    p.add_argument("--image", metavar="IMAGE", help="runtime image (the platform needs one)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--description", metavar="TEXT")
    p = g.add("update", "change a version's description", _versions_update)
    p.add_argument("definition", metavar="DEFINITION")
    p.add_argument("version", metavar="VERSION", type=_positive)
    p.add_argument("--description", required=True, metavar="TEXT")
    for verb in ("archive", "unarchive", "delete"):
        p = g.add(
            verb,
            f"{verb} a version",
            _call(
                f"{verb}_training_job_definition_version",
                "definition",
                "version",
                done=f"{verb}d version {{version}} of {{definition}}",
            ),
        )
        p.add_argument("definition", metavar="DEFINITION")
        p.add_argument("version", metavar="VERSION", type=_positive)

    g = _Group(subparsers, "jobs", "training jobs")
    p = g.add("list", "list the jobs of a job definition", _jobs_list)
    p.add_argument("definition", metavar="DEFINITION")
    _archived_options(p)
    _paging_options(p)
    p = g.add("get", "show a job, its status and statistics", _jobs_get)
    p.add_argument("definition", metavar="DEFINITION")
    p.add_argument("job", metavar="JOB_ID")
    p = g.add(
        "create",
        "create a job of a version (the platform runs it; to run one here: abeja-runtime run)",
        _jobs_create,
    )
    p.add_argument("definition", metavar="DEFINITION")
    p.add_argument("version", metavar="VERSION", type=_positive)
    p.add_argument("--dataset", action="append", default=[], metavar="ALIAS=ID")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--instance-type", metavar="TYPE", help="cpu-N, gpu-N or gpu:<class>-N")
    p.add_argument("--description", metavar="TEXT")
    p.add_argument("--export-log", action="store_true", help="include the log in the model")
    p = g.add("result", "show (or with --output download) a job's result", _jobs_result)
    p.add_argument("definition", metavar="DEFINITION")
    p.add_argument("job", metavar="JOB_ID")
    p.add_argument("--output", metavar="FILE", help="download the result archive to FILE")
    p.add_argument("--force", action="store_true", help="overwrite FILE")
    for verb, past in (("stop", "stopped"), ("archive", "archived"), ("unarchive", "unarchived")):
        p = g.add(
            verb,
            f"{verb} a job",
            _call(f"{verb}_training_job", "definition", "job", done=f"{past} job {{job}}"),
        )
        p.add_argument("definition", metavar="DEFINITION")
        p.add_argument("job", metavar="JOB_ID")

    g = _Group(subparsers, "models", "trained models")
    p = g.add("list", "list the models of a job definition", _models_list)
    p.add_argument("definition", metavar="DEFINITION")
    _archived_options(p)
    p = g.add("get", "show a model and its metrics", _models_get)
    p.add_argument("definition", metavar="DEFINITION")
    p.add_argument("model", metavar="MODEL_ID")
    p = g.add("create", "upload a file or directory as a job's model", _models_create)
    p.add_argument("definition", metavar="DEFINITION")
    p.add_argument("path", metavar="PATH", help="a file (zipped unless it is a zip) or directory")
    p.add_argument(
        "--job", required=True, metavar="JOB_ID", type=_job_id, help="the job the model comes from"
    )
    p.add_argument("--description", metavar="TEXT")
    p.add_argument("--metrics", metavar="JSON", help="metrics as a JSON object")
    p = g.add("update", "change a model's description", _models_update)
    p.add_argument("definition", metavar="DEFINITION")
    p.add_argument("model", metavar="MODEL_ID")
    p.add_argument("--description", required=True, metavar="TEXT")
    p = g.add("download", "download a model's archive", _models_download)
    p.add_argument("definition", metavar="DEFINITION")
    p.add_argument("model", metavar="MODEL_ID")
    p.add_argument("--output", metavar="FILE", help="default: ./model-<id>.zip")
    p.add_argument("--force", action="store_true", help="overwrite FILE")
    for verb in ("archive", "unarchive"):
        p = g.add(
            verb,
            f"{verb} a model",
            _call(f"{verb}_training_model", "definition", "model", done=f"{verb}d model {{model}}"),
        )
        p.add_argument("definition", metavar="DEFINITION")
        p.add_argument("model", metavar="MODEL_ID")
