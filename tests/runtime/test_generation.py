"""Generation per hardware type: the plan, the builders run on the CPU (GPU
graphs, fp16, TensorRT checks), accuracy re-measured for fp16 by the
profiling child, which worker may take which build job and why a pending
variant waits, and the device check script's dry run.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from infaas.app.build import variant_key
from infaas.cli import digits
from infaas.core.domain import (
    PENDING,
    READY,
    WORKER_DRAINING,
    Architecture,
    TensorSpec,
    Worker,
)
from infaas.core.errors import NotApplicable
from infaas.runtime.convert import io_types
from infaas.runtime.generate import (
    build_variant,
    generation_plan,
    torchscript_key,
    variant_suffix,
)
from infaas.runtime.hardware import (
    build_runtimes,
    can_run,
    missing_runtimes,
    probe_runtimes,
    waiting_reason,
)
from infaas.runtime.profile import ProfileLimits, profile_in_subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def arch(name: str = "mlp-32") -> Architecture:
    return Architecture(name=name, tenant="local", task=digits.TASK, accuracy=0.97, sha256="ab" * 32,
                        model_key=f"architectures/{name}/abababababababab.onnx",
                        inputs=(TensorSpec("X", "float32", (-1, 64)),),
                        outputs=(TensorSpec("label", "int64", (-1,)), TensorSpec("probabilities", "float32", (-1, 10))))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("digits"))
    data = digits.split()
    paths = {t.name: t.path for t in digits.train(out, names=["mlp-32", "logistic-regression"], data=data)}
    validation = os.path.join(out, "validation.npz")
    with open(validation, "wb") as f:
        f.write(digits.validation_npz(data))
    return paths, validation, data


# ------------------------------------------------------------------ the plan
def test_generation_plan_per_hardware_type():
    ids = {hw: [v.id for v in generation_plan(arch(), hw)] for hw in ("cpu", "gpu", "inferentia", "tpu")}
    assert ids["cpu"] == ["mlp-32:onnx-fp32:cpu:b32", "mlp-32:onnx-int8:cpu:b32"]
    assert ids["gpu"] == ["mlp-32:onnx-fp32:gpu:b32", "mlp-32:onnx-fp16:gpu:b32", "mlp-32:tensorrt-fp16:gpu:b1",
                          "mlp-32:tensorrt-fp16:gpu:b8", "mlp-32:tensorrt-fp16:gpu:b32"]
    assert ids["inferentia"] == ["mlp-32:neuron-fp32:inferentia:b1", "mlp-32:neuron-fp32:inferentia:b8",
                                 "mlp-32:neuron-fp32:inferentia:b32"]
    assert ids["tpu"] == []
    assert all(v.status == PENDING and v.task == digits.TASK for v in generation_plan(arch(), "gpu"))


def test_variant_files_and_the_owner_torchscript_key():
    neuron = generation_plan(arch(), "inferentia")[0]
    gpu = generation_plan(arch(), "gpu")[0]
    sha = arch().sha256
    assert variant_suffix(neuron) == ".pt"
    assert variant_key(neuron, sha) == f"variants/mlp-32/{sha[:16]}/mlp-32_neuron-fp32_inferentia_b1.pt"
    assert variant_key(gpu, sha).endswith("mlp-32_onnx-fp32_gpu_b32.onnx")
    assert variant_key(gpu, "cd" * 32) != variant_key(gpu, sha)  # the same name with another file: another key
    assert torchscript_key(arch()) == "architectures/mlp-32/abababababababab.torchscript.pt"


# ------------------------------------------------------------------ builders (on the CPU)
def test_gpu_builders_on_the_digits_mlp(trained, tmp_path):
    paths, _validation, data = trained
    plan = {(v.runtime, v.format, v.max_batch): v for v in generation_plan(arch(), "gpu")}
    fp32 = build_variant(plan[("onnxruntime", "fp32", 32)], paths["mlp-32"])
    assert fp32 == open(paths["mlp-32"], "rb").read()  # the registered graph; the CUDA session optimises it
    half = onnx.load_from_string(build_variant(plan[("onnxruntime", "fp16", 32)], paths["mlp-32"]))
    onnx.checker.check_model(half, full_check=True)
    assert io_types(half) == io_types(onnx.load(paths["mlp-32"]))
    assert any(i.data_type == TensorProto.FLOAT16 for i in half.graph.initializer)
    for b in (1, 8, 32):
        assert build_variant(plan[("tensorrt", "fp16", b)], paths["mlp-32"]) == fp32


def test_gpu_variants_of_a_graph_without_gpu_work_are_skipped(trained):
    paths, _validation, _data = trained
    for v in generation_plan(arch("logistic-regression"), "gpu"):
        with pytest.raises(NotApplicable, match="no operator a GPU would run"):
            build_variant(v, paths["logistic-regression"])


def test_tensorrt_needs_fixed_dimensions_besides_the_batch(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "free",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", 4])], [w])
    path = tmp_path / "free.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    trt = next(v for v in generation_plan(arch(), "gpu") if v.runtime == "tensorrt")
    with pytest.raises(NotApplicable, match="every input dimension but the batch fixed"):
        build_variant(trt, str(path))


def test_profiling_measures_accuracy_of_the_fp16_graph(trained, tmp_path):
    """The profiling child that runs on the GPU worker measures every variant's
    own accuracy; here it runs the same fp16 graph on the CPU provider."""
    paths, validation, data = trained
    fp16 = next(v for v in generation_plan(arch(), "gpu") if v.format == "fp16" and v.runtime == "onnxruntime")
    path = tmp_path / "fp16.onnx"
    path.write_bytes(build_variant(fp16, paths["mlp-32"]))
    on_cpu = dataclasses.replace(fp16, hardware="cpu", max_batch=4)
    limits = ProfileLimits(timeout_s=60, budget_s=0.01, min_runs=3)
    result = profile_in_subprocess(str(path), on_cpu.to_dict(), arch().inputs, validation, limits)
    fp32 = profile_in_subprocess(paths["mlp-32"], dataclasses.replace(on_cpu, format="fp32").to_dict(), arch().inputs,
                                 validation, limits)
    assert set(result["latency_ms"]) == {"1", "2", "4"}
    assert result["accuracy"] is not None and abs(result["accuracy"] - fp32["accuracy"]) <= 0.01
    assert fp32["accuracy"] > 0.9


# ------------------------------------------------------------------ routing by hardware type
def worker(wid: str, hardware: str, runtimes: tuple[str, ...], state: str = "up") -> Worker:
    return Worker(id=wid, hardware=hardware, url=f"http://127.0.0.1/{wid}", state=state, runtimes=runtimes)


def test_runtimes_each_build_job_needs():
    assert build_runtimes("cpu") == (CPU,)
    assert build_runtimes("gpu") == (CUDA, TRT)
    assert build_runtimes("inferentia") == ("neuron",)
    assert missing_runtimes("gpu", (CPU,)) == build_runtimes("gpu")
    assert missing_runtimes("gpu", (CPU, CUDA)) == (TRT,)
    assert missing_runtimes("gpu", (CPU, CUDA, TRT)) == ()


def test_this_machine_probes_as_cpu_only():
    assert probe_runtimes("cpu") == (CPU,)
    assert probe_runtimes("gpu") == (CPU,)  # declared gpu, no CUDA here: it must not take gpu build jobs
    assert probe_runtimes("inferentia") == (CPU,)


def test_waiting_reason_says_why_a_pending_variant_waits():
    v = generation_plan(arch(), "gpu")[0]
    assert waiting_reason(v, []) == "no worker of hardware type gpu is up"
    assert waiting_reason(v, [worker("cpu-1", "cpu", (CPU,))]) == "no worker of hardware type gpu is up"
    assert waiting_reason(v, [worker("gpu-1", "gpu", (CPU,)), worker("cpu-1", "cpu", (CPU,))]) == (
        "workers of type gpu lack CUDAExecutionProvider, TensorrtExecutionProvider: gpu-1")
    two = [worker("gpu-2", "gpu", (CPU, CUDA)), worker("gpu-1", "gpu", (CPU,)), worker("gpu-3", "gpu", (CPU,))]
    assert waiting_reason(v, two) == ("workers of type gpu lack CUDAExecutionProvider, TensorrtExecutionProvider: "
                                      "gpu-1, gpu-3; workers of type gpu lack TensorrtExecutionProvider: gpu-2")
    assert waiting_reason(v, [worker("gpu-1", "gpu", (CPU, CUDA, TRT), state=WORKER_DRAINING)]) == (
        "no worker of hardware type gpu is up")
    assert waiting_reason(v, [worker("gpu-1", "gpu", (CPU, TRT, CUDA))]) is None  # queued for a capable worker
    assert waiting_reason(v, [worker("gpu-old", "gpu", ())]) is None  # a worker from before runtimes were reported
    assert waiting_reason(dataclasses.replace(v, status=READY), []) is None
    neuron = generation_plan(arch(), "inferentia")[0]
    assert waiting_reason(neuron, [worker("inf-1", "inferentia", (CPU,))]) == "workers of type inferentia lack neuron: inf-1"


def test_can_run_needs_the_hardware_type_and_the_runtime():
    gpu_v = generation_plan(arch(), "gpu")[0]
    trt_v = generation_plan(arch(), "gpu")[2]
    assert can_run(worker("gpu-1", "gpu", (CPU, CUDA)), gpu_v)
    assert not can_run(worker("gpu-1", "gpu", (CPU, CUDA)), trt_v)
    assert not can_run(worker("gpu-1", "gpu", (CPU,)), gpu_v)
    assert not can_run(worker("cpu-1", "cpu", (CPU, CUDA, TRT)), gpu_v)
    assert can_run(worker("gpu-old", "gpu", ()), trt_v)


def test_worker_record_carries_runtimes_and_reads_old_records():
    w = worker("gpu-1", "gpu", (CPU,))
    d = w.to_dict()
    assert d["runtimes"] == [CPU]
    assert Worker.from_dict(d) == w
    del d["runtimes"]  # written by a worker from before this field
    assert Worker.from_dict(d).runtimes == ()


# ------------------------------------------------------------------ the device check, dry
def test_device_check_dry_run_on_a_small_model(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "device_check.py"), "--dry-run", "--model", "squeezenet",
         "--batch-sizes", "1,2", "--min-runs", "3", "--budget-s", "0.01", "--agreement-rows", "8",
         "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "DRY RUN" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and "---" not in line}
    assert rows["CPU fp32 (onnxruntime, 1 thread)"].count("/") == 2  # p50 / p99 at b1 and b2
    assert rows["CPU fp32 (onnxruntime, 1 thread)"].rstrip(" |").endswith("1.0000")  # fp32 agrees with itself
    assert "not run (dry run: no GPU)" in rows["CUDA fp16 (onnxruntime)"]
    assert "not run (dry run: no GPU)" in rows["TensorRT fp16 (engine b1-2)"]
    stand_in = rows["CPU fp16 (dry-run stand-in for CUDA fp16)"]
    assert float(stand_in.rstrip(" |").rsplit("|", 1)[1]) >= 0.5
    assert "gpu: onnx-fp32:gpu:b32, onnx-fp16:gpu:b32, tensorrt-fp16:gpu:b1" in out
    half = onnx.load(str(tmp_path / "squeezenet_onnx-fp16_gpu_b32.onnx"))
    onnx.checker.check_model(half, full_check=True)


def test_the_quantiser_says_nothing_in_the_services_log(trained):
    """onnxruntime's quantiser logs through the root logger (a warning per call, lines per tensor):
    the int8 build drops its records and warnings for the call and leaves the root logger as it was."""
    import logging
    import warnings

    from infaas.runtime.generate import _dynamic_int8

    paths, _validation, _data = trained
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root = logging.getLogger()
    handler, level = Keep(), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    filters = list(root.filters)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            int8 = _dynamic_int8(paths["mlp-32"])
            logging.getLogger("test-quantiser-neighbour").info("after the quantiser")  # not infaas.*: Powertools may own those here
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert int8 and onnx.load_from_string(int8).graph.node
    assert [r.getMessage() for r in seen] == ["after the quantiser"]  # ours still gets through
    assert not caught, [str(w.message) for w in caught]
    assert root.filters == filters
