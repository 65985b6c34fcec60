"""Shared test helpers: a clock you move by hand, and builders of domain records.

Import as ``from fakes import ...`` (``tests/`` is on ``sys.path`` because
``tests/conftest.py`` lives there).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from infaas.core.domain import (
    READY,
    WORKER_UP,
    Architecture,
    HardwareType,
    Profile,
    ReplicaLoad,
    TensorSpec,
    Variant,
    Worker,
)

# Prices chosen so cost arithmetic is easy: cpu is $0.001 per second.
HARDWARE = {
    "cpu": HardwareType("cpu", price_per_hour=3.6),
    "gpu": HardwareType("gpu", price_per_hour=36.0),
}


class FakeClock:
    """A callable returning epoch seconds that only moves when told to.

    ``on_advance`` callbacks (given the new time) let an adapter that keeps its
    own notion of time (a mocked cloud service) follow the fake clock.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = float(start)
        self.on_advance: list[Callable[[float], None]] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        assert seconds >= 0, "time does not go backwards"
        self.now += seconds
        for callback in self.on_advance:
            callback(self.now)
        return self.now


def make_profile(
    latencies: Mapping[int, tuple[float, float]],
    load_ms: float = 50.0,
    hardware: str = "cpu",
    peak_memory_bytes: int = 10 << 20,
) -> Profile:
    """``latencies`` maps batch size to (p50, p99) milliseconds."""
    return Profile(
        hardware=hardware,
        latency_ms={int(b): (float(p50), float(p99)) for b, (p50, p99) in latencies.items()},
        load_ms=float(load_ms),
        peak_memory_bytes=peak_memory_bytes,
    )


def make_variant(
    arch: str,
    fmt: str = "fp32",
    hardware: str = "cpu",
    accuracy: float | None = 0.9,
    profile: Profile | None = None,
    task: str = "classification/digits",
    tenant: str = "local",
    visibility: str = "private",
    status: str = READY,
    max_batch: int = 32,
    runtime: str = "onnxruntime",
) -> Variant:
    """A variant; without ``profile`` it gets one with p99 = 2 ms at batch 1, 10 ms at 32."""
    if profile is None:
        profile = make_profile({1: (1.0, 2.0), 32: (8.0, 10.0)}, hardware=hardware)
    return Variant(
        architecture=arch,
        format=fmt,
        runtime=runtime,
        hardware=hardware,
        max_batch=max_batch,
        task=task,
        tenant=tenant,
        visibility=visibility,
        status=status,
        model_key=f"variants/{arch}/{fmt}/{hardware}/model.onnx",
        accuracy=accuracy,
        accuracy_measured=accuracy is not None,
        profile=profile,
    )


def make_worker(
    id: str,
    hardware: str = "cpu",
    replicas: Iterable[ReplicaLoad | str | Variant] = (),
    state: str = WORKER_UP,
    heartbeat_at: float = 0.0,
    memory_budget_bytes: int = 2 << 30,
    memory_used_bytes: int = 0,
) -> Worker:
    """A worker; ``replicas`` may be ReplicaLoads, variant ids or variants (idle, empty queue)."""
    loads = []
    for r in replicas:
        if isinstance(r, Variant):
            r = r.id
        loads.append(r if isinstance(r, ReplicaLoad) else ReplicaLoad(variant_id=r))
    return Worker(
        id=id,
        hardware=hardware,
        url=f"http://{id}.test:8001",
        state=state,
        memory_budget_bytes=memory_budget_bytes,
        memory_used_bytes=memory_used_bytes,
        replicas=tuple(loads),
        heartbeat_at=heartbeat_at,
    )


def make_architecture(
    name: str,
    task: str = "classification/digits",
    tenant: str = "local",
    accuracy: float = 0.9,
    sha256: str = "0" * 64,
    visibility: str = "private",
) -> Architecture:
    return Architecture(
        name=name,
        tenant=tenant,
        task=task,
        accuracy=accuracy,
        sha256=sha256,
        model_key=f"models/{tenant}/{name}/model.onnx",
        inputs=(TensorSpec("input", "float32", (-1, 64)),),
        outputs=(TensorSpec("probabilities", "float32", (-1, 10)),),
        visibility=visibility,
        created_at=1.5,
        size_bytes=1234,
    )


def memory_growing_model(path) -> None:
    """An ONNX model whose allocation grows with an input value: ConstantOfShape(max(x)), summed
    and added to x (input and output ``x``/``y``, float32, shape [N, 1])."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Cast", ["m"], ["mi"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["mi", "one"], ["shape"]),
             helper.make_node("ConstantOfShape", ["shape"], ["big"],
                              value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])),
             helper.make_node("ReduceSum", ["big"], ["s"], keepdims=1),
             helper.make_node("Add", ["x", "s"], ["y"])]
    graph = helper.make_graph(nodes, "grow", [x], [y], initializer=[helper.make_tensor("one", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def slow_model(path) -> None:
    """An ONNX model whose run time grows with an input value and whose memory does not: a Loop
    of max(x) trips adding one each time (input ``x`` [N, 1], output ``y`` = x + max(x))."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["acc_in", "one_f"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [])],
        initializer=[helper.make_tensor("one_f", TensorProto.FLOAT, [], [1.0])])
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Cast", ["m"], ["trips"], to=TensorProto.INT64),
             helper.make_node("Loop", ["trips", "true", "zero"], ["count"], body=body),
             helper.make_node("Add", ["x", "count"], ["y"])]
    graph = helper.make_graph(nodes, "slow", [x], [y], initializer=[
        helper.make_tensor("true", TensorProto.BOOL, [], [True]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def tiling_model(path) -> None:
    """An ONNX model whose output grows with an input value: y = Tile(x, [1, max(x)])
    (input ``x`` [N, 1] float32)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K"])
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Cast", ["m"], ["k"], to=TensorProto.INT64),
             helper.make_node("Reshape", ["k", "one"], ["k1"]),
             helper.make_node("Concat", ["one", "k1"], ["reps"], axis=0),
             helper.make_node("Tile", ["x", "reps"], ["y"])]
    graph = helper.make_graph(nodes, "tile", [x], [y], initializer=[helper.make_tensor("one", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def npz_bomb(unpacked_mib: int) -> bytes:
    """An .npz whose one float32 array of 64 columns unpacks to ``unpacked_mib`` MiB of zeros,
    about a thousandth of that packed (its zip directory says the unpacked size)."""
    import io
    import zipfile

    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("inputs.npy", "w", force_zip64=True) as f:
            header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1), np.float32))
            header["shape"] = ((unpacked_mib << 20) // 256, 64)
            np.lib.format.write_array_header_1_0(f, header)
            chunk = bytes(1 << 20)
            for _ in range(unpacked_mib):
                f.write(chunk)
    return buf.getvalue()
