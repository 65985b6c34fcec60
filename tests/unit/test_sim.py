"""The simulator: its accounting against hand-computed expectations, determinism, and proof that
it drives the production decision functions (not copies).

Profile of the test variant ``net`` (p50 = p99, ms): batch 1 -> 10, 2 -> 16, 4 -> 24; load 100 ms.
With a 300 ms objective the production batching rule allows batches of 4 (2 * 24 <= 300) and a
wait of at most min(2, (300 - 48) / 4) = 2 ms for company, only when the mean gap between
arrivals is shorter than that.
"""

from __future__ import annotations

import inspect
import math

import pytest
from fakes import make_profile, make_variant

import infaas.core.scaling
import infaas.core.selection
from infaas.core.domain import HardwareType
from infaas.core.scaling import ScalingParams
from infaas.sim import data
from infaas.sim.engine import ClusterSpec, Refused, Simulator
from infaas.sim.metrics import evaluate
from infaas.sim.policies import ours as ours_module
from infaas.sim.policies.base import Policy
from infaas.sim.policies.ours import Ours

TASK = "classification/digits"
NET = make_variant("net", accuracy=0.9, max_batch=4, visibility="shared",
                   profile=make_profile({1: (10.0, 10.0), 2: (16.0, 16.0), 4: (24.0, 24.0)}, load_ms=100.0))
# $3.6 per hour = $0.001 per second
SPEC = ClusterSpec(hardware={"cpu": HardwareType("cpu", 3.6)}, start_s={"cpu": 5.0}, memory_bytes={"cpu": 2 << 30},
                   min_billing_s=0.0, jitter=False)


class OneReplica(Policy):
    """One machine up before the trace with ``net`` loaded; everything goes there."""

    name = "one"
    period_s = None

    def start(self, sim: Simulator) -> None:
        self.m = sim.launch("cpu", ready=True)
        sim._loaded(sim.load(self.m, NET.id))

    def route(self, sim: Simulator, i: int) -> tuple[str, str]:
        return NET.id, self.m.id


def run(arrivals_ms, policy, spec=SPEC, latency_ms=300.0, seed=0):
    w = data.explicit_workload([(t, TASK) for t in arrivals_ms], latency_ms=latency_ms)
    sim = Simulator(w, [NET], policy, spec, seed=seed).run()
    return sim, evaluate(sim, policy.name)[0]


def test_queueing_batching_latency_and_cost_by_hand():
    sim, res = run([0.0, 1.0, 2.0], OneReplica())
    # t=0: alone (no gap history, so no wait), batch of 1 runs 0 -> 10 ms.
    # t=1, t=2 queue behind it (mean gap 1 ms < 2 ms: the next batch waits the full 2 ms for company);
    # at t=10 the batch is not full, waits until t=12, then runs 2 rows: p50(2) = 16 ms -> done at t=28.
    assert sim.finish == [10.0, 28.0, 28.0]
    latency = [f - a for f, a in zip(sim.finish, sim.arrival)]
    assert latency == [10.0, 27.0, 26.0]
    # queueing delay of the second request: 27 ms minus its own batch's 16 ms = 9 ms behind batch 1 + 2 ms wait
    assert latency[1] - 16.0 == 11.0
    m = sim.machines["cpu-1"]
    assert m.busy_ms == 10.0 + 16.0  # machine time is the sum of batch latencies from the profile
    # billed from launch (t=0) to the end of the run (last completion, 28 ms): 0.028 s * $0.001/s
    assert sim.end_ms == 28.0
    assert res.cost == pytest.approx(0.028 * 0.001)
    assert res.machine_seconds == {"cpu": 0.0}  # rounded to 0.1 s in the report
    assert res.violations == 0 and res.mean_accuracy == pytest.approx(90.0)


def test_a_clump_after_a_lull_runs_as_one_batch_not_its_first_row_alone():
    """Fake clock: rows that arrive together after a lull. The first clump has no history (its
    first row runs alone, the rest wait behind it); by the second, most gaps the replica has seen
    were close, so its first row waits the 2 ms window and the clump runs as full batches."""
    clump = [0.0] * 8
    sim, res = run(clump + [500.0 + t for t in clump], OneReplica())
    first, second = sim.finish[:8], sim.finish[8:]
    # first clump: row 0 alone 0 -> 10 ms; then the other 7 at the batch cap 4: 10 -> 34, and the
    # last 3 (not a full batch, and the gaps so far were close) after the 2 ms window, 36 -> 56 ms
    assert first == [10.0] + [34.0] * 4 + [56.0] * 3
    # second clump: waits 2 ms, then two full batches of 4: 502 -> 526 -> 550 ms
    assert second == [526.0] * 4 + [550.0] * 4
    assert max(f - a for f, a in zip(second, sim.arrival[8:])) < max(f - a for f, a in zip(first, sim.arrival[:8]))
    assert res.violations == 0


