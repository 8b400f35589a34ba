"""calls/s of ``get_training_job``: our pooled client vs a new ``requests.Session`` per call.

The public ``abeja-sdk`` builds a new ``Session`` (with a ``urllib3.Retry``
adapter) for every call, so every call opens a new TCP connection; our client
keeps one pooled keep-alive connection. Both run against one local HTTP/1.1
server (a ``ThreadingHTTPServer`` on 127.0.0.1 in a child process, so the
server does not share the client's GIL), in alternating rounds, in one run; the
figure that matters is the ratio (target: at least 1.5x).

If ``abeja-sdk`` is installed, its own client is measured too, for reference.

Usage:
    .venv/bin/python benchmarks/bench_client.py [--calls 1500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from abeja_runtime.api.client import APIClient

ORG = "1102940376065"
NAME = "bench"
JOB = "1443722127663"
TOKEN = "bench-token"
TARGET = 1.5

JOB_BODY = json.dumps(
    {
        "training_job_id": JOB,
        "id": JOB,
        "job_definition_id": "1443714239154",
        "job_definition_version": 1,
        "status": "Active",
        "instance_type": "cpu-1",
        "environment": {},
        "statistics": None,
        "archived": False,
        "created_at": "2018-05-17T12:43:59.322367Z",
        "modified_at": "2018-05-17T12:43:59.322673Z",
    }
).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(JOB_BODY)))
        self.end_headers()
        self.wfile.write(JOB_BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(port_queue: Any) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    port_queue.put(server.server_address[1])
    server.serve_forever()


def new_session_per_call(base_url: str) -> Callable[[], Any]:
    """What abeja-sdk 2.3.x does for each call: a fresh Session with a Retry adapter."""
    url = f"{base_url}/organizations/{ORG}/training/definitions/{NAME}/jobs/{JOB}"
    headers = {"Authorization": f"Bearer {TOKEN}", "User-Agent": "baseline"}

    def call() -> Any:
        with requests.Session() as session:
            retries = Retry(
                total=5,
                backoff_factor=1,
                allowed_methods=("GET", "POST", "PUT", "PATCH", "DELETE"),
                status_forcelist=(500, 502, 503, 504),
                raise_on_status=False,
            )
            session.mount("http://", HTTPAdapter(max_retries=retries))
            session.mount("https://", HTTPAdapter(max_retries=retries))
            response = session.get(url, headers=headers, timeout=30)
            response.raise_for_status()
            return response.json()

    return call


def rate(call: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return calls / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1500, help="calls per client per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median used)")
    args = parser.parse_args(argv)

    queue: Any = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(queue,), daemon=True)
    server.start()
    try:
        base_url = f"http://127.0.0.1:{queue.get(timeout=30)}"
        client = APIClient({"auth_token": TOKEN}, base_url=base_url)
        ours: Callable[[], Any] = lambda: client.get_training_job(ORG, NAME, JOB)  # noqa: E731
        baseline = new_session_per_call(base_url)
        contenders: dict[str, Callable[[], Any]] = {
            "abeja_runtime.APIClient (pooled)": ours,
            "new Session per call (baseline)": baseline,
        }
        try:
            import abeja.common.connection as sdk_connection
            from abeja.training import APIClient as SdkClient

            sdk_connection.Connection.BASE_URL = base_url
            sdk = SdkClient(credential={"auth_token": TOKEN})
            contenders["abeja-sdk 2.3.x (reference)"] = lambda: sdk.get_training_job(ORG, NAME, JOB)
        except ImportError:
            pass
        for call in contenders.values():  # warm up imports, DNS, the pool
            for _ in range(20):
                assert call()["training_job_id"] == JOB
        results: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, call in contenders.items():
                results[name].append(rate(call, args.calls))
        client.close()
    finally:
        server.terminate()
        server.join(5)

    medians = {name: statistics.median(values) for name, values in results.items()}
    print(
        f"get_training_job against one local HTTP/1.1 server, {args.calls} calls x {args.rounds} rounds"
    )
    for name, value in medians.items():
        spread = ", ".join(f"{v:.0f}" for v in results[name])
        print(f"  {name:36s} {value:8.0f} calls/s   (rounds: {spread})")
    ratio = medians["abeja_runtime.APIClient (pooled)"] / medians["new Session per call (baseline)"]
    verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
    print(f"  ratio pooled / new-session-per-call: {ratio:.2f}x (target >= {TARGET}x: {verdict})")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
