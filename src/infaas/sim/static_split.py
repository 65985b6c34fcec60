"""The best static split of the fixed cluster, chosen in hindsight: a yardstick for the policies.

``infaas sim static-split --workload W --min-accuracy A`` asks: if an operator knew the whole
scored trace in advance and split the fixed cluster's devices among the tasks once, for good,
how few late answers could they get at an effective accuracy of at least ``A``?

1. For each task, candidate configurations -- ``n`` replicas of one variant, or ``n`` of an
   accurate variant beside ``m`` of a faster one -- are replayed against the task's scored
   arrivals in a queue model (``queue_model``). Only variants that can batch within the
   objective (``fixed_fleet.fits``) and are not dominated on their device class (another as
   accurate and at least as fast) are tried.
2. A MILP (``scipy.optimize.milp``, HiGHS) picks one configuration per task, within the devices
   of each class, that misses the fewest objectives while the accuracy of what is answered in
   time averages at least ``A`` (``best_split``).

The queue model is kinder than the cluster: one central FIFO queue per task that every device of
the configuration pulls from when free (a row is never bound early to a replica whose queue
turns out long), batches as large as the oldest row's deadline allows at the profiled p50, no
jitter, no model loads, and a row that no device can still answer in time is dropped at once
(counted late) instead of holding a device. It is neither an upper nor a lower bound on what a
policy can reach -- a policy may also change its split as the load moves, which this one may
not -- but where the best split in hindsight misses a target, a policy that meets it has to
win it from adapting. ``--busy-above R`` keeps only the seconds with more than ``R``
arrivals in all: the split for the busy phases of a trace whose load swings, which a policy
could run there while it answers the quiet seconds at full accuracy.

``--replay`` then runs the chosen split, pinned for the whole run, through the simulator with
the product's selector and batcher (``FixedSplit``): the same split, without the model's
kindnesses. Devices the split leaves empty are not started, and only the split's replicas answer.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from infaas.core.domain import Variant
from infaas.core.scaling.fixed_fleet import fits
from infaas.sim.data import SAME_PROFILE
from infaas.sim.engine import Refused, VariantInfo
from infaas.sim.policies.ours import Ours

MAX_ACCURATE = 6  # replicas of the accurate variant tried beside a faster one
MAX_FAST = 8  # replicas of the faster one


@dataclass(frozen=True)
class Device:
    """One replica of a variant in the queue model."""

    variant_id: str
    p50: tuple[float, ...]  # milliseconds by batch size (index 0 unused)
    max_batch: int
    accuracy: float


@dataclass(frozen=True)
class Outcome:
    late: int  # rows no device answered in time
    served: int  # rows answered in time
    accuracy_sum: float  # sum of the accuracy (0-1) of the rows answered in time


@dataclass(frozen=True)
class Config:
    task: str
    devices: Mapping[str, int]  # device class -> devices taken
    replicas: Mapping[str, int]  # variant -> replicas
    outcome: Outcome

    @property
    def label(self) -> str:
        return " + ".join(f"{vid} x{n}" for vid, n in self.replicas.items())


def queue_model(arrivals_ms: Sequence[float], devices: Sequence[Device], objective_ms: float,
                wait_ms: float = 2.0) -> Outcome:
    """Replay one task's arrivals (sorted, ms) on ``devices`` sharing one FIFO queue.

    A free device takes the largest batch (up to its ``max_batch``) whose p50 ends within the
    deadline of the oldest row taken, starting from the oldest row it can still answer in time or,
    if a larger batch fits that way, from one of the next ``4 * max_batch`` rows; rows that no
    device can answer in time even at batch 1 are dropped as late. A device with nothing to do waits for
    the next arrival and ``wait_ms`` for company. Devices free at the same time are taken most
    accurate first."""
    if not devices:
        return Outcome(len(arrivals_ms), 0, 0.0)
    fastest = min(d.p50[1] for d in devices)
    free = [(0.0, -d.accuracy, k) for k, d in enumerate(devices)]  # (time free, -accuracy, device)
    heapq.heapify(free)
    queue: list[float] = []
    i, n = 0, len(arrivals_ms)
    late = served = 0
    acc_sum = 0.0
    while i < n or queue:
        now, key, k = heapq.heappop(free)
        if not queue and i < n and arrivals_ms[i] > now:
            heapq.heappush(free, (arrivals_ms[i] + wait_ms, key, k))
            continue
        while i < n and arrivals_ms[i] <= now:
            queue.append(arrivals_ms[i])
            i += 1
        gone = 0
        while gone < len(queue) and now + fastest > queue[gone] + objective_ms:
            gone += 1
        late += gone
        del queue[:gone]
        d = devices[k]
        start = 0
        while start < len(queue) and now + d.p50[1] > queue[start] + objective_ms:
            start += 1
        if start >= len(queue):  # nothing this device can answer in time now: wait for more work
            nxt = arrivals_ms[i] if i < n else math.inf
            if nxt == math.inf and not queue:
                break
            heapq.heappush(free, (max(nxt, now + 1.0) if queue else nxt, key, k))
            continue
        best_start, best = start, 0
        for s in range(start, min(len(queue), start + 4 * d.max_batch)):
            b = min(d.max_batch, len(queue) - s)
            while b > 1 and now + d.p50[b] > queue[s] + objective_ms:
                b -= 1
            if b > best:
                best_start, best = s, b
            if b >= d.max_batch:
                break
        del queue[best_start:best_start + best]
        served += best
        acc_sum += d.accuracy * best
        heapq.heappush(free, (now + d.p50[best], key, k))
    return Outcome(late, served, acc_sum)


def _device(v: Variant) -> Device:
    info = VariantInfo(v, 0)
    return Device(v.id, tuple(info.p50), min(info.max_batch, info.top_batch), info.accuracy)


def task_configs(task: str, arrivals_ms: Sequence[float], variants: Sequence[Variant], capacity: Mapping[str, int],
                 objective_ms: float) -> list[Config]:
    """The candidate configurations of one task, each replayed in the queue model. More replicas of
    a configuration are tried only while the fewer still leave rows late."""
    opts = [(v, _device(v)) for v in variants
            if v.task == task and v.hardware in capacity and fits(v, objective_ms)]

    def speed(d: Device) -> float:
        return d.max_batch / d.p50[d.max_batch]

    def dominates(e: Device, d: Device) -> bool:  # as accurate and as fast, and better or first by id
        return e.accuracy >= d.accuracy and speed(e) >= speed(d) and (
            e.accuracy > d.accuracy or speed(e) > speed(d) or e.variant_id < d.variant_id)

    opts = [(v, d) for v, d in opts if not any(w.hardware == v.hardware and dominates(e, d) for w, e in opts)]
    out = []
    for v, d in opts:
        for n in range(1, capacity[v.hardware] + 1):
            o = queue_model(arrivals_ms, [d] * n, objective_ms)
            out.append(Config(task, {v.hardware: n}, {v.id: n}, o))
            if o.late == 0:
                break
    for (a, da), (f, df) in itertools.permutations(opts, 2):
        if da.accuracy <= df.accuracy or speed(df) <= speed(da):
            continue
        for n1 in range(1, MAX_ACCURATE + 1):
            for n2 in range(1, MAX_FAST + 1):
                need = {a.hardware: n1}
                need[f.hardware] = need.get(f.hardware, 0) + n2
                if any(need[c] > capacity[c] for c in need):
                    continue
                o = queue_model(arrivals_ms, [da] * n1 + [df] * n2, objective_ms)
                out.append(Config(task, need, {a.id: n1, f.id: n2}, o))
                if o.late == 0:
                    break
    return out


def best_split(configs: Sequence[Config], tasks: Sequence[str], capacity: Mapping[str, int],
               min_accuracy: float) -> list[Config] | None:
    """One configuration per task within ``capacity`` (devices per class) with the fewest late rows
    at a mean accuracy (0-100) of at least ``min_accuracy`` over the rows answered in time, and of
    those the fewest devices; None when no choice of the configurations reaches it."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    if not tasks:
        return []
    rows, lo, hi = [], [], []
    for t in tasks:
        rows.append([1.0 if c.task == t else 0.0 for c in configs])
        lo.append(1)
        hi.append(1)
    for cls, n in capacity.items():
        rows.append([c.devices.get(cls, 0) for c in configs])
        lo.append(0)
        hi.append(n)
    rows.append([c.outcome.accuracy_sum - min_accuracy / 100.0 * c.outcome.served for c in configs])
    lo.append(0)
    hi.append(np.inf)
    per_device = 1e-3  # below one late row however many devices: it breaks ties only
    cost = np.array([c.outcome.late + per_device * sum(c.devices.values()) for c in configs], float)
    res = milp(cost, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=np.ones(len(configs)),
               bounds=Bounds(0, 1))
    if res.status != 0 or res.x is None:
        return None
    return [c for c, x in zip(configs, res.x) if x > 0.5]


