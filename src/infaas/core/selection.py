"""Variant and worker selection: a pure function over snapshots.

``select(query, catalogue, cluster)`` reads nothing and sends nothing; the API,
the AWS selector function and the simulator all call it unchanged.

For each candidate variant (resolved from the named variant, architecture or
task, and visible to the tenant) the selector predicts the latency the query
would see:

* on a loaded replica with ``q`` rows already queued, running batches of at
  most ``B`` rows, for a query of ``r`` rows:
  ``ceil((q + r) / B) * latency_p99(min(q + r, B))`` -- everything ahead of it
  and the query itself, in full batches, at the profiled p99;
* on a worker that must load it first: ``load_ms`` plus the same with ``q = 0``;
* plus the *overhead* of reaching that worker (``Cluster.overhead_ms``): the API's own work
  and the hop there and back, measured on recent answers (the data plane's moving estimate of
  what an answer took beyond its predicted queue and compute), so the objective is checked
  against the time from the query's arrival at the API to its answer leaving it;
* plus the worker's *backlog*: a worker runs one batch at a time for all its
  replicas (its compute pool has one thread), so what its other replicas have
  queued runs first -- ``sum of ceil(q_o / B_o) * latency_p99(min(q_o, B_o))``
  over them (``backlog_ms``). The worker takes its replicas' batches in turn, so
  a query that needs ``k > 1`` batches of its replica waits, while the others
  stay busy, for about one batch of each of them between two of its own: the
  backlog is then at least ``k`` times that round (``round_ms``). A cold start
  loads while the backlog runs: ``max(load_ms, backlog) + steady``.

Cost per query is the machine time it takes, priced by the hardware type:
``price_per_hour / 3600 * latency_p50(b) / 1000 * r / b``.

Preference, as the architecture asks: (1) a loaded replica that meets the
objective, cheapest first; (2) a variant that can be loaded *and* answer within
the objective, cheapest first; (3) a variant whose steady-state latency meets
the objective even though this first query pays the load (a cold start, said so
in the reason); (4) over capacity -- replicas that would meet the objective
but for their queues -- the shortest wait, said so in the reason, rather than
refusing work the autoscaler is about to make room for -- or, where the
query or the deployment asks for it (``Objective.if_late`` "refuse", else
``Cluster.refuse_late``), refused at once with 503, Retry-After and the best
latency and accuracy to be had now: under overload a late answer also makes
every query queued behind it late, and refusing it keeps the rest within their
objective. A cold start (3) is always served, late and flagged: refusing it
would never load the variant. Otherwise
``NoFeasibleVariant`` (422) stating the best latency and accuracy that could
be had: no variant meets the objective even with an empty queue.

Within a tier, options of equal cost go to the more accurate variant, then
the faster one: on hardware priced at zero (a fleet paid for up front) the
selector serves the most accurate variant that meets the objective. A cold
start goes to a worker that can make room without evicting a replica that
has work queued (the worker would answer 503 for that) or was used in the
last ``COLD_S`` seconds (that would thrash warm replicas): the least busy
such worker, then the roomiest.

(The backlog term, the room check and the accuracy tie-break came from the
trace-driven simulator, ``infaas.sim``: predictions that ignored co-located
replicas missed the objective for most requests; see docs/evaluation.md.)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from infaas.core import tier
from infaas.core.domain import (
    WORKER_UP,
    Decision,
    HardwareType,
    Objective,
    Query,
    ReplicaLoad,
    Variant,
    Worker,
)
from infaas.core.errors import InvalidInput, NoFeasibleVariant, NotFound, Unavailable
from infaas.core.runtimes import required_runtimes
from infaas.core.tier import TierState


@dataclass(frozen=True)
class Catalogue:
    """Ready, profiled variants, indexed the three ways a query can name them.

    Built once per catalogue version (``build``) and never changed afterwards.
    Given the hardware prices, ``build`` also ranks every architecture's and
    task's variants for a one-row query (``ranked``), so that the common
    decision scans a sorted list instead of sorting one.
    """

    variants: Mapping[str, Variant]
    by_architecture: Mapping[str, tuple[Variant, ...]]
    by_task: Mapping[str, tuple[Variant, ...]]
    # ("architecture" | "task", name) -> the one-row ranking (``rank``), at the prices ``prices``
    ranked: Mapping[tuple[str, str], tuple[tuple, ...]] = field(default_factory=dict, compare=False, repr=False)
    prices: tuple = ()
    # task -> the tenant that owns it: a query by task uses its own tenant's variants when it has
    # any in the task, else the variants the owner shared, nobody else's (``_target``). A task not
    # listed: anyone's shared.
    task_owners: Mapping[str, str] = field(default_factory=dict)
    # task -> the tenants with a ready variant in it
    task_tenants: Mapping[str, frozenset] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def build(variants: Iterable[Variant], hardware: Mapping[str, HardwareType] | None = None,
              task_owners: Mapping[str, str] | None = None) -> "Catalogue":
        ready = [v for v in variants if v.status == "ready" and v.profile is not None and v.accuracy is not None]
        by_arch: dict[str, list[Variant]] = {}
        by_task: dict[str, list[Variant]] = {}
        for v in ready:
            by_arch.setdefault(v.architecture, []).append(v)
            by_task.setdefault(v.task, []).append(v)
        ranked: dict[tuple[str, str], tuple[tuple, ...]] = {}
        if hardware is not None:
            for kind, groups in (("architecture", by_arch), ("task", by_task)):
                for name, vs in groups.items():
                    ranked[(kind, name)] = rank(vs, 1, hardware)
        return Catalogue(
            variants={v.id: v for v in ready},
            by_architecture={k: tuple(vs) for k, vs in by_arch.items()},
            by_task={k: tuple(vs) for k, vs in by_task.items()},
            ranked=ranked,
            prices=price_key(hardware) if hardware is not None else (),
            task_owners=dict(task_owners or {}),
            task_tenants={k: frozenset(v.tenant for v in vs) for k, vs in by_task.items()},
        )


def price_key(hardware: Mapping[str, HardwareType]) -> tuple:
    """The hourly prices, comparable: a catalogue's rankings hold for a cluster with the same ones."""
    return tuple(sorted((h, t.price_per_hour) for h, t in hardware.items()))


