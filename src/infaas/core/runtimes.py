"""Which runtimes a variant needs on a worker: the table selection, the hardware
survey and the executor all read.

Pure data: no runtime is imported here (the executor in ``infaas.runtime``
starts them).
"""

from __future__ import annotations

from infaas.core.errors import ExecutorError

# (runtime, hardware) -> onnxruntime execution providers, in priority order.
# TensorRT takes the subgraphs it supports; CUDA runs the rest on the GPU.
PROVIDERS: dict[tuple[str, str], list[str]] = {
    ("onnxruntime", "cpu"): ["CPUExecutionProvider"],
    ("onnxruntime", "gpu"): ["CUDAExecutionProvider"],
    ("tensorrt", "gpu"): ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
}
# Runtimes that are not onnxruntime providers: (runtime, hardware) -> name a worker reports.
OTHER_RUNTIMES: dict[tuple[str, str], str] = {("neuron", "inferentia"): "neuron"}


def required_runtimes(runtime: str, hardware: str) -> tuple[str, ...]:
    """What a worker must have to run a variant of ``runtime`` on ``hardware``."""
    if (runtime, hardware) in PROVIDERS:
        return tuple(PROVIDERS[(runtime, hardware)])
    if (runtime, hardware) in OTHER_RUNTIMES:
        return (OTHER_RUNTIMES[(runtime, hardware)],)
    raise ExecutorError(f"no executor for runtime {runtime!r} on hardware {hardware!r}")
