"""The noise policy end to end on a real model, without timing thresholds: the machine is made
to look busy deterministically by keeping a quiet calibration time no real run can reach (the
host's fastest time is the reference, so nothing measured can lower it), and the build job's
answer to that (defer, send the job again, finally take the figures flagged) is checked on a
real store and queue. Also the re-profile job and a replica's served-latency estimate."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from infaas.app.build import MAX_DEFERRALS, build_lane, queue_reprofile, run_build_job
from infaas.app.control import ControlPlane, describe_variant
from infaas.cli import digits
from infaas.core.calibration import NoisePolicy
from infaas.core.domain import PENDING, READY, SKIPPED, Profile
from infaas.core.settings import Settings
from infaas.runtime.executor import load_executor
from infaas.runtime.profile import (
    KERNEL,
    ProfileDeferred,
    ProfileLimits,
    profile_in_subprocess,
)
from infaas.wiring.local import LocalAdapters
from infaas.worker.replicas import Replica

LIMITS = ProfileLimits(timeout_s=120, budget_s=0.03, min_runs=6)
# every round quiet whatever else runs on the machine (time spent preempted included): for the tests
# of what a quiet build records, which must not depend on how busy the machine running them is
QUIET = ProfileLimits(timeout_s=120, budget_s=0.03, min_runs=6, noise=NoisePolicy(busy_ratio=1e9))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("digits"))
    (trained,) = digits.train(out, names=["mlp-32"])
    with open(trained.path, "rb") as f:
        return f.read()


def plant_quiet_time(path: str, quiet_ms: float) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"kernel": KERNEL, "quiet_ms": quiet_ms}, f)


@pytest.fixture
def stack(tmp_path, model):
    settings = Settings(data_dir=str(tmp_path / "data"))
    adapters = LocalAdapters(settings)
    control = ControlPlane(adapters.store, adapters.models, adapters.queue, settings)
    control.register(name="lr", task=digits.TASK, accuracy=0.95, data=model)
    received = adapters.queue.receive(build_lane("cpu"))
    assert received is not None
    return adapters, received[1], str(tmp_path / "cache")


def test_a_busy_machine_gives_a_busy_verdict_and_deferred_profiles_say_why(stack):
    adapters, _, cache = stack
    cal = os.path.join(cache, "calibration.json")
    plant_quiet_time(cal, 0.001)  # the kernel takes milliseconds: every round looks thousands of times slower
    v = adapters.store.variants_of("lr")[0]
    path = adapters.models.local_path(adapters.store.get_architecture("lr").model_key)
    result = profile_in_subprocess(path, v.to_dict(), adapters.store.get_architecture("lr").inputs, None, LIMITS,
                                   calibration_file=cal)
    assert result["busy"] and result["rounds"] == LIMITS.noise.max_rounds  # repeated up to the bound
    assert result["busy_reason"].startswith("machine busy (calibration ") and "times its quiet time)" in result[
        "busy_reason"]
    assert set(result["spread_ms"]) == set(result["latency_ms"])
    assert all(lo <= hi for lo, hi in result["spread_ms"].values())
    with pytest.raises(ProfileDeferred) as caught:
        profile_in_subprocess(path, v.to_dict(), adapters.store.get_architecture("lr").inputs, None, LIMITS,
                              calibration_file=cal, defer_busy=True)
    assert caught.value.message == f"deferred: {caught.value.reason}" and caught.value.result["busy"]
    with open(cal) as f:
        assert json.load(f)["quiet_ms"] == 0.001  # the fastest time seen is kept, never raised


def test_the_build_job_defers_then_sends_itself_again_then_takes_the_figures_flagged(stack):
    adapters, body, cache = stack
    plant_quiet_time(os.path.join(cache, "calibration.json"), 0.001)
    store, queue = adapters.store, adapters.queue
    now = [1000.0]
    waited: list[float] = []
    done = run_build_job(body, store, adapters.models, limits=LIMITS, cache_dir=cache, queue=queue,
                         clock=lambda: now[0], sleep=waited.append)
    assert [v.status for v in done] == [PENDING] * len(done)  # the first deferred, the rest wait with it
    assert all(v.message.startswith("deferred: machine busy (calibration ") and v.message.endswith(
        "retried in 15 s") for v in done)
    again = queue.receive(build_lane("cpu"))
    assert again is not None
    assert again[1] == {**body, "deferrals": 1, "not_before": 1015.0}
    assert waited == []
    # the next delivery waits for not_before, then defers again with a longer wait
    done = run_build_job(again[1], store, adapters.models, limits=LIMITS, cache_dir=cache, queue=queue,
                         clock=lambda: now[0], sleep=waited.append)
    assert waited == [15.0] and all(v.message.endswith("retried in 30 s") for v in done)
    last = queue.receive(build_lane("cpu"))
    assert last is not None and last[1]["deferrals"] == 2
    # after MAX_DEFERRALS the quietest figures are taken, flagged, and visible in the catalogue
    final = {**body, "deferrals": MAX_DEFERRALS}
    done = run_build_job(final, store, adapters.models, limits=LIMITS, cache_dir=cache, queue=queue,
                         clock=lambda: now[0], sleep=waited.append)
    assert [v.status for v in done] == [READY] * len(done)
    for v in done:
        assert v.profile is not None and v.profile.busy and v.profile.rounds == LIMITS.noise.max_rounds
        assert v.message.startswith(f"profiled on a busy machine after {MAX_DEFERRALS} deferrals (machine busy")
        shown = describe_variant(store.get_variant(v.id))["profile"]
        assert shown["busy"] is True and shown["noise"] > 1.5 and set(shown["spread_ms"]) == set(shown["latency_ms"])
    assert queue.receive(build_lane("cpu")) is None  # nothing sent again


def test_a_quiet_build_is_ready_with_its_spread_and_a_re_profile_replaces_only_the_figures(stack):
    adapters, body, cache = stack
    store, queue = adapters.store, adapters.queue
    plant_quiet_time(os.path.join(cache, "calibration.json"), 1e9)  # as if every round were quiet
    done = run_build_job(body, store, adapters.models, limits=QUIET, cache_dir=cache, queue=queue, clock=lambda: 1000.0)
    assert all(v.status == READY and not v.profile.busy and v.profile.rounds == QUIET.noise.quiet_rounds
               and v.message == "" for v in done)
    v = done[0]
    assert not queue_reprofile(store, queue, v.id, measured_at=999.0, reason="stale")  # another profile by now
    assert queue.receive(build_lane("cpu")) is None
    assert queue_reprofile(store, queue, v.id, measured_at=1000.0, reason="served 5x the profile")
    assert store.get_variant(v.id).message == "re-profile queued: served 5x the profile"
    job = queue.receive(build_lane("cpu"))
    assert job is not None and job[1]["reprofile"] == {v.id: 1000.0}
    after = run_build_job(job[1], store, adapters.models, limits=QUIET, cache_dir=cache, queue=queue,
                          clock=lambda: 2000.0)
    got = {x.id: x for x in after}[v.id]
    assert got.status == READY and got.profile.measured_at == 2000.0 and got.message == "re-profiled (served 5x the profile)"
    assert (got.model_key, got.accuracy) == (v.model_key, v.accuracy)
    others = [x for x in after if x.id != v.id]
    assert all(x.profile.measured_at == 1000.0 for x in others)  # only the one asked for
    # the same job delivered twice (two workers asked): the second finds a newer profile and leaves it
    again = run_build_job(job[1], store, adapters.models, limits=QUIET, cache_dir=cache, queue=queue,
                          clock=lambda: 3000.0)
    assert {x.id: x for x in again}[v.id].profile.measured_at == 2000.0


def test_a_replica_reports_its_served_run_time_against_the_profile_per_batch_size(stack):
    adapters, body, cache = stack
    plant_quiet_time(os.path.join(cache, "calibration.json"), 1e9)
    (v, *_) = run_build_job(body, adapters.store, adapters.models, limits=LIMITS, cache_dir=cache)
    # a profile ten times faster than the truth at every batch size
    fast = dataclasses.replace(v, profile=Profile(
        "cpu", {b: (p50 / 10, p99 / 10) for b, (p50, p99) in v.profile.latency_ms.items()}, 1.0, 1 << 20))
    ex = load_executor(fast, adapters.models.local_path(v.model_key))
    feed = {"X": digits.split().x_val[:3].astype("float32")}

    async def serve() -> Replica:
        replica = Replica(fast, ex, 1 << 20, ThreadPoolExecutor(1))
        replica.start()
        try:
            for _ in range(40):
                await replica.infer(feed, 3, None)
        finally:
            await replica.stop()
        return replica

    replica = asyncio.run(serve())
    report = replica.load_report(1.0, 0).served_ms
    assert list(report) == ["4"]  # 3 rows: the profiled batch of 4 holds them
    observed, profiled, batches = report["4"]
    assert batches == 40
    assert profiled == pytest.approx(fast.profile.latency_at(3, "p50"), rel=1e-3)
    assert observed > profiled  # the real run takes longer than a profile ten times too fast



def test_a_variant_no_worker_could_load_is_skipped_saying_why(tmp_path):
    """A profiled peak memory above the building worker's replica memory: no worker of that type could
    load it, so it is skipped with the figures (not ready, then refused as "objective unreachable").
    A real model whose answer is 1 MiB a row (a Tile), 32 MiB at its batch of 32, above anything
    the profiling process holds before it loads the model; a replica memory of 64 MiB."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    reps = numpy_helper.from_array(np.array([1, 4096], np.int64), "reps")
    graph = helper.make_graph([helper.make_node("Tile", ["x", "reps"], ["y"])], "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64 * 4096])], [reps])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    settings = Settings(data_dir=str(tmp_path / "data"), build_hardware="cpu")
    adapters = LocalAdapters(settings)
    control = ControlPlane(adapters.store, adapters.models, adapters.queue, settings)
    control.register(name="wide", task="t/wide", accuracy=0.5, data=model.SerializeToString())
    _, body = adapters.queue.receive(build_lane("cpu"))
    cache = str(tmp_path / "cache")
    plant_quiet_time(os.path.join(cache, "calibration.json"), 1e9)
    budget = 64 << 20
    done = {v.id: v for v in run_build_job(body, adapters.store, adapters.models, limits=QUIET, cache_dir=cache,
                                           queue=adapters.queue, clock=lambda: 1000.0, memory_budget_bytes=budget)}
    fp32 = done["wide:onnx-fp32:cpu:b32"]
    assert fp32.status == SKIPPED, (fp32.status, fp32.message, fp32.profile)
    assert f"over a cpu worker's replica memory of {budget:,}" in fp32.message and "no worker could load it" in fp32.message
    assert all(v.status == SKIPPED for v in done.values()), [(v.id, v.status, v.message) for v in done.values()]
