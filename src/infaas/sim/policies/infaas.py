"""INFaaS as its research code behaved (``reference/infaas.md``).

Routing, per request (task + minimum accuracy + latency):

* candidates meet the accuracy floor and the latency objective at batch 1;
  they are grouped in accuracy bins of 5 points and the lowest bin that has
  any is searched;
* running variants win: among the bin's variants with a replica on a worker
  that is not blacklisted, the one with the *least slack* (objective minus
  its profiled latency) -- then its least queued replica;
* otherwise a variant is loaded: not-running ones are scored
  ``1000 + load_ms + latency``, lowest first, CPU variants first when the
  objective is loose (> 100 ms); it goes to the least utilised worker of its
  hardware type that has room.

Model-level autoscaler, every second, per running variant: replicas needed
= ``ceil(QPS / profiled throughput)``; when more are needed, either
*replicate* (another replica on the least utilised worker of the same type
with room, else flag the type for a new machine) or *upgrade* to the same
architecture on a faster hardware type when replication would cost more than
1.5x the upgrade; when fewer are needed for 10 consecutive checks, remove a
replica (the last one when it saw no request for those checks); a GPU
variant whose load one CPU replica of the same architecture can carry is
*downgraded* after the same count.

Blacklisting: a worker is skipped for 2 s when a replica's observed latency
exceeds 2.5x its profiled latency while its QPS is above half its capacity,
or its queue exceeds 0.8 x its capacity (one second of work).

VM-level autoscaler, every 2 s, per hardware type: one more machine when the
*least* utilised worker is above 80 % (busy time on CPU; memory on GPU --
the research code's "GPU utilisation" was memory) or a variant flagged the
type; one machine fewer (the
least utilised, drained) after 15 consecutive checks with a worker below
40 %, and never within 30 s of the previous change (cool-down).
"""

from __future__ import annotations

import math
from typing import Mapping

from infaas.sim.engine import UP, Machine, Refused, Replica, Simulator, VariantInfo
from infaas.sim.policies.base import Policy, feasible

BIN = 0.05
BLACKLIST_S = 2.0
SCALE_OUT_UTIL = 0.8
SCALE_IN_UTIL = 0.4
SCALE_IN_CHECKS = 15
COOLDOWN_S = 30.0
DOWN_VOTES = 10
UPGRADE_RATIO = 1.5
LOOSE_MS = 100.0


