"""Two helpers for the bare ASGI hot paths (API fast path, worker server)."""

from __future__ import annotations

from .errors import PayloadTooLarge


async def read_body(receive, limit: int) -> bytes:
    """The whole request body, refusing more than ``limit`` bytes with 413."""
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes", field="body")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def send_bytes(send, status: int, content_type: bytes, body: bytes, extra: list | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
