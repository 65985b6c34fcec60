"""ONNX graph helpers shared by the conversions: a deep copy, the default operator domains, a graph's inputs and outputs."""

from __future__ import annotations

import numpy as np

DEFAULT_DOMAINS = ("", "ai.onnx")


def copy_model(model):
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def io_types(model) -> list[tuple[str, int]]:
    """(name, element type) of every graph input and output, in order."""
    init = {i.name for i in model.graph.initializer}
    return [(v.name, v.type.tensor_type.elem_type) for v in (*model.graph.input, *model.graph.output) if v.name not in init]


def graph_io(model) -> tuple[list[tuple[str, str, list[int]]], list[str]]:
    """Inputs as (name, numpy dtype, shape with -1 for free dims) and output names of an ONNX graph."""
    from onnx import helper

    init = {i.name for i in model.graph.initializer}
    inputs = []
    for v in model.graph.input:
        if v.name in init:
            continue
        tt = v.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        inputs.append((v.name, dtype, [d.dim_value if d.dim_value > 0 else -1 for d in tt.shape.dim]))
    return inputs, [o.name for o in model.graph.output]
