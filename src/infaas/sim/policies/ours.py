"""The product's own policy, driven unchanged.

* Every request: ``infaas.core.selection.select(query, catalogue, cluster)``. The
  catalogue is built once (``Catalogue.build``). The cluster is a
  ``selection.Cluster`` built with ``Cluster.build`` from ``Worker`` records
  whenever machines or replicas appear or go; between rebuilds, the workers
  whose queues moved get fresh records through ``Cluster.with_workers`` (a new
  snapshot, equal to what ``Cluster.build`` would return), so the selector
  sees every queue as of the request: the router knows what it dispatched.
  (The live API refreshes its snapshot every 0.2 s from 0.5 s heartbeats;
  every simulated policy routes on current queues, so the comparison is
  like for like.)
* Every ``params.period_s``: ``infaas.core.scaling.control_period(Snapshot, PolicyState,
  previous)`` exactly as ``app.autoscaler.Autoscaler.run_once`` calls it (workers
  with their replica loads over the period, ready variants, prices, the
  fleet's desired counts, the previous assignments joined with what is
  loaded); then the fleet is set to the desired counts, the drained workers
  drain, and each worker reconciles toward its assignment with the worker's
  own ``core.reconcile.reconcile`` (grace ``core.reconcile.grace_s``: ``max(5, 3 * period)`` s).

The functions are looked up on their modules at each call
(``selection.select``, ``scaling.control_period``), so the production code is what
runs; ``tests/unit/test_sim.py`` proves it by wrapping them.
"""

from __future__ import annotations

from typing import Mapping

from infaas.core import scaling, selection
from infaas.core.burst import Unserved
from infaas.core.domain import (
    WORKER_DRAINING,
    WORKER_UP,
    HardwareType,
    Objective,
    Query,
    ReplicaLoad,
    Worker,
)
from infaas.core.errors import InfaasError, Unavailable
from infaas.core.reconcile import Loaded, grace_s, reconcile
from infaas.sim.engine import DRAINING, UP, Machine, Refused, Simulator
from infaas.sim.policies.base import Policy


