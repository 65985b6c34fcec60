"""Variant generation: what to build per hardware type, and how to build it.

``generation_plan`` is pure: it says which variants an architecture gets on a
hardware type. ``build_variant`` turns the registered ONNX file into the file
of one variant. Both run inside a build job on a worker of that hardware type,
so a GPU variant is built and profiled on a GPU worker.

Per hardware type (docs/hardware.md says more):

* ``cpu``: onnxruntime fp32 (graph optimised offline) and int8 (dynamic
  quantisation).
* ``gpu``: onnxruntime on CUDA in fp32 (the registered graph) and fp16
  (``convert.fp16.to_float16``, input and output types kept); TensorRT fp16 with
  one engine profile per variant, at maximum batch 1, 8 and 32.
* ``inferentia``: torch-neuronx compiled TorchScript at fixed batch 1, 8 and
  32, from the TorchScript file the owner uploaded when there is one, else
  from the ONNX graph through onnx2torch.
* ``lambda`` (the serverless CPU tier, ``core/tier.py``): the ``cpu`` files
  (onnxruntime fp32 and int8) at maximum batch 8, run by a Lambda function. No
  machine is of this type: the build job runs on a ``cpu`` worker's lane
  (``runtime.hardware.build_host``) and profiles each variant under the CPU
  share of several function memory sizes (``runtime.function_profile``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass

from infaas.core.domain import Architecture, Variant
from infaas.core.errors import NotApplicable
from infaas.core.signature import joinable
from infaas.runtime.convert import float16_bytes, graph_io, torchscript_variant

__all__ = ["PLANS", "NotApplicable", "VariantSpec", "build_variant", "generation_plan", "torchscript_key", "variant_suffix"]

DEFAULT_MAX_BATCH = 32


@dataclass(frozen=True)
class VariantSpec:
    format: str
    runtime: str
    hardware: str
    max_batch: int = DEFAULT_MAX_BATCH


# Per hardware type, the variants every architecture gets.
PLANS: dict[str, tuple[VariantSpec, ...]] = {
    "cpu": (
        VariantSpec("fp32", "onnxruntime", "cpu"),
        VariantSpec("int8", "onnxruntime", "cpu"),
    ),
    "gpu": (
        VariantSpec("fp32", "onnxruntime", "gpu"),
        VariantSpec("fp16", "onnxruntime", "gpu"),
        VariantSpec("fp16", "tensorrt", "gpu", max_batch=1),
        VariantSpec("fp16", "tensorrt", "gpu", max_batch=8),
        VariantSpec("fp16", "tensorrt", "gpu", max_batch=32),
    ),
    "inferentia": (
        VariantSpec("fp32", "neuron", "inferentia", max_batch=1),
        VariantSpec("fp32", "neuron", "inferentia", max_batch=8),
        VariantSpec("fp32", "neuron", "inferentia", max_batch=32),
    ),
    # an invocation carries one query's rows (payload at most 6 MB): small batches only
    "lambda": (
        VariantSpec("fp32", "onnxruntime", "lambda", max_batch=8),
        VariantSpec("int8", "onnxruntime", "lambda", max_batch=8),
    ),
}

# Operators worth a GPU: a GPU variant of a graph without any of them would
# run everything on the CPU (scikit-learn's ai.onnx.ml operators have no GPU
# kernels), which is the silent fallback the executors refuse.
GPU_COMPUTE_OPS = frozenset(
    {"MatMul", "Gemm", "Conv", "ConvTranspose", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention", "Einsum",
     "BatchNormalization", "LayerNormalization", "MaxPool", "AveragePool", "GlobalAveragePool"}
)


def generation_plan(arch: Architecture, hardware: str) -> tuple[Variant, ...]:
    """The variants ``arch`` gets on ``hardware``, all pending. A model whose requests cannot be
    joined into one batch (``core.signature.joinable``: an input batched on another axis than 0,
    a per-request input, a dynamic dimension besides the batch) gets each variant once, at batch 1:
    every request runs alone, as many rows as it carries."""
    alone = not joinable(arch.inputs, arch.outputs)
    out: dict[str, Variant] = {}
    for s in PLANS.get(hardware, ()):
        v = Variant(
            architecture=arch.name,
            format=s.format,
            runtime=s.runtime,
            hardware=s.hardware,
            max_batch=1 if alone else s.max_batch,
            task=arch.task,
            tenant=arch.tenant,
            visibility=arch.visibility,
        )
        out.setdefault(v.id, v)
    return tuple(out.values())


def torchscript_key(arch: Architecture) -> str:
    """Where the owner's TorchScript file of ``arch`` lives in the model store, if they uploaded one
    (beside the registered ONNX file; the module takes the ONNX inputs in order and returns its outputs in order)."""
    base = arch.model_key[: -len(".onnx")] if arch.model_key.endswith(".onnx") else arch.model_key
    return f"{base}.torchscript.pt"


def variant_suffix(variant: Variant) -> str:
    """File suffix of a variant's file: TorchScript for Neuron, ONNX for the rest."""
    return ".pt" if variant.runtime == "neuron" else ".onnx"


