"""Executors: one interface to run a variant, one class per runtime.

* ``OnnxRuntimeExecutor``: an ONNX file on exactly the execution providers the
  variant names: CPU (``onnxruntime`` on ``cpu``), CUDA (``onnxruntime`` on
  ``gpu``), TensorRT with CUDA behind it (``tensorrt`` on ``gpu``; fp16 flag,
  engine cache and batch profile from the variant).
* ``TorchScriptExecutor``: a TorchScript file traced at one fixed batch size
  (smaller batches are padded, larger ones run in chunks).
* ``NeuronExecutor``: the same for a file compiled by torch-neuronx, loaded onto
  one NeuronCore per replica (round robin over the cores this process sees).

Provider choice is explicit per variant and checked after loading: a variant
meant for the GPU that onnxruntime would quietly run on the CPU is an error,
never a fallback. Runtimes that are not installed (onnxruntime-gpu,
torch-neuronx) are imported only when a variant needs them.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import tempfile
import threading
import warnings
from typing import Mapping, Protocol, Sequence

import numpy as np

from infaas.core.domain import Variant
from infaas.core.errors import ExecutorError, InfaasError, InvalidInput
from infaas.core.runtimes import PROVIDERS

log = logging.getLogger("infaas.runtime")


class Executor(Protocol):
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def providers_for(variant: Variant) -> list[str]:
    try:
        return list(PROVIDERS[(variant.runtime, variant.hardware)])
    except KeyError:
        raise ExecutorError(f"no executor for runtime {variant.runtime!r} on hardware {variant.hardware!r}") from None


def check_no_fallback(requested: Sequence[str], active: Sequence[str]) -> None:
    """onnxruntime drops a provider it cannot start and carries on with the CPU;
    a variant that asked for providers that are not all active is refused."""
    dropped = [p for p in requested if p not in active]
    if dropped:
        raise ExecutorError(
            f"variant asked for {list(requested)} but onnxruntime started {list(active)} "
            f"({', '.join(dropped)} failed to start): no silent fallback"
        )


def default_cache_dir() -> str:
    return os.path.join(tempfile.gettempdir(), "infaas-cache")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def provider_options(
    variant: Variant, inputs: Sequence[tuple[str, str, Sequence[int]]], cache_dir: str | None = None
) -> list[dict[str, str]]:
    """Options for each provider of ``variant``, in the order of ``providers_for``.

    TensorRT: fp16 when the variant's format is fp16, engines and timing cache
    kept under ``<cache_dir>/tensorrt/<variant>``, and one optimisation profile
    from batch 1 to the variant's maximum batch (optimised for the maximum).
    ``inputs`` are (name, dtype, shape) of the graph inputs; TensorRT variants
    need every dimension but the batch fixed.
    """
    providers = providers_for(variant)
    out: list[dict[str, str]] = []
    for p in providers:
        if p == "CPUExecutionProvider":
            out.append({})
        elif p == "CUDAExecutionProvider":
            out.append({"device_id": "0"})
        elif p == "TensorrtExecutionProvider":
            engine_dir = os.path.join(cache_dir or default_cache_dir(), "tensorrt", _safe(variant.id))
            shapes = {}
            for name, _dtype, shape in inputs:
                if any(d <= 0 for d in shape[1:]):
                    raise ExecutorError(f"TensorRT variant needs fixed input dimensions besides the batch; {name!r} is {list(shape)}")
                if re.search(r"[:,]", name):
                    raise ExecutorError(f"TensorRT profile shapes cannot name input {name!r} (':' or ',')")
                shapes[name] = [str(d) for d in shape[1:]]

            def profile(batch: int) -> str:
                return ",".join(f"{n}:{'x'.join([str(batch), *dims])}" for n, dims in shapes.items())

            out.append(
                {
                    "device_id": "0",
                    "trt_fp16_enable": "True" if variant.format == "fp16" else "False",
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": engine_dir,
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": engine_dir,
                    "trt_profile_min_shapes": profile(1),
                    "trt_profile_opt_shapes": profile(variant.max_batch),
                    "trt_profile_max_shapes": profile(variant.max_batch),
                }
            )
        else:
            out.append({})
    return out


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
                f"(available: {ort.get_available_providers()}); GPU variants need onnxruntime-gpu on a GPU worker"
            )
        for opts_ in provider_options or ():
            for key in ("trt_engine_cache_path",):
                if key in opts_:
                    os.makedirs(opts_[key], exist_ok=True)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No CPU memory arena: what a run allocates goes back when it ends. With the arena, one large
        # query (a model whose allocation grows with its input) keeps its memory in this session,
        # and the worker's other replicas then fail under its memory cap (``limit_memory``).
        # Measured on a quiet 2-core machine: 0.99-1.05x the time per run (digits MLP, SqueezeNet).
        opts.enable_cpu_mem_arena = False
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=providers, provider_options=provider_options)
        except Exception as exc:
            if providers == ["CPUExecutionProvider"]:
                raise
            raise ExecutorError(f"{providers[0]} could not load the variant: {str(exc).splitlines()[0][:300]}") from None
        check_no_fallback(providers, self.session.get_providers())
        self.providers = tuple(providers)
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(None, dict(inputs))
        except Exception as exc:  # onnxruntime raises its own types for bad feeds
            raise InvalidInput(f"model rejected the inputs: {str(exc).splitlines()[0][:300]}", field="inputs") from None
        return dict(zip(self.output_names, outs))


class TorchScriptExecutor:
    """A TorchScript variant traced at one batch size (``infaas.json`` inside says which, and the tensor names)."""

    target = "cpu"

    def __init__(self, path: str, *, intra_op_threads: int = 1, load_context=None) -> None:
        import contextlib

        import torch

        from infaas.runtime.convert import META_FILE, read_meta

        extra = {META_FILE: ""}
        with torch.no_grad(), (load_context or contextlib.nullcontext()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit: the format torch-neuronx compiles to
            if self.target == "cpu":
                torch.set_num_threads(max(1, intra_op_threads))
                self.module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
            else:
                self.module = torch.jit.load(path, _extra_files=extra)
        self.module.eval()
        try:
            meta = read_meta(extra)
        except InfaasError as exc:
            raise ExecutorError(exc.message) from None
        if meta.get("target") != self.target:
            raise ExecutorError(f"TorchScript file was built for {meta.get('target')!r}, this executor runs {self.target!r}")
        self.batch = int(meta["batch"])
        self.inputs = meta["inputs"]
        self.input_names = tuple(i["name"] for i in self.inputs)
        self.output_names = tuple(meta["outputs"])
        self._torch = torch

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise InvalidInput(f"missing input(s) {missing}; the model takes {list(self.input_names)}", field="inputs")
        arrays = []
        for spec in self.inputs:
            a = np.asarray(inputs[spec["name"]])
            if list(a.shape[1:]) != spec["shape"][1:]:
                raise InvalidInput(f"input {spec['name']!r} has shape {list(a.shape)}, the model takes {['N', *spec['shape'][1:]]}",
                                   field="inputs")
            arrays.append(np.ascontiguousarray(a.astype(spec["dtype"], copy=False)))
        rows = len(arrays[0])
        if rows == 0:
            raise InvalidInput("no rows to run", field="inputs")
        parts: list[list[np.ndarray]] = []
        for start in range(0, rows, self.batch):
            chunk = [a[start : start + self.batch] for a in arrays]
            n = len(chunk[0])
            if n < self.batch:  # the model was traced at a fixed batch: pad with copies of the last row
                chunk = [np.concatenate([c, np.repeat(c[-1:], self.batch - n, axis=0)]) for c in chunk]
            try:
                with self._torch.no_grad():
                    outs = self.module(*(self._torch.from_numpy(c) for c in chunk))
            except Exception as exc:  # an index out of range, say: as onnxruntime's refusals are
                raise InvalidInput(f"model rejected the inputs: {str(exc).strip().splitlines()[-1][:300]}",
                                   field="inputs") from None
            if not isinstance(outs, (tuple, list)):
                outs = (outs,)
            parts.append([o.detach().cpu().numpy()[:n] for o in outs])
        return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(self.output_names)}


def visible_neuron_cores(env: Mapping[str, str] | None = None, device_count: int | None = None) -> int:
    """How many NeuronCores this process may use: ``NEURON_RT_VISIBLE_CORES`` ("0-3" or "0,2"),
    else ``NEURON_RT_NUM_CORES``, else two per ``/dev/neuron*`` device (Inferentia2)."""
    env = os.environ if env is None else env
    visible = env.get("NEURON_RT_VISIBLE_CORES", "").strip()
    if visible:
        count = 0
        for part in visible.split(","):
            lo, _, hi = part.strip().partition("-")
            count += (int(hi) - int(lo) + 1) if hi else 1
        return count
    if env.get("NEURON_RT_NUM_CORES", "").strip():
        return int(env["NEURON_RT_NUM_CORES"])
    if device_count is None:
        device_count = len([d for d in os.listdir("/dev") if re.fullmatch(r"neuron\d+", d)]) if os.path.isdir("/dev") else 0
    return 2 * device_count


_next_core = itertools.count()
_core_lock = threading.Lock()


def next_neuron_core(cores: int) -> int:
    """Round robin: each replica loaded in this process gets the next NeuronCore."""
    with _core_lock:
        return next(_next_core) % max(1, cores)


class NeuronExecutor(TorchScriptExecutor):
    """A torch-neuronx compiled TorchScript variant pinned to one NeuronCore."""

    target = "neuron"

    def __init__(self, path: str, *, core: int | None = None, intra_op_threads: int = 1) -> None:
        from infaas.core.errors import NeuronUnavailable
        from infaas.runtime.convert import import_torch_neuronx

        try:
            torch_neuronx = import_torch_neuronx()
        except NeuronUnavailable as exc:
            raise ExecutorError(exc.message) from None
        cores = visible_neuron_cores()
        if cores == 0:
            raise ExecutorError("torch-neuronx is installed but this process sees no NeuronCore (no /dev/neuron*)")
        self.core = next_neuron_core(cores) if core is None else core
        placement = getattr(getattr(torch_neuronx, "experimental", None), "neuron_cores_context", None)
        if placement is None:
            raise ExecutorError("this torch-neuronx has no experimental.neuron_cores_context: cannot pin replicas to NeuronCores")
        super().__init__(path, intra_op_threads=intra_op_threads, load_context=placement(start_nc=self.core, nc_count=1))
        log.info("neuron variant %s loaded on NeuronCore %d of %d", os.path.basename(path), self.core, cores)


def _graph_inputs(path: str):
    import onnx

    from infaas.runtime.convert import graph_io

    return graph_io(onnx.load(path, load_external_data=False))[0]


def load_executor(variant: Variant, path: str, *, intra_op_threads: int = 1, cache_dir: str | None = None) -> Executor:
    """The executor for a variant's runtime and hardware type."""
    if variant.runtime == "neuron":
        if variant.hardware != "inferentia":
            raise ExecutorError(f"neuron variants run on inferentia workers, not {variant.hardware!r}")
        return NeuronExecutor(path, intra_op_threads=intra_op_threads)
    providers = providers_for(variant)
    options = None
    if variant.runtime == "tensorrt" or variant.hardware == "gpu":
        options = provider_options(variant, _graph_inputs(path) if variant.runtime == "tensorrt" else [], cache_dir)
    return OnnxRuntimeExecutor(path, providers, intra_op_threads=intra_op_threads, provider_options=options)
