"""Limit services: monthly image quota, spend caps (organization and API key), concurrent jobs, and
requests per minute.

Every check-and-take is a single conditional UPDATE (or Redis INCR), never read-then-write, so a
burst of parallel requests from any number of processes or machines cannot overshoot a limit, on
SQLite and on PostgreSQL alike. Quota and concurrency reservations made inside one transaction
roll back together.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Greatest
from django.utils import timezone

from config.redis_client import get_redis, redis_call
from tenants.errors import KeyCapExceeded, QuotaExceeded, RateLimited, SpendCapExceeded, TestModeLimitExceeded
from tenants.models import (
    ApiKey,
    ApiKeyPeriod,
    Membership,
    Organization,
    QuotaPeriod,
    RateLimitCounter,
    SpendAlert,
    SpendReservation,
)
from tenants.selectors import billing_period_end, billing_period_start, organization_limits

ZERO = Decimal("0")
# Amounts have 4 decimal places. SQLite keeps decimals as floating point, so a sum like 19 x 0.09 can
# land a hair above 1.71; cap checks allow half of the smallest unit so that float noise never
# refuses a request that fits (and never lets one through that does not).
CAP_TOLERANCE = Decimal("0.00005")

# Consumers of "a spend threshold was reached" (called in the transaction that records it, once per
# threshold per month), registered in their AppConfig.ready(): generation's webhooks add the signed
# `spend.threshold_reached` event. The owners' e-mail is sent here, after commit.
SpendThresholdHook = Callable[..., object]
SPEND_THRESHOLD_HOOKS: list[SpendThresholdHook] = []


def spend_threshold_hook_register(hook: SpendThresholdHook) -> None:
    if hook not in SPEND_THRESHOLD_HOOKS:
        SPEND_THRESHOLD_HOOKS.append(hook)


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


# --- Spend caps -----------------------------------------------------------------------------
def _money(amount: Decimal) -> str:
    return f"{amount.quantize(Decimal('0.01'))}"


def _key_within(api_key: ApiKey, images: int, amount: Decimal) -> Q:
    key_within = Q()
    if api_key.monthly_image_cap is not None:
        key_within &= Q(images_reserved__lte=api_key.monthly_image_cap - images)
    if api_key.monthly_spend_cap is not None:
        key_within &= Q(spend_reserved__lte=api_key.monthly_spend_cap - amount + CAP_TOLERANCE)
    return key_within


def spend_reserve(
    *,
    organization: Organization,
    api_key: ApiKey,
    job_public_id: str,
    images: int,
    unit_price: Decimal,
    now: datetime | None = None,
) -> SpendReservation:
    """Reserve a live job's worst case (`images` x `unit_price`) against the organization's monthly
    spend cap and the key's monthly image and spend caps; raises SpendCapExceeded / KeyCapExceeded.

    Call it in the transaction that reserves the quota (`quota_reserve` first: same row, same lock
    order as the release), so everything rolls back together. Each take is one conditional UPDATE,
    like the quota: parallel requests from any number of processes cannot overshoot a cap. Spend is
    tracked without caps too (response headers, GET /v1/organization).
    """
    if images < 1:
        raise ValueError("images must be positive")
    amount = unit_price * images
    period_start = billing_period_start(now)
    with transaction.atomic():  # a savepoint: a refused key cap also undoes the organization's take
        month = QuotaPeriod.objects.filter(organization=organization, period_start=period_start)
        if not month.exists():
            QuotaPeriod.objects.bulk_create(
                [QuotaPeriod(organization=organization, period_start=period_start)], ignore_conflicts=True
            )
        cap = organization.monthly_spend_cap
        within = Q() if cap is None else Q(spend_reserved__lte=cap - amount + CAP_TOLERANCE)
        if not month.filter(within).update(spend_reserved=F("spend_reserved") + amount):
            raise SpendCapExceeded(
                f"This request may cost up to {_money(amount)} {organization.plan.currency}, which would "
                f"exceed the organization's monthly spend cap of {_money(cap or ZERO)} until "
                f"{billing_period_end(period_start).isoformat()}. Raise the cap on the dashboard's billing "
                "page."
            )
        key_month = ApiKeyPeriod.objects.filter(api_key=api_key, period_start=period_start)
        if not key_month.exists():
            ApiKeyPeriod.objects.bulk_create(
                [ApiKeyPeriod(api_key=api_key, period_start=period_start)], ignore_conflicts=True
            )
        if not key_month.filter(_key_within(api_key, images, amount)).update(
            images_reserved=F("images_reserved") + images, spend_reserved=F("spend_reserved") + amount
        ):
            caps = []
            if api_key.monthly_image_cap is not None:
                caps.append(f"{api_key.monthly_image_cap} images")
            if api_key.monthly_spend_cap is not None:
                caps.append(f"{_money(api_key.monthly_spend_cap)} {organization.plan.currency}")
            raise KeyCapExceeded(
                f"This request ({images} image(s), up to {_money(amount)} {organization.plan.currency}) "
                f"would exceed this API key's monthly cap of {' and '.join(caps)} until "
                f"{billing_period_end(period_start).isoformat()}."
            )
        return SpendReservation.objects.create(
            job_public_id=job_public_id,
            organization=organization,
            api_key=api_key,
            period_start=period_start,
            images=images,
            amount=amount,
        )


def live_reserve(
    *,
    organization: Organization,
    api_key: ApiKey,
    job_public_id: str,
    images: int,
    unit_price: Decimal,
    now: datetime | None = None,
) -> date:
    """`quota_reserve` then `spend_reserve` for a live job, as job_submit needs them, in three
    statements when the month's rows exist and every cap has room: the organization's month takes
    the images and the worst-case spend in one conditional UPDATE, the key's month in another
    (same lock order), then the reservation row. Anything else (first request of the month, a limit
    reached) takes the step-by-step path, which creates the rows or raises the precise error; a
    refused key cap gives the organization's take back first. Call it inside a transaction."""
    if images < 1:
        raise ValueError("images must be positive")
    amount = unit_price * images
    period_start = billing_period_start(now)
    limit = organization_limits(organization=organization).monthly_images
    cap = organization.monthly_spend_cap
    within = Q(images_reserved__lte=limit - images)
    if cap is not None:
        within &= Q(spend_reserved__lte=cap - amount + CAP_TOLERANCE)
    month = QuotaPeriod.objects.filter(organization=organization, period_start=period_start)
    if not month.filter(within).update(
        images_reserved=F("images_reserved") + images, spend_reserved=F("spend_reserved") + amount
    ):
        return _reserve_step_by_step(organization, api_key, job_public_id, images, unit_price, now)
    key_month = ApiKeyPeriod.objects.filter(api_key=api_key, period_start=period_start)
    if not key_month.filter(_key_within(api_key, images, amount)).update(
        images_reserved=F("images_reserved") + images, spend_reserved=F("spend_reserved") + amount
    ):
        month.update(  # still locked by us: give the take back, then the precise path
            images_reserved=F("images_reserved") - images, spend_reserved=F("spend_reserved") - amount
        )
        return _reserve_step_by_step(organization, api_key, job_public_id, images, unit_price, now)
    SpendReservation.objects.create(
        job_public_id=job_public_id,
        organization=organization,
        api_key=api_key,
        period_start=period_start,
        images=images,
        amount=amount,
    )
    return period_start


