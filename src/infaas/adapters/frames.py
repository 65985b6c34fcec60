"""The API-to-worker hop on one machine: length-prefixed binary frames over a Unix socket.

Both ends belong to this project, so the local hop needs no HTTP. One connection
carries one request at a time (the client pools connections, as it does for HTTP):

    request   !II  header length, body length;  header (JSON: {"variant", "objective_ms", "request_id",
                   "key"}); body (a tensor frame, ``core/tensors.py``)
    answer    !HI  status, body length;  body (a tensor frame on 200, the error's JSON otherwise)

A worker on another machine is reached over HTTP (``POST /v1/infer/{variant}``) with the
same header values and the same bodies; ``answer_infer`` serves both. ``key`` is the worker
credential (``wiring.worker_secret``): a request without the right one is answered 401 and
its connection closed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import struct

from infaas.core import errors

REQUEST = struct.Struct("!II")
ANSWER = struct.Struct("!HI")
MAX_HEADER = 4096


def request(variant_id: str, objective_ms: float | None, request_id: str | None, chunks: list, size: int,
            key: str = "", model: str | None = None) -> list:
    """The buffers of one request (the body's chunks are sent as they are: one vectored write).
    ``model``: the variant's file (``Variant.model_key``) as the caller's catalogue has it."""
    head = json.dumps({"variant": variant_id, "objective_ms": objective_ms, "request_id": request_id,
                       "key": key, "model": model}).encode()
    return [REQUEST.pack(len(head), size) + head, *chunks]


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer, limit: int, key: str) -> None:
    """A worker's side of one connection: ``answer(variant_id, objective_ms, request_id, body, model)`` ->
    (status, media type, headers, body) for each request (only the status and the body travel), until the client closes it. A request over ``limit`` bytes,
    or a malformed one, is answered and the connection closed (its stream cannot be trusted)."""
    try:
        while True:
            try:
                head_len, body_len = REQUEST.unpack(await reader.readexactly(REQUEST.size))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if head_len > MAX_HEADER or body_len > limit:
                status, _, _, payload = (errors.too_large(limit) if body_len > limit else
                                         errors.encode(errors.InvalidInput("frame header too long", field="header")))
                writer.write(ANSWER.pack(status, len(payload)) + payload)
                await writer.drain()
                return
            try:
                head = json.loads(await reader.readexactly(head_len))
                variant_id, objective, rid = head["variant"], head.get("objective_ms"), head.get("request_id")
                if not isinstance(variant_id, str) or not (objective is None or isinstance(objective, (int, float))):
                    raise ValueError("bad header values")
                given, model = head.get("key"), head.get("model")
                if not (model is None or isinstance(model, str)):
                    raise ValueError("bad model")
            except (ValueError, KeyError, TypeError):
                payload = errors.encode(errors.InvalidInput("malformed frame header", field="header"))[3]
                writer.write(ANSWER.pack(400, len(payload)) + payload)
                await writer.drain()
                return
            # a lone surrogate ("\\ud800" in the JSON) does not encode: compared as is, it is just wrong
            if not (isinstance(given, str)
                    and hmac.compare_digest(given.encode("utf-8", "surrogatepass"), key.encode())):
                payload = errors.encode(errors.Unauthenticated("a worker answers its stack only: no or a wrong worker key",
                                                               field="key"))[3]
                writer.write(ANSWER.pack(401, len(payload)) + payload)
                await writer.drain()
                return
            body = await reader.readexactly(body_len)
            status, _media, _headers, payload = await answer(variant_id, objective,
                                                             rid if isinstance(rid, str) else None, body, model)
            writer.writelines([ANSWER.pack(status, len(payload)), payload])
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        return
    finally:
        writer.close()
