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
from pathlib import Path, PurePosixPath

from .errors import InvalidDataFormat

__all__ = ["check_member_name", "safe_extract"]

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
