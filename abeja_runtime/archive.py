"""Safe extraction of a downloaded model or training-result zip.

Why not ``ZipFile.extractall``: it silently rewrites ``..`` and absolute names
instead of refusing them, follows a symlink already present under the
destination, and cannot tell a symlink entry from a file. A model archive comes
from the network, so anything that could land outside ``dest`` refuses the
whole archive *before* a single byte is written.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath

from .errors import InvalidDataFormat

__all__ = ["check_member_name", "safe_extract", "tree_files"]

_COPY_CHUNK = 1024 * 1024


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    mode = (info.external_attr >> 16) & 0xFFFF
    return stat.S_ISLNK(mode)


def check_member_name(name: str) -> PurePosixPath:
    """The archive-relative path of an entry, or an error if it could escape.

    Raises:
        InvalidDataFormat: an absolute path, a drive letter, a ``..`` part, a
            backslash or a NUL in the name, or an empty name.
    """
    if not name or "\x00" in name or "\\" in name:
        raise InvalidDataFormat(f"archive entry {name!r} has an unsafe name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise InvalidDataFormat(f"archive entry {name!r} is an absolute path")
    rel = PurePosixPath(name)
    if ".." in rel.parts:
        raise InvalidDataFormat(f"archive entry {name!r} points outside the archive ('..')")
    if not rel.parts or rel.parts == (".",):
        raise InvalidDataFormat(f"archive entry {name!r} has an empty name")
    return rel


def _inside(root: Path, target: Path) -> bool:
    try:
        target.relative_to(root)
    except ValueError:
        return False
    return True


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Extract a zip into ``dest`` without ever writing outside it.

    Every entry is checked first (names, symlink entries); then each target is
    resolved after its parent directories exist, so a symlink already inside
    ``dest`` that points elsewhere is refused too. Files inside ``dest`` with
    the same names are replaced.

    Args:
        archive: path of the zip file.
        dest: the directory to extract into (created if missing).

    Returns:
        the files written, in archive order.

    Raises:
        InvalidDataFormat: not a zip, or an entry that is absolute, has ``..``,
            is a symlink, or would resolve outside ``dest``.
    """
    if not zipfile.is_zipfile(archive):
        raise InvalidDataFormat(f"{os.fspath(archive)!r} is not a zip archive")
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    written: list[Path] = []
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        for info in members:
            rel = check_member_name(info.filename)
            if _is_symlink(info):
                raise InvalidDataFormat(f"archive entry {info.filename!r} is a symlink; refused")
            if not _inside(root, (root / rel).resolve()):
                raise InvalidDataFormat(f"archive entry {info.filename!r} resolves outside {root}")
            plan.append((info, rel))
        for info, rel in plan:
            target = root / rel
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                if not _inside(root, target.resolve()):
                    raise InvalidDataFormat(f"archive entry {info.filename!r} escapes {root}")
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            # re-check after creating parents: a symlinked directory or file
            # already under dest must not redirect the write elsewhere
            if not _inside(root, target.parent.resolve()) or target.is_symlink():
                raise InvalidDataFormat(f"archive entry {info.filename!r} escapes {root}")
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
            written.append(target)
    return written


def tree_files(
    root: Path,
    *,
    exclude_dirs: Iterable[Path] = (),
    exclude_names: frozenset[str] = frozenset(),
    exclude_suffixes: tuple[str, ...] = (),
    on_skip: Callable[[Path, str], None] | None = None,
) -> Iterator[tuple[Path, str]]:
    """``(file, name in a zip)`` for every regular file under ``root``, in sorted order.

    The one tree walker behind every zip we make of a directory (a version's
    source, a model): a symbolic link is kept only when it resolves to a regular
    file inside the tree (its target's bytes are stored), so a link to a dataset
    elsewhere never drags it into an upload and a link loop never hangs us;
    symlinked directories, links out of the tree and sockets/devices/pipes are
    skipped and reported through ``on_skip(path, why)``.

    Args:
        root: the directory; names in the zip are relative to it.
        exclude_dirs: directories (resolved) not to descend into.
        exclude_names: directory names not to descend into (``.git``, ``.venv``).
        exclude_suffixes: file name endings to leave out (``.pyc``).
        on_skip: called for each link or special file that is left out.
    """
    real_root = root.resolve()
    skipped_dirs = {p.resolve() for p in exclude_dirs}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            if d in exclude_names or (here / d).resolve() in skipped_dirs:
                continue
            if (here / d).is_symlink():
                if on_skip is not None:
                    on_skip(here / d, "symlinked directory")
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.endswith(exclude_suffixes):
                continue
            path = here / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(real_root):
                    if on_skip is not None:
                        on_skip(path, "links out of the tree")
                    continue
                if not target.is_file():
                    if on_skip is not None:
                        on_skip(path, "not a file")
                    continue
            elif not stat.S_ISREG(path.lstat().st_mode):
                if on_skip is not None:
                    on_skip(path, "not a regular file")
                continue
            yield path, path.relative_to(root).as_posix()
