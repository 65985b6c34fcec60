"""Clipper-style serving: one fixed variant per task, replicas sized for the mean load, adaptive batching.

* **Variant**: one per task, chosen once by the operator: ``pick="floor"``
  (cloud set-up) the cheapest variant, per row at its largest batch, that
  meets the strictest accuracy floor of the task's tenants -- one model must
  serve them all --; ``"smallest"`` / ``"largest"`` (the fixed-cluster runs
  of the Proteus paper) the least / most accurate architecture that meets the
  objective.
* **Replicas**: cloud -- ``ceil(mean rows/s / throughput)`` replicas of it,
  each on its own machine, all up before the first request and never changed
  (Clipper does not autoscale; sized for the mean, not the peak); fixed
  cluster -- the 40 devices are split among the tasks in proportion to their
  mean load (``allocate_devices``).
* **Batching**: AIMD, as Clipper does: a replica's batch limit grows by one
  after each batch that ran within the latency objective and shrinks by 10 %
  after one that did not (up to the largest profiled batch); no waiting for
  company.
* **Routing**: the replica with the shortest queue (in time).
"""

from __future__ import annotations

import math

from infaas.sim.engine import Refused, Replica, Simulator
from infaas.sim.policies.base import (
    Policy,
    allocate_devices,
    cheapest_variant,
    mean_rates,
    objective_of,
    peak_rates,
    pick_architecture,
    shortest,
    strictest_floor,
)


class Clipper(Policy):
    period_s = None

    def __init__(self, *, pick: str = "floor", devices: dict[str, int] | None = None, utilisation: float = 1.0,
                 aimd: bool = True, name: str | None = None, sizing: str = "mean") -> None:
        self.pick = pick
        self.sizing = sizing  # "mean" or "peak" (the busiest 10 s of the trace)
        self.devices = devices
        self.utilisation = utilisation
        self.aimd = aimd
        self.name = name or ("clipper" if pick == "floor" else f"clipper-{pick}")
        self.by_task: dict[str, list[Replica]] = {}
        self.variants: dict[str, list[str]] = {}

    def start(self, sim: Simulator) -> None:
        objective = self.objective = objective_of(sim)
        floor = strictest_floor(sim) if self.pick == "floor" else 0.0
        rates = mean_rates(sim) if self.sizing == "mean" else peak_rates(sim)
        hw = set(self.devices) if self.devices else set(sim.spec.hardware)
        archs = {}
        for t in sim.workload.tasks:
            a = pick_architecture(sim, t, self.pick, floor, objective, hw)
            if a is not None:
                archs[t] = a
        if self.devices:
            plan = allocate_devices(sim, archs, rates, self.devices, objective)
        else:
            plan = {}
            for t, a in archs.items():
                inf = cheapest_variant(sim, t, a, objective)
                if inf is None or rates.get(t, 0.0) <= 0:
                    continue
                n = max(1, math.ceil(rates[t] / (inf.throughput() * self.utilisation)))
                plan[t] = [inf] * n
        for t, infos in plan.items():
            for inf in infos:
                m = sim.launch(inf.hw, ready=True)
                if m is None:
                    continue
                r = sim.load(m, inf.id)
                if r is None:
                    continue
                sim._loaded(r)  # deployed before the trace starts
                if self.aimd:
                    r.cap = 1
                self.by_task.setdefault(t, []).append(r)
                self.variants.setdefault(t, []).append(inf.id)
        if self.aimd:
            sim.on_batch = self._aimd

    def _aimd(self, r: Replica, n: int, dur_ms: float) -> None:
        if r.cap is None:
            return
        if dur_ms <= (r.objective if math.isfinite(r.objective) else self.objective):
            r.cap = min(r.cap + 1, r.info.top_batch)
        else:
            r.cap = max(1, int(r.cap * 0.9))

    def route(self, sim: Simulator, i: int) -> tuple[str, str]:
        r = shortest(self.by_task.get(sim.task_of[i], []))
        if r is None:
            raise Refused("no replica for the task")
        return r.vid, r.machine.id

