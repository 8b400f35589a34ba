"""Zips in and out: the one streamed zip writer, the one tree walker, safe extraction.

Why a streamed writer (:class:`StreamedZip`, on zipstream-ng): a model is
mostly incompressible float weights, so its members are *stored*; then the
archive's exact length is known from the files' sizes alone, before its first
byte, and the zip can be produced while the request body is sent: no temporary
copy on the results volume, no minutes of deflate for a few percent, and the
upload runs at link speed. zipstream-ng (LGPL-3.0, used as an installed
library) computes that length, writes ZIP64 records past 4 GiB and uses data
descriptors, which a hand-written writer would have to get right again.

Why not ``ZipFile.extractall``: it silently rewrites ``..`` and absolute names
instead of refusing them, follows a symlink already present under the
destination, cannot tell a symlink entry from a file, and has no limit on what
an archive expands to. A model archive comes from the network, so anything
that could land outside ``dest``, clash, or expand past the limits refuses the
whole archive *before* a single byte is written.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .config import IO_CHUNK_SIZE
from .errors import InvalidDataFormat

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_MAX_TOTAL_BYTES",
    "StreamedZip",
    "check_member_name",
    "is_zip_archive",
    "safe_extract",
    "tree_files",
    "warn_skipped",
]

logger = logging.getLogger("abeja_runtime.archive")


#: most entries an extracted archive may hold (``max_entries`` raises it)
DEFAULT_MAX_ENTRIES = 100_000
#: most bytes an extracted archive may expand to (``max_total_bytes`` raises it)
DEFAULT_MAX_TOTAL_BYTES = 1024**4  # 1 TiB: larger than any model, smaller than a bomb
#: most an archive over 1 MiB may expand relative to its compressed size
#: (``max_ratio`` raises it); stored weights are ~1, deflated text ~10
DEFAULT_MAX_RATIO = 200
_RATIO_FLOOR = 1024 * 1024


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


def _plan(
    members: list[zipfile.ZipInfo],
    root: Path,
    archive_size: int,
    max_entries: int,
    max_total_bytes: int,
    max_ratio: float,
) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Every check that can be made from the central directory, before any write."""
    if len(members) > max_entries:
        raise InvalidDataFormat(
            f"archive has {len(members)} entries, over the limit of {max_entries} "
            "(raise max_entries to extract it)"
        )
    total = sum(info.file_size for info in members if not info.is_dir())
    if total > max_total_bytes:
        raise InvalidDataFormat(
            f"archive expands to {total} bytes, over the limit of {max_total_bytes} "
            "(raise max_total_bytes to extract it)"
        )
    if total > _RATIO_FLOOR and total > max_ratio * max(archive_size, 1):
        raise InvalidDataFormat(
            f"archive of {archive_size} bytes expands to {total} bytes, over {max_ratio:g} "
            "times its size (a zip bomb?; raise max_ratio to extract it)"
        )
    plan: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    files: dict[PurePosixPath, str] = {}
    dirs: dict[PurePosixPath, str] = {}
    for info in members:
        rel = check_member_name(info.filename)
        if _is_symlink(info):
            raise InvalidDataFormat(f"archive entry {info.filename!r} is a symlink; refused")
        if not _inside(root, (root / rel).resolve()):
            raise InvalidDataFormat(f"archive entry {info.filename!r} resolves outside {root}")
        if info.is_dir():
            dirs.setdefault(rel, info.filename)
        elif rel in files:
            raise InvalidDataFormat(
                f"archive entries {files[rel]!r} and {info.filename!r} are the same file"
            )
        else:
            files[rel] = info.filename
        for parent in rel.parents:
            if parent != PurePosixPath("."):
                dirs.setdefault(parent, info.filename)
        plan.append((info, rel))
    for rel, name in files.items():
        if rel in dirs:
            raise InvalidDataFormat(
                f"archive entry {name!r} is a file, and {dirs[rel]!r} needs it to be a directory"
            )
    return plan


