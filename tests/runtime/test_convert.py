"""Conversions behind GPU and Inferentia2 variants, on the CPU: fp16 graphs
that pass onnx.checker with the original input and output types, ONNX to
PyTorch (onnx2torch) matching onnxruntime on a registered digits model, and
TorchScript traced at a fixed batch size run by the TorchScript executor.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from infaas.cli import digits
from infaas.core.errors import InvalidInput, NotApplicable
from infaas.runtime.convert import (
    example_inputs,
    graph_io,
    io_types,
    onnx_to_torch,
    prepare_for_torch,
    to_float16,
    torchscript_variant,
    trace_torchscript,
)
from infaas.runtime.executor import TorchScriptExecutor


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Two registered-style digits models: an MLP (MatMul graph) and a logistic regression (ai.onnx.ml only)."""
    out = str(tmp_path_factory.mktemp("digits"))
    return {t.name: t.path for t in digits.train(out, names=["mlp-32", "logistic-regression"])}


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return digits.split().x_test[:40]


def ort_run(model_or_path, feed) -> list[np.ndarray]:
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else model_or_path
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"]).run(None, feed)


# ------------------------------------------------------------------ fp16
def test_fp16_of_the_digits_mlp_is_valid_keeps_io_types_and_agrees(models, rows):
    original = onnx.load(models["mlp-32"])
    half = to_float16(original)

    onnx.checker.check_model(half, full_check=True)  # types consistent everywhere
    assert io_types(half) == io_types(original) == [("X", TensorProto.FLOAT), ("label", TensorProto.INT64),
                                                    ("probabilities", TensorProto.FLOAT)]
    weights = {i.name: i.data_type for i in half.graph.initializer}
    assert weights["coefficient"] == TensorProto.FLOAT16 and weights["intercepts1"] == TensorProto.FLOAT16
    # skl2onnx's Cast(to=FLOAT) on the input now casts to fp16 (onnxconverter-common leaves it and breaks the graph)
    assert not any(n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT and n.output[0] == "cast_input"
                   for n in half.graph.node)

    label32, prob32 = ort_run(original, {"X": rows})
    label16, prob16 = ort_run(half, {"X": rows})
    assert prob16.dtype == np.float32 and label16.dtype == np.int64
    assert np.abs(prob16 - prob32).max() < 5e-3
    assert (label16 == label32).mean() >= 0.97


def test_fp16_casts_around_operators_kept_in_fp32():
    """X -> MatMul -> TopK (kept fp32) -> Mul by a weight shared with a kept-fp32 Max -> outputs."""
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(6, 6)).astype(np.float32), "w")
    s = numpy_helper.from_array(np.array([2.0], np.float32), "s")
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("TopK", ["h", "k"], ["top", "idx"]),
            helper.make_node("Mul", ["top", "s"], ["scaled"]),
            helper.make_node("Max", ["top", "s"], ["clipped"]),
            helper.make_node("Add", ["scaled", "clipped"], ["y"]),
        ],
        "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("idx", TensorProto.INT64, ["N", 3]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 6])],
        [w, s, k],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    half = to_float16(model)
    onnx.checker.check_model(half, full_check=True)
    assert io_types(half) == io_types(model)
    ops = [n.op_type for n in half.graph.node]
    assert ops.count("Cast") >= 3  # x to fp16, h back to fp32 for TopK and as an output, top to fp16
    x = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    for a, b in zip(ort_run(model, {"x": x}), ort_run(half, {"x": x})):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-2)


def test_fp16_converts_constants_and_casts_inside_the_graph():
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c"], value_float=0.5),
            helper.make_node("Mul", ["x", "c"], ["m"]),
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("ConstantOfShape", ["s"], ["ones"], value=numpy_helper.from_array(np.ones(1, np.float32))),
            helper.make_node("Add", ["m", "ones"], ["a"]),
            helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT),
        ],
        "constants",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    half = to_float16(model)
    onnx.checker.check_model(half, full_check=True)
    assert io_types(half) == io_types(model)
    x = np.array([[1.0, -2.0, 3.5]], np.float32)
    (y,) = ort_run(half, {"x": x})
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, x * 0.5 + 1.0, rtol=1e-3)


def test_fp16_refuses_a_graph_with_nothing_to_convert(models):
    with pytest.raises(NotApplicable, match="no fp32 computation"):
        to_float16(onnx.load(models["logistic-regression"]))  # LinearClassifier: ai.onnx.ml only


