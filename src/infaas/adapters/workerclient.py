"""The client from the API (or the selector function) to workers.

A worker on this machine is reached over its local Unix socket with the frame
protocol of ``adapters/frames.py``; any other over HTTP/1.1. Both go through a
deliberately small client on an asyncio protocol: one pool of
keep-alive connections per worker, one request per connection at a time, the
request written in one vectored write (the tensors' memory as it is, no
copy), the answer parsed in ``data_received``; ``Content-Length`` bodies only
(the worker server always sends one). General
clients spend more time per call than a worker spends running a small model;
this path runs on every query.

Faults: a connection that was reused from the pool and fails before any byte
of the answer arrived is retried once on a fresh connection (the worker may
simply have closed an idle connection). Anything else -- refused, reset,
timeout -- is a ``WorkerFault``, so the data plane can retry on another
worker. Errors the worker reports (bad input, not ready) come back as the same
domain error.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import sys
from typing import Callable
from urllib.parse import urlsplit

from infaas.adapters import frames, logs
from infaas.adapters.local.secret import socket_path
from infaas.core import errors, tensors
from infaas.core.ports import WorkerClient

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


KEY_HEADER = "x-infaas-worker-key"  # the worker credential on HTTP (``frames``: the header's "key")
MODEL_HEADER = "x-infaas-model"  # the variant's file as the caller's catalogue has it (``frames``: "model")

# what a worker may answer that is the caller's business (passed through); anything else is the worker failing
_PASSED_THROUGH = (errors.InvalidInput, errors.NotFound, errors.Unavailable, errors.PayloadTooLarge,
                   errors.NoFeasibleVariant)


class _Stale(Exception):
    """A pooled connection died before answering: try a fresh one."""


_MAX_HEAD = 64 << 10


class _Conn(asyncio.Protocol):
    """One keep-alive connection to a worker: one request at a time, the answer
    parsed straight from ``data_received`` (status line, Content-Length, body)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, framed: bool = False) -> None:
        self.loop = loop
        self.framed = framed  # the local frame protocol (adapters/frames.py) instead of HTTP/1.1
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future | None = None
        self._head = bytearray()
        self._body: list[bytes] = []
        self._got = 0
        self._length = -1
        self._status = 0
        self._keep = True
        self.answered = False  # any byte of the current answer arrived

    def connection_made(self, transport) -> None:
        self.transport = transport

    def send(self, parts) -> asyncio.Future:
        self.waiter = self.loop.create_future()
        self._head.clear()
        self._body, self._got, self._length, self.answered = [], 0, -1, False
        self.transport.writelines(parts)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():  # nothing asked: the worker is confused, drop the connection
            self.abort()
            return
        self.answered = True
        if self._length < 0 and self.framed:
            self._head += data
            if len(self._head) < frames.ANSWER.size:
                return
            self._status, self._length = frames.ANSWER.unpack_from(self._head)
            data = bytes(self._head[frames.ANSWER.size :])
            self._head.clear()
        elif self._length < 0:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_HEAD:
                    self._fail(ValueError("worker answer headers too long"))
                return
            try:
                self._parse_head(bytes(self._head[:end]))
            except (ValueError, IndexError) as exc:
                self._fail(ValueError(f"malformed worker answer: {exc}"))
                return
            data = bytes(self._head[end + 4 :])
            self._head.clear()
        if data:
            self._body.append(data)
            self._got += len(data)
        if self._length >= 0 and self._got >= self._length:
            if self._got > self._length:
                self._fail(ValueError("worker sent more than its Content-Length"))
                return
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            self._body = []
            self.waiter = None
            waiter.set_result((self._status, body, self._keep))

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self._status = int(lines[0].split(b" ", 2)[1])
        length, keep = None, True
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
        if length is None or length < 0:
            raise ValueError("no content-length")
        self._length, self._keep = length, keep

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(_Stale() if not self.answered else
                                 (exc or asyncio.IncompleteReadError(b"", None)))


