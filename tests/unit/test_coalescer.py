"""The data plane's coalescer: concurrent queries for one variant share one
worker call, and each caller gets its own rows (or its own error) back."""

from __future__ import annotations

import asyncio

import numpy as np

from infaas.app.coalescer import Coalescer
from infaas.core import tensors
from infaas.core.errors import InvalidInput, WorkerFault
from infaas.core.ports import WorkerClient


class Worker(WorkerClient):
    """A worker that doubles its input, refuses rows containing -1, and records each call's row count."""

    def __init__(self, fault: bool = False) -> None:
        self.calls: list[int] = []
        self.fault = fault

    async def infer(self, url, variant_id, frame, objective_ms, model=None):
        x = tensors.decode(frame)["x"]
        self.calls.append(len(x))
        await asyncio.sleep(0)  # on the wire: other callers run meanwhile
        if self.fault:
            raise WorkerFault("connection reset")
        if (x == -1).any():
            raise InvalidInput("model refused a row", field="inputs")
        return tensors.encode({"y": x * 2, "n": np.array(len(x))})


def _run(worker, feeds, max_rows=32):
    c = Coalescer(worker, "http://w", "v", max_rows=max_rows, max_inflight=1)

    async def main():
        return await asyncio.gather(*(c.infer({"x": f}, len(f), None) for f in feeds), return_exceptions=True)

    return asyncio.run(main())


def test_concurrent_callers_share_calls_and_get_their_own_rows():
    feeds = [np.full((1 + i % 3, 2), float(i), np.float32) for i in range(20)]
    worker = Worker()
    results = _run(worker, feeds)
    for f, r in zip(feeds, results):
        np.testing.assert_array_equal(r["y"], f * 2)  # its own rows, in order
    assert sum(worker.calls) == sum(len(f) for f in feeds)
    assert len(worker.calls) < len(feeds)  # fewer calls than callers
    assert max(worker.calls) <= 32  # never more rows per call than the variant's max batch


def test_a_refused_row_fails_only_its_own_caller():
    feeds = [np.full((1, 2), float(i), np.float32) for i in range(6)]
    feeds[3] = np.full((1, 2), -1.0, np.float32)
    results = _run(Worker(), feeds)
    assert isinstance(results[3], InvalidInput)
    for i in (0, 1, 2, 4, 5):
        np.testing.assert_array_equal(results[i]["y"], feeds[i] * 2)


def test_a_worker_fault_reaches_every_caller_of_the_call():
    results = _run(Worker(fault=True), [np.ones((1, 2), np.float32)] * 4)
    assert all(isinstance(r, WorkerFault) for r in results)


class VectoredWorker(Worker):
    """Takes the frame as a list of buffers, as the HTTP client does: a batch leaves
    as one frame whose rows point at each caller's own memory."""

    takes_parts = True

    async def infer(self, url, variant_id, frame, objective_ms, model=None):
        assert isinstance(frame, list)
        return await super().infer(url, variant_id, b"".join(bytes(p) for p in frame), objective_ms)


def test_vectored_frames_give_each_caller_its_own_rows():
    feeds = [np.full((1 + i % 4, 3), float(i), np.float32) for i in range(25)]
    worker = VectoredWorker()
    results = _run(worker, feeds, max_rows=16)
    for f, r in zip(feeds, results):
        np.testing.assert_array_equal(r["y"], f * 2)
    assert len(worker.calls) < len(feeds) and max(worker.calls) <= 16


def test_a_lone_caller_and_later_arrivals_each_get_their_own_rows():
    """The first caller calls the worker itself; those that arrive meanwhile leave together."""
    worker = VectoredWorker()
    c = Coalescer(worker, "http://w", "v", max_rows=8, max_inflight=1)

    async def main():
        first = asyncio.ensure_future(c.infer({"x": np.full((1, 2), 100.0, np.float32)}, 1, None))
        await asyncio.sleep(0)
        rest = [c.infer({"x": np.full((2, 2), float(i), np.float32)}, 2, None) for i in range(5)]
        return await asyncio.gather(first, *rest)

    results = asyncio.run(main())
    np.testing.assert_array_equal(results[0]["y"], np.full((1, 2), 200.0))
    for i, r in enumerate(results[1:]):
        np.testing.assert_array_equal(r["y"], np.full((2, 2), 2.0 * i))
    assert worker.calls[0] == 1 and sum(worker.calls) == 11 and max(worker.calls) <= 8


def test_a_call_stays_within_the_byte_limit():
    feeds = [np.zeros((1, 256), np.float32) for _ in range(10)]  # 1 KiB each
    worker = Worker()
    c = Coalescer(worker, "http://w", "v", max_rows=32, max_inflight=1, max_bytes=3 * 1024)

    async def main():
        return await asyncio.gather(*(c.infer({"x": f}, 1, None) for f in feeds))

    asyncio.run(main())
    assert max(worker.calls) <= 3 and sum(worker.calls) == 10
