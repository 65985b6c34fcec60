"""Per-tenant request rate limits: a token bucket, as a pure function.

A tenant may send ``rate_rps`` requests per second on average and bursts of
up to ``burst`` at once. Beyond that it gets 429 with a Retry-After hint,
instead of slowing the service for everyone else.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from infaas.core.errors import TooManyRequests


@dataclass(frozen=True)
class Bucket:
    tokens: float
    at: float


def take(bucket: Bucket | None, now: float, rate_rps: float, burst: float) -> tuple[bool, Bucket, float]:
    """Try to take one token. Returns (allowed, new bucket, seconds until a token is free)."""
    if bucket is None:
        bucket = Bucket(burst, now)
    tokens = min(burst, bucket.tokens + (now - bucket.at) * rate_rps)
    if tokens >= 1.0:
        return True, Bucket(tokens - 1.0, now), 0.0
    return False, Bucket(tokens, now), (1.0 - tokens) / rate_rps


class RateLimiter:
    def __init__(self, rate_rps: float, burst: float, clock=time.monotonic) -> None:
        self.rate_rps, self.burst, self.clock = rate_rps, burst, clock
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def check(self, tenant: str) -> None:
        if self.rate_rps <= 0:
            return
        with self._lock:
            ok, self._buckets[tenant], wait_s = take(self._buckets.get(tenant), self.clock(), self.rate_rps, self.burst)
        if not ok:
            raise TooManyRequests(
                f"tenant {tenant!r} exceeds {self.rate_rps:g} requests/s (burst {self.burst:g}); retry in {wait_s:.2f} s",
                retry_after_s=wait_s,
            )
