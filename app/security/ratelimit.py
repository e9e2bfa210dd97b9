"""Per-key rate limits: a token bucket per key, in Redis (shared by every API pod) or in-process.

A bucket holds at most ``burst`` tokens and refills at ``per_min / 60`` tokens per second; every
request takes one. An empty bucket answers how long until the next token (``Retry-After``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app import metrics

log = logging.getLogger("audioproc.ratelimit")


class RateLimiter(Protocol):
    backend: str

    async def take(self, bucket: str) -> float:
        """Take one token from ``bucket``: 0.0 when allowed, else the seconds until a token is
        available (the request is refused)."""
        ...

    async def close(self) -> None: ...


class MemoryRateLimiter:
    """Token buckets in a dict (this process only), at most ``max_buckets`` kept (LRU)."""

    backend = "memory"

    def __init__(self, per_min: float, burst: int, max_buckets: int = 100_000) -> None:
        self.rate_per_s = per_min / 60.0
        self.burst = float(burst)
        self.max_buckets = max_buckets
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, bucket: str) -> float:
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(bucket, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate_per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        self._buckets[bucket] = (tokens, now)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return wait

    async def close(self) -> None:
        self._buckets.clear()


#: KEYS[1] bucket; ARGV[1] tokens per millisecond; ARGV[2] burst. Uses the server's clock, so
#: every pod agrees. Returns 0 when a token was taken, else the milliseconds until one refills.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate) + 1000)
return wait
"""


class RedisRateLimiter:
    """Token buckets as Redis hashes ``<prefix>rate:<bucket>`` updated by one Lua script (atomic
    across pods). When Redis does not answer the request is let through — a rate limit must not
    take the service down with Redis — and ``audioproc_rate_limit_errors_total`` counts it."""

    backend = "redis"

    def __init__(self, url: str, *, per_min: float, burst: int, prefix: str) -> None:
        self.rate_per_ms = per_min / 60_000.0
        self.burst = burst
        self.prefix = prefix
        self._client = aioredis.Redis.from_url(
            url, socket_connect_timeout=0.5, socket_timeout=0.5, retry_on_timeout=False
        )
        self._take = self._client.register_script(_TAKE)

    async def take(self, bucket: str) -> float:
        try:
            wait_ms = await self._take(
                keys=[f"{self.prefix}rate:{bucket}"], args=[repr(self.rate_per_ms), self.burst]
            )
        except (RedisError, OSError) as exc:
            metrics.RATE_LIMIT_ERRORS.inc()
            log.warning("rate limit not applied, Redis failed: %s", exc)
            return 0.0
        return int(wait_ms) / 1000.0

    async def close(self) -> None:
        await self._client.aclose()
