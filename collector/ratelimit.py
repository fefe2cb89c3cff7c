"""Request rate limits (token buckets), so that no client can starve the collector: per agent for
ingest, so one misbehaving or stolen identity cannot crowd out the other vantage points; per client
address for failed token attempts (guessing is slowed) and for anonymous heavy reads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Buckets kept before the full ones are forgotten (a full bucket is the same as none): bounds the
# memory a crowd of client addresses can make a limiter hold.
MAX_KEYS = 10_000


@dataclass
class Bucket:
    tokens: float
    stamp: float


@dataclass
class RateLimiter:
    rate: float  # requests per second, refilled continuously
    burst: float  # bucket size: how many requests may arrive at once after a quiet period
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def _refilled(self, key: str, now: float) -> Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_KEYS:
                self._forget(now)
            bucket = self.buckets[key] = Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        return bucket

    def allow(self, key: str, now: float | None = None) -> tuple[bool, float]:
        """Take one token for `key`. Returns (allowed, seconds until the next token)."""
        now = time.monotonic() if now is None else now
        bucket = self._refilled(key, now)
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True, 0.0
        return False, (1 - bucket.tokens) / self.rate

    def wait(self, key: str, now: float | None = None) -> float:
        """Seconds until `key` has a token again (0 when it has one now), taking none."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def _forget(self, now: float) -> None:
        """Drop the buckets that have refilled; if that is not enough, the least recently used half."""
        for key in [k for k, b in self.buckets.items() if b.tokens + (now - b.stamp) * self.rate >= self.burst]:
            del self.buckets[key]
        if len(self.buckets) >= MAX_KEYS:
            for key in sorted(self.buckets, key=lambda k: self.buckets[k].stamp)[: len(self.buckets) // 2]:
                del self.buckets[key]
