"""Two helpers for the bare ASGI paths (``hotpath.serve_asgi``, the worker server)."""

from __future__ import annotations


async def read_body(receive, limit: int) -> bytes | None:
    """The whole request body; None when it exceeds ``limit`` bytes (the rest is read and dropped)."""
    chunks, size, over = [], 0, False
    while True:
        message = await receive()
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
