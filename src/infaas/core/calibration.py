"""Profiles that survive noise: two pure decisions over measured figures.

**Is the machine too busy to profile?** (``summarise``, called by ``runtime/profile.py``.)
A profile is measured in *rounds*; each round times every batch size and, before each
batch size, a fixed calibration kernel. A round's ``noise`` is how much slower the
kernel ran than its quiet time (the larger of wall time over the fastest time ever seen
on this host, and wall time over the kernel's own CPU time, which shows preemption even
where no quiet time is known yet). A round is *quiet* when its noise is at most
``NoisePolicy.busy_ratio``. Rounds go on until ``quiet_rounds`` quiet ones are in or
``max_rounds`` have run (``more_rounds``). The profile's figures per batch size are the
median over the quiet rounds of each round's p50 and p99; with no quiet round the
machine is *busy*: the figures are those of the quietest rounds and the verdict says so,
with the reason ``machine busy (calibration x.x times its quiet time)``. What the build
job does with a busy verdict is its policy (``app/build.py``: defer, then accept flagged).

**Has a served variant drifted from its profile?** (``observe`` and ``watch``, called by
the worker.) Each replica keeps, per batch size, a moving estimate (geometric, so one
slow batch moves it little) of the run time it observes and of what the profile predicted
for the same batches. A batch size has *drifted* when, over at least ``min_batches``
batches, the two differ by more than ``DriftBound.ratio`` times either way and by more
than ``floor_ms`` (a replica process adds a hop the profile does not measure; sub-
millisecond differences are not worth a re-profile). Drift that lasts ``sustain_s``, on a
profile older than ``min_age_s``, asks for a re-profile. No clocks here: time is passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

# ------------------------------------------------------------------ profiling noise


@dataclass(frozen=True)
class NoisePolicy:
    busy_ratio: float = 1.5  # a round whose calibration ran more than this times its quiet time is not quiet
    quiet_rounds: int = 3  # enough quiet rounds to stop
    max_rounds: int = 6  # never more than this many rounds


@dataclass(frozen=True)
class Round:
    """One round of a profile: its calibration noise and, per batch size, (p50, p99) in ms."""

    noise: float
    latency_ms: Mapping[int, tuple[float, float]]


@dataclass(frozen=True)
class NoiseSummary:
    latency_ms: dict[int, tuple[float, float]]  # the profile's figures
    spread_ms: dict[int, tuple[float, float]]  # per batch size, min and max of the used rounds' p50
    noise: float  # median calibration noise of the rounds used (1.0: as quiet as ever seen)
    rounds: int  # rounds run
    used: int  # rounds the figures come from
    busy: bool  # no quiet round: the figures come from a busy machine
    reason: str  # for a busy verdict: "machine busy (calibration x.x times its quiet time)"


def is_quiet(r: Round, policy: NoisePolicy) -> bool:
    return r.noise <= policy.busy_ratio


def more_rounds(rounds: Sequence[Round], policy: NoisePolicy) -> bool:
    """Whether to measure another round."""
    quiet = sum(is_quiet(r, policy) for r in rounds)
    return quiet < policy.quiet_rounds and len(rounds) < policy.max_rounds


def _median(values: Iterable[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def summarise(rounds: Sequence[Round], policy: NoisePolicy) -> NoiseSummary:
    """The profile's figures from its rounds, and whether the machine was too busy to trust them."""
    if not rounds:
        raise ValueError("no rounds to summarise")
    quiet = [r for r in rounds if is_quiet(r, policy)]
    busy = not quiet
    # with no quiet round: the quietest half (at least one), so one lucky round does not decide alone
    used = quiet or sorted(rounds, key=lambda r: r.noise)[: max(1, len(rounds) // 2)]
    batches = sorted(set().union(*(r.latency_ms for r in used)))
    latency, spread = {}, {}
    for b in batches:
        p50s = [r.latency_ms[b][0] for r in used if b in r.latency_ms]
        p99s = [r.latency_ms[b][1] for r in used if b in r.latency_ms]
        latency[b] = (_median(p50s), max(_median(p99s), _median(p50s)))
        spread[b] = (min(p50s), max(p50s))
    quietest = min(r.noise for r in rounds)
    reason = f"machine busy (calibration {quietest:.1f} times its quiet time)" if busy else ""
    return NoiseSummary(latency, spread, _median(r.noise for r in used), len(rounds), len(used), busy, reason)


# ------------------------------------------------------------------ served-latency drift


@dataclass(frozen=True)
class Served:
    """A replica's moving estimate for one batch size: observed run time and the profile's
    prediction for the same batches (geometric moving averages), over ``batches`` batches."""

    batch: int
    observed_ms: float
    profiled_ms: float
    batches: int = 1

    @property
    def ratio(self) -> float:
        return self.observed_ms / self.profiled_ms if self.profiled_ms > 0 else math.inf


ALPHA = 0.05  # weight of each new batch in the moving estimates


def observe(prior: Served | None, batch: int, observed_ms: float, profiled_ms: float, alpha: float = ALPHA) -> Served:
    """The estimate after one more batch (the first one sets it)."""
    if prior is None:
        return Served(batch, observed_ms, profiled_ms, 1)
    # geometric moving average: one slow batch (a page fault, a preemption) moves it little
    lo = max(observed_ms, 1e-6)
    lp = max(profiled_ms, 1e-6)
    obs = math.exp((1 - alpha) * math.log(max(prior.observed_ms, 1e-6)) + alpha * math.log(lo))
    prof = math.exp((1 - alpha) * math.log(max(prior.profiled_ms, 1e-6)) + alpha * math.log(lp))
    return Served(batch, obs, prof, prior.batches + 1)


@dataclass(frozen=True)
class DriftBound:
    ratio: float = 2.0  # observed over profiled (or profiled over observed) beyond this is drift
    floor_ms: float = 1.0  # ... and only when they differ by more than this
    min_batches: int = 50  # an estimate over fewer batches says nothing yet
    sustain_s: float = 60.0  # drift must last this long
    min_age_s: float = 600.0  # a profile younger than this is not re-profiled (at most one re-profile per this)


def drifted(served: Iterable[Served], bound: DriftBound) -> Served | None:
    """The batch size whose served run time is furthest beyond the bound from the profile, or None."""
    worst, worst_by = None, 0.0
    for s in served:
        if s.batches < bound.min_batches or s.profiled_ms <= 0 or s.observed_ms <= 0:
            continue
        by = max(s.ratio, 1 / s.ratio)
        if by > bound.ratio and abs(s.observed_ms - s.profiled_ms) > bound.floor_ms and by > worst_by:
            worst, worst_by = s, by
    return worst


@dataclass(frozen=True)
class DriftWatch:
    """What a worker remembers about one variant: since when its served latency has been
    beyond the bound, for the profile measured at ``measured_at``, and whether a re-profile
    was already asked for that profile (then it is not asked again)."""

    since: float
    measured_at: float
    requested: bool = False


def watch(prior: DriftWatch | None, served: Iterable[Served], measured_at: float, now: float,
          bound: DriftBound = DriftBound()) -> tuple[DriftWatch | None, str | None]:
    """One check: the new watch state, and the reason to re-profile when it is time (else None).
    Drift must hold at every check for ``sustain_s``; a check without drift starts over. One
    request per profile: a new profile (another ``measured_at``) starts a new watch."""
    if prior is not None and prior.measured_at != measured_at:
        prior = None
    if prior is not None and prior.requested:
        return prior, None
    worst = drifted(served, bound)
    if worst is None:
        return None, None
    if prior is None:
        prior = DriftWatch(since=now, measured_at=measured_at)
    if now - prior.since < bound.sustain_s or now - measured_at < bound.min_age_s:
        return prior, None
    reason = (f"served run time at batch {worst.batch} is {worst.observed_ms:.3f} ms against the profile's "
              f"{worst.profiled_ms:.3f} ms ({worst.ratio:.2f}x) for {now - prior.since:.0f} s")
    return DriftWatch(prior.since, measured_at, requested=True), reason
