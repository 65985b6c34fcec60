"""The pinned (fixed) fleet optimiser of the scaling policy (``infaas.core.scaling``): machines paid for whether
used or not, filled with the most accurate replicas the objective allows. On when ``ScalingParams.fill_fleet_ms`` is set
(today only the simulator sets it: ``infaas sim compare`` in fixed-cluster mode)."""

from __future__ import annotations

import math
from typing import Mapping

from infaas.core.burst import clump_capacity
from infaas.core.domain import Variant, Worker
from infaas.core.scaling.model import ScalingParams


# -- step 4b: a pinned fleet ----------------------------------------------------------
def pinned_types(params: ScalingParams) -> set[str]:
    if params.fill_fleet_ms is None:
        return set()
    return {hw for hw, n in params.min_workers.items() if n > 0 and params.max_workers.get(hw) == n}


def fits(v: Variant, objective_ms: float) -> bool:
    """Whether the fleet uses ``v``: it can batch within the objective (``2 * p99(1) <= objective``)."""
    return v.profile is not None and 2 * v.profile.latency_at(1, "p99") <= objective_ms


def fill_fleet(demand: Mapping[str, float], variants: Mapping[str, Variant], workers: tuple[Worker, ...],
               objective_ms: float, target_utilisation: float, current: Mapping[str, int] | None = None,
               min_gain: float = 0.01, switch_gain: float = 0.05, levels: tuple[tuple[Mapping[str, float], frozenset], ...] = (),
               clump: frozenset = frozenset(), serve_weight: float = 0.5) -> tuple[dict[str, int], dict[str, float]]:
    """Replicas per variant serving each task's demand (rows/s) on ``workers``, a fleet of fixed size.

    A replica of ``v`` carries ``throughput(B) * target_utilisation`` rows/s, ``B`` being the batch
    the objective allows (``batching.batch_limits``); variants that cannot batch within the objective
    (``2 * p99(1) > objective``) are not used. A replica takes a worker, or its share of the worker's
    memory if that is smaller. The selector fills a task's most accurate replicas first, so replicas
    ``R`` *deliver* ``sum((accuracy + serve_weight) x rows/s)`` of the demand poured into them in
    accuracy order (rows without room deliver nothing): a row answered in time is worth
    ``serve_weight`` beside its accuracy, so that a fleet short of room answers more rows with less
    accurate variants rather than fewer with the best.

    Sub-second bursts (``core.burst``): for the tasks in ``clump``, ``demand`` is the task's busiest
    recent clump (rows per second of objective) and a replica's room for it is its clump capacity
    (``burst.clump_capacity``: rows it answers within the objective when they arrive at once, not
    its throughput over a second). ``levels`` are further loads, each poured the same way and
    counted too (``(load, tasks in clumps)``): the typical clump and the mean rate, so that the fleet
    holds accurate replicas for the load that is there most of the time and fast fallbacks for the
    clumps, which the selector fills once the accurate replicas' queues would answer late.

    Local search from ``current`` (replicas per variant now): while a move raises what the fleet
    delivers by at least ``min_gain`` of the total demand, take the best -- one more replica where
    a worker is free, or one replica swapped for another on the same hardware type (any task's) --;
    so a steady demand keeps its replicas, a burst trades accuracy for room and a lull trades back.
    Replicas that then deliver nothing are dropped; workers left over get more replicas -- of what
    they hold now if the task still uses it, else of the task's most accurate variant with room --,
    to the task with the least capacity for its demand (headroom). Returns (replicas per variant,
    rows/s per task left without room).
    """
    from infaas.core.batching import replica_limits

    current = current or {}
    budget: dict[str, int] = {}
    slots: dict[str, float] = {}
    hosts: dict[str, int] = {}
    for w in workers:
        slots[w.hardware] = slots.get(w.hardware, 0.0) + 1.0
        hosts[w.hardware] = hosts.get(w.hardware, 0) + 1
        budget[w.hardware] = max(budget.get(w.hardware, 0), w.memory_budget_bytes)
    opts: dict[str, list[tuple[Variant, float, float, float]]] = {}  # task -> (variant, thr, accuracy, worker share)
    clump_thr: dict[str, float] = {}  # a replica's clump capacity (``burst.clump_capacity``) per second of objective
    for v in variants.values():
        if v.hardware not in slots or not fits(v, objective_ms):
            continue
        b = replica_limits(v, objective_ms).max_batch
        thr = b * 1000.0 / v.profile.latency_at(b, "p50") * target_utilisation
        share = min(1.0, v.profile.peak_memory_bytes / budget[v.hardware]) if budget[v.hardware] else 1.0
        opts.setdefault(v.task, []).append((v, thr, float(v.accuracy or 0.0), share))
        clump_thr[v.id] = clump_capacity(v, objective_ms) * 1000.0 / objective_ms
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

    def poured(t: str, rest: float, extra: str | None, less: str | None, in_clumps: frozenset = frozenset()) -> float:
        in_clumps = t in in_clumps
        got = 0.0
        for v, thr, acc, _ in opts[t]:
            n = out.get(v.id, 0) + (v.id == extra) - (v.id == less)
            if n > 0 and rest > 0:
                served = min(rest, n * (clump_thr[v.id] if in_clumps else thr))
                got += served * (acc + serve_weight)
                rest -= served
        return got

    def delivered(t: str, extra: str | None = None, less: str | None = None) -> float:
        got = poured(t, demand[t], extra, less, clump)
        for level, in_clumps in levels:  # and at the loads that are there most of the time
            got += poured(t, min(level.get(t, 0.0), demand[t]), extra, less, in_clumps)
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
    # The search above moves one replica at a time from what runs now and can stop at a fleet that
    # no single move improves. A fleet built afresh -- each worker in turn to the replica that adds
    # most -- replaces it when it delivers clearly more (``switch_gain`` of the total): a burst
    # that the current split of the fleet cannot follow re-splits it, a small gain does not.
    kept_out, kept_left = dict(out), dict(left)
    value = sum(base.values())
    out.clear()
    left.update(slots)
    base = {t: delivered(t) for t in tasks}
    while True:
        best = None
        for vid in info:
            if room(vid):
                gain = delivered(task_of[vid], extra=vid) - base[task_of[vid]]
                if gain > 1e-9 and (best is None or gain > best[0]):
                    best = (gain, vid)
        if best is None:
            break
        apply(best[1], None)
        base[task_of[best[1]]] = delivered(task_of[best[1]])
    if sum(base.values()) < value + switch_gain * max(value, 1e-9):
        out.clear()
        out.update(kept_out)
        left.update(kept_left)
    for t in tasks:  # replicas that deliver nothing (more accurate ones carry the demand) make room
        for v, thr, _, _ in reversed(opts[t]):
            while out.get(v.id, 0) and sum(o[1] * out.get(o[0].id, 0) for o in opts[t] if o[0].id != v.id) \
                    + thr * (out[v.id] - 1) >= demand[t] - 1e-9 and delivered(t, less=v.id) >= delivered(t) - 1e-9 \
                    and sum(out.get(o[0].id, 0) for o in opts[t]) > 1:
                out[v.id] -= 1
                left[v.hardware] += use(v.id)
    for t in tasks:  # a task without a replica gets one: where a worker is free, else in place of the
        # replica of another task (one with more than one) whose loss delivers least less; a task
        # with no replica at all would have every query refused until the next plan
        if not any(out.get(o[0].id, 0) for o in opts[t]):
            room_any = [o for o in opts[t] if room(o[0].id)]
            if room_any:
                apply(max(room_any, key=lambda o: (o[1], o[2]))[0].id, None)
                continue
            swaps = []
            for o in opts[t]:
                for d in by_hw.get(o[0].hardware, ()):
                    other = task_of[d]
                    if (other != t and out.get(d, 0) > 0 and room(o[0].id, d)
                            and sum(out.get(x[0].id, 0) for x in opts[other]) > 1):
                        swaps.append((base[other] - delivered(other, less=d), -o[1], o[0].id, d))
            if swaps:
                _, _, add, drop = min(swaps)
                apply(add, drop)
                base[task_of[drop]] = delivered(task_of[drop])
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


