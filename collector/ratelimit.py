"""Per-agent request rate limits (token buckets), so one misbehaving or stolen identity cannot
starve the collector's ingest for the other vantage points."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    rate: float  # requests per second, refilled continuously
    burst: float  # bucket size: how many requests may arrive at once after a quiet period
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def allow(self, key: str, now: float | None = None) -> tuple[bool, float]:
        """Take one token for `key`. Returns (allowed, seconds until the next token)."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True, 0.0
        return False, (1 - bucket.tokens) / self.rate
