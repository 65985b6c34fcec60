"""Hostile uploads are refused before anything runs them, and profiling a
model runs it under a time and memory limit in a child process."""

from __future__ import annotations

import builtins
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from infaas.core.errors import InvalidModel, PayloadTooLarge
from infaas.runtime.validate import ModelLimits, check_model


def _matmul_model(n_nodes: int = 1, domain: str = "") -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    nodes, prev = [], "X"
    for i in range(n_nodes):
        out = "Y" if i == n_nodes - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, "W"], [out], domain=domain))
        prev = out
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 4])],
        [w],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets)


def test_a_plain_model_passes_and_its_spec_is_read():
    checked = check_model(_matmul_model().SerializeToString())
    assert [(t.name, t.dtype, t.shape) for t in checked.inputs] == [("X", "float32", (-1, 4))]


def test_external_data_pointing_at_a_host_path_is_refused_without_reading_it(monkeypatch):
    model = _matmul_model()
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "/etc/passwd"), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = k, v
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    with pytest.raises(InvalidModel) as err:
        check_model(model.SerializeToString())
    assert "external data" in err.value.message and "/etc/passwd" in err.value.message
    assert not [p for p in opened if "passwd" in p]  # refused from the graph alone


def test_a_graph_over_the_node_limit_is_refused():
    with pytest.raises(InvalidModel) as err:
        check_model(_matmul_model(n_nodes=11).SerializeToString(), ModelLimits(max_nodes=10))
    assert "11 nodes" in err.value.message and "limit is 10" in err.value.message


def test_an_unknown_operator_domain_is_refused():
    with pytest.raises(InvalidModel) as err:
        check_model(_matmul_model(domain="com.example.evil").SerializeToString())
    assert "com.example.evil" in err.value.message and "not allowed" in err.value.message


def test_a_file_over_the_size_limit_is_413():
    with pytest.raises(PayloadTooLarge):
        check_model(b"\0" * 2048, ModelLimits(max_bytes=1024))


def test_profiling_runs_under_a_memory_limit(tmp_path):
    """A model whose run needs more memory than allowed fails its profile
    cleanly (ProfilingFailed) instead of taking the worker down."""
    from infaas.core.domain import TensorSpec, Variant
    from infaas.core.errors import ProfilingFailed
    from infaas.runtime.profile import ProfileLimits, profile_in_subprocess

    # 64 MiB of weights: loading it needs far more than a 200 MiB address space
    # once onnxruntime and numpy are in.
    w = numpy_helper.from_array(np.ones((4096, 4096), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])], "big",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4096])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 4096])], [w],
    )
    path = os.path.join(tmp_path, "big.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    v = Variant("big", "fp32", "onnxruntime", "cpu", 1, "t/d", "local", status="profiling")
    with pytest.raises(ProfilingFailed) as err:
        profile_in_subprocess(path, v.to_dict(), (TensorSpec("X", "float32", (-1, 4096)),), None,
                              ProfileLimits(memory_bytes=200 << 20, timeout_s=60))
    assert "profiling" in err.value.message


def test_profiling_runs_under_a_time_limit(tmp_path):
    from infaas.core.domain import TensorSpec, Variant
    from infaas.core.errors import ProfilingFailed
    from infaas.runtime.profile import ProfileLimits, profile_in_subprocess

    path = os.path.join(tmp_path, "m.onnx")
    onnx.save(_matmul_model(), path)
    v = Variant("m", "fp32", "onnxruntime", "cpu", 32, "t/d", "local", status="profiling")
    with pytest.raises(ProfilingFailed) as err:
        # A limit far below the time it takes to start Python and onnxruntime.
        profile_in_subprocess(path, v.to_dict(), (TensorSpec("X", "float32", (-1, 4)),), None,
                              ProfileLimits(timeout_s=0.05))
    assert "longer than" in err.value.message
