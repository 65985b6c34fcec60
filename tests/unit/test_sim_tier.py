"""The serverless tier in the simulator and in the scaling policy: cold starts, the warm pool,
billing per invocation, a fleet at zero, and a burst that goes to the tier and back to machines
as they start. The production ``select`` and ``plan`` decide; time is the simulator's."""

from __future__ import annotations

import dataclasses

import pytest
from fakes import make_profile, make_variant, make_worker

from infaas.core import tier
from infaas.core.domain import HardwareType, ReplicaLoad
from infaas.core.scaling import ScalingParams, Snapshot, tier_moves
from infaas.sim import data
from infaas.sim.engine import ClusterSpec, Simulator
from infaas.sim.metrics import evaluate
from infaas.sim.policies.ours import Ours

TASK = "classification/digits"
NET = make_variant("net", accuracy=0.9, max_batch=4, visibility="shared",
                   profile=make_profile({1: (10.0, 10.0), 2: (16.0, 16.0), 4: (24.0, 24.0)}, load_ms=100.0,
                                        peak_memory_bytes=100 << 20))
[FN] = data.tier_variants([NET])
HW = {"cpu": HardwareType("cpu", 0.085)}
SPEC = ClusterSpec(hardware=HW, start_s={"cpu": 5.0}, memory_bytes={"cpu": 2 << 30}, min_billing_s=0.0, jitter=False,
                   tier=True)


def run(arrivals_ms, params, latency_ms=300.0):
    w = data.explicit_workload([(t, TASK) for t in arrivals_ms], latency_ms=latency_ms)
    policy = Ours(params, refuse_late=True, tier=True)
    sim = Simulator(w, [NET, FN], policy, SPEC, seed=0).run()
    return sim, evaluate(sim, policy.name)[0]


def test_a_tier_variant_is_the_cpu_variant_run_as_a_function():
    assert FN.hardware == tier.HARDWARE and FN.architecture == NET.architecture and FN.accuracy == NET.accuracy
    assert FN.profile.memory_mb == tier.FULL_VCPU_MB  # one vCPU: the profile was measured on one
    assert FN.profile.latency_ms == NET.profile.latency_ms
    assert FN.profile.load_ms == pytest.approx(data.FUNCTION_START_MS + tier.download_ms(100 << 20) + 100.0)


def test_a_fleet_at_zero_answers_the_first_query_cold_and_the_next_warm_billed_per_invocation():
    # cpu minimum 0: no machine; one query, then another 5 s later (the first one's environment is
    # idle and warm by then), then one after an idle hour
    params = ScalingParams(min_workers={"cpu": 0}, max_workers={"cpu": 4}, latency_ms=300.0)
    sim, res = run([0.0, 5000.0, 5000.0 + 3600_000.0], params, latency_ms=3000.0)
    cold = FN.profile.load_ms
    lat = [f - a for f, a in zip(sim.finish, sim.arrival)]
    assert lat[0] == pytest.approx(cold + 10.0)  # within the objective plus the cold start
    assert lat[1] == pytest.approx(10.0)  # warm
    assert lat[2] == pytest.approx(cold + 10.0)  # the environment went cold after keep_warm_s
    assert sim.tier_invocations == 3 and sim.tier_cold == 2 and not sim.machines
    expected = 2 * tier.invocation_cost(cold + 10.0, FN.profile.memory_mb) + tier.invocation_cost(10.0, FN.profile.memory_mb)
    assert res.cost == pytest.approx(expected) and res.violations == 0


