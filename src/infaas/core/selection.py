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
* plus the worker's *backlog*: a worker runs one batch at a time for all its
  replicas (its compute pool has one thread), so what its other replicas have
  queued runs first -- ``sum of ceil(q_o / B_o) * latency_p99(min(q_o, B_o))``
  over them (``backlog_ms``). A cold start loads while that backlog runs:
  ``max(load_ms, backlog) + steady``.

Cost per query is the machine time it takes, priced by the hardware type:
``price_per_hour / 3600 * latency_p50(b) / 1000 * r / b``.

Preference, as the architecture asks: (1) a loaded replica that meets the
objective, cheapest first; (2) a variant that can be loaded *and* answer within
the objective, cheapest first; (3) a variant whose steady-state latency meets
the objective even though this first query pays the load (a cold start, said so
in the reason); (4) over capacity -- replicas that would meet the objective
but for their queues -- the shortest wait, said so in the reason, rather than
refusing work the autoscaler is about to make room for -- or, where the
deployment asks for it (``Cluster.refuse_late``), refused with 503 and
Retry-After: under overload a late answer also makes every query queued behind
it late, and refusing it keeps the rest within their objective; otherwise
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

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

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


@dataclass(frozen=True)
class Catalogue:
    """Ready, profiled variants, indexed the three ways a query can name them."""

    variants: Mapping[str, Variant]
    by_architecture: Mapping[str, tuple[Variant, ...]]
    by_task: Mapping[str, tuple[Variant, ...]]
    # Per (query shape, prices): the candidates that meet accuracy, sorted by cost, with
    # their steady and cold latencies. Filled as queries arrive; the snapshot is immutable.
    _ranked: dict = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def build(variants: Iterable[Variant]) -> "Catalogue":
        ready = [v for v in variants if v.status == "ready" and v.profile is not None and v.accuracy is not None]
        by_arch: dict[str, list[Variant]] = {}
        by_task: dict[str, list[Variant]] = {}
        for v in ready:
            by_arch.setdefault(v.architecture, []).append(v)
            by_task.setdefault(v.task, []).append(v)
        return Catalogue(
            variants={v.id: v for v in ready},
            by_architecture={k: tuple(vs) for k, vs in by_arch.items()},
            by_task={k: tuple(vs) for k, vs in by_task.items()},
        )


@dataclass(frozen=True)
class Cluster:
    """Live workers and their replicas at one instant, with hardware prices."""

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

    @functools.cached_property
    def price_key(self) -> tuple:
        """The hourly prices, hashable: part of the key of a memoised ranking."""
        return tuple(sorted((h, t.price_per_hour) for h, t in self.hardware.items()))

    @staticmethod
    def build(workers: Iterable[Worker], hardware: Mapping[str, HardwareType],
              pending: Mapping[tuple[str, str], int] | None = None, *, refuse_late: bool = False) -> "Cluster":
        """Only workers that are up (not draining) take new work."""
        up = [w for w in workers if w.state == WORKER_UP]
        replicas: dict[str, list[tuple[Worker, ReplicaLoad]]] = {}
        by_hw: dict[str, list[Worker]] = {}
        for w in up:
            by_hw.setdefault(w.hardware, []).append(w)
            for r in w.replicas:
                replicas.setdefault(r.variant_id, []).append((w, r))
        roomy = lambda w: (-(w.memory_budget_bytes - w.memory_used_bytes), len(w.replicas), w.id)
        return Cluster(
            workers={w.id: w for w in up},
            hardware=dict(hardware),
            replicas={k: tuple(v) for k, v in replicas.items()},
            workers_by_hardware={k: tuple(sorted(v, key=roomy)) for k, v in by_hw.items()},
            held={w.id: frozenset(r.variant_id for r in w.replicas) for w in up},
            pending=pending if pending is not None else {},
            refuse_late=refuse_late,
        )


def service_ms(variant: Variant, queued_rows: int, rows: int) -> float:
    """Predicted time until ``rows`` new rows are answered behind ``queued_rows``."""
    assert variant.profile is not None
    total = queued_rows + rows
    batch = min(total, variant.max_batch)
    return math.ceil(total / variant.max_batch) * variant.profile.latency_at(batch, "p99")


def cost_per_query(variant: Variant, rows: int, price_per_hour: float) -> float:
    """Dollars of machine time the query uses, at the batch it would run."""
    assert variant.profile is not None
    batch = min(rows, variant.max_batch)
    runs = math.ceil(rows / variant.max_batch)
    seconds = runs * variant.profile.latency_at(batch, "p50") / 1000.0
    return price_per_hour / 3600.0 * seconds * rows / (runs * batch)


