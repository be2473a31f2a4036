"""Fixtures of the cloud tests: a real ``kpp serve`` process shared by the session, and a fault
proxy on loopback.

The shared server serves ``sa.cpu`` with one worker and these clients: ``user`` and ``other``
(no rate limit), ``admin`` (may pause the workers: how the conformance suite keeps a job QUEUED)
and ``slow`` (2 requests/s, bursts of 2). Its request limit is 256 KiB so that a 413 is cheap to
provoke.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from kpp_sdk.cloud import LocalServer
from kpp_sdk.cloud.client import HttpClient

SHARED_CLIENTS = {"user": "", "other": "", "admin": "role=admin", "slow": "rate=2 burst=2"}
SHARED_LIMIT = 256 * 1024


def need_server_extra() -> None:
    pytest.importorskip("fastapi", reason="needs the server extra: pip install 'kpp-sdk[server]'")
    pytest.importorskip("uvicorn", reason="needs the server extra: pip install 'kpp-sdk[server]'")


@pytest.fixture(scope="session")
def server_extra():
    """Skips the test when FastAPI/uvicorn are not installed."""
    need_server_extra()


@pytest.fixture(scope="session")
def server(server_extra):
    srv = LocalServer("sa.cpu", clients=SHARED_CLIENTS, workers=1,
                      max_request_bytes=SHARED_LIMIT)
    srv.start()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def admin(server):
    """Pause/resume the shared server's workers."""
    http = HttpClient(server.endpoint, server.tokens["admin"])

    class Admin:
        def pause(self):
            return http.request("POST", "/v1/admin/workers/pause")

        def resume(self):
            return http.request("POST", "/v1/admin/workers/resume")

    return Admin()


class FaultProxy:
    """A reverse proxy on 127.0.0.1 in front of ``upstream_port`` that injects scripted faults.

    ``inject(method, path, kind, arg)`` queues one fault for the next request whose path
    matches the regular expression ``path`` (in full):

    * ``("status", code)``: answer ``code`` itself (429 gets ``Retry-After: 1``), no forwarding;
    * ``("slow", seconds)``: wait, then forward (the client's read timeout fires first);
    * ``("drop", None)``: forward (the server does the work), then close without answering;
    * ``("truncate", None)``: forward, send the headers with the true Content-Length and half
      of the body, then close;
    * ``("garble", None)``: forward, answer 200 with half of the body and a matching
      Content-Length (valid HTTP, invalid JSON).

    ``events`` records ``(method, path, what happened)`` for every request.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.faults: list[list[Any]] = []
        self.events: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                proxy._serve(self)

            do_GET = do_POST = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, method: str, path: str, kind: str, arg: Any = None, times: int = 1):
        with self._lock:
            for _ in range(times):
                self.faults.append([method, re.compile(path), kind, arg])

    def pending(self) -> list:
        with self._lock:
            return list(self.faults)

    def _take(self, method: str, path: str):
        with self._lock:
            for k, (m, pattern, kind, arg) in enumerate(self.faults):
                if m == method and pattern.fullmatch(path):
                    del self.faults[k]
                    return kind, arg
        return None, None

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes):
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("host", "connection")}
        conn.request(h.command, h.path, body=body or None, headers=headers)
        r = conn.getresponse()
        data = r.read()
        skip = ("content-length", "connection", "transfer-encoding")
        out = (r.status, [(k, v) for k, v in r.getheaders() if k.lower() not in skip], data)
        conn.close()
        return out

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else b""
        path = h.path.split("?", 1)[0]
        kind, arg = self._take(h.command, path)
        with self._lock:
            self.events.append((h.command, path, kind or "forwarded"))
        try:
            if kind == "status":
                payload = (b'{"error": {"type": "ServerError", "message": "injected"}, "status": '
                           + str(arg).encode() + b"}")
                h.send_response(arg)
                if arg == 429:
                    h.send_header("Retry-After", "1")
                h.send_header("Content-Type", "application/json")
                h.send_header("Content-Length", str(len(payload)))
                h.end_headers()
                h.wfile.write(payload)
                return
            if kind == "slow":
                time.sleep(arg)
            status, headers, data = self._forward(h, body)
            if kind == "drop":
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
                return
            sent = data
            if kind == "garble":
                sent = data[: len(data) // 2]
            h.send_response(status)
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(sent) if kind != "truncate" else len(data)))
            h.end_headers()
            h.wfile.write(sent if kind != "truncate" else data[: len(data) // 2])
            if kind == "truncate":
                h.wfile.flush()
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its read timeout): what a slow answer is for

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def proxy(server):
    p = FaultProxy(server.port)
    yield p
    p.close()
