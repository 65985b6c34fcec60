"""The serverless tier's pure decisions (``core/tier.py``) on a fake clock: prices computed by hand,
the memory size chosen from profiles, the warm pool's expiry, concurrency and cold probability."""

from __future__ import annotations

import math

import pytest
from fakes import FakeClock, make_profile

from infaas.core import tier
from infaas.core.domain import Profile
from infaas.core.tier import (
    FunctionProfile,
    Throttled,
    TierState,
    acquire,
    available,
    choose_memory,
    cold_probability,
    cpu_share,
    expire,
    invocation_cost,
    predict_ms,
    release,
)

GB_S = 0.0000166667
REQ = 0.20 / 1_000_000


# -- prices and limits ---------------------------------------------------------------------------------
def test_cpu_share_is_proportional_to_memory_with_one_vcpu_at_1769_mb():
    assert cpu_share(1769) == 1.0
    assert cpu_share(512) == pytest.approx(512 / 1769)  # 0.289
    assert cpu_share(3538) == 2.0
    assert cpu_share(10240) == pytest.approx(10240 / 1769)  # 5.79: below the 6 vCPU cap
    assert tier.threads_for(512) == 1 and tier.threads_for(1769) == 1 and tier.threads_for(3008) == 2
    for bad in (127, 10241, 0):
        with pytest.raises(ValueError):
            cpu_share(bad)


def test_invocation_cost_by_hand():
    # 100 ms at 1024 MB: 0.1 s * 1 GB * 0.0000166667 + 0.0000002
    assert invocation_cost(100, 1024) == pytest.approx(0.1 * GB_S + REQ, rel=1e-12)
    assert invocation_cost(100, 1024) == pytest.approx(0.00000186667, rel=1e-6)
    # rounded up to the next millisecond: 2.1 ms is billed as 3 ms; 512 MB is half a GB
    assert invocation_cost(2.1, 512) == pytest.approx(0.003 * 0.5 * GB_S + REQ, rel=1e-12)
    # at least one millisecond is billed; an exact millisecond is not rounded up by float noise
    assert invocation_cost(0.0, 128) == pytest.approx(0.001 * 0.125 * GB_S + REQ, rel=1e-12)
    assert tier.billed_ms(0.1 + 0.2 + 2.7) == 3
    # a million 1-second invocations at 1,769 MB: 1,727.5 GB-s
    assert 1_000_000 * invocation_cost(1000, 1769) == pytest.approx(1769 / 1024 * 1_000_000 * GB_S + 0.20)
    with pytest.raises(ValueError):
        invocation_cost(-1, 1024)


def test_limits_are_lambdas():
    assert tier.MAX_PAYLOAD_BYTES == 6 * 1024 * 1024
    assert tier.MAX_DURATION_S == 15 * 60
    assert (tier.MIN_MEMORY_MB, tier.MAX_MEMORY_MB) == (128, 10240)
    assert tier.DEFAULT_CONCURRENCY == 1000 and tier.KEEP_WARM_S == 300.0
    assert tier.download_ms(50_000_000) == pytest.approx(1000.0)


# -- the memory size -------------------------------------------------------------------------------------
def fp(memory_mb: int, p50: float, p99: float, cold: float = 400.0) -> FunctionProfile:
    return FunctionProfile(memory_mb, {1: (p50, p99), 8: (p50 * 4, p99 * 4)}, cold)


def test_choose_memory_takes_the_cheapest_size_that_meets_the_objective():
    # CPU-bound: twice the memory, half the time: the same GB-seconds (the request price is the same too)
    small, mid, big = fp(512, 40.0, 60.0), fp(1024, 20.0, 30.0), fp(2048, 10.0, 15.0)
    assert small.cost_per_request() == pytest.approx(0.040 * 0.5 * GB_S + REQ)
    assert small.cost_per_request() == pytest.approx(mid.cost_per_request())
    # equal cost: the faster one
    assert choose_memory([small, mid, big], objective_ms=100.0) is big
    # a size past one vCPU that no longer speeds up costs more: not taken
    flat = fp(3008, 10.0, 15.0)
    assert flat.cost_per_request() > big.cost_per_request()
    assert choose_memory([flat, big], objective_ms=100.0) is big
    # a small model that does not speed up with memory: the smallest size is cheapest
    tiny = [fp(512, 2.0, 3.0), fp(1024, 2.0, 3.0), fp(1769, 2.0, 3.0)]
    assert choose_memory(tiny, objective_ms=10.0).memory_mb == 512
    # the objective rules sizes out, by p99 at the batch asked for
    assert choose_memory([small, mid, big], objective_ms=29.0) is big
    assert choose_memory([small, mid, big], objective_ms=100.0, batch=8) is big  # 60 ms at batch 8
    assert choose_memory([small, mid], objective_ms=100.0, batch=8) is None  # 120 and 240 ms
    assert choose_memory([small, mid, big], objective_ms=5.0) is None
    assert choose_memory([], objective_ms=5.0) is None


