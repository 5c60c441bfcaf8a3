"""Reads about billing: payment enforcement, statements and invoice previews from the ledger, and
usage breakdowns. Everything here works in ledger-only mode (no Stripe key)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Count, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing.models import BillingAccount, BillingAlert, MeterReport, UsageRecord
from tenants.models import ALL_TIERS, Organization
from tenants.selectors import billing_period_end, billing_period_start, organization_payment_blocked

CENT = Decimal("0.01")
ZERO = Decimal("0")


def billing_account_get(*, organization: Organization) -> BillingAccount | None:
    return BillingAccount.objects.filter(organization=organization).first()


def live_generation_blocked(*, organization: Organization, now: datetime | None = None) -> bool:
    """True once an invoice payment failed and the grace period has passed without `invoice.paid`.
    Reads the organization's current copy of the failure time (the instance may predate it);
    admission uses the instance it just loaded instead (tenants.admission)."""
    current = Organization.objects.only("payment_failed_at").get(pk=organization.pk)
    return organization_payment_blocked(organization=current, now=now)


def payment_grace_ends_at(*, account: BillingAccount | None) -> datetime | None:
    if account is None or account.payment_failed_at is None:
        return None
    return account.payment_failed_at + timedelta(days=settings.BILLING_GRACE_PERIOD_DAYS)


def _as_datetime(value: date | datetime) -> datetime:
    """Dates are UTC midnights; billing months are calendar months in UTC."""
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else value.replace(tzinfo=UTC)
    return datetime.combine(value, time.min, tzinfo=UTC)


def _cents(amount: Decimal) -> Decimal:
    """Stripe bills each line in whole cents; so does the statement."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class StatementLine:
    images: int
    amount: Decimal  # dollars, rounded to cents like the Stripe invoice line


@dataclass(frozen=True)
class KeyLine:
    api_key_id: str | None
    name: str
    images: int
    amount: Decimal


@dataclass(frozen=True)
class Statement:
    organization: Organization
    period_start: datetime
    period_end: datetime  # exclusive
    currency: str
    by_tier: dict[str, StatementLine]
    by_key: list[KeyLine]
    images: int
    amount: Decimal


def organization_statement(
    *, organization: Organization, period_start: date | datetime, period_end: date | datetime
) -> Statement:
    """Live (billable) usage in [period_start, period_end): images and amount by tier and by key.

    Per-tier amounts are rounded to cents per line, as Stripe rounds each metered line of an invoice,
    so the total is the number Stripe will invoice for the same usage (when the meter events went out
    and the plan's prices did not change inside the period).
    """
    start, end = _as_datetime(period_start), _as_datetime(period_end)
    rows = UsageRecord.objects.for_org(organization).filter(
        livemode=True, created_at__gte=start, created_at__lt=end
    )
    by_tier = {tier: StatementLine(images=0, amount=ZERO.quantize(CENT)) for tier in ALL_TIERS}
    for row in rows.values("billed_tier").annotate(images=Count("id"), amount=Sum("amount")):
        by_tier[row["billed_tier"]] = StatementLine(
            images=row["images"], amount=_cents(row["amount"] or ZERO)
        )
    by_key = [
        KeyLine(
            api_key_id=row["api_key__public_id"],
            name=row["api_key__name"] or "(deleted key)",
            images=row["images"],
            amount=_cents(row["amount"] or ZERO),
        )
        for row in rows.values("api_key__public_id", "api_key__name")
        .annotate(images=Count("id"), amount=Sum("amount"))
        .order_by("-images", "api_key__name")
    ]
    return Statement(
        organization=organization,
        period_start=start,
        period_end=end,
        currency=organization.plan.currency,
        by_tier=by_tier,
        by_key=by_key,
        images=sum(line.images for line in by_tier.values()),
        amount=sum((line.amount for line in by_tier.values()), ZERO.quantize(CENT)),
    )


@dataclass(frozen=True)
class InvoicePreview:
    statement: Statement
    base_amount: Decimal
    total: Decimal
    lines: list[tuple[str, int, Decimal]] = field(default_factory=list)  # (description, quantity, amount)


def organization_invoice_preview(
    *, organization: Organization, now: datetime | None = None
) -> InvoicePreview:
    """The next invoice as the ledger sees it so far: the plan's base price plus usage to date.

    The period is the subscription's current period when Stripe told us one, else the calendar month.
    """
    now = now or timezone.now()
    account = billing_account_get(organization=organization)
    if account and account.current_period_start and account.current_period_end:
        start, end = account.current_period_start, account.current_period_end
    else:
        month = billing_period_start(now)
        start, end = _as_datetime(month), _as_datetime(billing_period_end(month))
    statement = organization_statement(organization=organization, period_start=start, period_end=end)
    plan = organization.plan
    base = _cents(plan.base_price_monthly)
    lines: list[tuple[str, int, Decimal]] = []
    if base > 0:
        lines.append((f"{plan.name} plan", 1, base))
    for tier, line in statement.by_tier.items():
        if line.images:
            lines.append((f"{tier.capitalize()} images", line.images, line.amount))
    return InvoicePreview(statement=statement, base_amount=base, total=base + statement.amount, lines=lines)


