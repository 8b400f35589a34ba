"""The streamed model zip against the emulator: files come back by name, byte for byte;
the zip is produced while it is sent (stored, exact length, ZIP64), nothing is written
to disk on the way; bad input (metrics, links, archives) is refused before anything is
sent or written.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from abeja_runtime import APIClient
from abeja_runtime.archive import StreamedZip, safe_extract
from abeja_runtime.artifacts.models import ModelChecksumError, download_model, upload_model
from abeja_runtime.emulator import Emulator
from abeja_runtime.errors import InvalidDataFormat

from tests.support import REPO

DEF = "stream-def"


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp directory of this test: an upload must leave nothing in it."""
    path = tmp_path / "tmpdir"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


@pytest.fixture
def job_env(emu: Emulator, monkeypatch: pytest.MonkeyPatch, scratch: Path) -> dict[str, str]:
    env = emu.create_job(DEF)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def client(emu: Emulator) -> Iterator[Any]:
    api = emu.client(max_retry_count=0)
    yield api
    api.close()


def _count(client: Any, emu: Emulator) -> int:
    return len(client.get_training_models(emu.organization_id, DEF)["entries"])


def _round_trip(src: Path, client: Any, out: Path) -> dict[str, bytes]:
    model = upload_model(src, client=client)
    download_model(model["training_model_id"], out, client=client)
    return {
        p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
    }


# ------------------------------------------------------- files that are zips inside


@pytest.mark.framework
def test_torch_file_comes_back_by_name(
    job_env: dict[str, str], client: Any, tmp_path: Path, scratch: Path
) -> None:
    torch = pytest.importorskip("torch")
    src = tmp_path / "model.pt"
    torch.save({"w": torch.randn(64, 64)}, src)
    assert zipfile.is_zipfile(src)  # a zip by content, one model file by name
    assert _round_trip(src, client, tmp_path / "out") == {"model.pt": src.read_bytes()}
    assert list(scratch.iterdir()) == []


def test_npz_file_comes_back_by_name(job_env: dict[str, str], client: Any, tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    src = tmp_path / "weights.npz"
    np.savez(src, a=np.random.default_rng(0).random(1000, dtype=np.float32))
    assert zipfile.is_zipfile(src)
    assert _round_trip(src, client, tmp_path / "out") == {"weights.npz": src.read_bytes()}


@pytest.mark.framework
def test_keras_file_comes_back_by_name(
    job_env: dict[str, str], client: Any, tmp_path: Path
) -> None:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    src = tmp_path / "model.keras"
    model.save(src)
    assert zipfile.is_zipfile(src)
    assert _round_trip(src, client, tmp_path / "out") == {"model.keras": src.read_bytes()}


def test_only_a_valid_dot_zip_is_sent_as_the_archive(
    job_env: dict[str, str], client: Any, tmp_path: Path
) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("inner/w.bin", b"inner weights")
    assert _round_trip(archive, client, tmp_path / "a") == {"inner/w.bin": b"inner weights"}
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"PK\x03\x04 not really a zip")
    assert _round_trip(fake, client, tmp_path / "b") == {"fake.zip": fake.read_bytes()}
    named = tmp_path / "checkpoint.bin"  # a zip by content, not by name: one file
    named.write_bytes(archive.read_bytes())
    assert _round_trip(named, client, tmp_path / "c") == {"checkpoint.bin": named.read_bytes()}


