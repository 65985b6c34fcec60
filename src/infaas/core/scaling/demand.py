"""Steps 1-3 of the scaling policy (``infaas.core.scaling``): demand per variant, the replicas it needs, hysteresis."""

from __future__ import annotations

import math
from typing import Mapping

from infaas.core.domain import Variant, Worker
from infaas.core.scaling.model import PolicyState, ScalingParams

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


def burst_rows(workers: tuple[Worker, ...]) -> dict[str, int]:
    """Rows per variant in its replicas' busiest recent sub-second window (``ReplicaLoad.peak_rows``)."""
    out: dict[str, int] = {}
    for w in workers:
        for r in w.replicas:
            if r.peak_rows > 0:
                out[r.variant_id] = out.get(r.variant_id, 0) + r.peak_rows
    return {k: out[k] for k in sorted(out)}


def estimate_demand(observed: Mapping[str, float], previous: Mapping[str, float], decay: float) -> dict[str, float]:
    keys = sorted(set(observed) | set(previous))  # a fixed order: later sums over this dict are exact to the bit
    est = {k: max(observed.get(k, 0.0), decay * previous.get(k, 0.0)) for k in keys}
    return {k: v for k, v in est.items() if v >= 0.01}


# -- step 2 --------------------------------------------------------------------
def replica_throughput(v: Variant) -> float:
    assert v.profile is not None
    return v.profile.throughput_rps(v.batch_cap)


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
