"""HTTP client from the API (or the selector function) to workers.

A deliberately small HTTP/1.1 client on asyncio streams: one pool of
keep-alive connections per worker, one request per connection at a time,
``Content-Length`` bodies only (the worker server always sends one). General
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
import json
from urllib.parse import urlsplit

from .. import errors, tensors
from ..service import WorkerClient

_BY_CODE = {
    cls.code: cls
    for cls in (
        errors.InvalidInput,
        errors.NotFound,
        errors.Unavailable,
        errors.PayloadTooLarge,
        errors.NoFeasibleVariant,
    )
}


class _Stale(Exception):
    """A pooled connection died before answering: try a fresh one."""


class HttpWorkerClient(WorkerClient):
    def __init__(self, timeout_s: float = 10.0, max_idle_per_worker: int = 64) -> None:
        self.timeout_s = timeout_s
        self.max_idle = max_idle_per_worker
        self._idle: dict[tuple[str, int], collections.deque] = collections.defaultdict(collections.deque)

    async def infer(self, url: str, variant_id: str, frame: bytes, objective_ms: float | None) -> bytes:
        parts = urlsplit(url)
        addr = (parts.hostname or "127.0.0.1", parts.port or 80)
        extra = f"x-infaas-objective-ms: {float(objective_ms)!r}\r\n" if objective_ms is not None else ""
        head = (
            f"POST /v1/infer/{variant_id} HTTP/1.1\r\nhost: {addr[0]}\r\n"
            f"content-type: {tensors.CONTENT_TYPE}\r\ncontent-length: {len(frame)}\r\n{extra}\r\n"
        ).encode()
        try:
            try:
                status, body = await asyncio.wait_for(self._exchange(addr, head, frame, reuse=True), self.timeout_s)
            except _Stale:
                status, body = await asyncio.wait_for(self._exchange(addr, head, frame, reuse=False), self.timeout_s)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, _Stale, ValueError) as exc:
            raise errors.WorkerFault(f"worker at {url} failed: {type(exc).__name__}") from None
        if status == 200:
            return body
        try:
            doc = json.loads(body)
        except ValueError:
            raise errors.WorkerFault(f"worker at {url} answered {status} without an error body") from None
        if status >= 500 and doc.get("error") not in _BY_CODE:
            raise errors.WorkerFault(f"worker at {url} failed: {doc.get('message', status)}")
        cls = _BY_CODE.get(doc.get("error"), errors.InvalidInput)
        raise cls(doc.get("message", "worker rejected the request"), field=doc.get("field"))

    async def _exchange(self, addr, head: bytes, body: bytes, *, reuse: bool) -> tuple[int, bytes]:
        idle = self._idle[addr]
        pooled = reuse and bool(idle)
        reader, writer = idle.pop() if pooled else await asyncio.open_connection(*addr)
        try:
            writer.write(head + body)
            try:
                status_line = await reader.readuntil(b"\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                if pooled:
                    raise _Stale() from None
                raise
            header_block = await reader.readuntil(b"\r\n\r\n")
            status = int(status_line.split(b" ", 2)[1])
            length, keep = None, True
            for line in header_block.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False
            if length is None:
                raise ValueError("worker answer without content-length")
            payload = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if keep and len(idle) < self.max_idle:
            idle.append((reader, writer))
        else:
            writer.close()
        return status, payload

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                _, writer = idle.pop()
                writer.close()
