"""Replicas on one worker: loading, dynamic batching, eviction.

Each replica has one asyncio batcher. Requests queue; the batcher takes
everything queued up to the batch limit (``infaas.core.batching``), concatenates the
rows, runs the executor once on the compute thread pool, and hands each caller
its own rows back. The replica cache loads variants on demand and unloads the
least recently used idle ones when the memory budget needs room
(``infaas.core.eviction``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from infaas.core.batching import (
    BatchLimits,
    next_batch,
    observe_gap,
    pop_batch,
    replica_limits,
    wait_ms,
)
from infaas.core.burst import PeakMeter
from infaas.core.calibration import observe
from infaas.core.domain import ReplicaLoad, Variant
from infaas.core.errors import InvalidInput, NotFound, Unavailable, VariantFault
from infaas.core.eviction import Resident, choose_evictions
from infaas.runtime.executor import Executor

log = logging.getLogger("infaas.worker")


OVERDUE_MS = 1000.0  # a query this far past its deadline runs first (``batching.next_batch``): none waits for ever
INLINE_MS = 0.5  # batches predicted to run within this (profiled p99) run on the event loop


@dataclass(eq=False)  # one request is itself only (``_expire`` removes it from the queue by identity)
class _Request:
    feed: dict[str, np.ndarray]
    rows: int
    objective_ms: float | None
    future: asyncio.Future
    deadline_ms: float = math.inf  # arrival plus objective, on ``time.perf_counter`` in ms


@dataclass
class Replica:
    variant: Variant
    executor: Executor
    memory_bytes: int
    pool: ThreadPoolExecutor
    clock: Callable[[], float] = time.time
    last_used: float = 0.0
    queued_rows: int = 0
    served_rows: int = 0
    _queue: collections.deque = field(default_factory=collections.deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _full: asyncio.Event = field(default_factory=asyncio.Event)  # the batch waited for is full: run it now
    _fill_rows: int = 0  # rows that fill the batch being waited for (0: none is)
    _task: asyncio.Task | None = None
    _limits: dict = field(default_factory=dict)
    _last_arrival: float = 0.0
    mean_gap_ms: float = 1e9  # moving average of the time between arrivals
    close_gaps: float = 0.0  # moving share of those gaps within the batch window (``batching.close_share``)
    _running: bool = False  # a batch is being run
    _quick: dict = field(default_factory=dict)  # rows -> whether such a batch runs inline
    served: dict = field(default_factory=dict)  # profiled batch size -> Served (core.calibration): run time seen
    peaks: PeakMeter = field(default_factory=PeakMeter)  # the busiest sub-second clump of arrivals (core.burst)
    # A queued query not answered this long after it arrived is answered 502 (``_expire``), before
    # its caller gives up on the worker: slow batches of one variant cost its own queries, not the
    # worker's place in selection for everyone. None: no limit.
    deadline_s: float | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except Exception:  # the batcher died: still fail its queue and close the executor
                log.exception("batcher of %s had stopped", self.variant.id)
        while self._queue:  # nobody will run them now: their callers retry elsewhere
            r = self._queue.popleft()
            if not r.future.done():
                r.future.set_exception(self._unloaded())
        self.queued_rows = 0
        close = getattr(self.executor, "close", None)  # a replica process (runtime/sandbox.py) ends with it
        if close is not None:
            await asyncio.get_running_loop().run_in_executor(None, close)
        if getattr(self.executor, "isolated", False):
            self.pool.shutdown(wait=False, cancel_futures=True)  # its own thread

    @property
    def busy(self) -> bool:
        return self.queued_rows > 0

    async def infer(self, feed: dict[str, np.ndarray], rows: int, objective_ms: float | None) -> dict[str, np.ndarray]:
        now = time.perf_counter()
        if self._last_arrival:
            gap = (now - self._last_arrival) * 1000
            self.mean_gap_ms, self.close_gaps = observe_gap(self.mean_gap_ms, self.close_gaps, gap,
                                                            self.limits(objective_ms).max_delay_ms)
        self._last_arrival = now
        self.peaks.add(now, rows)
        if not self._queue and not self._running and self._inline(rows):
            # Idle and quick: run it here, no hand-over to the batcher and back.
            self.last_used = self.clock()
            self._running = True
            t = time.perf_counter()
            try:
                outputs = self.executor.run(feed)
            finally:
                self._running = False
                self.served_rows += rows
            self._observe(rows, time.perf_counter() - t)
            return outputs
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        req = _Request(feed, rows, objective_ms, fut, math.inf if objective_ms is None else now * 1000.0 + objective_ms)
        self._queue.append(req)
        self.queued_rows += rows
        self.last_used = self.clock()
        self._wakeup.set()
        if self._fill_rows and self.queued_rows >= self._fill_rows:
            self._full.set()
        if self.deadline_s is None:
            return await fut
        timer = loop.call_later(self.deadline_s, self._expire, req)
        try:
            return await fut
        finally:
            timer.cancel()

    def _expire(self, req: _Request) -> None:
        """A query past the deadline: out of the queue if it is still there (a batch that has it
        runs on; its answer is dropped), and answered 502 for the variant."""
        if req.future.done():
            return
        try:
            self._queue.remove(req)
            self.queued_rows -= req.rows
            why = ("it was still queued: the replica was busy, and runs the queries still within their objective "
                   "before those already late")
        except ValueError:  # in the batch being run: that batch accounts for its rows
            why = "the batch it is in ran long"
        req.future.set_exception(VariantFault(
            f"variant {self.variant.id} did not answer within {self.deadline_s:g} s on this worker ({why}); "
            "the worker and its other replicas are unaffected", field="variant"))

    def limits(self, objective_ms: float | None) -> BatchLimits:
        hit = self._limits.get(objective_ms)
        if hit is None:
            if len(self._limits) >= 256:  # objectives come from clients: keep the memo bounded
                self._limits.clear()
            hit = self._limits[objective_ms] = replica_limits(self.variant, objective_ms)
        return hit

    def _inline(self, rows: int) -> bool:
        """Whether a batch is quick enough to run on the event loop itself: handing
        it to the compute thread and back costs more than a tiny model's run."""
        hit = self._quick.get(rows)
        if hit is None:
            profile = self.variant.profile
            # a replica in a process of its own may run any time (its model is a tenant's): never on the loop
            hit = (profile is not None and self.variant.hardware == "cpu" and not getattr(self.executor, "isolated", False)
                   and profile.latency_at(rows, "p99") <= INLINE_MS)
            if len(self._quick) < 4096:
                self._quick[rows] = hit
        return hit

    def _latency(self, rows: int) -> float:
        """Predicted run time (ms, profiled p50) of a batch of ``rows``; past the largest profiled
        batch, that batch's time per row."""
        profile = self.variant.profile
        if profile is None or not profile.latency_ms:
            return 0.0
        top = profile.batch_sizes()[-1]
        if rows > top:
            return profile.latency_at(top, "p50") * rows / top
        return profile.latency_at(rows, "p50")

    def _objective(self, now_ms: float) -> float | None:
        """The tightest objective of the queued queries still in time: the batch limits and the wait
        for company follow it. One already late does not shrink the others' batches; with none in
        time, the largest batch clears them."""
        return min((r.objective_ms for r in self._queue if r.objective_ms is not None
                    and now_ms + self._latency(r.rows) <= r.deadline_ms), default=None)

    def _take_batch(self, now_ms: float, limits: BatchLimits) -> list[_Request]:
        queue = self._queue
        return pop_batch(queue, next_batch(((r.deadline_ms, r.rows) for r in queue), now_ms, self._latency,
                                           limits.max_batch, overdue_ms=OVERDUE_MS))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            now = time.perf_counter() * 1000.0
            limits = self.limits(self._objective(now))
            delay = wait_ms(limits, self.queued_rows, self.mean_gap_ms, self.close_gaps)
            if delay > 0:  # wait for company, until the batch is full at the latest
                self._full.clear()
                self._fill_rows = limits.max_batch  # nothing runs now: every queued row is waiting
                try:
                    await asyncio.wait_for(self._full.wait(), delay / 1000)
                except asyncio.TimeoutError:
                    pass
                finally:
                    self._fill_rows = 0
                now = time.perf_counter() * 1000.0  # company came: the limits follow the queue as it is now
                limits = self.limits(self._objective(now))
            batch = self._take_batch(now, limits)
            if not batch:  # every query expired while the batch waited (``_expire``)
                continue
            self._running = True
            try:
                if len(batch) == 1:
                    feed = batch[0].feed
                else:
                    feed = {k: np.concatenate([r.feed[k] for r in batch]) for k in batch[0].feed}
                if self._inline(sum(r.rows for r in batch)):
                    outputs, took = self._timed_run(feed)
                else:  # timed on the compute thread: a wait for the thread is not the run's time
                    outputs, took = await loop.run_in_executor(self.pool, self._timed_run, feed)
                self._observe(sum(r.rows for r in batch), took)
            except asyncio.CancelledError:  # unloaded mid-run: its callers retry elsewhere
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(self._unloaded())
                raise
            except InvalidInput as exc:
                if len(batch) > 1:  # one caller's rows may be what the model refused (an index out of
                    await self._run_alone(batch)  # range, say): the others' rows are not theirs to fail for
                elif not batch[0].future.done():
                    batch[0].future.set_exception(exc)
            except Exception as exc:  # hand the error to every caller of this batch
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(exc)
            else:
                start = 0
                total = sum(r.rows for r in batch)
                for r in batch:
                    part = {
                        k: (v[start : start + r.rows] if v.ndim and v.shape[0] == total else v) for k, v in outputs.items()
                    }
                    start += r.rows
                    if not r.future.done():
                        r.future.set_result(part)
            finally:
                self._running = False
                n = sum(r.rows for r in batch)
                self.queued_rows -= n
                self.served_rows += n

    async def _run_alone(self, batch: list[_Request]) -> None:
        """Each request of a batch the model refused, run again on its own: to its own answer or error."""
        loop = asyncio.get_running_loop()
        for k, r in enumerate(batch):
            if r.future.done():
                continue
            try:
                outputs, _ = await loop.run_in_executor(self.pool, self._timed_run, r.feed)
            except asyncio.CancelledError:  # unloaded meanwhile: the rest retry elsewhere
                for rest in batch[k:]:
                    if not rest.future.done():
                        rest.future.set_exception(self._unloaded())
                raise
            except Exception as err:  # noqa: BLE001 - handed to its caller
                r.future.done() or r.future.set_exception(err)
            else:
                r.future.done() or r.future.set_result(outputs)

    def _unloaded(self) -> Unavailable:
        """What a query of this replica gets when the replica is unloaded under it: its caller retries elsewhere."""
        return Unavailable(f"replica of {self.variant.id} unloaded; retry", retry_after_s=0.5)

    def _timed_run(self, feed: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        t = time.perf_counter()
        outputs = self.executor.run(feed)
        return outputs, time.perf_counter() - t

    def _observe(self, rows: int, seconds: float) -> None:
        """One served batch's run time into the moving estimate of its profiled batch size
        (the smallest profiled size that holds it), beside what the profile predicted for it."""
        profile = self.variant.profile
        if profile is None:
            return
        sizes = profile.batch_sizes()
        bucket = next((b for b in sizes if b >= rows), sizes[-1])
        # a request larger than the largest profiled batch runs whole: its rows in proportion
        predicted = (profile.latency_at(rows, "p50") if rows <= sizes[-1]
                     else profile.latency_at(sizes[-1], "p50") * rows / sizes[-1])
        if not math.isfinite(predicted) or not math.isfinite(seconds):
            return
        self.served[bucket] = observe(self.served.get(bucket), bucket, seconds * 1000, predicted)

    def refresh(self, variant: Variant) -> None:
        """The variant's newer record (a new profile for the same file): limits and estimates start over."""
        self.variant = variant
        self._limits.clear()
        self._quick.clear()
        self.served.clear()

    def load_report(self, period_s: float, served_before: int) -> ReplicaLoad:
        return ReplicaLoad(
            variant_id=self.variant.id,
            queued_rows=self.queued_rows,
            rate_rps=(self.served_rows - served_before) / period_s if period_s > 0 else 0.0,
            peak_rows=self.peaks.peak(time.perf_counter()),
            memory_bytes=self.memory_bytes,
            last_used=self.last_used,
            served_ms={str(b): [round(e.observed_ms, 6), round(e.profiled_ms, 6), e.batches]
                       for b, e in sorted(self.served.items())},
        )


class ReplicaCache:
    """Loaded replicas of one worker under a memory budget."""

    def __init__(
        self,
        loader: Callable[[str], tuple[Variant, Executor]],
        *,
        memory_budget_bytes: int,
        threads: int = 1,
        clock: Callable[[], float] = time.time,
        lookup: Callable[[str], Variant] | None = None,
        deadline_s: float | None = None,
    ) -> None:
        self.deadline_s = deadline_s  # each replica's (``Replica.deadline_s``)
        self.loader = loader
        self.lookup = lookup  # the variant's record as the store has it now (``get``: which file is current)
        self.memory_budget_bytes = memory_budget_bytes
        self.clock = clock
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="compute")
        self.replicas: dict[str, Replica] = {}
        self._loading: dict[str, asyncio.Future] = {}

    @property
    def memory_used_bytes(self) -> int:
        return sum(r.memory_bytes for r in self.replicas.values())

    async def get(self, variant_id: str, model: str | None = None) -> Replica:
        """The variant's replica, loaded if needed. ``model``: the file the caller's catalogue
        names (``Variant.model_key``). A replica of another file is of a model since deleted and
        registered again under the same name: it is unloaded and the variant loaded afresh, and if
        the store still names another file the caller's catalogue is stale (503, retry)."""
        replica = self.replicas.get(variant_id)
        if replica is not None and model is not None and replica.variant.model_key != model:
            if self.lookup is not None:  # which of the two is current? A stale caller must not unload the new one
                try:
                    current = await asyncio.get_running_loop().run_in_executor(None, self.lookup, variant_id)
                except NotFound:  # deleted: nobody's catalogue should name it for long
                    await self.unload(variant_id, reason="deleted")
                    raise
                if current.model_key == replica.variant.model_key:
                    raise Unavailable(f"variant {variant_id} changed since the caller's catalogue was read; retry",
                                      retry_after_s=1.0)
            await self.unload(variant_id, reason=f"holds {replica.variant.model_key}, the caller names {model}")
            replica = None
        if replica is None:
            replica = await self._get(variant_id)
            if model is not None and replica.variant.model_key != model:  # the store names yet another file
                raise Unavailable(f"variant {variant_id} changed since the caller's catalogue was read; retry",
                                  retry_after_s=1.0)
        return replica

    async def _get(self, variant_id: str) -> Replica:
        replica = self.replicas.get(variant_id)
        if replica is not None:
            return replica
        pending = self._loading.get(variant_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut = asyncio.get_running_loop().create_future()
        self._loading[variant_id] = fut
        try:
            replica = await self._load(variant_id)
            fut.set_result(replica)
            return replica
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: the caller re-raises it
            raise
        finally:
            del self._loading[variant_id]

    async def _load(self, variant_id: str) -> Replica:
        loop = asyncio.get_running_loop()
        variant, executor = await loop.run_in_executor(None, self.loader, variant_id)
        need = variant.profile.peak_memory_bytes if variant.profile else 0
        residents = [Resident(r.variant.id, r.memory_bytes, r.last_used, r.busy) for r in self.replicas.values()]
        victims = choose_evictions(residents, self.memory_budget_bytes, need)
        if victims is None:
            raise Unavailable(
                f"worker memory budget {self.memory_budget_bytes} bytes cannot fit {variant_id} ({need} bytes) "
                "while other replicas are busy",
                retry_after_s=1.0,
            )
        for vid in victims:
            await self.unload(vid, reason="evicted (least recently used) to make room")
        # A replica in a process of its own gets a thread of its own: one tenant's slow batch holds no
        # other replica's; in-process replicas share the worker's compute thread.
        isolated = getattr(executor, "isolated", False)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replica") if isolated else self.pool
        replica = Replica(variant, executor, need, pool, clock=self.clock, last_used=self.clock(),
                          deadline_s=self.deadline_s)
        replica.start()
        self.replicas[variant_id] = replica
        log.info("loaded %s (%d bytes)", variant_id, need)
        return replica

    async def unload(self, variant_id: str, *, reason: str = "") -> None:
        replica = self.replicas.pop(variant_id, None)
        if replica is not None:
            await replica.stop()
            log.info("unloaded %s %s", variant_id, reason)

    async def close(self) -> None:
        for vid in list(self.replicas):
            await self.unload(vid, reason="worker stopping")
        self.pool.shutdown(wait=False, cancel_futures=True)

