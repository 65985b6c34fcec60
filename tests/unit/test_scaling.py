"""The scaling policy, step by step, then over sequences of control periods.

Default test variant: p50 8 ms at batch 32, so one replica serves
32 * 1000 / 8 = 4000 rows/s; at 70 % target utilisation it is planned for
2800 rows/s.
"""

from __future__ import annotations

from fakes import HARDWARE, FakeClock, make_profile, make_variant, make_worker

from infaas.core.domain import ReplicaLoad
from infaas.core.scaling import (
    PolicyState,
    ScalingParams,
    Snapshot,
    apply_hysteresis,
    choose_hardware,
    estimate_demand,
    observed_demand,
    place,
    plan,
    replicas_needed,
    within_budget,
    workers_needed,
)

V = make_variant("mlp")
PARAMS = ScalingParams(period_s=1.0, target_utilisation=0.7, scale_down_periods=3, cooldown_s=5.0,
                       idle_unload_s=20.0, min_workers={"cpu": 1}, max_workers={"cpu": 4}, worker_release_s=3.0)


# -- step 1: demand ------------------------------------------------------------
def test_observed_demand_counts_served_rows_queue_growth_and_backlog():
    w1 = make_worker("w1", replicas=[ReplicaLoad(V.id, queued_rows=10, rate_rps=100.0)])
    w2 = make_worker("w2", replicas=[ReplicaLoad(V.id, queued_rows=0, rate_rps=50.0)])
    # served 100 + 50; queue grew 0 -> 10 rows in 0.5 s: + 20; backlog 10 rows over 10 periods of 0.5 s: + 2
    assert observed_demand((w1, w2), 0.5, {}) == {V.id: 172.0}
    # the same 10 rows still queued next period: no growth, only the backlog term (+ 2)
    assert observed_demand((w1, w2), 0.5, {V.id: 10}) == {V.id: 152.0}


def test_demand_rises_at_once_and_falls_slowly():
    est = estimate_demand({"v": 1000.0}, {}, decay=0.5)
    assert est == {"v": 1000.0}
    est = estimate_demand({"v": 100.0}, est, decay=0.5)
    assert est == {"v": 500.0}  # max(100, 0.5 * 1000)
    est = estimate_demand({"v": 100.0}, est, decay=0.5)
    assert est == {"v": 250.0}  # max(100, 0.5 * 500)
    est = estimate_demand({"v": 100.0}, est, decay=0.5)
    assert est == {"v": 125.0}  # max(100, 0.5 * 250)
    est = estimate_demand({"v": 100.0}, est, decay=0.5)
    assert est == {"v": 100.0}  # max(100, 62.5)


# -- step 2: capacity ------------------------------------------------------------
def test_replicas_needed_from_profiled_throughput():
    assert replicas_needed(V, 0.0, 0.7) == 0
    assert replicas_needed(V, 1.0, 0.7) == 1  # any demand needs one
    assert replicas_needed(V, 2800.0, 0.7) == 1  # 2800 / (4000 * 0.7) = 1.0
    assert replicas_needed(V, 2801.0, 0.7) == 2  # ceil(1.0004)
    assert replicas_needed(V, 10000.0, 0.7) == 4  # ceil(10000 / 2800) = ceil(3.57)


# -- step 3: hysteresis and cool-down ----------------------------------------------
def test_up_at_once_down_after_periods_and_cooldown():
    state = PolicyState(changed_at={"v": 0.0})
    assert apply_hysteresis("v", 1, 3, 1.0, state, PARAMS) == (3, 0, True)  # up immediately
    # down: needs 3 consecutive periods asking for less AND 5 s since the last change
    assert apply_hysteresis("v", 3, 1, 1.0, state, PARAMS) == (3, 1, False)
    state = PolicyState(lower_periods={"v": 1}, changed_at={"v": 0.0})
    assert apply_hysteresis("v", 3, 1, 2.0, state, PARAMS) == (3, 2, False)
    state = PolicyState(lower_periods={"v": 2}, changed_at={"v": 0.0})
    assert apply_hysteresis("v", 3, 1, 3.0, state, PARAMS) == (3, 3, False)  # 3 periods, but 3 s < 5 s cool-down
    state = PolicyState(lower_periods={"v": 3}, changed_at={"v": 0.0})
    assert apply_hysteresis("v", 3, 1, 5.0, state, PARAMS) == (1, 0, True)  # 4 periods and 5 s: down
    # a period asking for the same resets the count
    assert apply_hysteresis("v", 3, 3, 5.0, PolicyState(lower_periods={"v": 2}), PARAMS) == (3, 0, False)


