"""A trace made fit for the local stack, and the same trace through the simulator.

``infaas replay`` (``infaas.cli.replay``) sends a trace of the simulator's formats to a running
stack; this module holds the parts that do not talk to it, so that the live run and the
simulated one read one plan:

* ``scale``: the trace time-scaled to a rate the machine can carry (``rate`` rows/s on average,
  or ``factor`` times the trace's own rate), cut to ``duration_s`` seconds and ``max_queries``
  queries, optionally with another latency objective;
* ``map_tasks``: the trace's model families (``proteus/<family>``) mapped onto tasks the stack
  serves, families in name order taking the tasks in turn;
* ``tenant_floors``: the tenants' accuracy floors made absolute for the models the stack holds.
  The Proteus tenants ask for 0.90 and 0.95 of a family's best model, which every digits
  classifier meets; here *standard* admits the three most accurate architectures of the task and
  *premium* the two most accurate (an architecture counts with its best variant), so a floor
  rules variants out as it does on the Proteus families;
* ``simulate``: the plan through ``sim.engine`` with the variants the stack measured
  (``GET /v1/models/<name>``: their profiles on this machine), on a fixed fleet of the stack's
  CPU workers (up from the start, billed by the second without a minimum, as the live run counts
  its machine time), under the product's own policy (``policies.ours``) with the stack's scaling
  parameters. The simulator has no API and no client: its latency is the worker's queue, batch
  wait and compute, where the live figures also hold the API, the hop to the worker and the
  client.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Mapping, Sequence

import numpy as np

from infaas.core.domain import READY, HardwareType, Variant
from infaas.core.scaling import ScalingParams
from infaas.sim.data import Tenant, Workload, variant_from_record
from infaas.sim.engine import ClusterSpec, Simulator
from infaas.sim.metrics import Result, evaluate


def trace_rate(w: Workload) -> float:
    """Mean arrivals per second over the trace's span."""
    if len(w) < 2:
        return float(len(w))
    span_s = (float(w.arrival_ms[-1]) - float(w.arrival_ms[0])) / 1000.0
    return len(w) / span_s if span_s > 0 else float(len(w))


def scale(w: Workload, *, rate: float | None = None, factor: float | None = None, duration_s: float | None = None,
          max_queries: int | None = None, latency_ms: float | None = None) -> Workload:
    """The trace time-scaled: arrivals divided by ``factor`` (or by the factor that makes the mean
    rate ``rate`` rows/s), starting at 0; then the first ``duration_s`` seconds and at most
    ``max_queries`` queries; every objective ``latency_ms`` if given (else the trace's own)."""
    if rate is not None and factor is not None:
        raise ValueError("give a rate or a factor, not both")
    if rate is not None:
        if rate <= 0:
            raise ValueError("the rate must be above 0")
        factor = rate / trace_rate(w) if len(w) else 1.0
    factor = 1.0 if factor is None else factor
    if factor <= 0:
        raise ValueError("the scale factor must be above 0")
    t = (w.arrival_ms - (float(w.arrival_ms[0]) if len(w) else 0.0)) / factor
    n = len(t)
    if duration_s is not None:
        n = int(np.searchsorted(t, duration_s * 1000.0, side="left"))
    if max_queries is not None:
        n = min(n, max_queries)
    lat = np.full(n, float(latency_ms)) if latency_ms is not None else w.latency_ms[:n].copy()
    meta = dict(w.meta, scale_factor=factor, offered_rps=round(trace_rate(w) * factor, 3))
    return Workload(w.name, list(w.tasks), list(w.tenants), t[:n].astype(np.float64), w.task[:n].copy(),
                    w.tenant[:n].copy(), lat.astype(np.float64), meta)


def map_tasks(w: Workload, tasks: Sequence[str]) -> Workload:
    """Each of the trace's tasks (families) onto one of ``tasks``: the trace's tasks in name order
    take ``tasks`` in turn. ``meta["task_map"]`` records the mapping."""
    if not tasks:
        raise ValueError("name at least one task of the stack")
    targets = sorted(set(tasks), key=list(tasks).index)
    mapping = {src: targets[k % len(targets)] for k, src in enumerate(sorted(w.tasks))}
    index = np.array([targets.index(mapping[src]) for src in w.tasks], dtype=np.int32)
    return Workload(w.name, targets, list(w.tenants), w.arrival_ms, index[w.task] if len(w) else w.task.copy(),
                    w.tenant, w.latency_ms, dict(w.meta, task_map=mapping))


def tenant_floors(variants: Iterable[Variant], tenants: Sequence[Tenant]) -> list[Tenant]:
    """The tenants with absolute floors for ``variants`` (see the module docstring): a tenant
    without a floor keeps none; of those with one, the one with the highest floor gets the second
    best architecture's accuracy, the next the third best's (the lowest one there is when the task
    has fewer)."""
    best: dict[str, float] = {}
    for v in variants:
        if v.status == READY and v.accuracy is not None:
            best[v.architecture] = max(best.get(v.architecture, 0.0), float(v.accuracy))
    ranked = sorted(best.values(), reverse=True)
    if not ranked:
        return [Tenant(t.name, None, t.share) for t in tenants]
    floored = sorted((t for t in tenants if t.min_accuracy is not None), key=lambda t: -float(t.min_accuracy or 0))
    absolute = {t.name: ranked[min(k + 1, len(ranked) - 1)] for k, t in enumerate(floored)}
    return [Tenant(t.name, absolute.get(t.name), t.share) for t in tenants]


def with_tenants(w: Workload, tenants: Sequence[Tenant]) -> Workload:
    """The same requests with other tenants (same order, same shares drawn already)."""
    if len(tenants) != len(w.tenants):
        raise ValueError("one tenant for each of the trace's tenants")
    return Workload(w.name, list(w.tasks), list(tenants), w.arrival_ms, w.task, w.tenant, w.latency_ms, dict(w.meta))


def variants_from_catalogue(models: Iterable[Mapping]) -> list[Variant]:
    """Ready, profiled variants out of ``GET /v1/models/<name>`` answers (``{"variants": [...]}``)."""
    out = []
    for doc in models:
        for d in doc.get("variants", ()):
            v = variant_from_record(d, doc)
            if v.status == READY and v.profile is not None:
                out.append(v)
    return out


def simulate(w: Workload, variants: Sequence[Variant], *, workers: int, params: ScalingParams,
             hardware: HardwareType, refuse_late: bool = False, seed: int = 0) -> tuple[Result, Simulator]:
    """``w`` through the simulator on ``workers`` machines of ``hardware`` that are up from the start
    (the local stack's fleet, pinned), under the product's policy with ``params``."""
    from infaas.sim.policies.ours import Ours

    hw = hardware.name
    # the replay's queries come from the one tenant that owns (or shares) every variant it reaches;
    # the simulated tenants are accuracy classes, so each variant is visible to all of them
    vs = [replace(v, visibility="shared") for v in variants if v.hardware == hw]
    if not vs:
        raise ValueError(f"no ready variant on {hw}")
    spec = ClusterSpec(hardware={hw: hardware}, start_s={hw: 0.0}, memory_bytes={hw: hardware.memory_bytes},
                       max_machines={hw: workers}, min_billing_s=0.0)
    pinned = replace(params, min_workers={hw: workers}, max_workers={hw: workers})
    policy = Ours(pinned, initial={hw: workers}, name="ours (simulated)", refuse_late=refuse_late)
    sim = Simulator(w, vs, policy, spec, seed=seed)
    sim.run()
    res, _ = evaluate(sim, policy.name)
    return res, sim
