"""Sub-second bursts: how many rows arrive in the busiest short window, and the rate that clears them.

Per-period rates hide what decides a latency objective of a few hundred milliseconds: real
traffic arrives in clumps far shorter than any control period (hundreds of requests within
100 ms, then quiet), and a clump of ``N`` rows is answered in time only if the replicas that
take it clear ``N`` rows within about the objective. A period's mean rate can be a tenth of that.

* ``PeakMeter``: a worker's replica (and the simulator's) counts the rows arriving in every
  window of ``WINDOW_S`` and keeps the busiest of the last ``SPAN_S`` seconds; the heartbeat
  reports it as ``ReplicaLoad.peak_rows``. Deterministic: time is passed in.
* ``clump_capacity``: the rows one replica of a variant answers within the objective when they
  arrive at once -- whole batches at the profiled p99 that end in time. A fast model clears a
  large clump alone; a slow one a few rows, whatever its throughput over a second.

The scaling policy (``infaas.core.scaling``) sizes fallback capacity from it; the selector
then sends the rows of a clump that the accurate replicas cannot answer in time to the
cheaper replicas that still meet the tenant's floor (``infaas.core.selection``).
"""

from __future__ import annotations

from collections import deque

from infaas.core.domain import Variant

WINDOW_S = 0.1  # the short window the busiest clump is counted in
SPAN_S = 4.0  # the busiest window of this many seconds back is reported (longer than a control period)


class PeakMeter:
    """Rows arriving in the busiest ``window_s`` window over the last ``span_s`` seconds."""

    __slots__ = ("window_s", "span_s", "_recent", "_sum", "_peaks")

    def __init__(self, window_s: float = WINDOW_S, span_s: float = SPAN_S) -> None:
        self.window_s, self.span_s = window_s, span_s
        self._recent: deque[tuple[float, int]] = deque()  # arrivals within the last window
        self._sum = 0
        self._peaks: deque[tuple[int, int]] = deque()  # (whole window index, busiest count in it)

    def add(self, t: float, rows: int = 1) -> None:
        recent = self._recent
        recent.append((t, rows))
        self._sum += rows
        edge = t - self.window_s
        while recent and recent[0][0] <= edge:
            self._sum -= recent.popleft()[1]
        slot = int(t // self.window_s)
        peaks = self._peaks
        if peaks and peaks[-1][0] == slot:
            if self._sum > peaks[-1][1]:
                peaks[-1] = (slot, self._sum)
        else:
            peaks.append((slot, self._sum))
            oldest = slot - int(self.span_s / self.window_s)
            while peaks and peaks[0][0] < oldest:
                peaks.popleft()

    def peak(self, now: float) -> int:
        """The most rows seen within one window, over the last ``span_s`` seconds as of ``now``."""
        oldest = int(now // self.window_s) - int(self.span_s / self.window_s)
        return max((n for slot, n in self._peaks if slot >= oldest), default=0)


def clump_capacity(variant: Variant, objective_ms: float) -> int:
    """Rows one replica of ``variant`` answers within ``objective_ms`` when they arrive at once: the
    most, over the profiled batch sizes up to its batch cap, of whole batches that end in time
    (at the profiled p99) times their size. A fast model clears a large clump alone; a slow one
    only a few rows, however high its throughput over a second."""
    prof = variant.profile
    if prof is None:
        return 0
    best = 0
    for b in prof.batch_sizes():
        if b > variant.batch_cap:
            break
        lat = prof.latency_at(b, "p99")
        if lat > 0:
            best = max(best, int(objective_ms // lat) * b)
    return best


class Unserved:
    """Rows the selector turned away (every replica would answer late: ``Unavailable``), per variant
    it named: the demand that no replica's heartbeat shows. ``add`` at each refusal; ``take`` once
    per control period (or publication) gives ``{variant: (rows/s since the last take, rows in
    the busiest window since then)}`` for the scaling snapshot (``scaling.Snapshot.unserved``) and
    starts counting again."""

    __slots__ = ("_rows", "_meters", "_peaks", "_since")

    def __init__(self, start: float = 0.0) -> None:
        self._rows: dict[str, int] = {}
        self._meters: dict[str, PeakMeter] = {}
        self._peaks: dict[str, int] = {}
        self._since = start

    def add(self, variant_id: str, t: float, rows: int = 1) -> None:
        self._rows[variant_id] = self._rows.get(variant_id, 0) + rows
        meter = self._meters.get(variant_id)
        if meter is None:
            meter = self._meters[variant_id] = PeakMeter()
        meter.add(t, rows)
        self._peaks[variant_id] = max(self._peaks.get(variant_id, 0), meter.peak(t))

    def take(self, now: float) -> dict[str, tuple[float, int]]:
        span = max(now - self._since, 1e-9)
        out = {vid: (n / span, self._peaks.get(vid, 0)) for vid, n in sorted(self._rows.items())}
        self._rows.clear()
        self._peaks.clear()
        self._meters = {vid: m for vid, m in self._meters.items() if m.peak(now) > 0}
        self._since = now
        return out
