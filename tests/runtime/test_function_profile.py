"""Profiling a variant as a Lambda function (``runtime/function_profile.py``) on real models: a child
held to a quarter of a CPU is slower than one that is not (orderings of medians, no timing
thresholds), the cold start is measured apart from the warm latency, and the build job of a
``lambda`` variant on a cpu worker records the chosen memory size, its latency and its cold start."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from infaas.app.build import build_lane, log_key, run_build_job
from infaas.app.control import ControlPlane
from infaas.cli import digits
from infaas.core import tier
from infaas.core.calibration import NoisePolicy
from infaas.core.domain import PENDING, READY, TensorSpec, Worker
from infaas.core.settings import Settings
from infaas.runtime.function_profile import (
    DEFAULT_MEMORY_MB,
    CpuGroup,
    FunctionLimits,
    measure_function,
    profile_function,
)
from infaas.runtime.generate import PLANS, generation_plan
from infaas.runtime.hardware import build_host, build_runtimes, can_run, waiting_reason
from infaas.runtime.profile import ProfileLimits
from infaas.wiring.local import LocalAdapters

CPU = "CPUExecutionProvider"
N = 384
HEAVY_SPECS = [TensorSpec("x", "float32", (-1, N, N))]
DIGITS_SPECS = [TensorSpec("X", "float32", (-1, 64))]
QUICK = FunctionLimits(budget_s=0.2, min_runs=5, timeout_s=120)


@pytest.fixture(scope="module")
def heavy(tmp_path_factory) -> str:
    """Eight 384x384 MatMul + Tanh layers on a 384x384 input: a run takes milliseconds of CPU, longer
    than the share of a 10 ms period a quarter CPU gets, so the limit shows in the median."""
    rng = np.random.default_rng(0)
    nodes, inits, cur = [], [], "x"
    for i in range(8):
        inits.append(numpy_helper.from_array((rng.standard_normal((N, N)) / np.sqrt(N)).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]), helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        cur = f"t{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(nodes, "heavy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", N, N])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", N, N])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path_factory.mktemp("heavy") / "heavy.onnx")
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory) -> tuple[str, bytes]:
    (trained,) = digits.train(str(tmp_path_factory.mktemp("digits")), names=["mlp-32"])
    with open(trained.path, "rb") as f:
        return trained.path, f.read()


def cgroup_here() -> str | None:
    group = CpuGroup.create(0.25)
    if group is None:
        return None
    group.close()
    return group.limiter


@pytest.mark.parametrize("limiter", ["duty-cycle", "auto"])
def test_a_child_held_to_a_quarter_cpu_is_slower(heavy, limiter):
    limits = dataclasses.replace(QUICK, limiter=limiter)
    held = measure_function(heavy, HEAVY_SPECS, 1, share=0.25, limits=limits)
    free = measure_function(heavy, HEAVY_SPECS, 1, share=1.0, limits=limits)
    print(f"\n{held.limiter}: p50 at 0.25 CPU {held.latency_ms[1][0]:.2f} ms, at 1.0 CPU {free.latency_ms[1][0]:.2f} ms")
    assert free.limiter == "none"  # a full CPU with one thread: nothing to hold back
    assert held.limiter == (cgroup_here() or "duty-cycle" if limiter == "auto" else "duty-cycle")
    assert held.threads == free.threads == 1
    assert held.latency_ms[1][0] > free.latency_ms[1][0]


def test_the_cgroup_limiter_is_used_where_one_can_be_made_and_refused_elsewhere(heavy):
    limits = dataclasses.replace(QUICK, limiter="cgroup", min_runs=3, budget_s=0.05)
    if cgroup_here():
        assert measure_function(heavy, HEAVY_SPECS, 1, share=0.5, limits=limits).limiter == cgroup_here()
    else:
        from infaas.core.errors import ProfilingFailed

        with pytest.raises(ProfilingFailed, match="no cgroup"):
            measure_function(heavy, HEAVY_SPECS, 1, share=0.5, limits=limits)


def test_digits_as_a_function_at_two_memory_sizes(digits_model):
    path, _ = digits_model
    lines: list[str] = []
    found = profile_function(path, DIGITS_SPECS, 8, memory_sizes=(1769, 512), limits=QUICK, log=lines.append)
    assert [p.memory_mb for p in found.profiles] == [512, 1769]
    for p in found.profiles:
        m = found.measurements[p.memory_mb]
        assert sorted(p.latency_ms) == [1, 2, 4, 8]
        assert all(0 < p50 <= p99 for p50, p99 in p.latency_ms.values())
        # the cold start: the child's start to its first answer plus the S3 download term, apart from warm runs
        assert m.start_ms > 0 and m.import_ms > 0 and m.load_ms > 0 and m.first_run_ms > 0
        assert p.cold_start_ms == pytest.approx(m.start_ms + found.download_ms)
        assert found.download_ms == pytest.approx(tier.download_ms(len(digits_model[1])))
        assert m.threads == 1 and m.maxrss_bytes > 0
        print(f"\n{p.memory_mb} MB ({m.limiter}): warm p50 at b1 {p.latency_ms[1][0]:.4f} ms, "
              f"cold start {p.cold_start_ms:.1f} ms")
    assert found.chosen in found.profiles
    assert found.chosen == tier.choose_memory(found.profiles, 2.0 * min(p.latency_at(1) for p in found.profiles))
    assert any(line.startswith("function profile at 512 MB") for line in lines)
    assert any(line.startswith("chosen: ") for line in lines)


def test_a_memory_size_smaller_than_the_process_is_left_out(tmp_path):
    """A model of 77 MB of weights: interpreter, onnxruntime and the session's copy of the weights take
    more than 128 MB, so the function would run out of memory at that size."""
    w = numpy_helper.from_array(np.full((64, 300_000), 0.001, np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["X", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 300_000])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "big.onnx"))
    found = profile_function(str(tmp_path / "big.onnx"), DIGITS_SPECS, 1, memory_sizes=(128,),
                             limits=dataclasses.replace(QUICK, budget_s=0.05, min_runs=3))
    assert found.profiles == () and found.chosen is None and "peak memory" in found.left_out[128]
    assert found.measurements[128].maxrss_bytes > 128 * 2**20


# -- the hardware type -------------------------------------------------------------------------------
def test_lambda_variants_are_built_on_cpu_workers_and_loaded_by_none():
    assert tier.HARDWARE in PLANS and build_host("lambda") == "cpu" and build_lane("lambda") == "build-cpu"
    assert build_runtimes("lambda") == (CPU,)
    arch = dataclasses.replace(_arch(), name="m")
    plan = generation_plan(arch, "lambda")
    assert [(v.format, v.runtime, v.hardware, v.max_batch) for v in plan] == [
        ("fp32", "onnxruntime", "lambda", 8), ("int8", "onnxruntime", "lambda", 8)]
    v = plan[0]
    cpu = Worker("cpu-1", "cpu", "http://x", runtimes=(CPU,))
    assert not can_run(cpu, v) and not can_run(dataclasses.replace(cpu, runtimes=()), v)
    assert not can_run(dataclasses.replace(cpu, hardware="lambda"), v)
    assert v.status == PENDING and waiting_reason(v, []) == "no worker of hardware type cpu is up"
    assert waiting_reason(v, [cpu]) is None  # a cpu worker will take its job
    assert waiting_reason(v, [dataclasses.replace(cpu, runtimes=("neuron",))]) == (
        f"workers of type cpu lack {CPU}: cpu-1")


def _arch():
    from infaas.core.domain import Architecture

    return Architecture(name="m", tenant="local", task=digits.TASK, accuracy=0.97, sha256="ab" * 32,
                        model_key="architectures/m/ab.onnx", inputs=tuple(DIGITS_SPECS),
                        outputs=(TensorSpec("label", "int64", (-1,)), TensorSpec("probabilities", "float32", (-1, 10))))


def test_the_build_job_profiles_lambda_variants_as_functions(tmp_path, digits_model):
    _, data = digits_model
    settings = Settings(data_dir=str(tmp_path / "data"))
    adapters = LocalAdapters(settings)
    ControlPlane(adapters.store, adapters.models, adapters.queue, settings).register(
        name="lr", task=digits.TASK, accuracy=0.95, data=data)
    limits = ProfileLimits(timeout_s=120, budget_s=0.05, min_runs=5, noise=NoisePolicy(busy_ratio=1e9))
    done = run_build_job({"architecture": "lr", "hardware": "lambda"}, adapters.store, adapters.models, limits=limits,
                         cache_dir=str(tmp_path / "cache"), clock=lambda: 1000.0)
    assert [v.hardware for v in done] == ["lambda", "lambda"]
    for v in done:
        assert v.status == READY, v.message
        p = v.profile
        assert p.hardware == "lambda" and p.memory_mb in DEFAULT_MEMORY_MB
        assert sorted(p.latency_ms) == [1, 2, 4, 8] and p.load_ms > 0 and p.spread_ms == {}
        assert v.accuracy is not None and v.accuracy_measured is False and v.agreement is not None
        assert adapters.models.exists(v.model_key) and ":lambda:" in v.id
        stored = adapters.store.get_variant(v.id).profile
        assert stored.memory_mb == p.memory_mb and stored.load_ms == p.load_ms
        fp = tier.function_profile_of(stored)
        assert fp.cold_start_ms == p.load_ms and fp.latency_ms == dict(p.latency_ms)
        text = adapters.models.get(log_key(v)).decode()
        for size in DEFAULT_MEMORY_MB:
            assert f"function profile at {size} MB" in text
        assert f"chosen: {p.memory_mb} MB" in text and f"function memory {p.memory_mb} MB" in text
    # the machines' variants are the cpu ones: the registration's own job, untouched by this one
    cpu = [v for v in adapters.store.variants_of("lr") if v.hardware == "cpu"]
    assert cpu and all(v.status == PENDING for v in cpu)