def rank(pool: Iterable[Variant], rows: int, hardware: Mapping[str, HardwareType]) -> tuple[tuple, ...]:
    """``(cost, variant, steady_ms, cold_ms)`` for each variant, cheapest first (equal cost: the
    more accurate, then the faster): steady is an empty replica's latency for ``rows``, cold
    adds the load."""
    out = []
    for v in pool:
        price = hardware[v.hardware].price_per_hour if v.hardware in hardware else math.inf
        steady = service_ms(v, 0, rows)
        out.append((cost_per_query(v, rows, price), v, steady, v.profile.load_ms + steady))
    out.sort(key=lambda e: (e[0], -(e[1].accuracy or 0.0), e[2]))
    return tuple(out)


@dataclass(frozen=True)
class Cluster:
    """Live workers and their replicas at one instant, with hardware prices.

    Built by ``build`` (or ``with_workers`` for newer records of the same
    workers) and never changed afterwards. Built against a catalogue, it also
    indexes what a decision reads most: each worker's backlog, each hardware
    type's workers least busy first, and the catalogue's one-row rankings cut
    to the variants that have a replica here.
    """

    workers: Mapping[str, Worker]
    hardware: Mapping[str, HardwareType]
    replicas: Mapping[str, tuple[tuple[Worker, ReplicaLoad], ...]] = field(default_factory=dict)
    workers_by_hardware: Mapping[str, tuple[Worker, ...]] = field(default_factory=dict)  # roomiest first
    held: Mapping[str, frozenset[str]] = field(default_factory=dict)  # worker id -> variant ids loaded
    # (worker id, variant id) -> rows this selector has sent there and not yet seen answered.
    # Heartbeats are up to a period old; what the selector itself dispatched it knows now.
    pending: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # Admission: refuse (503) a query every replica would answer later than its objective,
    # instead of queueing it late (tier 4). A deployment setting (INFAAS_REFUSE_LATE).
    refuse_late: bool = False
    prices: tuple = ()  # ``price_key(hardware)``
    # The indexes below exist when the snapshot was built against ``catalogue``; a decision
    # against another catalogue (or none) computes what it needs itself.
    catalogue: "Catalogue | None" = field(default=None, compare=False, repr=False)
    backlog: Mapping[str, float] = field(default_factory=dict)  # worker id -> ``backlog_ms``
    idle_first: Mapping[str, tuple[Worker, ...]] = field(default_factory=dict)  # by backlog, then roomiest
    loaded_ranked: Mapping[tuple[str, str], tuple[tuple, ...]] = field(default_factory=dict)
    # worker id -> ms an answer from it takes beyond its queue and compute (the API's work, the
    # hop); workers not in it cost ``default_overhead_ms``. Empty in the simulator (no API there).
    overhead_ms: Mapping[str, float] = field(default_factory=dict)
    default_overhead_ms: float = 0.0
    # The serverless tier's warm pool (``core.tier.TierState``) where the deployment has the tier,
    # and the time it is read at; None: no tier (``lambda`` variants are never chosen).
    tier: TierState | None = None
    now: float = 0.0
    rounds: Mapping[str, float] = field(default_factory=dict)  # worker id -> ``round_ms``

    def overhead(self, worker_id: str) -> float:
        return self.overhead_ms.get(worker_id, self.default_overhead_ms)

    @staticmethod
    def build(workers: Iterable[Worker], hardware: Mapping[str, HardwareType],
              pending: Mapping[tuple[str, str], int] | None = None, *, refuse_late: bool = False,
              catalogue: "Catalogue | None" = None, overhead_ms: Mapping[str, float] | None = None,
              tier: TierState | None = None, now: float = 0.0) -> "Cluster":
        """Only workers that are up (not draining) take new work."""
        up = [w for w in workers if w.state == WORKER_UP]
        replicas: dict[str, list[tuple[Worker, ReplicaLoad]]] = {}
        by_hw: dict[str, list[Worker]] = {}
        for w in up:
            by_hw.setdefault(w.hardware, []).append(w)
            for r in w.replicas:
                replicas.setdefault(r.variant_id, []).append((w, r))
        roomiest = {k: tuple(sorted(v, key=_roomy)) for k, v in by_hw.items()}
        prices = price_key(hardware)
        backlog: dict[str, float] = {}
        rounds: dict[str, float] = {}
        loaded: dict[tuple[str, str], tuple[tuple, ...]] = {}
        if catalogue is not None:
            for w in up:
                backlog[w.id], rounds[w.id] = _queue_times(w, catalogue.variants)
            if catalogue.prices == prices:
                keys = {k for vid in replicas if (v := catalogue.variants.get(vid)) is not None
                        for k in (("architecture", v.architecture), ("task", v.task))}
                loaded = {k: tuple(e for e in catalogue.ranked.get(k, ()) if e[1].id in replicas) for k in keys}
        return Cluster(
            workers={w.id: w for w in up},
            hardware=dict(hardware),
            replicas={k: tuple(v) for k, v in replicas.items()},
            workers_by_hardware=roomiest,
            held={w.id: frozenset(r.variant_id for r in w.replicas) for w in up},
            pending=pending if pending is not None else {},
            refuse_late=refuse_late,
            prices=prices,
            catalogue=catalogue,
            backlog=backlog,
            idle_first=_idle_first(roomiest, backlog) if catalogue is not None else {},
            loaded_ranked=loaded,
            overhead_ms=dict(overhead_ms or {}),
            default_overhead_ms=_typical(overhead_ms),
            tier=tier,
            now=now,
            rounds=rounds,
        )

    def with_workers(self, newer: Iterable[Worker]) -> "Cluster":
        """The snapshot ``build`` would return with ``newer`` records of some of its workers
        (their queues moved): only what those records touch is rebuilt. A record that is new,
        no longer up, or holds other replicas or memory than before makes a full ``build``."""
        workers, by_hw, replicas = dict(self.workers), dict(self.workers_by_hardware), dict(self.replicas)
        backlog, rounds = dict(self.backlog), dict(self.rounds)
        newer = list(newer)
        for w in newer:
            old = workers.get(w.id)
            if (old is None or w.state != WORKER_UP or w.hardware != old.hardware
                    or w.memory_used_bytes != old.memory_used_bytes or w.memory_budget_bytes != old.memory_budget_bytes
                    or len(w.replicas) != len(old.replicas) or self.held[w.id] != {r.variant_id for r in w.replicas}):
                workers.update({x.id: x for x in newer})
                return Cluster.build(workers.values(), self.hardware, self.pending, refuse_late=self.refuse_late,
                                     catalogue=self.catalogue, overhead_ms=self.overhead_ms, tier=self.tier, now=self.now)
            workers[w.id] = w
            by_hw[w.hardware] = tuple(w if x.id == w.id else x for x in by_hw[w.hardware])
            for load in w.replicas:
                replicas[load.variant_id] = tuple((w, load) if x.id == w.id else (x, xl) for x, xl in replicas[load.variant_id])
            if self.catalogue is not None:
                backlog[w.id], rounds[w.id] = _queue_times(w, self.catalogue.variants)
        idle = dict(self.idle_first)
        if self.catalogue is not None:
            idle.update(_idle_first({hw: by_hw[hw] for hw in {w.hardware for w in newer}}, backlog))
        return Cluster(workers, self.hardware, replicas, by_hw, self.held, self.pending, self.refuse_late,
                       self.prices, self.catalogue, backlog, idle, self.loaded_ranked, self.overhead_ms,
                       self.default_overhead_ms, self.tier, self.now, rounds)

    def with_tier(self, tier: TierState | None, now: float) -> "Cluster":
        """The same snapshot with the tier's warm pool as of ``now``."""
        return dataclasses.replace(self, tier=tier, now=now)


