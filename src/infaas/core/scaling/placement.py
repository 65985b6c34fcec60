"""Steps 4-6 of the scaling policy (``infaas.core.scaling``): hardware moves, placing replicas on workers, worker counts."""

from __future__ import annotations

import math
from typing import Mapping

from infaas.core.domain import HardwareType, Variant, Worker
from infaas.core.scaling.demand import replica_throughput, replicas_needed
from infaas.core.scaling.model import ScalingParams


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
