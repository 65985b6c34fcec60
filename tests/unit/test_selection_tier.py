"""The serverless tier in ``selection.select``: chosen only when no machine replica answers in time,
with the cold start in its prediction, within the floor, the cost cap and the concurrency limit.
Time is passed in (``Cluster.now``): a fake clock."""

from __future__ import annotations

import dataclasses

import pytest
from fakes import HARDWARE, make_profile, make_variant, make_worker

from infaas.core import tier
from infaas.core.domain import Objective, Query, ReplicaLoad
from infaas.core.errors import Unavailable
from infaas.core.selection import FUNCTION_TIER, Catalogue, Cluster, select

DIGITS = "classification/digits"
COLD_MS = 300.0

MACHINE = make_variant("mlp", fmt="fp32", accuracy=0.95, profile=make_profile({1: (4.0, 5.0), 8: (10.0, 12.0)}))


def function_variant(arch: str = "mlp", accuracy: float = 0.95, p99_ms: float = 8.0, memory_mb: int = 1024):
    profile = dataclasses.replace(make_profile({1: (p99_ms * 0.8, p99_ms), 8: (p99_ms * 3, p99_ms * 4)},
                                               load_ms=COLD_MS, hardware=tier.HARDWARE), memory_mb=memory_mb)
    return make_variant(arch, hardware=tier.HARDWARE, accuracy=accuracy, profile=profile, max_batch=8)


FN = function_variant()


def decide(query, variants, workers, state: tier.TierState | None, now: float = 1000.0):
    cat = Catalogue.build(variants, HARDWARE)
    return select(query, cat, Cluster.build(workers, HARDWARE, catalogue=cat, tier=state, now=now))


def q(latency_ms=None, min_accuracy=None, max_cost=None, rows=1) -> Query:
    return Query(rows=rows, task=DIGITS, objective=Objective(min_accuracy=min_accuracy, latency_ms=latency_ms, max_cost=max_cost))


def warm(state: tier.TierState, vid: str, at: float) -> tier.TierState:
    state, _ = tier.acquire(state, vid, at)
    return tier.release(state, vid, at)


def test_without_the_tier_a_fleet_at_zero_is_unavailable_and_a_function_variant_is_never_chosen():
    with pytest.raises(Unavailable):
        decide(q(latency_ms=1000), [MACHINE, FN], [], None)


def test_a_fleet_at_zero_is_answered_by_the_tier_cold_first_then_warm():
    state = tier.TierState()
    d = decide(q(latency_ms=1000), [MACHINE, FN], [], state, now=1000.0)
    assert d.worker == tier.HARDWARE and d.variant == FN.id and not d.loaded
    assert d.displaced == ""  # no machine to take it from
    assert d.predicted_latency_ms == pytest.approx(8.0 + COLD_MS)  # warm p99 plus the cold start
    assert "cold start" in d.reason
    cold_cost = d.cost_per_query
    state = warm(state, FN.id, 1000.0)
    d = decide(q(latency_ms=1000), [MACHINE, FN], [], state, now=1010.0)
    assert d.loaded and d.predicted_latency_ms == pytest.approx(8.0)
    assert d.cost_per_query < cold_cost  # the cold start's duration is billed too
    # an environment idle past keep_warm_s is gone: cold again
    d = decide(q(latency_ms=1000), [MACHINE, FN], [], state, now=1000.0 + state.keep_warm_s + 1)
    assert not d.loaded


def test_a_loaded_machine_replica_that_meets_the_objective_wins_over_the_tier():
    w = make_worker("w1", replicas=[MACHINE])
    state = warm(tier.TierState(), FN.id, 1000.0)
    d = decide(q(latency_ms=100), [MACHINE, FN], [w], state)
    assert d.worker == "w1" and d.variant == MACHINE.id and d.displaced == ""