def test_latency_objective_and_billing_minimum():
    spec = ClusterSpec(hardware=SPEC.hardware, start_s=SPEC.start_s, memory_bytes=SPEC.memory_bytes, jitter=False)
    sim, res = run([0.0, 1.0, 2.0], OneReplica(), spec=spec, latency_ms=20.0)
    # 20 ms objective: 2 * p99(1) = 20 <= 20 allows batch 1 only and no wait; runs 0-10, 10-20, 20-30.
    assert sim.finish == [10.0, 20.0, 30.0]
    assert res.violations == 1 and res.latency_violations == 1  # the third answered after 28 ms > 20
    assert res.strict_violation_rate == pytest.approx(1 / 3)
    assert res.proteus_violation_rate == 0.0  # nothing dropped or later than 1 s
    assert res.cost == pytest.approx(60 * 0.001)  # a machine is billed for at least 60 s


class Cold(OneReplica):
    """No replica before the trace: the first request loads ``net`` (100 ms)."""

    def start(self, sim: Simulator) -> None:
        self.m = sim.launch("cpu", ready=True)


def test_cold_start_pays_the_load_and_a_booting_machine_takes_no_work():
    sim, res = run([0.0, 50.0], Cold())
    # loaded at t=100; both queued requests (1 ms gap history? no: gap 50 ms > 2 ms, no wait) run as one batch of 2
    assert sim.finish == [116.0, 116.0]
    assert sim.loads == 1

    class Booting(Cold):
        def start(self, sim):
            self.m = sim.launch("cpu")  # 5 s to start

    sim, res = run([0.0], Booting())
    assert res.refused == 1 and math.isnan(sim.finish[0])


def test_accuracy_floor_is_a_violation_when_a_less_accurate_variant_answers():
    w = data.explicit_workload([(0.0, TASK)], tenants=(data.Tenant("picky", 0.95, 1.0),))
    sim = Simulator(w, [NET], OneReplica(), SPEC).run()
    res = evaluate(sim, "one")[0]
    assert res.accuracy_violations == 1 and res.violations == 1 and res.latency_violations == 0


def test_a_run_is_deterministic_for_its_seed():
    spec = ClusterSpec(hardware=SPEC.hardware, start_s=SPEC.start_s, memory_bytes=SPEC.memory_bytes, jitter=True)
    noisy = make_variant("net", accuracy=0.9, max_batch=4, visibility="shared",  # p99 above p50: a spread to draw from
                         profile=make_profile({1: (10.0, 12.0), 2: (16.0, 19.0), 4: (24.0, 28.0)}, load_ms=100.0))
    w = data.synthetic_workload({TASK: 80.0}, 5.0, kind="gamma", cv=2.0, seed=3)
    finish = lambda seed: Simulator(w, [noisy], OneReplica(), spec, seed=seed).run().finish  # noqa: E731
    assert finish(1) == finish(1)
    assert finish(1) != finish(2)  # batch latencies are drawn around the profile's p50


def test_synthetic_poisson_replay_conserves_requests_and_machine_time():
    w = data.synthetic_workload({TASK: 100.0}, 10.0, kind="poisson", seed=1)  # capacity ~167 rows/s at batch 4
    sim = Simulator(w, [NET], OneReplica(), SPEC).run()
    assert all(f == f for f in sim.finish)  # every request answered
    r = sim.machines["cpu-1"].replicas[NET.id]
    assert r.served_total == len(w) and r.queued == 0
    res = evaluate(sim, "one")[0]
    assert 0.0 < res.p50_ms < 300.0 and res.goodput_rps == pytest.approx(len(w) / w.duration_s)


# -- the product's own policy ---------------------------------------------------------------------------
def test_the_simulator_drives_the_production_select_and_plan(monkeypatch):
    # The sim module uses the production modules themselves ...
    assert ours_module.selection is infaas.core.selection and ours_module.scaling is infaas.core.scaling
    src = "".join(inspect.getsource(m) for m in (ours_module,))
    assert "def select(" not in src and "def plan(" not in src
    # ... and looks the functions up at each call: wrappers installed on the production modules see every call.
    calls = {"select": 0, "plan": 0}
    real_select, real_plan = infaas.core.selection.select, infaas.core.scaling.plan

    def counting_select(*a, **kw):
        calls["select"] += 1
        return real_select(*a, **kw)

    def counting_plan(*a, **kw):
        calls["plan"] += 1
        return real_plan(*a, **kw)

    monkeypatch.setattr(infaas.core.selection, "select", counting_select)
    monkeypatch.setattr(infaas.core.scaling, "plan", counting_plan)
    w = data.synthetic_workload({TASK: 50.0}, 9.0, seed=2)
    policy = Ours(ScalingParams(period_s=2.0, min_workers={"cpu": 1}, max_workers={"cpu": 3}))
    sim = Simulator(w, [NET], policy, SPEC).run()
    assert calls["select"] == len(w) == policy.select_calls  # one decision per request, each from select
    assert calls["plan"] == 4 == policy.plans  # t = 2, 4, 6, 8 s
    assert sim.loads >= 1 and sum(1 for f in sim.finish if f == f) > 0.9 * len(w)


