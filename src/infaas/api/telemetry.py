"""What the API process counts about its own traffic, for ``GET /metrics`` (``api.metrics``), the
per-model statistics (``GET /v2/models/stats``) and the console (``api.console``).

Counting is cheap on purpose: every count happens on the event loop's thread (the outermost ASGI
layer, the inference handlers and the worker client all run there), in plain dicts and
``__slots__`` objects, with no lock and no label dict per request; whoever reads (a scrape, the
console, the statistics route, possibly from a thread) copies what it needs first. Prometheus'
types and text format are made only at scrape time (``api.metrics``), from these counts.

- ``request``: every HTTP request by method, route template and status, and its duration
  (a histogram per route, seconds, as the service measured it).
- ``answered`` / ``refused``: a query's outcome. Per variant: queries answered, their rows and
  service-side nanoseconds (``Answer.latency_ms``); per task and tenant: objectives met or missed
  (a query with ``latency_ms`` in its objective, against the answer's measured latency); and each
  tenant's last ``DECISIONS`` decisions (or refusals) with their reasons, for the console (a ring
  per tenant: one tenant's flood of queries pushes out nobody else's).
- ``forget``: a deleted architecture's counts go with it (a name registered again starts at zero).
- ``MeteredClient``: the data plane's worker client, counting each worker call per variant (after
  coalescing: one call may carry several queries) and its round trip, and whether it failed.
"""

from __future__ import annotations

import collections
import time
from bisect import bisect_left
from typing import Any, Callable

from infaas.adapters import logs
from infaas.core.domain import Query
from infaas.core.ports import WorkerClient

# Request duration buckets, seconds (the upper bounds; Prometheus adds +Inf).
BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DECISIONS = 200  # recent decisions kept for the console
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


class Histogram:
    __slots__ = ("counts", "sum", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_S) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.total = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS_S, seconds)] += 1  # bound >= seconds: Prometheus' "le"
        self.sum += seconds
        self.total += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, running = [], 0
        for bound, n in zip(BUCKETS_S, self.counts):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class VariantStats:
    """One variant's counts, as the API saw them (Triton's statistics shape: ``api.data.model_stats``)."""

    __slots__ = ("variant", "architecture", "task", "success", "success_ns", "rows", "calls", "calls_ns",
                 "failed_calls", "failed_calls_ns", "last_ms")

    def __init__(self, variant: str, task: str) -> None:
        self.variant, self.architecture, self.task = variant, variant.split(":", 1)[0], task
        self.success = self.success_ns = self.rows = 0
        self.calls = self.calls_ns = self.failed_calls = self.failed_calls_ns = 0
        self.last_ms = 0


