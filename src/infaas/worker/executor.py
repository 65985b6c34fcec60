"""Executors: one interface to run a variant, one class per runtime.

Provider choice is explicit per variant and checked after loading: a variant
meant for the GPU that onnxruntime would quietly run on the CPU is an error,
never a fallback.
"""

from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np

from ..domain import Variant
from ..errors import InfaasError, InvalidInput

# (runtime, hardware) -> onnxruntime execution providers, in priority order.
PROVIDERS: dict[tuple[str, str], list[str]] = {
    ("onnxruntime", "cpu"): ["CPUExecutionProvider"],
    ("onnxruntime", "gpu"): ["CUDAExecutionProvider"],
    ("tensorrt", "gpu"): ["TensorrtExecutionProvider"],
}


class ExecutorError(InfaasError):
    """The runtime a variant needs is missing or would fall back (500 on a worker)."""

    status = 500
    code = "executor_unavailable"


class Executor(Protocol):
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxRuntimeExecutor:
    """Runs an ONNX file with exactly the providers given, or refuses to load."""

    def __init__(
        self,
        path: str,
        providers: list[str],
        *,
        intra_op_threads: int = 1,
        provider_options: list[dict] | None = None,
    ) -> None:
        import onnxruntime as ort

        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise ExecutorError(
                f"execution provider(s) {missing} are not available in this onnxruntime build "
                f"(available: {ort.get_available_providers()})"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(path, sess_options=opts, providers=providers, provider_options=provider_options)
        active = self.session.get_providers()
        if active[0] != providers[0]:
            raise ExecutorError(f"variant asked for {providers[0]} but onnxruntime chose {active[0]}: no silent fallback")
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(None, dict(inputs))
        except Exception as exc:  # onnxruntime raises its own types for bad feeds
            raise InvalidInput(f"model rejected the inputs: {str(exc).splitlines()[0][:300]}", field="inputs") from None
        return dict(zip(self.output_names, outs))


def providers_for(variant: Variant) -> list[str]:
    try:
        return PROVIDERS[(variant.runtime, variant.hardware)]
    except KeyError:
        raise ExecutorError(f"no executor for runtime {variant.runtime!r} on hardware {variant.hardware!r}") from None


def load_executor(variant: Variant, path: str, *, intra_op_threads: int = 1) -> Executor:
    """The executor for a variant's runtime and hardware type."""
    if variant.runtime == "neuron":
        try:
            import torch_neuronx  # noqa: F401  (only on Inferentia worker images)
        except ImportError:
            raise ExecutorError(
                "variant needs torch-neuronx (Inferentia2), which is not installed on this worker; "
                "it comes from the Neuron repository on Inferentia worker images"
            ) from None
        raise ExecutorError("Neuron executor is not built in this version")
    return OnnxRuntimeExecutor(path, providers_for(variant), intra_op_threads=intra_op_threads)