# -- step 4: upgrade / downgrade ---------------------------------------------------
def test_hot_variant_moves_to_cheaper_hardware_and_back():
    cpu = make_variant("big", hardware="cpu", profile=make_profile({1: (10, 12), 32: (320, 330)}))
    # gpu: 32 rows in 4 ms = 8000 rows/s per replica, at 36 $/h
    gpu = make_variant("big", hardware="gpu", profile=make_profile({1: (1, 2), 32: (4, 5)}, hardware="gpu"))
    variants = {cpu.id: cpu, gpu.id: gpu}
    params = ScalingParams(max_workers={"cpu": 100, "gpu": 4})
    # cpu replica: 32 * 1000 / 320 = 100 rows/s, 70 per replica at 0.7
    # 5600 rows/s on cpu: ceil(5600 / 70) = 80 replicas * 3.6 = 288 $/h; on gpu ceil(5600 / 5600) = 1 * 36 = 36 $/h
    assert choose_hardware(cpu, 5600.0, variants, HARDWARE, {"cpu"}, params) == gpu  # 36 * 1.5 = 54 < 288
    # 50 rows/s: cpu 1 replica = 3.6 $/h, gpu 1 replica = 36 $/h: stay (downgrade direction)
    assert choose_hardware(cpu, 50.0, variants, HARDWARE, {"cpu"}, params) == cpu
    assert choose_hardware(gpu, 50.0, variants, HARDWARE, {"cpu", "gpu"}, params) == cpu  # 3.6 * 1.5 < 36
    # no gpu allowed (max 0) and none up: no move
    assert choose_hardware(cpu, 5600.0, variants, HARDWARE, {"cpu"}, ScalingParams(max_workers={"gpu": 0})) == cpu


# -- step 5: placement ---------------------------------------------------------------
def test_placement_keeps_replicas_and_reports_missing_room():
    a, b = make_variant("a"), make_variant("b")
    variants = {a.id: a, b.id: b}
    w1, w2 = make_worker("w1"), make_worker("w2")
    # a: 2 replicas for 5600 rows/s, each 2800 / 4000 = 0.7 of a worker; b: 1 replica, 400 / 4000 = 0.1
    assignments, unplaced = place({a.id: 2, b.id: 1}, variants, {a.id: 5600.0, b.id: 400.0}, (w1, w2),
                                  {"w2": (a.id,)}, 0.7)
    assert assignments["w2"][0] == a.id and a.id in assignments["w1"]  # kept on w2, second on w1
    assert unplaced == {"cpu": 1}  # b (0.1) fits on neither: both are at 0.7
    assignments, unplaced = place({a.id: 2}, variants, {a.id: 5600.0}, (w1,), {}, 0.7)
    assert assignments == {"w1": (a.id,)} and unplaced == {"cpu": 1}  # never two replicas on one worker


def test_new_replicas_go_to_the_busiest_worker_with_room_and_homeless_ones_are_packed():
    """Best fit: a new replica joins the busiest worker that has room (so the
    emptiest can be released); replicas without room are counted in new workers,
    packed the same way, not one worker each."""
    a, b, c = make_variant("a"), make_variant("b"), make_variant("c")
    variants = {x.id: x for x in (a, b, c)}
    w1, w2 = make_worker("w1"), make_worker("w2")
    # a: 2000 rows/s = 0.5 of a worker, on w1; b: 400 rows/s = 0.1 -> w1 (0.5), not the empty w2
    assignments, unplaced = place({a.id: 1, b.id: 1}, variants, {a.id: 2000.0, b.id: 400.0}, (w1, w2), {"w1": (a.id,)}, 0.7)
    assert assignments == {"w1": (a.id, b.id), "w2": ()} and unplaced == {}
    # one worker, full (a at 0.7): b and c (0.1 each) have no room -> one new worker holds both
    assignments, unplaced = place({a.id: 1, b.id: 1, c.id: 1}, variants, {a.id: 2800.0, b.id: 400.0, c.id: 400.0},
                                  (w1,), {"w1": (a.id,)}, 0.7)
    assert assignments == {"w1": (a.id,)} and unplaced == {"cpu": 1}
    # two replicas of one variant never share a worker: 3 replicas of b at 0.1 each need 3 workers
    assignments, unplaced = place({a.id: 1, b.id: 3}, variants, {a.id: 2800.0, b.id: 1200.0}, (w1,), {"w1": (a.id,)}, 0.7)
    assert unplaced == {"cpu": 3}


