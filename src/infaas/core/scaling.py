"""Autoscaling policy: a pure function from a snapshot to a plan.

``plan(snapshot, state) -> (ScalingPlan, PolicyState)`` reads nothing and
writes nothing. The local control loop, the AWS autoscaler function and the
simulator call it with the same snapshot types; the state travels through the
metadata store between calls (a Lambda remembers nothing).

It is built from small steps, each a function tested alone:

1. ``observed_demand`` then ``estimate_demand``: rows/s per variant arriving
   (served, plus queue growth, plus the backlog spread over ten periods), rising at once, falling slowly
   (``max(observed, decay * previous)``), so one quiet period does not undo
   a scale-up.
2. ``replicas_needed``: ``ceil(demand / (throughput(B) * target_utilisation))``,
   where ``throughput(B) = B * 1000 / p50(B)`` rows/s at the variant's max batch.
3. ``apply_hysteresis``: more replicas at once; fewer only after
   ``scale_down_periods`` consecutive periods asking for fewer and
   ``cooldown_s`` since the variant last changed; a variant with no demand for
   ``idle_unload_s`` goes to zero.
4. ``choose_hardware`` (upgrade / downgrade): a hot variant moves to the same
   architecture and format on another hardware type when running it there
   would cost less than ``1 / move_ratio`` of running it here (the original
   INFaaS moved when replication cost more than 1.5x the upgrade), and, when
   ``latency_ms`` (the service's latency objective) is set, only to a variant
   whose profiled batch-1 latency meets it -- a move to a variant the
   selector can never use for those queries would be undone at once.
5. ``place``: replicas onto workers of their hardware type, keeping existing
   placements, filling the least utilised worker first, never two replicas of
   one variant on one worker, each worker at most ``target_utilisation``
   busy and within its memory.
6. ``workers_needed``: per hardware type, what the placement needs, within
   ``min_workers`` / ``max_workers`` and the hourly budget; fewer workers only
   after ``scale_down_periods`` periods and ``cooldown_s``, and the emptiest
   worker is drained first.

A *pinned* fleet (``fill_fleet_ms`` set, and hardware types whose
``min_workers`` equals ``max_workers``: machines paid for whether used or
not) replaces steps 2-4 for those types with ``fill_fleet``. Each task's
demand (the sum over its variants, sized for its recent peak, remembered
with a half-life of ``peak_halflife_s`` so that the fleet does not switch
variants at every burst edge) is served by replicas at the batch the
objective ``fill_fleet_ms`` allows, as accurate as the fleet can hold: the
selector fills a task's most accurate replicas first (on a fleet priced at
zero, equal cost goes to accuracy), and a local search that starts from what
runs now moves a replica only for a clear gain in accuracy delivered. A
worker of a pinned type whose loaded replicas are no longer assigned, are
busy, and leave no memory for its new assignment is drained: its replacement
starts empty (a busy replica is never evicted, and the selector keeps a
replica busy while it is the best one loaded).

(``latency_ms`` and the pinned fleet were added after the trace-driven
simulator, ``infaas.sim``, showed moves to variants that can never meet the
objective, and a fixed fleet filled on first come by cold starts; see
docs/evaluation.md.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from infaas.core.domain import WORKER_UP, HardwareType, Variant, Worker


@dataclass(frozen=True)
class ScalingParams:
    period_s: float = 2.0  # how often the policy runs
    target_utilisation: float = 0.7  # share of profiled throughput a replica or worker is planned to use
    demand_decay: float = 0.8  # per period, how slowly the demand estimate falls
    scale_down_periods: int = 5  # consecutive periods asking for less before removing anything
    cooldown_s: float = 10.0  # after a change of a variant or a worker count, no removal for this long
    idle_unload_s: float = 60.0  # a variant with no demand this long loses its last replica
    move_ratio: float = 1.5  # move to other hardware when it is this many times cheaper
    min_workers: Mapping[str, int] = field(default_factory=dict)
    max_workers: Mapping[str, int] = field(default_factory=dict)
    budget_per_hour: float | None = None  # dollars per hour for all workers together
    latency_ms: float | None = None  # the latency objective queries ask for; hardware moves keep to it
    fill_fleet_ms: float | None = None  # fill pinned types (min == max workers) for this objective; None: off
    peak_halflife_s: float = 300.0  # pinned fleet: how slowly a task's remembered peak demand fades
    worker_release_s: float = 60.0  # a worker type shrinks only after asking for fewer this long


@dataclass(frozen=True)
class Snapshot:
    now: float
    workers: tuple[Worker, ...]
    variants: Mapping[str, Variant]  # ready, profiled
    hardware: Mapping[str, HardwareType]
    desired_workers: Mapping[str, int]
    params: ScalingParams = ScalingParams()


@dataclass(frozen=True)
class PolicyState:
    demand_rps: Mapping[str, float] = field(default_factory=dict)  # variant -> estimate
    replicas: Mapping[str, int] = field(default_factory=dict)  # variant -> target replicas
    lower_periods: Mapping[str, int] = field(default_factory=dict)  # variant or "hw:<type>" -> count
    changed_at: Mapping[str, float] = field(default_factory=dict)  # variant or "hw:<type>" -> time
    last_demand_at: Mapping[str, float] = field(default_factory=dict)  # variant -> last time with demand
    queued_rows: Mapping[str, int] = field(default_factory=dict)  # variant -> rows queued last period
    peak_rps: Mapping[str, float] = field(default_factory=dict)  # task -> remembered peak demand (pinned fleet)

    def to_dict(self) -> dict:
        return {k: dict(getattr(self, k)) for k in self.__dataclass_fields__}

    @staticmethod
    def from_dict(d: Mapping | None) -> "PolicyState":
        d = d or {}
        return PolicyState(**{k: dict(d.get(k, {})) for k in PolicyState.__dataclass_fields__})


@dataclass(frozen=True)
class ScalingPlan:
    desired_workers: dict[str, int]
    assignments: dict[str, tuple[str, ...]]  # worker id -> variant ids it should hold
    drain: tuple[str, ...]  # workers to drain and release
    reasons: tuple[str, ...]  # one line per change, for the event log

    @property
    def changed(self) -> bool:
        return bool(self.reasons)


# -- step 1 --------------------------------------------------------------------
BACKLOG_PERIODS = 10  # a queue is planned to drain within this many periods


def queued_rows(workers: tuple[Worker, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in workers:
        for r in w.replicas:
            out[r.variant_id] = out.get(r.variant_id, 0) + r.queued_rows
    return out


def observed_demand(workers: tuple[Worker, ...], period_s: float, previous_queued: Mapping[str, int]) -> dict[str, float]:
    """Rows/s per variant arriving: served + queue growth + the backlog drained over ``BACKLOG_PERIODS``.

    Counting the queue's level every period (instead of its growth) would
    count the same waiting rows again and again and keep a cleared overload alive.
    """
    out: dict[str, float] = {}
    for w in workers:
        for r in w.replicas:
            out[r.variant_id] = out.get(r.variant_id, 0.0) + r.rate_rps
    for vid, q in queued_rows(workers).items():
        growth = max(0, q - previous_queued.get(vid, 0)) / period_s
        out[vid] = out.get(vid, 0.0) + growth + q / (BACKLOG_PERIODS * period_s)
    return out


def estimate_demand(observed: Mapping[str, float], previous: Mapping[str, float], decay: float) -> dict[str, float]:
    keys = set(observed) | set(previous)
    est = {k: max(observed.get(k, 0.0), decay * previous.get(k, 0.0)) for k in keys}
    return {k: v for k, v in est.items() if v >= 0.01}


# -- step 2 --------------------------------------------------------------------
def replica_throughput(v: Variant) -> float:
    assert v.profile is not None
    return v.profile.throughput_rps(v.max_batch)


def replicas_needed(v: Variant, demand_rps: float, target_utilisation: float) -> int:
    if demand_rps <= 0:
        return 0
    return max(1, math.ceil(demand_rps / (replica_throughput(v) * target_utilisation)))


# -- step 3 --------------------------------------------------------------------
def apply_hysteresis(
    key: str, current: int, wanted: int, now: float, state: PolicyState, params: ScalingParams
) -> tuple[int, int, bool]:
    """(new target, periods-asking-for-less, changed). Up at once; down slowly."""
    lower = state.lower_periods.get(key, 0)
    if wanted > current:
        return wanted, 0, True
    if wanted == current:
        return current, 0, False
    lower += 1
    cooled = now - state.changed_at.get(key, -math.inf) >= params.cooldown_s
    if lower >= params.scale_down_periods and cooled:
        return wanted, 0, True
    return current, lower, False


# -- step 4 --------------------------------------------------------------------
def running_cost(v: Variant, demand_rps: float, hardware: Mapping[str, HardwareType], target_utilisation: float) -> float:
    """Dollars per hour to serve ``demand_rps`` with replicas of ``v`` (a replica is priced as a share of its worker)."""
    if v.hardware not in hardware:
        return math.inf
    return replicas_needed(v, demand_rps, target_utilisation) * hardware[v.hardware].price_per_hour


def choose_hardware(
    v: Variant, demand_rps: float, variants: Mapping[str, Variant], hardware: Mapping[str, HardwareType],
    up_types: set[str], params: ScalingParams,
) -> Variant:
    """The same architecture and format on another hardware type, if it is
    ``move_ratio`` times cheaper for this demand and has workers that can run it."""
    here = running_cost(v, demand_rps, hardware, params.target_utilisation)
    best, best_cost = v, here
    for other in variants.values():
        if (other.architecture, other.format) != (v.architecture, v.format) or other.hardware == v.hardware:
            continue
        if other.hardware not in up_types and params.max_workers.get(other.hardware, 0) <= 0:
            continue
        if params.latency_ms is not None and other.profile is not None \
                and other.profile.latency_at(1, "p99") > params.latency_ms:
            continue  # the selector would never send those queries there
        there = running_cost(other, demand_rps, hardware, params.target_utilisation)
        if there * params.move_ratio < here and there < best_cost:
            best, best_cost = other, there
    return best


# -- step 5 --------------------------------------------------------------------
def place(
    targets: Mapping[str, int], variants: Mapping[str, Variant], demand: Mapping[str, float],
    workers: tuple[Worker, ...], current: Mapping[str, tuple[str, ...]], target_utilisation: float,
) -> tuple[dict[str, tuple[str, ...]], dict[str, int]]:
    """Assign replicas to workers; returns (assignments, replicas left unplaced per hardware type).

    Keeps replicas where they are when the target still wants them, then adds
    the rest to the least utilised worker of the right type that has room.
    """
    util: dict[str, float] = {w.id: 0.0 for w in workers}
    mem: dict[str, int] = {w.id: 0 for w in workers}
    held: dict[str, list[str]] = {w.id: [] for w in workers}
    by_id = {w.id: w for w in workers}

    def share(vid: str) -> float:
        v = variants[vid]
        return demand.get(vid, 0.0) / max(targets[vid], 1) / replica_throughput(v)

    def fits(w: Worker, vid: str) -> bool:
        need = variants[vid].profile.peak_memory_bytes if variants[vid].profile else 0
        return (
            vid not in held[w.id]
            and util[w.id] + share(vid) <= max(target_utilisation, share(vid))
            and mem[w.id] + need <= w.memory_budget_bytes
        )

    def put(w: Worker, vid: str) -> None:
        held[w.id].append(vid)
        util[w.id] += share(vid)
        mem[w.id] += variants[vid].profile.peak_memory_bytes if variants[vid].profile else 0

    remaining = dict(targets)
    for wid, vids in sorted(current.items()):
        for vid in vids:
            if wid in by_id and remaining.get(vid, 0) > 0 and fits(by_id[wid], vid):
                put(by_id[wid], vid)
                remaining[vid] -= 1
    homeless: dict[str, list[str]] = {}
    for vid in sorted(remaining, key=lambda x: -demand.get(x, 0.0)):
        for _ in range(remaining[vid]):
            options = [w for w in workers if w.hardware == variants[vid].hardware and fits(w, vid)]
            if not options:
                homeless.setdefault(variants[vid].hardware, []).append(vid)
                continue
            put(min(options, key=lambda w: (-util[w.id], w.id)), vid)  # best fit: the busiest with room
    # New workers for the replicas without room, packed the same way (first fit, largest share first).
    unplaced: dict[str, int] = {}
    for hw, vids in homeless.items():
        bins: list[tuple[list[str], list[float]]] = []  # (variants, [utilisation, memory])
        budget = max((w.memory_budget_bytes for w in workers if w.hardware == hw), default=None)
        for vid in sorted(vids, key=lambda x: -share(x)):
            need = variants[vid].profile.peak_memory_bytes if variants[vid].profile else 0
            for held_here, used in bins:
                if vid not in held_here and used[0] + share(vid) <= target_utilisation \
                        and (budget is None or used[1] + need <= budget):
                    held_here.append(vid)
                    used[0] += share(vid)
                    used[1] += need
                    break
            else:
                bins.append(([vid], [share(vid), need]))
        unplaced[hw] = len(bins)
    return {wid: tuple(sorted(v)) for wid, v in held.items()}, unplaced


# -- step 4b: a pinned fleet ----------------------------------------------------------
def pinned_types(params: ScalingParams) -> set[str]:
    if params.fill_fleet_ms is None:
        return set()
    return {hw for hw, n in params.min_workers.items() if n > 0 and params.max_workers.get(hw) == n}


def fill_fleet(demand: Mapping[str, float], variants: Mapping[str, Variant], workers: tuple[Worker, ...],
               objective_ms: float, target_utilisation: float, current: Mapping[str, int] | None = None,
               min_gain: float = 0.002) -> tuple[dict[str, int], dict[str, float]]:
    """Replicas per variant serving each task's demand (rows/s) on ``workers``, a fleet of fixed size.

    A replica of ``v`` carries ``throughput(B) * target_utilisation`` rows/s, ``B`` being the batch
    the objective allows (``batching.batch_limits``); variants that cannot batch within the objective
    (``2 * p99(1) > objective``) are not used. A replica takes a worker, or its share of the worker's
    memory if that is smaller. The selector fills a task's most accurate replicas first, so replicas
    ``R`` *deliver* ``sum(accuracy x rows/s)`` of the demand poured into them in accuracy order
    (rows without room deliver nothing).

    Local search from ``current`` (replicas per variant now): while a move raises what the fleet
    delivers by at least ``min_gain`` of the total demand, take the best -- one more replica where
    a worker is free, or one replica swapped for another on the same hardware type (any task's) --;
    so a steady demand keeps its replicas, a burst trades accuracy for room and a lull trades back.
    Replicas that then deliver nothing are dropped; workers left over get more replicas -- of what
    they hold now if the task still uses it, else of the task's most accurate variant with room --,
    to the task with the least capacity for its demand (headroom). Returns (replicas per variant,
    rows/s per task left without room).
    """
    from infaas.core.batching import batch_limits

    current = current or {}
    budget: dict[str, int] = {}
    slots: dict[str, float] = {}
    hosts: dict[str, int] = {}
    for w in workers:
        slots[w.hardware] = slots.get(w.hardware, 0.0) + 1.0
        hosts[w.hardware] = hosts.get(w.hardware, 0) + 1
        budget[w.hardware] = max(budget.get(w.hardware, 0), w.memory_budget_bytes)
    opts: dict[str, list[tuple[Variant, float, float, float]]] = {}  # task -> (variant, thr, accuracy, worker share)
    for v in variants.values():
        if v.hardware not in slots or v.profile is None or 2 * v.profile.latency_at(1, "p99") > objective_ms:
            continue
        b = batch_limits(v.profile, v.max_batch, objective_ms).max_batch
        thr = b * 1000.0 / v.profile.latency_at(b, "p50") * target_utilisation
        share = min(1.0, v.profile.peak_memory_bytes / budget[v.hardware]) if budget[v.hardware] else 1.0
        opts.setdefault(v.task, []).append((v, thr, float(v.accuracy or 0.0), share))
    tasks = sorted((t for t in demand if demand[t] > 0 and t in opts), key=lambda t: (-demand[t], t))
    for t in tasks:
        opts[t].sort(key=lambda o: (-o[2], -o[1], o[0].id))  # most accurate first
    info = {o[0].id: o for t in tasks for o in opts[t]}
    task_of = {o[0].id: t for t in tasks for o in opts[t]}
    left = dict(slots)
    out: dict[str, int] = {}
    total = sum(demand[t] for t in tasks)

    def use(vid: str) -> float:  # workers one replica takes
        return 1.0 if info[vid][3] >= 1.0 else max(info[vid][3], 1.0 / hosts[info[vid][0].hardware])

    def room(vid: str, freed: str | None = None) -> bool:
        hw = info[vid][0].hardware
        free = left[hw] + (use(freed) if freed else 0.0)
        return free + 1e-9 >= use(vid) and out.get(vid, 0) < hosts[hw]

    def delivered(t: str, extra: str | None = None, less: str | None = None) -> float:
        rest, got = demand[t], 0.0
        for v, thr, acc, _ in opts[t]:
            n = out.get(v.id, 0) + (v.id == extra) - (v.id == less)
            if n > 0 and rest > 0:
                served = min(rest, n * thr)
                got += served * acc
                rest -= served
        return got

    def apply(add: str, drop: str | None) -> None:
        out[add] = out.get(add, 0) + 1
        left[info[add][0].hardware] -= use(add)
        if drop:
            out[drop] -= 1
            left[info[drop][0].hardware] += use(drop)

    for vid, n in sorted(current.items()):  # what runs now, as far as it still fits
        if vid in info:
            for _ in range(n):
                if room(vid):
                    apply(vid, None)
    by_hw: dict[str, list[str]] = {}
    for t in tasks:
        for o in opts[t]:
            by_hw.setdefault(o[0].hardware, []).append(o[0].id)
    base = {t: delivered(t) for t in tasks}
    while True:
        best = None
        for hw, vids in by_hw.items():
            held = [d for d in vids if out.get(d, 0) > 0]
            for add in vids:
                t = task_of[add]
                for drop in [None, *held]:
                    if drop == add or not room(add, drop):
                        continue
                    if drop is None:
                        gain = delivered(t, extra=add) - base[t]
                    elif task_of[drop] == t:
                        gain = delivered(t, extra=add, less=drop) - base[t]
                    else:
                        d = task_of[drop]
                        if sum(out.get(o[0].id, 0) for o in opts[d]) <= 1:
                            continue  # every task keeps a replica
                        gain = delivered(t, extra=add) - base[t] + delivered(d, less=drop) - base[d]
                    if gain >= min_gain * total and (best is None or gain > best[0]):
                        best = (gain, add, drop)
        if best is None:
            break
        _, add, drop = best
        apply(add, drop)
        for t in {task_of[add], task_of[drop] if drop else task_of[add]}:
            base[t] = delivered(t)
    for t in tasks:  # replicas that deliver nothing (more accurate ones carry the demand) make room
        for v, thr, _, _ in reversed(opts[t]):
            while out.get(v.id, 0) and sum(o[1] * out.get(o[0].id, 0) for o in opts[t] if o[0].id != v.id) \
                    + thr * (out[v.id] - 1) >= demand[t] - 1e-9 and delivered(t, less=v.id) >= delivered(t) - 1e-9 \
                    and sum(out.get(o[0].id, 0) for o in opts[t]) > 1:
                out[v.id] -= 1
                left[v.hardware] += use(v.id)
    for t in tasks:  # a task without a replica (no room at all) is short in full
        if not any(out.get(o[0].id, 0) for o in opts[t]):
            room_any = [o for o in opts[t] if room(o[0].id)]
            if room_any:
                apply(max(room_any, key=lambda o: (o[1], o[2]))[0].id, None)
    cap = {t: sum(o[1] * out.get(o[0].id, 0) for o in opts[t]) for t in tasks}
    short = {t: demand[t] - cap[t] for t in tasks if cap[t] < demand[t] - 1e-9}
    while True:  # headroom on the workers left over
        best = None
        for t in tasks:
            free = [o for o in opts[t] if room(o[0].id)]
            if free:
                key = (cap[t] / demand[t], t)
                if best is None or key < best[0]:
                    best = (key, t, max(free, key=lambda o: (current.get(o[0].id, 0) > out.get(o[0].id, 0), o[2], o[1])))
        if best is None:
            break
        _, t, o = best
        apply(o[0].id, None)
        cap[t] += o[1]
    return {k: n for k, n in out.items() if n > 0}, short


def switch_drains(workers: tuple[Worker, ...], assignments: Mapping[str, tuple[str, ...]],
                  variants: Mapping[str, Variant], pinned: set[str]) -> list[str]:
    """Workers of pinned types that cannot load their assignment beside busy replicas no longer assigned."""
    out = []
    for w in workers:
        if w.hardware not in pinned:
            continue
        want = set(assignments.get(w.id, ()))
        loaded = {r.variant_id: r for r in w.replicas}
        stale = [r for vid, r in loaded.items() if vid not in want]
        missing = [vid for vid in want if vid not in loaded]
        if not stale or not missing:
            continue
        busy = sum(r.memory_bytes for r in stale if r.queued_rows > 0)
        kept = sum(r.memory_bytes for vid, r in loaded.items() if vid in want)
        need = sum(variants[v].profile.peak_memory_bytes for v in missing if variants[v].profile)
        if busy and kept + busy + need > w.memory_budget_bytes:
            out.append(w.id)
    return out


# -- step 6 --------------------------------------------------------------------
def workers_needed(live: int, busy: int, unplaced: int, hardware: str, params: ScalingParams) -> int:
    """Workers of one type: the busy ones plus one per replica without room,
    within ``min_workers`` and ``max_workers`` (default: no more than live)."""
    lo = params.min_workers.get(hardware, 0)
    hi = params.max_workers.get(hardware, max(lo, live))
    wanted = live + unplaced if unplaced else busy
    return max(lo, min(hi, wanted))


def within_budget(desired: Mapping[str, int], hardware: Mapping[str, HardwareType], budget: float | None,
                  minimum: Mapping[str, int] | None = None, rows_per_s: Mapping[str, float] | None = None) -> dict[str, int]:
    """Trim workers until the fleet's hourly price fits the budget.

    Never below ``minimum`` per type. The worker given up each time is of the type whose
    workers serve the fewest rows per dollar (``rows_per_s``: the demand planned onto each
    type), so a tight budget keeps the capacity that answers the most queries; without
    demand figures, the most expensive type goes first.
    """
    out = dict(desired)
    if budget is None:
        return out
    minimum = minimum or {}
    price = lambda h: hardware[h].price_per_hour if h in hardware else 0.0
    cost = lambda d: sum(n * price(h) for h, n in d.items())

    def value(h: str) -> tuple:
        if rows_per_s is None:
            return (-price(h), h)
        return (rows_per_s.get(h, 0.0) / max(out[h], 1) / max(price(h), 1e-9), h)

    while cost(out) > budget:
        spare = [h for h in out if out[h] > minimum.get(h, 0) and price(h) > 0]
        if not spare:
            break
        out[min(spare, key=value)] -= 1
    return out


def _idle_worker(workers: list[Worker], assignments: Mapping[str, tuple[str, ...]]) -> Worker:
    return min(workers, key=lambda w: (len(assignments.get(w.id, ())), sum(r.queued_rows for r in w.replicas), w.id))


# -- the policy ------------------------------------------------------------------
def plan(snap: Snapshot, state: PolicyState, current: Mapping[str, tuple[str, ...]]) -> tuple[ScalingPlan, PolicyState]:
    """One control period. ``current`` is the previous plan's assignments."""
    p = snap.params
    up = tuple(w for w in snap.workers if w.state == WORKER_UP)
    reasons: list[str] = []
    observed = observed_demand(up, p.period_s, state.queued_rows)
    demand = estimate_demand(observed, state.demand_rps, p.demand_decay)
    last_demand = {**state.last_demand_at, **{k: snap.now for k, v in observed.items() if v > 0}}
    up_types = {w.hardware for w in up}

    # Which variant serves each demand (upgrade / downgrade), and how many replicas.
    targets: dict[str, int] = {}
    lower = dict(state.lower_periods)
    changed_at = dict(state.changed_at)
    served_demand: dict[str, float] = {}
    pinned = pinned_types(p)
    if pinned:  # step 4b: the pinned types' replicas, per task
        by_task: dict[str, float] = {}
        for vid, rate in demand.items():
            v = snap.variants.get(vid)
            if v is not None and v.hardware in pinned:
                by_task[v.task] = by_task.get(v.task, 0.0) + rate
        fleet = tuple(w for w in up if w.hardware in pinned)
        fade = 0.5 ** (p.period_s / p.peak_halflife_s)
        peak = {t: max(by_task.get(t, 0.0), fade * state.peak_rps.get(t, 0.0)) for t in set(by_task) | set(state.peak_rps)}
        peak = {t: r for t, r in peak.items() if r >= 0.01}
        held: dict[str, int] = {}
        for w in fleet:
            for r in w.replicas:
                held[r.variant_id] = held.get(r.variant_id, 0) + 1
        sized = {t: max(by_task.get(t, 0.0), peak.get(t, 0.0)) for t in by_task}  # room for the recent peak
        pinned_targets, short = fill_fleet(sized, {k: v for k, v in snap.variants.items() if v.hardware in pinned},
                                           fleet, p.fill_fleet_ms, p.target_utilisation, held)
        for vid, n in sorted(pinned_targets.items()):
            if state.replicas.get(vid, 0) != n:
                changed_at[vid] = snap.now
                reasons.append(f"fleet: {vid} {state.replicas.get(vid, 0)} -> {n} replicas")
            targets[vid] = n
            v = snap.variants[vid]
            served_demand[vid] = by_task.get(v.task, 0.0) * n / max(1, sum(
                m for o, m in pinned_targets.items() if snap.variants[o].task == v.task))
        for t, rate in sorted(short.items()):
            reasons.append(f"fleet: no room for {rate:.0f} rows/s of {t}")
    for vid in sorted(set(demand) | set(state.replicas)):
        v = snap.variants.get(vid)
        if v is None or v.hardware in pinned:
            continue
        rate = demand.get(vid, 0.0)
        chosen = choose_hardware(v, rate, snap.variants, snap.hardware, up_types, p) if rate > 0 else v
        if chosen.id != vid:
            reasons.append(f"move {vid} -> {chosen.id}: {rate:.0f} rows/s cost "
                           f"{running_cost(chosen, rate, snap.hardware, p.target_utilisation):.3f} $/h there vs "
                           f"{running_cost(v, rate, snap.hardware, p.target_utilisation):.3f} $/h here")
            changed_at[vid] = changed_at[chosen.id] = snap.now
            targets[chosen.id] = max(targets.get(chosen.id, 0), replicas_needed(chosen, rate, p.target_utilisation))
            served_demand[chosen.id] = served_demand.get(chosen.id, 0.0) + rate
            continue
        have = state.replicas.get(vid, sum(vid in vs for vs in current.values()))
        if snap.now - last_demand.get(vid, -math.inf) >= p.idle_unload_s:
            wanted = 0  # no request for idle_unload_s: unload its last replica
        else:  # a quiet variant keeps one replica until then
            wanted = max(1 if have else 0, replicas_needed(v, rate, p.target_utilisation))
        if v.hardware in p.max_workers:  # one replica per worker: no more than the fleet can hold
            wanted = min(wanted, max(p.max_workers[v.hardware], 1))
        new, lower[vid], changed = apply_hysteresis(vid, have, wanted, snap.now, replace(state, changed_at=changed_at), p)
        if changed:
            changed_at[vid] = snap.now
            reasons.append(f"replicas of {vid}: {have} -> {new} (demand {rate:.1f} rows/s, "
                           f"{replica_throughput(v):.0f} rows/s per replica at {p.target_utilisation:.0%})")
        if new > 0:
            targets[vid] = max(targets.get(vid, 0), new)
            served_demand[vid] = served_demand.get(vid, 0.0) + rate

    assignments, unplaced = place(targets, snap.variants, served_demand, up, current, p.target_utilisation)
    switched = switch_drains(up, assignments, snap.variants, pinned) if pinned else []
    for wid in switched:
        assignments.pop(wid, None)
        reasons.append(f"drain {wid} to switch its variant (busy replicas no longer assigned)")

    # Worker counts per hardware type.
    desired: dict[str, int] = {}
    drain: list[str] = []
    # fewer workers only after asking for fewer for worker_release_s (more at once)
    release = replace(p, scale_down_periods=max(p.scale_down_periods, math.ceil(p.worker_release_s / p.period_s)))
    for hw in sorted(set(snap.desired_workers) | set(p.min_workers) | set(unplaced) | up_types):
        live = [w for w in up if w.hardware == hw]
        have = snap.desired_workers.get(hw, len(live))
        busy = sum(1 for w in live if assignments.get(w.id))
        wanted = workers_needed(len(live), busy, unplaced.get(hw, 0), hw, p)
        key = f"hw:{hw}"
        new, lower[key], changed = apply_hysteresis(key, have, wanted, snap.now, replace(state, changed_at=changed_at), release)
        if changed:
            changed_at[key] = snap.now
            why = f"{unplaced.get(hw, 0)} replica(s) without room" if new > have else f"{len(live) - busy} idle worker(s)"
            reasons.append(f"{hw} workers: {have} -> {new} ({why})")
        desired[hw] = new
        pool = [w for w in live if w.id not in switched]
        for _ in range(len(live) - new):  # drain the emptiest first
            victim = _idle_worker(pool, assignments)
            pool.remove(victim)
            drain.append(victim.id)
            assignments.pop(victim.id, None)
    drain.extend(switched)
    planned_rows: dict[str, float] = {}
    for vid, rate in served_demand.items():
        v = snap.variants.get(vid)
        if v is not None:
            planned_rows[v.hardware] = planned_rows.get(v.hardware, 0.0) + rate
    budgeted = within_budget(desired, snap.hardware, p.budget_per_hour, p.min_workers, planned_rows)
    if budgeted != desired:
        reasons.append(f"hourly budget {p.budget_per_hour} $ caps workers at {budgeted}")
    new_state = PolicyState(
        demand_rps=demand,
        replicas=targets,
        lower_periods={k: v for k, v in lower.items() if v},
        changed_at=changed_at,
        last_demand_at={k: t for k, t in last_demand.items() if snap.now - t < 10 * p.idle_unload_s},
        queued_rows=queued_rows(up),
        peak_rps=peak if pinned else {},
    )
    return ScalingPlan(budgeted, assignments, tuple(drain), tuple(reasons)), new_state


def control_period(snapshot: Snapshot, state: PolicyState,
                   previous: Mapping[str, Sequence[str]]) -> tuple[ScalingPlan, PolicyState]:
    """One control period, as the autoscaler (local loop and Lambda) and the simulator run it:
    a worker's current placement is what the previous plan assigned it plus what it
    reports loaded (a replica still loading, or not yet unloaded, counts); workers
    that are gone are dropped."""
    live = {w.id for w in snapshot.workers}
    actual = {w.id: {r.variant_id for r in w.replicas} for w in snapshot.workers}
    current = {wid: tuple(sorted(set(previous.get(wid, ())) | actual[wid])) for wid in live}
    return plan(snapshot, state, current)
