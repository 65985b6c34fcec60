"""Which worker can build and run what, and why a pending variant waits.

A worker declares a hardware type (``--hardware gpu``) and reports the
runtimes it actually has (``Worker.runtimes``: onnxruntime execution
providers that start, and ``neuron`` where torch-neuronx and a NeuronCore are
there). A worker takes build jobs for its hardware type only when it has
every runtime that type's generation plan needs; otherwise the job waits in
its lane, and ``waiting_reason`` says why.

A hardware type without machines of its own (``lambda``, the serverless CPU
tier: ``core/tier.py``) is built and profiled on a worker of its build host
(``build_host``: ``cpu``), from that worker's build lane; no worker ever loads
one of its variants as a replica (``can_run`` is false for every worker).

``build_host``, ``build_runtimes``, ``missing_runtimes``, ``can_run`` and
``waiting_reason`` are pure. ``probe_runtimes`` tries the runtimes on this machine.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable

from infaas.core.domain import PENDING, WORKER_UP, Variant, Worker
from infaas.core.runtimes import required_runtimes
from infaas.runtime.generate import PLANS

log = logging.getLogger("infaas.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
NEURON = "neuron"

# Hardware types whose variants no machine serves (a Lambda function runs them), and the machine
# type that builds and profiles them.
FUNCTION_HOSTS: dict[str, str] = {"lambda": "cpu"}


def build_host(hardware: str) -> str:
    """The hardware type of the workers that build ``hardware``'s variants: itself, or for a
    function tier the machine type its files are built on (``lambda`` -> ``cpu``)."""
    return FUNCTION_HOSTS.get(hardware, hardware)


def build_runtimes(hardware: str) -> tuple[str, ...]:
    """Every runtime a build job for ``hardware`` needs (the union over its plan), in plan order
    (for a function tier: what its build host needs to build and profile its files)."""
    out: list[str] = []
    for spec in PLANS.get(hardware, ()):
        for r in required_runtimes(spec.runtime, build_host(spec.hardware)):
            if r not in out:
                out.append(r)
    return tuple(out)


def missing_runtimes(hardware: str, runtimes: Iterable[str]) -> tuple[str, ...]:
    """What a worker of ``hardware`` with ``runtimes`` lacks to take that type's build jobs."""
    have = set(runtimes)
    return tuple(r for r in build_runtimes(hardware) if r not in have)


def can_run(worker: Worker, variant: Variant) -> bool:
    """Whether ``worker`` can load ``variant``: same hardware type and the runtime it needs.
    A worker that reports no runtimes (an older worker) is taken at its word. No worker loads
    a function tier's variant (a ``cpu`` worker only builds and profiles ``lambda`` variants)."""
    if variant.hardware in FUNCTION_HOSTS or worker.hardware in FUNCTION_HOSTS:
        return False
    if worker.hardware != variant.hardware:
        return False
    if not worker.runtimes:
        return True
    try:
        needed = required_runtimes(variant.runtime, variant.hardware)
    except Exception:
        return False
    return set(needed) <= set(worker.runtimes)


def waiting_reason(variant: Variant, workers: Iterable[Worker]) -> str | None:
    """Why ``variant`` is still pending, or None when it is not pending or a
    worker that can build it is up (its job is simply queued). For example
    "no worker of hardware type gpu is up", or "workers of type gpu lack
    CUDAExecutionProvider, TensorrtExecutionProvider: gpu-1".
    """
    if variant.status != PENDING:
        return None
    hw = build_host(variant.hardware)
    needed = build_runtimes(variant.hardware)
    if not needed:
        return f"no generation plan for hardware type {variant.hardware}"
    of_type = sorted((w for w in workers if w.hardware == hw and w.state == WORKER_UP), key=lambda w: w.id)
    if not of_type:
        return f"no worker of hardware type {hw} is up"
    if any(not w.runtimes or not missing_runtimes(variant.hardware, w.runtimes) for w in of_type):
        return None
    groups: dict[tuple[str, ...], list[str]] = {}
    for w in of_type:
        groups.setdefault(missing_runtimes(variant.hardware, w.runtimes), []).append(w.id)
    return "; ".join(f"workers of type {hw} lack {', '.join(missing)}: {', '.join(ids)}" for missing, ids in groups.items())


# ---------------------------------------------------------------- probing this machine
def probe_runtimes(hardware: str) -> tuple[str, ...]:
    """The runtimes that really work here, among the CPU provider and those that
    ``hardware``'s plan needs. A GPU provider counts only if a session on it
    starts without onnxruntime falling back to the CPU."""
    found = []
    wanted = [CPU, *[r for r in build_runtimes(hardware) if r != CPU]]
    for runtime in wanted:
        try:
            ok = _probe(runtime)
        except Exception as exc:  # a probe must never stop the worker
            log.info("runtime %s unusable: %s", runtime, str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            ok = False
        if ok:
            found.append(runtime)
    return tuple(found)


def _probe(runtime: str) -> bool:
    if runtime == NEURON:
        try:
            import torch_neuronx  # noqa: F401  (only on Inferentia worker images)
        except ImportError:
            return False
        return any(name.startswith("neuron") and name[6:].isdigit() for name in os.listdir("/dev"))
    import onnxruntime as ort

    if runtime not in ort.get_available_providers():
        return False
    providers = [runtime] if runtime != TENSORRT else [TENSORRT, CUDA]
    session = ort.InferenceSession(_tiny_model(), providers=providers)
    return all(p in session.get_providers() for p in providers)


def _tiny_model() -> bytes:
    """y = relu(x @ w), x of shape [1, 4]: small enough to start any provider in well under a second."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()
