"""The data plane: answer a query (select a variant and a worker, send the rows, return the outputs and the decision).

Transports only decode, call ``DataPlane.answer``, and encode.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np

from infaas.app.coalescer import Coalescer
from infaas.app.store import MetadataStore
from infaas.core import tier
from infaas.core.burst import Unserved
from infaas.core.domain import (
    Decision,
    Query,
    TensorSpec,
)
from infaas.core.errors import (
    ConditionFailed,
    InfaasError,
    NoFeasibleVariant,
    NotFound,
    PayloadTooLarge,
    Unavailable,
    VariantFault,
    WorkerFault,
)
from infaas.core.inputs import validate_inputs
from infaas.core.ports import FunctionTier, WorkerClient
from infaas.core.selection import Catalogue, Cluster, candidates, select
from infaas.core.settings import Settings

log = logging.getLogger("infaas.app.data")

FAULTY_AFTER = 5  # failures in a row on workers that answered before a variant is suspended
# A suspended variant is out of this process's selection this long, twice as long each time it is
# suspended again without a query answered in between, up to SUSPEND_MAX_S: a broken build stays
# out, a variant one tenant's inputs made fail (a run past its deadline) comes back.
SUSPEND_S = 60.0
SUSPEND_MAX_S = 3600.0

# A snapshot older than this is refreshed before a query is decided on it (``fresh_snapshot``).
STALE_S = 1.0

# When the front end took the query (``time.perf_counter()``), set by the transport that received
# it (the API's ASGI entry, the selector function's handler): an answer's ``latency_ms`` is
# measured from there, so it includes reading and decoding the request.
ARRIVED: contextvars.ContextVar[float | None] = contextvars.ContextVar("infaas_arrived", default=None)

# The overhead estimate per worker (``Cluster.overhead_ms``): a moving average of what warm
# answers took beyond their predicted queue and compute, each sample clipped to [0, OVERHEAD_CAP_MS]
# (one stalled answer must not make a worker look unreachable for long).
OVERHEAD_WEIGHT = 0.1
OVERHEAD_CAP_MS = 50.0

# The serverless tier (``functions``): its recent rate per variant is counted over this window
# (``DataPlane.tier_rates``) and published to the store every ``TIER_PUBLISH_S`` under the policy
# state ``TIER_DEMAND`` (one entry per data-plane process; ``tier_demand`` sums the fresh ones).
TIER_RATE_WINDOW_S = 60.0
TIER_PUBLISH_S = 10.0
TIER_DEMAND = "tier-demand"
TIER_EXPIRE_S = 1.0  # the warm pool's idle environments are aged out at most this often
# The invocation's payload is the rows as a base64 .npz: 4/3 of their bytes, plus the event's own
TIER_PAYLOAD_OVERHEAD = 4096


def invocation_bytes(feed: Mapping[str, np.ndarray]) -> int:
    """About how large the function's invocation event for these rows is (a base64 ``.npz``)."""
    return sum(int(a.nbytes) for a in feed.values()) * 4 // 3 + TIER_PAYLOAD_OVERHEAD


@dataclass
class TierStats:
    """One variant's invocations of the serverless tier, as this process made them."""

    invocations: int = 0  # answered
    cold_starts: int = 0  # of which the function loaded the model (``cold`` in its answer)
    errors: int = 0  # the function failed or refused (not throttles)
    throttles: int = 0  # no concurrency left (ours, or the function's)
    duration_ms: float = 0.0  # round trips of answered invocations, as measured here
    billed_ms: int = 0  # as the function reported it: init and run, rounded up per invocation
    cost: float = 0.0  # USD, request price included (``tier.invocation_cost``)
    recent: collections.deque = field(default_factory=collections.deque)  # times of recent invocations


@dataclass
class Answer:
    outputs: dict[str, np.ndarray]
    decision: Decision
    latency_ms: float
    retried: bool
    retry_reason: str | None = None  # the error code that moved the query: worker_fault, worker_draining


