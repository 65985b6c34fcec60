"""Sub-second bursts: the meters a replica and the selector keep, the clump capacity of a variant,
and the scaling policy's answer to clumps -- on a fake clock (times are passed in)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fakes import HARDWARE, make_profile, make_variant, make_worker

from infaas.core.burst import PeakMeter, Unserved, clump_capacity
from infaas.core.domain import Objective, Query, ReplicaLoad
from infaas.core.scaling import (
    PolicyState,
    ScalingParams,
    Snapshot,
    control_period,
    plan,
)
from infaas.core.selection import Catalogue, Cluster, select
from infaas.sim import data

TASK = "classification/digits"


def test_the_meter_keeps_the_busiest_window_of_its_span_and_then_forgets_it():
    m = PeakMeter(window_s=0.1, span_s=2.0)
    for k in range(30):  # one row every 10 ms for 300 ms: 10 in any 100 ms window
        m.add(10.0 + k * 0.01)
    m.add(11.0, rows=4)
    assert m.peak(11.0) == 10
    for k in range(25):  # a clump: 25 rows within 24 ms
        m.add(12.0 + k * 0.001)
    assert m.peak(12.1) == 25
    assert m.peak(13.5) == 25  # within the span
    assert m.peak(14.2) == 0  # 2 s later: forgotten


def test_clump_capacity_counts_whole_batches_that_end_within_the_objective():
    # p99 5 ms at 1, 12 ms at 8: within 100 ms, 8 batches of 8 (96 ms) = 64 rows beat 20 batches of 1
    v = make_variant("m", profile=make_profile({1: (4.0, 5.0), 8: (10.0, 12.0)}), max_batch=8)
    assert clump_capacity(v, 100.0) == 64
    assert clump_capacity(v, 11.0) == 2  # only batches of 1 end in time: 2 of them
    assert clump_capacity(dataclasses.replace(v, max_batch=1), 100.0) == 20  # its batch cap is 1


def test_unserved_counts_refused_rows_per_variant_and_starts_over_at_each_take():
    u = Unserved(start=100.0)
    for k in range(40):
        u.add("v1", 100.5 + k * 0.001)
    u.add("v2", 101.0, rows=3)
    got = u.take(102.0)
    assert got == {"v1": (pytest.approx(20.0), 40), "v2": (pytest.approx(1.5), 3)}
    assert u.take(104.0) == {}


# -- the scaling policy ------------------------------------------------------------------------------
def _slot(arch, acc, p50_by_batch):
    prof = make_profile({b: (p, p) for b, p in p50_by_batch.items()}, peak_memory_bytes=2 << 30)
    return make_variant(arch, accuracy=acc, profile=prof, max_batch=max(p50_by_batch), task=TASK)


BIG = _slot("big", 1.00, {1: 50.0})  # 6 rows in 300 ms at once (6 batches of 1)
SMALL = _slot("small", 0.80, {1: 10.0, 8: 20.0})  # 15 batches of 8 = 120 rows in 300 ms
VARIANTS = {BIG.id: BIG, SMALL.id: SMALL}
PINNED = ScalingParams(min_workers={"cpu": 4}, max_workers={"cpu": 4}, fill_fleet_ms=300.0, period_s=2.0)


def _fleet(peak_rows: int, rate: float = 4.0, held=BIG):
    """4 workers each holding ``held``, serving ``rate`` rows/s each; the busiest sub-second window
    of the last seconds held ``peak_rows`` rows on each."""
    return tuple(make_worker(f"w{i}", replicas=[ReplicaLoad(held.id, rate_rps=rate, peak_rows=peak_rows,
                                                            memory_bytes=2 << 30)], memory_used_bytes=2 << 30)
                 for i in range(4))


def _held(result):
    out = {}
    for vids in result.assignments.values():
        for vid in vids:
            out[vid] = out.get(vid, 0) + 1
    return out


def test_a_pinned_fleet_without_clumps_serves_everything_with_the_accurate_variant():
    result, _ = control_period(Snapshot(10.0, _fleet(peak_rows=1), VARIANTS, HARDWARE, {"cpu": 4}, PINNED), PolicyState(), {})
    assert _held(result) == {BIG.id: 4}


def test_a_recurring_clump_brings_fast_fallback_replicas_beside_the_accurate_ones_and_one_clump_does_not():
    # 16 rows/s on average (4 big replicas carry them), but 32 rows arrived within 100 ms on the
    # fleet's replicas: big answers 6 such rows per replica in time (24 in all), small 120
    result, state = control_period(Snapshot(10.0, _fleet(peak_rows=8), VARIANTS, HARDWARE, {"cpu": 4}, PINNED),
                                   PolicyState(), {})
    # once: the fleet is sized for the clump that recurs (1.5x the typical, still small) or half the
    # busiest (16 rows), which the 4 big replicas answer -- one clump does not cost every row accuracy
    assert _held(result) == {BIG.id: 4}
    assert state.burst_rows[BIG.id] > 0 and state.peak_rps[TASK] > 16.0
    for k in range(1, 31):  # the same clump every period for a minute: the typical clump grows
        snap = Snapshot(10.0 + 2 * k, _fleet(peak_rows=8), VARIANTS, HARDWARE, {"cpu": 4}, PINNED)
        result, state = control_period(snap, state, result.assignments)
    held = _held(result)
    assert held.get(SMALL.id, 0) >= 1 and held.get(BIG.id, 0) >= 1  # both: accurate for the mean, fast for clumps
    # the same periods without the policy's burst sizing keep the accurate variant only
    off = dataclasses.replace(PINNED, size_for_bursts=False)
    result, state = control_period(Snapshot(10.0, _fleet(peak_rows=8), VARIANTS, HARDWARE, {"cpu": 4}, off),
                                   PolicyState(), {})
    for k in range(1, 31):
        snap = Snapshot(10.0 + 2 * k, _fleet(peak_rows=8), VARIANTS, HARDWARE, {"cpu": 4}, off)
        result, state = control_period(snap, state, result.assignments)
    assert _held(result) == {BIG.id: 4}


def test_the_typical_clump_fades_with_its_half_life_when_clumps_stop():
    _, state = plan(Snapshot(10.0, _fleet(peak_rows=8), VARIANTS, HARDWARE, {"cpu": 4}, PINNED), PolicyState(), {})
    first = state.burst_rows[BIG.id]
    for k in range(1, 16):  # 30 s (one half-life) of periods with no clump
        _, state = plan(Snapshot(10.0 + 2 * k, _fleet(peak_rows=0), VARIANTS, HARDWARE, {"cpu": 4}, PINNED), state, {})
    assert state.burst_rows[BIG.id] == pytest.approx(first * 0.5, rel=1e-6)


def test_cloud_replicas_are_sized_for_the_typical_clump_and_for_what_was_turned_away():
    v = make_variant("m", profile=make_profile({1: (4.0, 5.0), 8: (10.0, 12.0)}), max_batch=8, task=TASK)  # 25 batches of 8 in 300 ms: 200 rows
    params = ScalingParams(min_workers={"cpu": 1}, max_workers={"cpu": 10}, latency_ms=300.0, burst_halflife_s=2.0)
    w = make_worker("w0", replicas=[ReplicaLoad(v.id, rate_rps=10.0, peak_rows=0)])
    calm, _ = plan(Snapshot(10.0, (w,), {v.id: v}, HARDWARE, {"cpu": 1}, params), PolicyState(), {})
    assert calm.desired_workers["cpu"] == 1
    # a clump of 1000 rows in 100 ms on its one replica: the typical clump (half of it after one
    # period of a 2 s half-life) needs ceil(500 / 200) = 3 replicas, one per worker
    w = make_worker("w0", replicas=[ReplicaLoad(v.id, rate_rps=10.0, peak_rows=1000)])
    clumpy, state = plan(Snapshot(10.0, (w,), {v.id: v}, HARDWARE, {"cpu": 1}, params), PolicyState(), {})
    assert state.burst_rows[v.id] == pytest.approx(500.0)
    assert clumpy.desired_workers["cpu"] == 3
    # the same clump refused by the selector instead of queued (no replica saw it): the same answer
    w = make_worker("w0", replicas=[ReplicaLoad(v.id, rate_rps=10.0, peak_rows=0)])
    snap = Snapshot(10.0, (w,), {v.id: v}, HARDWARE, {"cpu": 1}, params, unserved={v.id: (0.0, 1000)})
    refused, _ = plan(snap, PolicyState(), {})
    assert refused.desired_workers["cpu"] == 3


def test_in_a_clump_the_selector_fills_the_accurate_replicas_then_the_fallbacks_within_the_floor():
    free = {"cpu": dataclasses.replace(HARDWARE["cpu"], price_per_hour=0.0)}  # a fleet paid for up front
    mid = _slot("mid", 0.90, {1: 10.0, 8: 20.0})
    ws = [make_worker("w0", replicas=[ReplicaLoad(BIG.id)]), make_worker("w1", replicas=[ReplicaLoad(mid.id)]),
          make_worker("w2", replicas=[ReplicaLoad(SMALL.id)])]
    cat = Catalogue.build([BIG, mid, SMALL], free)
    queued = {w.id: 0 for w in ws}
    chosen = []
    for _ in range(60):  # 60 rows at once, each routed on the queues the earlier ones left
        cur = [dataclasses.replace(w, replicas=(dataclasses.replace(w.replicas[0], queued_rows=queued[w.id]),)) for w in ws]
        d = select(Query(rows=1, task=TASK, objective=Objective(latency_ms=300.0, min_accuracy=0.85)), cat,
                   Cluster.build(cur, free, catalogue=cat))
        queued[d.worker] += 1
        chosen.append(d.variant)
    assert chosen[:6] == [BIG.id] * 6  # the accurate replica until its queue would answer late
    assert SMALL.id not in chosen  # below the floor, never
    assert chosen.count(mid.id) == 54 and chosen.count(BIG.id) == 6


def test_a_burst_workload_keeps_each_seconds_total_and_bunches_it():
    base = data.synthetic_workload({TASK: 200.0}, 20.0, seed=3)
    bursty = data.burst_workload(base, 12.0, seed=3)
    per_s = lambda w: np.bincount((w.arrival_ms // 1000).astype(int), minlength=20)  # noqa: E731
    assert np.array_equal(per_s(base), per_s(bursty))
    assert data.burstiness(bursty)["gap_cv"] > 4 * data.burstiness(base)["gap_cv"]
    assert data.burstiness(bursty)["peak"] > 3 * data.burstiness(base)["peak"]
    assert bursty.name.endswith("-cv12") and np.array_equal(data.burst_workload(base, 12.0, seed=3).arrival_ms, bursty.arrival_ms)
