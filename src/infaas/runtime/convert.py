"""Graph conversions behind the GPU and Inferentia2 variants.

* ``to_float16``: an fp32 ONNX graph to fp16, keeping the graph's input and
  output types (fp32 stays fp32 at the edges, Cast nodes sit inside), so a
  caller feeds and reads the same arrays as with the original. The result
  passes ``onnx.checker`` with full type checking, or the conversion is
  refused (``NotApplicable``).
* ``onnx_to_torch``: an ONNX graph to a ``torch.nn.Module`` with onnx2torch,
  after rewriting the few ``ai.onnx.ml`` operators that have a standard
  equivalent (scikit-learn classifiers end in ``ArrayFeatureExtractor``).
* ``trace_torchscript``: a module traced at one fixed batch size and saved as
  TorchScript with the tensor names it needs (``infaas.json`` inside the
  file); ``compile_neuron`` does the same through ``torch_neuronx.trace`` and
  exists only on Inferentia worker images.

Why not onnxconverter-common's ``convert_float_to_float16``: its current
implementation leaves ``Cast(to=FLOAT)`` nodes alone, so the graph that
skl2onnx writes for an MLP comes out with an fp32 tensor feeding an fp16
MatMul and fails ``onnx.checker``. The converter here follows the same idea
(block list of operators kept in fp32, casts at the boundaries) and checks
its own result.
"""

from __future__ import annotations

import io
import json
import sys
import types
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from infaas.core.errors import NeuronUnavailable, NotApplicable

META_FILE = "infaas.json"  # extra file inside every TorchScript variant
TORCH_OPSET = 17  # the newest default-domain opset onnx2torch 1.5 converts
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
_DEFAULT_DOMAINS = ("", "ai.onnx")


NEURON_MISSING = (
    "this step needs torch-neuronx (AWS Inferentia2), which is not installed here: it comes from the "
    "Neuron repository on Inferentia worker images (the torch-neuronx on PyPI is an empty placeholder); "
    "run Inferentia builds and variants on a worker started with --hardware inferentia"
)


def import_torch_neuronx():
    """The torch_neuronx module, or ``NeuronUnavailable`` with a message that says where it comes from."""
    try:
        import torch_neuronx  # only on Inferentia worker images
    except ImportError:
        raise NeuronUnavailable(NEURON_MISSING) from None
    return torch_neuronx


# ------------------------------------------------------------------ fp16
def to_float16(model, *, keep_fp32_ops: frozenset[str] = FP16_KEEP_FP32):
    """An fp16 copy of ``model`` (an ``onnx.ModelProto``) with the same input and output types."""
    import onnx
    from onnx import TensorProto, helper

    model = _copy(model)
    graph = model.graph
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise NotApplicable(f"fp16 conversion does not handle control flow ({node.op_type} with a subgraph)")
    types_ = _tensor_types(model)
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    def converted(node) -> bool:
        return node.domain in _DEFAULT_DOMAINS and node.op_type not in keep_fp32_ops

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


def _copy(model):
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


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


def io_types(model) -> list[tuple[str, int]]:
    """(name, element type) of every graph input and output, in order."""
    init = {i.name for i in model.graph.initializer}
    return [(v.name, v.type.tensor_type.elem_type) for v in (*model.graph.input, *model.graph.output) if v.name not in init]


# ------------------------------------------------------------------ ONNX -> PyTorch
def prepare_for_torch(model):
    """A copy of ``model`` that onnx2torch can convert: ``ArrayFeatureExtractor`` as ``Gather``, default opset <= 17."""
    import onnx
    from onnx import helper, numpy_helper, version_converter

    model = _copy(model)
    g = model.graph
    shapes = _tensor_ranks(model)
    nodes = []
    for node in g.node:
        if node.domain == "ai.onnx.ml" and node.op_type == "ArrayFeatureExtractor":
            x, idx = node.input
            out = node.output[0]
            flat = f"{out}__idx"
            minus1 = f"{out}__minus1"
            g.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), minus1))
            nodes.append(helper.make_node("Reshape", [idx, minus1], [flat], name=f"{out}__reshape"))
            if shapes.get(x) == 1:  # 1-D X gives [1, len(indices)]
                axes = f"{out}__axes"
                g.initializer.append(numpy_helper.from_array(np.array([0], np.int64), axes))
                nodes.append(helper.make_node("Gather", [x, flat], [f"{out}__g"], axis=0, name=f"{out}__gather"))
                nodes.append(helper.make_node("Unsqueeze", [f"{out}__g", axes], [out], name=f"{out}__unsqueeze"))
            elif shapes.get(x):
                nodes.append(helper.make_node("Gather", [x, flat], [out], axis=-1, name=f"{out}__gather"))
            else:
                raise NotApplicable(f"cannot convert ArrayFeatureExtractor on {x!r}: its rank is unknown")
        else:
            nodes.append(node)
    other = sorted({f"{n.domain}:{n.op_type}" for n in nodes if n.domain not in _DEFAULT_DOMAINS})
    if other:
        raise NotApplicable(f"onnx2torch converts standard ONNX operators only; this graph uses {', '.join(other)}")
    g.ClearField("node")
    g.node.extend(nodes)
    opset = max((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), default=TORCH_OPSET)
    model.ClearField("opset_import")
    model.opset_import.extend([helper.make_opsetid("", opset)])
    if opset > TORCH_OPSET:
        try:
            model = version_converter.convert_version(model, TORCH_OPSET)
        except Exception as exc:
            raise NotApplicable(f"cannot bring the graph to opset {TORCH_OPSET} for onnx2torch: {str(exc).splitlines()[0][:200]}") from None
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise NotApplicable(f"graph prepared for onnx2torch is not valid: {str(exc).splitlines()[0][:300]}") from None
    return model