def safe_extract(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_entries: int = DEFAULT_MAX_ENTRIES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> list[Path]:
    """Extract a zip into ``dest`` without ever writing outside it.

    Every entry is checked first (names, symlink entries, a file that another
    entry needs as a directory, the entry count, the total expanded size and
    the expansion ratio); then each target is resolved after its parent
    directories exist, so a symlink already inside ``dest`` that points
    elsewhere is refused too. Files inside ``dest`` with the same names are
    replaced. The declared sizes bound what is written: ``zipfile`` stops an
    entry at its declared size and checks its CRC.

    Args:
        archive: path of the zip file.
        dest: the directory to extract into (created if missing).
        max_entries: most entries accepted (:data:`DEFAULT_MAX_ENTRIES`).
        max_total_bytes: most bytes the files may expand to
            (:data:`DEFAULT_MAX_TOTAL_BYTES`, 1 TiB).
        max_ratio: most the files may expand relative to the archive's size,
            checked once they expand past 1 MiB (:data:`DEFAULT_MAX_RATIO`).

    Returns:
        the files written, in archive order.

    Raises:
        InvalidDataFormat: not a zip, or an entry that is absolute, has ``..``,
            is a symlink, would resolve outside ``dest`` or clashes with a
            directory; or the archive is over a limit. Nothing is written then.
    """
    if not zipfile.is_zipfile(archive):
        raise InvalidDataFormat(f"{os.fspath(archive)!r} is not a zip archive")
    archive_size = os.path.getsize(archive)
    root = Path(dest)
    written: list[Path] = []
    with zipfile.ZipFile(archive) as zf:
        plan = _plan(
            zf.infolist(),
            root.resolve(),
            archive_size,
            max_entries,
            max_total_bytes,
            max_ratio,
        )
        root.mkdir(parents=True, exist_ok=True)
        root = root.resolve()
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
            if target.is_dir():
                raise InvalidDataFormat(
                    f"archive entry {info.filename!r} is a file, but {target} is a directory"
                )
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, IO_CHUNK_SIZE)
            except (zipfile.BadZipFile, EOFError) as exc:  # a CRC or length mismatch
                target.unlink(missing_ok=True)
                raise InvalidDataFormat(
                    f"archive entry {info.filename!r} is corrupted: {exc}"
                ) from None
            written.append(target)
    return written


