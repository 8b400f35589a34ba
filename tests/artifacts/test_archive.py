"""Safe extraction: entries that could write outside ``dest`` refuse the whole archive."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from abeja_runtime.archive import safe_extract
from abeja_runtime.errors import InvalidDataFormat


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_extracts_layout(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"model.bin": b"\x00\x01", "sub/dir/w.txt": b"w"})
    dest = tmp_path / "out"
    written = safe_extract(archive, dest)
    assert (dest / "model.bin").read_bytes() == b"\x00\x01"
    assert (dest / "sub" / "dir" / "w.txt").read_bytes() == b"w"
    assert len(written) == 2


@pytest.mark.parametrize(
    "name", ["../evil.txt", "a/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt", "a\\..\\evil"]
)
def test_refuses_escaping_names(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr(zipfile.ZipInfo(name), b"evil")
    dest = tmp_path / "out"
    with pytest.raises(InvalidDataFormat):
        safe_extract(archive, dest)
    assert not (dest / "ok.txt").exists()  # nothing written before the check
    assert not (tmp_path / "evil.txt").exists()


def test_refuses_symlink_entry(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InvalidDataFormat, match="symlink"):
        safe_extract(archive, tmp_path / "out")


def test_existing_symlink_in_dest_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    (dest / "file").symlink_to(outside / "victim")
    for name in ("sub/x.txt", "file"):
        archive = _zip(tmp_path / "s.zip", {name: b"evil"})
        with pytest.raises(InvalidDataFormat):
            safe_extract(archive, dest)
    assert list(outside.iterdir()) == []


def test_not_a_zip(tmp_path: Path) -> None:
    bogus = tmp_path / "x.zip"
    bogus.write_bytes(b"not a zip")
    with pytest.raises(InvalidDataFormat, match="not a zip"):
        safe_extract(bogus, tmp_path / "out")