def candidates(query: Query, catalogue: Catalogue) -> tuple[Variant, ...]:
    """The variants a query may use: named ones, visible to its tenant."""
    named = [x for x in (query.variant, query.architecture, query.task) if x]
    if len(named) != 1:
        raise InvalidInput("name exactly one of variant, architecture or task", field="target")
    if query.variant:
        found: tuple[Variant, ...] = (catalogue.variants[query.variant],) if query.variant in catalogue.variants else ()
        what = f"variant {query.variant!r}"
    elif query.architecture:
        found = catalogue.by_architecture.get(query.architecture, ())
        what = f"architecture {query.architecture!r}"
    else:
        found = catalogue.by_task.get(query.task or "", ())
        what = f"task {query.task!r}"
    key = ("visible", query.variant, query.architecture, query.task, query.tenant)
    visible = catalogue._ranked.get(key)
    if visible is None:
        visible = catalogue._ranked[key] = tuple(v for v in found if v.tenant == query.tenant or v.visibility == "shared")
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


def _ranked(query: Query, pool: tuple[Variant, ...], catalogue: Catalogue, cluster: Cluster) -> tuple[list, list]:
    """Candidates meeting the accuracy floor whose steady latency (an empty replica) meets the latency
    objective, as (cost, variant, steady_ms, cold_ms), cheapest first (equal cost: the more accurate,
    then the faster); and those of them whose load plus first batch fits the objective (they may
    load in time).

    Memoised on the catalogue snapshot in two levels: every candidate of a query
    shape (names, tenant, rows, prices) ranked once, then that list filtered per
    accuracy floor and latency objective -- so a decision scans a short sorted
    list, and a new objective for a known shape costs one pass, not a re-ranking.
    """
    limit = query.objective.latency_ms
    floor = query.objective.min_accuracy
    shape = (query.variant, query.architecture, query.task, query.tenant, query.rows, cluster.price_key)
    key = (shape, floor, limit)
    memo = catalogue._ranked
    hit = memo.get(key)
    if hit is not None:
        return hit
    ranked = memo.get(shape)
    if ranked is None:
        ranked = []
        for v in pool:
            price = cluster.hardware[v.hardware].price_per_hour if v.hardware in cluster.hardware else math.inf
            steady = service_ms(v, 0, query.rows)
            ranked.append((cost_per_query(v, query.rows, price), v, steady, v.profile.load_ms + steady))
        ranked.sort(key=lambda e: (e[0], -(e[1].accuracy or 0.0), e[2]))
        memo[shape] = ranked
    entries = [e for e in ranked
               if (floor is None or (e[1].accuracy or 0.0) >= floor)  # meets the accuracy floor
               and (limit is None or e[2] <= limit)]  # an empty replica answers in time: some tier may use it
    loadable = entries if limit is None else [e for e in entries if e[3] <= limit]
    if len(memo) > 50_000:
        memo.clear()
    memo[key] = entries, loadable
    return entries, loadable


