"""ONNX to PyTorch (onnx2torch), TorchScript traced at one batch size, and Neuron compilation for Inferentia2."""

from __future__ import annotations

import io
import json
import sys
import types
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from infaas.core.errors import NeuronUnavailable, NotApplicable
from infaas.runtime.convert.graphs import DEFAULT_DOMAINS, copy_model, graph_io

META_FILE = "infaas.json"  # extra file inside every TorchScript variant


TORCH_OPSET = 17  # the newest default-domain opset onnx2torch 1.5 converts


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


def prepare_for_torch(model):
    """A copy of ``model`` that onnx2torch can convert: ``ArrayFeatureExtractor`` as ``Gather``, default opset <= 17."""
    import onnx
    from onnx import helper, numpy_helper, version_converter

    model = copy_model(model)
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
    other = sorted({f"{n.domain}:{n.op_type}" for n in nodes if n.domain not in DEFAULT_DOMAINS})
    if other:
        raise NotApplicable(f"onnx2torch converts standard ONNX operators only; this graph uses {', '.join(other)}")
    g.ClearField("node")
    g.node.extend(nodes)
    opset = max((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), default=TORCH_OPSET)
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
