from infaas.core.ratelimit import Bucket, take


def test_token_bucket_over_control_periods():
    rate, burst = 2.0, 3.0
    b = None
    allowed = []
    for _ in range(4):  # four requests at t=0
        ok, b, wait = take(b, 0.0, rate, burst)
        allowed.append(ok)
    assert allowed == [True, True, True, False]  # a burst of 3, then empty
    assert wait == 0.5  # (1 - 0 tokens) / 2 per s
    ok, b, _ = take(b, 0.25, rate, burst)  # 0 + 0.25 s * 2/s = 0.5 token: not enough
    assert not ok and b.tokens == 0.5
    ok, b, _ = take(b, 0.5, rate, burst)  # 0.5 + 0.25 * 2 = 1.0 token: allowed, 0 left
    assert ok and b.tokens == 0.0
    ok, b, _ = take(b, 100.0, rate, burst)  # refills to the burst cap (3), takes 1
    assert ok and b.tokens == 2.0


def test_a_fresh_bucket_starts_full():
    ok, b, _ = take(None, 5.0, 1.0, 10.0)
    assert ok and b == Bucket(9.0, 5.0)