@dataclass
class Split:
    workload: str
    min_accuracy: float
    rows: int  # scored rows of the whole trace
    rows_modelled: int  # rows in the seconds modelled (all, or the busy ones)
    configs: list[Config] | None  # one per task; None: no split reaches ``min_accuracy``

    @property
    def late(self) -> int:
        return sum(c.outcome.late for c in self.configs or ())

    @property
    def accuracy(self) -> float:
        served = sum(c.outcome.served for c in self.configs or ())
        return sum(c.outcome.accuracy_sum for c in self.configs or ()) / served * 100.0 if served else math.nan

    def replicas(self) -> dict[str, int]:
        return {vid: n for c in self.configs or () for vid, n in c.replicas.items()}


def device_classes(devices: Mapping[str, int]) -> dict[str, int]:
    """Devices per class: a type that runs another's profile (``SAME_PROFILE``) counts as that type."""
    out: dict[str, int] = {}
    for hw, n in devices.items():
        cls = SAME_PROFILE.get(hw, hw)
        out[cls] = out.get(cls, 0) + n
    return out


def find(workload, variants: Sequence[Variant], devices: Mapping[str, int], min_accuracy: float, *,
         objective_ms: float = 300.0, busy_above: float | None = None,
         progress: Callable[[str], None] = lambda line: None) -> Split:
    """The best static split of ``devices`` for the scored part of ``workload`` (``sim.data.Workload``).
    Raises ``ValueError`` when ``busy_above`` keeps no second, or a task has no variant that can
    batch within the objective on these devices (every split would leave all its rows late)."""
    k0 = workload.warmup
    arrivals = workload.arrival_ms[k0:] - workload.t0_ms
    task = workload.task[k0:]
    keep = np.ones(len(arrivals), bool)
    if busy_above is not None:
        second = (arrivals // 1000).astype(int)
        per_s = np.bincount(second) if len(second) else np.zeros(0, int)
        keep = per_s[second] > busy_above
        if not keep.any():
            raise ValueError(f"no second has more than {busy_above:g} arrivals (the busiest has "
                             f"{int(per_s.max()) if len(per_s) else 0})")
        progress(f"busy seconds (more than {busy_above:g} arrivals): {int(np.sum(per_s > busy_above))} of "
                 f"{len(per_s)}, {int(keep.sum())} of {len(arrivals)} rows")
    capacity = device_classes(devices)
    configs: list[Config] = []
    t0 = time.perf_counter()
    for ti, t in enumerate(workload.tasks):
        mine = arrivals[(task == ti) & keep].tolist()
        found = task_configs(t, mine, variants, capacity, objective_ms)
        if mine and not found:
            raise ValueError(f"no variant of {t} can batch within the {objective_ms:g} ms objective on "
                             f"{', '.join(sorted(capacity))}")
        configs.extend(found)
        progress(f"  {t}: {len(mine)} rows, {len(found)} configurations ({time.perf_counter() - t0:.0f} s)")
    tasks = [t for ti, t in enumerate(workload.tasks) if np.any((task == ti) & keep)]
    return Split(workload.name, min_accuracy, len(arrivals), int(keep.sum()),
                 best_split(configs, tasks, capacity, min_accuracy))


class FixedSplit(Ours):
    """The product's selector and batcher on a split pinned for the whole run: one device per
    replica of the split, loaded before the first request (a class's devices of the variant's own
    hardware type first, then those of the types that share its profile, ``SAME_PROFILE``), and nothing
    else -- devices the split leaves empty are not started, the selector sees only the split's
    variants, and a query it would send to a replica not loaded (a cold start) is refused."""

    def __init__(self, replicas: Mapping[str, int], devices: Mapping[str, int], **kw) -> None:
        from infaas.core.scaling import ScalingParams

        super().__init__(ScalingParams(min_workers=devices, max_workers=devices), initial={}, name="static-split", **kw)
        self.split = dict(replicas)
        self.devices = dict(devices)
        self.period_s = None

    def placement(self, known: Mapping[str, Variant]) -> list[tuple[str, str]]:
        """``(hardware type, variant)`` per device."""
        free = dict(self.devices)
        out = []
        for vid, n in sorted(self.split.items()):
            v = known[vid]
            types = [v.hardware, *sorted(h for h, c in SAME_PROFILE.items() if c == v.hardware)]
            for _ in range(n):
                hw = next((h for h in types if free.get(h, 0) > 0), None)
                if hw is None:
                    raise ValueError(f"the split has more replicas on {'/'.join(types)} than devices")
                twin = vid if hw == v.hardware else vid.replace(f":{v.hardware}:", f":{hw}:")
                if twin not in known:
                    raise ValueError(f"no {hw} variant {twin} for {vid}")
                free[hw] -= 1
                out.append((hw, twin))
        return out

    def start(self, sim) -> None:
        from infaas.core import selection

        super().start(sim)  # no machines (``initial={}``)
        placed = self.placement({v.id: v for v in sim.variant_list})
        used = {vid for _, vid in placed}
        self.use_catalogue(selection.Catalogue.build([v for v in sim.variant_list if v.id in used], self.hardware))
        self.assignments = {}
        for hw, vid in placed:
            m = sim.launch(hw, ready=True)
            self.assignments[m.id] = (vid,)
            sim._loaded(sim.load(m, vid))

    def route(self, sim, i: int) -> tuple[str, str]:
        vid, wid = super().route(sim, i)
        m = sim.machines.get(wid)
        if m is None or vid not in m.replicas:
            raise Refused("a cold start outside the split")
        return vid, wid
