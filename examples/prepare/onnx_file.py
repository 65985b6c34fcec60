"""Check an existing ONNX file before registering it, and free a fixed batch axis.

    python examples/prepare/onnx_file.py MODEL.onnx [OUT.onnx]

INFaaS batches rows along axis 0 of every input and output, and serves tensors
only. This prints the model's inputs and outputs, refuses what cannot be served
(sequence or map values, e.g. scikit-learn's zipmap), and when axis 0 is fixed
(a model exported for batch 1) writes OUT.onnx with axis 0 made dynamic, after
checking with onnxruntime that the graph really runs a batch of 2 (a graph that
reshapes to a fixed batch inside cannot be freed this way: re-export it with a
dynamic batch axis instead).
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import onnxruntime as ort

NUMPY = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
         "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def main(src: str, dst: str | None) -> int:
    model = onnx.load(src)
    values = [("input", v) for v in model.graph.input] + [("output", v) for v in model.graph.output]
    initializers = {i.name for i in model.graph.initializer}
    fixed = False
    for kind, v in values:
        if kind == "input" and v.name in initializers:
            continue
        if not v.type.HasField("tensor_type"):
            print(f"{kind} {v.name!r} is not a tensor (a sequence or map): it cannot be served. A scikit-learn "
                  "classifier needs options={id(model): {'zipmap': False}} when converted.")
            return 1
        dims = v.type.tensor_type.shape.dim
        shape = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in dims]
        print(f"{kind:6} {v.name:24} {onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type):8} {shape}")
        if dims and dims[0].HasField("dim_value"):
            fixed = True
    if not fixed:
        print("axis 0 is dynamic everywhere: register this file as it is")
        return 0
    if dst is None:
        print("axis 0 is fixed: give an OUT.onnx to write a copy with a dynamic batch axis")
        return 1
    for kind, v in values:
        dims = v.type.tensor_type.shape.dim
        if dims and not (kind == "input" and v.name in initializers):
            dims[0].dim_param = "batch"  # replaces the fixed size
    onnx.checker.check_model(model)
    onnx.save(model, dst)
    session = ort.InferenceSession(dst, providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros([2] + [d if isinstance(d, int) else 1 for d in i.shape[1:]], dtype=NUMPY[i.type])
            for i in session.get_inputs()}
    try:
        outs = session.run(None, feed)
    except Exception as exc:  # onnxruntime raises its own exception types
        print(f"the graph does not run a batch of 2 once freed ({str(exc).splitlines()[0]}): re-export it with a "
              "dynamic batch axis")
        return 1
    if any(o.shape[:1] != (2,) for o in outs):
        print(f"a batch of 2 rows gave outputs of shapes {[o.shape for o in outs]}: re-export with a dynamic batch axis")
        return 1
    print(f"wrote {dst}: axis 0 is dynamic, and a batch of 2 runs")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
