"""Checks an uploaded model must pass before anything else reads it.

Cheap, static checks only (the file is parsed, never run): size, ONNX
well-formedness, no external data references (a model could otherwise make a
worker read any file on its host), operator domains from an allow-list, a node
limit, and an input spec the service can validate queries against.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto

from infaas.core.domain import TensorSpec
from infaas.core.errors import InvalidModel, PayloadTooLarge
from infaas.core.tensors import OIP_TO_NUMPY

ALLOWED_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


@dataclass(frozen=True)
class ModelLimits:
    max_bytes: int = 200 << 20
    max_nodes: int = 50_000
    allowed_domains: frozenset[str] = ALLOWED_DOMAINS


@dataclass(frozen=True)
class CheckedModel:
    model: onnx.ModelProto
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    size_bytes: int
    unranked: frozenset[str] = frozenset()  # outputs whose shape the graph does not give


def _dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return TensorProto.DataType.Name(elem_type).lower()


def _specs(values, skip: set[str]) -> tuple[TensorSpec, ...]:
    out = []
    for vi in values:
        if vi.name in skip:
            continue
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise InvalidModel(
                f"graph value {vi.name!r} is not a tensor (a sequence or map); only tensor inputs and outputs are served. "
                "A scikit-learn classifier converted with skl2onnx needs options={id(model): {'zipmap': False}} "
                "(README: Prepare your model)", field="file")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        symbols = tuple(d.dim_param if d.HasField("dim_param") else "" for d in t.shape.dim)
        out.append(TensorSpec(vi.name, _dtype_name(t.elem_type), dims, symbols=symbols if any(symbols) else ()))
    return tuple(out)


def _uses_external_data(model: onnx.ModelProto) -> str | None:
    def tensors():
        yield from model.graph.initializer
        for node in model.graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
        for g in _subgraphs(model.graph):
            yield from g.initializer

    for t in tensors():
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data) > 0:
            where = next((e.value for e in t.external_data if e.key == "location"), "?")
            return f"tensor {t.name!r} references external data at {where!r}"
    return None


def _subgraphs(graph: onnx.GraphProto):
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield attr.g
                yield from _subgraphs(attr.g)
            for g in attr.graphs:
                yield g
                yield from _subgraphs(g)


def check_model(data: bytes, limits: ModelLimits = ModelLimits()) -> CheckedModel:
    """Parse and check an uploaded model; raise ``InvalidModel`` naming the problem."""
    if len(data) > limits.max_bytes:
        raise PayloadTooLarge(f"model file is {len(data)} bytes, the limit is {limits.max_bytes}", field="file")
    if not data:
        raise InvalidModel("model file is empty", field="file")
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InvalidModel(f"file is not an ONNX model: {type(exc).__name__}", field="file") from None
    if not model.graph.node:
        raise InvalidModel("file is not an ONNX model: the graph has no nodes", field="file")
    external = _uses_external_data(model)
    if external:
        raise InvalidModel(f"external data is not allowed: {external}; embed all weights in the file (torch.onnx.export(..., external_data=False), or onnx.save_model(model, path, save_as_external_data=False))", field="file")
    nodes = len(model.graph.node) + sum(len(g.node) for g in _subgraphs(model.graph))
    if nodes > limits.max_nodes:
        raise InvalidModel(f"graph has {nodes} nodes, the limit is {limits.max_nodes}", field="file")
    domains = {n.domain for n in model.graph.node} | {o.domain for o in model.opset_import}
    bad = sorted(d for d in domains if d not in limits.allowed_domains)
    if bad:
        raise InvalidModel(
            f"operator domain(s) {bad} are not allowed; allowed: {sorted(limits.allowed_domains)}", field="file"
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InvalidModel(f"ONNX checker rejected the model: {str(exc).splitlines()[0][:300]}", field="file") from None
    init_names = {i.name for i in model.graph.initializer}
    inputs = _specs(model.graph.input, init_names)
    if not inputs:
        raise InvalidModel("graph has no inputs", field="file")
    outputs = _specs(model.graph.output, set())
    carried = set(OIP_TO_NUMPY.values())  # every Open Inference Protocol datatype; strings as BYTES
    for kind, specs in (("input", inputs), ("output", outputs)):
        odd = [f"{t.name!r} ({t.dtype})" for t in specs if t.dtype not in carried]
        if odd:  # refused here, not found out by every query as a worker fault
            raise InvalidModel(f"{kind} {', '.join(odd)} cannot be served: the Open Inference Protocol carries "
                               f"{', '.join(sorted(OIP_TO_NUMPY))} (numpy {', '.join(sorted(carried))}); "
                               f"cast the {kind} in the graph (a Cast node) to one of them", field="file",
                               **{kind: [t.name for t in specs if t.dtype not in carried]})
    unranked = frozenset(vi.name for vi in model.graph.output if not vi.type.tensor_type.HasField("shape"))
    return CheckedModel(model, hashlib.sha256(data).hexdigest(), inputs, outputs, len(data), unranked)
