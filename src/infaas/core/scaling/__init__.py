"""Autoscaling policy: a pure function from a snapshot to a plan.

``plan(snapshot, state, current) -> (ScalingPlan, PolicyState)`` reads nothing
and writes nothing. The local control loop, the AWS autoscaler function and the
simulator call it through ``control_period`` (which works out ``current``, the
placement the plan starts from) with the same snapshot types; the state travels through the
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
demand (the sum over its variants, sized for its recent peak -- the mean
rate, or the clump that recurs: ``clump_margin`` times the typical clump or
``outlier_share`` of the busiest recent one --, remembered with a half-life
of ``peak_halflife_s`` so that the fleet does not switch variants at every
burst edge) is served by replicas at the batch the
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
from dataclasses import replace
from typing import Mapping, Sequence

from infaas.core import tier
from infaas.core.burst import clump_capacity
from infaas.core.domain import WORKER_UP
from infaas.core.scaling.demand import (  # noqa: F401
    BACKLOG_PERIODS,
    apply_hysteresis,
    burst_rows,
    estimate_demand,
    observed_demand,
    queued_rows,
    replica_throughput,
    replicas_needed,
)
from infaas.core.scaling.fixed_fleet import (  # noqa: F401
    fill_fleet,
    keep_last_replicas,
    pinned_types,
    switch_drains,
)
from infaas.core.scaling.model import PolicyState, ScalingParams, ScalingPlan, Snapshot  # noqa: F401
from infaas.core.scaling.placement import (  # noqa: F401
    _idle_worker,
    choose_hardware,
    place,
    running_cost,
    within_budget,
    workers_needed,
)


# -- the serverless tier -----------------------------------------------------------
def tier_moves(snap: Snapshot) -> list[tuple[str, str, float]]:
    """``(lambda variant, machine variant, rows/s)`` for the tier's load that machines would serve
    for less: the same architecture and format on the tier's machine type (``tier.HOST``: the
    same files, the same kind of CPU), its replicas priced as whole
    workers (``running_cost``) against the tier's invocations at their warm cost
    (``tier.FunctionProfile.cost_per_request``). Rare and spiky load stays on the tier, which bills
    nothing while idle; a steady load moves, and the selector then prefers the loaded replica. The
    tier's load of a variant whose machine sibling is loaded already is overflow (the selector
    sends a query to the tier only when no replica answers in time): the selector names the
    machine variant each such query was taken from (``Decision.displaced``: a late queue or a cold
    start), which the data plane and the simulator count as that variant's demand at any price, as
    a refused query (``Snapshot.unserved``); a sibling loaded or displaced is not counted here
    again."""
    out = []
    p = snap.params
    loaded = {r.variant_id for w in snap.workers if w.state == WORKER_UP for r in w.replicas}
    for vid, rate in sorted(snap.tier_rps.items()):
        v = snap.variants.get(vid)
        if v is None or rate <= 0 or v.profile is None or not v.profile.memory_mb:
            continue
        on_tier = _tier_per_hour(v, rate)
        homes = [(running_cost(h, rate, snap.hardware, p.target_utilisation), h.id) for h in snap.variants.values()
                 if h.hardware == tier.HOST and h.architecture == v.architecture and h.format == v.format
                 and h.runtime == v.runtime and h.tenant == v.tenant and h.hardware in snap.hardware]
        if any(h in loaded or h in snap.unserved for _, h in homes):
            continue  # its overflow, or displaced: counted where the selector displaced it (``Snapshot.unserved``)
        if homes and min(homes)[0] < on_tier:
            out.append((vid, min(homes)[1], rate))
    return out


def tier_spend(snap: Snapshot, rates: Mapping[str, float] | None = None) -> float:
    """Dollars per hour the tier's invocations cost at their recent rate (warm): ``snap.tier_rps``,
    or ``rates`` per lambda variant."""
    return sum(_tier_per_hour(v, rate) for vid, rate in (snap.tier_rps if rates is None else rates).items()
               if (v := snap.variants.get(vid)) is not None and v.profile is not None and v.profile.memory_mb)


def _tier_per_hour(v, rate: float) -> float:
    """Dollars per hour of ``rate`` warm invocations per second of the lambda variant ``v``."""
    return rate * 3600.0 * tier.function_profile_of(v.profile).cost_per_request()


# -- the policy ------------------------------------------------------------------
def plan(snap: Snapshot, state: PolicyState, current: Mapping[str, tuple[str, ...]]) -> tuple[ScalingPlan, PolicyState]:
    """One control period. ``current`` is the previous plan's assignments."""
    p = snap.params
    up = tuple(w for w in snap.workers if w.state == WORKER_UP)
    reasons: list[str] = []
    observed = observed_demand(up, p.period_s, state.queued_rows)
    for vid, (rate, _) in snap.unserved.items():  # turned away: no heartbeat shows it
        observed[vid] = observed.get(vid, 0.0) + rate
    for vid, home, rate in tier_moves(snap):  # the tier's overflow, and steady load machines serve for less
        observed[home] = observed.get(home, 0.0) + rate
        reasons.append(f"tier: {rate:.1f} rows/s of {vid} counted as demand for {home}")
    demand = estimate_demand(observed, state.demand_rps, p.demand_decay)
    last_demand = {**state.last_demand_at, **{k: snap.now for k, v in observed.items() if v > 0}}
    up_types = {w.hardware for w in up}

    # Which variant serves each demand (upgrade / downgrade), and how many replicas.
    targets: dict[str, int] = {}
    lower = dict(state.lower_periods)
    changed_at = dict(state.changed_at)
    served_demand: dict[str, float] = {}
    pinned = pinned_types(p)
    # Sub-second clumps (``core.burst``): per variant, the rows its replicas saw in their busiest
    # recent window, and the typical clump (a moving mean with half-life burst_halflife_s).
    objective = p.fill_fleet_ms or p.latency_ms
    clumps = burst_rows(up)
    for vid, (_, rows) in snap.unserved.items():
        clumps[vid] = clumps.get(vid, 0) + rows
    keep = 0.5 ** (p.period_s / p.burst_halflife_s)
    typical_v = {vid: keep * state.burst_rows.get(vid, 0.0) + (1 - keep) * clumps.get(vid, 0)
                 for vid in sorted(set(clumps) | set(state.burst_rows))}
    typical_v = {vid: r for vid, r in typical_v.items() if r >= 0.01}
    if pinned:  # step 4b: the pinned types' replicas, per task
        by_task: dict[str, float] = {}
        burst: dict[str, float] = {}  # each task's busiest recent clump, as rows per second of objective
        typical: dict[str, float] = {}  # and its typical clump
        for vid, rate in demand.items():
            v = snap.variants.get(vid)
            if v is not None and v.hardware in pinned:
                by_task[v.task] = by_task.get(v.task, 0.0) + rate
        if p.size_for_bursts and p.fill_fleet_ms:
            per_s = 1000.0 / p.fill_fleet_ms
            for source, into in ((clumps, burst), (typical_v, typical)):
                for vid, rows in source.items():
                    v = snap.variants.get(vid)
                    if v is not None and v.hardware in pinned:
                        into[v.task] = into.get(v.task, 0.0) + rows * per_s
        fleet = tuple(w for w in up if w.hardware in pinned)
        # Sized for the clump that recurs, not for the busiest one: where clumps are heavy-tailed, the
        # busiest window of the last seconds keeps setting new highs, and a fleet sized for it gives
        # up accuracy on every row for a few clumps (the selector still sends a clump's rows that the
        # accurate replicas would answer late to the fast ones, which the typical clump keeps loaded).
        recurring = {t: max(p.clump_margin * typical.get(t, 0.0), p.outlier_share * burst.get(t, 0.0))
                     for t in sorted(set(typical) | set(burst))}
        fade = 0.5 ** (p.period_s / p.peak_halflife_s)
        peak = {t: max(by_task.get(t, 0.0), recurring.get(t, 0.0), fade * state.peak_rps.get(t, 0.0))
                for t in sorted(set(by_task) | set(recurring) | set(state.peak_rps))}
        peak = {t: r for t, r in peak.items() if r >= 0.01}
        held: dict[str, int] = {}
        for w in fleet:
            for r in w.replicas:
                held[r.variant_id] = held.get(r.variant_id, 0) + 1
        sized = {t: max(by_task.get(t, 0.0), peak.get(t, 0.0)) for t in by_task}  # room for the recent peak
        # where a clump asks for more than the mean rate, replicas are counted by the rows they
        # answer in time when it arrives; elsewhere by their throughput
        clumped = frozenset(t for t in sized if sized[t] > by_task[t])
        typical_clumped = frozenset(t for t, r in typical.items() if r > by_task.get(t, 0.0))
        pinned_targets, short = fill_fleet(sized, {k: v for k, v in snap.variants.items() if v.hardware in pinned},
                                           fleet, p.fill_fleet_ms, p.target_utilisation, held,
                                           levels=((typical, typical_clumped), (by_task, frozenset())), clump=clumped,
                                           serve_weight=p.serve_weight)
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
            if p.size_for_bursts and objective and typical_v.get(vid):  # and the typical clump within the objective
                wanted = max(wanted, math.ceil(typical_v[vid] / max(clump_capacity(v, objective), 1)))
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
    kept_since: dict[str, float] = {}
    for wid, (kept, tasks) in keep_last_replicas(up, switched, snap.variants, p.fill_fleet_ms).items():
        since = state.kept_since.get(wid, snap.now)
        if snap.now - since >= p.keep_last_s:
            continue  # busy all along: the switch is drained after all
        kept_since[wid] = since
        switched.remove(wid)
        reasons.append(f"keep {wid} on {', '.join(kept)} (the last replica of {', '.join(tasks)}) instead of "
                       f"{', '.join(assignments.get(wid, ())) or 'nothing'}: make before break")
        assignments[wid] = kept
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
    # The machines are planned within the budget less ``budget_headroom`` of it: what the tier
    # spends follows sub-second clumps and is known a period late, and a machine launched is billed
    # a minute whatever it does, so a plan that spends the whole budget on machines overruns it.
    budget = None if p.budget_per_hour is None else p.budget_per_hour * (1.0 - p.budget_headroom)
    # The tier's rate follows sub-second clumps: a period's spike is held, fading with half-life
    # burst_halflife_s, so that the machines the budget leaves do not come and go with each clump
    # (a machine launched is billed a minute whatever it does).
    fade = 0.5 ** (p.period_s / p.burst_halflife_s)
    tier_held = {vid: r for vid in sorted(set(snap.tier_rps) | set(state.tier_rps))
                 if (r := max(snap.tier_rps.get(vid, 0.0), fade * state.tier_rps.get(vid, 0.0))) >= 1e-3}
    if budget is not None and tier_held:  # the budget covers the tier's invocations too
        budget = max(0.0, budget - tier_spend(snap, tier_held))
    budgeted = within_budget(desired, snap.hardware, budget, p.min_workers, planned_rows)
    if budgeted != desired:
        reasons.append(f"hourly budget {p.budget_per_hour} $ ({budget:.3f} $ after its headroom and the tier's) "
                       f"caps workers at {budgeted}")
    new_state = PolicyState(
        demand_rps=demand,
        replicas=targets,
        lower_periods={k: v for k, v in lower.items() if v},
        changed_at=changed_at,
        last_demand_at={k: t for k, t in last_demand.items() if snap.now - t < 10 * p.idle_unload_s},
        queued_rows=queued_rows(up),
        peak_rps=peak if pinned else {},
        burst_rows=typical_v,
        tier_rps=tier_held,
        kept_since=kept_since,
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