def keep_last_replicas(workers: tuple[Worker, ...], switched: list[str], variants: Mapping[str, Variant],
                       objective_ms: float | None) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Make before break: of the workers ``switch_drains`` would drain, those that hold a task's last
    loaded replica -- one the fleet uses (``fits``) -- keep what they run for now, one per task:
    draining it would leave every query of the task refused until the worker is back and loaded.
    The switch is made at a later plan, once the replica is idle or the task has another (``plan``
    bounds the wait: ``ScalingParams.keep_last_s``). Returns ``{worker: (variants it keeps, tasks it
    is the last replica of)}``; replicas of variants not in ``variants`` (deleted, not ready) are
    neither kept nor count as a task's replica."""
    def task(vid: str) -> str | None:
        return variants[vid].task if vid in variants else None

    drained = set(switched)
    elsewhere = {task(r.variant_id) for w in workers if w.id not in drained for r in w.replicas} - {None}
    out = {}
    for w in workers:
        if w.id not in drained:
            continue
        known = [r.variant_id for r in w.replicas if r.variant_id in variants]
        last = sorted({task(vid) for vid in known if task(vid) not in elsewhere
                       and fits(variants[vid], objective_ms or math.inf)})
        if last:
            out[w.id] = (tuple(sorted(known)), tuple(last))
            elsewhere.update(last)
    return out
