"""Benchmark: ``upload_model`` vs a raw streamed POST of the same file, same server, same run.

Why: the final model can be many GiB inside a container with little spare
memory; the public package reads it whole (about twice the model size in RAM)
and reaches about a tenth of raw throughput. Targets: ``upload_model`` reaches
at least 85% of the raw POST's throughput, with peak RSS at most 64 MiB above
the interpreter's baseline.

The raw POST sends the same multipart body (the model file between the same
part headers, with a Content-Length) from a plain generator: no checksum, no
zip check, nothing but the bytes. A third mode, ``raw+sha256``, is that POST
hashing each chunk inline: the ceiling of any upload that checks a SHA-256
(one digest cannot be split across cores).

Three servers, each measured with all three modes in the same run:

``sink``
    a loopback server in this process that reads and discards the body. The
    link is then faster than SHA-256 on one core (about 1.9 GiB/s with SHA-NI):
    no hashed upload can reach 85% of raw here, and the figure shows by how much.
``link``
    the same sink reading at most ``--link-gbit`` (default 10 Gbit/s, a fast
    datacenter link): what a job sees on a real network, where the hash should
    hide behind the link.
``emulator``
    the project's own create-model endpoint (``abeja-runtime emulator``: parses
    the multipart stream, hashes and stores the model on disk).

Each measurement runs in a fresh subprocess (so peak RSS is its own). Runs
rotate the order of the modes.

Usage::

    python benchmarks/bench_model_upload.py --size-mib 1024 --repeat 3
    python benchmarks/bench_model_upload.py --servers sink      # one server only
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


def _make_zip(path: Path, size: int) -> None:
    """A stored (uncompressed) zip of random bytes, so upload_model sends it as it is."""
    info = zipfile.ZipInfo("model.bin", date_time=(2024, 1, 1, 0, 0, 0))
    block = os.urandom(CHUNK)
    with zipfile.ZipFile(path, "w") as zf, zf.open(info, "w", force_zip64=True) as out:
        left = size
        while left > 0:
            n = min(CHUNK, left)
            out.write(block[:n])
            left -= n


BOUNDARY = "benchboundary0123456789abcdef"


def _multipart_parts(file: str, parameters: dict[str, Any]) -> tuple[bytes, bytes]:
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


def _worker(mode: str, file: str, url: str) -> None:
    import psutil
    import requests

    from abeja_runtime.client import APIClient
    from abeja_runtime.models import upload_model

    org, name, job, token = (os.environ[k] for k in ("B_ORG", "B_NAME", "B_JOB", "B_TOKEN"))
    path = f"/organizations/{org}/training/definitions/{name}/models"
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
    size = os.path.getsize(file)
    started = time.perf_counter()
    if mode in ("raw", "raw+sha256"):
        digest = hashlib.sha256() if mode == "raw+sha256" else None
        head, tail = _multipart_parts(file, {"training_job_id": job})

        class Body:
            """The body as an iterable with a length: requests then sends a Content-Length
            (a bare generator would make it add Transfer-Encoding: chunked too)."""

            def __len__(self) -> int:
                return len(head) + size + len(tail)

            def __iter__(self) -> Any:
                yield head
                with open(file, "rb") as fh:
                    while chunk := fh.read(CHUNK):
                        if digest is not None:
                            digest.update(chunk)
                        yield chunk
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
    stop.set()
    sampler.join()
    peak = max(peak, proc.memory_info().rss)
    print(json.dumps({"seconds": elapsed, "bytes": size, "rss_over_baseline": peak - baseline}))


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
            return
        handler = _Sink if kind == "sink" else _paced_sink(link_gbit)
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        self.ids = {"B_ORG": ORG, "B_NAME": NAME, "B_JOB": JOB, "B_TOKEN": "bench"}
        self._stop = server.shutdown

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="model size (MiB)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, alternated")
    parser.add_argument(
        "--servers",
        default="sink,link,emulator",
        help="comma-separated: sink, link, emulator (default: all three)",
    )
    parser.add_argument("--link-gbit", type=float, default=10.0, help="the link server's rate")
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
    size = args.size_mib * CHUNK
    print(f"model: {args.size_mib} MiB stored zip, {args.repeat} alternated runs of each mode")
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="bench-model-") as tmp:
        file = Path(tmp) / "model.zip"
        _make_zip(file, size)
        for kind in kinds:
            server = _Server(kind, args.link_gbit, Path(tmp))
            try:
                label = f"{kind} ({args.link_gbit:g} Gbit/s)" if kind == "link" else kind
                verdicts.append(_run_server(label, file, server, args.repeat))
            finally:
                server.stop()
    print()
    for line in verdicts:
        print(line)


def _run_server(label: str, file: Path, server: _Server, repeat: int) -> str:
    modes = ["raw", "upload_model", "raw+sha256"]
    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for i in range(repeat):
        order = modes[i % len(modes) :] + modes[: i % len(modes)]
        for mode in order:
            results[mode].append(_measure(mode, file, server.url, server.ids))
    print(f"server: {label}")
    tput: dict[str, float] = {}
    for mode, runs in results.items():
        rates = [r["bytes"] / r["seconds"] / CHUNK for r in runs]
        tput[mode] = statistics.median(rates)
        rss = max(r["rss_over_baseline"] for r in runs) / CHUNK
        print(
            f"  {mode:>13}: median {tput[mode]:8.1f} MiB/s (runs: "
            + ", ".join(f"{x:.0f}" for x in rates)
            + f"), peak RSS over baseline {rss:.1f} MiB"
        )
    ratio = tput["upload_model"] / tput["raw"]
    floor = tput["upload_model"] / tput["raw+sha256"]
    rss_up = max(r["rss_over_baseline"] for r in results["upload_model"]) / CHUNK
    return (
        f"{label:>22}: upload_model/raw {ratio:6.1%} (target >= 85%: "
        f"{'met' if ratio >= 0.85 else 'NOT met'}), upload_model/raw+sha256 {floor:6.1%}, "
        f"peak RSS +{rss_up:.1f} MiB (target <= 64 MiB: {'met' if rss_up <= 64 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