class HttpWorkerClient(WorkerClient):
    takes_parts = True

    def __init__(self, timeout_s: float = 10.0, max_idle_per_worker: int = 64, socket_dir: str | None = None,
                 key: str | Callable[[], str] = "") -> None:
        """``key``: the worker credential every call carries (``wiring.worker_secret``), or a function
        that gives it, called at the first call (a control-plane function never reads it);
        ``socket_dir``: where workers on this machine also listen on a Unix socket
        (``adapters.local.secret.socket_path``), tried first for loopback URLs, TCP when there is none."""
        self.timeout_s = timeout_s
        self._key = key
        self.socket_dir = socket_dir if socket_dir and sys.platform.startswith("linux") else None
        self._no_local: set[tuple[str, int]] = set()
        self.max_idle = max_idle_per_worker
        self._idle: dict[tuple[str, int], collections.deque] = collections.defaultdict(collections.deque)
        self._addrs: dict[str, tuple[str, int]] = {}

    @property
    def key(self) -> str:
        if callable(self._key):
            self._key = self._key()
        return self._key

    async def infer(self, url: str, variant_id: str, frame, objective_ms: float | None,
                    model: str | None = None) -> bytes:
        """``frame``: the tensor frame as bytes, or as a list of buffers (``tensors.encode_parts``);
        ``model``: the variant's file as the catalogue has it (the worker reloads a replica of another)."""
        addr = self._addrs.get(url)
        if addr is None:
            parts = urlsplit(url)
            addr = (parts.hostname or "127.0.0.1", parts.port or 80)
            if len(self._addrs) > 4096:
                self._addrs.clear()
            self._addrs[url] = addr
        chunks = [frame] if isinstance(frame, (bytes, bytearray, memoryview)) else list(frame)
        size = sum(len(c) if isinstance(c, bytes) else memoryview(c).nbytes for c in chunks)
        rid = logs.REQUEST_ID.get()
        objective = None if objective_ms is None else float(objective_ms)

        def parts_for(conn: _Conn) -> list:
            if conn.framed:  # the local socket: frames (adapters/frames.py)
                out = frames.request(variant_id, objective, rid, chunks, size, self.key, model)
            else:
                extra = f"{KEY_HEADER}: {self.key}\r\n"
                if objective is not None:
                    extra += f"x-infaas-objective-ms: {objective!r}\r\n"
                if rid is not None:
                    extra += f"x-request-id: {rid}\r\n"
                if model is not None:
                    extra += f"{MODEL_HEADER}: {model}\r\n"
                head = (
                    f"POST /v1/infer/{variant_id} HTTP/1.1\r\nhost: {addr[0]}\r\n"
                    f"content-type: {tensors.CONTENT_TYPE}\r\ncontent-length: {size}\r\n{extra}\r\n"
                ).encode()
                out = [head, *chunks]
            if size <= 1 << 14 and len(out) <= 5:  # small: one buffer, one write
                return [b"".join(out)]
            return out

        try:
            try:
                status, body = await self._exchange(addr, parts_for, reuse=True)
            except _Stale:
                status, body = await self._exchange(addr, parts_for, reuse=False)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, _Stale, ValueError) as exc:
            raise errors.WorkerFault(f"worker at {url} failed: {type(exc).__name__}") from None
        if status == 200:
            return body
        raise worker_error(url, status, body)

    async def _connect(self, addr, loop) -> _Conn:
        if self.socket_dir and addr[0] in _LOOPBACK and addr not in self._no_local:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(socket_path(self.socket_dir, addr[1]))  # a local connect completes at once (or refuses)
            except BlockingIOError:  # its backlog is full: TCP this time
                sock.close()
            except OSError:  # no local socket: this worker speaks TCP only
                sock.close()
                if len(self._no_local) > 4096:
                    self._no_local.clear()
                self._no_local.add(addr)
            else:
                _, conn = await loop.create_unix_connection(lambda: _Conn(loop, framed=True), sock=sock)
                return conn
        _, conn = await asyncio.wait_for(loop.create_connection(lambda: _Conn(loop), *addr), self.timeout_s)
        return conn

    async def _exchange(self, addr, parts_for, *, reuse: bool) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        idle = self._idle[addr]
        conn = None
        while reuse and idle:
            c = idle.pop()
            if not c.closed and c.loop is loop:
                conn = c
                break
            c.abort()
        pooled = conn is not None
        if conn is None:
            conn = await self._connect(addr, loop)
        waiter = conn.send(parts_for(conn))
        timer = loop.call_later(self.timeout_s, _expire, waiter)
        try:
            status, body, keep = await waiter
        except _Stale:
            if pooled:
                raise
            raise ConnectionResetError("worker closed the connection before answering") from None
        except BaseException:
            conn.abort()
            raise
        finally:
            timer.cancel()
        if keep and not conn.closed and len(idle) < self.max_idle:
            idle.append(conn)
        else:
            conn.abort()
        return status, body

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().abort()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


def worker_error(url: str, status: int, body: bytes) -> errors.InfaasError:
    """What a worker's error answer means to the API: the caller's business (bad input, no
    such variant, come back later) passes through; anything else is the worker failing."""
    exc = errors.decode(status, body)
    if isinstance(exc, errors.WorkerDraining):  # leaving: the data plane tries another worker at once
        return exc
    if isinstance(exc, _PASSED_THROUGH):
        return exc
    if isinstance(exc, errors.VariantFault):  # the worker says the variant failed (a replica died, ran past
        return exc  # its deadline): the variant's fault; the worker stays in selection and nothing is retried
    if status == 401:  # not the caller's fault: this API and the worker hold different credentials
        return errors.WorkerFault(f"worker at {url} refused this API's worker key (INFAAS_WORKER_SECRET differs)")
    if status < 500:
        return errors.InvalidInput(exc.message, field=exc.field)
    if status == 500:  # the worker is up and said what failed: the variant's fault, not the worker's
        return errors.VariantFault(f"the variant failed on the worker: {exc.message}")
    return errors.WorkerFault(f"worker at {url} failed: {exc.message}")


class InProcessWorkerClient(WorkerClient):
    """Workers in this process, no transport: ``workers`` maps a worker's URL to its
    agent (``infaas.worker.server.WorkerAgent``), whose ``answer`` gets the same
    variant, objective, request id and frame the frame socket or HTTP route would
    pass. The in-process API tests run the API and a worker in one event loop with it."""

    def __init__(self, workers: dict) -> None:
        self.workers = workers

    async def infer(self, url: str, variant_id: str, frame, objective_ms: float | None,
                    model: str | None = None) -> bytes:
        agent = self.workers.get(url)
        if agent is None:
            raise errors.WorkerFault(f"no worker at {url} in this process")
        body = frame if isinstance(frame, bytes) else b"".join(bytes(part) for part in frame)
        objective = None if objective_ms is None else float(objective_ms)
        status, _media, _extra, answer = await agent.answer(variant_id, objective, logs.REQUEST_ID.get(), body, model)
        if status == 200:
            return answer
        raise worker_error(url, status, answer)
