"""Benchmark: ``upload_model`` vs a raw streamed POST of as many bytes, same server, same run.

Why: the final model can be many GiB inside a container with little spare
memory and disk. ``upload_model`` zips it while it sends it (stored members, an
exact Content-Length, no temporary copy), so it should run at link speed.
Targets, for each input and each of the ``link`` and ``emulator`` servers:
``upload_model`` reaches at least 90% of the raw POST's throughput, with peak
RSS at most 64 MiB above the interpreter's baseline and at most 1 MiB written
to disk by the uploading process (``/proc/self/io`` ``write_bytes``).

Three inputs, made of real random float32 weights (numpy's normal
distribution when numpy is installed, random bytes otherwise), never zeros:

``file``
    one 1 GiB ``model.bin`` (not a zip): wrapped in a streamed stored zip.
``dir``
    a directory of four 256 MiB weight files and a few small JSON files.
``zip``
    an existing 1 GiB zip: sent as it is.

The raw POST sends a multipart body whose model part has exactly as many bytes
as ``upload_model``'s zip (the input's bytes, read in 1 MiB chunks from a plain
generator): no zip framing, no CRC, no checksum, nothing but the bytes. A third
mode on the unpaced sink, ``raw+sha256``, is that POST hashing each chunk
inline: the bound of any upload that checks a SHA-256 (one digest cannot be
split across cores), printed beside ``upload_model``'s figure there.

Three servers:

``sink``
    a loopback server in this process that reads and discards the body: the
    link is faster than SHA-256 on one core, so this shows the hashing bound.
``link``
    the same sink reading at most ``--link-gbit`` (default 10 Gbit/s, a fast
    datacenter link): what a job sees on a real network.
``emulator``
    the project's own create-model endpoint (parses the multipart stream,
    hashes and stores the model on disk, in this process).

Each measurement runs in a fresh subprocess (so peak RSS, disk writes and CPU
time are its own). Runs go in pairs, raw then upload_model and the next pair
the other way round (ABBA), and the figure is the median of the per-pair
ratios with their min-max: a server's throughput swings by several times
between runs a minute apart on a small or shared machine, the two runs of a
pair are seconds apart. Before every run the emulator's stored uploads are
deleted and the disk synced, so no run pays for the writeback of the one
before. CPU seconds per GiB of the uploader (and of the server, which runs in
the benchmark's process) are printed too: on a small or busy machine the
upload is CPU-bound (the SHA-256 alone is about 0.55 s/GiB of one core), and
that figure shows it where the throughput only varies. The inputs are removed
at the end.

Usage::

    python benchmarks/bench_model_upload.py --size 1G --repeat 5    # the README's table
    python benchmarks/bench_model_upload.py --size 256M --repeat 3  # a quick look
    python benchmarks/bench_model_upload.py --servers link --inputs file   # a subset
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ORG = "1234567890123"
NAME = "bench"
JOB = "2234567890123"
CHUNK = 1024 * 1024
INPUTS = ("file", "dir", "zip")


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.read_body(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"training_model_id": "3234567890123", "training_job_id": JOB}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self, remaining: int) -> None:
        while remaining > 0:
            chunk = self.rfile.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _write_weights(path: Path, size: int, seed: int) -> None:
    """``size`` bytes of random float32 weights, written in 16 MiB blocks."""
    try:
        import numpy as np
    except ImportError:  # random bytes: as incompressible, not as realistic
        np = None  # type: ignore[assignment]
    block = 16 * CHUNK
    rng = np.random.default_rng(seed) if np is not None else None
    with open(path, "wb") as out:
        left = size
        while left > 0:
            n = min(block, left)
            if rng is not None:
                out.write(rng.standard_normal(n // 4, dtype=np.float32).tobytes())
                out.write(os.urandom(n % 4))
            else:
                out.write(os.urandom(n))
            left -= n


def make_inputs(root: Path, size: int) -> dict[str, Path]:
    """The three inputs under ``root``: ``model.bin``, ``model_dir/``, ``model.zip``."""
    single = root / "model.bin"
    _write_weights(single, size, seed=1)
    directory = root / "model_dir"
    directory.mkdir()
    for i in range(4):
        _write_weights(directory / f"weights-{i:05d}-of-00004.bin", size // 4, seed=10 + i)
    (directory / "config.json").write_text(json.dumps({"hidden_size": 4096, "layers": 32}))
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 4096}))
    (directory / "generation_config.json").write_text(json.dumps({"temperature": 0.7}))
    archive = root / "model.zip"
    info = zipfile.ZipInfo("weights.bin", date_time=(2024, 1, 1, 0, 0, 0))
    with (
        zipfile.ZipFile(archive, "w") as zf,
        zf.open(info, "w", force_zip64=True) as out,
        open(single, "rb") as src,
    ):
        while chunk := src.read(CHUNK):
            out.write(chunk)
    return {"file": single, "dir": directory, "zip": archive}


BOUNDARY = "benchboundary0123456789abcdef"


def _multipart_parts(parameters: dict[str, Any]) -> tuple[bytes, bytes]:
    """The bytes before and after the model file in the create-model multipart body."""
    params = json.dumps(parameters).encode()
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="model_data"; filename="model_data.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = (
        (
            f"\r\n--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="parameters"; filename="params.json"\r\n'
            "Content-Type: application/json\r\n\r\n"
        ).encode()
        + params
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return head, tail


def _input_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def _upload_length(path: Path) -> int:
    """How many bytes ``upload_model`` sends as the model part for ``path``."""
    from abeja_runtime.archive import StreamedZip, is_zip_archive

    if path.is_file() and is_zip_archive(path):
        return path.stat().st_size
    files = _input_files(path)
    base = path if path.is_dir() else path.parent
    return len(StreamedZip([(f, f.relative_to(base).as_posix()) for f in files]))


def _raw_chunks(files: list[Path], length: int, digest: Any) -> Any:
    """``length`` bytes of the input files, in order, read again from the first if short."""
    left = length
    while left > 0:
        for file in files:
            with open(file, "rb") as fh:
                while left > 0 and (chunk := fh.read(min(CHUNK, left))):
                    left -= len(chunk)
                    if digest is not None:
                        digest.update(chunk)
                    yield chunk
            if left <= 0:
                return


def _write_bytes() -> int:
    with open("/proc/self/io") as fh:
        for line in fh:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads (the uploader's own cost)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _worker(mode: str, file: str, url: str) -> None:
    import psutil
    import requests

    from abeja_runtime.api.client import APIClient
    from abeja_runtime.artifacts.models import upload_model

    org, name, job, token = (os.environ[k] for k in ("B_ORG", "B_NAME", "B_JOB", "B_TOKEN"))
    path = f"/organizations/{org}/training/definitions/{name}/models"
    source = Path(file)
    length = _upload_length(source)  # before the baseline: a stat per file
    proc = psutil.Process()
    baseline = proc.memory_info().rss
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    written_before = _write_bytes()
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    if mode in ("raw", "raw+sha256"):
        digest = hashlib.sha256() if mode == "raw+sha256" else None
        head, tail = _multipart_parts({"training_job_id": job})
        files = _input_files(source)

        class Body:
            """The body as an iterable with a length: requests then sends a Content-Length
            (a bare generator would make it add Transfer-Encoding: chunked too)."""

            def __len__(self) -> int:
                return len(head) + length + len(tail)

            def __iter__(self) -> Any:
                yield head
                yield from _raw_chunks(files, length, digest)
                yield tail

        with requests.Session() as session:
            response = session.post(
                url + path,
                data=Body(),
                headers={
                    "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                    "Authorization": f"Bearer {token}",
                },
                timeout=600,
            )
            response.raise_for_status()
    else:
        os.environ.update(
            {
                "ABEJA_ORGANIZATION_ID": org,
                "TRAINING_JOB_DEFINITION_NAME": name,
                "TRAINING_JOB_ID": job,
            }
        )
        with APIClient({"auth_token": token}, base_url=url, timeout=600) as client:
            upload_model(file, client=client, progress=False, metrics={})
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before
    written = _write_bytes() - written_before
    stop.set()
    sampler.join()
    peak = max(peak, proc.memory_info().rss)
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "bytes": length,
                "rss_over_baseline": peak - baseline,
                "disk_written": written,
                "cpu_seconds": cpu,
            }
        )
    )


def _measure(mode: str, file: Path, url: str, ids: dict[str, str]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, str(file), url],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **ids},
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


class _Server:
    """One target server: its URL and the identity the uploads use."""

    def __init__(self, kind: str, link_gbit: float, tmp: Path) -> None:
        self.kind = kind
        self._stop: Any = None
        self._blobs: Path | None = None
        if kind == "emulator":
            from abeja_runtime.emulator import Emulator

            emu = Emulator(data_dir=tmp / "emulator").start()
            env = emu.create_job(NAME)
            self.url = emu.url
            self.ids = {
                "B_ORG": env["ABEJA_ORGANIZATION_ID"],
                "B_NAME": NAME,
                "B_JOB": env["TRAINING_JOB_ID"],
                "B_TOKEN": env["PLATFORM_AUTH_TOKEN"],
            }
            self._stop = emu.stop
            self._blobs = tmp / "emulator" / "blobs"
            return
        handler = _Sink if kind == "sink" else _paced_sink(link_gbit)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self.ids = {"B_ORG": ORG, "B_NAME": NAME, "B_JOB": JOB, "B_TOKEN": "bench"}
        self._stop = server.shutdown

    def before_run(self) -> None:
        """The same starting state for every run: no stored upload, nothing dirty to write back.

        The emulator stores each upload (1 GiB) on disk: left there, its dirty
        pages are written back during the next run and slow it, whichever mode
        that is. Deleting the stored files first drops those pages unwritten;
        ``sync`` then flushes what is left (the database), so each run starts
        from a clean page cache. The inputs stay cached (read by every run).
        """
        if self._blobs is not None:
            for sub in ("models", "tmp"):
                for blob in (self._blobs / sub).glob("*"):
                    blob.unlink(missing_ok=True)
        os.sync()

    def stop(self) -> None:
        self._stop()


def _paced_sink(link_gbit: float) -> type[_Sink]:
    rate = link_gbit * 1e9 / 8  # bytes per second

    class _PacedSink(_Sink):
        def read_body(self, remaining: int) -> None:
            started = time.perf_counter()
            done = 0
            while remaining > 0:
                chunk = self.rfile.read(min(256 * 1024, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                done += len(chunk)
                ahead = done / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)

    return _PacedSink


def _size_arg(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    scale = units.get(text[-1:], 0)
    number = text[:-1] if scale else text
    try:
        size = int(float(number) * (scale or CHUNK))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1G, 256M)") from None
    if size < 4 * CHUNK:
        raise argparse.ArgumentTypeError("the inputs need at least 4 MiB (the dir has 4 files)")
    return size - size % 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size",
        type=_size_arg,
        default=None,
        help="each input's size: 1G (the default), 256M, ... (a bare number is MiB)",
    )
    parser.add_argument("--size-mib", type=int, default=1024, help=argparse.SUPPRESS)
    parser.add_argument(
        "--repeat", type=int, default=3, help="pairs of runs (raw and upload_model) per case"
    )
    parser.add_argument(
        "--servers",
        default="sink,link,emulator",
        help="comma-separated: sink, link, emulator (default: all three)",
    )
    parser.add_argument(
        "--inputs", default=",".join(INPUTS), help="comma-separated: file, dir, zip (default: all)"
    )
    parser.add_argument("--link-gbit", type=float, default=10.0, help="the link server's rate")
    parser.add_argument("--tmp", default=None, help="where to write the inputs (removed after)")
    parser.add_argument(
        "--worker", nargs=3, metavar=("MODE", "FILE", "URL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    for kind in kinds:
        if kind not in ("sink", "link", "emulator"):
            parser.error(f"unknown server {kind!r}")
    inputs = [k.strip() for k in args.inputs.split(",") if k.strip()]
    for name in inputs:
        if name not in INPUTS:
            parser.error(f"unknown input {name!r}")
    size = args.size if args.size is not None else args.size_mib * CHUNK
    print(
        f"inputs: {size / CHUNK:g} MiB each of random float32 ({', '.join(inputs)}); "
        f"{args.repeat} pairs of runs per case, alternating which mode goes first; "
        f"{os.cpu_count()} CPUs"
    )
    rows: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-model-", dir=args.tmp) as tmp:
        (Path(tmp) / "in").mkdir()
        made = make_inputs(Path(tmp) / "in", size)
        for kind in kinds:
            server = _Server(kind, args.link_gbit, Path(tmp))
            try:
                label = f"{kind} ({args.link_gbit:g} Gbit/s)" if kind == "link" else kind
                for name in inputs:
                    rows.append(_run_server(label, name, made[name], server, args.repeat))
            finally:
                server.stop()
    print()
    print(
        "| server | input | raw MiB/s | upload_model MiB/s | upload/raw | raw+sha256 bound "
        "| peak RSS over baseline | disk written |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for line in rows:
        print(line)


def _ratio_text(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.1%} ({min(ratios):.0%}-{max(ratios):.0%})"


def _run_server(label: str, name: str, file: Path, server: _Server, repeat: int) -> str:
    """``repeat`` pairs of runs, each pair in turn raw first and upload first (ABBA...).

    Why pairs: on a shared or small machine the throughput of one server swings
    by several times between runs a minute apart (the emulator's disk
    writeback, other processes). The two runs of a pair are seconds apart, so
    their ratio cancels most of that; the median of the per-pair ratios, with
    its min-max, is the figure. On the unpaced sink the ``raw+sha256`` bound
    runs in each group too.
    """
    modes = ["raw", "upload_model"] + (["raw+sha256"] if label == "sink" else [])
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for i in range(repeat):
        order = modes if i % 2 == 0 else modes[::-1]
        for mode in order:
            server.before_run()
            cpu_before = _cpu_seconds()
            result = _measure(mode, file, server.url, server.ids)
            result["server_cpu_seconds"] = _cpu_seconds() - cpu_before
            results[mode].append(result)
    print(f"server: {label}, input: {name}")
    tput: dict[str, list[float]] = {}
    for mode, runs in results.items():
        rates = [r["bytes"] / r["seconds"] / CHUNK for r in runs]
        tput[mode] = rates
        rss = max(r["rss_over_baseline"] for r in runs) / CHUNK
        disk = max(r["disk_written"] for r in runs) / 1024
        cpu = statistics.median(r["cpu_seconds"] / (r["bytes"] / 1024**3) for r in runs)
        server_cpu = statistics.median(
            r["server_cpu_seconds"] / (r["bytes"] / 1024**3) for r in runs
        )
        print(
            f"  {mode:>13}: median {statistics.median(rates):8.1f} MiB/s (runs: "
            + ", ".join(f"{x:.0f}" for x in rates)
            + f"), peak RSS +{rss:.1f} MiB, disk written {disk:.0f} KiB, "
            f"CPU {cpu:.2f} s/GiB (server {server_cpu:.2f})"
        )
    ratios = [up / raw for up, raw in zip(tput["upload_model"], tput["raw"], strict=True)]
    ratio = statistics.median(ratios)
    print("  upload/raw per pair: " + ", ".join(f"{r:.0%}" for r in ratios))
    rss_up = max(r["rss_over_baseline"] for r in results["upload_model"]) / CHUNK
    disk_up = max(r["disk_written"] for r in results["upload_model"]) / 1024
    if "raw+sha256" in tput:
        bound_ratios = [
            up / sha for up, sha in zip(tput["upload_model"], tput["raw+sha256"], strict=True)
        ]
        bound = f"{statistics.median(tput['raw+sha256']):.0f} MiB/s ({_ratio_text(bound_ratios)})"
        verdict = "(no target: the SHA-256 bound)"
    else:
        bound = "-"
        ok = ratio >= 0.90 and rss_up <= 64 and disk_up <= 1024
        verdict = "met" if ok else "NOT met"
    return (
        f"| {label} | {name} | {statistics.median(tput['raw']):.0f} | "
        f"{statistics.median(tput['upload_model']):.0f} | {_ratio_text(ratios)} {verdict} | "
        f"{bound} | +{rss_up:.1f} MiB | {disk_up:.0f} KiB |"
    )


if __name__ == "__main__":
    main()
