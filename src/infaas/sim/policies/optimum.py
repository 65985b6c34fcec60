"""A lower bound on cost: the offline optimum with perfect knowledge of each time window.

For every window of ``window_s`` seconds the arrivals of each request class
(task, accuracy floor, objective) are known in advance. A MILP, solved with
``scipy.optimize.milp`` (HiGHS), chooses how many machines of each hardware
type to hold in that window and how much of each class's rate each variant
serves:

    minimise    sum_h price_h * m_h
    subject to  sum_v x[c, v] = rate_c                       for every class c
                sum_{c, v on h} x[c, v] / thr_v <= m_h       for every hardware type h
                x >= 0,  m_h integer >= 0

(plus, with the serverless tier, ``sum x[c, f] * cost_per_row_f`` over its ``lambda`` variants),
where ``v`` ranges over the variants of c's task that meet its floor and
whose profiled batch-1 latency meets its objective, and ``thr_v`` is the
variant's throughput at its largest allowed batch at full utilisation. The
bound ignores what no real policy can: machine start times, model loads,
queueing inside a window, the 60 s billing minimum, and the packing of
replicas onto machines (a machine's time is shared fluidly). Any policy that
serves the trace within its objectives pays at least about this much, so
costs are reported as a ratio to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from infaas.core import tier as tier_mod
from infaas.sim.data import Workload
from infaas.sim.engine import VariantInfo


@dataclass
class LowerBound:
    cost: float
    windows: int
    window_s: float
    machines: dict  # hw -> list of machines per window
    unservable: int  # requests of classes no variant can serve


def lower_bound(workload: Workload, infos: list[VariantInfo], prices: dict[str, float], *, window_s: float = 10.0,
                tier: bool = False) -> LowerBound:
    """With ``tier``, the serverless tier's ``lambda`` variants are options too: a class's rate may go
    to one at its warm cost per invocation (``tier.FunctionProfile.cost_per_request``; cold starts
    and the concurrency limit ignored), with no machine to hold."""
    k0, t0 = workload.warmup, workload.t0_ms
    arrival = workload.arrival_ms[k0:] - t0
    task = workload.task[k0:]
    tenant = workload.tenant[k0:]
    lat = workload.latency_ms[k0:]
    if not len(arrival):
        return LowerBound(0.0, 0, window_s, {}, 0)
    duration = float(arrival[-1]) / 1000.0
    nwin = max(1, int(math.ceil(duration / window_s)))
    hws = sorted({i.hw for i in infos if i.hw in prices and i.hw != tier_mod.HARDWARE})
    per_row = {i.id: tier_mod.function_profile_of(i.variant.profile).cost_per_request() * 3600.0  # $/h per row/s
               for i in infos if tier and i.hw == tier_mod.HARDWARE}
    classes: dict[tuple[int, int, float], np.ndarray] = {}
    win = np.minimum((arrival / 1000.0 // window_s).astype(int), nwin - 1)
    for key in set(zip(task.tolist(), tenant.tolist(), lat.tolist())):
        mask = (task == key[0]) & (tenant == key[1]) & (lat == key[2])
        classes[key] = np.bincount(win[mask], minlength=nwin)
    by_task: dict[str, list[VariantInfo]] = {}
    for i in infos:
        by_task.setdefault(i.task, []).append(i)
    options: dict[tuple, list[VariantInfo]] = {}
    unservable = 0
    for key, counts in classes.items():
        t, ten, objective = key
        floor = workload.tenants[ten].min_accuracy or 0.0
        ok = [i for i in by_task.get(workload.tasks[t], ()) if (i.hw in prices or (tier and i.hw == tier_mod.HARDWARE))
              and i.accuracy >= floor - 1e-12 and i.variant.profile.latency_at(1, "p99") <= objective]
        options[key] = ok
        if not ok:
            unservable += int(counts.sum())
    total = 0.0
    machines = {h: [] for h in hws}
    keys = sorted(k for k in classes if options[k])
    for w in range(nwin):
        rates = {k: classes[k][w] / window_s for k in keys if classes[k][w] > 0}
        if not rates:
            for h in hws:
                machines[h].append(0)
            continue
        cols: list[tuple[tuple, VariantInfo]] = [(k, i) for k in rates for i in options[k]]
        nx, nm = len(cols), len(hws)
        c = np.concatenate([np.array([per_row.get(i.id, 0.0) for _, i in cols]), np.array([prices[h] for h in hws])])
        a_eq = np.zeros((len(rates), nx + nm))
        b_eq = np.zeros(len(rates))
        rk = {k: r for r, k in enumerate(rates)}
        for j, (k, _) in enumerate(cols):
            a_eq[rk[k], j] = 1.0
        for k, r in rk.items():
            b_eq[r] = rates[k]
        a_ub = np.zeros((nm, nx + nm))
        for j, (_, i) in enumerate(cols):
            if i.id not in per_row:  # the tier holds no machine
                a_ub[hws.index(i.hw), j] = 1.0 / i.throughput()
        for h in range(nm):
            a_ub[h, nx + h] = -1.0
        cons = [LinearConstraint(a_eq, b_eq, b_eq), LinearConstraint(a_ub, -np.inf, 0.0)]
        integrality = np.concatenate([np.zeros(nx), np.ones(nm)])
        res = milp(c, constraints=cons, integrality=integrality, bounds=Bounds(0, np.inf))
        if not res.success:
            raise RuntimeError(f"lower-bound MILP failed in window {w}: {res.message}")
        m = np.round(res.x[nx:]).astype(int)
        for h, n in zip(hws, m):
            machines[h].append(int(n))
        total += float(res.fun) * window_s / 3600.0
    return LowerBound(total, nwin, window_s, machines, unservable)