class DataPlane:
    """Answers queries: validate, select, dispatch, retry once elsewhere on a fault.

    Holds a cached snapshot of the catalogue and the cluster, refreshed at most
    every ``settings.snapshot_s`` (and the catalogue only when its version moved).
    """

    def __init__(self, store: MetadataStore, client: WorkerClient, settings: Settings,
                 clock: Callable[[], float] = time.time, functions: FunctionTier | None = None) -> None:
        self.store, self.client, self.settings, self.clock = store, client, settings, clock
        # the serverless tier (INFAAS_FUNCTION_TIER=on): how its functions are invoked, and this process's
        # view of their warm pool (acquired before, released after each invocation, aged on refresh)
        self.functions = functions
        self.tier_state: tier.TierState | None = None if functions is None else tier.TierState(
            concurrency=functions.concurrency, keep_warm_s=settings.function_keep_warm_s)
        self.tier_stats: dict[str, TierStats] = {}
        self._tier_by_tenant: dict[str, int] = {}  # tenant -> its invocations in flight (``function_tenant_share``)
        # queries turned away (every replica late, INFAAS_REFUSE_LATE): demand no heartbeat shows,
        # published beside the tier's rate for the autoscaler (``unserved_demand``)
        self.unserved = Unserved(start=self.clock())
        self._tier_expired_at = -math.inf
        self._tier_published_at = -math.inf
        self._tier_entry_until = -math.inf  # this process's published entry counts until then
        self._instance = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._catalogue = Catalogue.build([])
        self._catalogue_version = -1
        self._specs: dict[str, tuple[TensorSpec, ...]] = {}
        self._outputs: dict[str, tuple[str, ...]] = {}  # architecture -> its output names
        self._cluster = Cluster.build([], settings.hardware)
        self._refreshed_at = -math.inf
        self._suspect_until: dict[str, float] = {}  # worker id -> time it may be selected again
        self._coalescers: dict[tuple[str, str], Coalescer] = {}
        self._refreshing: asyncio.Future | None = None  # the refresh under way in a thread
        self._pending: dict[tuple[str, str], int] = {}  # (worker, variant) -> rows sent, not yet answered
        self._faults: dict[str, int] = {}  # variant id -> failures in a row (``_variant_failed``)
        self._suspended: dict[str, tuple[float, str]] = {}  # variant id -> (out of selection until, why)
        self._suspend_s: dict[str, float] = {}  # variant id -> its next suspension's length
        self._visible: tuple | None = None  # (catalogue, variants left out, the catalogue without them)
        self._overhead: dict[str, float] = {}  # worker id -> ms beyond queue and compute (``_observe``)

    def snapshot(self, *, force: bool = False) -> tuple[Catalogue, Cluster]:
        """The cached snapshot. A stale one is refreshed in a thread while queries
        go on with the current one, so a query never waits for the store; a
        forced refresh (or the first one) happens at once."""
        now = self.clock()
        if force or self._refreshed_at == -math.inf:
            self._refresh(now)
        elif now - self._refreshed_at >= self.settings.snapshot_s and self._refreshing is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside the event loop (a thread, a Lambda handler)
                self._refresh(now)
            else:
                self._refreshing = loop.run_in_executor(None, self._refresh, now)
                self._refreshing.add_done_callback(self._refreshed)
        return self._without_suspended(now), self._cluster

    def _without_suspended(self, now: float) -> Catalogue:
        """The catalogue less the variants suspended as of ``now`` (``_variant_failed``), made here on
        the event loop's side at each read, so that a refresh running in a thread cannot bring back an
        old view of the suspensions."""
        if not self._suspended:
            return self._catalogue
        left_out = frozenset(vid for vid, (until, _) in self._suspended.items() if until > now)
        if len(left_out) < len(self._suspended):  # the suspensions over are forgotten
            self._suspended = {vid: s for vid, s in self._suspended.items() if vid in left_out}
        if not left_out & self._catalogue.variants.keys():
            return self._catalogue
        c = self._catalogue
        if self._visible is None or self._visible[0] is not c or self._visible[1] != left_out:
            self._visible = c, left_out, Catalogue.build([v for v in c.variants.values() if v.id not in left_out],
                                                         self.settings.hardware, c.task_owners)
        return self._visible[2]

    async def fresh_snapshot(self) -> tuple[Catalogue, Cluster]:
        """The snapshot a query is decided on. One older than ``STALE_S`` (after a lull: at one
        query every few seconds, each query would otherwise be decided on the view of the one
        before it, a replica loaded since still unknown) is refreshed first, off the event loop,
        or the refresh already under way is awaited; a younger stale one is refreshed in the
        background while the query goes on with it."""
        if self._refreshed_at != -math.inf and self.clock() - self._refreshed_at >= STALE_S:
            if self._refreshing is None:
                self.snapshot()  # starts the refresh
            if self._refreshing is not None:
                try:
                    await asyncio.shield(self._refreshing)
                except Exception:  # the store is busy (``_refreshed`` logs it): decide on the view there is
                    pass
        return self.snapshot()

    def _refreshed(self, fut) -> None:
        self._refreshing = None
        if fut.exception() is not None:  # the store was busy: the next query tries again
            log.warning("snapshot refresh failed: %s", fut.exception())

    def _refresh(self, now: float) -> None:
        version = self.store.catalogue_version()
        if version != self._catalogue_version:
            catalogue = Catalogue.build(self.store.all_variants(), self.settings.hardware, self.store.task_owners())
            architectures = self.store.architectures()
            self._specs = {a.name: a.inputs for a in architectures}
            self._outputs = {a.name: tuple(t.name for t in a.outputs) for a in architectures}
            self._catalogue, self._catalogue_version = catalogue, version
        healthy = [w for w in self.store.workers() if self._suspect_until.get(w.id, 0.0) <= now]
        self._cluster = self._build_cluster(healthy)
        self._refreshed_at = now
        if self.functions is not None:
            expire = getattr(self.functions, "expire", None)
            if expire is not None:  # the local tier's idle instances past keep-warm stop
                expire()
        if now - self._tier_published_at >= TIER_PUBLISH_S:
            self._tier_published_at = now
            self._publish_tier_demand(now)

    def _build_cluster(self, workers) -> Cluster:
        live = {w.id for w in workers}
        if len(self._overhead) > len(live) + 64:  # forget workers long gone
            self._overhead = {k: v for k, v in self._overhead.items() if k in live}
        return Cluster.build(workers, self.settings.hardware, self._pending, refuse_late=self.settings.refuse_late == "on",
                             catalogue=self._catalogue, overhead_ms=self._overhead, tier=self.tier_state,
                             now=self.clock())

    def input_specs(self, query: Query) -> tuple[TensorSpec, ...]:
        """The input spec of what the query names, if the tenant may use it.

        Goes through ``selection.candidates`` so that a name that does not
        exist and another tenant's private model fail with the same 404.
        """
        catalogue, _ = self.snapshot()
        try:
            arch = candidates(query, catalogue)[0].architecture
        except NotFound:
            catalogue, _ = self.snapshot(force=True)  # registered a moment ago?
            try:
                arch = candidates(query, catalogue)[0].architecture
            except NotFound:
                self._raise_if_suspended(query)
                raise
        specs = self._specs.get(arch)
        if specs is None:
            self.snapshot(force=True)
            specs = self._specs[arch]
        return specs

    def output_names(self, query: Query) -> frozenset[str]:
        """The output names of what the query names (for a task, those of any of its architectures),
        if the tenant may use it; a name that does not exist is the same 404 as ``input_specs``'s."""
        self.input_specs(query)  # the 404, and a catalogue that knows a model registered a moment ago
        catalogue, _ = self.snapshot()
        archs = {v.architecture for v in candidates(query, catalogue)}
        return frozenset(n for a in archs for n in self._outputs.get(a, ()))

    def suspect(self, worker_id: str) -> None:
        """Keep a worker that just failed out of selection for ``suspect_s``
        (it may be dead; its record expires within ``heartbeat_ttl_s``)."""
        now = self.clock()
        self._suspect_until[worker_id] = now + self.settings.suspect_s
        # drop it from the snapshot at once, without a store read
        self._cluster = self._build_cluster([w for w in self._cluster.workers.values() if w.id != worker_id])

    async def infer(self, query: Query, arrays: Mapping[str, np.ndarray]) -> Answer:
        t0 = ARRIVED.get() or time.perf_counter()
        specs = self.input_specs(query)
        feed, rows = validate_inputs(arrays, specs, self.settings.max_rows)
        query = Query(rows, query.objective, query.variant, query.architecture, query.task, query.tenant)
        catalogue, cluster = await self.fresh_snapshot()
        if self.functions is not None:
            cluster = self._with_tier(cluster, feed)
            named = catalogue.variants.get(query.variant) if query.variant else None
            if named is not None and named.hardware == tier.HARDWARE:
                self._check_tier_takes(named.id, cluster, feed)
        try:
            decision = select(query, catalogue, cluster)
        except Unavailable as exc:
            if exc.details.get("variant"):  # turned away: demand all the same
                self.unserved.add(str(exc.details["variant"]), self.clock(), rows)
            raise
        if decision.worker == tier.HARDWARE:
            try:
                answer = await self._invoke_function(query, decision, catalogue, feed, rows, t0)
                if decision.displaced:  # what the machines could not answer in time: their demand all the same
                    self.unserved.add(decision.displaced, self.clock(), rows)
                return answer
            except (Unavailable, PayloadTooLarge, WorkerFault) as exc:  # throttled, too large for it, or
                # out of reach: the machines
                log.info("the function tier did not take %s (%s): deciding again without it", decision.variant,
                         exc.code)
                try:
                    decision = select(query, catalogue, cluster.with_tier(None, 0.0))
                except (NoFeasibleVariant, Unavailable):
                    raise exc from None
        targets = [(decision.worker, decision.worker_url), *decision.fallback_workers][:2]
        retried, retry_reason = False, None
        chosen = catalogue.variants[decision.variant]
        max_rows, model = chosen.batch_cap, chosen.model_key
        for i, (worker_id, url) in enumerate(targets):
            key = (worker_id, decision.variant)
            self._pending[key] = self._pending.get(key, 0) + rows
            try:
                outputs = await self._coalescer(url, decision.variant, max_rows, model).infer(
                    feed, rows, query.objective.latency_ms)
                break
            except WorkerFault as exc:  # a draining worker too (WorkerDraining): out of this snapshot at once
                self.suspect(worker_id)
                if i + 1 >= len(targets):
                    raise
                retried, retry_reason = True, exc.code
            except VariantFault as exc:  # the model failed, the worker did not: nobody else is affected
                self._variant_failed(decision.variant, exc)
                raise
            finally:
                left = self._pending[key] - rows
                if left:
                    self._pending[key] = left
                else:
                    del self._pending[key]
        self._variant_answered(decision.variant)
        latency_ms = (time.perf_counter() - t0) * 1000
        if retried:
            decision = _moved(decision, targets[1], retry_reason)
        else:
            self._observe(decision, latency_ms)
        return Answer(outputs, decision, latency_ms, retried, retry_reason)

    # -- the serverless tier -----------------------------------------------------------------------
    def _with_tier(self, cluster: Cluster, feed: Mapping[str, np.ndarray]) -> Cluster:
        """The snapshot with the tier's warm pool as of now (aged out at most every ``TIER_EXPIRE_S``),
        or without the tier for rows the function cannot take (over its 6 MB payload)."""
        if invocation_bytes(feed) > tier.MAX_PAYLOAD_BYTES:
            return cluster.with_tier(None, 0.0)
        now = self.clock()
        if now - self._tier_expired_at >= TIER_EXPIRE_S:
            self.tier_state = tier.expire(self.tier_state, now)
            self._tier_expired_at = now
        return cluster.with_tier(self.tier_state, now)

    def _check_tier_takes(self, variant_id: str, cluster: Cluster, feed: Mapping[str, np.ndarray]) -> None:
        """A query naming a ``lambda`` variant that the tier cannot take now: 413 for rows over the
        function's payload limit, 503 with ``Retry-After`` at its concurrency limit (the selector
        would only say that no worker runs it)."""
        if cluster.tier is None:
            raise PayloadTooLarge(f"these rows make an invocation of about {invocation_bytes(feed):,} bytes, over the function tier's "
                                  f"synchronous limit of {tier.MAX_PAYLOAD_BYTES:,} (6 MB): send fewer rows per query, "
                                  f"or name a machine variant", field="inputs", limit_bytes=tier.MAX_PAYLOAD_BYTES)
        if tier.available(cluster.tier, cluster.now) <= 0:
            raise Unavailable(f"the function tier is at its concurrency limit ({cluster.tier.concurrency} invocations "
                              f"in flight) and cannot take {variant_id} now; retry", retry_after_s=1.0, field="variant")

    async def _invoke_function(self, query: Query, decision: Decision, catalogue: Catalogue,
                               feed: Mapping[str, np.ndarray], rows: int, t0: float) -> Answer:
        """Answer with the ``lambda`` variant the selector chose: acquire an environment of the warm pool,
        invoke the function, release it. Throttles, payloads it refuses and a tier out of reach
        (``WorkerFault``) are raised for the caller to decide again without the tier; a failure of the
        function (``VariantFault``) counts against the variant; its refusals are the caller's."""
        v = catalogue.variants[decision.variant]
        stats = self.tier_stats.get(v.id) or self.tier_stats.setdefault(v.id, TierStats())
        now = self.clock()
        share = self.settings.function_tenant_share
        held, cap = self._tier_by_tenant.get(query.tenant, 0), max(1, int(self.tier_state.concurrency * share))
        if held >= cap:  # its share of the tier: another tenant's queries still find room
            stats.throttles += 1
            self.function_called(v.id, "throttled", None)
            raise Unavailable(f"your queries hold {held} of the function tier's {self.tier_state.concurrency} concurrent "
                              f"invocations, your share (INFAAS_FUNCTION_TENANT_SHARE={share:g}); retry", retry_after_s=1.0)
        try:
            self.tier_state, _ = tier.acquire(self.tier_state, v.id, now)
        except tier.Throttled as exc:
            stats.throttles += 1
            self.function_called(v.id, "throttled", None)
            raise Unavailable(f"the function tier is at its concurrency limit: {exc}", retry_after_s=1.0) from None
        started = time.perf_counter()
        self._tier_by_tenant[query.tenant] = held + 1
        try:
            outputs, info = await self.functions.invoke(v.id, v.model_key, feed, memory_mb=v.profile.memory_mb,
                                                        timeout_s=min(tier.MAX_DURATION_S, 30.0))
        except Unavailable:
            stats.throttles += 1
            self.function_called(v.id, "throttled", None)
            raise
        except VariantFault as exc:
            stats.errors += 1
            self.function_called(v.id, "error", None)
            self._variant_failed(v.id, exc)
            raise
        except InfaasError:  # the function's refusals, and a tier out of reach (``WorkerFault``): not the variant's
            stats.errors += 1
            self.function_called(v.id, "error", None)
            raise
        finally:
            self.tier_state = tier.release(self.tier_state, v.id, self.clock())
            left = self._tier_by_tenant[query.tenant] - 1
            if left:
                self._tier_by_tenant[query.tenant] = left
            else:
                del self._tier_by_tenant[query.tenant]
        duration_ms = (time.perf_counter() - started) * 1000
        stats.invocations += 1
        stats.cold_starts += int(bool(info.get("cold")))
        stats.duration_ms += duration_ms
        stats.billed_ms += int(info.get("billed_ms") or 0)
        stats.cost += float(info.get("cost") or 0.0)
        stats.recent.append(now)
        while stats.recent and stats.recent[0] < now - TIER_RATE_WINDOW_S:
            stats.recent.popleft()
        info["duration_ms"] = duration_ms
        self.function_called(v.id, "ok", info)
        self._variant_answered(v.id)
        latency_ms = (time.perf_counter() - t0) * 1000
        cold = bool(info.get("cold"))
        if cold != (not decision.loaded):  # the pool's guess was wrong: say what happened
            decision = replace(decision, reason=decision.reason + f"; the function started {'cold' if cold else 'warm'}")
        decision = replace(decision, loaded=not cold)
        return Answer(outputs, decision, latency_ms, False, None)

    def function_called(self, variant_id: str, outcome: str, info: Mapping | None) -> None:
        """One invocation of the tier ended: ``ok`` (``info``: the function's report, ``duration_ms`` the
        round trip here), ``error`` or ``throttled``. The counts are in ``tier_stats``; a front end that
        publishes metrics of its own (the selector function's EMF) extends this."""

    def tier_rates(self, now: float | None = None) -> dict[str, float]:
        """Invocations per second of each variant on the tier over the last ``TIER_RATE_WINDOW_S``, as
        this process made them (what the scaling policy weighs against machines)."""
        now = self.clock() if now is None else now
        out = {}
        for vid, s in list(self.tier_stats.items()):
            n = sum(1 for t in list(s.recent) if t >= now - TIER_RATE_WINDOW_S)
            if n:
                out[vid] = n / TIER_RATE_WINDOW_S
        return out

    def _publish_tier_demand(self, now: float) -> None:
        """This process's ``tier_rates`` into the store's ``TIER_DEMAND`` state (its own entry; entries
        older than two windows are dropped), for an autoscaler in another process."""
        rates = self.tier_rates(now) if self.functions is not None else {}
        unserved = {vid: [round(rate, 4), peak] for vid, (rate, peak) in self.unserved.take(now).items()}
        if not rates and not unserved and now >= self._tier_entry_until:
            return  # nothing to say, and no entry of ours that readers still count: no store read
        try:
            doc, version = self.store.get_state(TIER_DEMAND)
            entries = {k: e for k, e in (doc.get("entries") or {}).items()
                       if isinstance(e, dict) and now - float(e.get("at", 0)) < 2 * TIER_RATE_WINDOW_S}
            if not rates and not unserved and self._instance not in entries:
                return
            entries[self._instance] = {"at": now, "window_s": TIER_RATE_WINDOW_S, "rates": rates, "unserved": unserved}
            self.store.put_state(TIER_DEMAND, {"entries": entries}, expect_version=version)
            self._tier_entry_until = now + 2 * TIER_RATE_WINDOW_S
        except (ConditionFailed, InfaasError) as exc:  # another process wrote meanwhile, or the store is busy
            log.debug("tier demand not published: %s", exc)
        except Exception:  # best effort: a store that refuses it must not stop queries being answered
            log.warning("tier and turned-away demand not published", exc_info=True)

    def _observe(self, decision: Decision, latency_ms: float) -> None:
        """Fold one warm answer into its worker's overhead estimate: what it took beyond the queue
        and compute the selector predicted. A cold start's load time is not overhead."""
        if not decision.loaded:
            return
        sample = min(OVERHEAD_CAP_MS, max(0.0, latency_ms - (decision.predicted_latency_ms - decision.overhead_ms)))
        old = self._overhead.get(decision.worker)
        self._overhead[decision.worker] = sample if old is None else old + OVERHEAD_WEIGHT * (sample - old)

    def _variant_failed(self, variant_id: str, exc: VariantFault) -> None:
        """``FAULTY_AFTER`` failures in a row and the variant is suspended: out of this process's
        selection for ``SUSPEND_S``, doubled each time it is suspended again with no query answered
        in between (``_variant_answered`` resets it), up to ``SUSPEND_MAX_S``. Not marked failed for
        good: a tenant whose inputs make a shared variant run past its deadline would otherwise take
        it away from every other tenant for ever. Its owner sees why in ``infaas models``."""
        n = self._faults[variant_id] = self._faults.get(variant_id, 0) + 1
        if n < FAULTY_AFTER:
            return
        self._faults.pop(variant_id, None)
        now = self.clock()
        length = self._suspend_s.get(variant_id, SUSPEND_S)
        self._suspend_s[variant_id] = min(2 * length, SUSPEND_MAX_S)
        why = f"{n} queries in a row failed on it: {exc.message}"[:1500]
        self._suspended[variant_id] = (now + length, why)
        log.warning("variant %s suspended for %g s: %s", variant_id, length, why)
        try:  # (left out of the catalogue this process reads from now on: ``_without_suspended``)
            v = self.store.get_variant(variant_id)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
            self.store.put_variant(replace(v, message=f"suspended from selection for {length:g} s from {stamp}: {why}"))
        except InfaasError as err:  # the store is busy: the suspension holds in this process all the same
            log.warning("could not record the suspension of variant %s: %s", variant_id, err.message)

    def _variant_answered(self, variant_id: str) -> None:
        """A query answered: its failures in a row, and the growth of its next suspension, start again;
        after a suspension, the note on the variant's record goes (in a thread: it is a store write)."""
        self._faults.pop(variant_id, None)
        if self._suspend_s.pop(variant_id, None) is not None:
            self._suspended.pop(variant_id, None)
            asyncio.get_running_loop().run_in_executor(None, self._clear_suspension_note, variant_id)

    def _clear_suspension_note(self, variant_id: str) -> None:
        try:
            v = self.store.get_variant(variant_id)
            if v.message.startswith("suspended from selection"):
                self.store.put_variant(replace(v, message=""))
        except InfaasError as err:  # the store is busy, or the variant is gone: the note stays
            log.info("suspension note on %s not cleared: %s", variant_id, err.message)

    def _raise_if_suspended(self, query: Query) -> None:
        """503 with ``Retry-After`` for a query that names a suspended variant, or an architecture whose
        every variant is suspended (a 404 would tell its client the model is gone)."""
        now = self.clock()
        every = self._catalogue.variants  # (the catalogue with the suspended variants in it)
        hits = [(until, vid, why) for vid, (until, why) in self._suspended.items() if until > now and (
            vid == query.variant or (query.architecture and vid in every and every[vid].architecture == query.architecture))]
        if hits:
            until, vid, why = max(hits)
            raise Unavailable(f"variant {vid} is suspended for another {until - now:.0f} s: {why}",
                              retry_after_s=max(1.0, round(until - now)), field="variant")

    def _coalescer(self, url: str, variant_id: str, max_rows: int, model: str | None = None) -> Coalescer:
        key = (url, variant_id, model)
        c = self._coalescers.get(key)
        if c is None:
            if len(self._coalescers) > 4096:  # workers come and go: forget idle ones
                self._coalescers = {k: v for k, v in self._coalescers.items() if v.inflight or v.waiting}
            c = self._coalescers[key] = Coalescer(self.client, url, variant_id, max_rows,
                                                  max_bytes=self.settings.max_body_bytes, model=model)
        return c


