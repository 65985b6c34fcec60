"""Variant generation: what to build per hardware type, and how to build it.

``generation_plan`` is pure: it says which variants an architecture gets on a
hardware type. ``build_variant`` turns the registered ONNX file into the file
of one variant. Both run inside a build job on a worker of that hardware type,
so a GPU variant is built and profiled on a GPU worker.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from ..domain import Architecture, Variant
from ..errors import InfaasError

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
}


def generation_plan(arch: Architecture, hardware: str) -> tuple[Variant, ...]:
    """The variants ``arch`` gets on ``hardware``, all pending."""
    return tuple(
        Variant(
            architecture=arch.name,
            format=s.format,
            runtime=s.runtime,
            hardware=s.hardware,
            max_batch=s.max_batch,
            task=arch.task,
            tenant=arch.tenant,
            visibility=arch.visibility,
        )
        for s in PLANS.get(hardware, ())
    )


class NotApplicable(InfaasError):
    """The graph does not allow this variant (e.g. nothing to quantise)."""

    status = 422
    code = "variant_not_applicable"


def build_variant(variant: Variant, original_path: str) -> bytes:
    """The ONNX bytes of ``variant``, built from the registered file."""
    if variant.format == "fp32" and variant.runtime == "onnxruntime":
        return _optimised_fp32(original_path)
    if variant.format == "int8" and variant.runtime == "onnxruntime":
        return _dynamic_int8(original_path)
    raise NotApplicable(f"no builder for {variant.format} on {variant.runtime}")


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
            quantize_dynamic(path, out, weight_type=QuantType.QInt8)
        except Exception as exc:
            raise NotApplicable(f"dynamic quantisation failed: {str(exc).splitlines()[0][:200]}") from None
        with open(out, "rb") as f:
            data = f.read()
    if data == open(path, "rb").read():
        raise NotApplicable("quantisation left the graph unchanged")
    return data