def select(query: Query, catalogue: Catalogue, cluster: Cluster) -> Decision:
    """Choose variant, worker and batch for one query (see the module docstring)."""
    if query.rows < 1:
        raise InvalidInput("a query needs at least one row", field="inputs")
    obj = query.objective
    pool = candidates(query, catalogue)
    ranked, loadable = _ranked(query, pool, catalogue, cluster)
    limit = math.inf if obj.latency_ms is None else obj.latency_ms
    max_cost = math.inf if obj.max_cost is None else obj.max_cost

    # Tiers 1 and 4: replicas already loaded. The hot loop of a decision, kept lean: rank keys as
    # tuples -- tier 1 the cheapest (then the more accurate, the faster), tier 4 the shortest wait.
    b1 = b4 = None
    backlog = _BACKLOG  # worker record -> ms of work its replicas have queued (memoised per record)
    pending, rows, predicted = cluster.pending, query.rows, _PREDICTED
    for cost, v, steady, _cold in _with_replicas(ranked, cluster):
        if cost > max_cost or (b1 is not None and cost > b1[0][0]):
            break  # sorted by cost: nothing further can be a cheaper loaded replica
        acc = -(v.accuracy or 0.0)
        for worker, load in cluster.replicas.get(v.id, ()):
            mine = load.queued_rows
            queued = max(mine, pending.get((worker.id, v.id), 0)) if pending else mine
            hit = predicted.get(id(load)) if queued == mine else None
            if hit is not None and hit[0] is load and hit[1] is worker and hit[2] == rows and hit[4] is v:
                lat = hit[3]  # the same heartbeat record, worker record, row count and variant as before
            else:
                top, at = v.max_batch, v.profile.latency_at
                if queued:
                    total = queued + rows
                    lat = math.ceil(total / top) * at(min(total, top))
                else:
                    lat = steady
                ahead = _backlog(worker, catalogue, backlog)
                if ahead:  # what the worker's other replicas have queued runs first
                    lat += ahead - (math.ceil(mine / top) * at(min(mine, top)) if mine else 0.0)
                if queued == mine:
                    if len(predicted) > 100_000:
                        predicted.clear()
                    predicted[id(load)] = (load, worker, rows, lat, v)
            if lat <= limit:
                key = (cost, acc, lat)
                if b1 is None or key < b1[0]:
                    b1 = (key, v, worker)
            elif steady <= limit:  # only its queue is in the way
                key = (lat, cost, acc)
                if b4 is None or key < b4[0]:
                    b4 = (key, v, worker)
    best: _Option | None = None
    if b1 is not None:
        (cost, _, lat), v, worker = b1
        best = _Option(1, cost, lat, v, worker, min(rows, v.max_batch), True)
    elif b4 is not None:
        (lat, cost, _), v, worker = b4
        best = _Option(4, cost, lat, v, worker, min(rows, v.max_batch), True)

    # Tiers 2 and 3: load a variant on a worker that can run it, cheapest first: the cheapest
    # that can load in time (tier 2) among those whose load alone fits the objective, else the
    # cheapest cold start (tier 3).
    if best is None or best.tier != 1:
        for cost, v, steady, cold in loadable:
            if cost > max_cost or (best is not None and best.tier == 2 and cost > best.cost):
                break
            best = _place(best, cost, v, steady, cold, query, cluster, catalogue, backlog, limit)
        if best is None or best.tier > 2:
            for cost, v, steady, cold in ranked:
                if cost > max_cost or (best is not None and best.tier in (2, 3) and cost > best.cost):
                    break
                best = _place(best, cost, v, steady, cold, query, cluster, catalogue, backlog, limit)

    if best is not None and best.tier == 4 and cluster.refuse_late:
        # Every replica would answer late: queueing it would make the queries behind it late too.
        raise Unavailable(f"over capacity: the shortest wait for a variant meeting the objective is "
                          f"{best.latency_ms:.0f} ms > latency_ms {limit:g}; retry later (the autoscaler adds replicas)",
                          retry_after_s=max(1.0, round(best.latency_ms / 1000.0, 1)), field="objective")
    if best is None:
        accurate = [e[1] for e in ranked]
        # Placeable means some up worker could run it, whatever it costs: a
        # query priced out by max_cost is unreachable (422), not unavailable.
        placeable = any(cluster.replicas.get(v.id) or cluster.workers_by_hardware.get(v.hardware) for v in accurate)
        if not placeable and accurate:
            hw = sorted({v.hardware for v in accurate})
            raise Unavailable(f"no worker of hardware type {', '.join(hw)} is up", retry_after_s=2.0)
        raise _unreachable(query, pool, cluster)
    return _decision(best, query, cluster)


def _place(best: _Option | None, cost: float, v: Variant, steady: float, cold: float, query: Query,
           cluster: Cluster, catalogue: Catalogue, backlog: dict, limit: float) -> _Option | None:
    """``best`` or a load of ``v`` on the worker that would take it (``_roomiest``), whichever ranks first."""
    worker = _roomiest(cluster, v, catalogue, backlog)
    if worker is None:
        return best
    batch = min(query.rows, v.max_batch)
    ahead = _backlog(worker, catalogue, backlog)
    if ahead > v.profile.load_ms:  # the load overlaps the backlog; the first batch waits for both
        cold = ahead + steady
    if cold <= limit:
        return _better(best, _Option(2, cost, cold, v, worker, batch, False))
    if steady <= limit:
        return _better(best, _Option(3, cost, cold, v, worker, batch, False))
    return best


# The ranked entries with a loaded replica, memoised by the identity of the ranked list and of
# the cluster's replica map, holding both so that an id is not reused while its entry lives.
_WITH_REPLICAS: dict[tuple[int, int], tuple] = {}


def _with_replicas(ranked: list[tuple], cluster: Cluster) -> list[tuple]:
    """The ranked entries that have a loaded replica in this cluster snapshot."""
    key = (id(ranked), id(cluster.replicas))
    hit = _WITH_REPLICAS.get(key)
    if hit is not None and hit[0] is ranked and hit[1] is cluster.replicas:
        return hit[2]
    sub = [e for e in ranked if e[1].id in cluster.replicas]
    if len(_WITH_REPLICAS) > 100_000:
        _WITH_REPLICAS.clear()
    _WITH_REPLICAS[key] = (ranked, cluster.replicas, sub)
    return sub


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
    total = 0.0
    for r in worker.replicas:
        if r.queued_rows > 0:
            v = variants.get(r.variant_id)
            if v is not None and v.profile is not None:
                total += service_ms(v, 0, r.queued_rows)
    return total