def test_a_worker_type_shrinks_only_after_worker_release_s():
    """Releasing a machine and starting another soon after costs its start time and minimum
    billing: the count falls only after asking for fewer for ``worker_release_s``."""
    clock = FakeClock(0.0)
    params = ScalingParams(period_s=1.0, scale_down_periods=2, cooldown_s=0.0, worker_release_s=6.0,
                           min_workers={"cpu": 1}, max_workers={"cpu": 4})
    ws = [make_worker("w1", replicas=[ReplicaLoad(V.id, rate_rps=100.0)]), make_worker("w2")]
    state, current, desired, counts = PolicyState(), {}, {"cpu": 2}, []
    for _ in range(8):
        p, state = plan(Snapshot(clock(), tuple(ws), {V.id: V}, HARDWARE, desired, params), state, current)
        current, desired = p.assignments, p.desired_workers
        counts.append(desired["cpu"])
        clock.advance(1)
    # w2 is idle from the start: 6 periods asking for 1 (t = 0..5), released at the 6th
    assert counts == [2, 2, 2, 2, 2, 1, 1, 1], counts


def test_workers_needed_and_budget():
    p = ScalingParams(min_workers={"cpu": 1}, max_workers={"cpu": 4})
    assert workers_needed(live=2, busy=2, unplaced=3, hardware="cpu", params=p) == 4  # 2 + 3 = 5, capped at 4
    assert workers_needed(live=3, busy=1, unplaced=0, hardware="cpu", params=p) == 1  # only the busy one
    assert workers_needed(live=3, busy=0, unplaced=0, hardware="cpu", params=p) == 1  # never below min
    # budget 40 $/h: 2 gpu (72) + 3 cpu (10.8) = 82.8 -> drop gpus first: 1 gpu + 3 cpu = 46.8 -> 0 gpu = 10.8
    assert within_budget({"cpu": 3, "gpu": 2}, HARDWARE, 40.0) == {"cpu": 3, "gpu": 0}
    assert within_budget({"cpu": 3, "gpu": 2}, HARDWARE, None) == {"cpu": 3, "gpu": 2}
    # never below the minimum: at most one gpu must stay, so cpus go
    assert within_budget({"cpu": 3, "gpu": 2}, HARDWARE, 40.0, {"gpu": 1}) == {"cpu": 1, "gpu": 1}
    # with the demand planned per type: a gpu worker serving 6000 rows/s (6000 / 36 = 167 rows/s per $)
    # is worth more than a cpu worker serving 100 (100 / 3.6 = 28): cpus go first
    assert within_budget({"cpu": 3, "gpu": 1}, HARDWARE, 40.0, {}, {"cpu": 300.0, "gpu": 6000.0}) == {"cpu": 1, "gpu": 1}


# -- the whole policy over control periods -------------------------------------------
def _run(clock, workers, state, current, desired, params=PARAMS):
    snap = Snapshot(clock(), tuple(workers), {V.id: V}, HARDWARE, desired, params)
    return plan(snap, state, current)


