"""Reads about tenants: effective limits (plan + overrides), billing periods, key lookup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from tenants.models import ApiKey, Organization, QuotaPeriod


@dataclass(frozen=True)
class EffectiveLimits:
    monthly_images: int
    requests_per_minute: int
    max_concurrent_jobs: int
    allowed_tiers: list[str]


def organization_limits(*, organization: Organization) -> EffectiveLimits:
    plan = organization.plan

    def pick(override, default):
        return default if override is None else override

    return EffectiveLimits(
        monthly_images=pick(organization.monthly_images_override, plan.included_images_per_month),
        requests_per_minute=pick(organization.requests_per_minute_override, plan.requests_per_minute),
        max_concurrent_jobs=pick(organization.max_concurrent_jobs_override, plan.max_concurrent_jobs),
        allowed_tiers=list(pick(organization.allowed_tiers_override, plan.allowed_tiers)),
    )


def organization_payment_blocked(*, organization: Organization, now: datetime | None = None) -> bool:
    """True once an invoice payment failed and the grace period passed without `invoice.paid`:
    live generation answers 402 (test mode keeps working)."""
    failed_at = organization.payment_failed_at
    if failed_at is None:
        return False
    return (now or timezone.now()) >= failed_at + timedelta(days=settings.BILLING_GRACE_PERIOD_DAYS)


def billing_period_start(now: datetime | None = None) -> date:
    """Billing months are calendar months in UTC."""
    now = now or timezone.now()
    return now.astimezone(UTC).date().replace(day=1)


def billing_period_end(period_start: date) -> date:
    if period_start.month == 12:
        return period_start.replace(year=period_start.year + 1, month=1)
    return period_start.replace(month=period_start.month + 1)


def organization_images_reserved(*, organization: Organization, period_start: date) -> int:
    row = QuotaPeriod.objects.filter(organization=organization, period_start=period_start).first()
    return row.images_reserved if row else 0


def api_key_get_by_hash(*, key_hash: str) -> ApiKey | None:
    return ApiKey.objects.select_related("organization__plan").filter(key_hash=key_hash).first()


def organizations_for_user(*, user) -> list[Organization]:
    return list(Organization.objects.filter(memberships__user=user).select_related("plan").order_by("name"))


@dataclass
class OrganizationOverview:
    """An organization with its derived numbers, shaped for `OrganizationOutputSerializer`."""

    organization: Organization
    effective_limits: EffectiveLimits
    usage_this_month: dict

    def __getattr__(self, name):
        return getattr(self.organization, name)


def organization_overview(*, organization: Organization, now: datetime | None = None) -> OrganizationOverview:
    limits = organization_limits(organization=organization)
    period_start = billing_period_start(now)
    reserved = organization_images_reserved(organization=organization, period_start=period_start)
    return OrganizationOverview(
        organization=organization,
        effective_limits=limits,
        usage_this_month={
            "period_start": period_start,
            "period_end": billing_period_end(period_start),
            "images_reserved": reserved,
            "images_remaining": max(0, limits.monthly_images - reserved),
            "jobs_in_flight": organization.jobs_in_flight,
        },
    )
