"""Batching policy: a pure function from a profile and objectives to limits.

A worker runs one batch at a time per replica. While a batch runs, new
requests queue; the next batch takes everything queued, up to ``max_batch``
rows ("natural" batching: it adds no delay under load and coalesces as much as
the load allows). When the queue is empty a batch may wait up to
``max_delay_ms`` for company, but only out of the slack the tightest objective
leaves.

A request may arrive just after a batch started, so in the worst case it waits
for one full batch and then runs in the next one: ``2 * latency(b)``. The
policy picks the largest profiled batch ``b`` with ``2 * latency_p99(b) <=
objective``, and spends at most a quarter of what is left as waiting time,
capped at ``delay_cap_ms``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from infaas.core.domain import Profile, Variant


@dataclass(frozen=True)
class BatchLimits:
    max_batch: int
    max_delay_ms: float


def batch_limits(
    profile: Profile | None,
    variant_max_batch: int,
    objective_ms: float | None,
    *,
    delay_cap_ms: float = 2.0,
) -> BatchLimits:
    if profile is None or objective_ms is None:
        # Nothing to protect: take whatever is queued, never wait.
        return BatchLimits(variant_max_batch, 0.0)
    sizes = [b for b in profile.batch_sizes() if b <= variant_max_batch]
    fitting = [b for b in sizes if 2 * profile.latency_at(b) <= objective_ms]
    if not fitting:
        # The objective is tighter than two single-row runs: never batch or wait.
        return BatchLimits(1, 0.0)
    b = max(fitting)
    slack = objective_ms - 2 * profile.latency_at(b)
    return BatchLimits(b, round(min(delay_cap_ms, slack / 4), 4))


def close_share(share: float, gap_ms: float, window_ms: float, weight: float = 0.2) -> float:
    """A moving share (weight ``weight``) of the gaps between arrivals that are close: no longer
    than ``window_ms``, the wait a batch would make for company (``BatchLimits.max_delay_ms``)."""
    return (1.0 - weight) * share + weight * (1.0 if gap_ms <= window_ms else 0.0)


def observe_gap(mean_gap_ms: float, close: float, gap_ms: float, window_ms: float) -> tuple[float, float]:
    """A replica's two statistics of the gaps between its arrivals, after one more ``gap_ms``: the
    moving mean gap (``1e9`` before the first gap) and the moving share of close gaps
    (``close_share`` for the batch window ``window_ms``). The worker and the simulator both keep
    them with this."""
    mean = gap_ms if mean_gap_ms >= 1e9 else 0.8 * mean_gap_ms + 0.2 * gap_ms
    return mean, close_share(close, gap_ms, window_ms)


def wait_ms(limits: BatchLimits, queued_rows: int, mean_gap_ms: float, close: float = 0.0) -> float:
    """How long a batch that is not full should wait for company.

    Waiting only pays when another request is likely to arrive within the
    window: with a mean gap between arrivals longer than ``max_delay_ms`` a
    lone request would wait for nothing, so it runs at once -- unless at
    least half of the recent gaps were within the window (``close``, the
    moving share of ``close_share``): traffic that arrives in clumps has a
    long mean gap (the lulls between clumps), yet its requests come
    together, and a batch started on a clump's first request would make the
    rest of the clump wait for all of it.
    """
    if queued_rows >= limits.max_batch or limits.max_delay_ms <= 0:
        return 0.0
    if mean_gap_ms > limits.max_delay_ms and close < 0.5:
        return 0.0
    return limits.max_delay_ms


def efficient_batch(variant: Variant, slack: float = 0.0) -> int:
    """The largest batch a replica of ``variant`` runs: the profiled batch whose rows cost least.

    Past it a batch saves no machine time per row (it costs more), it only makes
    each of its rows wait for all the others: a compute-bound model (SqueezeNet
    on a CPU: ~7 ms a row at every batch size) stops at the few rows where its
    per-row time bottoms out; a tiny one (an MLP: 14 us at batch 1, 1.5 us a
    row at 32) runs its full batch. The smallest profiled batch whose per-row
    p50 is within ``slack`` of the best, capped at the variant's ``max_batch``.

    Every part that batches or predicts batches reads it through
    ``Variant.batch_cap``: the worker's batcher (``replica_limits``), the
    selector's predictions and costs, the demand model and the simulator.
    (A 10 % slack, which the worker once used alone, trades up to a tenth of
    the throughput for shorter batches; on the Proteus GPU profiles that cost
    more objectives than it saved: docs/evaluation.md.)
    """
    profile = variant.profile
    if profile is None or not profile.latency_ms:
        return max(1, variant.max_batch)
    sizes = [b for b in profile.batch_sizes() if b <= variant.max_batch] or [min(profile.batch_sizes())]
    per_row = {b: profile.latency_at(b, "p50") / b for b in sizes}
    best = min(per_row.values())
    knee = min(b for b in sizes if per_row[b] <= best * (1 + slack))
    # the largest profiled size is the variant's max batch when the cost still falls there
    return max(1, min(variant.max_batch, knee if knee < max(sizes) else variant.max_batch))


def replica_limits(variant: Variant, objective_ms: float | None, max_batch: int | None = None) -> BatchLimits:
    """The limits one replica of ``variant`` batches under: ``batch_limits`` for the
    objective, never past ``Variant.batch_cap`` (a larger batch only adds waiting,
    it saves no machine time). The worker's batcher and the simulator both call this."""
    limit = variant.max_batch if max_batch is None else max_batch
    hit = batch_limits(variant.profile, limit, objective_ms)
    knee = variant.batch_cap
    return BatchLimits(knee, hit.max_delay_ms) if hit.max_batch > knee else hit