def _typical(overhead_ms: Mapping[str, float] | None) -> float:
    """The overhead assumed for a worker with no answers yet: the median of the others'."""
    if not overhead_ms:
        return 0.0
    values = sorted(overhead_ms.values())
    return values[len(values) // 2]


def _idle_first(roomiest: Mapping[str, tuple[Worker, ...]], backlog: Mapping[str, float]) -> dict[str, tuple[Worker, ...]]:
    """Each hardware type's workers, least backlog first, then in ``workers_by_hardware`` order."""
    return {hw: tuple(w for _, _, w in sorted((backlog[w.id], i, w) for i, w in enumerate(ws)))
            for hw, ws in roomiest.items()}


def _roomy(w: Worker) -> tuple:
    """The order of ``workers_by_hardware``: most free memory, then fewest replicas."""
    return (-(w.memory_budget_bytes - w.memory_used_bytes), len(w.replicas), w.id)


def service_ms(variant: Variant, queued_rows: int, rows: int) -> float:
    """Predicted time until ``rows`` new rows are answered behind ``queued_rows``."""
    assert variant.profile is not None
    total = queued_rows + rows
    top = variant.batch_cap
    return math.ceil(total / top) * variant.profile.latency_at(min(total, top), "p99")


def cost_per_query(variant: Variant, rows: int, price_per_hour: float) -> float:
    """Dollars of machine time the query uses, at the batch it would run."""
    assert variant.profile is not None
    batch = min(rows, variant.batch_cap)
    runs = math.ceil(rows / variant.batch_cap)
    seconds = runs * variant.profile.latency_at(batch, "p50") / 1000.0
    return price_per_hour / 3600.0 * seconds * rows / (runs * batch)


def _target(query: Query, catalogue: Catalogue) -> tuple[tuple[str, str], tuple[Variant, ...], str, str | None]:
    """What the query names: (index key, every ready variant it covers, how to say it, whose shared
    variants it may use: None, anyone's, when it names a variant or an architecture; for a task,
    none but its own when the tenant has a variant in the task, else the task owner's only)."""
    named = [x for x in (query.variant, query.architecture, query.task) if x]
    if len(named) != 1:
        raise InvalidInput("name exactly one of variant, architecture or task", field="target")
    if query.variant:
        found: tuple[Variant, ...] = (catalogue.variants[query.variant],) if query.variant in catalogue.variants else ()
        return ("variant", query.variant), found, f"variant {query.variant!r}", None
    if query.architecture:
        return (("architecture", query.architecture), catalogue.by_architecture.get(query.architecture, ()),
                f"architecture {query.architecture!r}", None)
    task = query.task or ""
    # A tenant with a model of its own in the task is answered by its own models only: whoever
    # registered into the task first (its owner) cannot answer its queries with a "better" one.
    mine = query.tenant in catalogue.task_tenants.get(task, ())
    publisher = query.tenant if mine else catalogue.task_owners.get(task)
    return ("task", task), catalogue.by_task.get(task, ()), f"task {query.task!r}", publisher


def _visible(v: Variant, tenant: str, publisher: str | None = None) -> bool:
    """A tenant uses its own variants, and shared ones of ``publisher`` (``_target``): of anyone
    when it names a variant or an architecture (its choice); when it names a task, of the task's
    owner only, and only while the tenant has none of its own there, so that nobody can answer
    another tenant's task queries by sharing a model into that task, first or not."""
    return v.tenant == tenant or (v.visibility == "shared" and (publisher is None or v.tenant == publisher))


def candidates(query: Query, catalogue: Catalogue) -> tuple[Variant, ...]:
    """The variants a query may use: named ones, visible to its tenant."""
    _, found, what, publisher = _target(query, catalogue)
    visible = tuple(v for v in found if _visible(v, query.tenant, publisher))
    if not visible:
        # Same message whether it does not exist or belongs to another tenant.
        raise NotFound(f"no ready {what}", field="target")
    return visible


@dataclass(frozen=True)
class _Option:
    tier: int
    cost: float
    latency_ms: float
    variant: Variant
    worker: Worker
    batch: int
    loaded: bool


def _ranking(query: Query, catalogue: Catalogue,
             cluster: Cluster) -> tuple[tuple[tuple, ...], tuple[tuple, ...], str, str | None]:
    """Every variant the query names as ``(cost, variant, steady_ms, cold_ms)``, cheapest first
    (``rank``; tenants not yet filtered); the same cut to variants with a loaded replica; and how
    to name the target in an error; whose shared variants count (``_target``). A one-row query on
    an architecture or task reads the rankings the snapshots were built with; any other is ranked here."""
    key, found, what, publisher = _target(query, catalogue)
    ranked = catalogue.ranked.get(key) if query.rows == 1 and catalogue.prices == cluster.prices else None
    if ranked is None:
        ranked = rank((v for v in found if _visible(v, query.tenant, publisher)), query.rows, cluster.hardware)
        return ranked, ranked, what, publisher
    if cluster.catalogue is catalogue:
        return ranked, cluster.loaded_ranked.get(key, ()), what, publisher
    return ranked, ranked, what, publisher


def _usable(ranked: tuple[tuple, ...], query: Query, what: str, publisher: str | None) -> tuple[list, list]:
    """The entries visible to the tenant that meet the accuracy floor and whose steady latency
    (an empty replica) meets the latency objective, in rank order; and those of them whose load
    plus first batch fits the objective (they may load in time). ``NotFound`` when the tenant
    sees none of the variants named."""
    tenant, limit, floor = query.tenant, query.objective.latency_ms, query.objective.min_accuracy
    limit = math.inf if limit is None else limit
    floor = -math.inf if floor is None else floor
    entries = [e for e in ranked if e[2] <= limit and (e[1].accuracy or 0.0) >= floor
               and _visible(e[1], tenant, publisher)]
    if not entries and not any(_visible(e[1], tenant, publisher) for e in ranked):
        # Same message whether it does not exist or belongs to another tenant.
        raise NotFound(f"no ready {what}", field="target")
    loadable = entries if limit == math.inf else [e for e in entries if e[3] <= limit]
    return entries, loadable


def select(query: Query, catalogue: Catalogue, cluster: Cluster) -> Decision:
    """Choose variant, worker and batch for one query (see the module docstring)."""
    if query.rows < 1:
        raise InvalidInput("a query needs at least one row", field="inputs")
    obj = query.objective
    everything, loaded, what, publisher = _ranking(query, catalogue, cluster)
    limit = math.inf if obj.latency_ms is None else obj.latency_ms
    max_cost = math.inf if obj.max_cost is None else obj.max_cost
    floor = -math.inf if obj.min_accuracy is None else obj.min_accuracy

    # Tiers 1 and 4: replicas already loaded. The hot loop of a decision, kept lean: rank keys as
    # tuples -- tier 1 the cheapest (then the more accurate, the faster), tier 4 the shortest wait.
    # The ranking is by cost, so the scan stops at the first entry dearer than a tier-1 find.
    b1 = b4 = None
    pending, rows, replicas, tenant = cluster.pending, query.rows, cluster.replicas, query.tenant
    overhead = cluster.overhead
    for cost, v, steady, _cold in loaded:
        if cost > max_cost or (b1 is not None and cost > b1[0][0]):
            break  # sorted by cost: nothing further can be a cheaper loaded replica
        loads = replicas.get(v.id)
        if (not loads or steady > limit or (v.accuracy or 0.0) < floor
                or (v.tenant != tenant and (v.visibility != "shared" or (publisher is not None and v.tenant != publisher)))):
            continue
        acc = -(v.accuracy or 0.0)
        top, at = v.batch_cap, v.profile.latency_at
        for worker, load in loads:
            mine = load.queued_rows
            queued = max(mine, pending.get((worker.id, v.id), 0)) if pending else mine
            if queued:
                total = queued + rows
                runs = math.ceil(total / top)
                lat = runs * at(min(total, top))
            else:
                runs = 1 if rows <= top else math.ceil(rows / top)
                lat = steady
            ahead = _backlog(worker, cluster, catalogue)
            if ahead:  # what the worker's other replicas have queued runs first ...
                others = ahead - (math.ceil(mine / top) * at(min(mine, top)) if mine else 0.0)
                if runs > 1:  # ... and, while they stay busy, a batch of each between two of ours
                    others = max(others, runs * (_round(worker, cluster, catalogue) - (at(min(mine, top)) if mine else 0.0)))
                lat += others
            lat += overhead(worker.id)
            if lat <= limit:
                key = (cost, acc, lat)
                if b1 is None or key < b1[0]:
                    b1 = (key, v, worker)
            else:  # only its queue is in the way (its steady latency meets the objective)
                key = (lat, cost, acc)
                if b4 is None or key < b4[0]:
                    b4 = (key, v, worker)
    if b1 is not None:
        (cost, _, lat), v, worker = b1
        return _decision(_Option(1, cost, lat, v, worker, min(rows, v.batch_cap), True), query, cluster)
    ranked, loadable = _usable(everything, query, what, publisher)
    best: _Option | None = None
    if b4 is not None:
        (lat, cost, _), v, worker = b4
        best = _Option(4, cost, lat, v, worker, min(rows, v.batch_cap), True)

    # Tiers 2 and 3: load a variant on a worker that can run it, cheapest first: the cheapest
    # that can load in time (tier 2) among those whose load alone fits the objective, else the
    # cheapest cold start (tier 3).
    for cost, v, steady, cold in loadable:
        if cost > max_cost or (best is not None and best.tier == 2 and cost > best.cost):
            break
        best = _place(best, cost, v, steady, cold, query, cluster, catalogue, limit)
    if best is None or best.tier > 2:
        for cost, v, steady, cold in ranked:
            if cost > max_cost or (best is not None and best.tier in (2, 3) and cost > best.cost):
                break
            best = _place(best, cost, v, steady, cold, query, cluster, catalogue, limit)

    refuse = cluster.refuse_late if obj.if_late is None else obj.if_late == "refuse"
    if cluster.tier is not None and (best is None or best.tier > 2):
        # No machine replica answers in time, loaded or loading: the serverless tier, if it does;
        # else a cold invocation (late, flagged, as a machine's cold start is) where the machines'
        # answer would be a refusal or none -- it leaves a warm environment behind for the queries
        # that follow.
        fn, late = _function_option(everything, query, cluster, limit, max_cost, floor, publisher)
        # what the machines would have done instead (a late queue, a cold start): their demand
        displaced = best.variant.id if best is not None else ""
        if fn is not None:
            return _decision(fn, query, cluster, displaced)
        if late is not None and (best is None or (best.tier == 4 and refuse)):
            return _decision(late, query, cluster, displaced)
    if best is not None and best.tier == 4 and refuse:
        # Every replica would answer late: queueing it would make the queries behind it late too.
        raise Unavailable(f"over capacity: the shortest wait for a variant meeting the objective is "
                          f"{best.latency_ms:.0f} ms > latency_ms {limit:g}; retry later (the autoscaler adds replicas)",
                          retry_after_s=max(1.0, round(best.latency_ms / 1000.0, 1)), field="objective",
                          best_latency_ms=round(best.latency_ms, 4), best_accuracy=round(best.variant.accuracy or 0.0, 4),
                          variant=best.variant.id)
    if best is None:
        accurate = [e[1] for e in ranked]
        # Placeable means some up worker could run it, whatever it costs: a
        # query priced out by max_cost is unreachable (422), not unavailable.
        placeable = any(cluster.replicas.get(v.id) or cluster.workers_by_hardware.get(v.hardware) for v in accurate)
        if not placeable and accurate:
            hw = sorted({v.hardware for v in accurate} - {tier.HARDWARE})
            why = [f"no worker of hardware type {', '.join(hw)} is up"] if hw else []
            if any(v.hardware == tier.HARDWARE for v in accurate):
                why.append("the function tier cannot take this query now (it is off, at its concurrency limit, "
                           "or the rows are over its 6 MB payload)")
            raise Unavailable("; ".join(why), retry_after_s=2.0)
        raise _unreachable(query, tuple(e[1] for e in everything if _visible(e[1], query.tenant, publisher)), cluster)
    return _decision(best, query, cluster)


def _place(best: _Option | None, cost: float, v: Variant, steady: float, cold: float, query: Query,
           cluster: Cluster, catalogue: Catalogue, limit: float) -> _Option | None:
    """``best`` or a load of ``v`` on the worker that would take it (``_roomiest``), whichever ranks first."""
    worker = _roomiest(cluster, v, catalogue)
    if worker is None:
        return best
    batch = min(query.rows, v.batch_cap)
    ahead = _backlog(worker, cluster, catalogue)
    if ahead > v.profile.load_ms:  # the load overlaps the backlog; the first batch waits for both
        cold = ahead + steady
    extra = cluster.overhead(worker.id)
    cold, steady = cold + extra, steady + extra
    if cold <= limit:
        return _better(best, _Option(2, cost, cold, v, worker, batch, False))
    if steady <= limit:
        return _better(best, _Option(3, cost, cold, v, worker, batch, False))
    return best


FUNCTION_TIER = 5  # ``_Option.tier`` of an answer by the serverless tier (decided between tiers 2 and 3)
_TIER_WORKER = Worker(id=tier.HARDWARE, hardware=tier.HARDWARE, url="")


def _function_option(ranked: tuple[tuple, ...], query: Query, cluster: Cluster, limit: float, max_cost: float,
                     floor: float, publisher: str | None) -> tuple[_Option | None, _Option | None]:
    """The cheapest ``lambda`` variant the tier answers within the objective (then the more
    accurate, the faster): its warm p99 at the query's rows, plus its cold start whenever no warm
    environment is idle (``tier.predict_ms``), plus the overhead of a hop; priced per invocation
    (``tier.invocation_cost``, the cold start billed too). And, when none is in time, the one that
    answers soonest (late)."""
    state, now = cluster.tier, cluster.now
    best = soonest = None
    for _, v, _, _ in ranked:
        if v.hardware != tier.HARDWARE or v.profile is None or not v.profile.memory_mb:
            continue
        if (v.accuracy or 0.0) < floor or not _visible(v, query.tenant, publisher):
            continue
        fp = tier.function_profile_of(v.profile)
        batch = min(query.rows, v.max_batch)
        runs = math.ceil(query.rows / batch)
        lat, p = tier.predict_ms(fp, state, v.id, now, batch)
        lat = (lat + (runs - 1) * fp.latency_at(batch, "p99")) + cluster.default_overhead_ms
        cost = runs * fp.cost_per_request(batch) + (tier.invocation_cost(fp.cold_start_ms, fp.memory_mb)
                                                    - tier.PRICE_PER_REQUEST if p > 0 else 0.0)
        if cost > max_cost or math.isinf(lat):
            continue
        option = _Option(FUNCTION_TIER, cost, lat, v, _TIER_WORKER, batch, p == 0)
        if lat > limit:
            if soonest is None or (lat, cost) < (soonest.latency_ms, soonest.cost):
                soonest = option
            continue
        key = (cost, -(v.accuracy or 0.0), lat)
        if best is None or key < best[0]:
            best = (key, option)
    return (None, soonest) if best is None else (best[1], None)


def _better(a: _Option | None, b: _Option) -> _Option:
    if a is None:
        return b
    return b if _rank(b) < _rank(a) else a


def _rank(o: _Option) -> tuple:
    """Cheapest first within a tier (equal cost: the more accurate, then the faster);
    over capacity (tier 4), the shortest wait first."""
    acc = -(o.variant.accuracy or 0.0)
    return (o.tier, o.latency_ms, o.cost, acc) if o.tier == 4 else (o.tier, o.cost, acc, o.latency_ms)


def backlog_ms(worker: Worker, variants: Mapping[str, Variant]) -> float:
    """Time to run what every replica of ``worker`` has queued, in full batches at the profiled p99."""
    return _queue_times(worker, variants)[0]


def round_ms(worker: Worker, variants: Mapping[str, Variant]) -> float:
    """Time for one batch of every replica of ``worker`` with rows queued (at the profiled p99): a
    worker runs its replicas' batches in turn, so each further batch a replica needs waits for about
    one such round of the others while they stay busy."""
    return _queue_times(worker, variants)[1]


def _queue_times(worker: Worker, variants: Mapping[str, Variant]) -> tuple[float, float]:
    """(``backlog_ms``, ``round_ms``) of ``worker``, in one pass over its replicas."""
    backlog = round_ = 0.0
    for r in worker.replicas:
        if r.queued_rows > 0:
            v = variants.get(r.variant_id)
            if v is not None and v.profile is not None:
                backlog += service_ms(v, 0, r.queued_rows)
                round_ += v.profile.latency_at(min(r.queued_rows, v.batch_cap), "p99")
    return backlog, round_


def _round(worker: Worker, cluster: Cluster, catalogue: Catalogue) -> float:
    if cluster.catalogue is catalogue:
        return cluster.rounds[worker.id]
    return round_ms(worker, catalogue.variants) if worker.replicas else 0.0


def _backlog(worker: Worker, cluster: Cluster, catalogue: Catalogue) -> float:
    """The worker's backlog from the snapshot's index, or computed when the snapshot has none."""
    if cluster.catalogue is catalogue:
        return cluster.backlog[worker.id]
    return backlog_ms(worker, catalogue.variants) if worker.replicas else 0.0


COLD_S = 10.0  # a replica unused this long (by its worker's last heartbeat) may be evicted for a cold start


def _can_make_room(w: Worker, variant: Variant) -> bool:
    """Whether the variant fits in free memory, or after evicting replicas that are idle and
    have not been used for ``COLD_S`` (the worker evicts idle ones least recently used first,
    ``eviction.choose_evictions``; a replica in use a moment ago is not thrown out for a cold start)."""
    need = variant.profile.peak_memory_bytes if variant.profile else 0
    if w.memory_used_bytes + need <= w.memory_budget_bytes:
        return True
    cold = sum(r.memory_bytes for r in w.replicas if r.queued_rows <= 0 and w.heartbeat_at - r.last_used >= COLD_S)
    return w.memory_used_bytes - cold + need <= w.memory_budget_bytes


@functools.lru_cache(maxsize=256)
def _needs(runtime: str, hardware: str) -> frozenset[str] | None:
    """The runtimes a worker must report to run a variant (None: no worker can)."""
    try:
        return frozenset(required_runtimes(runtime, hardware))
    except Exception:
        return None


def _runs(worker: Worker, variant: Variant) -> bool:
    """``runtime.hardware.can_run``: whether the worker reports the runtimes the variant needs."""
    if not worker.runtimes:
        return True  # a worker that reports no runtimes is taken at its word
    need = _needs(variant.runtime, variant.hardware)
    return need is not None and need <= set(worker.runtimes)


def _roomiest(cluster: Cluster, variant: Variant, catalogue: Catalogue) -> Worker | None:
    """Among the workers that can run the variant (a gpu worker without CUDA never gets
    a gpu variant), do not hold it yet and can make room for it: the least busy, then
    the one with the most free memory."""
    if cluster.catalogue is catalogue:  # the snapshot's order: least busy, then roomiest
        for w in cluster.idle_first.get(variant.hardware, ()):
            if variant.id not in cluster.held[w.id] and _runs(w, variant) and _can_make_room(w, variant):
                return w
        return None
    best, best_busy = None, math.inf
    for w in cluster.workers_by_hardware.get(variant.hardware, ()):  # roomiest first
        if variant.id in cluster.held.get(w.id, ()) or not _runs(w, variant) or not _can_make_room(w, variant):
            continue
        busy = _backlog(w, cluster, catalogue)
        if busy < best_busy:
            best, best_busy = w, busy
            if busy == 0.0:
                break
    return best


_WHY = {
    1: "loaded replica meets the objective at the lowest cost",
    2: "no loaded replica meets the objective; cheapest variant that loads in time",
    3: "cold start: cheapest variant whose steady latency meets the objective (this query pays its load)",
    4: "over capacity: every replica's queue breaks the objective; the shortest wait was chosen "
       "(the autoscaler adds replicas)",
    FUNCTION_TIER: "no machine replica answers in time; the serverless tier, cheapest variant in time first",
}


def _decision(o: _Option, query: Query, cluster: Cluster, displaced: str = "") -> Decision:
    obj = query.objective
    why = _WHY[o.tier]
    parts = [why, f"predicted {o.latency_ms:.2f} ms"]
    if o.tier == FUNCTION_TIER:
        parts.append("warm" if o.loaded else f"cold start {o.variant.profile.load_ms:.0f} ms included")
    if obj.latency_ms is not None:
        parts.append(f"objective {obj.latency_ms:g} ms")
    if obj.min_accuracy is not None:
        parts.append(f"accuracy {o.variant.accuracy:.3f} >= {obj.min_accuracy:g}")
    # Where to retry on a fault: another replica of the variant, else another worker that can load it.
    # (The tier has none: a function's fault is the variant's.)
    others: list[Worker] = []
    seen = {o.worker.id}
    for w in itertools.chain([w for w, _ in cluster.replicas.get(o.variant.id, ())],
                             cluster.workers_by_hardware.get(o.variant.hardware, ())):
        if w.id not in seen and _runs(w, o.variant):
            others.append(w)
            if len(others) == 2:
                break
            seen.add(w.id)
    return Decision(
        variant=o.variant.id,
        worker=o.worker.id,
        worker_url=o.worker.url,
        batch=o.batch,
        predicted_latency_ms=round(o.latency_ms, 4),
        cost_per_query=o.cost,
        accuracy=float(o.variant.accuracy or 0.0),
        loaded=o.loaded,
        reason="; ".join(parts),
        fallback_workers=tuple((w.id, w.url) for w in others[:2]),
        overhead_ms=round(cluster.overhead(o.worker.id), 4),  # the tier's pseudo-worker: the typical hop
        displaced=displaced,
    )


def _unreachable(query: Query, pool: tuple[Variant, ...], cluster: Cluster) -> NoFeasibleVariant:
    obj = query.objective
    best_acc = max((v.accuracy or 0.0) for v in pool)
    accurate = [v for v in pool if obj.min_accuracy is None or (v.accuracy or 0.0) >= obj.min_accuracy]
    fastest = min((service_ms(v, 0, query.rows) for v in (accurate or pool)), default=math.inf) + cluster.default_overhead_ms
    cheapest = min(
        (cost_per_query(v, query.rows, cluster.hardware[v.hardware].price_per_hour) for v in (accurate or pool) if v.hardware in cluster.hardware),
        default=math.inf,
    )
    reasons = []
    if not accurate:
        reasons.append(f"best accuracy available is {best_acc:.4f} < min_accuracy {obj.min_accuracy:g}")
    elif obj.latency_ms is not None and fastest > obj.latency_ms:
        reasons.append(f"fastest variant meeting the accuracy needs {fastest:.3f} ms > latency_ms {obj.latency_ms:g}")
    if obj.max_cost is not None and cheapest > obj.max_cost:
        reasons.append(f"cheapest variant costs {cheapest:.3g} $ per query > max_cost {obj.max_cost:g}")
    if not reasons:
        reasons.append("no variant meets accuracy, latency and cost together")
    return NoFeasibleVariant(
        "objective cannot be met: " + "; ".join(reasons),
        field="objective",
        best_accuracy=round(best_acc, 4),
        best_latency_ms=round(fastest, 4) if math.isfinite(fastest) else None,
        best_cost_per_query=cheapest if math.isfinite(cheapest) else None,
    )


# -- offline (batch) jobs ----------------------------------------------------------------------
def offline_variant(pool: Iterable[Variant], total_rows: int, objective: Objective, hardware: Mapping,
                    deadline_s: float | None) -> Variant:
    """The variant a batch job runs on (``app.offline``): the cheapest per row that meets the accuracy, the cost cap and,
    when given, finishes ``total_rows`` on one replica within ``deadline_s``."""
    best, best_cost = None, math.inf
    pool = list(pool)
    for v in pool:
        if objective.min_accuracy is not None and (v.accuracy or 0.0) < objective.min_accuracy:
            continue
        if v.hardware not in hardware or v.profile is None:
            continue
        cost = cost_per_query(v, v.batch_cap, hardware[v.hardware].price_per_hour) / v.batch_cap
        if objective.max_cost is not None and cost > objective.max_cost:
            continue
        if deadline_s is not None and total_rows / v.profile.throughput_rps(v.batch_cap) > deadline_s:
            continue
        if cost < best_cost:
            best, best_cost = v, cost
    if best is None:
        raise NoFeasibleVariant(
            "no variant meets the job's accuracy, cost cap and deadline",
            field="objective",
            best_accuracy=max((v.accuracy or 0.0) for v in pool),
        )
    return best