class Telemetry:
    def __init__(self, catalogue: Callable[[], Any] | None = None, decisions: int = DECISIONS) -> None:
        self._catalogue = catalogue  # () -> selection.Catalogue, for a variant's task
        self.started_at = time.time()
        self.requests: dict[tuple[str, str, int], int] = {}  # (method, route, status) -> requests
        self.durations: dict[tuple[str, str], Histogram] = {}  # (method, route) -> seconds
        self.variants: dict[str, VariantStats] = {}
        self.objectives: dict[tuple[str, str], list[int]] = {}  # (task, tenant) -> [met, missed]
        self.decisions: dict[str, collections.deque] = {}  # tenant -> its last decisions
        self._ring = decisions
        self.registry = None  # prometheus_client's CollectorRegistry of this app, made at the first scrape

    # ---------------------------------------------------------------- counting (event loop thread)
    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in METHODS:
            method = "OTHER"
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.durations.get((method, route))
        if hist is None:
            hist = self.durations[(method, route)] = Histogram()
        hist.observe(seconds)

    def variant(self, variant_id: str, task: str | None = None) -> VariantStats:
        s = self.variants.get(variant_id)
        if s is None:
            v = None
            if self._catalogue is not None:
                try:
                    v = self._catalogue().variants.get(variant_id)
                except Exception:  # the store is busy: the query's own task, else unknown
                    v = None
            s = self.variants[variant_id] = VariantStats(variant_id, v.task if v is not None else (task or "unknown"))
        return s

    def answered(self, query: Query, answer, rows: int) -> None:
        """A query answered: its variant's counts, its objective, the decision."""
        d = answer.decision
        s = self.variants.get(d.variant) or self.variant(d.variant, query.task)
        now = time.time()
        latency_ms = answer.latency_ms
        s.success += 1
        s.success_ns += int(latency_ms * 1e6)
        s.rows += rows
        s.last_ms = int(now * 1000)
        met = query.objective.met_by(latency_ms)
        if met is not None:
            key = (s.task, query.tenant)
            counts = self.objectives.get(key)
            if counts is None:
                counts = self.objectives[key] = [0, 0]
            counts[0 if met else 1] += 1
        self._ring_of(query.tenant).append((now, query, d, latency_ms, rows, logs.REQUEST_ID.get(), None))

    def refused(self, query: Query, error, rows: int) -> None:
        """A query no variant answered (objective out of reach, over capacity, a worker fault)."""
        self._ring_of(query.tenant).append((time.time(), query, None, None, rows, logs.REQUEST_ID.get(), error))

    def _ring_of(self, tenant: str) -> collections.deque:
        ring = self.decisions.get(tenant)
        if ring is None:
            ring = self.decisions[tenant] = collections.deque(maxlen=self._ring)
        return ring

    def forget(self, architecture: str) -> None:
        """A deleted architecture's per-variant counts (its name may be registered again, by anyone)."""
        for vid in [vid for vid, s in self.variants.items() if s.architecture == architecture]:
            self.variants.pop(vid, None)

    def called(self, variant_id: str, ns: int, ok: bool) -> None:
        s = self.variants.get(variant_id) or self.variant(variant_id)
        if ok:
            s.calls += 1
            s.calls_ns += ns
        else:
            s.failed_calls += 1
            s.failed_calls_ns += ns

    # ---------------------------------------------------------------- reading (any thread)
    def recent(self, tenant: str | None = None, limit: int = DECISIONS) -> list[dict[str, Any]]:
        """The last decisions, newest first; only ``tenant``'s own unless ``tenant`` is None."""
        if tenant is not None:
            ring = self.decisions.get(tenant)
            entries = _copy(ring) if ring is not None else []
        else:
            entries = sorted((e for r in list(self.decisions.values()) for e in _copy(r)), key=lambda e: e[0])
        out = []
        for t, query, d, latency_ms, rows, rid, error in reversed(entries):
            target = query.variant or query.architecture or query.task
            doc: dict[str, Any] = {
                "time": t, "tenant": query.tenant, "target": target,
                "target_kind": "variant" if query.variant else "architecture" if query.architecture else "task",
                "objective": query.objective.to_dict(), "rows": rows, "request_id": rid,
            }
            if d is not None:
                doc.update(variant=d.variant, worker=d.worker, batch=d.batch,
                           predicted_latency_ms=round(d.predicted_latency_ms, 4), latency_ms=round(latency_ms, 4),
                           cost_per_query=d.cost_per_query, accuracy=d.accuracy, loaded=d.loaded, reason=d.reason,
                           objective_met=query.objective.met_by(latency_ms))
            else:
                doc.update(variant=None, worker=None, reason=error.message, error=error.code, status=error.status,
                           objective_met=None if query.objective.latency_ms is None else False)
            out.append(doc)
            if len(out) >= limit:
                break
        return out

    def objective_rates(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Per task: queries with a latency objective answered within it, and late ones."""
        by_task: dict[str, list[int]] = {}
        for (task, who), (met, missed) in list(self.objectives.items()):
            if tenant is None or who == tenant:
                c = by_task.setdefault(task, [0, 0])
                c[0] += met
                c[1] += missed
        return [{"task": task, "met": met, "missed": missed,
                 "rate": round(met / (met + missed), 4) if met + missed else None}
                for task, (met, missed) in sorted(by_task.items())]


def _copy(ring: collections.deque) -> list:
    """The ring as a list, read from another thread than the one that appends to it."""
    for _ in range(10):
        try:
            return list(ring)
        except RuntimeError:  # appended to meanwhile
            continue
    return []


class MeteredClient(WorkerClient):
    """The data plane's worker client, counting each call per variant (``Telemetry.called``)."""

    def __init__(self, inner: WorkerClient, telemetry: Telemetry) -> None:
        self.inner, self.telemetry = inner, telemetry
        self.takes_parts = inner.takes_parts

    async def infer(self, url: str, variant_id: str, frame, objective_ms: float | None,
                    model: str | None = None) -> bytes:
        t0 = time.perf_counter_ns()
        try:
            out = await self.inner.infer(url, variant_id, frame, objective_ms, model)
        except Exception:
            self.telemetry.called(variant_id, time.perf_counter_ns() - t0, False)
            raise
        self.telemetry.called(variant_id, time.perf_counter_ns() - t0, True)
        return out

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str):  # anything else the wrapped client has (its agents, its key, ...)
        if name == "inner":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
