"""A fault-injecting HTTP proxy on loopback, in front of an object-store emulator (the GCS emulator,
moto's S3): clients use its address as their endpoint, and about ``rate`` of the requests fail.

Faults (each request draws at most one, with probability ``rate``; kinds equally likely):

* ``5xx``      a 503 answer, either instead of forwarding the request or after the store has
               carried it out (the client must not assume that a failed write did not happen);
* ``reset``    the connection is reset (TCP RST), before or after the store carried it out;
* ``stall``    the answer comes ``stall_s`` late (a slow store), then whole;
* ``truncate`` the answer's headers announce the whole body, half of it comes, the connection closes.

Bounded: a request (method + path + query) fails at most ``max_in_a_row`` times in a row, so a
client that retries gets through, and ``max_faults`` caps the total. Every fault is counted by kind.
Unbounded on purpose: requests whose path contains one of ``broken`` always get a 503 (counted
as ``broken``): an object the store cannot serve, however often it is asked.
Only 127.0.0.1 is ever dialled or listened on.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("5xx", "reset", "stall", "truncate")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultProxy:
    def __init__(self, upstream_port: int, rate: float = 0.1, seed: int = 0, stall_s: float = 1.5,
                 max_in_a_row: int = 2, max_faults: int | None = None, kinds: tuple[str, ...] = KINDS,
                 broken: tuple[str, ...] = ()):
        self.upstream_port, self.rate, self.stall_s, self.broken = upstream_port, rate, stall_s, broken
        self.max_in_a_row, self.max_faults, self.kinds = max_in_a_row, max_faults, kinds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.faults: Counter = Counter()
        self.requests = 0
        self.in_a_row: Counter = Counter()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                proxy.handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _any  # noqa: N815

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address):  # a reset we injected, or a client gone
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def total_faults(self) -> int:
        """Injected transient faults (not ``broken`` answers)."""
        return sum(v for k, v in self.faults.items() if k != "broken")

    # -- one request ---------------------------------------------------------------------------

    def _draw(self, key: str) -> str | None:
        with self.lock:
            self.requests += 1
            if any(b in key for b in self.broken):
                self.faults["broken"] += 1
                return "broken"
            capped = self.max_faults is not None and self.total_faults >= self.max_faults
            if capped or self.in_a_row[key] >= self.max_in_a_row or self.rng.random() >= self.rate:
                self.in_a_row[key] = 0
                return None
            kind = self.rng.choice(self.kinds)
            self.in_a_row[key] += 1
            self.faults[kind] += 1
            return kind

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        body = self._read_body(h)
        kind = self._draw(f"{h.command} {h.path}")
        early = kind in ("5xx", "reset") and self.rng.random() < 0.5  # before the store sees it
        if kind == "broken" or (kind and early):
            return self._fail(h, kind)
        try:
            status, headers, data = self._forward(h, body)
        except OSError:
            return self._reset(h)
        if kind == "stall":
            time.sleep(self.stall_s)
        elif kind in ("5xx", "reset"):
            return self._fail(h, kind)
        elif kind == "truncate" and len(data) < 2:
            return self._reset(h)
        h.send_response(status)
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                h.send_header(k, v)
        length = headers_length(headers, data) if h.command == "HEAD" else len(data)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        if h.command == "HEAD":
            return
        if kind == "truncate":
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            return self._reset(h)
        h.wfile.write(data)

    @staticmethod
    def _read_body(h: BaseHTTPRequestHandler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += h.rfile.read(size)
                h.rfile.readline()
        n = int(h.headers.get("Content-Length") or 0)
        return h.rfile.read(n) if n else b""

    def _forward(self, h: BaseHTTPRequestHandler, body: bytes):
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP
                       and k.lower() not in ("content-length", "expect")}
            headers["Host"] = f"127.0.0.1:{self.upstream_port}"
            if body or h.command in ("PUT", "POST", "PATCH"):
                headers["Content-Length"] = str(len(body))
            conn.request(h.command, h.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def _fail(self, h: BaseHTTPRequestHandler, kind: str) -> None:
        """A reset, or a 503 (``5xx``, ``broken``)."""
        if kind == "reset":
            return self._reset(h)
        msg = b'{"error": {"code": 503, "message": "injected by the fault proxy"}}'
        h.send_response(503)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(msg)))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(msg)

    @staticmethod
    def _reset(h: BaseHTTPRequestHandler) -> None:
        """Close with RST (SO_LINGER 0), as a store whose connection breaks."""
        h.close_connection = True
        try:
            h.wfile.flush()
        except OSError:
            pass
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
        except OSError:
            pass


def headers_length(headers, data: bytes) -> int:
    for k, v in headers:
        if k.lower() == "content-length":
            return int(v)
    return len(data)