def test_a_burst_goes_to_the_tier_and_back_to_machines_as_they_start():
    # 200 rows/s for 20 s on a fleet at zero: the tier takes the first seconds; its steady load
    # costs less on machines (tier_moves), a machine starts (5 s) and takes the load back
    params = ScalingParams(min_workers={"cpu": 0}, max_workers={"cpu": 4}, latency_ms=300.0, period_s=1.0)
    arrivals = [k * 5.0 for k in range(4000)]
    sim, res = run(arrivals, params)
    by = ["tier" if k >= 0 and sim.info_by_index[k].hw == tier.HARDWARE else "machine" if k >= 0 else "none"
          for k in sim.served_by]
    first, last = by[:200], by[-1000:]  # the first second, the last five
    assert first.count("tier") > 150
    assert last.count("machine") > 900
    assert sim.machines
    # late answers are the tier's cold starts of the first seconds only, none once warm or on machines
    late = [i for i in range(len(arrivals)) if not sim.finish[i] - sim.arrival[i] <= 300.0]
    assert late and max(sim.arrival[i] for i in late) < 5000.0 and res.violations == len(late)


def test_the_scaling_policy_moves_a_steady_tier_load_to_machines_only_when_they_cost_less():
    cpu = make_variant("net", hardware="cpu", max_batch=4, profile=NET.profile)
    fn = dataclasses.replace(FN, tenant=cpu.tenant)
    hw = {"cpu": HardwareType("cpu", 0.085)}
    snap = lambda rate: Snapshot(0.0, (make_worker("w0"),), {cpu.id: cpu, fn.id: fn}, hw, {"cpu": 1},  # noqa: E731
                                 ScalingParams(), tier_rps={fn.id: rate})
    per_hour = lambda rate: rate * 3600 * tier.function_profile_of(fn.profile).cost_per_request()  # noqa: E731
    assert per_hour(1.0) < 0.085 and tier_moves(snap(1.0)) == []  # a rare load stays on the tier
    assert per_hour(200.0) > 0.085 * 2 and tier_moves(snap(200.0)) == [(fn.id, cpu.id, 200.0)]
    # the tier's load moved counts as the machine variant's demand
    from infaas.core.scaling import PolicyState, plan
    result, state = plan(snap(200.0), PolicyState(), {})
    assert state.demand_rps[cpu.id] == pytest.approx(200.0) and any("tier:" in r for r in result.reasons)
    w = make_worker("w0", replicas=[ReplicaLoad(cpu.id, rate_rps=1.0)])
    assert tier_moves(dataclasses.replace(snap(0.0), workers=(w,))) == []
    # with the machine variant loaded, the tier's load of it is its overflow, counted where the
    # selector displaced it (``Snapshot.unserved``), not here
    assert tier_moves(dataclasses.replace(snap(200.0), workers=(w,))) == []
    unserved = dataclasses.replace(snap(1.0), workers=(w,), unserved={cpu.id: (40.0, 4)})
    result, state = plan(unserved, PolicyState(), {})
    assert state.demand_rps[cpu.id] >= 40.0
    # nor when the selector displaced it from a machine cold start (the sibling not loaded): the
    # displaced rows are its demand already, the tier's rate of it is not added again
    displaced = dataclasses.replace(snap(200.0), unserved={cpu.id: (200.0, 4)})
    assert tier_moves(displaced) == []
    result, state = plan(displaced, PolicyState(), {})
    assert state.demand_rps[cpu.id] == pytest.approx(200.0)


def test_an_hourly_budget_covers_the_tiers_invocations_too():
    from infaas.core.scaling import PolicyState, plan, tier_spend

    cpu = make_variant("net", hardware="cpu", max_batch=4, profile=NET.profile)
    fn = dataclasses.replace(FN, tenant=cpu.tenant)
    hw = {"cpu": HardwareType("cpu", 0.085)}
    # 3 workers hold 3 loaded replicas of cpu with 100 rows/s each; the budget, less its headroom, pays for 3 workers
    ws = tuple(make_worker(f"w{i}", replicas=[ReplicaLoad(cpu.id, rate_rps=100.0)]) for i in range(3))
    params = ScalingParams(min_workers={"cpu": 1}, max_workers={"cpu": 10}, budget_per_hour=3 * 0.085 / 0.95,
                           budget_headroom=0.05)
    quiet = Snapshot(0.0, ws, {cpu.id: cpu, fn.id: fn}, hw, {"cpu": 3}, params)
    result, _ = plan(quiet, PolicyState(), {})
    assert result.desired_workers["cpu"] == 3
    # the tier spends nearly what one worker costs: the budget leaves two workers
    rate = 0.08 / (3600 * tier.function_profile_of(fn.profile).cost_per_request())
    busy = dataclasses.replace(quiet, tier_rps={fn.id: rate})
    assert tier_spend(busy) == pytest.approx(0.08)
    result, _ = plan(busy, PolicyState(), {})
    assert result.desired_workers["cpu"] == 2 and any("after its headroom and the tier's" in r for r in result.reasons)


