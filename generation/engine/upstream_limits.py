"""Upstream limits per provider account: calls in flight, requests per minute, images per minute.

With Redis they hold across every worker on every machine: one Lua script checks and takes all
three atomically, so workers wait their turn instead of collecting 429s from Google. A concurrency
slot is a sorted-set member that expires on its own (timeout + margin), so a worker that dies
holding slots cannot leak them. Without Redis (single-machine development) the same limits are
kept per process. While a configured Redis is unreachable, each process keeps its share of the
limits locally (limit / UPSTREAM_LIMIT_DEGRADED_PROCESSES, at least 1) and goes back to Redis by
itself: the account's total stays within the configured limits as long as that setting is at least
the number of worker processes (the documented tolerance), and no job fails over it.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from dataclasses import dataclass

from django.conf import settings

from config.redis_client import REDIS_ERRORS, degraded

_ACQUIRE_LUA = """
local now = tonumber(ARGV[1])
local conc_limit, rpm_limit, ipm_limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local images, window_end = tonumber(ARGV[7]), tonumber(ARGV[8])
if conc_limit > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= conc_limit then return -1 end
end
local used_requests = tonumber(redis.call('GET', KEYS[2]) or '0')
local used_images = tonumber(redis.call('GET', KEYS[3]) or '0')
if rpm_limit > 0 and used_requests + 1 > rpm_limit then return window_end - now end
if ipm_limit > 0 and used_images + images > ipm_limit then return window_end - now end
if conc_limit > 0 then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2]) end
if rpm_limit > 0 then redis.call('INCR', KEYS[2]); redis.call('PEXPIRE', KEYS[2], 120000) end
if ipm_limit > 0 then redis.call('INCRBY', KEYS[3], images); redis.call('PEXPIRE', KEYS[3], 120000) end
return 0
"""


class LimitWaitExceeded(Exception):
    """The deadline passed while waiting for an upstream slot."""


@dataclass(frozen=True)
class Slot:
    account_id: int
    token: str
    local: bool = False  # taken from the per-process fallback (Redis was down)


def _limits(route) -> tuple[int, int, int]:
    return (route.max_concurrency or 0, route.requests_per_minute or 0, route.images_per_minute or 0)


class _LocalBackend:
    """Per-process limits (no Redis), or this process's share of them while Redis is down."""

    def __init__(self, *, share: int = 1) -> None:
        self._share = max(1, share)
        self._lock = threading.Lock()
        self._in_flight: dict[int, set[str]] = {}
        self._windows: dict[tuple[int, str, int], int] = {}

    async def try_acquire(self, route, images: int, token: str) -> float:
        conc, rpm, ipm = (-(-limit // self._share) if limit else 0 for limit in _limits(route))
        window = int(time.time() // 60)
        wait = (window + 1) * 60 - time.time()
        with self._lock:
            holders = self._in_flight.setdefault(route.account_id, set())
            if conc and len(holders) >= conc:
                return -1
            if rpm and self._windows.get((route.account_id, "r", window), 0) + 1 > rpm:
                return wait
            if ipm and self._windows.get((route.account_id, "i", window), 0) + images > ipm:
                return wait
            if conc:
                holders.add(token)
            if rpm:
                self._windows[(route.account_id, "r", window)] = (
                    self._windows.get((route.account_id, "r", window), 0) + 1
                )
            if ipm:
                key = (route.account_id, "i", window)
                self._windows[key] = self._windows.get(key, 0) + images
            if len(self._windows) > 1000:
                self._windows = {k: v for k, v in self._windows.items() if k[2] >= window - 1}
            return 0

    async def release(self, account_id: int, token: str) -> None:
        with self._lock:
            self._in_flight.get(account_id, set()).discard(token)


class _RedisBackend:
    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._client = aioredis.Redis.from_url(
            url,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT_SECONDS,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_SECONDS,
        )
        self._script = self._client.register_script(_ACQUIRE_LUA)

    async def try_acquire(self, route, images: int, token: str) -> float:
        conc, rpm, ipm = _limits(route)
        now_ms = int(time.time() * 1000)
        window = now_ms // 60_000
        account = route.account_id
        result = await self._script(
            keys=[
                f"{settings.REDIS_PREFIX}:ul:{account}:slots",
                f"{settings.REDIS_PREFIX}:ul:{account}:rpm:{window}",
                f"{settings.REDIS_PREFIX}:ul:{account}:ipm:{window}",
            ],
            args=[
                now_ms,
                token,
                int((route.target.timeout_seconds + 30) * 1000),
                conc,
                rpm,
                ipm,
                min(images, ipm) if ipm else images,
                (window + 1) * 60_000,
            ],
        )
        result = int(result)
        return -1 if result == -1 else result / 1000.0

    async def release(self, account_id: int, token: str) -> None:
        await self._client.zrem(f"{settings.REDIS_PREFIX}:ul:{account_id}:slots", token)

    async def close(self) -> None:
        await self._client.aclose()


class UpstreamLimiter:
    """Owned by one event loop (the worker's runner)."""

    POLL_START = 0.01
    POLL_MAX = 0.2

    def __init__(self) -> None:
        self._backend = _RedisBackend(settings.REDIS_URL) if settings.REDIS_URL else _LocalBackend()
        self._fallback = _LocalBackend(share=settings.UPSTREAM_LIMIT_DEGRADED_PROCESSES)
        self._redis_down_until = 0.0

    async def try_acquire(self, route, images: int) -> tuple[Slot | None, float]:
        """Take a slot now if one is free. Returns (slot, 0) or (None, seconds worth waiting)."""
        token = uuid.uuid4().hex
        local = isinstance(self._backend, _LocalBackend) or time.monotonic() < self._redis_down_until
        if not local:
            try:
                wait = await self._backend.try_acquire(route, images, token)
            except REDIS_ERRORS as exc:
                degraded.failed(exc, "upstream limits")
                self._redis_down_until = time.monotonic() + settings.REDIS_RETRY_SECONDS
                local = True
            else:
                degraded.recovered()
        if local and not isinstance(self._backend, _LocalBackend):
            wait = await self._fallback.try_acquire(route, images, token)
            if wait == 0:
                return Slot(route.account_id, token, local=True), 0.0
            return None, wait
        if local:
            wait = await self._backend.try_acquire(route, images, token)
        if wait == 0:
            return Slot(route.account_id, token), 0.0
        return None, wait

    async def acquire(self, route, images: int, *, deadline: float) -> Slot:
        """Wait (at most until `deadline`, a monotonic time) for a slot on this route's account."""
        poll = self.POLL_START
        while True:
            slot, wait = await self.try_acquire(route, images)
            if slot is not None:
                return slot
            sleep = poll if wait < 0 else min(wait, 1.0)
            if time.monotonic() + sleep > deadline:
                raise LimitWaitExceeded(f"no upstream capacity on {route.account_name} before the deadline")
            await asyncio.sleep(sleep * (0.5 + random.random()))
            poll = min(poll * 2, self.POLL_MAX)

    async def release(self, slot: Slot) -> None:
        if slot.local and not isinstance(self._backend, _LocalBackend):
            await self._fallback.release(slot.account_id, slot.token)
            return
        try:
            await self._backend.release(slot.account_id, slot.token)
        except REDIS_ERRORS:  # the slot expires on its own (timeout + margin)
            self._redis_down_until = time.monotonic() + settings.REDIS_RETRY_SECONDS

    async def close(self) -> None:
        if isinstance(self._backend, _RedisBackend):
            await self._backend.close()
