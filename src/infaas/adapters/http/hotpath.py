"""A lean HTTP/1.1 path for the few routes every query takes.

uvicorn's httptools protocol, with the hot routes taken out of ASGI: for a
matching ``POST`` the protocol collects the body itself, awaits one handler
coroutine and writes the whole answer (status line, headers, body) in one
``transport.write``. No ASGI scope, receive/send messages, middleware stack,
per-header checks or second write per answer; one task per request. Every
other request -- and a hot one that arrives pipelined behind an answer still
being computed -- takes uvicorn's usual way to the ASGI app, which serves the
hot routes too (the same handler behind an ASGI adapter), so behaviour does
not depend on which way a request went.

Used by the API (``POST /v2/models/{name}/infer``, ``POST /v1/infer``) and by
the worker (``POST /v1/infer/{variant}``)::

    uvicorn.run(app, http=hot_protocol(routes), ...)

``routes`` maps a request path to a handler ``async (path, headers, body) ->
(status, content_type, extra_headers, body)`` or None (headers: lower-cased
``(name, value)`` byte pairs, as ASGI has them). Bodies over ``routes.limit``
bytes are answered 413 without being kept.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Awaitable, Callable, Protocol

from infaas.adapters.http.asgi import read_body, send_bytes
from infaas.core import errors

try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
except ImportError:  # the Lambda functions have no uvicorn: they reach the handlers through serve_asgi
    HttpToolsProtocol, STATUS_LINE = object, {}  # type: ignore[assignment,misc]

log = logging.getLogger("infaas.http")

Answer = tuple[int, bytes, list, bytes]
Handler = Callable[[str, list, bytes], Awaitable[Answer]]

_LARGE = 1 << 16  # answers above this go out as two buffers (one writev) rather than one joined copy


class Routes(Protocol):
    limit: int

    def match(self, path: str) -> Handler | None: ...


class _Busy:
    """Stands in for uvicorn's request cycle while a hot answer is being computed:
    uvicorn then queues a pipelined request behind it instead of starting it."""

    __slots__ = ("response_complete", "disconnected", "keep_alive", "message_event")

    def __init__(self, keep_alive: bool) -> None:
        self.response_complete = False
        self.disconnected = False
        self.keep_alive = keep_alive
        self.message_event = asyncio.Event()


class _Request:
    __slots__ = ("handler", "path", "headers", "chunks", "size", "too_large", "keep_alive")

    def __init__(self, handler: Handler, path: str, headers: list, keep_alive: bool) -> None:
        self.handler, self.path, self.headers, self.keep_alive = handler, path, headers, keep_alive
        self.chunks: list[bytes] = []
        self.size = 0
        self.too_large = False


class HotPathProtocol(HttpToolsProtocol):
    routes: Routes  # set by ``hot_protocol``

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._hot: _Request | None = None

    def on_headers_complete(self) -> None:
        parser = self.parser
        if parser.get_method() == b"POST" and (self.cycle is None or self.cycle.response_complete):
            raw = self.url.split(b"?", 1)[0]
            try:
                path = raw.decode("ascii")
            except UnicodeDecodeError:
                path = ""
            if "%" in path:
                path = urllib.parse.unquote(path)
            handler = self.routes.match(path) if path else None
            if handler is not None and not parser.should_upgrade():
                keep_alive = parser.get_http_version() != "1.0" and parser.should_keep_alive()
                req = self._hot = _Request(handler, path, self.headers, keep_alive)
                limit = self.routes.limit
                for name, value in self.headers:
                    if name == b"content-length":
                        if value.isdigit() and int(value) > limit:
                            req.too_large = True
                        break
                self.cycle = _Busy(keep_alive)  # type: ignore[assignment]
                if self.expect_100_continue:
                    if req.too_large:  # the client waits for our word before sending the body: refuse now
                        req.keep_alive = self.cycle.keep_alive = False
                        self._write(req, *errors.too_large(limit))
                        self._hot = None
                        return
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        req = self._hot
        if req is None:
            return super().on_body(body)
        if req.too_large:
            return
        req.size += len(body)
        if req.size > self.routes.limit:
            req.too_large, req.chunks = True, []
        else:
            req.chunks.append(body)

    def on_message_complete(self) -> None:
        req = self._hot
        if req is None:
            return super().on_message_complete()
        self._hot = None
        task = self.loop.create_task(self._answer(req, self.cycle))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, req: _Request, busy: _Busy) -> None:
        if req.too_large:
            answer = errors.too_large(self.routes.limit)
        else:
            chunks = req.chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            req.chunks = []
            try:
                answer = await req.handler(req.path, req.headers, body)
            except Exception:  # the handlers map their errors; this is a bug, never a hung client
                log.exception("unexpected error on POST %s", req.path)
                answer = errors.internal()
        busy.response_complete = True
        if busy.disconnected or self.transport.is_closing():
            return
        self._write(req, *answer, keep_alive=busy.keep_alive)
        self.on_response_complete()  # uvicorn: start what was pipelined, or arm the keep-alive timeout

    def _write(self, req: _Request, status: int, content_type: bytes, extra: list, payload: bytes,
               keep_alive: bool | None = None) -> None:
        head = [STATUS_LINE[status], b"content-type: ", content_type, b"\r\ncontent-length: ",
                str(len(payload)).encode(), b"\r\n"]
        for name, value in extra:
            head += (name, b": ", value, b"\r\n")
        for name, value in self.server_state.default_headers:
            head += (name, b": ", value, b"\r\n")
        keep = req.keep_alive if keep_alive is None else keep_alive
        if not keep:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if len(payload) > _LARGE:
            self.transport.writelines((b"".join(head), payload))
        else:
            head.append(payload)
            self.transport.write(b"".join(head))
        if not keep:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(self.cycle, _Busy):
            self.cycle.disconnected = True
        super().connection_lost(exc)


def hot_protocol(routes: Routes) -> type[HotPathProtocol]:
    """A uvicorn ``http`` protocol class that serves ``routes`` on the lean path."""
    if HttpToolsProtocol is object:
        raise RuntimeError("the lean HTTP path needs uvicorn with httptools (uvicorn[standard])")
    return type("HotPathProtocol", (HotPathProtocol,), {"routes": routes})


def header(headers: list, name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


async def serve_asgi(handler: Handler, path: str, scope, receive, send, limit: int) -> None:
    """The same handler behind ASGI: for requests that did not take the hot path
    (pipelined, another server, the test client)."""
    declared = header(scope["headers"], b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        body = None
    else:
        body = await read_body(receive, limit)
    status, content_type, extra, payload = errors.too_large(limit) if body is None else await handler(path, scope["headers"], body)
    await send_bytes(send, status, content_type, payload, extra)