def _settle_sql() -> str:
    table = connection.ops.quote_name(SpendReservation._meta.db_table)
    organizations = connection.ops.quote_name(Organization._meta.db_table)
    return (
        f"UPDATE {table} SET settled_at = %s, settled_images = %s, settled_amount = %s "  # noqa: S608 - our tables
        "WHERE job_public_id = %s AND settled_at IS NULL "
        "RETURNING organization_id, api_key_id, period_start, images, amount, "
        f"(SELECT monthly_spend_cap FROM {organizations} WHERE id = {table}.organization_id)"
    )


def _decimal(field_name: str, model, value) -> Decimal | None:
    """A decimal read by raw SQL as the ORM would return it (SQLite keeps them as floats)."""
    if value is None:
        return None
    field = model._meta.get_field(field_name)
    return field.to_python(value).quantize(Decimal(1).scaleb(-field.decimal_places))


def spend_settle(*, job_public_id: str, images: int, amount: Decimal) -> bool:
    """A job ended having delivered `images` costing `amount`: give back the rest of its worst case,
    exactly once (a conditional UPDATE on the reservation), then e-mail any spend threshold crossed.
    False when there was nothing to settle (test mode, or already settled).

    Runs inside the job's terminal transaction on every job end, so it is lean: the conditional
    UPDATE returns the reservation and the organization's spend cap (one round trip instead of
    three), and no savepoint is taken (an error propagates and rolls the whole finish back)."""
    ops = connection.ops
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(
            _settle_sql(),
            [
                ops.adapt_datetimefield_value(timezone.now()),
                images,
                ops.adapt_decimalfield_value(amount, 14, 4),
                job_public_id,
            ],
        )
        row = cursor.fetchone()
        if row is None:
            return False
        organization_id, api_key_id, period_start, reserved_images, reserved, cap = row
        period_start = SpendReservation._meta.get_field("period_start").to_python(period_start)
        give_back = (_decimal("amount", SpendReservation, reserved) or ZERO) - amount
        QuotaPeriod.objects.filter(organization_id=organization_id, period_start=period_start).update(
            spend_reserved=Greatest(F("spend_reserved") - give_back, Value(ZERO)),
            spend_used=F("spend_used") + amount,
        )
        if api_key_id is not None:
            ApiKeyPeriod.objects.filter(api_key_id=api_key_id, period_start=period_start).update(
                images_reserved=Greatest(F("images_reserved") - (reserved_images - images), 0),
                spend_reserved=Greatest(F("spend_reserved") - give_back, Value(ZERO)),
                spend_used=F("spend_used") + amount,
            )
        if amount > 0 and _decimal("monthly_spend_cap", Organization, cap):  # no cap: no alert to check
            spend_alerts_check(organization_id=organization_id, period_start=period_start)
    return True


