"""Reconciliation: our meter reports against Stripe's meter event summaries.

Two jobs, run by a scheduled task (hourly):
1. Resolve in-doubt reports. A report whose send had an unknown outcome and whose first in-doubt
   attempt is older than Stripe's identifier dedupe window is never resent blind (a resend could
   count twice). For its (customer, meter, minute) we read Stripe's summary, subtract what we know
   Stripe has (confirmed reports), and find which in-doubt reports make up the rest: those are
   confirmed without a resend, the others go back to the outbox (Stripe does not have them). A
   difference no combination explains raises an alert and leaves the reports for an operator.
   A minute is only decided when nothing in it can change under us: no report of it is still
   pending in the outbox, none was confirmed less than BILLING_RECONCILE_SETTLE_SECONDS ago (Stripe's
   summaries lag), and the reports are re-read after Stripe answered.
2. Audit. Per customer, meter and UTC day of the last BILLING_RECONCILE_DAYS days (up to an hour
   boundary at least BILLING_RECONCILE_SETTLE_SECONDS ago), Stripe's total must lie between what we
   know it has and that plus what is in doubt; otherwise a `reconciliation_mismatch` alert is
   raised (and resolved again once the figures agree).
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing import alerts, errors, stripe_client
from billing.models import BillingAlert, BillingMeter, MeterReport
from billing.outbox import meter_report_confirm

logger = logging.getLogger(__name__)

ReportStatus = MeterReport.Status
Kind = BillingAlert.Kind
MINUTE = timedelta(minutes=1)
# In-doubt reports of one minute whose combinations we try; more than this is an operator's call.
MAX_SUBSET_SIZE = 12


@dataclass
class ReconcileResult:
    configured: bool = True
    buckets_checked: int = 0
    buckets_deferred: int = 0
    confirmed_reports: int = 0
    resent_reports: int = 0
    periods_audited: int = 0
    mismatches: int = 0
    errors: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _subset_with_sum(reports: list[MeterReport], target: int) -> list[MeterReport] | None:
    """In-doubt reports whose values add up to what Stripe has beyond the confirmed ones."""
    if target == 0:
        return []
    if target < 0 or len(reports) > MAX_SUBSET_SIZE:
        return None
    for size in range(1, len(reports) + 1):
        for combination in itertools.combinations(reports, size):
            if sum(r.value for r in combination) == target:
                return list(combination)
    return None


def _snapshot(customer: str, tier: str, bucket: datetime) -> list[tuple[int, str, int]]:
    return sorted(
        MeterReport.objects.filter(stripe_customer_id=customer, tier=tier, bucket_start=bucket).values_list(
            "pk", "status", "value"
        )
    )


def _meter_id(reports: list[MeterReport]) -> str:
    for report in reports:
        if report.stripe_meter_id:
            return report.stripe_meter_id
    meter = BillingMeter.objects.filter(tier=reports[0].tier).first()
    return meter.stripe_meter_id if meter else ""


def meter_reports_resolve_bucket(*, customer: str, tier: str, bucket: datetime, now: datetime) -> str:
    """Decide the in-doubt reports of one minute. Returns what happened (for the result counters)."""
    reports = list(MeterReport.objects.filter(stripe_customer_id=customer, tier=tier, bucket_start=bucket))
    settle = timedelta(seconds=settings.BILLING_RECONCILE_SETTLE_SECONDS)
    if any(r.status == ReportStatus.PENDING for r in reports) or any(
        r.status == ReportStatus.SENT and r.confirmed_at and r.confirmed_at > now - settle for r in reports
    ):
        return "deferred"
    doubt = [r for r in reports if r.status == ReportStatus.RECONCILE]
    if not doubt:
        return "nothing"
    before = _snapshot(customer, tier, bucket)
    stripe_value = stripe_client.meter_event_summary(
        meter_id=_meter_id(reports),
        customer_id=customer,
        start_time=int(bucket.timestamp()),
        end_time=int((bucket + MINUTE).timestamp()),
    )
    if _snapshot(customer, tier, bucket) != before:
        return "deferred"
    confirmed = sum(r.value for r in reports if r.status == ReportStatus.SENT)
    counted = _subset_with_sum(doubt, stripe_value - confirmed)
    organization_id = doubt[0].organization_id
    if counted is None:
        alerts.billing_alert_raise(
            kind=Kind.RECONCILIATION_MISMATCH,
            organization_id=organization_id,
            tier=tier,
            period_start=bucket,
            period_end=bucket + MINUTE,
            images=sum(r.value for r in doubt),
            amount=sum((r.amount for r in doubt), start=doubt[0].amount * 0),
            ledger_value=confirmed,
            stripe_value=stripe_value,
            message=(
                f"Stripe counts {stripe_value} {tier} image(s) for {customer} in the minute "
                f"{bucket:%Y-%m-%d %H:%M} UTC; we know of {confirmed} confirmed and "
                f"{sum(r.value for r in doubt)} in doubt ({', '.join(r.public_id for r in doubt)}), and no "
                "combination of them explains it. The reports wait for an operator (admin: Meter reports)."
            ),
        )
        return "mismatch"
    resend = [r for r in doubt if r not in counted]
    with transaction.atomic():
        for report in counted:
            meter_report_confirm(report=report, confirmation="reconciled")
        for report in resend:
            MeterReport.objects.filter(pk=report.pk, status=ReportStatus.RECONCILE).update(
                status=ReportStatus.PENDING,
                in_doubt_since=None,
                next_attempt_at=None,
                last_error="Reconciled: Stripe had not counted it, so it is sent again.",
            )
    logger.warning(
        "billing reconciliation: %s %s %s: %d report(s) Stripe had counted, %d resent",
        customer,
        tier,
        bucket.isoformat(),
        len(counted),
        len(resend),
    )
    return f"confirmed:{len(counted)}:resent:{len(resend)}"


def _audit(*, now: datetime, result: ReconcileResult) -> None:
    settle = timedelta(seconds=settings.BILLING_RECONCILE_SETTLE_SECONDS)
    window_end = (now - settle).replace(minute=0, second=0, microsecond=0)
    first_day = (window_end - timedelta(days=settings.BILLING_RECONCILE_DAYS)).replace(hour=0)
    reports = MeterReport.objects.filter(bucket_start__gte=first_day, bucket_start__lt=window_end).exclude(
        status=ReportStatus.FAILED
    )
    # (organization, customer, tier, day) -> [known to Stripe, maybe at Stripe, meter id]
    periods: dict[tuple, list] = defaultdict(lambda: [0, 0, ""])
    for report in reports.only(
        "organization_id",
        "stripe_customer_id",
        "tier",
        "bucket_start",
        "status",
        "value",
        "in_doubt_since",
        "confirmed_at",
        "stripe_meter_id",
        "first_sent_at",
    ):
        day = report.bucket_start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        entry = periods[(report.organization_id, report.stripe_customer_id, report.tier, day)]
        entry[2] = entry[2] or report.stripe_meter_id
        recently = report.confirmed_at is not None and report.confirmed_at > now - settle
        if report.status == ReportStatus.SENT and not recently:
            entry[0] += report.value
        elif report.status == ReportStatus.SENT or report.in_doubt_since is not None:
            entry[1] += report.value
    meters = dict(BillingMeter.objects.values_list("tier", "stripe_meter_id"))
    for (organization_id, customer, tier, day), (known, maybe, meter_id) in sorted(periods.items()):
        meter_id = meter_id or meters.get(tier, "")
        if not meter_id or (known == 0 and maybe == 0):
            continue  # nothing was ever sent for it
        end = min(day + timedelta(days=1), window_end)
        stripe_value = stripe_client.meter_event_summary(
            meter_id=meter_id,
            customer_id=customer,
            start_time=int(day.timestamp()),
            end_time=int(end.timestamp()),
        )
        result.periods_audited += 1
        if known <= stripe_value <= known + maybe:
            alerts.billing_alerts_resolve(
                kind=Kind.RECONCILIATION_MISMATCH,
                organization_id=organization_id,
                tier=tier,
                period_start=day,
            )
            continue
        result.mismatches += 1
        alerts.billing_alert_raise(
            kind=Kind.RECONCILIATION_MISMATCH,
            organization_id=organization_id,
            tier=tier,
            period_start=day,
            period_end=end,
            images=abs(stripe_value - known),
            ledger_value=known,
            stripe_value=stripe_value,
            message=(
                f"Stripe counts {stripe_value} {tier} image(s) for {customer} from {day:%Y-%m-%d %H:%M} to "
                f"{end:%Y-%m-%d %H:%M} UTC; our ledger has {known} confirmed"
                + (f" and {maybe} in doubt or just confirmed" if maybe else "")
                + ". Compare the meter reports of that period (admin: Meter reports) with Stripe's meter."
            ),
        )
        logger.error(
            "billing reconciliation: %s %s %s: ledger %d, Stripe %d", customer, tier, day, known, stripe_value
        )


def usage_reconcile(*, now: datetime | None = None) -> ReconcileResult:
    """Resolve in-doubt reports past the dedupe window, then audit recent days against Stripe."""
    if not stripe_client.is_configured():
        return ReconcileResult(configured=False)
    now = now or timezone.now()
    result = ReconcileResult()
    buckets = (
        MeterReport.objects.filter(status=ReportStatus.RECONCILE)
        .values_list("stripe_customer_id", "tier", "bucket_start")
        .distinct()
        .order_by("bucket_start")
    )
    for customer, tier, bucket in list(buckets):
        try:
            outcome = meter_reports_resolve_bucket(customer=customer, tier=tier, bucket=bucket, now=now)
        except errors.PaymentProviderError as exc:
            result.errors += 1
            logger.warning("billing reconciliation: %s %s %s: %s", customer, tier, bucket, exc.message)
            continue
        result.buckets_checked += 1
        if outcome == "deferred":
            result.buckets_deferred += 1
        elif outcome == "mismatch":
            result.mismatches += 1
        elif outcome.startswith("confirmed:"):
            _, confirmed, _, resent = outcome.split(":")
            result.confirmed_reports += int(confirmed)
            result.resent_reports += int(resent)
    try:
        _audit(now=now, result=result)
    except errors.PaymentProviderError as exc:
        result.errors += 1
        logger.warning("billing reconciliation: audit stopped: %s", exc.message)
    if result.buckets_checked or result.mismatches or result.errors:
        logger.info("billing reconciliation: %s", result.as_dict())
    return result
