"""A discrete-event simulator of the cluster: machines, replicas, batching, queues.

Only the cluster is simulated. What to run where and how many machines to
hold is decided by a *policy* (``infaas.sim.policies``); the product's own
policy calls ``selection.select`` for every request and ``scaling.plan``
every control period, unchanged.

What is modelled, and how the product does the same thing:

* **Machines** of a hardware type are launched (billed from launch, per second,
  with a 60 s minimum like EC2), take work after the type's start time, and
  are drained (no new work; finish the queue; then released). A machine has a
  memory budget; loading a variant that does not fit evicts the least
  recently used idle replicas (``eviction.choose_evictions``, the worker's
  own rule) or fails when only busy ones could make room (the worker answers
  503).
* **Replicas**: a loaded variant on a machine. Loading takes the profile's
  ``load_ms``; requests sent meanwhile wait for it (as ``ReplicaCache.get``).
* **Batching** as the worker's batcher does it (``worker/replicas.py``): one
  batch in flight per replica; the next batch takes everything queued up to
  ``batching.replica_limits`` for the tightest objective queued (the
  objective's ``batch_limits``, never past ``Variant.batch_cap``, the batch
  whose rows cost least), rows that can still be answered in time first and
  no more than the oldest of them can wait for (``batching.next_batch``); a
  batch that is not full waits ``batching.wait_ms`` for company. A machine runs one batch
  at a time (the worker's compute pool has one thread), batches of its
  replicas in the order they were formed.
* **Batch latency** is the profile's p50 at that batch size (interpolated),
  times a log-normal factor whose spread matches the profile's p50 -> p99
  ratio (capped), drawn from a seeded generator: a run is deterministic for
  its seed.

Times are milliseconds inside the simulator.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from infaas.core import tier as tier_mod
from infaas.core.batching import (
    BatchLimits,
    next_batch,
    observe_gap,
    pop_batch,
    replica_limits,
    wait_ms,
)
from infaas.core.burst import PeakMeter
from infaas.core.domain import HardwareType, Variant
from infaas.core.eviction import Resident, choose_evictions
from infaas.sim.data import Workload

BOOTING, UP, DRAINING, GONE = "booting", "up", "draining", "gone"
_FORM, _FINISH, _LOADED, _UP, _CONTROL, _SAMPLE, _FN_DONE = range(7)
Z90 = 1.2815515655446004  # standard normal 90th percentile
MAX_SIGMA = 0.2


class Refused(Exception):
    """A policy could not route a request (the product would answer 422 or 503)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ClusterSpec:
    """The simulated cloud: prices and sizes per hardware type."""

    hardware: Mapping[str, HardwareType]
    start_s: Mapping[str, float]  # launch until the worker takes work
    memory_bytes: Mapping[str, int]  # worker memory budget for models
    max_machines: Mapping[str, int] = field(default_factory=dict)  # physical cap (fixed cluster); none if absent
    min_billing_s: float = 60.0
    jitter: bool = True
    # The serverless tier (``core.tier``): ``lambda`` variants run as function invocations, one
    # query each, cold when no warm environment of the variant is idle, up to ``tier_concurrency``
    # at once, billed per invocation (``tier.invocation_cost``, the cold start included).
    tier: bool = False
    tier_concurrency: int = tier_mod.DEFAULT_CONCURRENCY
    keep_warm_s: float = tier_mod.KEEP_WARM_S