def spend_alerts_check(*, organization_id: int, period_start: date) -> list[int]:
    """Record and (after commit) e-mail each threshold of the spend cap the month's actual spend has
    reached. The unique (organization, month, threshold) row makes each e-mail go out once, however
    many jobs finish at the same time. Returns the thresholds newly reached."""
    organization = Organization.objects.select_related("plan").get(pk=organization_id)
    cap = organization.monthly_spend_cap
    if not cap:
        return []
    used = (
        QuotaPeriod.objects.filter(organization_id=organization_id, period_start=period_start)
        .values_list("spend_used", flat=True)
        .first()
    ) or ZERO
    reached = []
    thresholds = {t for t in organization.spend_alert_thresholds or [] if isinstance(t, int) and 0 < t <= 100}
    for threshold in sorted(thresholds):
        if used * 100 < cap * threshold - CAP_TOLERANCE:
            break
        try:
            with transaction.atomic():
                alert = SpendAlert.objects.create(
                    organization=organization,
                    period_start=period_start,
                    threshold=threshold,
                    spend=used,
                    cap=cap,
                )
        except IntegrityError:
            continue  # already sent this month
        reached.append(threshold)
        for hook in SPEND_THRESHOLD_HOOKS:
            hook(organization=organization, alert=alert)
        transaction.on_commit(
            partial(
                spend_alert_email_send,
                organization_id=organization_id,
                threshold=threshold,
                spend=used,
                cap=cap,
            )
        )
    return reached