class Ours(Policy):
    name = "ours"

    def __init__(self, params: scaling.ScalingParams, *, hardware: Mapping[str, HardwareType] | None = None,
                 initial: Mapping[str, int] | None = None, name: str = "ours", refuse_late: bool = False,
                 tier: bool = False) -> None:
        """``hardware``: the prices the product is configured with (default: the simulated ones);
        ``initial``: machines up before the first request (default ``params.min_workers``);
        ``refuse_late``: the deployment's admission setting (``selection.Cluster.refuse_late``)."""
        self.refuse_late = refuse_late
        self.tier = tier  # runs on a set-up with the serverless tier (``runner.cloud_setup(tier=True)``)
        self.name = name
        self.params = params
        self.period_s = params.period_s
        self.hardware_view = hardware
        self.initial = dict(initial if initial is not None else params.min_workers)
        self.state = scaling.PolicyState()
        self.assignments: dict[str, tuple[str, ...]] | None = None
        self.plans = 0
        self.select_calls = 0
        self.unserved = Unserved()  # what the selector turned away, as the live data plane counts it

    # -- setup -----------------------------------------------------------------------------------------
    def start(self, sim: Simulator) -> None:
        self.hardware = dict(self.hardware_view or sim.spec.hardware)
        self.use_catalogue(selection.Catalogue.build(sim.variant_list, self.hardware))
        self.queries: dict[tuple, Query] = {}
        self._cluster: selection.Cluster | None = None
        self._version = -1
        for hw, n in sorted(self.initial.items()):
            for _ in range(n):
                sim.launch(hw, ready=True)

    def use_catalogue(self, catalogue: selection.Catalogue) -> None:
        """The variants the selector and the plan see."""
        self.catalogue = catalogue
        self.variants = dict(catalogue.variants)
        self.task_vids = {t: tuple(v.id for v in vs) for t, vs in catalogue.by_task.items()}

    # -- snapshots -------------------------------------------------------------------------------------
    @staticmethod
    def worker_record(m: Machine, now_s: float, *, rate_period_s: float | None = None) -> Worker:
        reps = []
        used = 0
        for r in m.replicas.values():
            used += r.info.memory  # a replica still loading holds its memory ...
            if not r.ready:
                continue  # ... but is not in the worker's list of replicas yet
            rate = 0.0
            if rate_period_s:
                rate = r.served / rate_period_s
            reps.append(ReplicaLoad(r.vid, queued_rows=r.queued, rate_rps=rate, peak_rows=r.peaks.peak(now_s),
                                    memory_bytes=r.info.memory,
                                    last_used=r.last_used / 1000.0))
        return Worker(id=m.id, hardware=m.hw, url=f"sim://{m.id}", state=WORKER_UP if m.state == UP else WORKER_DRAINING,
                      memory_budget_bytes=m.budget, memory_used_bytes=used, replicas=tuple(reps), heartbeat_at=now_s,
                      started_at=m.up_at / 1000.0)

    def cluster(self, sim: Simulator) -> selection.Cluster:
        """The selector's snapshot, current as of now (see the module docstring)."""
        now = sim.now
        if sim.version != self._version or self._cluster is None:
            workers = [self.worker_record(m, now / 1000.0) for m in sim.up_machines()]
            self._cluster = selection.Cluster.build(workers, self.hardware, refuse_late=self.refuse_late,
                                                    catalogue=self.catalogue)
            self._version = sim.version
        elif sim.dirty:
            newer = [self.worker_record(m, now / 1000.0) for m in sim.dirty if m.id in self._cluster.workers]
            self._cluster = self._cluster.with_workers(newer)
        sim.dirty.clear()
        if sim.tier_state is not None:  # the tier's warm pool as of now (it moves with every invocation)
            return self._cluster.with_tier(sim.tier_state, now / 1000.0)
        return self._cluster

    # -- per request -----------------------------------------------------------------------------------
    def route(self, sim: Simulator, i: int) -> tuple[str, str]:
        w = sim.workload
        task = sim.task_of[i]
        tenant = int(w.tenant[i])
        key = (task, tenant, sim.objective[i])
        q = self.queries.get(key)
        if q is None:
            t = w.tenants[tenant]
            q = self.queries[key] = Query(rows=1, objective=Objective(min_accuracy=t.min_accuracy, latency_ms=sim.objective[i]),
                                          task=task, tenant=t.name)
        self.select_calls += 1
        try:
            d = selection.select(q, self.catalogue, self.cluster(sim))
        except InfaasError as exc:
            if isinstance(exc, Unavailable) and exc.details.get("variant"):  # turned away: demand all the same
                self.unserved.add(exc.details["variant"], sim.now / 1000.0)
            raise Refused(type(exc).__name__) from None
        if d.displaced:  # the tier answers what machines could not in time: their demand all the same
            self.unserved.add(d.displaced, sim.now / 1000.0)
        return d.variant, d.worker

    # -- every period ----------------------------------------------------------------------------------
    def control(self, sim: Simulator) -> None:
        now_s = sim.now / 1000.0
        p = self.params
        machines = [m for ms in sim.alive.values() for m in ms if m.state in (UP, DRAINING)]
        workers = tuple(self.worker_record(m, now_s, rate_period_s=p.period_s) for m in machines)
        for m in machines:
            for r in m.replicas.values():
                r.served = 0
        hws = set(self.hardware) | set(p.min_workers) | set(p.max_workers)
        desired = {hw: sim.desired(hw) for hw in sorted(hws) if sim.desired(hw) or hw in p.min_workers}
        tier_rps = {vid: n / p.period_s for vid, n in sorted(sim.tier_served.items())}
        sim.tier_served.clear()
        snap = scaling.Snapshot(now_s, workers, self.variants, self.hardware, desired, p, unserved=self.unserved.take(now_s),
                                tier_rps=tier_rps)
        result, self.state = scaling.control_period(snap, self.state, self.assignments or {})
        self.plans += 1
        self.assignments = dict(result.assignments)
        for hw, n in result.desired_workers.items():
            if n != desired.get(hw):
                sim.set_desired(hw, n)
        for wid in result.drain:
            sim.drain(wid)
        self.reconcile(sim)

    def reconcile(self, sim: Simulator) -> None:
        """Each up worker loads what it is assigned and unloads what it is not (idle, past the grace period)."""
        if self.assignments is None:
            return
        now_s = sim.now / 1000.0
        grace = grace_s(self.params.period_s)
        for m in sim.up_machines():
            loaded = {vid: Loaded(r.busy, r.last_used / 1000.0) for vid, r in m.replicas.items()}
            to_load, to_unload = reconcile(self.assignments.get(m.id, ()), loaded, now_s, grace)
            for vid in to_unload:
                sim.unload(m, vid)
            for vid in to_load:
                if vid in sim.info:
                    sim.load(m, vid)
