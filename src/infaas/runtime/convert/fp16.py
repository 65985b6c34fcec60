"""``to_float16``: an fp32 ONNX graph to fp16 with its input and output types kept (see the package docstring)."""

from __future__ import annotations

import numpy as np

from infaas.core.errors import NotApplicable
from infaas.runtime.convert.graphs import DEFAULT_DOMAINS, copy_model

FP16_MAX = 65504.0


# Operators kept in fp32 by the fp16 conversion: no fp16 kernel in common
# runtimes, float attributes or inputs that must stay fp32, or precision
# trouble (the same list onnxconverter-common keeps, plus random and
# quantisation operators). Any operator outside the default domain stays
# fp32 too.
FP16_KEEP_FP32 = frozenset(
    {
        "Resize", "Upsample", "Range", "TopK", "NonMaxSuppression", "RoiAlign", "CumSum", "Min", "Max",
        "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli",
        "EyeLike", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "STFT", "MelWeightMatrix",
    }
)


def to_float16(model, *, keep_fp32_ops: frozenset[str] = FP16_KEEP_FP32):
    """An fp16 copy of ``model`` (an ``onnx.ModelProto``) with the same input and output types."""
    import onnx
    from onnx import TensorProto, helper

    model = copy_model(model)
    graph = model.graph
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise NotApplicable(f"fp16 conversion does not handle control flow ({node.op_type} with a subgraph)")
    types_ = _tensor_types(model)
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    def converted(node) -> bool:
        return node.domain in DEFAULT_DOMAINS and node.op_type not in keep_fp32_ops

    consumers: dict[str, list[bool]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(converted(node))
    if not any(converted(n) and any(types_.get(o) == FLOAT for o in n.output) for n in graph.node):
        raise NotApplicable("graph has no fp32 computation that fp16 would change")

    graph_outputs = {o.name for o in graph.output}
    taken = {n for node in graph.node for n in (*node.input, *node.output)} | {i.name for i in graph.input}
    taken |= {i.name for i in graph.initializer}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}{k}"
        taken.add(name)
        return name

    v16: dict[str, str] = {}  # tensor -> the name holding its fp16 value
    v32: dict[str, str] = {}  # tensor -> the name holding its fp32 value
    for inp in graph.input:
        if types_.get(inp.name) == FLOAT:
            v32[inp.name] = inp.name
    fp32_inits = {}
    declared = {i.name: i for i in graph.input}  # IR < 4 lists initializers among the inputs too
    for init in graph.initializer:
        if init.data_type != FLOAT:
            continue
        uses = consumers.get(init.name, [])
        if uses and all(uses) and init.name not in graph_outputs:
            init.CopyFrom(_half_tensor(init))
            v16[init.name] = init.name
            v32.pop(init.name, None)
            if init.name in declared:
                declared[init.name].type.tensor_type.elem_type = HALF
        else:
            v32[init.name] = init.name
            fp32_inits[init.name] = init

    nodes = []

    def as16(name: str) -> str:
        if name not in v16:
            if name in fp32_inits:  # a converted copy of the weight, not a run-time cast
                copy = _half_tensor(fp32_inits[name])
                copy.name = fresh(f"{name}_fp16")
                graph.initializer.append(copy)
                v16[name] = copy.name
            else:
                v16[name] = fresh(f"{name}_fp16")
                nodes.append(helper.make_node("Cast", [v32[name]], [v16[name]], to=HALF, name=fresh(f"cast16_{name}")))
        return v16[name]

    def as32(name: str) -> str:
        if name not in v32:
            v32[name] = fresh(f"{name}_fp32")
            nodes.append(helper.make_node("Cast", [v16[name]], [v32[name]], to=FLOAT, name=fresh(f"cast32_{name}")))
        return v32[name]

    for node in list(graph.node):
        if converted(node):
            for i, name in enumerate(node.input):
                if name in v16 or name in v32:  # an fp32 tensor (input, weight, kept-fp32 output) or an fp16 one
                    node.input[i] = as16(name)
            _attributes_to_half(node)
            back = []
            for i, name in enumerate(node.output):
                if not name or types_.get(name) != FLOAT:
                    continue
                if name in graph_outputs:  # keep the graph's output type: compute in fp16, cast back
                    node.output[i] = v16[name] = fresh(f"{name}_fp16")
                    back.append(helper.make_node("Cast", [node.output[i]], [name], to=FLOAT, name=fresh(f"cast32_{name}")))
                    v32[name] = name
                else:
                    v16[name] = name
            nodes.append(node)
            nodes.extend(back)
        else:
            for i, name in enumerate(node.input):
                if name in v16 or name in v32:
                    node.input[i] = as32(name)
            for name in node.output:
                if name and types_.get(name) == FLOAT:
                    v32[name] = name
            nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(nodes)
    graph.ClearField("value_info")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise NotApplicable(f"fp16 graph did not pass onnx.checker: {str(exc).splitlines()[0][:300]}") from None
    return model


def float16_bytes(path: str) -> bytes:
    """The fp16 variant of the ONNX file at ``path``, serialised."""
    import onnx

    return to_float16(onnx.load(path)).SerializeToString()


def _tensor_types(model) -> dict[str, int]:
    """Element type of every tensor whose type onnx can infer."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:
        inferred = model
    g = inferred.graph
    out = {vi.name: vi.type.tensor_type.elem_type for vi in (*g.input, *g.value_info, *g.output) if vi.type.HasField("tensor_type")}
    out.update({i.name: i.data_type for i in g.initializer})
    for node in g.node:  # Constant outputs, in case inference skipped them
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out.setdefault(node.output[0], a.t.data_type)
    return out


def _half_tensor(tensor):
    from onnx import numpy_helper

    arr = numpy_helper.to_array(tensor)
    finite = np.isfinite(arr)
    arr = np.where(finite, np.clip(arr, -FP16_MAX, FP16_MAX), arr).astype(np.float16)
    return numpy_helper.from_array(arr, tensor.name)


def _attributes_to_half(node) -> None:
    """Float tensors in attributes (Constant, ConstantOfShape) and Cast targets follow the node into fp16."""
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    for a in node.attribute:
        if a.type == AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT:
            a.t.CopyFrom(_half_tensor(a.t))
        elif a.type == AttributeProto.TENSORS:
            for t in a.tensors:
                if t.data_type == TensorProto.FLOAT:
                    t.CopyFrom(_half_tensor(t))
    if node.op_type == "Cast":
        for a in node.attribute:
            if a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.FLOAT16
    elif node.op_type == "Constant":
        for a in list(node.attribute):
            if a.name in ("value_float", "value_floats"):
                arr = np.array(a.f if a.name == "value_float" else list(a.floats), dtype=np.float16)
                node.attribute.remove(a)
                node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(arr)))
    elif node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float16))))
