"""Reads about tenants: effective limits (plan + overrides), billing periods, key lookup."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import CharField, Model, Value
from django.db.models.sql import Query
from django.utils import timezone

from tenants.models import ApiKey, ApiKeyPeriod, Organization, Plan, QuotaPeriod


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


@dataclass(frozen=True)
class SpendStatus:
    """This month's quota and spend of an organization and one of its keys (live usage). Spend is
    in the plan's currency; `*_reserved` includes the worst case of jobs still in flight."""

    currency: str
    period_start: date
    images_reserved: int
    images_remaining: int
    spend_reserved: Decimal
    spend_used: Decimal
    spend_cap: Decimal | None
    spend_remaining: Decimal | None
    alert_thresholds: list[int]
    key_images_reserved: int
    key_image_cap: int | None
    key_images_remaining: int | None
    key_spend_reserved: Decimal
    key_spend_used: Decimal
    key_spend_cap: Decimal | None
    key_spend_remaining: Decimal | None

    def headers(self) -> dict[str, str]:
        """Response headers: what is left this month (a cap that is not set sends no header)."""
        headers = {"X-Quota-Images-Remaining": str(self.images_remaining)}
        if self.spend_remaining is not None:
            headers["X-Spend-Remaining"] = f"{self.spend_remaining:.2f}"
        if self.key_images_remaining is not None:
            headers["X-Key-Images-Remaining"] = str(self.key_images_remaining)
        if self.key_spend_remaining is not None:
            headers["X-Key-Spend-Remaining"] = f"{self.key_spend_remaining:.2f}"
        return headers


@dataclass(frozen=True)
class _Month:
    images_reserved: int
    spend_reserved: Decimal
    spend_used: Decimal


def _remaining(cap: Any, used: Any) -> Any:
    return None if cap is None else max(cap - used, 0)


def organization_spend_status(
    *, organization: Organization, api_key: ApiKey | None, now: datetime | None = None
) -> SpendStatus:
    """The organization's month, and the key's when one is given (else its fields are empty)."""
    period_start = billing_period_start(now)
    limits = organization_limits(organization=organization)
    # Both months in one round trip (every POST /v1/generations answers with these headers).
    columns = ("kind", "images_reserved", "spend_reserved", "spend_used")
    rows = QuotaPeriod.objects.filter(organization=organization, period_start=period_start).annotate(
        kind=Value("organization", output_field=CharField())
    )
    query = rows.values_list(*columns)
    if api_key is not None:
        key_rows = ApiKeyPeriod.objects.filter(api_key=api_key, period_start=period_start).annotate(
            kind=Value("key", output_field=CharField())
        )
        query = query.union(key_rows.values_list(*columns), all=True)
    found = {kind: _Month(*values) for kind, *values in query}
    month, key_month = found.get("organization"), found.get("key")
    images = month.images_reserved if month else 0
    spend = month.spend_reserved if month else Decimal("0")
    key_images = key_month.images_reserved if key_month else 0
    key_spend = key_month.spend_reserved if key_month else Decimal("0")
    return SpendStatus(
        currency=organization.plan.currency,
        period_start=period_start,
        images_reserved=images,
        images_remaining=max(0, limits.monthly_images - images),
        spend_reserved=spend,
        spend_used=month.spend_used if month else Decimal("0"),
        spend_cap=organization.monthly_spend_cap,
        spend_remaining=_remaining(organization.monthly_spend_cap, spend),
        alert_thresholds=list(organization.spend_alert_thresholds or []),
        key_images_reserved=key_images,
        key_image_cap=api_key.monthly_image_cap if api_key else None,
        key_images_remaining=_remaining(api_key.monthly_image_cap if api_key else None, key_images),
        key_spend_reserved=key_spend,
        key_spend_used=key_month.spend_used if key_month else Decimal("0"),
        key_spend_cap=api_key.monthly_spend_cap if api_key else None,
        key_spend_remaining=_remaining(api_key.monthly_spend_cap if api_key else None, key_spend),
    )


def api_key_get_by_hash(*, key_hash: str) -> ApiKey | None:
    """The key with its organization and plan, as `select_related("organization__plan")` gives
    them, in one SELECT. Every API request makes this lookup and the ORM spent more CPU compiling
    the three-table join than anything else in a request (py-spy, issue 15), so its SQL and the
    columns' converters are built once per process and database vendor."""
    lookup = _key_lookup()
    with connection.cursor() as cursor:
        cursor.execute(lookup.sql, [key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for index, (converters, expression) in lookup.converters.items():
        for converter in converters:
            values[index] = converter(values[index], expression, connection)
    instances, start = [], 0
    for model, attnames in lookup.models:
        instances.append(model.from_db(connection.alias, attnames, values[start : start + len(attnames)]))
        start += len(attnames)
    api_key, organization, plan = instances
    organization.plan = plan  # type: ignore[attr-defined]
    api_key.organization = organization  # type: ignore[attr-defined]
    return api_key  # type: ignore[return-value]


@dataclass(frozen=True)
class _KeyLookup:
    sql: str
    models: list[tuple[type[Model], list[str]]]
    converters: dict[int, tuple[list, Any]]


_key_lookups: dict[str, _KeyLookup] = {}


def _key_lookup() -> _KeyLookup:
    cached = _key_lookups.get(connection.vendor)
    if cached is not None:
        return cached
    quote = connection.ops.quote_name
    models: list[tuple[type[Model], list[str]]] = []
    columns: list[str] = []
    expressions: list[Any] = []
    for model in (ApiKey, Organization, Plan):
        fields = model._meta.concrete_fields
        table = model._meta.db_table
        models.append((model, [field.attname for field in fields]))
        columns += [f"{quote(table)}.{quote(field.column)}" for field in fields]
        expressions += [field.get_col(table) for field in fields]
    key, organization, plan = (quote(model._meta.db_table) for model in (ApiKey, Organization, Plan))
    sql = (
        f"SELECT {', '.join(columns)} FROM {key} "  # noqa: S608 - our tables and columns
        f"INNER JOIN {organization} ON {organization}.{quote(Organization._meta.pk.column)} = "
        f"{key}.{quote(ApiKey._meta.get_field('organization').column)} "
        f"INNER JOIN {plan} ON {plan}.{quote(Plan._meta.pk.column)} = "
        f"{organization}.{quote(Organization._meta.get_field('plan').column)} "
        f"WHERE {key}.{quote(ApiKey._meta.get_field('key_hash').column)} = %s LIMIT 1"
    )
    compiler = connection.ops.compiler("SQLCompiler")(Query(ApiKey), connection, connection.alias)
    lookup = _KeyLookup(sql=sql, models=models, converters=compiler.get_converters(expressions))
    _key_lookups[connection.vendor] = lookup
    return lookup


def organizations_for_user(*, user) -> list[Organization]:
    return list(Organization.objects.filter(memberships__user=user).select_related("plan").order_by("name"))


@dataclass
class OrganizationOverview:
    """An organization with its derived numbers, shaped for `OrganizationOutputSerializer`."""

    organization: Organization
    effective_limits: EffectiveLimits
    usage_this_month: dict
    spend: SpendStatus | None = None

    def __getattr__(self, name):
        return getattr(self.organization, name)


def organization_overview(
    *, organization: Organization, api_key: ApiKey | None = None, now: datetime | None = None
) -> OrganizationOverview:
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
        spend=organization_spend_status(organization=organization, api_key=api_key, now=now)
        if api_key
        else None,
    )
