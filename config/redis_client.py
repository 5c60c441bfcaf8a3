"""The process-wide Redis connection pool, or None when REDIS_URL is not configured."""

from functools import cache

import redis
from django.conf import settings


@cache
def get_redis() -> redis.Redis | None:
    if not settings.REDIS_URL:
        return None
    return redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30, socket_timeout=5)