def test_a_burst_past_the_replicas_goes_to_the_tier_when_it_answers_in_time():
    busy = make_worker("w1", replicas=[ReplicaLoad(MACHINE.id, queued_rows=200)])  # 25 batches of 12 ms
    state = warm(tier.TierState(), FN.id, 1000.0)
    d = decide(q(latency_ms=100), [MACHINE, FN], [busy], state)
    assert d.worker == tier.HARDWARE and d.loaded
    # the machine variant it would have queued on is named: its demand, as a refusal's would be
    assert d.displaced == MACHINE.id and "displaced" not in d.to_dict()
    # a cold tier cannot answer within 100 ms: the query waits on the machine (tier 4), late
    d = decide(q(latency_ms=100), [MACHINE, FN], [busy], tier.TierState())
    assert d.worker == "w1" and "over capacity" in d.reason


def test_the_tier_keeps_to_the_accuracy_floor_the_cost_cap_and_the_concurrency_limit():
    low = function_variant("tiny", accuracy=0.80, p99_ms=2.0, memory_mb=512)
    state = warm(warm(tier.TierState(), FN.id, 1000.0), low.id, 1000.0)
    assert decide(q(latency_ms=1000), [FN, low], [], state).variant == low.id  # cheaper
    assert decide(q(latency_ms=1000, min_accuracy=0.9), [FN, low], [], state).variant == FN.id
    fn_cost = decide(q(latency_ms=1000, min_accuracy=0.9), [FN, low], [], state).cost_per_query
    with pytest.raises(Unavailable):
        decide(q(latency_ms=1000, min_accuracy=0.9, max_cost=fn_cost / 2), [FN, low], [], state)
    full = tier.TierState(concurrency=1)
    full, _ = tier.acquire(full, low.id, 1000.0)  # the one invocation allowed is running
    with pytest.raises(Unavailable):
        decide(q(latency_ms=1000), [FN, low], [], full)


def test_a_query_of_many_rows_runs_as_several_invocations_of_the_largest_batch():
    state = warm(tier.TierState(), FN.id, 1000.0)
    one = decide(q(latency_ms=1000, rows=8), [FN], [], state)
    two = decide(q(latency_ms=1000, rows=16), [FN], [], state)
    assert one.batch == two.batch == 8
    assert two.predicted_latency_ms == pytest.approx(2 * one.predicted_latency_ms)
    assert FUNCTION_TIER not in (1, 2, 3, 4)


def test_after_an_idle_hour_a_fleet_at_zero_answers_by_a_cold_invocation_late_rather_than_not_at_all():
    # 100 ms objective, a 300 ms cold start: nothing answers in time; the tier answers in the
    # objective's worth of warm run plus its cold start, and leaves a warm environment behind
    state = warm(tier.TierState(), FN.id, 1000.0)
    d = decide(q(latency_ms=100), [MACHINE, FN], [], state, now=1000.0 + 3600.0)
    assert d.worker == tier.HARDWARE and not d.loaded
    assert d.predicted_latency_ms == pytest.approx(8.0 + COLD_MS) and d.predicted_latency_ms <= 100 + COLD_MS


def test_under_refuse_late_a_cold_invocation_is_preferred_to_a_refusal():
    busy = make_worker("w1", replicas=[ReplicaLoad(MACHINE.id, queued_rows=400)])  # 50 batches of 12 ms
    cat = Catalogue.build([MACHINE, FN], HARDWARE)
    cluster = Cluster.build([busy], HARDWARE, catalogue=cat, refuse_late=True, tier=tier.TierState(), now=1000.0)
    d = select(q(latency_ms=100), cat, cluster)
    assert d.worker == tier.HARDWARE and not d.loaded  # late (cold), not a 503
    with pytest.raises(Unavailable):  # without the tier: refused
        select(q(latency_ms=100), cat, Cluster.build([busy], HARDWARE, catalogue=cat, refuse_late=True))


def test_a_query_the_tier_takes_instead_of_a_machine_cold_start_names_the_machine_variant():
    # a worker is up with room, the machine variant not loaded and slow to load (5 s): the warm tier
    # answers, and names the variant the machines would have cold-started
    slow = dataclasses.replace(MACHINE, profile=dataclasses.replace(MACHINE.profile, load_ms=5000.0))
    state = warm(tier.TierState(), FN.id, 1000.0)
    d = decide(q(latency_ms=100), [slow, FN], [make_worker("w1")], state)
    assert d.worker == tier.HARDWARE and d.displaced == slow.id
