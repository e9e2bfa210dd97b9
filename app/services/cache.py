"""Result cache: Redis when ``REDIS_URL`` is set, else an in-process LRU with a byte budget."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError


class CacheUnavailable(Exception):
    """The cache backend cannot be reached; callers bypass the cache and say so."""


class ResultCache(Protocol):
    """Bytes by key, with a time to live."""

    backend: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def ping(self) -> None:
        """Raise :class:`CacheUnavailable` when the backend does not answer."""

    async def close(self) -> None: ...


class MemoryCache:
    """In-process LRU cache bounded by total value size (bytes) and entry age (seconds)."""

    backend = "memory"

    def __init__(self, max_bytes: int, ttl_s: float) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._size = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if time.monotonic() >= expires:
            await self.delete(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        await self.delete(key)
        if len(value) > self.max_bytes:
            return
        self._entries[key] = (time.monotonic() + self.ttl_s, value)
        self._size += len(value)
        while self._size > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._size -= len(evicted)

    async def delete(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._size -= len(entry[1])

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._entries.clear()
        self._size = 0


class RedisCache:
    """Redis-backed cache; every key lives under ``prefix`` and expires after ``ttl_s``.

    Connection and socket timeouts are short so that an unreachable Redis costs a request at most
    a second or two before it is bypassed.
    """

    backend = "redis"

    def __init__(self, url: str, *, ttl_s: int, prefix: str) -> None:
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._client = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, retry_on_timeout=False
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    async def get(self, key: str) -> bytes | None:
        try:
            value = cast(bytes | None, await self._client.get(self._key(key)))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis get failed: {exc}") from exc
        return value

    async def set(self, key: str, value: bytes) -> None:
        try:
            await self._client.set(self._key(key), value, ex=self.ttl_s)
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis set failed: {exc}") from exc

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete(self._key(key))
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis delete failed: {exc}") from exc

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise CacheUnavailable(f"Redis does not answer: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()
