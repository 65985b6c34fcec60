"""The models: onnx's light SqueezeNet made servable, an onnxruntime session like the servers',
and checks that an answer matches onnxruntime in-process."""

from __future__ import annotations

import os

import numpy as np


def build_squeezenet(out_path: str, seed: int = 0) -> str:
    """onnx's light SqueezeNet 1.0 (its weights are ConstantOfShape nodes filled with 0.02)
    made servable: weights materialised as initialisers (He-scaled random, fixed seed, so
    the outputs differ per input), the batch dimension of the input and output dynamic,
    IR 7 and opset 13. The final Softmax becomes Flatten(axis 1) -> Softmax -> Reshape to
    the input's shape in the opset conversion, which works at any batch size (checked)."""
    import onnx
    import onnx.version_converter
    from onnx import numpy_helper

    src = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_squeezenet.onnx")
    model = onnx.load(src)
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    rng = np.random.default_rng(seed)
    inits = [i for i in g.initializer if not i.name.endswith("__SHAPE")]
    nodes = []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in consts:
            shape = tuple(int(d) for d in consts[n.input[0]])
            if len(shape) > 1:  # a convolution's weights
                arr = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
            else:  # a bias
                arr = np.zeros(shape, np.float32)
            inits.append(numpy_helper.from_array(arr, n.output[0]))
        else:
            nodes.append(n)
    names = {i.name for i in inits}
    inputs = [i for i in g.input if i.name not in names and not i.name.endswith("__SHAPE")]
    del g.node[:]
    g.node.extend(nodes)
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.input[:]
    g.input.extend(inputs)
    for vi in list(g.input) + list(g.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "N"
    del g.value_info[:]
    model.ir_version = 7
    model = onnx.version_converter.convert_version(model, 13)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, out_path)
    return out_path


def ort_session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def decode_raw(body: bytes, session, rows: int) -> dict[str, np.ndarray]:
    """The raw-bytes servers answer the raw bytes of every output, in order."""
    kinds = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(double)": np.float64,
             "tensor(int32)": np.int32}
    outs, offset = {}, 0
    for o in session.get_outputs():
        dtype = np.dtype(kinds[o.type])
        tail = [int(d) for d in o.shape[1:]]
        n = rows * int(np.prod(tail))
        outs[o.name] = np.frombuffer(body, dtype=dtype, count=n, offset=offset).reshape((rows, *tail))
        offset += n * dtype.itemsize
    if offset != len(body):
        raise RuntimeError(f"answer has {len(body) - offset} unexpected bytes")
    return outs


def _close(a, b, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    a = a.reshape(b.shape)
    if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"{what}: outputs differ from onnxruntime in-process (max diff {np.abs(a - b).max():.3g})")
