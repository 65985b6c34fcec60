"""The live replica's batcher waits for a clump's company (``batching.wait_ms`` with the replica's
share of close gaps, ``Replica.close_gaps``), the rule the simulator runs too: clumps far apart have a
long mean gap, yet their requests come together."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from fakes import make_profile, make_variant
from test_replica_batch_errors import embedding_model, ids

import infaas.worker.replicas as replicas_module
from infaas.runtime.executor import OnnxRuntimeExecutor
from infaas.worker.replicas import Replica


def test_the_batcher_waits_for_a_clump_after_a_lull(tmp_path, monkeypatch):
    embedding_model(tmp_path / "m.onnx")
    executor = OnnxRuntimeExecutor(str(tmp_path / "m.onnx"), ["CPUExecutionProvider"])
    # profiled at 5 ms (1 row) and 10 ms (8 rows): queued and batched up to 8 (not run inline), a 2 ms
    # window for company at 300 ms
    variant = make_variant("emb", max_batch=8, profile=make_profile({1: (5.0, 5.0), 8: (10.0, 10.0)}))
    pool = ThreadPoolExecutor(max_workers=1)
    calls = []  # (mean gap, close share, wait) of every decision the batcher makes
    plain = replicas_module.wait_ms

    def spy(limits, queued_rows, mean_gap_ms, close=0.0):
        out = plain(limits, queued_rows, mean_gap_ms, close)
        calls.append((mean_gap_ms, close, out, limits.max_delay_ms))
        return out

    monkeypatch.setattr(replicas_module, "wait_ms", spy)

    async def main():
        replica = Replica(variant, executor, 0, pool)
        replica.start()
        try:
            for _ in range(4):  # four clumps of 3 queries sent at once, 200 ms apart
                calls.clear()
                await asyncio.gather(*(replica.infer(ids(k), 1, 300.0) for k in range(3)))
                await asyncio.sleep(0.2)
        finally:
            await replica.stop()

    try:
        asyncio.run(main())
    finally:
        pool.shutdown(wait=True)
    # the last clump's first decision: a long mean gap (the lulls), most gaps close -> it waited
    mean_gap, close, waited, window = calls[0]
    assert window > 0 and mean_gap > window
    assert close >= 0.5
    assert waited == window


def on_replica(tmp_path, monkeypatch, body, wait=lambda *a, **k: 0.0):
    """``body(replica)`` on a started replica of the embedding model (profiled at 5 ms for 1 row,
    10 ms for 8; batches up to 8), ``wait_ms`` replaced by ``wait``. Returns (what ``body``
    returned, the ids of every batch run, in order)."""
    embedding_model(tmp_path / "m.onnx")
    executor = OnnxRuntimeExecutor(str(tmp_path / "m.onnx"), ["CPUExecutionProvider"])
    variant = make_variant("emb", max_batch=8, profile=make_profile({1: (5.0, 5.0), 8: (10.0, 10.0)}))
    pool = ThreadPoolExecutor(max_workers=1)
    monkeypatch.setattr(replicas_module, "wait_ms", wait)
    runs = []
    run = executor.run
    monkeypatch.setattr(executor, "run", lambda feed: runs.append(feed["ids"].ravel().tolist()) or run(feed))

    async def main():
        replica = Replica(variant, executor, 0, pool)
        replica.start()
        try:
            return await body(replica)
        finally:
            await replica.stop()

    try:
        return asyncio.run(main()), runs
    finally:
        pool.shutdown(wait=True)


def test_a_batch_that_fills_while_it_waits_runs_at_once(tmp_path, monkeypatch):
    """The wait for company ends when the batch is full, not when the window ends: here the window
    is a minute (``wait_ms`` made to say so), and a clump of a full batch is answered long before."""
    async def body(replica):
        # 8 rows (the batch the objective allows): the first alone, the batcher waits for company;
        # then seven more, the eighth fills the batch
        first = asyncio.ensure_future(replica.infer(ids(0), 1, 300.0))
        await asyncio.sleep(0.05)
        assert not first.done()  # waiting for company
        rest = [replica.infer(ids(k), 1, 300.0) for k in range(1, 8)]
        return await asyncio.wait_for(asyncio.gather(first, *rest), 30)

    answers, runs = on_replica(tmp_path, monkeypatch, body, wait=lambda limits, queued_rows, mean_gap_ms, close=0.0:
                               0.0 if queued_rows >= limits.max_batch else 60_000.0)
    assert len(answers) == 8 and runs == [list(range(8))]  # one batch of all eight, run when the eighth arrived


def test_rows_still_in_time_run_before_a_row_already_late(tmp_path, monkeypatch):
    """``batching.next_batch`` in the live batcher: a query that would be late even if it ran at
    once (a 1 ms objective against a 5 ms profile) waits behind the queries still in time, then
    runs too: answered, not dropped."""
    async def body(replica):  # all queued before the batcher looks: the late one first
        return await asyncio.gather(replica.infer(ids(7), 1, 1.0),
                                    *(replica.infer(ids(k), 1, 300.0) for k in range(1, 4)))

    answers, runs = on_replica(tmp_path, monkeypatch, body)
    assert runs == [[1, 2, 3], [7]]
    assert [a["vectors"].shape[0] for a in answers] == [1, 1, 1, 1]


def test_a_request_larger_than_any_profiled_batch_is_not_taken_for_late(tmp_path, monkeypatch):
    """The profile stops at 8 rows; a query of 20 with a minute to go is in time (its run time is
    the largest profiled batch's per row), so it runs first, as the oldest."""
    async def body(replica):
        return await asyncio.gather(replica.infer(ids(*([3] * 20)), 20, 60_000.0), replica.infer(ids(1), 1, 300.0))

    (big, _), runs = on_replica(tmp_path, monkeypatch, body)
    assert [len(r) for r in runs] == [20, 1] and big["vectors"].shape[0] == 20