class VariantInfo:
    """What the simulator needs of a variant, precomputed."""

    __slots__ = ("variant", "id", "index", "hw", "task", "accuracy", "p50", "sigma", "load_ms", "memory", "max_batch",
                 "top_batch", "_limits")

    def __init__(self, v: Variant, index: int) -> None:
        assert v.profile is not None
        p = v.profile
        self.variant, self.id, self.index, self.hw, self.task = v, v.id, index, v.hardware, v.task
        self.accuracy = float(v.accuracy or 0.0)
        self.top_batch = max(p.batch_sizes())
        self.max_batch = v.batch_cap  # the worker's cap (``batching.replica_limits``)
        # p50 by batch size 0..top (index 0 unused)
        self.p50 = [0.0] + [p.latency_at(b, "p50") for b in range(1, self.top_batch + 1)]
        ratios = [p.latency_ms[b][1] / p.latency_ms[b][0] for b in p.batch_sizes() if p.latency_ms[b][0] > 0]
        r = sorted(ratios)[len(ratios) // 2] if ratios else 1.0
        self.sigma = min(MAX_SIGMA, max(0.0, math.log(max(r, 1.0)) / Z90))
        self.load_ms = p.load_ms
        self.memory = p.peak_memory_bytes
        self._limits: dict[float, BatchLimits] = {}

    def limits(self, objective_ms: float) -> BatchLimits:
        lim = self._limits.get(objective_ms)
        if lim is None:
            lim = self._limits[objective_ms] = replica_limits(self.variant, None if math.isinf(objective_ms) else objective_ms,
                                                              self.max_batch)
        return lim

    def throughput(self, batch: int | None = None) -> float:
        b = batch or self.max_batch
        return b * 1000.0 / self.p50[b]


class Replica:
    __slots__ = ("info", "vid", "machine", "queue", "queued", "ready", "pending", "served", "served_total", "last_used",
                 "mean_gap", "close", "last_arrival", "objective", "cap", "loaded_at", "busy_ms", "lat_sum", "lat_n", "peaks")

    def __init__(self, info: VariantInfo, machine: "Machine", now: float) -> None:
        self.info, self.vid, self.machine = info, info.id, machine
        self.queue: deque[int] = deque()
        self.queued = 0  # rows waiting or running, as the worker reports queued_rows
        self.ready = False
        self.pending = False  # a batch is waiting to form, formed or running
        self.served = 0  # rows finished since a policy last read it
        self.served_total = 0
        self.last_used = now
        self.mean_gap = 1e9
        self.close = 0.0  # moving share of gaps between arrivals within the batch window (``batching.close_share``)
        self.last_arrival = -1.0
        self.objective = math.inf  # tightest objective queued
        self.cap: int | None = None  # batch cap set by a policy (Clipper's AIMD); None: the production rule
        self.loaded_at = math.inf
        self.busy_ms = 0.0
        self.lat_sum = 0.0  # end-to-end latency of rows finished since a policy last read it
        self.lat_n = 0
        self.peaks = PeakMeter()  # as a worker's replica counts its busiest sub-second clump

    @property
    def busy(self) -> bool:
        return self.queued > 0 or self.pending or not self.ready


class Machine:
    __slots__ = ("id", "hw", "launched", "up_at", "state", "replicas", "fifo", "running", "budget", "released", "busy_ms",
                 "serial")

    def __init__(self, mid: str, hw: str, now: float, up_at: float, budget: int, serial: int) -> None:
        self.id, self.hw, self.launched, self.up_at = mid, hw, now, up_at
        self.state = BOOTING
        self.replicas: dict[str, Replica] = {}
        self.fifo: deque = deque()
        self.running: tuple | None = None
        self.budget = budget
        self.released: float | None = None
        self.busy_ms = 0.0
        self.serial = serial

    @property
    def memory_used(self) -> int:
        return sum(r.info.memory for r in self.replicas.values())

    def idle(self) -> bool:
        return self.running is None and not self.fifo and all(r.queued == 0 and not r.pending for r in self.replicas.values())


class Simulator:
    """Replays a workload against a simulated cluster under one policy."""

    def __init__(self, workload: Workload, variants: Iterable[Variant], policy, spec: ClusterSpec, *, seed: int = 0,
                 tail_s: float = 30.0, sample_s: float = 1.0) -> None:
        self.workload = workload
        self.variant_list = [v for v in variants if v.profile is not None]
        self.variants = {v.id: v for v in self.variant_list}
        self.info = {v.id: VariantInfo(v, k) for k, v in enumerate(self.variant_list)}
        self.info_by_index = [self.info[v.id] for v in self.variant_list]
        self.by_task: dict[str, list[VariantInfo]] = {}
        for inf in self.info.values():
            self.by_task.setdefault(inf.task, []).append(inf)
        self.policy = policy
        self.spec = spec
        self.seed = seed
        self.rng = random.Random(seed)
        self.tail_ms = tail_s * 1000.0
        self.sample_ms = sample_s * 1000.0
        self.now = 0.0
        self._heap: list = []
        self._seq = 0
        self.machines: dict[str, Machine] = {}
        self.alive: dict[str, list[Machine]] = {}  # hw -> machines not gone (booting, up, draining)
        self.replicas_of: dict[str, list[Replica]] = {}  # vid -> replicas on up or draining machines
        self.version = 0  # moves whenever machines or replicas appear or go
        self.dirty: set = set()  # machines whose replica queues changed (for policies that cache views)
        self._serial: dict[str, int] = {}
        self._waiting_launch: dict[str, int] = {}
        n = len(workload)
        self.arrival = workload.arrival_ms.tolist()
        self.objective = workload.latency_ms.tolist()
        self.task_of = [workload.tasks[k] for k in workload.task.tolist()]
        self.finish = [math.nan] * n
        self.served_by = [-1] * n
        self.refused: dict[int, str] = {}
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.loads = 0
        self.failed_loads = 0
        self.end_ms = 0.0
        self.on_batch: Callable[[Replica, int, float], None] | None = None
        self.tier_state = tier_mod.TierState(concurrency=spec.tier_concurrency, keep_warm_s=spec.keep_warm_s) if spec.tier else None
        self.tier_cost = 0.0  # dollars of invocations within the counted interval
        self.tier_invocations = 0
        self.tier_cold = 0
        self.tier_served: dict[str, int] = {}  # lambda variant -> invocations since a policy last read it

    # -- the event queue -------------------------------------------------------------------------------
    def _push(self, t: float, kind: int, obj) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, obj))

    def run(self) -> "Simulator":
        arrival, n = self.arrival, len(self.arrival)
        last = arrival[-1] if n else 0.0
        horizon = last + self.tail_ms
        self.policy.start(self)
        period = getattr(self.policy, "period_s", None)
        if period:
            self._push(period * 1000.0, _CONTROL, None)
        self._push(0.0, _SAMPLE, None)
        heap, pop = self._heap, heapq.heappop
        i = 0
        route, dispatch = self.policy.route, self.dispatch
        while True:
            nxt = arrival[i] if i < n else math.inf
            if heap and heap[0][0] <= nxt:
                t, _, kind, obj = pop(heap)
                if t > horizon:
                    break
                self.now = t
                if kind == _FINISH:
                    self._finish(obj)
                elif kind == _FORM:
                    self._form(obj)
                elif kind == _LOADED:
                    self._loaded(obj)
                elif kind == _UP:
                    self._up(obj)
                elif kind == _CONTROL:
                    if i < n:
                        self.policy.control(self)
                        self._push(t + period * 1000.0, _CONTROL, None)
                elif kind == _FN_DONE:
                    self._fn_done(*obj)
                elif kind == _SAMPLE:
                    self._sample()
                    if i < n:
                        self._push(t + self.sample_ms, _SAMPLE, None)
            elif i < n:
                self.now = nxt
                try:
                    vid, mid = route(self, i)
                except Refused as exc:
                    self.refused[i] = exc.reason
                else:
                    dispatch(i, vid, mid)
                i += 1
            else:
                break
        done = [f for f in self.finish if f == f]
        self.end_ms = max(last, max(done) if done else 0.0)
        self.now = self.end_ms
        self._sample()
        return self

    # -- machines --------------------------------------------------------------------------------------
    def launch(self, hw: str, *, ready: bool = False) -> Machine | None:
        """Start a machine; ``ready`` ones take work at once (a fleet that existed before the trace)."""
        cap = self.spec.max_machines.get(hw)
        if cap is not None and len(self.alive.get(hw, ())) >= cap:
            self._waiting_launch[hw] = self._waiting_launch.get(hw, 0) + 1
            return None
        k = self._serial[hw] = self._serial.get(hw, 0) + 1
        start = 0.0 if ready else self.spec.start_s.get(hw, 60.0) * 1000.0
        m = Machine(f"{hw}-{k}", hw, self.now, self.now + start, self.spec.memory_bytes.get(hw, 4 << 30), k)
        self.machines[m.id] = m
        self.alive.setdefault(hw, []).append(m)
        if ready:
            self._up(m)
        else:
            self._push(m.up_at, _UP, m)
        return m

    def _up(self, m: Machine) -> None:
        if m.state != BOOTING:
            return
        m.state = UP
        self.version += 1
        hook = getattr(self.policy, "on_up", None)
        if hook:
            hook(self, m)

    def desired(self, hw: str) -> int:
        """Machines of a type that are or will be taking work (what a fleet's desired count says)."""
        return sum(1 for m in self.alive.get(hw, ()) if m.state in (BOOTING, UP)) + self._waiting_launch.get(hw, 0)

    def set_desired(self, hw: str, n: int) -> None:
        """Launch up to ``n``; above it, cancel launches not yet up (up machines leave only by ``drain``)."""
        have = self.desired(hw)
        for _ in range(max(0, n - have)):
            self.launch(hw)
        extra = have - n
        while extra > 0 and self._waiting_launch.get(hw, 0) > 0:
            self._waiting_launch[hw] -= 1
            extra -= 1
        for m in sorted((m for m in self.alive.get(hw, ()) if m.state == BOOTING), key=lambda m: -m.launched):
            if extra <= 0:
                break
            self._release(m)
            extra -= 1

    def drain(self, mid: str) -> None:
        m = self.machines.get(mid)
        if m is None or m.state in (DRAINING, GONE):
            return
        if m.state == BOOTING:
            self._release(m)
            return
        m.state = DRAINING
        self.version += 1
        if m.idle():
            self._release(m)

    def _release(self, m: Machine) -> None:
        m.state = GONE
        m.released = self.now
        self.alive[m.hw].remove(m)
        for r in list(m.replicas.values()):
            self._drop_replica(r)
        self.version += 1
        if self._waiting_launch.get(m.hw, 0) > 0:
            self._waiting_launch[m.hw] -= 1
            self.launch(m.hw)

    def up_machines(self, hw: str | None = None) -> list[Machine]:
        if hw is not None:
            return [m for m in self.alive.get(hw, ()) if m.state == UP]
        return [m for ms in self.alive.values() for m in ms if m.state == UP]

    # -- replicas ----------------------------------------------------------------------------------------
    def load(self, m: Machine, vid: str) -> Replica | None:
        """Load ``vid`` on ``m`` (evicting idle replicas, least recently used first); None if it cannot fit."""
        r = m.replicas.get(vid)
        if r is not None:
            return r
        if m.state != UP:
            return None
        info = self.info[vid]
        residents = [Resident(x.vid, x.info.memory, x.last_used, x.busy) for x in m.replicas.values()]
        victims = choose_evictions(residents, m.budget, info.memory)
        if victims is None:
            self.failed_loads += 1
            return None
        for v in victims:
            self._drop_replica(m.replicas[v])
        r = Replica(info, m, self.now)
        m.replicas[vid] = r
        self.replicas_of.setdefault(vid, []).append(r)
        self.loads += 1
        self._push(self.now + info.load_ms, _LOADED, r)
        self.version += 1
        return r

    def unload(self, m: Machine, vid: str) -> bool:
        r = m.replicas.get(vid)
        if r is None or r.busy:
            return False
        self._drop_replica(r)
        return True

    def _drop_replica(self, r: Replica) -> None:
        m = r.machine
        if m.replicas.get(r.vid) is r:
            del m.replicas[r.vid]
        lst = self.replicas_of.get(r.vid)
        if lst and r in lst:
            lst.remove(r)
        for i in r.queue:  # only when a machine goes away with work queued (not in normal operation)
            self.refused[i] = "machine released"
        r.queue.clear()
        self.version += 1
        self.dirty.add(r.machine)

    def _loaded(self, r: Replica) -> None:
        if r.machine.replicas.get(r.vid) is not r:
            return
        r.ready = True
        r.loaded_at = self.now
        self.version += 1
        if r.queue and not r.pending:
            self._kick(r)

    # -- requests ----------------------------------------------------------------------------------------
    def dispatch(self, i: int, vid: str, mid: str) -> None:
        if mid == tier_mod.HARDWARE:
            self._invoke(i, vid)
            return
        m = self.machines.get(mid)
        if m is None or m.state != UP:
            self.refused[i] = "worker not up"
            return
        r = m.replicas.get(vid)
        if r is None:
            r = self.load(m, vid)
            if r is None:
                self.refused[i] = "no memory on the worker (busy replicas)"
                return
        self.enqueue(r, i)

    def enqueue(self, r: Replica, i: int) -> None:
        now = self.now
        if r.last_arrival >= 0:
            gap = now - r.last_arrival
            r.mean_gap, r.close = observe_gap(r.mean_gap, r.close, gap, r.info.limits(self.objective[i]).max_delay_ms)
        r.last_arrival = now
        r.peaks.add(now / 1000.0)
        r.queue.append(i)
        r.queued += 1
        r.last_used = now
        obj = self.objective[i]
        if obj < r.objective:
            r.objective = obj
        self.dirty.add(r.machine)
        if r.ready and not r.pending:
            self._kick(r)

    def _limit(self, r: Replica) -> BatchLimits:
        lim = r.info.limits(r.objective)
        if r.cap is not None:
            return BatchLimits(min(r.cap, r.info.top_batch), 0.0)
        return lim

    def _kick(self, r: Replica) -> None:
        r.pending = True
        lim = self._limit(r)
        delay = wait_ms(lim, r.queued, r.mean_gap, r.close)
        if delay > 0:
            self._push(self.now + delay, _FORM, r)
        else:
            self._form(r)

    def _form(self, r: Replica) -> None:
        if not r.queue or r.machine.replicas.get(r.vid) is not r:
            r.pending = False
            return
        q = r.queue
        arrival, objective, p50, top = self.arrival, self.objective, r.info.p50, r.info.top_batch
        batch = pop_batch(q, next_batch(((arrival[i] + objective[i], 1) for i in q), self.now,
                                        lambda b: p50[min(b, top)], self._limit(r).max_batch))
        m = r.machine
        m.fifo.append((r, batch))
        if m.running is None:
            self._start(m)

    def _start(self, m: Machine) -> None:
        r, batch = m.fifo.popleft()
        n = len(batch)
        info = r.info
        dur = info.p50[min(n, info.top_batch)]
        if self.spec.jitter and info.sigma > 0:
            dur *= math.exp(info.sigma * self.rng.gauss(0.0, 1.0))
        m.running = (r, batch, dur)
        self._push(self.now + dur, _FINISH, m)

    def _finish(self, m: Machine) -> None:
        r, batch, dur = m.running
        m.running = None
        m.busy_ms += dur
        r.busy_ms += dur
        now = self.now
        idx = r.info.index
        finish, served_by, arrival = self.finish, self.served_by, self.arrival
        lat = 0.0
        for i in batch:
            finish[i] = now
            served_by[i] = idx
            lat += now - arrival[i]
        n = len(batch)
        r.queued -= n
        r.served += n
        r.served_total += n
        r.lat_sum += lat
        r.lat_n += n
        r.pending = False
        self.dirty.add(r.machine)
        if self.on_batch is not None:
            self.on_batch(r, n, dur)
        if r.queue:
            if r.ready:
                self._kick(r)
        else:
            r.objective = math.inf
        if m.running is None and m.fifo:
            self._start(m)
        elif m.state == DRAINING and m.idle():
            self._release(m)

    # -- the serverless tier ------------------------------------------------------------------------------
    def _invoke(self, i: int, vid: str) -> None:
        """One query as one invocation of ``vid``'s function: its warm run (the profile's p50 at
        one row, jittered as a batch is), after its cold start when no warm environment is idle."""
        if self.tier_state is None:
            self.refused[i] = "no serverless tier"
            return
        now_s = self.now / 1000.0
        try:
            self.tier_state, cold = tier_mod.acquire(self.tier_state, vid, now_s)
        except tier_mod.Throttled:
            self.refused[i] = "throttled"
            return
        info = self.info[vid]
        dur = info.p50[1]
        if self.spec.jitter and info.sigma > 0:
            dur *= math.exp(info.sigma * self.rng.gauss(0.0, 1.0))
        if cold:
            dur += info.load_ms  # a lambda variant's load_ms is its cold start
            self.tier_cold += 1
        self.tier_invocations += 1
        self.tier_served[vid] = self.tier_served.get(vid, 0) + 1
        if self.arrival[i] >= self.workload.t0_ms:
            self.tier_cost += tier_mod.invocation_cost(dur, info.variant.profile.memory_mb)
        self._push(self.now + dur, _FN_DONE, (i, vid))

    def _fn_done(self, i: int, vid: str) -> None:
        self.tier_state = tier_mod.release(self.tier_state, vid, self.now / 1000.0)
        self.finish[i] = self.now
        self.served_by[i] = self.info[vid].index

    # -- observation -------------------------------------------------------------------------------------
    def _sample(self) -> None:
        counts: dict[str, int] = {}
        for hw, ms in self.alive.items():
            counts[hw] = len(ms)
        self.samples.append((self.now / 1000.0, counts))

    def accuracy_of(self, i: int) -> float:
        k = self.served_by[i]
        return self.info_by_index[k].accuracy if k >= 0 else math.nan

    def machine_seconds(self) -> dict[str, float]:
        """Billed seconds per hardware type within the counted interval (after the warm-up):
        per second from launch to release (or the end), 60 s minimum for a machine launched in it."""
        t0 = self.workload.t0_ms
        out: dict[str, float] = {}
        for m in self.machines.values():
            end = m.released if m.released is not None else self.end_ms
            if end <= t0:
                continue
            start = max(m.launched, t0)
            secs = (end - start) / 1000.0
            if m.launched >= t0:
                secs = max(secs, self.spec.min_billing_s)
            out[m.hw] = out.get(m.hw, 0.0) + secs
        return out

    def cost(self) -> float:
        """Dollars for the machine time of ``machine_seconds`` at the hourly prices, plus the
        serverless tier's invocations."""
        machines = sum(s * self.spec.hardware[hw].price_per_hour / 3600.0 for hw, s in self.machine_seconds().items())
        return machines + self.tier_cost

    def arrays(self) -> dict[str, np.ndarray]:
        acc = np.array([self.info_by_index[k].accuracy if k >= 0 else np.nan for k in self.served_by])
        return {
            "arrival_ms": np.asarray(self.arrival),
            "finish_ms": np.asarray(self.finish),
            "objective_ms": np.asarray(self.objective),
            "accuracy": acc,
        }
