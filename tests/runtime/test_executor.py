"""Executors: explicit providers per variant, no silent fallback to the CPU,
TensorRT options from the variant, and the Neuron path failing clearly where
torch-neuronx is absent (this machine: CPU onnxruntime, no Neuron SDK).
"""

from __future__ import annotations

import importlib.util

import onnxruntime as ort
import pytest

from infaas.cli import digits
from infaas.core.domain import Variant
from infaas.core.errors import ExecutorError, NeuronUnavailable
from infaas.core.runtimes import PROVIDERS, required_runtimes
from infaas.runtime.convert import torchscript_variant
from infaas.runtime.executor import (
    OnnxRuntimeExecutor,
    check_no_fallback,
    load_executor,
    provider_options,
    providers_for,
    visible_neuron_cores,
)
from infaas.runtime.generate import build_variant


def variant(runtime: str, hardware: str, fmt: str = "fp32", max_batch: int = 32) -> Variant:
    return Variant(architecture="mlp-32", format=fmt, runtime=runtime, hardware=hardware, max_batch=max_batch,
                   task=digits.TASK, tenant="local")


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> str:
    return digits.train(str(tmp_path_factory.mktemp("digits")), names=["mlp-32"])[0].path


def test_this_machine_has_only_the_cpu_runtimes():
    """The tests below rely on it: CPU onnxruntime, no CUDA, no torch-neuronx."""
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    assert importlib.util.find_spec("torch_neuronx") is None


# ------------------------------------------------------------------ provider selection
def test_each_runtime_and_hardware_type_names_its_providers_explicitly():
    assert providers_for(variant("onnxruntime", "cpu")) == ["CPUExecutionProvider"]
    assert providers_for(variant("onnxruntime", "gpu")) == ["CUDAExecutionProvider"]
    assert providers_for(variant("tensorrt", "gpu", "fp16")) == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert all("CPUExecutionProvider" not in p for (_rt, hw), p in PROVIDERS.items() if hw != "cpu")
    assert required_runtimes("neuron", "inferentia") == ("neuron",)
    with pytest.raises(ExecutorError, match="no executor for runtime 'onnxruntime' on hardware 'inferentia'"):
        providers_for(variant("onnxruntime", "inferentia"))
    with pytest.raises(ExecutorError, match="no executor"):
        required_runtimes("tensorrt", "cpu")


def test_cpu_variant_runs_on_exactly_the_cpu_provider(mlp):
    ex = load_executor(variant("onnxruntime", "cpu"), mlp)
    assert ex.session.get_providers() == ["CPUExecutionProvider"]
    data = digits.split()
    out = ex.run({"X": data.x_test[:5]})
    assert set(out) == {"label", "probabilities"} and out["label"].shape == (5,)


@pytest.mark.parametrize("runtime, fmt", [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("tensorrt", "fp16")])
def test_gpu_variant_never_runs_on_the_cpu(mlp, tmp_path, runtime, fmt):
    with pytest.raises(ExecutorError, match="not available in this onnxruntime build") as err:
        load_executor(variant(runtime, "gpu", fmt, 8), mlp, cache_dir=str(tmp_path))
    assert providers_for(variant(runtime, "gpu", fmt))[0] in err.value.message
    assert "onnxruntime-gpu" in err.value.message


def test_a_provider_that_failed_to_start_is_a_fallback_and_refused():
    # what onnxruntime-gpu reports when the CUDA provider cannot start (no driver, no device)
    with pytest.raises(ExecutorError, match="no silent fallback") as err:
        check_no_fallback(["CUDAExecutionProvider"], ["CPUExecutionProvider"])
    assert "CUDAExecutionProvider failed to start" in err.value.message
    with pytest.raises(ExecutorError, match="TensorrtExecutionProvider failed to start"):
        check_no_fallback(["TensorrtExecutionProvider", "CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"])
    check_no_fallback(["CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"])  # CPU behind is normal