class INFaaS(Policy):
    name = "infaas"
    period_s = 1.0

    def __init__(self, *, initial: Mapping[str, int], max_workers: Mapping[str, int], vm_scaling: bool = True,
                 min_workers: Mapping[str, int] | None = None) -> None:
        self.initial = dict(initial)
        self.max_workers = dict(max_workers)
        self.min_workers = dict(min_workers if min_workers is not None else initial)
        self.vm_scaling = vm_scaling
        self.blacklist: dict[str, float] = {}  # machine id -> until (ms)
        self.routed: dict[str, int] = {}  # variant -> requests routed since the last check
        self.down_votes: dict[str, int] = {}
        self.retiring: set[Replica] = set()  # replicas no longer routed to, unloaded when idle
        self.flags: set[str] = set()  # hardware types a variant asked a machine for
        self.low_checks: dict[str, int] = {}
        self.changed_at: dict[str, float] = {}
        self.last_busy: dict[str, float] = {}
        self._utils: dict[str, float] = {}  # machine id -> utilisation over the last check
        self.ticks = 0

    def start(self, sim: Simulator) -> None:
        for hw, n in sorted(self.initial.items()):
            for _ in range(n):
                sim.launch(hw, ready=True)
        self.prices = {h: t.price_per_hour for h, t in sim.spec.hardware.items()}
        self.lat1 = {vid: inf.variant.profile.latency_at(1, "p99") for vid, inf in sim.info.items()}

    # -- routing ---------------------------------------------------------------------------------------
    def _usable(self, sim: Simulator, r: Replica) -> bool:
        return r.ready and r.machine.state == UP and r not in self.retiring and self.blacklist.get(r.machine.id, -1.0) < sim.now

    def route(self, sim: Simulator, i: int) -> tuple[str, str]:
        w = sim.workload
        floor = w.tenants[int(w.tenant[i])].min_accuracy or 0.0
        limit = sim.objective[i]
        task = sim.task_of[i]
        cands = [inf for inf in sim.by_task.get(task, ()) if inf.accuracy >= floor - 1e-12 and feasible(inf, limit)]
        if not cands:
            raise Refused("no variant meets the objective")
        lowest = min(int(inf.accuracy / BIN + 1e-9) for inf in cands)
        bin_ = [inf for inf in cands if int(inf.accuracy / BIN + 1e-9) == lowest]
        # running variants win; least slack first
        best, best_slack = None, math.inf
        for inf in bin_:
            reps = [r for r in sim.replicas_of.get(inf.id, ()) if self._usable(sim, r)]
            if not reps:
                continue
            slack = limit - self.lat1[inf.id]
            if slack < best_slack:
                best, best_slack = reps, slack
        if best is not None:
            r = min(best, key=lambda r: (r.queued / r.info.throughput(), r.machine.id))
            self.routed[r.vid] = self.routed.get(r.vid, 0) + 1
            return r.vid, r.machine.id
        # load one: 1000 + load + inference, CPU first when the objective is loose
        order = sorted(bin_, key=lambda inf: (0 if (limit > LOOSE_MS and inf.hw in ("cpu", "vpu")) else 1,
                                              1000 + inf.load_ms + self.lat1[inf.id], inf.id))
        for inf in order:
            m = self._least_utilised(sim, inf)
            if m is not None:
                self.routed[inf.id] = self.routed.get(inf.id, 0) + 1
                return inf.id, m.id
            self.flags.add(inf.hw)
        raise Refused("no worker with room")

    def _least_utilised(self, sim: Simulator, inf: VariantInfo, exclude: set[str] = frozenset()) -> Machine | None:
        best, key = None, None
        for m in sim.up_machines(inf.hw):
            if m.id in exclude or inf.id in m.replicas or self.blacklist.get(m.id, -1.0) >= sim.now:
                continue
            busy = sum(r.info.memory for r in m.replicas.values() if r.busy)
            free = m.budget - m.memory_used
            idle_mem = sum(r.info.memory for r in m.replicas.values() if not r.busy)
            if inf.memory > free + idle_mem or busy + inf.memory > m.budget:
                continue
            k = (self._utils.get(m.id, 0.0), -free, m.id)
            if key is None or k < key:
                best, key = m, k
        return best

    # -- control ---------------------------------------------------------------------------------------
    def control(self, sim: Simulator) -> None:
        self.ticks += 1
        self._measure(sim)
        self._blacklist(sim)
        self._model_level(sim)
        self._retire(sim)
        if self.vm_scaling and self.ticks % 2 == 0:
            self._vm_level(sim)
        self.routed = {}

    def _measure(self, sim: Simulator) -> None:
        utils = {}
        for m in sim.up_machines():
            busy = m.busy_ms
            prev = self.last_busy.get(m.id, busy)
            self.last_busy[m.id] = busy
            if m.hw.startswith("gpu"):
                utils[m.id] = m.memory_used / m.budget  # the research code's GPU "utilisation"
            else:
                utils[m.id] = min(1.0, (busy - prev) / (self.period_s * 1000.0))
        self._utils = utils

    def _blacklist(self, sim: Simulator) -> None:
        for m in sim.up_machines():
            for r in m.replicas.values():
                if not r.ready:
                    continue
                thr = r.info.throughput()
                qps = r.served / self.period_s
                obs = r.lat_sum / r.lat_n if r.lat_n else 0.0
                pred = r.info.p50[r.info.max_batch]
                if (obs > 2.5 * pred and qps > 0.5 * thr) or r.queued > 0.8 * thr:
                    self.blacklist[m.id] = sim.now + BLACKLIST_S * 1000.0
                r.served = 0
                r.lat_sum, r.lat_n = 0.0, 0

    def _model_level(self, sim: Simulator) -> None:
        for vid in sorted(set(self.routed) | {v for v, rs in sim.replicas_of.items() if rs}):
            reps = [r for r in sim.replicas_of.get(vid, ()) if r.machine.state == UP and r not in self.retiring]
            if not reps:
                continue
            inf = sim.info[vid]
            qps = self.routed.get(vid, 0) / self.period_s
            thr = inf.throughput()
            needed = math.ceil(qps / thr) if qps > 0 else 0
            have = len(reps)
            if needed > have:
                self.down_votes[vid] = 0
                up = self._upgrade(sim, inf, qps, needed)
                if up is not None:
                    m = self._least_utilised(sim, up)
                    if m is not None and sim.load(m, up.id) is not None:
                        self.retiring.update(reps)
                        continue
                for _ in range(needed - have):
                    m = self._least_utilised(sim, inf)
                    if m is None or sim.load(m, vid) is None:
                        self.flags.add(inf.hw)
                        break
            elif needed < have:
                votes = self.down_votes[vid] = self.down_votes.get(vid, 0) + 1
                if votes >= DOWN_VOTES:
                    self.down_votes[vid] = 0
                    down = self._downgrade(sim, inf, qps)
                    if down is not None:
                        m = self._least_utilised(sim, down)
                        if m is not None and sim.load(m, down.id) is not None:
                            self.retiring.update(reps)
                            continue
                    if needed == 0 or have > 1:
                        victim = min(reps, key=lambda r: (r.queued, r.machine.id))
                        self.retiring.add(victim)
            else:
                self.down_votes[vid] = 0

    def _upgrade(self, sim: Simulator, inf: VariantInfo, qps: float, needed: int) -> VariantInfo | None:
        """Same architecture on another hardware type, when replicating costs > 1.5x the upgrade."""
        replicate = needed * self.prices.get(inf.hw, math.inf)
        best, best_cost = None, math.inf
        for o in sim.by_task.get(inf.task, ()):
            if o.variant.architecture != inf.variant.architecture or o.hw == inf.hw or not sim.up_machines(o.hw):
                continue
            if self.lat1[o.id] > self.lat1[inf.id] * 1.0001 and o.throughput() <= inf.throughput():
                continue
            cost = math.ceil(qps / o.throughput()) * self.prices.get(o.hw, math.inf)
            if replicate > UPGRADE_RATIO * cost and cost < best_cost:
                best, best_cost = o, cost
        return best

    def _downgrade(self, sim: Simulator, inf: VariantInfo, qps: float) -> VariantInfo | None:
        if not inf.hw.startswith("gpu"):
            return None
        for o in sim.by_task.get(inf.task, ()):
            if o.variant.architecture == inf.variant.architecture and o.hw in ("cpu", "vpu") and sim.up_machines(o.hw) \
                    and qps <= o.throughput():
                return o
        return None

    def _retire(self, sim: Simulator) -> None:
        for vid, reps in list(sim.replicas_of.items()):
            for r in list(reps):
                if r in self.retiring and not r.busy:
                    sim.unload(r.machine, vid)
                    self.retiring.discard(r)

    def _vm_level(self, sim: Simulator) -> None:
        now_s = sim.now / 1000.0
        for hw in sorted(set(self.max_workers) | set(self.initial)):
            ms = sim.up_machines(hw)
            utils = [self._utils.get(m.id, 0.0) for m in ms]
            cool = now_s - self.changed_at.get(hw, -math.inf) >= COOLDOWN_S
            if (ms and min(utils) > SCALE_OUT_UTIL or hw in self.flags) and sim.desired(hw) < self.max_workers.get(hw, 0):
                sim.set_desired(hw, sim.desired(hw) + 1)
                self.changed_at[hw] = now_s
                self.low_checks[hw] = 0
                continue
            if ms and min(utils) < SCALE_IN_UTIL:
                self.low_checks[hw] = self.low_checks.get(hw, 0) + 1
            else:
                self.low_checks[hw] = 0
            if self.low_checks.get(hw, 0) >= SCALE_IN_CHECKS and cool and len(ms) > self.min_workers.get(hw, 0):
                victim = min(ms, key=lambda m: (self._utils.get(m.id, 0.0), len(m.replicas), m.id))
                self.retiring.update(victim.replicas.values())
                sim.drain(victim.id)
                self.changed_at[hw] = now_s
                self.low_checks[hw] = 0
        self.flags.clear()