def spend_alert_email_send(*, organization_id: int, threshold: int, spend: Decimal, cap: Decimal) -> int:
    organization = Organization.objects.select_related("plan").get(pk=organization_id)
    owners = list(
        Membership.objects.filter(organization=organization, role=Membership.Role.OWNER)
        .exclude(user__email="")
        .values_list("user__email", flat=True)
    )
    if not owners:
        return 0
    currency = organization.plan.currency.upper()
    over = (
        "reached its monthly spend cap"
        if threshold >= 100
        else f"used {threshold} % of its monthly spend cap"
    )
    return send_mail(
        subject=f"Imagegate: {organization.name} {over}",
        message=(
            f"{organization.name} has spent {_money(spend)} {currency} this month, {threshold} % of its "
            f"monthly spend cap of {_money(cap)} {currency}.\n\n"
            + (
                "Live requests that could go over the cap are refused (HTTP 429, spend_cap_exceeded) until "
                "the cap is raised or the month ends.\n"
                if threshold >= 100
                else "Requests keep working until the cap is reached.\n"
            )
            + f"Change the cap on the billing page: {settings.PUBLIC_BASE_URL}/billing/\n"
        ),
        from_email=None,
        recipient_list=owners,
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


def _redis_key(key: str, window_start: int) -> str:
    return f"{settings.REDIS_PREFIX}:rl:{key}:{window_start}"


def _incr_redis(client, key: str, window_start: int, window_seconds: int, amount: int = 1) -> int:
    redis_key = _redis_key(key, window_start)
    pipe = client.pipeline(transaction=False)
    pipe.incrby(redis_key, amount)
    pipe.expire(redis_key, window_seconds * 2)
    count, _ = pipe.execute()
    return int(count)


_TABLE = RateLimitCounter._meta.db_table
_UPSERT_SQL = (
    f'INSERT INTO {_TABLE} ("key", window_start, count) VALUES (%s, %s, %s) '  # noqa: S608 - our table
    f'ON CONFLICT ("key", window_start) DO UPDATE SET count = {_TABLE}.count + EXCLUDED.count '
    "RETURNING count"
)


def _incr_database(key: str, window_start: int, window_seconds: int, amount: int = 1) -> int:
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_SQL, [key, window_start, amount])
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


# --- Test-mode images per day -------------------------------------------------------------------
DAY_SECONDS = 24 * 3600


def test_images_reserve(*, organization: Organization, images: int, now: float | None = None) -> None:
    """Count `images` against the organization's free test-mode allowance for this UTC day
    (TEST_MODE_DAILY_IMAGES): test keys cost nothing and have no monthly quota, so without this the
    sandbox's 4K/webp rendering would be free CPU for anyone who signs up. A refused request gives
    its count back; images of accepted requests stay counted even if the job later fails."""
    limit = settings.TEST_MODE_DAILY_IMAGES
    now = time.time() if now is None else now
    day = int(now // DAY_SECONDS) * DAY_SECONDS
    key = f"test-images:{organization.public_id}"
    client = get_redis()
    if client is not None:
        count = _incr_redis(client, key, day, DAY_SECONDS, images)
        if count > limit:
            client.decrby(_redis_key(key, day), images)
    else:
        # Inside the caller's transaction: the exception below rolls the increment back.
        count = _incr_database(key, day, DAY_SECONDS, images)
    if count > limit:
        raise TestModeLimitExceeded(
            f"Test keys of this organization may generate {limit} images per UTC day; this request "
            f"needs {images} more. Use a live key, or retry after midnight UTC.",
            retry_after=max(1, math.ceil(day + DAY_SECONDS - now)),
        )


test_images_reserve.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _reserve_step_by_step(organization, api_key, job_public_id, images, unit_price, now):
    """The precise path (first request of a month, or one a limit refuses: the exact error)."""
    period = quota_reserve(organization=organization, images=images, now=now)
    spend_reserve(
        organization=organization,
        api_key=api_key,
        job_public_id=job_public_id,
        images=images,
        unit_price=unit_price,
        now=now,
    )
    return period
