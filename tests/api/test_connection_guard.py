"""The connection guard (adapters/http/guard.py) on a real uvicorn server on 127.0.0.1: a bound
on open connections that pushes out the ones without a request first, and header and body
deadlines that uvicorn alone does not have."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time

import pytest
import uvicorn

from infaas.adapters.http.guard import ConnectionGuard

HALF = b"GET /fast HTTP/1.1\r\nHost: t\r\n"


class Server:
    """uvicorn with the guard on a free port; ``/slow`` answers once ``release`` is set."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self.guard = guard
        self.release = threading.Event()
        self.bodies: list[bytes] = []
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, http=guard.protocol(),
                                log_level="warning", log_config=None, lifespan="off", interface="asgi3")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def app(self, scope, receive, send) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        if scope["path"] == "/slow":
            while not self.release.is_set():
                await asyncio.sleep(0.01)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.should_exit = True
        self.thread.join(10)

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return s

    def wait_open(self, n: int) -> None:
        deadline = time.monotonic() + 10
        while self.guard.open != n:
            assert time.monotonic() < deadline, f"{self.guard.open} open, expected {n}"
            time.sleep(0.01)


def get(s: socket.socket, path: str = "/fast") -> bytes:
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return read_answer(s)


def read_answer(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def closed_by_server(s: socket.socket) -> bytes:
    """What the server sent before closing (b"" when it just closed)."""
    s.settimeout(10)
    data = b""
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_a_connection_beyond_the_bound_pushes_out_the_oldest_one_without_a_request():
    with Server(ConnectionGuard("t", 3, header_timeout_s=60, body_timeout_s=60)) as srv:
        half = []
        for _ in range(3):
            s = srv.connect()
            s.sendall(HALF)
            half.append(s)
        srv.wait_open(3)
        fresh = srv.connect()
        assert get(fresh).startswith(b"HTTP/1.1 200")  # the newcomer is served ...
        assert closed_by_server(half[0]) == b""  # ... and the oldest half-sent header made room
        assert srv.guard.counts["pushed_out"] == 1
        half[1].sendall(b"\r\n")  # the others still finish their requests
        assert read_answer(half[1]).startswith(b"HTTP/1.1 200")


def test_idle_kept_alive_connections_go_before_busy_ones_and_busy_ones_are_never_pushed():
    with Server(ConnectionGuard("t", 2, header_timeout_s=60, body_timeout_s=60)) as srv:
        idle = srv.connect()
        assert get(idle).startswith(b"HTTP/1.1 200")
        busy = srv.connect()
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        srv.wait_open(2)
        while srv.bodies.count(b"") < 2:  # the slow request is in the app
            time.sleep(0.01)
        newcomer = srv.connect()
        assert get(newcomer).startswith(b"HTTP/1.1 200")
        assert closed_by_server(idle) == b""  # the idle one made room
        # now both open connections have a request in progress: the next one is refused at once
        newcomer.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
        while srv.bodies.count(b"") < 4:
            time.sleep(0.01)
        refused = srv.connect()
        answer = closed_by_server(refused)
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in answer.lower(), answer
        assert srv.guard.counts["refused"] == 1
        srv.release.set()
        assert read_answer(busy).startswith(b"HTTP/1.1 200")  # the busy ones were never touched
        assert read_answer(newcomer).startswith(b"HTTP/1.1 200")


def test_bodies_that_drip_in_are_pushed_out_before_a_newcomer_is_refused():
    with Server(ConnectionGuard("t", 2, header_timeout_s=60, body_timeout_s=60)) as srv:
        drips = []
        for _ in range(2):
            s = srv.connect()
            s.sendall(b"POST /fast HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n{")
            drips.append(s)
        srv.wait_open(2)
        while len(srv.guard.receiving) < 2:
            time.sleep(0.01)
        fresh = srv.connect()
        assert get(fresh).startswith(b"HTTP/1.1 200")  # served ...
        assert closed_by_server(drips[0]) == b""  # ... in the place of the body that began longest ago
        assert srv.guard.counts["pushed_out"] == 1 and srv.guard.counts["refused"] == 0

def test_a_header_that_drips_in_past_the_deadline_gets_408(caplog):
    with caplog.at_level(logging.WARNING, logger="infaas.http"):
        with Server(ConnectionGuard("t", 10, header_timeout_s=0.5, body_timeout_s=60)) as srv:
            s = srv.connect()
            for piece in (b"GET /fast HTTP/1.1\r\n", b"Host: t\r\n", b"X-A: 1\r\n"):  # one piece per 0.2 s
                s.sendall(piece)
                time.sleep(0.2)
            answer = closed_by_server(s)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert srv.guard.counts["header_timeout"] == 1
            fine = srv.connect()
            assert get(fine).startswith(b"HTTP/1.1 200")  # a whole header in time is served
            srv.guard._log()
    assert any("header timeout 1" in r.getMessage() for r in caplog.records), caplog.text


def test_a_body_that_stops_arriving_is_closed_and_the_app_sees_the_client_gone():
    with Server(ConnectionGuard("t", 10, header_timeout_s=60, body_timeout_s=0.5)) as srv:
        s = srv.connect()
        s.sendall(b"POST /fast HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
        assert closed_by_server(s) == b""
        assert srv.guard.counts["body_timeout"] == 1
        assert srv.bodies == []  # the handler never got a partial body as if it were whole


def test_a_slow_body_that_keeps_arriving_is_not_cut():
    with Server(ConnectionGuard("t", 10, header_timeout_s=60, body_timeout_s=1.0)) as srv:
        s = srv.connect()
        s.sendall(b"POST /fast HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n")
        for _ in range(8):  # 8 pieces, 0.2 s apart: 1.6 s in all, longer than the idle limit
            time.sleep(0.2)
            s.sendall(b"y")
        assert read_answer(s).startswith(b"HTTP/1.1 200")
        assert srv.bodies == [b"y" * 8]


@pytest.mark.parametrize("limit", [0, -5])
def test_the_bound_is_at_least_one(limit):
    assert ConnectionGuard("t", limit, 1, 1).max_connections == 1
