"""Policy changes the simulator led to (selection.py, scaling.py), the baseline policies, the MILP
lower bound and the data mapping. Arithmetic beside each assertion.

Prices (``fakes.HARDWARE``): cpu $3.6/h = $0.001/s.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fakes import HARDWARE, make_profile, make_variant, make_worker

from infaas.core.domain import HardwareType, Objective, Query, ReplicaLoad
from infaas.core.scaling import (
    PolicyState,
    ScalingParams,
    Snapshot,
    choose_hardware,
    fill_fleet,
    plan,
    switch_drains,
)
from infaas.core.selection import Catalogue, Cluster, backlog_ms, select
from infaas.sim import data
from infaas.sim.engine import ClusterSpec, Simulator, VariantInfo
from infaas.sim.metrics import evaluate
from infaas.sim.policies.clipper import Clipper
from infaas.sim.policies.infaas import INFaaS
from infaas.sim.policies.optimum import lower_bound
from infaas.sim.policies.static import Static

TASK = "classification/digits"
P = make_profile({1: (4.0, 5.0), 8: (10.0, 12.0)}, load_ms=50)  # p99: 5 ms at 1, 12 ms at 8
A = make_variant("a", accuracy=0.90, profile=P, max_batch=8, visibility="shared")
B = make_variant("b", accuracy=0.95, profile=P, max_batch=8, visibility="shared")


def q(**objective) -> Query:
    return Query(rows=1, task=TASK, objective=Objective(**objective), tenant="t")


# -- selection ---------------------------------------------------------------------------------------------
def test_backlog_of_other_replicas_on_the_worker_counts_in_the_prediction():
    # w1 holds a (idle) and b with 16 rows queued: ceil(16 / 8) = 2 batches * p99(8) 12 ms = 24 ms run first
    w1 = make_worker("w1", replicas=[ReplicaLoad(A.id, queued_rows=0), ReplicaLoad(B.id, queued_rows=16)])
    assert backlog_ms(w1, {A.id: A, B.id: B}) == 24.0
    d = select(Query(rows=1, variant=A.id, tenant="t"), Catalogue.build([A, B]), Cluster.build([w1], HARDWARE))
    assert d.predicted_latency_ms == 5.0 + 24.0  # its own batch (p99(1) = 5) behind the worker's backlog
    # with a 20 ms objective the replica no longer meets it: the idle worker w2 gets a cold start instead
    w2 = make_worker("w2")
    d = select(Query(rows=1, variant=A.id, tenant="t", objective=Objective(latency_ms=20.0)),
               Catalogue.build([A, B]), Cluster.build([w1, w2], HARDWARE))
    assert (d.worker, d.loaded) == ("w2", False)


def test_equal_cost_goes_to_the_more_accurate_variant():
    free = {"cpu": HardwareType("cpu", 0.0)}  # a fleet paid for up front: every option costs 0
    w = make_worker("w1", replicas=[ReplicaLoad(A.id), ReplicaLoad(B.id)])
    d = select(q(latency_ms=100.0), Catalogue.build([A, B]), Cluster.build([w], free))
    assert d.variant == B.id  # 0.95 beats 0.90 at equal cost (and equal latency)


def test_a_cold_start_never_evicts_a_busy_or_recently_used_replica():
    # the worker's memory holds exactly one model
    full = lambda used: make_worker("w1", memory_budget_bytes=10 << 20, memory_used_bytes=10 << 20,  # noqa: E731
                                    replicas=[ReplicaLoad(A.id, queued_rows=used[0], memory_bytes=10 << 20, last_used=used[1])])
    cat = Catalogue.build([A, B])
    query = Query(rows=1, variant=B.id, tenant="t", objective=Objective(latency_ms=100.0))
    # busy (3 rows queued): no room -> no worker can take it (422, not a doomed load)
    with pytest.raises(Exception):
        select(query, cat, Cluster.build([dataclasses.replace(full((3, 0.0)), heartbeat_at=100.0)], HARDWARE))
    # idle but used 2 s ago: still warm, not evicted
    with pytest.raises(Exception):
        select(query, cat, Cluster.build([dataclasses.replace(full((0, 98.0)), heartbeat_at=100.0)], HARDWARE))
    # idle for 30 s: evicted for the cold start
    d = select(query, cat, Cluster.build([dataclasses.replace(full((0, 70.0)), heartbeat_at=100.0)], HARDWARE))
    assert (d.variant, d.worker, d.loaded) == (B.id, "w1", False)


# -- scaling -----------------------------------------------------------------------------------------------
def test_hardware_moves_keep_to_the_latency_objective():
    cpu = make_variant("big", hardware="cpu", profile=make_profile({1: (10, 12), 32: (320, 330)}))
    gpu = make_variant("big", hardware="gpu", profile=make_profile({1: (100, 120), 32: (140, 150)}, hardware="gpu"))
    variants = {cpu.id: cpu, gpu.id: gpu}
    # 5600 rows/s: cpu 80 replicas * 3.6 = 288 $/h, gpu 25 * 36 = 900: no move anyway; make gpu cheap
    hw = {"cpu": HARDWARE["cpu"], "gpu": HardwareType("gpu", 3.6)}
    assert choose_hardware(cpu, 5600.0, variants, hw, {"cpu"}, ScalingParams(max_workers={"gpu": 4})) == gpu
    # gpu's batch-1 p99 (120 ms) breaks a 50 ms objective: the selector could never use it -> no move
    assert choose_hardware(cpu, 5600.0, variants, hw, {"cpu"}, ScalingParams(max_workers={"gpu": 4}, latency_ms=50.0)) == cpu


def _slot_variant(arch, acc, p50_by_batch, task=TASK):
    """A variant that takes a whole worker (peak memory = the worker budget, as in the fixed-cluster mode)."""
    prof = make_profile({b: (p, p) for b, p in p50_by_batch.items()}, peak_memory_bytes=2 << 30)
    return make_variant(arch, accuracy=acc, profile=prof, max_batch=max(p50_by_batch), task=task)


BIG = _slot_variant("big", 1.00, {1: 50.0})  # 20 rows/s per worker, 14 at 70 %
SMALL = _slot_variant("small", 0.80, {1: 10.0, 8: 40.0})  # 8 rows in 40 ms: 200 rows/s, 140 at 70 %
FLEET = tuple(make_worker(f"w{i}") for i in range(4))


def test_fill_fleet_serves_with_the_most_accurate_variant_when_it_fits():
    out, short = fill_fleet({TASK: 20.0}, {BIG.id: BIG, SMALL.id: SMALL}, FLEET, 300.0, 0.7)
    # 20 rows/s need ceil(20 / 14) = 2 workers of big; the other 2 workers carry more big (headroom)
    assert out == {BIG.id: 4} and short == {}


def test_fill_fleet_trades_accuracy_for_room_when_demand_rises():
    out, short = fill_fleet({TASK: 200.0}, {BIG.id: BIG, SMALL.id: SMALL}, FLEET, 300.0, 0.7)
    # 4 workers of big carry 56 rows/s only; small carries 140 each: 1 small + 3 big = 182 < 200,
    # 2 small + 2 big = 308 >= 200: the 200 rows/s are served, the first 28 of them by big
    assert short == {} and out == {SMALL.id: 2, BIG.id: 2}


def test_fill_fleet_keeps_what_runs_for_a_small_gain():
    # demand 10 rows/s: 3 small + 1 big running serve it all on big (14 >= 10) already
    out, _ = fill_fleet({TASK: 10.0}, {BIG.id: BIG, SMALL.id: SMALL}, FLEET, 300.0, 0.7,
                        current={SMALL.id: 3, BIG.id: 1})
    assert out == {SMALL.id: 3, BIG.id: 1}  # nothing to gain by moving: nothing moves


def test_fill_fleet_leaves_no_task_with_demand_without_a_replica():
    # 600 rows/s of one task would take every worker (140 rows/s each); a second task's 1 row/s
    # delivers less than any of them. Without a replica all of its queries would be refused until
    # the next plan: it takes the place of the replica whose loss delivers least less
    other = "classification/other"
    rare = _slot_variant("rare", 0.90, {1: 10.0, 8: 40.0}, task=other)
    out, short = fill_fleet({TASK: 600.0, other: 1.0}, {BIG.id: BIG, SMALL.id: SMALL, rare.id: rare}, FLEET, 300.0, 0.7)
    assert out.get(rare.id) == 1 and out.get(SMALL.id) == 3 and other not in short
    # the same from a fleet that runs four replicas of the busy task now
    out, _ = fill_fleet({TASK: 600.0, other: 1.0}, {BIG.id: BIG, SMALL.id: SMALL, rare.id: rare}, FLEET, 300.0, 0.7,
                        current={SMALL.id: 4})
    assert out.get(rare.id) == 1


def test_fill_fleet_never_uses_a_variant_that_cannot_batch_within_the_objective():
    slow = _slot_variant("slow", 0.99, {1: 200.0})  # 2 * 200 > 300
    out, _ = fill_fleet({TASK: 5.0}, {slow.id: slow, SMALL.id: SMALL}, FLEET, 300.0, 0.7)
    assert slow.id not in out


def test_a_pinned_fleet_is_filled_and_a_busy_stale_replica_is_switched_by_draining():
    params = ScalingParams(min_workers={"cpu": 4}, max_workers={"cpu": 4}, fill_fleet_ms=300.0, period_s=1.0)
    # all 4 workers hold small; w3 is busy. Demand: 4 * 2.5 served + 4 rows queued in 1 s + 4 / 10 backlog = 14.4 rows/s
    ws = [make_worker(f"w{i}", replicas=[ReplicaLoad(SMALL.id, rate_rps=2.5, queued_rows=4 if i == 3 else 0,
                                                     memory_bytes=2 << 30)], memory_used_bytes=2 << 30) for i in range(4)]
    snap = Snapshot(10.0, tuple(ws), {BIG.id: BIG, SMALL.id: SMALL}, HARDWARE, {"cpu": 4}, params)
    result, state = plan(snap, PolicyState(), {w.id: (SMALL.id,) for w in ws})
    # 2 big (2 * 14 = 28 >= 14.4) serve everything at accuracy 1.0; the 2 spare workers keep small (headroom
    # that needs no switch); placement keeps small where it is (w0, w1), big goes to w2 and w3
    assert state.replicas == {BIG.id: 2, SMALL.id: 2}
    assert result.assignments["w2"] == (BIG.id,) and result.desired_workers == {"cpu": 4}
    assert result.drain == ("w3",)  # busy with a variant no longer assigned, no memory beside it: drained
    assert state.peak_rps[TASK] == pytest.approx(14.4)  # the peak the fleet keeps room for
    assert switch_drains(tuple(ws), {**result.assignments, "w3": (BIG.id,)}, {BIG.id: BIG, SMALL.id: SMALL},
                         {"cpu"}) == ["w3"]


def test_a_tasks_last_replica_is_not_drained_to_switch_it():
    """Make before break: the fleet switches a task's only replica to a faster variant of the same
    task, on the same worker. The replica is busy, so the switch would drain the worker -- and every
    query of the task would be refused until the worker is back and has loaded the new variant. The
    worker keeps what it runs instead; the switch is made once the replica is idle."""
    other = "classification/other"
    slow = _slot_variant("ob", 1.00, {1: 50.0}, task=other)  # 14 rows/s at 70 %
    fast = _slot_variant("os", 0.80, {1: 10.0, 8: 40.0}, task=other)  # 140 rows/s at 70 %
    variants = {v.id: v for v in (SMALL, slow, fast)}
    params = ScalingParams(min_workers={"cpu": 2}, max_workers={"cpu": 2}, fill_fleet_ms=300.0, period_s=1.0)
    busy = make_worker("w0", replicas=[ReplicaLoad(slow.id, rate_rps=14.0, queued_rows=60, memory_bytes=2 << 30)],
                       memory_used_bytes=2 << 30)
    w1 = make_worker("w1", replicas=[ReplicaLoad(SMALL.id, rate_rps=1.0, memory_bytes=2 << 30)], memory_used_bytes=2 << 30)
    current = {"w0": (slow.id,), "w1": (SMALL.id,)}
    result, state = plan(Snapshot(10.0, (busy, w1), variants, HARDWARE, {"cpu": 2}, params), PolicyState(), current)
    # 14 + 60 queued rows/s of the other task: the fleet wants the fast variant for it, in w0's place ...
    assert state.replicas == {fast.id: 1, SMALL.id: 1}
    # ... but w0 holds the task's only replica, busy: it is kept, not drained
    assert result.drain == () and result.assignments["w0"] == (slow.id,)
    assert any(r.startswith("keep w0") for r in result.reasons)
    # once the replica is idle at a plan, the switch is made in place (no drain: nothing queued is lost)
    idle = make_worker("w0", replicas=[ReplicaLoad(slow.id, rate_rps=14.0, memory_bytes=2 << 30)], memory_used_bytes=2 << 30)
    after, _ = plan(Snapshot(11.0, (idle, w1), variants, HARDWARE, {"cpu": 2}, params), state, result.assignments)
    assert after.drain == () and after.assignments["w0"] == (fast.id,)
    # busy at every plan, it waits keep_last_s (10 s) at most: then the worker is drained after all
    assignments, waited = result.assignments, []
    for t in range(11, 30):
        result, state = plan(Snapshot(float(t), (busy, w1), variants, HARDWARE, {"cpu": 2}, params), state, assignments)
        assignments = {**assignments, **result.assignments}
        waited.append(result.drain)
    assert waited[:9] == [()] * 9 and waited[9] == ("w0",)  # kept from t = 10 to 19, drained at t = 20
    # a busy replica of a variant that is no longer ready (deleted) neither breaks the plan nor is kept
    gone = make_worker("w0", replicas=[ReplicaLoad("deleted:onnx-fp32:cpu:b8", queued_rows=5, memory_bytes=2 << 30),
                                       ReplicaLoad(slow.id, queued_rows=60, memory_bytes=2 << 30)], memory_used_bytes=4 << 30)
    result, _ = plan(Snapshot(40.0, (gone, w1), variants, HARDWARE, {"cpu": 2}, params), PolicyState(), current)
    assert "deleted:onnx-fp32:cpu:b8" not in result.assignments.get("w0", ())


# -- baselines, bound, data -------------------------------------------------------------------------------------
SPEC = ClusterSpec(hardware={"cpu": HardwareType("cpu", 3.6)}, start_s={"cpu": 1.0}, memory_bytes={"cpu": 4 << 30},
                   jitter=False)


@pytest.mark.parametrize("policy", [Clipper(), Static(), Static(sizing="peak"),
                                    INFaaS(initial={"cpu": 1}, max_workers={"cpu": 4})])
def test_baselines_serve_a_small_trace(policy):
    w = data.synthetic_workload({TASK: 100.0}, 6.0, seed=5)
    sim = Simulator(w, [A, B], policy, SPEC).run()
    res = evaluate(sim, policy.name)[0]
    assert res.requests == len(w) and res.violation_rate < 0.5 and res.cost > 0


def test_clipper_sizes_for_the_mean_and_adapts_its_batch():
    w = data.synthetic_workload({TASK: 300.0}, 6.0, seed=6)
    p = Clipper()
    Simulator(w, [A, B], p, SPEC).run()
    reps = p.by_task[TASK]
    # one variant (b is as cheap and more accurate... both cost the same per row: cheapest by id -> a);
    # mean 300 rows/s / (8 rows per 10 ms = 800 rows/s) -> 1 replica at 100 % utilisation
    assert len(reps) == 1 and reps[0].cap > 1  # AIMD grew the batch limit from 1


def test_lower_bound_milp_by_hand():
    cpu = make_variant("m", hardware="cpu", accuracy=0.9, visibility="shared",
                       profile=make_profile({1: (20.0, 20.0)}), max_batch=1)  # 50 rows/s per machine
    gpu = make_variant("m", hardware="gpu", accuracy=0.9, visibility="shared",
                       profile=make_profile({1: (2.5, 2.5)}, hardware="gpu"), max_batch=1)  # 400 rows/s
    infos = [VariantInfo(v, k) for k, v in enumerate([cpu, gpu])]
    prices = {"cpu": 1.0, "gpu": 5.0}
    w = data.explicit_workload([(i * 10.0, TASK) for i in range(1000)])  # 100 rows/s for 10 s
    lb = lower_bound(w, infos, prices, window_s=10.0)
    # 100 rows/s: 2 cpu ($2/h) beat 1 gpu ($5/h); 10 s of $2/h
    assert lb.cost == pytest.approx(2.0 * 10 / 3600) and lb.machines == {"cpu": [2], "gpu": [0]}
    w = data.explicit_workload([(i * 10 / 3.0, TASK) for i in range(3000)])  # 300 rows/s
    lb = lower_bound(w, infos, prices, window_s=10.0)
    assert lb.machines == {"cpu": [0], "gpu": [1]}  # 6 cpu ($6/h) cost more than 1 gpu ($5/h)


# The next tests read a small data set in the Proteus layout (``proteus_dir``, tests/proteus_data.py).


def test_proteus_profiles_map_to_priced_hardware_types(proteus_dir):
    import proteus_data as pd

    vs = data.proteus_variants()
    assert {v.hardware for v in vs} == {"cpu", "gpu-pascal", "gpu-ampere"}
    models = {m for ms in pd.FAMILIES.values() for m in ms}
    assert {v.architecture for v in vs} == {data.arch_name(m) for m in models}  # not-in-a-family is left out
    assert {v.task for v in vs} == {data.task_id(f) for f in pd.FAMILIES}
    r50 = next(v for v in vs if v.architecture == "resnet50_v1" and v.hardware == "cpu")
    cpu = "onnxruntime_cpu"
    assert r50.profile.latency_ms[1] == pytest.approx((pd.p50("resnet50_v1", cpu, 1), pd.p90("resnet50_v1", cpu, 1)))
    # the largest batch with 2 * p90(b) <= 300 ms
    fitting = [b for b in pd.BATCHES[:-1] if 2 * pd.p90("resnet50_v1", cpu, b) <= 300.0]
    assert r50.max_batch == max(fitting) == 2
    # a blank 90th_pct takes the accelerator's median p90 / p50 ratio
    m025 = next(v for v in vs if v.architecture == "mobilenet0.25" and v.hardware == "cpu")
    assert m025.profile.latency_ms[16][1] == pytest.approx(pd.p50("mobilenet0.25", cpu, 16) * 1.05, rel=1e-3)
    assert r50.accuracy == pytest.approx(0.977, abs=1e-4)
    assert r50.profile.load_ms == pytest.approx(300 + 25.6e6 * 4 / 250e3, abs=1)  # 300 ms + 102 MB at 250 MB/s
    fixed = data.proteus_variants(fixed_cluster=True, max_batch=8)
    assert {v.hardware for v in fixed} == {"cpu", "vpu", "gpu-pascal", "gpu-ampere"}
    assert max(v.max_batch for v in fixed) <= 8


def test_proteus_traces_with_tenants_and_warmup(proteus_dir):
    import proteus_data as pd

    w = data.proteus_workload(pd.WORKLOAD, seed=1)
    assert len(w) == pd.trace_length(proteus_dir) and len(w.tasks) == 3 and set(w.latency_ms.tolist()) == {300.0}
    shares = [float((w.tenant == k).mean()) for k in range(3)]
    assert shares == pytest.approx([0.4, 0.3, 0.3], abs=0.03)
    head = w.head(30.0)
    warm = head.with_warmup(10.0, seed=1)
    assert warm.t0_ms == 10_000.0 and warm.duration_s == pytest.approx(head.duration_s)
    # the warm-up is not the trace's own start: synthetic, at each task's mean rate, before it
    prefix, rest = warm.arrival_ms[:warm.warmup], warm.arrival_ms[warm.warmup:]
    assert (prefix < 10_000).all() and np.array_equal(rest, head.arrival_ms + 10_000)
    assert not np.isin(prefix, head.arrival_ms[head.arrival_ms < 10_000]).all()
    for k in range(len(w.tasks)):
        expected = (head.task == k).sum() / head.duration_s * 10
        assert (warm.task[:warm.warmup] == k).sum() == pytest.approx(expected, rel=0.25, abs=5)
    assert warm.with_warmup(0) is warm and head.with_warmup(10.0, seed=1).arrival_ms.tolist() == warm.arrival_ms.tolist()


def test_refusing_late_queries_keeps_the_rest_on_time_under_a_budget():
    """A budget that holds one machine (800 rows/s: 8 rows per 10 ms) and twice that offered:
    queued late, the queue grows and most miss 300 ms (the batcher answers the rows still in
    time first, ``batching.next_batch``, but fewer and fewer are);
    refused when every replica would answer late (``refuse_late``), about half are refused
    and the rest are on time -- at the same cost."""
    from infaas.sim.policies.ours import Ours

    w = data.synthetic_workload({TASK: 1600.0}, 6.0, seed=7)
    params = ScalingParams(min_workers={"cpu": 1}, max_workers={"cpu": 4}, budget_per_hour=3.6, latency_ms=300.0)
    out = {}
    for refuse in (False, True):
        sim = Simulator(w, [A], Ours(params, refuse_late=refuse), SPEC).run()
        out[refuse] = evaluate(sim, "ours")[0]
    late, refusing = out[False], out[True]
    assert late.violation_rate > 0.7, late.violation_rate
    assert refusing.violation_rate < 0.6 and refusing.refused > 0, (refusing.violation_rate, late.violation_rate)
    assert refusing.cost == pytest.approx(late.cost)  # one machine either way
