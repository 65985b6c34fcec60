"""The live replica tracks how clumped its arrivals are (``Replica.close_gaps``, the share of close
gaps between arrivals) and its batcher waits for a clump's company by it (``batching.wait_ms``),
the rule the simulator runs too: clumps far apart have a long mean gap, yet their requests come
together."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from fakes import make_profile, make_variant
from test_replica_batch_errors import embedding_model, ids

from infaas.core.batching import wait_ms
from infaas.runtime.executor import OnnxRuntimeExecutor
from infaas.worker.replicas import Replica


def test_clumps_far_apart_count_as_close_company(tmp_path):
    embedding_model(tmp_path / "m.onnx")
    executor = OnnxRuntimeExecutor(str(tmp_path / "m.onnx"), ["CPUExecutionProvider"])
    variant = make_variant("emb", max_batch=8, profile=make_profile({1: (5.0, 5.0), 8: (5.0, 5.0)}))
    pool = ThreadPoolExecutor(max_workers=1)

    async def main():
        replica = Replica(variant, executor, 0, pool)
        replica.start()
        try:
            for _ in range(4):  # four clumps of 8 queries sent at once, 200 ms apart
                await asyncio.gather(*(replica.infer(ids(k), 1, 300.0) for k in range(8)))
                await asyncio.sleep(0.2)
            return replica.mean_gap_ms, replica.close_gaps, replica.limits(300.0)
        finally:
            await replica.stop()

    try:
        mean_gap, close, limits = asyncio.run(main())
    finally:
        pool.shutdown(wait=True)
    assert limits.max_delay_ms > 0
    assert mean_gap > limits.max_delay_ms  # by the mean gap alone a lone query would run at once
    assert close >= 0.5  # but most of its gaps were close
    assert wait_ms(limits, 1, mean_gap, close) == limits.max_delay_ms
