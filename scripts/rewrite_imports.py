#!/usr/bin/env python3
"""Rewrite ``abeja_runtime`` module paths from the flat layout to the wings (issue 16).

Usage: ``python scripts/rewrite_imports.py PATH...`` (files, or directories searched for
``*.py``, ``*.md``, ``*.sh``, ``*.txt``, ``*.toml`` files). Prints each file it changed.

What it rewrites, in every file it is given:

* ``from abeja_runtime.x import a, b as c`` (one line or parenthesised): each name goes
  to the module that now defines it; names that went to different modules become one
  statement each;
* ``from abeja_runtime import x`` where ``x`` was a module: ``from <new parent> import
  <new name> [as x]``;
* every other dotted path that starts with ``abeja_runtime.`` (``import`` statements,
  monkeypatch targets, ``python -m`` arguments, ``sys.modules`` keys, docstrings);
* a file path of a moved module: ``abeja_runtime/sysmetrics.py`` becomes
  ``abeja_runtime/statistics/sysmetrics.py``.

What it leaves alone: logger names. ``logging.getLogger("abeja_runtime.reporter")``,
``logger="abeja_runtime.http"`` (caplog) and the like stay as they are, because the
package keeps its logger names stable (users' logging configuration names them).

Idempotent: a path already in the new layout is never rewritten again. The output is
not sorted: run ``ruff check --fix --select I`` and ``ruff format`` on the files after.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

P = "abeja_runtime"

#: old module -> new module (every name in it moved with it)
MOVES: dict[str, str] = {
    f"{P}.client": f"{P}.api.client",
    f"{P}.http": f"{P}.api.transport",
    f"{P}.retry": f"{P}.api.retry",
    f"{P}.multipart": f"{P}.api.multipart",
    f"{P}.reporter": f"{P}.statistics.reporter",
    f"{P}._call_check": f"{P}.statistics._call_check",
    f"{P}._default_reporter": f"{P}.statistics._default_reporter",
    f"{P}._delivery_state": f"{P}.statistics._delivery_state",
    f"{P}._documents": f"{P}.statistics._documents",
    f"{P}._process_hooks": f"{P}.statistics._process_hooks",
    f"{P}._reporter_delivery": f"{P}.statistics._reporter_delivery",
    f"{P}._reporter_setup": f"{P}.statistics._reporter_setup",
    f"{P}._sender": f"{P}.statistics._sender",
    f"{P}._spool_files": f"{P}.statistics._spool_files",
    f"{P}.spool": f"{P}.statistics.spool",
    f"{P}.sinks": f"{P}.statistics.sinks",
    f"{P}.sysmetrics": f"{P}.statistics.sysmetrics",
    f"{P}.models": f"{P}.artifacts.models",
    f"{P}.downloads": f"{P}.artifacts.downloads",
    f"{P}.handler_main": f"{P}.runner.child",
    f"{P}.api_target": f"{P}.runner.api_target",
    f"{P}.commands": f"{P}.cli.commands",
    f"{P}.sync_command": f"{P}.cli.sync",
    f"{P}.emulator.cli": f"{P}.cli.emulator",
}

#: old module that is now a package: (the module that holds its code, the names its
#: face ``__init__`` exports). A name the face exports keeps its path; any other name
#: goes to the code's module.
FACES: dict[str, tuple[str, frozenset[str]]] = {
    f"{P}.statistics": (
        f"{P}.statistics.document",
        frozenset(
            {
                "STAGES",
                "STATISTICS",
                "Statistics",
                "check_document",
                "check_epoch",
                "check_progress",
                "check_value",
                # added by the face: the reporter's names
                "StatisticsReporter",
                "default_last_document",
                "flush",
                "get_reporter",
                "report",
            }
        ),
    ),
    f"{P}.runner": (f"{P}.runner.run", frozenset({"run_handler"})),
    f"{P}.cli": (f"{P}.cli._main", frozenset({"main"})),
}

#: (old module, name) -> new module, for a name that left its module's new home
NAMES: dict[tuple[str, str], str] = {
    (f"{P}.sync_command", "deliver_spool"): f"{P}.statistics.delivery",
}

#: a module split in parts: (its old paths) -> {part: the names that went there}
SPLITS: dict[tuple[str, ...], dict[str, tuple[str, ...]]] = {
    (f"{P}.runner", f"{P}.runner.run"): {
        f"{P}.runner.inputs": (
            "DEFAULT_CHECK_TIMEOUT",
            "DEFAULT_GRACE_PERIOD",
            "DEFAULT_POLL_INTERVAL",
            "JOB_ENV_NAMES",
            "RESERVED_ENV_NAMES",
            "_DEFINITION_NAME_BAD",
            "_ENV_NAME",
            "_default_storage_dir",
            "_prepare_result_dir",
            "_validate_datasets",
            "_validate_env",
            "check_handler",
            "default_definition_name",
            "parse_assignments",
        ),
        f"{P}.runner.source": (
            "SOURCE_EXCLUDED_DIRS",
            "SOURCE_EXCLUDED_SUFFIXES",
            "_directory_is_empty",
            "source_archive",
            "upload_result_dir_as_model",
            "zip_directory",
        ),
        f"{P}.runner.process": (
            "_ProcessTree",
            "_child_pythonpath",
            "_forwarded_signals",
            "_is_our_child",
            "_read_outcome",
            "_signal_name",
            "kill_process_tree",
        ),
        f"{P}.runner.console": (
            "_Console",
            "_human_size",
            "_is_live",
            "_pump",
            "_scalar",
            "format_progress",
            "progress_fraction",
        ),
        f"{P}.runner.job_api": ("RunResult", "_JobStatus", "_JobWatcher"),
        f"{P}.cli.run": ("_cli_run", "_grace_seconds", "register"),
    },
    (f"{P}.commands", f"{P}.cli.commands"): {
        f"{P}.cli.tables": (
            "_cell",
            "_clip",
            "_entries",
            "_paging",
            "_progress_cell",
            "_time",
            "render_record",
            "render_table",
        ),
    },
}
for _olds, _parts in SPLITS.items():
    for _part, _names in _parts.items():
        for _old in _olds:
            NAMES.update({(_old, _name): _part for _name in _names})

OLD = set(MOVES) | set(FACES) | {module for module, _ in NAMES}
NEW = (
    set(MOVES.values())
    | {code for code, _ in FACES.values()}
    | set(NAMES.values())
    | {name.rsplit(".", 1)[0] for name in NAMES.values()}
)

DOTTED = re.compile(r"(?<![\w.])abeja_runtime(?:\.\w+)+")
#: a logger name: kept as it is
LOGGER_BEFORE = re.compile(r"(?:getLogger\(|logger\s*=\s*)[\"']$")
FROM_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from (?P<module>abeja_runtime(?:\.\w+)*) import "
    r"(?P<names>\([^)]*\)|[^\n]*)",
    re.M,
)


def resolve(dotted: str) -> str:
    """``dotted`` (a module, or a module and a name in it) in the new layout."""
    parts = dotted.split(".")
    old = next(
        (n for n in range(len(parts), 1, -1) if ".".join(parts[:n]) in OLD),
        None,
    )
    if old is None:
        return dotted
    prefix, rest = ".".join(parts[:old]), parts[old:]
    if any(
        ".".join(parts[:n]) in NEW and ".".join(parts[:n]) != prefix
        for n in range(len(parts), old, -1)
    ):
        return dotted  # already the new layout
    if rest and (prefix, rest[0]) in NAMES:
        return ".".join([NAMES[(prefix, rest[0])], *rest])
    if prefix in FACES:
        code, exported = FACES[prefix]
        if not rest or rest[0] in exported:
            return dotted
        return ".".join([code, *rest])
    if prefix in MOVES:
        return ".".join([MOVES[prefix], *rest])
    return dotted


def _split_names(text: str) -> tuple[list[tuple[str, str | None]], str] | None:
    """The ``(name, alias)`` pairs of an import list and a trailing comment."""
    comment = ""
    if text.startswith("("):
        body = text[1:-1]
        if "#" in body:
            return None  # comments inside the parentheses: leave it to a person
    else:
        body, _, comment = text.partition("#")
        comment = f"  #{comment.rstrip()}" if comment else ""
        if body.rstrip().endswith("\\"):
            return None
    pairs: list[tuple[str, str | None]] = []
    for item in body.replace("\n", " ").split(","):
        item = item.strip()
        if not item:
            continue
        name, _, alias = item.partition(" as ")
        pairs.append((name.strip(), alias.strip() or None))
    return pairs, comment


def rewrite_from_imports(text: str) -> str:
    def sub(match: re.Match[str]) -> str:
        module = match.group("module")
        split = _split_names(match.group("names"))
        if split is None:
            return match.group(0)
        pairs, comment = split
        groups: dict[str, list[str]] = {}
        for name, alias in pairs:
            target = resolve(f"{module}.{name}")
            new_module, _, new_name = target.rpartition(".")
            if new_name != name and alias is None:
                alias = name
            groups.setdefault(new_module, []).append(
                new_name if alias is None or alias == new_name else f"{new_name} as {alias}"
            )
        if list(groups) == [module] and all(
            (n if a is None else f"{n} as {a}") in groups[module] for n, a in pairs
        ):
            return match.group(0)  # nothing moved
        indent = match.group("indent")
        lines = [f"{indent}from {m} import {', '.join(names)}" for m, names in groups.items()]
        return "\n".join(lines) + comment

    return FROM_IMPORT.sub(sub, text)


def rewrite_dotted(text: str) -> str:
    def sub(match: re.Match[str]) -> str:
        if LOGGER_BEFORE.search(text, max(0, match.start() - 30), match.start()):
            return match.group(0)
        return resolve(match.group(0))

    return DOTTED.sub(sub, text)


FILE_PATH = re.compile(r"(?<![\w/])abeja_runtime(?:/\w+)+\.py\b")


def rewrite_file_paths(text: str) -> str:
    def sub(match: re.Match[str]) -> str:
        dotted = match.group(0)[: -len(".py")].replace("/", ".")
        if dotted in MOVES:
            return MOVES[dotted].replace(".", "/") + ".py"
        if dotted in FACES:
            return FACES[dotted][0].replace(".", "/") + ".py"
        return match.group(0)

    return FILE_PATH.sub(sub, text)


def rewrite(text: str) -> str:
    return rewrite_file_paths(rewrite_dotted(rewrite_from_imports(text)))


SUFFIXES = {".py", ".md", ".sh", ".txt", ".toml", ".cfg", ".ini"}


def files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            found.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and p.suffix in SUFFIXES and ".venv" not in p.parts
            )
        elif path.is_file():
            found.append(path)
    return found


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    for path in files(argv):
        text = path.read_text(encoding="utf-8")
        new = rewrite(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