def test_the_machines_are_planned_within_the_budget_less_its_headroom():
    """A budget that pays for exactly 3 workers: with no headroom the plan keeps 3; with the
    default headroom (5 %, for the tier's swings and the minute each launch is billed) it keeps 2."""
    from infaas.core.scaling import PolicyState, plan

    cpu = make_variant("net", hardware="cpu", max_batch=4, profile=NET.profile)
    hw = {"cpu": HardwareType("cpu", 0.085)}
    ws = tuple(make_worker(f"w{i}", replicas=[ReplicaLoad(cpu.id, rate_rps=100.0)]) for i in range(3))
    exact = ScalingParams(min_workers={"cpu": 1}, max_workers={"cpu": 10}, budget_per_hour=3 * 0.085)
    counts = {}
    for headroom in (0.0, ScalingParams().budget_headroom):
        params = dataclasses.replace(exact, budget_headroom=headroom)
        result, _ = plan(Snapshot(0.0, ws, {cpu.id: cpu}, hw, {"cpu": 3}, params), PolicyState(), {})
        counts[headroom] = result.desired_workers["cpu"]
    assert counts == {0.0: 3, 0.05: 2}
    for wrong in (-0.1, 1.0):
        with pytest.raises(ValueError, match="budget_headroom"):
            ScalingParams(budget_headroom=wrong)


def test_the_budget_holds_a_spike_of_the_tiers_spend_and_lets_it_fade():
    """The tier's rate follows sub-second clumps; the budget counts a period's spike for the periods
    after it too, fading with half-life ``burst_halflife_s``, so the workers it leaves do not come and
    go with each clump (each launch is billed a minute). Periods on a fake clock."""
    from infaas.core.scaling import PolicyState, plan

    cpu = make_variant("net", hardware="cpu", max_batch=4, profile=NET.profile)
    fn = dataclasses.replace(FN, tenant=cpu.tenant)
    hw = {"cpu": HardwareType("cpu", 0.085)}
    ws = tuple(make_worker(f"w{i}", replicas=[ReplicaLoad(cpu.id, rate_rps=100.0)]) for i in range(3))
    params = ScalingParams(min_workers={"cpu": 1}, max_workers={"cpu": 10}, budget_per_hour=3 * 0.085 + 0.01,
                           period_s=2.0, burst_halflife_s=30.0, budget_headroom=0.0)
    rate = 0.08 / (3600 * tier.function_profile_of(fn.profile).cost_per_request())  # ~ one worker's price
    state, t = PolicyState(), 0.0
    counts = []
    for k in range(60):
        spike = {fn.id: rate} if k == 0 else {}
        snap = Snapshot(t, ws, {cpu.id: cpu, fn.id: fn}, hw, {"cpu": 3}, params, tier_rps=spike)
        result, state = plan(snap, state, {})
        counts.append(result.desired_workers["cpu"])
        t += params.period_s
    assert counts[0] == 2  # the spike leaves two workers' money
    assert counts[1:10] == [2] * 9  # held: the quiet periods right after it do not launch the third again
    assert counts[-1] == 3  # faded (120 s: a sixteenth of it, under the 0.01 $ to spare), the third is back
    assert state.tier_rps.get(fn.id, 0.0) < rate / 10
