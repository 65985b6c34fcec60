"""The bare ASGI path for the inference routes, shared by the API and the worker.

A handler is ``async (path, headers, body) -> (status, content_type, extra_headers, body)``
(headers: lower-cased ``(name, value)`` byte pairs, as ASGI has them). ``serve_asgi``
reads the body (answering 413 past ``limit`` without keeping it), awaits the handler
and sends the answer in two ASGI messages: no routing, no middleware, no dependency
solving. Any ASGI server runs it; `infaas up` and the worker use uvicorn's public API.
"""

from __future__ import annotations

from typing import Awaitable, Callable

from infaas.core import errors


class ClientGone(Exception):
    """The client closed the connection (or it was closed for it) before its body arrived."""


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body; None when it exceeds ``limit`` bytes (the rest is read and dropped).
    Raises ``ClientGone`` when the connection ends before the body does."""
    chunks, size, over = [], 0, False
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            over, chunks = True, []
        elif not over:
            chunks.append(chunk)
        if not message.get("more_body"):
            return None if over else b"".join(chunks)


async def send_bytes(send, status: int, content_type: bytes, body: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def header(headers: list, name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


Answer = tuple[int, bytes, list, bytes]
Handler = Callable[[str, list, bytes], Awaitable[Answer]]


async def serve_asgi(handler: Handler, path: str, scope, receive, send, limit: int) -> None:
    """Serve one inference request: the body (413 past ``limit``), the handler, the answer."""
    declared = header(scope["headers"], b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        body = None
    else:
        try:
            body = await read_body(receive, limit)
        except ClientGone:
            return  # nobody to answer
    status, content_type, extra, payload = errors.too_large(limit) if body is None else await handler(path, scope["headers"], body)
    await send_bytes(send, status, content_type, payload, extra)
