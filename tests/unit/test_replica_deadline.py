"""A replica answers each queued query within its deadline (``Replica.deadline_s``): queries stuck
behind a tenant's slow batches are answered 502 for that variant before the API would give up on
the worker (and then retry them elsewhere and take the worker out of selection for everyone)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fakes import make_profile, make_variant

from infaas.core.errors import VariantFault
from infaas.worker.replicas import Replica


class SlowExecutor:
    """Runs each batch in ``seconds`` (a model whose run time grows with its input)."""

    input_names, output_names = ("x",), ("y",)

    def __init__(self, seconds: float) -> None:
        self.seconds, self.runs, self.release = seconds, 0, threading.Event()

    def run(self, feed):
        self.runs += 1
        self.release.wait(self.seconds)
        return {"y": feed["x"] + 1}


def test_queries_behind_a_slow_batch_are_answered_at_the_deadline_not_when_it_ends():
    variant = make_variant("slow", max_batch=1, profile=make_profile({1: (5.0, 5.0)}))
    executor = SlowExecutor(30.0)
    pool = ThreadPoolExecutor(max_workers=1)

    async def main():
        replica = Replica(variant, executor, 0, pool, deadline_s=0.5)
        replica.start()
        started = time.monotonic()
        results = await asyncio.gather(*(replica.infer({"x": np.ones((1, 1), np.float32)}, 1, None) for _ in range(4)),
                                       return_exceptions=True)
        took = time.monotonic() - started
        queued_after = replica.queued_rows
        executor.release.set()  # let the running batch end
        await replica.stop()
        return results, took, queued_after

    results, took, queued_after = asyncio.run(main())
    pool.shutdown(wait=True)
    assert all(isinstance(r, VariantFault) for r in results), results
    assert "did not answer within 0.5 s" in results[0].message
    # each says why: the first was in the batch that ran long, the others never left the queue
    assert "the batch it is in ran long" in results[0].message
    assert all("it was still queued" in r.message for r in results[1:])
    assert took < 10.0  # answered at the deadline, not after the 30 s batch
    assert executor.runs == 1 and queued_after <= 1  # the three behind it never ran; only the running one is counted


def test_a_quick_query_is_not_touched_by_the_deadline():
    variant = make_variant("quick", max_batch=1, profile=make_profile({1: (5.0, 5.0)}))
    pool = ThreadPoolExecutor(max_workers=1)

    async def main():
        replica = Replica(variant, SlowExecutor(0.0), 0, pool, deadline_s=5.0)
        replica.start()
        out = await replica.infer({"x": np.zeros((1, 1), np.float32)}, 1, None)
        await replica.stop()
        return out

    assert asyncio.run(main())["y"].tolist() == [[1.0]]
    pool.shutdown(wait=True)


def test_without_a_deadline_a_query_waits_for_its_batch():
    variant = make_variant("plain", max_batch=1, profile=make_profile({1: (5.0, 5.0)}))
    pool = ThreadPoolExecutor(max_workers=1)

    async def main():
        replica = Replica(variant, SlowExecutor(0.2), 0, pool)
        replica.start()
        out = await replica.infer({"x": np.zeros((1, 1), np.float32)}, 1, None)
        await replica.stop()
        return out

    assert asyncio.run(main())["y"].tolist() == [[1.0]]
    pool.shutdown(wait=True)