def build_variant(variant: Variant, original_path: str, *, torchscript_path: str | None = None) -> bytes:
    """The file (ONNX, or TorchScript for Neuron) of ``variant``, built from the registered file."""
    key = (variant.runtime, variant.hardware, variant.format)
    if key[:2] == ("onnxruntime", "lambda"):  # a function runs the CPU files
        key = ("onnxruntime", "cpu", variant.format)
    if key == ("onnxruntime", "cpu", "fp32"):
        return _optimised_fp32(original_path)
    if key == ("onnxruntime", "cpu", "int8"):
        return _dynamic_int8(original_path)
    if key == ("onnxruntime", "gpu", "fp32"):
        return _gpu_graph(original_path)
    if key == ("onnxruntime", "gpu", "fp16"):
        _gpu_graph(original_path)
        return float16_bytes(original_path)
    if key[:2] == ("tensorrt", "gpu") and variant.format in ("fp16", "fp32"):
        return _tensorrt_graph(original_path)
    if key == ("neuron", "inferentia", "fp32"):
        return torchscript_variant(original_path, variant.max_batch, target="neuron", owner_torchscript=torchscript_path)
    raise NotApplicable(f"no builder for {variant.format} on {variant.runtime} ({variant.hardware})")


def _gpu_graph(path: str) -> bytes:
    """The registered graph, checked to have work for a GPU. onnxruntime optimises it
    when the CUDA session loads (offline optimisation with the CPU provider would
    fuse into CPU-only operators)."""
    import onnx

    model = onnx.load(path)
    if not any(n.op_type in GPU_COMPUTE_OPS and n.domain in ("", "ai.onnx") for n in model.graph.node):
        ops = sorted({f"{n.domain + ':' if n.domain else ''}{n.op_type}" for n in model.graph.node})
        raise NotApplicable(f"graph has no operator a GPU would run (only {', '.join(ops[:8])}): it would run on the CPU")
    with open(path, "rb") as f:
        return f.read()


def _tensorrt_graph(path: str) -> bytes:
    """The registered graph, checked for TensorRT: every input dimension but the
    batch fixed (the engine's profile spans batch 1 to the variant's maximum).
    The engine itself is built on the GPU worker when the variant is first
    loaded (profiling), and kept in the worker's engine cache."""
    import onnx

    data = _gpu_graph(path)
    inputs, _ = graph_io(onnx.load(path, load_external_data=False))
    free = [(name, shape) for name, _dtype, shape in inputs if any(d <= 0 for d in shape[1:])]
    if free:
        raise NotApplicable(f"TensorRT variants need every input dimension but the batch fixed; free: {free}")
    return data


def _optimised_fp32(path: str) -> bytes:
    """Graph optimisation done once, offline, and saved (extended level: fusions
    that are portable across onnxruntime CPU builds)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "optimised.onnx")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = out
        ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        with open(out, "rb") as f:
            return f.read()


@contextlib.contextmanager
def _quiet_quantiser():
    """onnxruntime's quantiser logs through the root logger (a warning per call, a line per
    tensor): its records and warnings are dropped for the call, nobody else's."""
    where = f"{os.sep}onnxruntime{os.sep}quantization{os.sep}"

    def keep(record: logging.LogRecord) -> bool:
        return where not in record.pathname

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"onnxruntime\.quantization")
            yield
    finally:
        root.removeFilter(keep)


def _dynamic_int8(path: str) -> bytes:
    """Weights to int8, activations quantised at run time."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(path)
    if not any(n.op_type in {"MatMul", "Gemm", "Conv", "Attention", "LSTM", "GRU"} for n in model.graph.node):
        raise NotApplicable("graph has no MatMul, Gemm, Conv or recurrent node to quantise")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "int8.onnx")
        try:
            with _quiet_quantiser():
                quantize_dynamic(path, out, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise NotApplicable(f"dynamic quantisation failed: {str(exc).splitlines()[0][:200]}") from None
        with open(out, "rb") as f:
            data = f.read()
    with open(path, "rb") as f:
        unchanged = data == f.read()
    if unchanged:
        raise NotApplicable("quantisation left the graph unchanged")
    return data
