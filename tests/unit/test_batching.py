"""``infaas.core.batching.batch_limits``: largest profiled batch b with 2 * p99(b) <= objective,
and a quarter of the remaining slack as waiting time, capped."""

from __future__ import annotations

import pytest
from fakes import make_profile

from infaas.core.batching import BatchLimits, batch_limits

# p99: 2 ms at 1, 5 ms at 8, 12 ms at 32.
PROFILE = make_profile({1: (1.0, 2.0), 8: (4.0, 5.0), 32: (10.0, 12.0)})


def test_loose_objective_takes_the_largest_batch_and_a_quarter_of_the_slack():
    # 2 * p99(32) = 24 <= 30; slack 30 - 24 = 6; 6 / 4 = 1.5 < cap 2
    assert batch_limits(PROFILE, 32, 30.0) == BatchLimits(32, 1.5)


def test_objective_between_profiled_batches_takes_the_largest_that_fits():
    # 2 * p99(32) = 24 > 15; 2 * p99(8) = 10 <= 15; slack 5; 5 / 4 = 1.25
    assert batch_limits(PROFILE, 32, 15.0) == BatchLimits(8, 1.25)
    # 2 * p99(8) = 10 <= 11; slack 1; 1 / 4 = 0.25
    assert batch_limits(PROFILE, 32, 11.0) == BatchLimits(8, 0.25)
    # exactly 2 * p99(8) = 10: fits with no slack
    assert batch_limits(PROFILE, 32, 10.0) == BatchLimits(8, 0.0)


def test_waiting_time_is_capped():
    # 2 * p99(8) = 10 <= 20; slack 10; 10 / 4 = 2.5 > cap 2
    assert batch_limits(PROFILE, 32, 20.0) == BatchLimits(8, 2.0)
    # the same with a larger cap: 2.5
    assert batch_limits(PROFILE, 32, 20.0, delay_cap_ms=10.0) == BatchLimits(8, 2.5)


def test_tight_objective_means_batch_one_and_no_waiting():
    # 2 * p99(1) = 4 > 3: not even single rows fit twice
    assert batch_limits(PROFILE, 32, 3.0) == BatchLimits(1, 0.0)
    # 2 * p99(1) = 4 <= 5 but 2 * p99(8) = 10 > 5: batch 1, slack 1, 1 / 4 = 0.25
    assert batch_limits(PROFILE, 32, 5.0) == BatchLimits(1, 0.25)


def test_the_variants_max_batch_bounds_the_choice():
    # 32 would fit (2 * 12 = 24 <= 1000) but the variant was built for 8: 8, slack 990 -> capped at 2
    assert batch_limits(PROFILE, 8, 1000.0) == BatchLimits(8, 2.0)


@pytest.mark.parametrize("profile", [PROFILE, None])
def test_no_objective_means_the_max_batch_and_no_waiting(profile):
    assert batch_limits(profile, 32, None) == BatchLimits(32, 0.0)
    assert batch_limits(profile, 8, None) == BatchLimits(8, 0.0)


def test_no_profile_means_the_max_batch_and_no_waiting():
    assert batch_limits(None, 16, 5.0) == BatchLimits(16, 0.0)


def test_wait_only_when_company_is_likely():
    from infaas.core.batching import BatchLimits, wait_ms

    limits = BatchLimits(max_batch=8, max_delay_ms=2.0)
    # arrivals every 0.5 ms on average: another one is likely within 2 ms -> wait the full window
    assert wait_ms(limits, queued_rows=1, mean_gap_ms=0.5) == 2.0
    # arrivals every 10 ms: waiting 2 ms would only add latency -> run now
    assert wait_ms(limits, queued_rows=1, mean_gap_ms=10.0) == 0.0
    # the batch is already full (8 >= 8): nothing to wait for
    assert wait_ms(limits, queued_rows=8, mean_gap_ms=0.5) == 0.0
    # a policy that allows no delay never waits
    assert wait_ms(BatchLimits(8, 0.0), queued_rows=1, mean_gap_ms=0.1) == 0.0


def test_clumped_traffic_waits_for_company_though_its_mean_gap_is_long():
    from infaas.core.batching import BatchLimits, observe_gap, wait_ms

    limits = BatchLimits(max_batch=8, max_delay_ms=2.0)
    window = limits.max_delay_ms
    # clumps: 40 rows a microsecond apart, then 500 ms of nothing, again and again
    mean, share = 1e9, 0.0
    for _ in range(5):
        for gap in [500.0] + [0.001] * 39:
            mean, share = observe_gap(mean, share, gap, window)
    # what the first row of the next clump sees, after the lull
    mean, share = observe_gap(mean, share, 500.0, window)
    assert mean > 100.0 and share >= 0.5
    # by the mean gap alone it would run at once; the share of close gaps says its clump is arriving
    assert wait_ms(limits, queued_rows=1, mean_gap_ms=mean) == 0.0
    assert wait_ms(limits, queued_rows=1, mean_gap_ms=mean, close=share) == window
    # a full batch or a policy with no delay never waits, whatever the gaps
    assert wait_ms(limits, queued_rows=8, mean_gap_ms=mean, close=1.0) == 0.0
    assert wait_ms(BatchLimits(8, 0.0), queued_rows=1, mean_gap_ms=mean, close=1.0) == 0.0


@pytest.mark.parametrize("gaps_ms, window_ms", [
    ([1.5], 0.5),  # steady arrivals 1.5 ms apart against a 0.5 ms window: company never comes in time
    ([1.1], 1.0),  # one client sending its next query as soon as the last is answered
    ([3.0, 0.5, 4.0, 2.5], 2.0),  # irregular, but most gaps longer than the window
])
def test_traffic_that_is_not_clumped_does_not_wait(gaps_ms, window_ms):
    from infaas.core.batching import BatchLimits, observe_gap, wait_ms

    limits = BatchLimits(max_batch=8, max_delay_ms=window_ms)
    mean, share = 1e9, 0.0
    for k in range(200):
        mean, share = observe_gap(mean, share, gaps_ms[k % len(gaps_ms)], window_ms)
    assert share < 0.5
    assert wait_ms(limits, queued_rows=1, mean_gap_ms=mean, close=share) == 0.0