def month_to_date_statement(*, organization: Organization, now: datetime | None = None) -> Statement:
    month = billing_period_start(now)
    return organization_statement(
        organization=organization, period_start=month, period_end=billing_period_end(month)
    )


@dataclass(frozen=True)
class UsageRow:
    day: date
    tier: str
    api_key_id: str | None
    api_key_name: str
    livemode: bool
    images: int
    amount: Decimal


# Usage queries end at the day after `end` and default to whole months: dates this late would
# overflow `date` (year 10000), so inputs after it are refused as invalid instead.
LATEST_USAGE_DATE = date(9998, 12, 31)


def organization_usage(*, organization: Organization, start: date, end: date) -> list[UsageRow]:
    """Images and amount per UTC day, billed tier and key, for start..end inclusive (live and test)."""
    rows = (
        UsageRecord.objects.for_org(organization)
        .filter(created_at__gte=_as_datetime(start), created_at__lt=_as_datetime(end + timedelta(days=1)))
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "billed_tier", "api_key__public_id", "api_key__name", "livemode")
        .annotate(images=Count("id"), amount=Sum("amount"))
        .order_by("day", "billed_tier", "api_key__public_id", "livemode")
    )
    return [
        UsageRow(
            day=row["day"],
            tier=row["billed_tier"],
            api_key_id=row["api_key__public_id"],
            api_key_name=row["api_key__name"] or "(deleted key)",
            livemode=row["livemode"],
            images=row["images"],
            amount=row["amount"] or ZERO,
        )
        for row in rows
    ]


def usage_overdue(*, now: datetime | None = None) -> QuerySet[UsageRecord]:
    """Billable usage still unreported after BILLING_OUTBOX_ALERT_AGE_DAYS: close to Stripe's 35-day limit."""
    now = now or timezone.now()
    return UsageRecord.objects.filter(
        report_status=UsageRecord.ReportStatus.PENDING,
        livemode=True,
        amount__gt=0,
        created_at__lt=now - timedelta(days=settings.BILLING_OUTBOX_ALERT_AGE_DAYS),
    )


@dataclass(frozen=True)
class OutboxStatus:
    """What the operator page shows about usage on its way to Stripe."""

    unconfirmed_images: int
    oldest_unconfirmed_at: datetime | None
    lag_seconds: float
    waiting_images: int  # no billable subscription yet
    reports_in_doubt: int
    reports_to_reconcile: int
    unreportable_images: int
    unreportable_amount: Decimal


def billing_outbox_status(*, now: datetime | None = None) -> OutboxStatus:
    """Two aggregate queries: one over the ledger rows not yet at Stripe, one over meter reports."""
    now = now or timezone.now()
    pending = Q(report_status=UsageRecord.ReportStatus.PENDING)
    billable = BillingAccount.objects.filter(
        subscription_status__in=BillingAccount.BILLABLE_STATUSES
    ).exclude(stripe_customer_id="")
    waiting = (
        pending & Q(meter_report__isnull=True) & ~Q(organization_id__in=billable.values("organization_id"))
    )
    failed = Q(report_status=UsageRecord.ReportStatus.FAILED)
    usage = UsageRecord.objects.filter(pending | failed, livemode=True, amount__gt=0).aggregate(
        images=Count("id", filter=pending),
        oldest=Min("created_at", filter=pending),
        waiting=Count("id", filter=waiting),
        failed_images=Count("id", filter=failed),
        failed_amount=Sum("amount", filter=failed),
    )
    reports = MeterReport.objects.filter(
        status__in=[MeterReport.Status.PENDING, MeterReport.Status.RECONCILE]
    ).aggregate(
        in_doubt=Count("id", filter=Q(status=MeterReport.Status.PENDING, in_doubt_since__isnull=False)),
        reconcile=Count("id", filter=Q(status=MeterReport.Status.RECONCILE)),
    )
    oldest = usage["oldest"]
    return OutboxStatus(
        unconfirmed_images=usage["images"],
        oldest_unconfirmed_at=oldest,
        lag_seconds=(now - oldest).total_seconds() if oldest else 0.0,
        waiting_images=usage["waiting"],
        reports_in_doubt=reports["in_doubt"],
        reports_to_reconcile=reports["reconcile"],
        unreportable_images=usage["failed_images"],
        unreportable_amount=usage["failed_amount"] or ZERO,
    )


def billing_alerts_open(*, limit: int = 50) -> list[BillingAlert]:
    return list(BillingAlert.objects.open().select_related("organization").order_by("-updated_at")[:limit])