def test_function_profile_interpolates_and_round_trips():
    p = fp(1024, 2.0, 3.0)
    assert p.latency_at(1) == 3.0 and p.latency_at(8, "p50") == 8.0
    assert p.latency_at(4, "p99") == pytest.approx(3.0 + (12.0 - 3.0) * 3 / 7)
    assert math.isinf(p.latency_at(9)) and math.isinf(p.cost_per_request(9))
    assert p.cost_per_request(1, cold=True) == pytest.approx(invocation_cost(402.0, 1024))
    assert FunctionProfile.from_dict(p.to_dict()) == p


def test_a_lambda_variants_profile_keeps_its_memory_size():
    stored = Profile("lambda", {1: (2.0, 3.0)}, load_ms=450.0, peak_memory_bytes=0, memory_mb=1024)
    back = Profile.from_dict(stored.to_dict())
    assert back.memory_mb == 1024
    assert tier.function_profile_of(back) == FunctionProfile(1024, {1: (2.0, 3.0)}, 450.0)
    old = stored.to_dict()
    del old["memory_mb"]  # a record written before the field existed
    assert Profile.from_dict(old).memory_mb == 0
    with pytest.raises(ValueError):
        tier.function_profile_of(make_profile({1: (1.0, 2.0)}))


# -- the warm pool ----------------------------------------------------------------------------------------
def test_first_invocation_is_cold_then_warm_until_keep_warm_expires():
    clock = FakeClock()
    s = TierState(keep_warm_s=300.0)
    assert cold_probability(s, "v", clock()) == 1.0
    s, cold = acquire(s, "v", clock())
    assert cold and s.pool("v").in_flight == 1
    clock.advance(0.5)
    s = release(s, "v", clock())
    assert s.pool("v") == tier.Pool((clock(),), 0)
    clock.advance(299.0)
    assert cold_probability(s, "v", clock()) == 0.0
    s, cold = acquire(s, "v", clock())
    assert not cold
    s = release(s, "v", clock.advance(1.0))
    clock.advance(300.0)  # idle for exactly keep_warm_s: gone
    assert cold_probability(s, "v", clock()) == 1.0
    assert expire(s, clock()).pools == {}
    s, cold = acquire(s, "v", clock())
    assert cold and s.pool("v").idle == ()  # the expired environment is dropped, not reused


def test_a_burst_starts_one_cold_environment_per_concurrent_invocation():
    clock = FakeClock()
    s = TierState()
    colds = []
    for _ in range(3):
        s, cold = acquire(s, "v", clock())
        colds.append(cold)
    assert colds == [True, True, True] and s.pool("v").in_flight == 3
    for dt in (1.0, 2.0, 3.0):
        s = release(s, "v", clock.advance(dt))
    assert len(tier.warm_idle(s, "v", clock())) == 3
    # warm for this variant only
    assert cold_probability(s, "other", clock()) == 1.0
    # the next invocation takes the most recently used environment: the oldest ages out first
    s, cold = acquire(s, "v", clock())
    assert not cold and s.pool("v").idle == (clock() - 5.0, clock() - 3.0)  # released at +1, +3, +6 s
    with pytest.raises(ValueError):
        release(TierState(), "v", clock())


def test_the_concurrency_limit_throttles_across_variants():
    now = 1000.0
    s = TierState(concurrency=2)
    assert available(s, now) == 2
    s, _ = acquire(s, "a", now)
    s, _ = acquire(s, "b", now)
    assert available(s, now) == 0
    with pytest.raises(Throttled):
        acquire(s, "a", now)
    profile = fp(1024, 2.0, 3.0, cold=400.0)
    latency, p = predict_ms(profile, s, "a", now)
    assert math.isinf(latency) and p == 1.0
    s = release(s, "a", now + 1)
    assert available(s, now + 1) == 1  # an idle warm environment does not hold concurrency
    assert predict_ms(profile, s, "a", now + 1) == (3.0, 0.0)


def test_predict_adds_the_whole_cold_start_when_it_may_be_cold():
    profile = fp(1024, 2.0, 3.0, cold=400.0)
    s = TierState()
    assert predict_ms(profile, s, "v", 0.0) == (403.0, 1.0)
    assert predict_ms(profile, s, "v", 0.0, batch=8) == (412.0, 1.0)
    s, _ = acquire(s, "v", 0.0)
    s = release(s, "v", 0.01)
    assert predict_ms(profile, s, "v", 10.0) == (3.0, 0.0)
    assert predict_ms(profile, s, "v", 400.0) == (403.0, 1.0)


def test_steps_are_pure_and_deterministic():
    def run() -> list:
        clock, s, out = FakeClock(), TierState(concurrency=4, keep_warm_s=60.0), []
        for i in range(40):
            vid = "ab"[i % 2]
            if available(s, clock()) and i % 3:
                s, cold = acquire(s, vid, clock())
                out.append(("acquire", vid, cold))
            elif s.pool(vid).in_flight:
                s = release(s, vid, clock())
                out.append(("release", vid))
            clock.advance(7.0 * (i % 5))
        return [out, s]

    first, second = run(), run()
    assert first == second
    before = TierState()
    after, _ = acquire(before, "v", 0.0)
    assert before.pools == {} and after.pools != {}  # the old snapshot is untouched
