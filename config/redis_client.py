"""The process-wide Redis connection pool, or None when REDIS_URL is not configured, and the
degraded-mode switch every Redis user goes through.

Redis is an accelerator, never a single point of failure: each caller has a database (or local)
fallback. After one failed call `redis_degraded()` stays true for REDIS_RETRY_SECONDS, so callers
go straight to their fallback instead of paying a socket timeout per request; then the next call
probes Redis again, and a success ends degraded mode by itself. The state is exported as the
`imagegate_redis_degraded` gauge and logged once per outage (the operator alarm).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import TypeVar

import redis
from django.conf import settings

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Errors that mean "Redis is unreachable or refused", as opposed to a bug in the caller.
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)


@cache
def get_redis() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    return redis.Redis.from_url(
        settings.REDIS_URL,
        health_check_interval=30,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_SECONDS,
        retry_on_timeout=False,
    )


class _Degraded:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.until = 0.0
        self.since = 0.0
        self.failures = 0

    def active(self) -> bool:
        return time.monotonic() < self.until

    def failed(self, exc: BaseException, what: str) -> None:
        with self._lock:
            self.failures += 1
            first = self.since == 0.0
            if first:
                self.since = time.time()
            self.until = time.monotonic() + settings.REDIS_RETRY_SECONDS
        if first:
            logger.error("Redis unavailable (%s: %s); degraded mode, using fallbacks", what, exc)

    def recovered(self) -> None:
        if self.since:
            with self._lock:
                outage, self.since, self.until = time.time() - self.since, 0.0, 0.0
            logger.warning("Redis is back after %.1f s; degraded mode ended", outage)


degraded = _Degraded()


def redis_degraded() -> bool:
    """True while Redis is configured but considered down (fallbacks in use)."""
    return bool(settings.REDIS_URL) and (degraded.active() or degraded.since != 0.0)


def redis_call(what: str, fn: Callable[[redis.Redis], T], fallback: Callable[[], T]) -> T:
    """Run `fn(client)` against Redis, or `fallback()` without Redis, while degraded, or when the
    call fails (which starts degraded mode)."""
    client = get_redis()
    if client is None or degraded.active():
        return fallback()
    try:
        result = fn(client)
    except REDIS_ERRORS as exc:
        degraded.failed(exc, what)
        return fallback()
    degraded.recovered()
    return result
