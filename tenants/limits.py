"""Limit services: monthly image quota, concurrent jobs, and requests per minute.

Every check-and-take is a single conditional UPDATE (or Redis INCR), never read-then-write, so a
burst of parallel requests from any number of processes or machines cannot overshoot a limit, on
SQLite and on PostgreSQL alike. Quota and concurrency reservations made inside one transaction
roll back together.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.db.models.functions import Greatest

from config.redis_client import redis_call
from tenants.errors import QuotaExceeded, RateLimited
from tenants.models import Organization, QuotaPeriod, RateLimitCounter
from tenants.selectors import billing_period_end, billing_period_start, organization_limits


# --- Monthly image quota --------------------------------------------------------------------
def quota_reserve(*, organization: Organization, images: int, now: datetime | None = None) -> date:
    """Reserve `images` from this month's quota; returns the period reserved against."""
    if images < 1:
        raise ValueError("images must be positive")
    limit = organization_limits(organization=organization).monthly_images
    period_start = billing_period_start(now)
    month = QuotaPeriod.objects.filter(organization=organization, period_start=period_start)
    taken = month.filter(images_reserved__lte=limit - images).update(
        images_reserved=F("images_reserved") + images
    )
    if not taken and not month.exists():
        # First reservation of the month: INSERT ... ON CONFLICT DO NOTHING is race-free, then retry.
        QuotaPeriod.objects.bulk_create(
            [QuotaPeriod(organization=organization, period_start=period_start)], ignore_conflicts=True
        )
        taken = month.filter(images_reserved__lte=limit - images).update(
            images_reserved=F("images_reserved") + images
        )
    if not taken:
        raise QuotaExceeded(
            f"This request needs {images} image(s) but the monthly quota of {limit} images is used up "
            f"until {billing_period_end(period_start).isoformat()}. "
            "Upgrade the plan or ask for a higher limit."
        )
    return period_start


def quota_release(*, organization_id: int, images: int, period_start: date) -> None:
    """Give back images that were reserved but not delivered."""
    if images < 1:
        return
    QuotaPeriod.objects.filter(organization_id=organization_id, period_start=period_start).update(
        images_reserved=Greatest(F("images_reserved") - images, 0)
    )


# --- Concurrent jobs ------------------------------------------------------------------------
def concurrency_acquire(*, organization: Organization) -> None:
    limit = organization_limits(organization=organization).max_concurrent_jobs
    taken = Organization.objects.filter(pk=organization.pk, jobs_in_flight__lt=limit).update(
        jobs_in_flight=F("jobs_in_flight") + 1
    )
    if not taken:
        raise RateLimited(
            f"This organization already has {limit} jobs in progress, its maximum. Retry when one finishes.",
            retry_after=1,
        )


def concurrency_release(*, organization_id: int) -> None:
    Organization.objects.filter(pk=organization_id, jobs_in_flight__gt=0).update(
        jobs_in_flight=F("jobs_in_flight") - 1
    )


# --- Requests per minute --------------------------------------------------------------------
@dataclass(frozen=True)
class RateLimitResult:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # unix seconds when the current window ends
    retry_after: int  # seconds until a request may succeed again

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


def _incr_redis(client, key: str, window_start: int, window_seconds: int) -> int:
    redis_key = f"{settings.REDIS_PREFIX}:rl:{key}:{window_start}"
    pipe = client.pipeline(transaction=False)
    pipe.incr(redis_key)
    pipe.expire(redis_key, window_seconds * 2)
    count, _ = pipe.execute()
    return int(count)


_TABLE = RateLimitCounter._meta.db_table
_UPSERT_SQL = (
    f'INSERT INTO {_TABLE} ("key", window_start, count) VALUES (%s, %s, 1) '
    f'ON CONFLICT ("key", window_start) DO UPDATE SET count = {_TABLE}.count + 1 '
    "RETURNING count"
)


def _incr_database(key: str, window_start: int, window_seconds: int) -> int:
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_SQL, [key, window_start])
        (count,) = cursor.fetchone()
    if random.random() < 0.01:  # keep the table small without a scheduled job
        RateLimitCounter.objects.filter(window_start__lt=window_start - window_seconds).delete()
    return int(count)


def rate_limit_hit(
    *, key: str, limit: int, window_seconds: int = 60, now: float | None = None
) -> RateLimitResult:
    """Count one request against a fixed window shared by every process (Redis, else the database).

    While Redis is down the database counts instead (config/redis_client.py): the two counters are
    separate, so in the minute of a switch a tenant may get up to twice its limit, never more."""
    now = time.time() if now is None else now
    window_start = int(now // window_seconds) * window_seconds
    count = redis_call(
        "rate limit",
        lambda client: _incr_redis(client, key, window_start, window_seconds),
        lambda: _incr_database(key, window_start, window_seconds),
    )
    reset_at = window_start + window_seconds
    return RateLimitResult(
        allowed=count <= limit,
        limit=limit,
        remaining=max(0, limit - count),
        reset_at=reset_at,
        retry_after=max(1, math.ceil(reset_at - now)),
    )