def tier_demand(store: MetadataStore, now: float, max_age_s: float = 2 * TIER_RATE_WINDOW_S) -> dict[str, float]:
    """The serverless tier's recent invocations per second per variant, summed over the data-plane
    processes that published within ``max_age_s`` (``DataPlane._publish_tier_demand``)."""
    doc, _ = store.get_state(TIER_DEMAND)
    out: dict[str, float] = {}
    for e in (doc.get("entries") or {}).values():
        if not isinstance(e, dict) or now - float(e.get("at", 0)) >= max_age_s:
            continue
        for vid, rate in (e.get("rates") or {}).items():
            out[vid] = out.get(vid, 0.0) + float(rate)
    return out


def unserved_demand(store: MetadataStore, now: float, max_age_s: float = 2 * TIER_PUBLISH_S) -> dict[str, tuple[float, int]]:
    """Queries the selector turned away, per variant: (rows/s, rows in the busiest sub-second
    window), summed over the data-plane processes that published within ``max_age_s``
    (``Unserved``, published with the tier's rate) -- the scaling snapshot's ``unserved``."""
    doc, _ = store.get_state(TIER_DEMAND)
    out: dict[str, tuple[float, int]] = {}
    for e in (doc.get("entries") or {}).values():
        if not isinstance(e, dict) or now - float(e.get("at", 0)) >= max_age_s:
            continue
        for vid, pair in (e.get("unserved") or {}).items():
            rate, peak = out.get(vid, (0.0, 0))
            out[vid] = (rate + float(pair[0]), peak + int(pair[1]))
    return out


def _moved(d: Decision, target: tuple[str, str], why: str | None = None) -> Decision:
    after = "the first worker was draining" if why == "worker_draining" else "a worker fault"
    return replace(d, worker=target[0], worker_url=target[1], reason=d.reason + f"; retried on {target[0]} after {after}")
