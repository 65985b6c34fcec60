"""One caller's rows that the model refuses fail that caller only, also when the worker ran them in
one batch with other callers' rows (``Replica._run_alone``): a tenant cannot make another tenant's
queries fail by sending rows the model rejects at the same moment. A real ONNX model with a Gather
(an embedding lookup: an index out of range is refused by onnxruntime when the batch runs, not by
the input checks)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
from fakes import make_profile, make_variant
from onnx import TensorProto, helper, numpy_helper

from infaas.core.errors import InvalidInput
from infaas.runtime.executor import OnnxRuntimeExecutor
from infaas.worker.replicas import Replica

TABLE = np.arange(20, dtype=np.float32).reshape(10, 2)  # 10 rows of embedding


def embedding_model(path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vectors"], axis=0)], "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["N", 1, 2])],
        [numpy_helper.from_array(TABLE, "table")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run_together(tmp_path, feeds):
    """The feeds sent at the same moment to one replica that batches up to 8 rows."""
    embedding_model(tmp_path / "m.onnx")
    executor = OnnxRuntimeExecutor(str(tmp_path / "m.onnx"), ["CPUExecutionProvider"])
    # profiled at 5 ms a batch: queued and batched, not run inline one by one
    variant = make_variant("emb", max_batch=8, profile=make_profile({1: (5.0, 5.0), 8: (5.0, 5.0)}))
    pool = ThreadPoolExecutor(max_workers=1)
    runs = []
    plain_run = executor.run

    def counted(feed):
        runs.append(len(feed["ids"]))
        return plain_run(feed)

    executor.run = counted

    async def main():
        replica = Replica(variant, executor, 0, pool)
        replica.start()
        try:
            return await asyncio.gather(*(replica.infer(f, len(f["ids"]), None) for f in feeds), return_exceptions=True)
        finally:
            await replica.stop()

    try:
        return asyncio.run(main()), runs
    finally:
        pool.shutdown(wait=True)


def ids(*values):
    return {"ids": np.array(values, dtype=np.int64).reshape(-1, 1)}


def test_rows_the_model_refuses_fail_only_their_caller_in_a_shared_batch(tmp_path):
    (good, bad, other), runs = run_together(tmp_path, [ids(1, 2), ids(50), ids(9)])
    assert runs[0] == 4  # the three callers' rows ran as one batch first
    assert isinstance(bad, InvalidInput) and "model rejected the inputs" in bad.message, bad
    assert good["vectors"].tolist() == TABLE[[1, 2]].reshape(2, 1, 2).tolist()
    assert other["vectors"].tolist() == TABLE[[9]].reshape(1, 1, 2).tolist()
    assert runs[1:] == [2, 1, 1]  # then each alone


def test_a_batch_the_model_takes_runs_once(tmp_path):
    results, runs = run_together(tmp_path, [ids(0), ids(3, 4)])
    assert runs == [3]
    assert [r["vectors"].reshape(-1, 2).tolist() for r in results] == [TABLE[[0]].tolist(), TABLE[[3, 4]].tolist()]