def next_batch(queue: Iterable[tuple[float, int]], now_ms: float, latency_ms: Callable[[int], float],
               max_batch: int, overdue_ms: float = math.inf) -> list[int]:
    """The queued requests the next batch runs: positions in ``queue``, the ``(deadline ms, rows)``
    of each request in arrival order (its arrival plus its objective; ``inf`` without one).

    Requests that can still be answered in time go first: one that would be late even if it ran
    now on its own (``now + latency(its rows) > deadline``) waits behind them, and runs -- late,
    never dropped -- once none is left. The batch is the in-time requests in arrival order up to
    ``max_batch`` rows, cut to the largest whose predicted ``latency_ms`` still answers each of
    them in time. Under a clump both rules keep a replica's lateness from spreading: a full
    batch of rows already late, or one too long for the oldest row, would make the rows behind it
    late too. With no request in time, the oldest run, as many as ``max_batch`` rows allows. A
    request of more rows than ``max_batch`` runs alone. A request more than ``overdue_ms`` past its
    deadline runs first, with the oldest (first come, first served): under steady load a late
    request is not passed over for ever. Reads ``queue`` only as far as it needs. The worker's
    batcher (``worker/replicas.py``, overdue after 1 s) and the simulator (never, its late rows
    are answered once the load falls) both call this."""
    live: list[int] = []
    sizes: list[int] = []
    deadlines: list[float] = []
    total = 0
    oldest: list[int] = []  # the oldest requests, up to max_batch rows
    held, full, overdue = 0, False, False
    for k, (deadline, n) in enumerate(queue):
        if k == 0:
            overdue = now_ms - deadline > overdue_ms
        if not full:
            if oldest and held + n > max_batch:
                full = True
            else:
                oldest.append(k)
                held += n
        if overdue:
            if full:
                break
            continue
        if now_ms + latency_ms(n) <= deadline:
            if live and total + n > max_batch:
                break
            live.append(k)
            sizes.append(n)
            deadlines.append(deadline)
            total += n
    if overdue or not live:
        return oldest
    while len(live) > 1 and now_ms + latency_ms(total) > min(deadlines):
        live.pop()
        deadlines.pop()
        total -= sizes.pop()
    return live


def pop_batch(queue: deque, take: list[int]) -> list:
    """The items of ``queue`` at the positions ``take`` (ascending, as ``next_batch`` gives them),
    removed from it. The worker's batcher and the simulator both call this."""
    if take and take[-1] == len(take) - 1:  # the oldest, in order: the usual case
        return [queue.popleft() for _ in take]
    out = [queue[k] for k in take]
    for k in reversed(take):
        del queue[k]
    return out
