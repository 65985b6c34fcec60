"""core/calibration.py: the profiling noise policy and the served-latency drift decision, on snapshots
(fake timings, time passed in)."""

from __future__ import annotations

import pytest

from infaas.core.calibration import (
    DriftBound,
    DriftWatch,
    NoisePolicy,
    Round,
    Served,
    drifted,
    more_rounds,
    observe,
    summarise,
    watch,
)

POLICY = NoisePolicy(busy_ratio=1.5, quiet_rounds=3, max_rounds=6)


def rnd(noise: float, p50: float, p99: float | None = None) -> Round:
    return Round(noise, {1: (p50, p99 if p99 is not None else 2 * p50), 8: (4 * p50, 8 * p50)})


# ------------------------------------------------------------------ profiling rounds
def test_rounds_go_on_until_three_quiet_ones_or_six_in_all():
    assert more_rounds([], POLICY)
    assert more_rounds([rnd(1.0, 1), rnd(1.1, 1)], POLICY)  # two quiet: one more
    assert not more_rounds([rnd(1.0, 1), rnd(1.1, 1), rnd(1.2, 1)], POLICY)  # three quiet: done
    assert more_rounds([rnd(1.0, 1), rnd(3.0, 1), rnd(1.2, 1), rnd(2.0, 1)], POLICY)  # two quiet of four
    assert not more_rounds([rnd(3.0, 1)] * 6, POLICY)  # six busy: the bound


def test_quiet_rounds_give_the_median_figures_their_spread_and_noise():
    rounds = [rnd(1.0, 1.0, 2.0), rnd(2.5, 9.0, 40.0), rnd(1.2, 1.2, 2.2), rnd(1.1, 1.1, 3.0)]
    s = summarise(rounds, POLICY)
    assert not s.busy and s.reason == ""
    assert (s.rounds, s.used) == (4, 3)  # the busy round (2.5x) is left out
    assert s.latency_ms[1] == (1.1, 2.2)  # median p50 of 1.0, 1.1, 1.2; median p99 of 2.0, 2.2, 3.0
    assert s.spread_ms[1] == (1.0, 1.2)
    assert s.latency_ms[8] == (4.4, 8.8)
    assert s.noise == 1.1


def test_no_quiet_round_is_a_busy_verdict_with_the_quietest_rounds_figures_and_the_reason():
    rounds = [rnd(3.0, 5.0), rnd(1.8, 1.5), rnd(2.2, 2.0), rnd(4.0, 8.0), rnd(1.9, 1.7), rnd(2.6, 3.0)]
    s = summarise(rounds, POLICY)
    assert s.busy
    assert s.reason == "machine busy (calibration 1.8 times its quiet time)"
    assert s.used == 3  # the quietest half: 1.8, 1.9, 2.2
    assert s.latency_ms[1][0] == 1.7 and s.spread_ms[1] == (1.5, 2.0)
    assert s.noise == 1.9


def test_p99_is_never_below_p50_and_one_round_is_enough_to_summarise():
    s = summarise([Round(1.0, {1: (2.0, 1.0)})], POLICY)
    assert s.latency_ms[1] == (2.0, 2.0) and s.spread_ms[1] == (2.0, 2.0)
    with pytest.raises(ValueError):
        summarise([], POLICY)


# ------------------------------------------------------------------ served estimates
def test_the_moving_estimate_is_geometric_so_one_slow_batch_moves_it_little():
    e = observe(None, 1, 2.0, 1.0)
    assert (e.observed_ms, e.profiled_ms, e.batches) == (2.0, 1.0, 1)
    for _ in range(200):
        e = observe(e, 1, 1.0, 1.0)
    assert e.observed_ms == pytest.approx(1.0, rel=1e-3) and e.batches == 201
    spiked = observe(e, 1, 100.0, 1.0)  # one 100x batch: exp(0.05 * ln 100) = 1.26x
    assert spiked.observed_ms == pytest.approx(100 ** 0.05, rel=1e-3)


def served(observed: float, profiled: float, batches: int = 100, batch: int = 1) -> Served:
    return Served(batch, observed, profiled, batches)


BOUND = DriftBound(ratio=2.0, floor_ms=1.0, min_batches=50, sustain_s=60.0, min_age_s=600.0)


def test_drift_needs_the_ratio_the_floor_and_enough_batches():
    assert drifted([served(2.5, 1.0)], BOUND) is not None  # 2.5x and 1.5 ms apart
    assert drifted([served(1.9, 0.9)], BOUND) is None  # 2.1x but only 1.0 ms apart
    assert drifted([served(0.5, 0.1)], BOUND) is None  # 5x but 0.4 ms: a replica process's hop, not drift
    assert drifted([served(2.5, 1.0, batches=49)], BOUND) is None  # too few batches to say
    assert drifted([served(1.9, 1.0)], BOUND) is None  # within 2x
    low = drifted([served(0.2, 20.3)], BOUND)  # a profile taken on a busy machine: 100x too high
    assert low is not None and low.ratio == pytest.approx(0.2 / 20.3)
    worst = drifted([served(3.0, 1.0, batch=1), served(50.0, 10.0, batch=8)], BOUND)
    assert worst is not None and worst.batch == 8  # 5x beats 3x


def test_a_re_profile_is_asked_for_once_after_drift_lasts_sustain_s_on_an_old_enough_profile():
    measured_at = 1000.0
    bad = [served(5.0, 1.0)]
    state, reason = watch(None, bad, measured_at, now=2000.0, bound=BOUND)
    assert state == DriftWatch(since=2000.0, measured_at=measured_at) and reason is None
    state, reason = watch(state, bad, measured_at, now=2059.0, bound=BOUND)
    assert reason is None  # 59 s: not yet
    state, reason = watch(state, bad, measured_at, now=2060.0, bound=BOUND)
    assert reason == "served run time at batch 1 is 5.000 ms against the profile's 1.000 ms (5.00x) for 60 s"
    assert state is not None and state.requested
    state, again = watch(state, bad, measured_at, now=3000.0, bound=BOUND)
    assert again is None and state.requested  # one request per profile
    state, reason = watch(state, bad, measured_at=2500.0, now=3000.0, bound=BOUND)
    assert reason is None and state == DriftWatch(since=3000.0, measured_at=2500.0)  # a new profile: a new watch


def test_drift_that_stops_starts_over_and_a_young_profile_waits():
    bad, good = [served(5.0, 1.0)], [served(1.1, 1.0)]
    state, _ = watch(None, bad, 0.0, now=1000.0, bound=BOUND)
    state, _ = watch(state, good, 0.0, now=1030.0, bound=BOUND)
    assert state is None
    state, _ = watch(state, bad, 0.0, now=1040.0, bound=BOUND)
    state, reason = watch(state, bad, 0.0, now=1090.0, bound=BOUND)
    assert reason is None  # 50 s since it came back
    young = 1000.0  # measured 100 s before: drift for 60 s is not enough until it is 600 s old
    state, _ = watch(None, bad, young, now=1040.0, bound=BOUND)
    state, reason = watch(state, bad, young, now=1100.0, bound=BOUND)
    assert reason is None
    state, reason = watch(state, bad, young, now=1600.0, bound=BOUND)
    assert reason is not None and "for 560 s" in reason
