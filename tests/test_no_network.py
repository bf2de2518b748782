"""The suite runs with the network blocked but for loopback and unix sockets (pytest-socket,
configured in pyproject's ``addopts``: ``--allow-hosts`` and ``--allow-unix-socket``), so a test
that reaches out fails instead of skipping. Ray, the GCS/S3 emulators and moto all listen on
127.0.0.1 and keep working.

203.0.113.1 is TEST-NET-3 (RFC 5737): documentation only, never routed, nobody's machine."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import socketserver
import threading
import urllib.request
from contextlib import contextmanager

import pytest
from pytest_socket import SocketConnectBlockedError

OUTSIDE = "203.0.113.1"


def test_the_guard_is_on_and_allows_loopback_only(pytestconfig):
    hosts = pytestconfig.getoption("allow_hosts")
    assert hosts, "pyproject's addopts must pass --allow-hosts (pytest-socket)"
    for host in hosts.split(","):
        if host == "localhost":
            continue
        assert ipaddress.ip_network(host, strict=False).is_loopback, host
    assert pytestconfig.getoption("allow_unix_socket"), "Ray talks over unix sockets"
    assert not pytestconfig.getoption("force_enable_socket")


def test_a_socket_to_the_outside_is_refused():
    with pytest.raises(SocketConnectBlockedError), pytest.warns(UserWarning, match=OUTSIDE):
        socket.create_connection((OUTSIDE, 80), timeout=2)


def test_http_to_the_outside_is_refused():
    with pytest.raises(SocketConnectBlockedError), pytest.warns(UserWarning, match=OUTSIDE):
        urllib.request.urlopen(f"http://{OUTSIDE}/", timeout=2)


def test_asyncio_to_the_outside_is_refused():
    """gcsfs and s3fs speak through aiohttp, which connects through the event loop."""
    async def reach_out():
        await asyncio.wait_for(asyncio.open_connection(OUTSIDE, 443), 2)

    with pytest.raises(SocketConnectBlockedError), pytest.warns(UserWarning, match=OUTSIDE):
        asyncio.run(reach_out())


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(self.request.recv(64).upper())


@contextmanager
def _serving(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_to_a_server_of_our_own_works(host):
    with _serving(socketserver.TCPServer(("127.0.0.1", 0), _Echo)) as server:
        with socket.create_connection((host, server.server_address[1]), timeout=5) as conn:
            conn.sendall(b"ping")
            assert conn.recv(64) == b"PING"


def test_a_unix_socket_works(tmp_path):
    path = str(tmp_path / "echo.sock")
    with _serving(socketserver.UnixStreamServer(path, _Echo)):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(path)
            conn.sendall(b"ping")
            assert conn.recv(64) == b"PING"