def test_directory_tree_round_trips_stored(
    job_env: dict[str, str], client: Any, tmp_path: Path, emu: Emulator, scratch: Path
) -> None:
    root = tmp_path / "result"
    (root / "ckpt" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    files = {
        "model.safetensors": os.urandom(200_000),
        "ckpt/deep/w.npy": os.urandom(70_000),
        "config.json": b'{"layers": 2}\n' * 5000,  # compressible, stored anyway
        "ckpt/n\u00e4me with space.txt": b"unicode name",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    model = upload_model(root, client=client)
    out = tmp_path / "out"
    download_model(model["training_model_id"], out, client=client)
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == files
    # stored, so the model is as large as its files (plus headers), never deflated
    assert sum(map(len, files.values())) < model["size"] < sum(map(len, files.values())) + 4096
    assert list(scratch.iterdir()) == []


def test_link_loops_and_special_files_are_skipped_with_one_warning(
    job_env: dict[str, str], client: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "result"
    root.mkdir()
    (root / "model.bin").write_bytes(b"weights")
    (root / "loop").symlink_to(root / "loop")  # a link to itself
    (root / "a").symlink_to(root / "b")
    (root / "b").symlink_to(root / "a")
    (root / "out").symlink_to(tmp_path)  # a directory out of the tree
    os.mkfifo(root / "pipe")
    with caplog.at_level(logging.WARNING, logger="abeja_runtime"):
        assert _round_trip(root, client, tmp_path / "dl") == {"model.bin": b"weights"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    for name in ("loop", "/a ", "/b ", "out", "pipe"):
        assert name in warnings[0] + " ", (name, warnings)


# ------------------------------------------------------------ ZIP64, exact length


class _CountingSink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[int, int, bytes]]

    def do_POST(self) -> None:
        announced = int(self.headers["Content-Length"])
        received = 0
        tail = b""
        while received < announced:
            chunk = self.rfile.read(min(1 << 20, announced - received))
            if not chunk:
                break
            received += len(chunk)
            tail = (tail + chunk)[-4096:]
        self.seen.append((announced, received, tail))
        body = json.dumps({"training_model_id": "1"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_sparse_file_over_4_gib_is_sent_with_its_announced_length(
    tmp_path: Path, scratch: Path
) -> None:
    size = 4 * 1024**3 + 12_345  # past the 32-bit limits: ZIP64 records
    src = tmp_path / "huge.bin"
    with open(src, "wb") as fh:
        fh.truncate(size)  # sparse: no disk used
    handler = type("Sink", (_CountingSink,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with APIClient(
            {"auth_token": "t"}, base_url=f"http://127.0.0.1:{server.server_address[1]}"
        ) as api:
            upload_model(
                src,
                client=api,
                organization_id="1234567890123",
                job_definition_name="d",
                training_job_id="2234567890123",
                progress=False,
            )
    finally:
        server.shutdown()
        server.server_close()
    [(announced, received, tail)] = handler.seen
    assert received == announced
    assert announced > size  # stored, not deflated (zeros would shrink to a few MB)
    assert b"PK\x06\x06" in tail and b"PK\x06\x07" in tail  # ZIP64 end record + locator
    assert list(scratch.iterdir()) == []


def test_streamed_zip_is_exact_and_the_same_on_every_pass(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (tmp_path / "b.json").write_text("{}")
    archive = StreamedZip([(tmp_path / "a.bin", "a.bin"), (tmp_path / "b.json", "sub/b.json")])
    first = b"".join(archive)
    assert len(first) == len(archive)
    assert b"".join(archive) == first  # a retry sends the same bytes (same SHA-256)
    with zipfile.ZipFile(io.BytesIO(first)) as zf:
        assert zf.testzip() is None
        assert {i.filename: i.compress_type for i in zf.infolist()} == {
            "a.bin": zipfile.ZIP_STORED,
            "sub/b.json": zipfile.ZIP_STORED,
        }
    with open(tmp_path / "a.bin", "ab") as fh:  # the file changes between passes
        fh.write(b"more")
    with pytest.raises(InvalidDataFormat, match="changed"):
        b"".join(archive)


# ------------------------------------------------------------- metrics, parameters


@pytest.mark.framework
def test_numpy_and_torch_metrics_and_nan_are_converted(
    job_env: dict[str, str], client: Any, tmp_path: Path
) -> None:
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    src = tmp_path / "m.bin"
    src.write_bytes(b"m")
    model = upload_model(
        src,
        metrics={"acc": np.float32(0.5), "loss": torch.tensor(0.25), "nan": float("nan")},
        user_parameters={"lr": np.float64(0.125), "epochs": np.int64(3)},
        client=client,
    )
    assert model["metrics"] == {"acc": 0.5, "loss": 0.25, "nan": "NaN"}
    assert model["user_parameters"] == {"lr": 0.125, "epochs": 3}


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"metrics": {"acc": object()}}, "metrics.acc"),
        ({"user_parameters": {"opt": {"betas": {1, 2}}}}, "user_parameters.opt.betas"),
        ({"metrics": [1, 2]}, "metrics must be a dict"),
    ],
    ids=["object", "nested-set", "not-a-dict"],
)
def test_bad_metrics_name_the_key_and_send_nothing(
    job_env: dict[str, str],
    client: Any,
    tmp_path: Path,
    emu: Emulator,
    kwargs: dict[str, Any],
    key: str,
) -> None:
    src = tmp_path / "m.bin"
    src.write_bytes(b"m")
    before = _count(client, emu)
    with pytest.raises(InvalidDataFormat, match=key.replace(".", r"\.")):
        upload_model(src, client=client, **kwargs)
    assert _count(client, emu) == before


# ------------------------------------------------------------------- extraction


def _bad_zip(path: Path, kind: str) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if kind == "clash":
            zf.writestr("a", b"file first")
            zf.writestr("a/b", b"then a file under it")
        elif kind == "bomb":
            with zf.open("zeros.bin", "w") as entry:  # ~200 KB expanding to 200 MB
                block = bytes(1024 * 1024)
                for _ in range(200):
                    entry.write(block)
        elif kind == "many":
            for i in range(300):
                zf.writestr(f"f{i}", b"x")


@pytest.mark.parametrize(
    ("kind", "message", "limit"),
    [
        ("clash", "needs it to be a directory", {}),
        ("bomb", "zip bomb", {"max_ratio": 10_000}),
        ("many", "300 entries, over the limit of 100", {"max_entries": 1000}),
    ],
)
def test_bad_archives_are_refused_before_anything_is_written(
    job_env: dict[str, str],
    client: Any,
    tmp_path: Path,
    kind: str,
    message: str,
    limit: dict[str, Any],
) -> None:
    archive = tmp_path / "up" / "bad.zip"
    archive.parent.mkdir()
    _bad_zip(archive, kind)
    model = upload_model(archive, client=client)  # a valid *.zip: sent as it is
    dest = tmp_path / "dest"
    extra = {"max_entries": 100} if kind == "many" else {}
    before = sorted(p for p in tmp_path.rglob("*") if p != dest and dest not in p.parents)
    with pytest.raises(InvalidDataFormat, match=message):
        download_model(model["training_model_id"], dest, client=client, **extra)
    assert list(dest.rglob("*")) == []  # the verified download was removed too
    after = sorted(p for p in tmp_path.rglob("*") if p != dest and dest not in p.parents)
    assert after == before  # nothing outside dest either
    # the documented parameter raises the limit (the clash has none to raise)
    if limit:
        download_model(model["training_model_id"], dest, client=client, **limit)
        assert any(dest.iterdir())


def test_safe_extract_clash_with_a_directory_entry(tmp_path: Path) -> None:
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("d/", b"")
        zf.writestr("d", b"a file where a directory is")
    with pytest.raises(InvalidDataFormat, match="directory"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


# -------------------------------------------------------------- progress display


def test_progress_without_tqdm_warns_and_logs_every_tenth(
    job_env: dict[str, str],
    client: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    src = tmp_path / "m.bin"
    src.write_bytes(os.urandom(8 * 1024 * 1024))
    with caplog.at_level(logging.INFO, logger="abeja_runtime.models"):
        upload_model(src, client=client, progress=True)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("tqdm is not installed" in m for m in messages) == 1
    percents = [m for m in messages if m.startswith("model upload: ") and "%" in m]
    assert percents[-1].startswith("model upload: 100%")
    assert 5 <= len(percents) <= 10  # about one per 10% (chunks are 1 MiB of ~8)


# ------------------------------------------------- APIClient and the downloader


def test_create_training_model_path_checks_the_servers_checksum(
    httpserver: HTTPServer, tmp_path: Path, scratch: Path
) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(b"weights")
    body = {"training_model_id": "1", "sha256": hashlib.sha256(b"other").hexdigest()}
    httpserver.expect_request(
        "/organizations/1234567890123/training/definitions/d/models", method="POST"
    ).respond_with_json(body)
    with (
        APIClient({"auth_token": "t"}, base_url=httpserver.url_for("")) as api,
        pytest.raises(ModelChecksumError, match="sha256"),
    ):
        api.create_training_model("1234567890123", "d", src)
    assert list(scratch.iterdir()) == []  # streamed: no temporary zip


def test_download_with_a_wrong_checksum_leaves_nothing(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    from abeja_runtime.artifacts.downloads import fetch_verified

    httpserver.expect_request("/blob").respond_with_data(b"tampered bytes")
    dest = tmp_path / "d" / "model.zip"
    with pytest.raises(ModelChecksumError, match="recorded"):
        fetch_verified(
            httpserver.url_for("/blob"), dest, expected_sha256=hashlib.sha256(b"x").hexdigest()
        )
    assert list((tmp_path / "d").iterdir()) == []
    path, size, sha = fetch_verified(
        httpserver.url_for("/blob"),
        dest,
        expected_sha256=hashlib.sha256(b"tampered bytes").hexdigest().upper(),
    )
    assert (path, size, path.read_bytes()) == (dest, 14, b"tampered bytes")
    assert sha == hashlib.sha256(b"tampered bytes").hexdigest()


def test_a_corrupted_model_is_refused_by_every_downloader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from abeja_runtime.cli import main
    from abeja_runtime.runner.api_target import CREDENTIAL_ENV_NAMES

    with Emulator(data_dir=str(tmp_path / "emu")) as emu:
        env = emu.create_job(DEF)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        src = tmp_path / "model.pt"
        src.write_bytes(os.urandom(50_000))
        with emu.client(max_retry_count=0) as api:
            model = upload_model(src, client=api)
            [blob] = (tmp_path / "emu").rglob(f"{model['training_model_id']}.zip")
            data = bytearray(blob.read_bytes())
            data[100] ^= 0xFF  # storage corrupted one byte of the weights
            blob.write_bytes(bytes(data))
            with pytest.raises(ModelChecksumError, match="sha256"):
                download_model(model["training_model_id"], tmp_path / "dest", client=api)
            with pytest.raises(ModelChecksumError, match="sha256"):
                from abeja_runtime.artifacts.models import download_training_result

                download_training_result(env["TRAINING_JOB_ID"], tmp_path / "dest", client=api)
        assert list((tmp_path / "dest").iterdir()) == []
        for name in (*CREDENTIAL_ENV_NAMES, "ABEJA_API_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("ABEJA_API_URL", emu.url)
        monkeypatch.setenv("PLATFORM_AUTH_TOKEN", emu.token)
        monkeypatch.setenv("ABEJA_SDK_MAX_RETRY_COUNT", "0")
        target = tmp_path / "cli" / "model.zip"
        for argv in (
            ["models", "download", DEF, model["training_model_id"], "--output", str(target)],
            ["jobs", "result", DEF, env["TRAINING_JOB_ID"], "--output", str(target)],
        ):
            code = main(argv)
            err = capsys.readouterr().err
            assert code != 0 and "sha256" in err, (argv, code, err)
            assert list(target.parent.iterdir()) == []  # no file under the name, no leftover


_LOOPY_HANDLER = """
import os, pathlib

def handler(context):
    out = pathlib.Path(os.environ["ABEJA_TRAINING_RESULT_DIR"])
    (out / "model.bin").write_bytes(b"weights")
    (out / "loop").symlink_to(out / "loop")  # a link loop in the result dir
"""


def test_run_with_link_loops_in_source_and_result_uploads_both(tmp_path: Path) -> None:
    import subprocess

    from abeja_runtime.runner.api_target import CREDENTIAL_ENV_NAMES

    source = tmp_path / "project"
    source.mkdir()
    (source / "train.py").write_text(_LOOPY_HANDLER)
    (source / "self").symlink_to(source / "self")  # a link loop in the source dir
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV_NAMES}
    env.pop("ABEJA_API_URL", None)
    env.pop("ABEJA_ORGANIZATION_ID", None)
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "ABEJA_RUNTIME_EMULATOR_DIR": str(tmp_path / "emulator"),
            "ABEJA_STORAGE_DIR_PATH": str(tmp_path / "storage"),
            "ABEJA_RUNTIME_POLL_INTERVAL": "0.2",
        }
    )
    done = subprocess.run(
        [sys.executable, "-m", "abeja_runtime", "run", "train:handler", "--source", str(source)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Traceback" not in output
    assert "abeja-runtime: model " in output
    skipped = [line for line in output.splitlines() if "skipped 1 entries" in line]
    assert len(skipped) == 2, output  # one warning for the source, one for the result
    assert any("self" in line for line in skipped) and any("loop" in line for line in skipped)


def test_safe_extract_of_a_corrupted_entry_is_invalid_data(tmp_path: Path) -> None:
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("w.bin", b"weights" * 100)
    data = bytearray(archive.read_bytes())
    data[60] ^= 0xFF  # inside the stored bytes: the CRC no longer matches
    archive.write_bytes(bytes(data))
    with pytest.raises(InvalidDataFormat, match="corrupted"):
        safe_extract(archive, tmp_path / "dest")
    assert list((tmp_path / "dest").iterdir()) == []


def test_client_file_lists_skip_link_loops_with_one_warning(
    httpserver: HTTPServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pkg = tmp_path / "src"
    (pkg / "models").mkdir(parents=True)
    (pkg / "train.py").write_text("a")
    (pkg / "models" / "net.py").write_text("b")
    (pkg / "models" / "loop").symlink_to(pkg / "models" / "loop")
    httpserver.expect_request(
        "/organizations/1234567890123/training/definitions/d/versions", method="POST"
    ).respond_with_json({"job_definition_version": 1})
    with (
        caplog.at_level(logging.WARNING, logger="abeja_runtime"),
        APIClient({"auth_token": "t"}, base_url=httpserver.url_for("")) as api,
    ):
        api.create_training_job_definition_version("1234567890123", "d", [pkg], "src.train:handler")
    [(request, _)] = httpserver.log
    body = request.get_data()
    start = body.index(b"PK\x03\x04")
    with zipfile.ZipFile(io.BytesIO(body[start:])) as zf:
        assert sorted(zf.namelist()) == ["src/models/net.py", "src/train.py"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "loop" in warnings[0], warnings


def test_a_file_that_grows_while_it_is_sent_fails_the_upload_cleanly(tmp_path: Path) -> None:
    root = tmp_path / "result"
    root.mkdir()
    (root / "a.bin").write_bytes(os.urandom(32 * 1024 * 1024))
    (root / "b.bin").write_bytes(os.urandom(1024))
    seen: list[tuple[int, int]] = []

    class _GrowB(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            announced = int(self.headers["Content-Length"])
            received = 0
            grown = False
            while received < announced:
                chunk = self.rfile.read(min(65536, announced - received))
                if not chunk:
                    break
                received += len(chunk)
                if not grown and received > 1024 * 1024:  # a.bin is still being sent
                    with open(root / "b.bin", "ab") as fh:
                        fh.write(b"a checkpoint written meanwhile")
                    grown = True
            seen.append((announced, received))
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), _GrowB)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with (
            APIClient(
                {"auth_token": "t"},
                base_url=f"http://127.0.0.1:{server.server_address[1]}",
                max_retry_count=0,
            ) as api,
            pytest.raises(InvalidDataFormat, match="changed"),
        ):
            upload_model(
                root,
                client=api,
                organization_id="1234567890123",
                job_definition_name="d",
                training_job_id="2234567890123",
                progress=False,
            )
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        server.shutdown()
        server.server_close()
    [(announced, received)] = seen
    assert received < announced  # the body was cut short: no server can take it as a model


def test_streamed_zip_sends_file_data_in_whole_pieces(tmp_path: Path) -> None:
    """1 MiB reads go out as they are read: no 64 KiB reads, no join per MiB."""
    data = os.urandom(5 * 1024 * 1024 + 17)
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "b.json").write_text("{}")
    archive = StreamedZip([(tmp_path / "a.bin", "a.bin"), (tmp_path / "b.json", "b.json")])
    chunks = list(archive)
    assert sum(map(len, chunks)) == len(archive)
    # header, 5 x 1 MiB of data, then the rest (tail, descriptor, b.json, directory)
    assert [len(c) for c in chunks[1:6]] == [1024 * 1024] * 5
    assert len(chunks) == 7
    assert b"".join(chunks[1:6]) == data[: 5 * 1024 * 1024]
