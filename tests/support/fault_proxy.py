"""A fault-injecting HTTP proxy on 127.0.0.1, in front of the emulator.

One request per connection (every answer says ``Connection: close``), so that each
post is seen, timed and decided on its own. Modes, switchable at any time:

* ``"pass"``: forward (after ``latency`` seconds);
* ``"status"``: answer ``status`` (with ``Retry-After`` when ``retry_after`` is set)
  without forwarding;
* ``"drop"``: forward, then close the connection without answering (the server has
  the document; the client cannot know);
* ``"swallow"``: read the whole request, then close the connection without forwarding
  it (the server never saw it; the client cannot know either);
* ``"refuse"``: :meth:`refuse` closes the listener (connection refused) until
  :meth:`restore`.

Faults apply to POSTs whose request line contains ``target`` (default: statistics
posts); with ``faults_left`` set, only to that many of them, then the proxy forwards.
``posts`` holds (monotonic time, mode) for every such POST that reached the proxy.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


class FaultProxy:
    """See the module docstring."""

    def __init__(
        self, upstream_port: int, *, target: bytes = b"/statistics", mode: str = "pass"
    ) -> None:
        self.upstream_port = upstream_port
        self.target = target
        self.mode = mode
        self.faults_left: int | None = None
        self.latency = 0.0
        self.status = 503
        self.retry_after: float | None = None
        self.lock = threading.Lock()
        self.posts: list[tuple[float, str]] = []
        self.port = 0
        self._sock: socket.socket | None = None
        self._listen()

    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._sock = sock
        threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = _read_request(conn)
            except OSError:
                return
            if not request:
                return
            first = request.split(b"\r\n", 1)[0]
            is_post = first.startswith(b"POST ") and self.target in first
            mode = self.mode if is_post else "pass"
            if is_post:
                with self.lock:
                    if mode != "pass" and self.faults_left is not None:
                        if self.faults_left <= 0:
                            mode = "pass"
                        else:
                            self.faults_left -= 1
                    self.posts.append((time.monotonic(), mode))
            if mode == "swallow":
                return  # read, never forwarded, never answered
            if mode == "status":
                body = json.dumps(
                    {"error": "injected", "error_description": f"injected {self.status}"}
                ).encode()
                extra = (
                    f"Retry-After: {self.retry_after:g}\r\n" if self.retry_after is not None else ""
                )
                head = (
                    f"HTTP/1.1 {self.status} Injected\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
                )
                conn.sendall(head.encode() + body)
                return
            if self.latency:
                time.sleep(self.latency)
            request = request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            try:
                with socket.create_connection(("127.0.0.1", self.upstream_port)) as up:
                    up.sendall(request)
                    response = b""
                    while chunk := up.recv(65536):
                        response += chunk
            except OSError:
                return
            if mode == "drop":
                return  # forwarded, never answered
            # make the client reconnect for the next request
            response = response.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
            try:
                conn.sendall(response)
            except OSError:
                return

    def refuse(self) -> None:
        """Close the listener: connections are refused until :meth:`restore`."""
        sock, self._sock = self._sock, None
        if sock is not None:
            # shutdown wakes the accept() blocked in the serving thread; close alone
            # would leave the listener accepting until that call returns
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        """Listen again on the same port, forwarding."""
        self.mode = "pass"
        if self._sock is None:
            self._listen()

    def post_times(self, mode: str | None = None) -> list[float]:
        with self.lock:
            return [at for at, m in self.posts if mode is None or m == mode]

    def close(self) -> None:
        self.refuse()