def test_ramp_adds_replicas_then_workers_and_removes_them_after():
    clock = FakeClock(0.0)
    state, current, desired = PolicyState(), {}, {"cpu": 1}
    w1 = make_worker("w1", replicas=[ReplicaLoad(V.id, rate_rps=1000.0)])
    # period 1: 1000 rows/s -> ceil(1000 / 2800) = 1 replica, on w1; 1 worker is enough
    p1, state = _run(clock, [w1], state, current, desired)
    assert p1.assignments == {"w1": (V.id,)} and p1.desired_workers == {"cpu": 1}
    current, desired = p1.assignments, p1.desired_workers

    # period 2: 7000 rows/s -> ceil(7000 / 2800) = 3 replicas; w1 holds one, 2 need new workers
    clock.advance(1)
    w1 = make_worker("w1", replicas=[ReplicaLoad(V.id, rate_rps=7000.0)])
    p2, state = _run(clock, [w1], state, current, desired)
    assert state.replicas == {V.id: 3}
    assert p2.desired_workers == {"cpu": 3}  # 1 live + 2 unplaced
    assert any("replicas of" in r for r in p2.reasons) and any("cpu workers: 1 -> 3" in r for r in p2.reasons)
    desired = p2.desired_workers

    # period 3: the two new workers are up; the replicas spread over all three
    clock.advance(1)
    ws = [make_worker(f"w{i}", replicas=[ReplicaLoad(V.id, rate_rps=7000.0 / 3)] if i == 1 else []) for i in (1, 2, 3)]
    p3, state = _run(clock, ws, state, p2.assignments, desired)
    assert sorted(p3.assignments) == ["w1", "w2", "w3"] and all(p3.assignments[w] == (V.id,) for w in p3.assignments)
    current = p3.assignments

    # load falls to 500 rows/s; the estimate decays 0.8 per period:
    # 7000 -> 5600 (period 3, w1 alone reported) -> 4480 -> 3584 -> 2867 -> 2294 -> ...
    loads = []
    for _ in range(12):
        clock.advance(1)
        ws = [make_worker(f"w{i}", replicas=[ReplicaLoad(V.id, rate_rps=500.0 / 3)]) for i in (1, 2, 3)
              if f"w{i}" in current]
        pn, state = _run(clock, ws, state, current, desired)
        loads.append((round(state.demand_rps[V.id]), state.replicas[V.id], pn.desired_workers["cpu"], pn.drain))
        current, desired = pn.assignments, pn.desired_workers
    # replicas come down only after 3 periods asking for less and 5 s of cool-down, then workers follow
    assert loads[0][:2] == (4480, 3)  # max(500, 0.8 * 5600)
    assert [r for _, r, _, _ in loads][-1] == 1
    assert desired == {"cpu": 1}
    drained = [d for *_, d in loads if d]
    assert drained, loads  # the emptied workers were drained, not just forgotten
    assert len(current) == 1 and list(current.values()) == [(V.id,)]


def test_idle_variant_keeps_one_replica_until_idle_unload():
    clock = FakeClock(0.0)
    w1 = make_worker("w1", replicas=[ReplicaLoad(V.id, rate_rps=100.0)])
    p, state = _run(clock, [w1], PolicyState(), {}, {"cpu": 1})
    current = p.assignments
    w1 = make_worker("w1", replicas=[ReplicaLoad(V.id, rate_rps=0.0)])
    held = []
    for _ in range(40):
        clock.advance(1)
        p, state = _run(clock, [w1], state, current, {"cpu": 1})
        current = p.assignments
        held.append(bool(current.get("w1")))
    # last request at t=0; from t=20 (idle_unload_s) the policy asks for 0 replicas:
    # t=20, 21, 22 are the 3 periods asking for less, so the replica goes at t=22 (index 21)
    assert held.index(False) == 21, held
    assert not any(held[21:])


def test_placement_changes_are_listed_for_the_event_log():
    from infaas.app.autoscaler import placement_changes

    before = {"w1": ("a", "b"), "w2": ("a",)}
    after = {"w1": ("a",), "w2": ("a", "c"), "w3": ("b",)}
    assert placement_changes(before, after) == [
        "unassign b from w1", "assign c to w2", "assign b to w3",
    ]


def test_demand_comes_out_in_one_order_whatever_order_it_came_in():
    """Sums over the estimate (demand per task in a pinned fleet) depend on the order they add in,
    to the last bit; an order taken from a set of strings would change with the interpreter's hash
    seed and so would the plans. The estimate's order is the variants' sorted ids."""
    rates = {"c:onnx-fp32:cpu:b8": 0.1, "a:onnx-fp32:cpu:b8": 0.2, "b:onnx-fp32:cpu:b8": 0.3, "d:onnx-fp32:cpu:b8": 1e-17}
    forward = estimate_demand(rates, {"e:onnx-fp32:cpu:b8": 5.0}, decay=0.5)
    backward = estimate_demand(dict(reversed(list(rates.items()))), {"e:onnx-fp32:cpu:b8": 5.0}, decay=0.5)
    assert list(forward) == list(backward) == sorted(forward)
    assert "d:onnx-fp32:cpu:b8" not in forward  # below 0.01 rows/s: dropped
    assert sum(forward.values()) == sum(backward.values())
