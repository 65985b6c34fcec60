"""Joins concurrent queries for one variant on one worker into one worker call."""

from __future__ import annotations

import asyncio
import collections

import numpy as np

from infaas.core import tensors
from infaas.core.errors import WorkerFault
from infaas.core.ports import WorkerClient


class Coalescer:
    """Joins concurrent queries for one variant on one worker into one worker call.

    At most ``max_inflight`` calls per (worker, variant) are on the wire; the
    queries that arrive meanwhile wait and leave together in the next call, up
    to ``max_rows`` rows (the variant's max batch). Each caller gets its own
    rows back, or its own error. Under load this turns N worker round trips
    into one; a lone query goes out at once.
    """

    def __init__(self, client: WorkerClient, url: str, variant_id: str, max_rows: int, max_inflight: int = 2,
                 max_bytes: int = 8 << 20, model: str | None = None) -> None:
        self.client, self.url, self.variant_id, self.model = client, url, variant_id, model
        self.max_rows, self.max_inflight, self.max_bytes = max(1, max_rows), max_inflight, max_bytes
        self.waiting: collections.deque = collections.deque()  # (feed, rows, objective_ms, future, nbytes)
        self.inflight = 0

    async def infer(self, feed: dict[str, np.ndarray], rows: int, objective_ms: float | None) -> dict[str, np.ndarray]:
        if not self.waiting and self.inflight < self.max_inflight:
            # Nobody to wait for and a call free: this caller makes the call itself (no task, no future).
            self.inflight += 1
            try:
                return await self._call([(feed, rows, objective_ms, None, 0)])
            finally:
                self.inflight -= 1
                if self.waiting and self.inflight < self.max_inflight:  # they queued behind this call
                    self.inflight += 1
                    asyncio.get_running_loop().create_task(self._drain())
        fut = asyncio.get_running_loop().create_future()
        nbytes = 0
        for a in feed.values():
            nbytes += a.nbytes
        self.waiting.append((feed, rows, objective_ms, fut, nbytes))
        if self.inflight < self.max_inflight:
            self.inflight += 1
            asyncio.get_running_loop().create_task(self._drain())
        return await fut

    def _take(self) -> list:
        """The oldest waiting queries, up to ``max_rows`` rows and ``max_bytes`` of tensors
        (the worker refuses a larger body), in arrival order."""
        waiting = self.waiting
        batch = [waiting.popleft()]
        rows, nbytes = batch[0][1], batch[0][4]
        while waiting and rows + waiting[0][1] <= self.max_rows and nbytes + waiting[0][4] <= self.max_bytes:
            batch.append(waiting.popleft())
            rows += batch[-1][1]
            nbytes += batch[-1][4]
        return batch

    async def _call(self, batch: list) -> dict[str, np.ndarray]:
        objectives = [b[2] for b in batch if b[2] is not None]
        if len(batch) == 1:
            feed = batch[0][0]
            frame = tensors.encode_parts(feed) if self.client.takes_parts else tensors.encode(feed)
        else:
            feeds = [b[0] for b in batch]
            frame = tensors.encode_batch_parts(feeds) if self.client.takes_parts else None
            if frame is None:  # not joinable without a copy (or the client wants bytes): concatenate
                frame = tensors.encode({k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
        raw = await self.client.infer(self.url, self.variant_id, frame, min(objectives) if objectives else None,
                                      self.model)
        return tensors.decode(raw)

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch = self._take()
                try:
                    outputs = await self._call(batch)
                except WorkerFault as exc:  # every caller sees it, and may retry on another worker
                    for b in batch:
                        if not b[3].done():
                            b[3].set_exception(exc)
                    continue
                except Exception as exc:
                    if len(batch) == 1:
                        batch[0][3].done() or batch[0][3].set_exception(exc)
                        continue
                    # one caller's rows may be what the worker refused: the joint call's
                    # callers go again one by one, each to its own answer or error
                    for b in batch:
                        try:
                            result = await self._call([b])
                        except Exception as err:
                            b[3].done() or b[3].set_exception(err)
                        else:
                            b[3].done() or b[3].set_result(result)
                    continue
                total, start = sum(b[1] for b in batch), 0
                for _, n, _, fut, _ in batch:
                    if not fut.done():
                        fut.set_result({k: (v[start : start + n] if v.ndim and v.shape[0] == total else v)
                                        for k, v in outputs.items()})
                    start += n
        finally:
            self.inflight -= 1