def test_ours_scales_out_under_load_and_reports_refusals():
    w = data.synthetic_workload({TASK: 400.0}, 20.0, seed=4)  # 400 rows/s; one replica does ~167 at batch 4
    policy = Ours(ScalingParams(period_s=1.0, min_workers={"cpu": 1}, max_workers={"cpu": 5}))
    spec = ClusterSpec(hardware=SPEC.hardware, start_s={"cpu": 2.0}, memory_bytes=SPEC.memory_bytes, jitter=False)
    sim = Simulator(w, [NET], policy, spec).run()
    assert len(sim.machines) > 1  # the plan launched workers
    res = evaluate(sim, "ours")[0]
    assert res.violation_rate < 0.5


def test_refusal_is_recorded_not_raised():
    class Nowhere(Policy):
        name = "nowhere"
        period_s = None

        def route(self, sim, i):
            raise Refused("no room")

    sim, res = run([0.0, 1.0], Nowhere())
    assert sim.refused == {0: "no room", 1: "no room"} and res.violations == 2 and res.refused == 2


@pytest.mark.parametrize("gap_s", [6.0, 15.0, 30.0])
def test_steady_low_rate_traffic_loads_its_replica_once(gap_s):
    """One query every ``gap_s`` for 2 minutes, through the production ``select``, ``control_period``
    and ``reconcile`` on the simulator's clock: the replica is loaded at the first query and kept (a
    quiet variant keeps one replica for ``idle_unload_s``, 60 s), never unloaded and loaded again.
    Without that hold (``idle_unload_s`` 1 s) queries 15 s or more apart each pay a load."""
    arrivals = [i * gap_s * 1000 for i in range(int(120 / gap_s) + 1)]
    policy = Ours(ScalingParams(period_s=2.0, min_workers={"cpu": 1}, max_workers={"cpu": 2}))
    sim, res = run(arrivals, policy)
    assert policy.plans >= 55  # the autoscaler ran all along (every 2 s)
    assert sim.loads == 1, sim.loads
    assert res.violation_rate == 0.0
    if gap_s >= 15:
        hasty = Ours(ScalingParams(period_s=2.0, min_workers={"cpu": 1}, max_workers={"cpu": 2}, idle_unload_s=1.0))
        assert run(arrivals, hasty)[0].loads == len(arrivals)


_HASHSEED_RUN = """
import sys, hashlib
sys.path.insert(0, sys.argv[1])
from fakes import make_profile, make_variant
from infaas.core.domain import HardwareType
from infaas.core.scaling import ScalingParams
from infaas.sim import data
from infaas.sim.engine import ClusterSpec, Simulator
from infaas.sim.policies.ours import Ours

tasks = [f"classification/t{i}" for i in range(6)]
variants = [make_variant(f"net{i}{f}", accuracy=0.8 + 0.03 * i, max_batch=4, visibility="shared", task=t,
                         profile=make_profile({1: (10.0, 12.0), 4: (24.0, 28.0)}, load_ms=100.0))
            for i, t in enumerate(tasks) for f in ("a", "b")]
spec = ClusterSpec(hardware={"cpu": HardwareType("cpu", 0.0)}, start_s={"cpu": 2.0}, memory_bytes={"cpu": 2 << 30},
                   jitter=True)
w = data.synthetic_workload({t: 30.0 + 10 * i for i, t in enumerate(tasks)}, 12.0, kind="gamma", cv=3.0, seed=5)
params = ScalingParams(period_s=1.0, min_workers={"cpu": 3}, max_workers={"cpu": 3}, fill_fleet_ms=300.0)
sim = Simulator(w, variants, Ours(params), spec, seed=7).run()
print(hashlib.sha256(repr(sim.finish).encode()).hexdigest())
"""


def test_a_run_does_not_depend_on_the_interpreters_hash_seed():
    """Sets and dicts keyed by strings iterate in an order that depends on PYTHONHASHSEED: the
    policy (demand, the pinned fleet's remembered peaks) must not, or a seed does not fix a run."""
    import os
    import subprocess
    import sys

    tests_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    digests = {subprocess.run([sys.executable, "-c", _HASHSEED_RUN, tests_dir], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2", "3", "4")}
    assert len(digests) == 1, digests