def is_zip_archive(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is named ``*.zip`` and is a zip whose directory can be read.

    Why the name counts: ``torch.save`` ``.pt``, numpy ``.npz`` and ``.keras``
    files are zips by content, yet they are one model file each; sent as an
    archive they would come back as their internals instead of by name.
    """
    if not os.fspath(path).lower().endswith(".zip"):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False
    return True


def _resolve(path: Path) -> Path | None:
    """``path`` with every link followed, or ``None`` for a link loop (or a broken chain)."""
    try:
        return path.resolve(strict=True)
    except (RuntimeError, OSError):  # RuntimeError: 'Symlink loop' before Python 3.13
        return None


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
    source, a model, ``APIClient`` file lists): a symbolic link is kept only
    when it resolves to a regular file inside the tree (its target's bytes are
    stored), so a link to a dataset elsewhere never drags it into an upload and
    a link loop never hangs or fails us; symlinked directories, link loops and
    broken links, links out of the tree and sockets/devices/pipes are skipped
    and reported through ``on_skip(path, why)`` (see :func:`warn_skipped` for
    the one warning that names them all).

    Args:
        root: the directory; names in the zip are relative to it.
        exclude_dirs: directories (resolved) not to descend into.
        exclude_names: directory names not to descend into (``.git``, ``.venv``).
        exclude_suffixes: file name endings to leave out (``.pyc``).
        on_skip: called for each link or special file that is left out.
    """

    def skip(path: Path, why: str) -> None:
        if on_skip is not None:
            on_skip(path, why)

    real_root = root.resolve()
    skipped_dirs = {p.resolve() for p in exclude_dirs}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            if d in exclude_names:
                continue
            if (here / d).is_symlink():
                skip(here / d, "symlinked directory")
                continue
            if (here / d).resolve() in skipped_dirs:
                continue
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name.endswith(exclude_suffixes):
                continue
            path = here / name
            if path.is_symlink():
                target = _resolve(path)
                if target is None:
                    skip(path, "symlink loop or broken link")
                    continue
                if not target.is_relative_to(real_root):
                    skip(path, "links out of the tree")
                    continue
                if target.is_dir():
                    skip(path, "symlinked directory")
                    continue
                if not stat.S_ISREG(target.stat().st_mode):
                    skip(path, "not a regular file")
                    continue
            elif not stat.S_ISREG(path.lstat().st_mode):
                skip(path, "not a regular file")
                continue
            yield path, path.relative_to(root).as_posix()


def warn_skipped(what: str, skipped: Sequence[tuple[Path, str]]) -> None:
    """One warning naming every entry :func:`tree_files` left out of ``what`` (none: silent)."""
    if skipped:
        listed = "; ".join(f"{path} ({why})" for path, why in skipped)
        logger.warning("%s: skipped %d entries: %s", what, len(skipped), listed)


def walk_tree(
    root: Path,
    what: str,
    *,
    exclude_dirs: Iterable[Path] = (),
    exclude_names: frozenset[str] = frozenset(),
    exclude_suffixes: tuple[str, ...] = (),
) -> list[tuple[Path, str]]:
    """:func:`tree_files` as a list, with the one warning for what it skipped."""
    skipped: list[tuple[Path, str]] = []
    entries = list(
        tree_files(
            root,
            exclude_dirs=exclude_dirs,
            exclude_names=exclude_names,
            exclude_suffixes=exclude_suffixes,
            on_skip=lambda path, why: skipped.append((path, why)),
        )
    )
    warn_skipped(f"{what} {str(root)!r}", skipped)
    return entries


# ------------------------------------------------------------- streamed writer


class StreamedZip:
    """A stored (uncompressed) zip of files on disk, produced while it is read.

    Its exact length (:func:`len`) is known when it is made, from the files'
    sizes and names, so it goes out with a ``Content-Length``; iterating it
    produces the archive from its first byte each time (a retry re-streams
    it), reading each file in chunks, so memory stays flat and nothing is
    written to disk. ZIP64 records are written where a file, an offset or the
    archive passes 4 GiB. Entries keep their file's time stamp and mode, so
    two passes over unchanged files give the same bytes (and SHA-256).

    Args:
        entries: ``(file on disk, name in the archive)`` pairs.
        chunk_size: bytes per chunk yielded (smaller pieces are gathered).

    Raises:
        InvalidDataFormat: two entries with the same name, or a file that
            cannot be read (before anything is produced).
    """

    def __init__(
        self, entries: Sequence[tuple[Path, str]], *, chunk_size: int = IO_CHUNK_SIZE
    ) -> None:
        seen: dict[str, Path] = {}
        for path, name in entries:
            check_member_name(name)
            if name in seen:
                raise InvalidDataFormat(
                    f"{str(seen[name])!r} and {str(path)!r} would both be stored as {name!r}"
                )
            seen[name] = path
        self.entries = list(entries)
        self.chunk_size = chunk_size
        self._length = len(self._stream())

    def _stream(self) -> Any:  # zipstream-ng ships no type hints
        import zipstream  # zipstream-ng: the 'zipstream' module
        import zipstream.ng

        # zipstream-ng reads a file in pieces of its module constant READ_BUFFER,
        # 64 KiB: 16 reads, 16 objects and a join per MiB sent. 1 MiB pieces go
        # out as they are read (measured: 0.1 CPU s/GiB less). Only ever raised;
        # other zipstream users in the process just read in larger pieces.
        if getattr(zipstream.ng, "READ_BUFFER", IO_CHUNK_SIZE) < IO_CHUNK_SIZE:
            zipstream.ng.READ_BUFFER = IO_CHUNK_SIZE
        zs = zipstream.ZipStream(compress_type=zipstream.ZIP_STORED, sized=True)
        for path, name in self.entries:
            try:
                zs.add_path(os.fspath(path), name, recurse=False)
            except OSError as exc:
                raise InvalidDataFormat(
                    f"{str(path)!r} cannot be read: {exc.strerror or exc}"
                ) from None
        return zs

    def __len__(self) -> int:
        return self._length

    def __iter__(self) -> Iterator[bytes]:
        zs = self._stream()
        if len(zs) != self._length:
            raise InvalidDataFormat(
                "a file of the archive changed size since the upload began "
                f"({len(zs)} bytes now, {self._length} announced)"
            )
        sent = 0
        # small pieces (headers, descriptors, small files) are gathered into
        # one chunk; a piece of chunk_size or more (a file's data) goes out as
        # it is, never copied
        pending: list[bytes] = []
        pending_size = 0
        try:
            for piece in zs:
                size = len(piece)
                if size < self.chunk_size:
                    pending.append(piece)
                    pending_size += size
                    if pending_size < self.chunk_size:
                        continue
                    piece, size = b"".join(pending), pending_size
                elif pending:
                    sent += pending_size
                    yield b"".join(pending)
                pending, pending_size = [], 0
                sent += size
                if sent > self._length:
                    raise InvalidDataFormat("a file of the archive grew while it was sent")
                yield piece
        except RuntimeError as exc:  # zipstream: 'actual size did not match'
            raise InvalidDataFormat(
                f"a file of the archive changed while it was sent: {exc}"
            ) from None
        except OSError as exc:
            raise InvalidDataFormat(
                f"a file of the archive cannot be read: {exc.strerror or exc}"
            ) from None
        sent += pending_size
        if sent != self._length:
            raise InvalidDataFormat(
                f"the archive came to {sent} bytes, {self._length} were announced "
                "(a file changed while it was sent)"
            )
        if pending:
            yield b"".join(pending)