# Memos keyed by the identity of immutable snapshot records (a heartbeat makes a new
# Worker record, a snapshot a new tuple of workers), holding the record so its id
# cannot be reused while the entry lives; cleared when they grow large.
_BACKLOG: dict[int, tuple[Worker, float]] = {}
_PREDICTED: dict[int, tuple] = {}  # replica record -> (record, worker, rows, predicted ms, variant)
_ROOMIEST: dict[tuple[int, str], tuple[tuple, Worker | None]] = {}


def _backlog(worker: Worker, catalogue: Catalogue, cache: dict) -> float:
    hit = cache.get(id(worker))
    if hit is not None and hit[0] is worker:
        return hit[1]
    b = backlog_ms(worker, catalogue.variants) if worker.replicas else 0.0
    if len(cache) > 100_000:
        cache.clear()
    cache[id(worker)] = (worker, b)
    return b


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


_RUNTIMES: dict[tuple[str, str], frozenset[str] | None] = {}


def _runs(worker: Worker, variant: Variant) -> bool:
    """``variants.hardware.can_run``, with the runtimes a variant needs memoised."""
    if not worker.runtimes:
        return True  # a worker that reports no runtimes is taken at its word
    key = (variant.runtime, variant.hardware)
    if key not in _RUNTIMES:
        try:
            _RUNTIMES[key] = frozenset(required_runtimes(variant.runtime, variant.hardware))
        except Exception:
            _RUNTIMES[key] = None
    need = _RUNTIMES[key]
    return need is not None and need <= set(worker.runtimes)


def _roomiest(cluster: Cluster, variant: Variant, catalogue: Catalogue | None = None,
              cache: dict[str, float] | None = None) -> Worker | None:
    """Among the workers that can run the variant (a gpu worker without CUDA never gets
    a gpu variant), do not hold it yet and can make room for it: the least busy, then
    the one with the most free memory."""
    workers = cluster.workers_by_hardware.get(variant.hardware, ())
    key = (id(workers), variant.id)
    hit = _ROOMIEST.get(key)
    if hit is not None and hit[0] is workers and catalogue is not None:
        return hit[1]
    best, best_busy = None, math.inf
    for w in workers:  # roomiest first
        if variant.id in cluster.held.get(w.id, ()) or not _runs(w, variant) or not _can_make_room(w, variant):
            continue
        busy = _backlog(w, catalogue, cache) if catalogue is not None and cache is not None else 0.0
        if busy < best_busy:
            best, best_busy = w, busy
            if busy == 0.0:
                break
    if catalogue is not None:
        if len(_ROOMIEST) > 100_000:
            _ROOMIEST.clear()
        _ROOMIEST[key] = (workers, best)
    return best


_WHY = {
    1: "loaded replica meets the objective at the lowest cost",
    2: "no loaded replica meets the objective; cheapest variant that loads in time",
    3: "cold start: cheapest variant whose steady latency meets the objective (this query pays its load)",
    4: "over capacity: every replica's queue breaks the objective; the shortest wait was chosen "
       "(the autoscaler adds replicas)",
}


def _decision(o: _Option, query: Query, cluster: Cluster) -> Decision:
    obj = query.objective
    why = _WHY[o.tier]
    parts = [why, f"predicted {o.latency_ms:.2f} ms"]
    if obj.latency_ms is not None:
        parts.append(f"objective {obj.latency_ms:g} ms")
    if obj.min_accuracy is not None:
        parts.append(f"accuracy {o.variant.accuracy:.3f} >= {obj.min_accuracy:g}")
    # Where to retry on a fault: another replica of the variant, else another worker that can load it.
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
    )


def _unreachable(query: Query, pool: tuple[Variant, ...], cluster: Cluster) -> NoFeasibleVariant:
    obj = query.objective
    best_acc = max((v.accuracy or 0.0) for v in pool)
    accurate = [v for v in pool if obj.min_accuracy is None or (v.accuracy or 0.0) >= obj.min_accuracy]
    fastest = min((service_ms(v, 0, query.rows) for v in (accurate or pool)), default=math.inf)
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
        cost = cost_per_query(v, v.max_batch, hardware[v.hardware].price_per_hour) / v.max_batch
        if objective.max_cost is not None and cost > objective.max_cost:
            continue
        if deadline_s is not None and total_rows / v.profile.throughput_rps(v.max_batch) > deadline_s:
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
