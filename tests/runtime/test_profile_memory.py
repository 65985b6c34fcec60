"""A variant's profiled peak memory is its own, whatever the process that starts the profiler holds.

The profiler runs in a child process; ``ru_maxrss`` there keeps the peak of the process it was
forked from, so on a worker holding hundreds of MB of replicas a model's own growth was measured as
nothing (0 bytes), and the selector then placed it as if it needed no memory. A real model with
10 MB of weights, profiled from this process while it holds 400 MB."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from infaas.core.domain import TensorSpec, Variant
from infaas.runtime.profile import ProfileLimits, profile_in_subprocess

WEIGHTS = 64 * 40_000 * 4  # bytes


def wide_model(path) -> None:
    w = numpy_helper.from_array(np.full((64, 40_000), 0.5, np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 40_000])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_peak_memory_is_the_models_own_under_a_large_parent(tmp_path):
    wide_model(tmp_path / "m.onnx")
    variant = Variant(architecture="wide", format="fp32", runtime="onnxruntime", hardware="cpu", max_batch=8,
                      task="t/wide", tenant="local")
    held = bytearray(400 << 20)
    held[:: 4096] = b"x" * len(held[:: 4096])  # touched: resident in this process
    result = profile_in_subprocess(str(tmp_path / "m.onnx"), variant.to_dict(), (TensorSpec("x", "float32", (-1, 64)),),
                                   None, ProfileLimits(timeout_s=120, budget_s=0.03, min_runs=6))
    del held
    assert result["peak_memory_bytes"] >= WEIGHTS, result["peak_memory_bytes"]
    assert result["peak_memory_bytes"] < 400 << 20  # and not the parent's