def _tensor_ranks(model) -> dict[str, int]:
    import onnx

    try:
        g = onnx.shape_inference.infer_shapes(model).graph
    except Exception:
        g = model.graph
    out = {vi.name: len(vi.type.tensor_type.shape.dim) for vi in (*g.input, *g.value_info, *g.output)
           if vi.type.tensor_type.HasField("shape")}
    out.update({i.name: len(i.dims) for i in g.initializer})
    return out


def _import_onnx2torch():
    """onnx2torch imports torchvision for its NMS and RoiAlign converters. The
    torchvision wheels for this torch are built against CUDA torch and fail to
    import next to the CPU build; then those two converters are given a stand-in
    that refuses (no other converter touches torchvision)."""
    try:
        import onnx2torch

        return onnx2torch
    except RuntimeError as exc:
        reason = str(exc).splitlines()[0]
    except ImportError as exc:
        if "torchvision" not in str(exc):
            raise
        reason = str(exc)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.") or m.startswith("onnx2torch")]:
        del sys.modules[name]

    def unavailable(*_a, **_k):
        raise NotApplicable(f"this graph needs torchvision operators (NMS, RoiAlign), unavailable here: {reason}")

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.box_convert = ops.roi_align = ops.batched_nms = unavailable
    tv.ops = ops
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.ops")}
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = tv, ops
    try:
        import onnx2torch
    finally:
        for k, v in saved.items():  # the stand-in stays private to onnx2torch
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return onnx2torch


def onnx_to_torch(model):
    """A ``torch.nn.Module`` (eval mode) computing the ONNX graph ``model`` (a ModelProto or a path)."""
    import onnx

    if isinstance(model, str):
        model = onnx.load(model)
    prepared = prepare_for_torch(model)
    onnx2torch = _import_onnx2torch()
    try:
        module = onnx2torch.convert(prepared)
    except NotImplementedError as exc:
        raise NotApplicable(f"onnx2torch cannot convert this graph: {str(exc).splitlines()[0][:300]}") from None
    return module.eval()


# ------------------------------------------------------------------ TorchScript
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


def example_inputs(inputs: Sequence[tuple[str, str, list[int]]], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of ``batch`` rows to trace with (free non-batch dimensions must not exist)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, dtype, shape in inputs:
        if any(d < 0 for d in shape[1:]):
            raise NotApplicable(f"input {name!r} has free dimensions {shape}: a traced model needs them fixed")
        full = [batch, *shape[1:]]
        out[name] = rng.random(full, dtype=np.float32).astype(dtype) if np.dtype(dtype).kind == "f" else np.zeros(full, dtype)
    return out


def _tupled(module):
    """Wrap ``module`` so that it returns a tuple (tracing refuses lists)."""
    import torch

    class Tupled(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *xs):
            out = self.inner(*xs)
            return tuple(out) if isinstance(out, (list, tuple)) else (out,)

    return Tupled(module).eval()


def _meta(inputs: Mapping[str, np.ndarray], outputs: Sequence[str], batch: int, target: str) -> str:
    return json.dumps(
        {
            "inputs": [{"name": k, "dtype": v.dtype.name, "shape": list(v.shape)} for k, v in inputs.items()],
            "outputs": list(outputs),
            "batch": batch,
            "target": target,
        }
    )


def trace_torchscript(module, example: Mapping[str, np.ndarray], output_names: Sequence[str]) -> bytes:
    """TorchScript of ``module`` traced on CPU at the batch size of ``example``."""
    import torch

    tensors = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in example.values())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shape-dependent Python in converters is expected: the batch is fixed
        traced = torch.jit.trace(_tupled(module), tensors, check_trace=False)
    return _save(traced, _meta(example, output_names, len(next(iter(example.values()))), "cpu"))


def compile_neuron(module, example: Mapping[str, np.ndarray], output_names: Sequence[str],
                   compiler_args: Sequence[str] = ("--auto-cast", "none")) -> bytes:
    """TorchScript compiled for NeuronCores by ``torch_neuronx.trace`` at the batch size of ``example``."""
    torch_neuronx = import_torch_neuronx()
    import torch

    tensors = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in example.values())
    with torch.no_grad():
        traced = torch_neuronx.trace(_tupled(module), tensors, compiler_args=list(compiler_args))
    return _save(traced, _meta(example, output_names, len(next(iter(example.values()))), "neuron"))


def _save(traced, meta: str) -> bytes:
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what torch-neuronx produces and loads
        torch.jit.save(traced, buf, _extra_files={META_FILE: meta})
    return buf.getvalue()


def torchscript_variant(onnx_path: str, batch: int, *, target: str, owner_torchscript: str | None = None) -> bytes:
    """The TorchScript file of a fixed-batch variant: from the owner's TorchScript when there is one,
    else from the ONNX graph through onnx2torch; compiled by torch-neuronx for ``target="neuron"``."""
    import onnx

    model = onnx.load(onnx_path)
    inputs, outputs = graph_io(model)
    example = example_inputs(inputs, batch)
    if target == "neuron":
        import_torch_neuronx()  # fail before any conversion work
    if owner_torchscript:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(owner_torchscript, map_location="cpu").eval()
    else:
        module = onnx_to_torch(model)
    if target == "neuron":
        return compile_neuron(module, example, outputs)
    return trace_torchscript(module, example, outputs)


def read_meta(extra: Mapping[str, Any]) -> dict:
    raw = extra.get(META_FILE) or b""
    if not raw:
        raise NotApplicable(f"TorchScript file has no {META_FILE}: it was not built by infaas")
    return json.loads(raw)


