"""What a run delivered: violations, cost, goodput, accuracy, machines over time.

A request *violates its objective* when it is not answered within its latency
objective (refused, never finished, or finished late) or when it is answered
by a variant less accurate than its tenant's floor.

For the fixed-cluster mode two more counts hold results against the Proteus
artifact: *strict* (not completed within 300 ms, over requests arrived) and
*Proteus-style* (what that simulator counts: requests dropped or refused, and
completions later than 1 s), and *effective accuracy*, the mean normalised
accuracy (0-100) of the variants that served completed requests.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from infaas.sim.engine import Simulator

PROTEUS_LATE_MS = 1000.0


@dataclass
class Result:
    policy: str
    workload: str
    requests: int
    violations: int
    violation_rate: float
    latency_violations: int
    accuracy_violations: int
    refused: int
    cost: float
    duration_s: float
    goodput_rps: float
    mean_accuracy: float  # normalised, 0..100, over answered requests
    p50_ms: float
    p99_ms: float
    strict_violation_rate: float  # not completed within its objective
    proteus_violation_rate: float  # refused/unfinished or completed later than 1 s
    machine_seconds: dict = field(default_factory=dict)
    loads: int = 0
    wall_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Series:
    """Per-second time series for plots."""

    t_s: np.ndarray
    arrivals: np.ndarray
    violations: np.ndarray
    accuracy: np.ndarray
    machines: dict  # hw -> np.ndarray of counts at t_s
    cost_per_hour: np.ndarray


def evaluate(sim: Simulator, policy_name: str, wall_s: float = 0.0) -> tuple[Result, Series]:
    w = sim.workload
    a = sim.arrays()
    k0, t0 = w.warmup, w.t0_ms  # the warm-up is not counted
    arrival, finish, objective, acc = (a[k][k0:] for k in ("arrival_ms", "finish_ms", "objective_ms", "accuracy"))
    arrival, finish = arrival - t0, finish - t0
    tenant = w.tenant[k0:]
    n = len(arrival)
    latency = finish - arrival
    done = ~np.isnan(finish)
    in_time = done & (latency <= objective + 1e-9)
    floors = np.array([t.min_accuracy if t.min_accuracy is not None else -1.0 for t in w.tenants])[tenant] if n else np.zeros(0)
    acc_ok = ~done | (acc >= floors - 1e-9)
    good = in_time & acc_ok
    violations = int(n - good.sum())
    lat_viol = int(n - in_time.sum())
    acc_viol = int((done & ~acc_ok).sum())
    duration_s = max(w.duration_s, 1e-9)
    late_proteus = (~done) | (latency > PROTEUS_LATE_MS)
    lat_done = latency[done]
    res = Result(
        policy=policy_name,
        workload=w.name,
        requests=n,
        violations=violations,
        violation_rate=violations / n if n else 0.0,
        latency_violations=lat_viol,
        accuracy_violations=acc_viol,
        refused=sum(1 for i in sim.refused if i >= k0),
        cost=sim.cost(),
        duration_s=duration_s,
        goodput_rps=float(good.sum()) / duration_s,
        mean_accuracy=float(np.nanmean(acc[done]) * 100.0) if done.any() else math.nan,
        p50_ms=float(np.percentile(lat_done, 50)) if len(lat_done) else math.nan,
        p99_ms=float(np.percentile(lat_done, 99)) if len(lat_done) else math.nan,
        strict_violation_rate=float((~in_time).sum()) / n if n else 0.0,
        proteus_violation_rate=float(late_proteus.sum()) / n if n else 0.0,
        machine_seconds={k: round(v, 1) for k, v in sim.machine_seconds().items()},
        loads=sim.loads,
        wall_s=wall_s,
    )
    # per-second series
    secs = int(math.ceil(duration_s)) + 1
    sec = (arrival // 1000).astype(int) if n else np.zeros(0, int)
    arrivals = np.bincount(sec, minlength=secs)[:secs]
    viol = np.bincount(sec[~good], minlength=secs)[:secs] if n else np.zeros(secs)
    acc_sum = np.bincount(sec[done], weights=acc[done], minlength=secs)[:secs] if n else np.zeros(secs)
    acc_cnt = np.bincount(sec[done], minlength=secs)[:secs] if n else np.zeros(secs)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(acc_cnt > 0, acc_sum / np.maximum(acc_cnt, 1) * 100.0, np.nan)
    t = np.arange(secs, dtype=float)
    hws = sorted({hw for _, c in sim.samples for hw in c})
    st = np.array([s - t0 / 1000.0 for s, _ in sim.samples]) if sim.samples else np.zeros(1)
    machines = {}
    for hw in hws:
        vals = np.array([c.get(hw, 0) for _, c in sim.samples])
        idx = np.clip(np.searchsorted(st, t, side="right") - 1, 0, len(vals) - 1)
        machines[hw] = vals[idx]
    price = {hw: sim.spec.hardware[hw].price_per_hour for hw in hws}
    cph = sum((machines[hw] * price[hw] for hw in hws), np.zeros(secs))
    return res, Series(t, arrivals, viol, accuracy, machines, cph)