# ------------------------------------------------------------------ ONNX -> PyTorch
def test_onnx_to_torch_matches_onnxruntime_on_the_digits_mlp(models, rows):
    module = onnx_to_torch(models["mlp-32"])
    with torch.no_grad():
        label_t, prob_t = module(torch.from_numpy(rows))
    label, prob = ort_run(models["mlp-32"], {"X": rows})
    np.testing.assert_array_equal(label_t.numpy(), label)
    np.testing.assert_allclose(prob_t.numpy(), prob, atol=1e-5)


def test_prepare_for_torch_rewrites_array_feature_extractor_and_lowers_the_opset(models):
    original = onnx.load(models["mlp-32"])
    assert any(n.op_type == "ArrayFeatureExtractor" for n in original.graph.node)
    prepared = prepare_for_torch(original)
    assert all(n.domain in ("", "ai.onnx") for n in prepared.graph.node)
    assert [(o.domain, o.version) for o in prepared.opset_import] == [("", 17)]


def test_onnx_to_torch_names_the_operators_it_cannot_convert(models):
    with pytest.raises(NotApplicable, match="ai.onnx.ml:LinearClassifier"):
        onnx_to_torch(models["logistic-regression"])


# ------------------------------------------------------------------ TorchScript at fixed batch sizes
def test_traced_variant_pads_and_chunks_around_its_fixed_batch(models, rows, tmp_path):
    model = onnx.load(models["mlp-32"])
    inputs, outputs = graph_io(model)
    assert inputs == [("X", "float32", [-1, 64])] and outputs == ["label", "probabilities"]
    path = tmp_path / "b8.pt"
    path.write_bytes(trace_torchscript(onnx_to_torch(model), example_inputs(inputs, 8), outputs))

    ex = TorchScriptExecutor(str(path))
    assert ex.batch == 8 and ex.input_names == ("X",) and ex.output_names == ("label", "probabilities")
    label, prob = ort_run(models["mlp-32"], {"X": rows})
    for n in (1, 3, 8, 20):  # fewer rows than traced are padded; more run in chunks of 8
        out = ex.run({"X": rows[:n]})
        np.testing.assert_array_equal(out["label"], label[:n])
        np.testing.assert_allclose(out["probabilities"], prob[:n], atol=1e-5)


def test_owner_torchscript_is_used_instead_of_the_onnx_conversion(models, rows, tmp_path):
    class OwnerModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(64, 10)

        def forward(self, x):
            p = torch.softmax(self.linear(x), dim=1)
            return p.argmax(dim=1), p

    torch.manual_seed(0)
    owner = OwnerModel().eval()
    owner_path = tmp_path / "owner.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what an owner uploads for Neuron
        torch.jit.save(torch.jit.script(owner), str(owner_path))

    path = tmp_path / "variant.pt"
    path.write_bytes(torchscript_variant(models["mlp-32"], 4, target="cpu", owner_torchscript=str(owner_path)))
    out = TorchScriptExecutor(str(path)).run({"X": rows[:6]})
    with torch.no_grad():
        label, prob = owner(torch.from_numpy(rows[:6]))
    np.testing.assert_array_equal(out["label"], label.numpy())
    np.testing.assert_allclose(out["probabilities"], prob.numpy(), atol=1e-6)


def test_rows_a_torchscript_variant_refuses_are_the_callers_error_not_the_variants(models, rows, tmp_path):
    """A module that fails on the values it is given (an index out of range) answers 400, as an ONNX
    variant does: a 500 would count toward taking a shared variant out of selection for every tenant."""
    class Lookup(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.rand(10, 10))

        def forward(self, x):
            p = self.table[x[:, 0].long()]
            return p.argmax(dim=1), p

    owner_path = tmp_path / "lookup.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(Lookup().eval()), str(owner_path))
    path = tmp_path / "variant.pt"
    path.write_bytes(torchscript_variant(models["mlp-32"], 4, target="cpu", owner_torchscript=str(owner_path)))
    ex = TorchScriptExecutor(str(path))
    fine = np.zeros((2, 64), np.float32)
    fine[:, 0] = [3, 9]
    assert ex.run({"X": fine})["probabilities"].shape == (2, 10)
    bad = fine.copy()
    bad[1, 0] = 50
    with pytest.raises(InvalidInput, match="model rejected the inputs"):
        ex.run({"X": bad})
