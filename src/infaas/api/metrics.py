"""``GET /metrics``: the API process's counts (``api.telemetry``) and the workers it sees, in
Prometheus' text format, through ``prometheus_client`` with a registry of this app's own (not the
process-wide default one), made at the first scrape.

Series (counters end in ``_total``):

- ``infaas_http_requests_total{method,route,status}``: every request; ``route`` is the route's
  template (``/v2/models/{name}/infer``), ``unmatched`` for a path no route has.
- ``infaas_http_request_duration_seconds{method,route}``: a histogram, measured in the service
  from the request's first byte to its answer's last.
- ``infaas_objective_met_total{task,tenant}``, ``infaas_objective_missed_total{task,tenant}``:
  queries with a latency objective (``latency_ms``), answered within it or later (the answer's
  measured ``latency_ms``).
- ``infaas_selections_total{variant}``: queries answered by each variant.
- ``infaas_worker_calls_total{variant,outcome}``: calls from this API to workers (after coalescing),
  ``ok`` or ``failed``.
- ``infaas_function_invocations_total{variant,outcome}``: invocations of the serverless tier
  (``INFAAS_FUNCTION_TIER=on``) by this API, ``ok``, ``error`` or ``throttled``;
  ``infaas_function_cold_starts_total{variant}`` (answered cold: the function loaded the model),
  ``infaas_function_duration_seconds_total{variant}`` (round trips of answered invocations),
  ``infaas_function_billed_seconds_total{variant}``, ``infaas_function_cost_dollars_total{variant}`` and
  ``infaas_function_rate{variant}`` (invocations per second over the last minute: what the scaling
  policy weighs against machines).
- ``infaas_replicas{worker,variant}`` (1 per loaded replica), ``infaas_replica_queued_rows{worker,variant}``
  (rows waiting or running there at the worker's last heartbeat), ``infaas_workers{state}`` (``up``,
  ``draining``, ``suspect``: failed a call from this API lately and kept out of selection): read
  from the metadata store's worker records at each scrape.
- ``process_*`` and ``python_gc_*`` from prometheus_client's own collectors.

With keys on (``INFAAS_AUTH=keys``) the route needs the ``admin`` scope: the series name every
tenant and model. A Prometheus job sends the key with ``authorization: {credentials_file: ...}``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from infaas.api.deps import Services, require, services
from infaas.app.identity import Principal
from infaas.core.domain import WORKER_DRAINING
from infaas.core.errors import HttpStatus, Unavailable

router = APIRouter(tags=["operations"])


class _Collector:
    """The families, from the telemetry's counts and the store's workers, at scrape time."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self):
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        t = self.svc.telemetry
        requests = CounterMetricFamily("infaas_http_requests", "HTTP requests by method, route template and status",
                                       labels=["method", "route", "status"])
        for (method, route, status), n in sorted(t.requests.copy().items()):
            requests.add_metric([method, route, str(status)], n)
        yield requests

        durations = HistogramMetricFamily("infaas_http_request_duration_seconds",
                                          "Time from a request's first byte to its answer, in the service",
                                          labels=["method", "route"])
        for (method, route), h in sorted(t.durations.copy().items()):
            durations.add_metric([method, route], h.cumulative(), sum_value=h.sum)
        yield durations

        met = CounterMetricFamily("infaas_objective_met", "Queries answered within their latency objective",
                                  labels=["task", "tenant"])
        missed = CounterMetricFamily("infaas_objective_missed", "Queries answered later than their latency objective",
                                     labels=["task", "tenant"])
        for (task, tenant), (m, x) in sorted(t.objectives.copy().items()):
            met.add_metric([task, tenant], m)
            missed.add_metric([task, tenant], x)
        yield met
        yield missed

        selections = CounterMetricFamily("infaas_selections", "Queries answered, by the variant that answered",
                                         labels=["variant"])
        calls = CounterMetricFamily("infaas_worker_calls", "Calls from this API to workers, by variant and outcome",
                                    labels=["variant", "outcome"])
        for vid, s in sorted(t.variants.copy().items()):
            selections.add_metric([vid], s.success)
            calls.add_metric([vid, "ok"], s.calls)
            calls.add_metric([vid, "failed"], s.failed_calls)
        yield selections
        yield calls
        yield from self._functions(CounterMetricFamily, GaugeMetricFamily)

        yield from self._workers(GaugeMetricFamily)

    def _functions(self, Counter, Gauge):
        stats = dict(getattr(self.svc.data, "tier_stats", None) or {})
        if not stats:
            return
        calls = Counter("infaas_function_invocations", "Invocations of the serverless tier, by variant and outcome",
                        labels=["variant", "outcome"])
        cold = Counter("infaas_function_cold_starts", "Answered invocations that loaded the model", labels=["variant"])
        duration = Counter("infaas_function_duration_seconds", "Round trips of answered invocations",
                           labels=["variant"])
        billed = Counter("infaas_function_billed_seconds", "Duration as billed (init and run, rounded up to 1 ms)",
                         labels=["variant"])
        cost = Counter("infaas_function_cost_dollars", "What the invocations cost, request price included",
                       labels=["variant"])
        rate = Gauge("infaas_function_rate", "Invocations per second over the last minute", labels=["variant"])
        rates = self.svc.data.tier_rates()
        for vid, s in sorted(stats.items()):
            calls.add_metric([vid, "ok"], s.invocations)
            calls.add_metric([vid, "error"], s.errors)
            calls.add_metric([vid, "throttled"], s.throttles)
            cold.add_metric([vid], s.cold_starts)
            duration.add_metric([vid], s.duration_ms / 1000)
            billed.add_metric([vid], s.billed_ms / 1000)
            cost.add_metric([vid], s.cost)
            rate.add_metric([vid], rates.get(vid, 0.0))
        yield from (calls, cold, duration, billed, cost, rate)

    def _workers(self, Gauge):
        try:
            workers = self.svc.control.store.workers()
        except Unavailable:  # the store is busy: the data plane's snapshot (workers that are up)
            workers = list(self.svc.data.snapshot()[1].workers.values())
        now = self.svc.data.clock()
        suspects = {w for w, until in dict(getattr(self.svc.data, "_suspect_until", {})).items() if until > now}
        states = {"up": 0, "draining": 0, "suspect": 0}
        replicas = Gauge("infaas_replicas", "Loaded replicas, by worker and variant", labels=["worker", "variant"])
        queued = Gauge("infaas_replica_queued_rows", "Rows waiting or running on a replica at its worker's last heartbeat",
                       labels=["worker", "variant"])
        for w in sorted(workers, key=lambda w: w.id):
            state = "suspect" if w.id in suspects else "draining" if w.state == WORKER_DRAINING else "up"
            states[state] += 1
            for r in w.replicas:
                replicas.add_metric([w.id, r.variant_id], 1)
                queued.add_metric([w.id, r.variant_id], r.queued_rows)
        health = Gauge("infaas_workers", "Workers by state: up, draining, or suspect (failed a call from this API lately)",
                       labels=["state"])
        for state, n in states.items():
            health.add_metric([state], n)
        yield health
        yield replicas
        yield queued


def registry(svc: Services):
    """This app's registry (one per ``Services``, so two apps in one process never share series)."""
    if svc.telemetry.registry is None:
        from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector

        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Collector(svc))
        ProcessCollector(registry=reg)
        GCCollector(registry=reg)
        svc.telemetry.registry = reg
    return svc.telemetry.registry


@router.get("/metrics", summary="Prometheus metrics of this API process and the workers it sees (admin)",
            response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(svc: Services = Depends(services), _caller: Principal = Depends(require("admin"))):
    try:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    except ImportError:  # a deployment without the package (the Lambda layer has none)
        raise HttpStatus(501, "metrics need the prometheus-client package, which is not installed here") from None
    return Response(generate_latest(registry(svc)), media_type=CONTENT_TYPE_LATEST)