def test_executor_refuses_providers_missing_from_the_build(mlp):
    with pytest.raises(ExecutorError, match=r"\['CUDAExecutionProvider'\] are not available"):
        OnnxRuntimeExecutor(mlp, ["CUDAExecutionProvider"])


# ------------------------------------------------------------------ provider options
def test_tensorrt_options_come_from_the_variant(tmp_path):
    v = variant("tensorrt", "gpu", "fp16", max_batch=8)
    trt, cuda = provider_options(v, [("X", "float32", [-1, 64])], str(tmp_path))
    assert trt["trt_fp16_enable"] == "True"
    assert trt["trt_engine_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "tensorrt" / "mlp-32_tensorrt-fp16_gpu_b8")
    assert (trt["trt_profile_min_shapes"], trt["trt_profile_opt_shapes"], trt["trt_profile_max_shapes"]) == (
        "X:1x64", "X:8x64", "X:8x64")
    assert cuda == {"device_id": "0"}
    fp32 = provider_options(variant("tensorrt", "gpu", "fp32", 1), [("img", "float32", [1, 3, 8, 8])], str(tmp_path))[0]
    assert fp32["trt_fp16_enable"] == "False" and fp32["trt_profile_max_shapes"] == "img:1x3x8x8"
    with pytest.raises(ExecutorError, match="fixed input dimensions besides the batch"):
        provider_options(v, [("X", "float32", [-1, -1])], str(tmp_path))
    assert provider_options(variant("onnxruntime", "gpu"), [], None) == [{"device_id": "0"}]


# ------------------------------------------------------------------ Neuron
def test_neuron_variant_fails_clearly_without_torch_neuronx(tmp_path):
    path = tmp_path / "v.pt"
    path.write_bytes(b"not used")
    with pytest.raises(ExecutorError) as err:
        load_executor(variant("neuron", "inferentia", max_batch=8), str(path))
    msg = err.value.message
    assert "torch-neuronx" in msg and "Neuron repository" in msg and "placeholder" in msg
    with pytest.raises(ExecutorError, match="neuron variants run on inferentia"):
        load_executor(variant("neuron", "gpu"), str(path))


def test_neuron_build_fails_clearly_without_torch_neuronx(mlp):
    with pytest.raises(NeuronUnavailable, match="torch-neuronx .* Neuron repository"):
        build_variant(variant("neuron", "inferentia", max_batch=8), mlp)
    with pytest.raises(NeuronUnavailable, match="--hardware inferentia"):
        torchscript_variant(mlp, 1, target="neuron")


def test_neuron_cores_visible_to_this_process():
    assert visible_neuron_cores({"NEURON_RT_VISIBLE_CORES": "0-3"}) == 4
    assert visible_neuron_cores({"NEURON_RT_VISIBLE_CORES": "1,3, 5-6"}) == 4
    assert visible_neuron_cores({"NEURON_RT_NUM_CORES": "2"}) == 2
    assert visible_neuron_cores({}, device_count=1) == 2  # inf2.xlarge: one Inferentia2 chip, two NeuronCores
    assert visible_neuron_cores({}, device_count=0) == 0


def test_a_large_run_gives_its_memory_back(tmp_path):
    """A model whose allocation grows with its input (ConstantOfShape of the input's max): after one
    query that allocates 800 MB, the process is back near where it was, so the worker's other
    replicas keep their room under its memory cap. (With onnxruntime's CPU arena the 800 MB stayed.)"""
    import numpy as np
    from fakes import memory_growing_model

    path = str(tmp_path / "grow.onnx")
    memory_growing_model(path)

    def rss_mib() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    ex = OnnxRuntimeExecutor(path, ["CPUExecutionProvider"])
    ex.run({"x": np.array([[10.0]], np.float32)})
    before = rss_mib()
    out = ex.run({"x": np.array([[2e8]], np.float32)})  # 2e8 floats: 800 MB inside the run
    assert out["y"][0, 0] >= 2e8  # x plus the sum of 2e8 ones: the run did allocate
    after = rss_mib()
    assert after - before < 200, (before, after)
