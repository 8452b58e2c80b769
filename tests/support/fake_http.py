"""Tiny local servers that misbehave on purpose, for the failures a real Prometheus cannot be asked to
produce on demand: slow answers, 503s, dropped connections, TLS with a private CA, and a recorder that
shows which headers (credentials) were actually sent and how many requests/connections arrived.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.support.closing import Closing

__all__ = [
    "DroppingServer",
    "FakeHTTPServer",
    "HangingServer",
    "Response",
    "make_self_signed_cert",
    "vector_response",
]


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    repeat: int = 1
    """Send `body` this many times (a huge answer without holding it in memory)."""
    declare_length: bool = True
    """False: no Content-Length, the body ends when the connection closes (as HTTP/1.0 allows)."""
    pause: float = 0.0
    """Seconds between two repeats of `body`: a server that trickles its answer."""


def vector_response(value: float | str = 1.0) -> Response:
    """A one-series instant-vector answer, as Prometheus would send it."""
    payload = {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [time.time(), str(value)]}]},
    }
    return Response(body=json.dumps(payload).encode())


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes = b""
    """The request body (POST), for receivers of notifications."""


@dataclass
class _State:
    respond: Callable[[str], Response]
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeHTTPServer(Closing):
    """An HTTP(S) server on 127.0.0.1 answering every GET/POST with `respond(path)` and recording it."""

    def __init__(
        self,
        respond: Callable[[str], Response] | Response | None = None,
        *,
        tls: tuple[Path, Path] | None = None,
        port: int = 0,
    ) -> None:
        if respond is None:
            respond = vector_response()
        fixed = respond
        self.state = _State(respond=fixed if callable(fixed) else (lambda _path: fixed))
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with state.lock:
                    state.requests.append(Recorded(path=self.path, headers=dict(self.headers.items()), body=body))
                response = state.respond(self.path)
                if response.delay:
                    time.sleep(response.delay)
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", response.content_type)
                    for name, value in response.headers.items():
                        self.send_header(name, value)
                    if response.declare_length:
                        self.send_header("Content-Length", str(len(response.body) * response.repeat))
                    else:
                        self.close_connection = True
                        self.send_header("Connection", "close")
                    self.end_headers()
                    for _ in range(response.repeat):
                        self.wfile.write(response.body)
                        if response.pause:
                            self.wfile.flush()
                            time.sleep(response.pause)
                except OSError:
                    pass  # the client gave up (timeout tests, capped bodies); nothing to answer to

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile=str(tls[0]), keyfile=str(tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def requests(self) -> list[Recorded]:
        with self.state.lock:
            return list(self.state.requests)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class DroppingServer(Closing):
    """Accepts TCP connections and closes them at once, counting them: proves a client did not retry."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()


class HangingServer(Closing):
    """Accepts TCP connections and never answers (nor closes them): a Prometheus that hangs.

    `open` is how many connections are held right now, `most` the most ever held at once.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self._sock.settimeout(0.1)
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self.most = 0
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def open(self) -> int:
        with self._lock:
            return len(self._held)

    def _serve(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                for conn in list(self._held):
                    if _peer_closed(conn):
                        self._held.remove(conn)
                        conn.close()
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._held.append(conn)
                self.most = max(self.most, len(self._held))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            for conn in self._held:
                conn.close()
            self._held.clear()
        self._sock.close()


def _peer_closed(conn: socket.socket) -> bool:
    """True once the client has closed its end (a read would return EOF); the request bytes are skipped."""
    conn.setblocking(False)
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def make_self_signed_cert(directory: Path) -> tuple[Path, Path] | None:
    """A throwaway certificate for 127.0.0.1/localhost via the openssl CLI (the venv has no
    `cryptography`); None when openssl is unavailable."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key
