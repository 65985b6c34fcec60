"""The interface every simulated policy implements.

A policy is asked three things by the simulator:

* ``start(sim)``: the fleet and replicas that exist before the first request;
* ``route(sim, i) -> (variant id, machine id)`` for request ``i`` (or raise
  ``Refused``); a variant not loaded there is loaded on demand;
* ``control(sim)`` every ``period_s`` seconds: launch or drain machines, load
  or unload replicas (``sim.set_desired``, ``sim.drain``, ``sim.load``,
  ``sim.unload``).

Policies read the simulated cluster (``sim.machines``, ``sim.replicas_of``,
``sim.info``) the way the product reads worker heartbeats.
"""

from __future__ import annotations

import math

import numpy as np

from infaas.sim.engine import Refused, Replica, Simulator, VariantInfo


class Policy:
    name = "policy"
    period_s: float | None = 2.0

    def start(self, sim: Simulator) -> None:
        pass

    def route(self, sim: Simulator, i: int) -> tuple[str, str]:
        raise NotImplementedError

    def control(self, sim: Simulator) -> None:
        pass


def feasible(info: VariantInfo, objective_ms: float) -> bool:
    """The production batching rule's feasibility: a request may wait one batch and run in the next one,
    ``2 * p99(1) <= objective`` (``batching.batch_limits`` would not batch at all otherwise)."""
    p = info.variant.profile
    return 2 * p.latency_at(1, "p99") <= objective_ms


def shortest(replicas: list[Replica]) -> Replica | None:
    best, key = None, math.inf
    for r in replicas:
        if not r.ready or r.machine.state != "up":
            continue
        k = r.queued * 1000.0 / r.info.throughput() if r.info.throughput() > 0 else r.queued
        if k < key:
            best, key = r, k
    return best


__all__ = ["Policy", "Refused", "feasible", "shortest"]


# -- helpers of the one-variant-per-task policies (Clipper-style, static) ---------------------------------
def mean_rates(sim: Simulator) -> dict[str, float]:
    """Mean rows/s per task over the counted trace: what an operator sizes a fixed deployment for."""
    w = sim.workload
    k0 = w.warmup
    dur = max(w.duration_s, 1e-9)
    out: dict[str, float] = {}
    for k in w.task[k0:].tolist():
        t = w.tasks[k]
        out[t] = out.get(t, 0.0) + 1.0
    return {t: n / dur for t, n in out.items()}


def peak_rates(sim: Simulator, window_s: float = 10.0) -> dict[str, float]:
    """Highest mean rows/s per task over ``window_s`` windows of the counted trace."""
    w = sim.workload
    k0, t0 = w.warmup, w.t0_ms
    out: dict[str, float] = {}
    arr = w.arrival_ms[k0:] - t0
    win = (arr // (window_s * 1000.0)).astype(int)
    for k, t in enumerate(w.tasks):
        mask = w.task[k0:] == k
        if mask.any():
            out[t] = float(np.bincount(win[mask]).max()) / window_s
    return out


def strictest_floor(sim: Simulator) -> float:
    return max((t.min_accuracy or 0.0) for t in sim.workload.tenants if t.share > 0)


def objective_of(sim: Simulator) -> float:
    return float(min(sim.objective)) if sim.objective else math.inf


def pick_architecture(sim: Simulator, task: str, pick: str, floor: float, objective_ms: float,
                      hardware: set[str] | None = None) -> str | None:
    """``smallest`` / ``largest``: the least / most accurate architecture feasible on some hardware type;
    ``floor``: the architecture of the cheapest variant (price per row at its max batch) meeting ``floor``."""
    ok = [inf for inf in sim.by_task.get(task, ()) if feasible(inf, objective_ms) and inf.accuracy >= floor - 1e-12
          and (hardware is None or inf.hw in hardware)]
    if not ok:
        return None
    if pick == "smallest":
        return min(ok, key=lambda i: (i.accuracy, i.id)).variant.architecture
    if pick == "largest":
        return max(ok, key=lambda i: (i.accuracy, i.id)).variant.architecture
    price = lambda i: sim.spec.hardware[i.hw].price_per_hour / i.throughput()
    return min(ok, key=lambda i: (price(i), i.id)).variant.architecture


def cheapest_variant(sim: Simulator, task: str, arch: str, objective_ms: float) -> VariantInfo | None:
    ok = [inf for inf in sim.by_task.get(task, ()) if inf.variant.architecture == arch and feasible(inf, objective_ms)
          and inf.hw in sim.spec.hardware]
    if not ok:
        return None
    return min(ok, key=lambda i: (sim.spec.hardware[i.hw].price_per_hour / i.throughput(), i.id))


def allocate_devices(sim: Simulator, archs: dict[str, str], rates: dict[str, float], devices: dict[str, int],
                     objective_ms: float) -> dict[str, list[VariantInfo]]:
    """A fixed set of devices split among tasks, one variant per device: each device in turn goes to the task
    with the least capacity for its mean load, of the type that gives that task the most throughput."""
    left = dict(devices)
    options: dict[str, dict[str, VariantInfo]] = {}
    for t, arch in archs.items():
        options[t] = {inf.hw: inf for inf in sim.by_task.get(t, ()) if inf.variant.architecture == arch
                      and feasible(inf, objective_ms) and inf.hw in left}
    cap = {t: 0.0 for t in archs}
    out: dict[str, list[VariantInfo]] = {t: [] for t in archs}
    while sum(left.values()) > 0:
        ready = [t for t in archs if rates.get(t, 0) > 0 and any(left[h] > 0 for h in options[t])]
        if not ready:
            break
        t = min(ready, key=lambda t: (cap[t] / rates[t], t))
        hw = max((h for h in options[t] if left[h] > 0), key=lambda h: (options[t][h].throughput(), h))
        out[t].append(options[t][hw])
        cap[t] += options[t][hw].throughput()
        left[hw] -= 1
    return out
