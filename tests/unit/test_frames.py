"""The local API-to-worker hop (``adapters/frames.py``): the worker's frame server and the
client's frame connections, over a real Unix socket in this process, with the worker
credential every request carries."""

from __future__ import annotations

import asyncio
import json
import random
import socket

import numpy as np
import pytest

from infaas.adapters import frames, logs
from infaas.adapters.local.secret import socket_dir, socket_path
from infaas.adapters.workerclient import HttpWorkerClient
from infaas.core import errors, tensors


async def _answer(variant_id, objective, rid, body, model=None):
    """A stand-in worker: doubles the tensors, or answers the error a variant id names."""
    if variant_id == "missing":
        return errors.encode(errors.NotFound("no variant 'missing'", field="variant"))
    if variant_id == "broken":
        return errors.internal("worker error: ValueError")
    feed = tensors.decode(body)
    out = {k: v * 2 for k, v in feed.items()}
    out["echo"] = np.frombuffer(json.dumps([variant_id, objective, rid]).encode(), np.uint8)
    return 200, tensors.CONTENT_TYPE.encode(), [], tensors.encode(out)


KEY = "k" * 64


@pytest.fixture
def worker(tmp_path):
    directory = socket_dir(str(tmp_path / "data"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    port = random.randint(20000, 60000)
    sock.bind(socket_path(directory, port))
    yield port, sock, directory
    sock.close()


def client_for(directory: str, key: str = KEY) -> HttpWorkerClient:
    return HttpWorkerClient(socket_dir=directory, key=key)


def serve(sock, limit: int, key: str = KEY):
    return asyncio.start_unix_server(lambda r, w: frames.serve(r, w, _answer, limit, key), sock=sock)


def run(coro):
    return asyncio.run(coro)


def test_a_query_goes_out_as_frames_and_comes_back(worker):
    port, sock, directory = worker

    async def main():
        server = await serve(sock, 4 << 20)
        client = client_for(directory)
        x = np.arange(12, dtype=np.float32).reshape(3, 4)
        token = logs.REQUEST_ID.set("trace-7")
        try:
            answers = [await client.infer(f"http://127.0.0.1:{port}", "m:onnx-fp32:cpu:b32", tensors.encode({"X": x}),
                                          250.0) for _ in range(3)]  # the pooled connection is reused
        finally:
            logs.REQUEST_ID.reset(token)
        big = np.ones((4096, 64), np.float32)  # over the one-buffer size: sent as parts
        large = await client.infer(f"http://127.0.0.1:{port}", "m", tensors.encode_parts({"X": big}), None)
        await client.close()
        server.close()
        return x, answers, big, large

    x, answers, big, large = run(main())
    for answer in answers:
        out = tensors.decode(answer)
        np.testing.assert_array_equal(out["X"], x * 2)
        assert json.loads(out["echo"].tobytes()) == ["m:onnx-fp32:cpu:b32", 250.0, "trace-7"]
    np.testing.assert_array_equal(tensors.decode(large)["X"], big * 2)


def test_worker_errors_come_back_as_the_same_errors(worker):
    port, sock, directory = worker

    async def main():
        server = await serve(sock, 1 << 20)
        client = client_for(directory)
        frame = tensors.encode({"X": np.zeros((1, 4), np.float32)})
        out = []
        for variant in ("missing", "broken"):
            try:
                await client.infer(f"http://127.0.0.1:{port}", variant, frame, None)
            except errors.InfaasError as exc:
                out.append(exc)
        await client.close()
        server.close()
        return out

    missing, broken = run(main())
    assert isinstance(missing, errors.NotFound) and missing.field == "variant"
    # the worker answered that the variant failed: the model's fault, not the worker's (it stays in selection)
    assert isinstance(broken, errors.VariantFault)


@pytest.mark.parametrize("head, body_len, status", [
    (b'{"variant": "m", "key": "' + KEY.encode() + b'"}', 10 << 20, 413),  # over the limit: answered, closed
    (b'{"variant": "m"}', 4, 401),  # no worker key
    (b'{"variant": "m", "key": "guess"}', 4, 401),  # a wrong one
    (b'{"variant": "m", "key": "\\ud800"}', 4, 401),  # one that does not encode as UTF-8
    (b"not json", 4, 400),
    (b'{"objective_ms": 5}', 4, 400),  # no variant
    (b'{"variant": 5}', 4, 400),
])
def test_a_bad_request_is_answered_and_the_connection_closed(worker, head, body_len, status):
    port, sock, directory = worker

    async def main():
        server = await serve(sock, 1 << 20)
        reader, writer = await asyncio.open_unix_connection(socket_path(directory, port))
        writer.write(frames.REQUEST.pack(len(head), body_len) + head + b"\0" * min(body_len, 4))
        await writer.drain()
        got_status, length = frames.ANSWER.unpack(await reader.readexactly(frames.ANSWER.size))
        doc = json.loads(await reader.readexactly(length))
        rest = await reader.read()  # the worker closed the connection
        writer.close()
        server.close()
        return got_status, doc, rest

    got_status, doc, rest = run(main())
    assert got_status == status and doc["error"] and rest == b""


def test_a_client_with_a_wrong_key_gets_nothing_run(worker):
    port, sock, directory = worker
    ran = []

    async def answer(*args):
        ran.append(args)
        return await _answer(*args)

    async def main():
        server = await asyncio.start_unix_server(lambda r, w: frames.serve(r, w, answer, 1 << 20, KEY), sock=sock)
        client = client_for(directory, key="not-the-key")
        try:
            await client.infer(f"http://127.0.0.1:{port}", "m", tensors.encode({"X": np.zeros((1, 4), np.float32)}), None)
        except errors.InfaasError as exc:
            return exc
        finally:
            await client.close()
            server.close()

    exc = run(main())
    assert isinstance(exc, errors.WorkerFault) and "worker key" in exc.message and not ran


def test_the_socket_folder_is_the_owners_alone(tmp_path):
    import os
    import stat

    directory = socket_dir(str(tmp_path / "data"))
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700


def test_string_tensors_go_out_as_frames_and_come_back(worker):
    """A string tensor (an ONNX tensor(string), the protocol's BYTES) crosses the local hop as
    length-prefixed UTF-8, in one buffer or in parts (a coalesced batch), and comes back as ``str``."""
    port, sock, directory = worker

    async def main():
        server = await serve(sock, 4 << 20)
        client = client_for(directory)
        words = np.array(["cat", "", "grün", "漢字"], dtype=object)
        one = await client.infer(f"http://127.0.0.1:{port}", "m", tensors.encode({"text": words}), None)
        parts = tensors.encode_batch_parts([{"text": words[:2]}, {"text": words[2:]}])
        joined = await client.infer(f"http://127.0.0.1:{port}", "m", parts, None)
        await client.close()
        server.close()
        return words, one, joined

    words, one, joined = run(main())
    for answer in (one, joined):
        out = tensors.decode(answer)["text"]
        assert out.dtype == object and out.tolist() == [w * 2 for w in words.tolist()]
