"""The meter-event outbox: carries billable usage to Stripe as aggregated meter events.

Each step is safe to run in any number of processes at once:
1. Housekeeping. Test-mode and zero-amount usage is marked skipped. Usage of an organization with no
   billable subscription WAITS (it is never skipped): an operator alert is raised once it is
   BILLING_OUTBOX_WAITING_ALERT_DAYS old, and only usage past Stripe's 35-day backdating limit is
   marked failed, with an alert that carries its images and amount.
2. Aggregation. Pending usage of subscribed organizations is grouped per (organization, billed tier,
   UTC minute) into `MeterReport` rows, in the one transaction that also points each record at its
   report: a record is in exactly one report, and a report's value is the number of its records.
   Rows are locked with FOR UPDATE SKIP LOCKED (PostgreSQL; SQLite serializes writers) and assigned
   with a conditional UPDATE (`meter_report IS NULL`), so concurrent runs never double-assign.
3. Sending. Due reports are claimed (SKIP LOCKED + claim token + lease, as the per-record outbox did)
   and sent as one meter event each, `identifier` = report id, `value` = images. Success, or Stripe's
   "identifier already exists", confirms the report and all its records. An unknown outcome
   (timeout, 5xx, connection error) marks the report in doubt: it is retried with backoff only while
   Stripe's 24 h identifier dedupe still covers the first in-doubt attempt; after that it waits for
   reconciliation (`billing.reconciliation`), which reads Stripe's summaries instead of resending.
A run drains the backlog it finds (aggregate, send, repeat while batches come back full) within its
time budget; usage arriving meanwhile waits for the next run, so a minute travels in few events.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing import alerts, errors, stripe_client
from billing.models import BillingAccount, BillingAlert, BillingMeter, MeterReport, UsageRecord
from billing.selectors import usage_overdue

logger = logging.getLogger(__name__)

Status = UsageRecord.ReportStatus
ReportStatus = MeterReport.Status
Kind = BillingAlert.Kind
# Stripe accepts meter event timestamps up to 35 days in the past; stop an hour short of it.
STRIPE_TIMESTAMP_LIMIT = timedelta(days=35)
EXPIRY_MARGIN = timedelta(hours=1)
# Extra lease beyond budget + timeout, for clock differences between workers.
LEASE_MARGIN = timedelta(seconds=30)
ERROR_TEXT_LIMIT = 1000
# Ids per UPDATE … WHERE id IN (…): below SQLite's old 999-variable limit.
ID_CHUNK = 900
UNREPORTABLE_MESSAGE = "Older than Stripe's 35-day meter event limit; bill it by hand (invoice item)."


@dataclass
class OutboxRunResult:
    configured: bool = True
    skipped: int = 0
    expired: int = 0
    overdue: int = 0
    waiting: int = 0
    aggregated: int = 0
    reports_created: int = 0
    claimed: int = 0
    sent: int = 0
    already_recorded: int = 0
    failed_attempts: int = 0
    to_reconcile: int = 0
    released: int = 0
    images_confirmed: int = 0
    first_error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def bucket_start(moment: datetime) -> datetime:
    """The UTC minute a usage record is reported in (Stripe's summaries take minute-aligned ranges)."""
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def _unclaimed(now: datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def _pending() -> QuerySet[UsageRecord]:
    return UsageRecord.objects.filter(report_status=Status.PENDING)


def _billable_pending() -> QuerySet[UsageRecord]:
    return _pending().filter(livemode=True, amount__gt=0)


def _billable_organization_ids() -> QuerySet:
    return (
        BillingAccount.objects.filter(subscription_status__in=BillingAccount.BILLABLE_STATUSES)
        .exclude(stripe_customer_id="")
        .values("organization_id")
    )


def retry_delay(*, attempt: int) -> timedelta:
    """Exponential backoff with ±20 % jitter, capped, so a Stripe outage is not hammered in lockstep."""
    base = settings.BILLING_OUTBOX_RETRY_BASE_SECONDS * 2 ** min(attempt - 1, 30)
    seconds = min(base, settings.BILLING_OUTBOX_RETRY_MAX_SECONDS) * random.uniform(0.8, 1.2)
    return timedelta(seconds=min(seconds, settings.BILLING_OUTBOX_RETRY_MAX_SECONDS))


def _chunks(ids: list[int]):
    for index in range(0, len(ids), ID_CHUNK):
        yield ids[index : index + ID_CHUNK]


# --- 1. Housekeeping ----------------------------------------------------------------------------


def usage_mark_unreportable(*, now: datetime) -> int:
    """Mark what must never be billed (test mode, zero amounts), so it is not scanned again.

    Usage of an organization without a billable subscription is NOT marked: it waits for one."""
    pending = _pending().filter(meter_report__isnull=True)
    count = pending.filter(livemode=False).update(
        report_status=Status.SKIPPED, last_error="Test mode: never billed."
    )
    count += pending.filter(livemode=True, amount__lte=0).update(
        report_status=Status.SKIPPED, last_error="Zero amount: nothing to bill."
    )
    return count


def _by_organization(queryset: QuerySet[UsageRecord]) -> dict[int, tuple[int, Decimal]]:
    return {
        row["organization_id"]: (row["images"], row["amount"] or Decimal(0))
        for row in queryset.values("organization_id").annotate(images=Count("id"), amount=Sum("amount"))
    }


def _expire_usage(*, limit: datetime) -> int:
    """Usage never put in a report and now too old for Stripe: failed, with its amount on an alert."""
    with transaction.atomic():
        ids = list(
            _billable_pending()
            .filter(meter_report__isnull=True, created_at__lt=limit)
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("id", flat=True)
        )
        expired = 0
        for chunk in _chunks(ids):
            expired += (
                _pending()
                .filter(id__in=chunk, meter_report__isnull=True)
                .update(report_status=Status.FAILED, last_error=UNREPORTABLE_MESSAGE)
            )
        totals = _by_organization(UsageRecord.objects.filter(id__in=ids, report_status=Status.FAILED))
        for organization_id, (images, amount) in totals.items():
            alerts.billing_alert_raise(
                kind=Kind.USAGE_UNREPORTABLE,
                organization_id=organization_id,
                images=images,
                amount=amount,
                accumulate=True,
                message=(
                    "Usage passed Stripe's 35-day backdating limit before it could be reported; "
                    "invoice it by hand (admin: Usage records, report status 'Unreportable')."
                ),
            )
    return expired


def _expire_reports(*, limit: datetime, now: datetime) -> int:
    """Reports whose minute is now too old for Stripe (a long outage): failed, records too, alerted."""
    expired = 0
    stale = MeterReport.objects.filter(status=ReportStatus.PENDING, bucket_start__lt=limit).filter(
        _unclaimed(now)
    )
    for report in stale:
        with transaction.atomic():
            if not MeterReport.objects.filter(
                _unclaimed(now), pk=report.pk, status=ReportStatus.PENDING
            ).update(status=ReportStatus.FAILED, last_error=UNREPORTABLE_MESSAGE):
                continue
            _records_fail(report)
        expired += report.value
    return expired


def _records_fail(report: MeterReport) -> None:
    UsageRecord.objects.filter(meter_report=report, report_status=Status.PENDING).update(
        report_status=Status.FAILED, last_error=UNREPORTABLE_MESSAGE
    )
    alerts.billing_alert_raise(
        kind=Kind.USAGE_UNREPORTABLE,
        organization_id=report.organization_id,
        images=report.value,
        amount=report.amount,
        accumulate=True,
        message=(
            f"Meter report {report.public_id} could not reach Stripe within its 35-day backdating limit; "
            "invoice it by hand (admin: Usage records, report status 'Unreportable')."
        ),
    )


def usage_expire_and_alert(*, now: datetime) -> tuple[int, int, int]:
    """Fail what Stripe would refuse (too old), and keep the 'overdue' and 'waiting for a
    subscription' alerts current. Returns (images expired, images overdue, images waiting)."""
    limit = now - STRIPE_TIMESTAMP_LIMIT + EXPIRY_MARGIN
    expired = _expire_usage(limit=limit) + _expire_reports(limit=limit, now=now)
    if expired:
        logger.error(
            "billing outbox: %d image(s) passed Stripe's 35-day limit unreported and were marked "
            "unreportable; they must be invoiced by hand (admin: Billing alerts)",
            expired,
        )
    overdue = _by_organization(usage_overdue(now=now))
    for organization_id, (images, amount) in overdue.items():
        alerts.billing_alert_raise(
            kind=Kind.USAGE_OVERDUE,
            organization_id=organization_id,
            images=images,
            amount=amount,
            message=(
                f"Usage unreported for more than {settings.BILLING_OUTBOX_ALERT_AGE_DAYS} days; Stripe "
                "refuses it after 35 days (admin: Billing alerts and Usage records, filter 'Outbox')."
            ),
        )
    alerts.billing_alerts_resolve(kind=Kind.USAGE_OVERDUE, keep_organization_ids=set(overdue))
    waiting = _by_organization(
        _billable_pending()
        .filter(
            meter_report__isnull=True,
            created_at__lt=now - timedelta(days=settings.BILLING_OUTBOX_WAITING_ALERT_DAYS),
        )
        .exclude(organization_id__in=_billable_organization_ids())
    )
    for organization_id, (images, amount) in waiting.items():
        alerts.billing_alert_raise(
            kind=Kind.USAGE_WAITING,
            organization_id=organization_id,
            images=images,
            amount=amount,
            message=(
                f"Live usage has waited more than {settings.BILLING_OUTBOX_WAITING_ALERT_DAYS} days for a "
                "billable Stripe subscription. It is reported as soon as one exists, and becomes "
                "unreportable 35 days after it was generated."
            ),
        )
    alerts.billing_alerts_resolve(kind=Kind.USAGE_WAITING, keep_organization_ids=set(waiting))
    if overdue:
        logger.error(
            "billing outbox: %d image(s) unreported for more than %d days (admin: Billing alerts)",
            sum(images for images, _ in overdue.values()),
            settings.BILLING_OUTBOX_ALERT_AGE_DAYS,
        )
    return (
        expired,
        sum(images for images, _ in overdue.values()),
        sum(images for images, _ in waiting.values()),
    )


# --- 2. Aggregation -----------------------------------------------------------------------------


def usage_aggregate(*, limit: int) -> tuple[int, int]:
    """Put up to `limit` reportable usage records into meter reports. Returns (records, reports)."""
    with transaction.atomic():
        rows = list(
            _billable_pending()
            .filter(meter_report__isnull=True, organization_id__in=_billable_organization_ids())
            .order_by("id")
            # PostgreSQL: rows another aggregator holds are skipped, not waited for. SQLite has no row
            # locks (Django drops FOR UPDATE there); its write transactions are serialized instead.
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("id", "organization_id", "billed_tier", "created_at", "amount", "currency")[:limit]
        )
        if not rows:
            return 0, 0
        customers = dict(
            BillingAccount.objects.filter(organization_id__in={row[1] for row in rows}).values_list(
                "organization_id", "stripe_customer_id"
            )
        )
        groups: dict[tuple, list[int]] = defaultdict(list)
        amounts: dict[tuple, Decimal] = defaultdict(Decimal)
        for record_id, organization_id, tier, created_at, amount, currency in rows:
            key = (organization_id, tier, bucket_start(created_at), currency)
            groups[key].append(record_id)
            amounts[key] += amount
        reports = [
            MeterReport(
                organization_id=organization_id,
                stripe_customer_id=customers[organization_id],
                tier=tier,
                bucket_start=bucket,
                currency=currency,
                value=len(groups[key]),
                amount=amounts[key],
            )
            for key in groups
            for organization_id, tier, bucket, currency in [key]
        ]
        MeterReport.objects.bulk_create(reports)
        pks = dict(
            MeterReport.objects.filter(public_id__in=[r.public_id for r in reports]).values_list(
                "public_id", "pk"
            )
        )
        for report, key in zip(reports, groups, strict=True):
            assigned = 0
            for chunk in _chunks(groups[key]):
                assigned += (
                    _pending()
                    .filter(id__in=chunk, meter_report__isnull=True)
                    .update(meter_report_id=pks[report.public_id])
                )
            if assigned != report.value:  # pragma: no cover - the row locks make this impossible
                raise RuntimeError(
                    f"meter report {report.public_id}: {assigned} of {report.value} records assigned"
                )
    return len(rows), len(reports)


# --- 3. Sending ---------------------------------------------------------------------------------


def _claim(*, now: datetime, batch_size: int, lease: timedelta) -> tuple[str, list[MeterReport]]:
    token = uuid.uuid4().hex
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    with transaction.atomic():
        ids = list(
            MeterReport.objects.filter(due, status=ReportStatus.PENDING)
            .filter(_unclaimed(now))
            .order_by("id")
            .select_for_update(skip_locked=True)
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            return token, []
        # The conditional UPDATE is what makes a claim exclusive on every database.
        MeterReport.objects.filter(_unclaimed(now), id__in=ids, status=ReportStatus.PENDING).update(
            claim_token=token, claimed_until=now + lease
        )
    return token, list(MeterReport.objects.filter(id__in=ids, claim_token=token).order_by("id"))


def _finish(report: MeterReport, token: str, **fields) -> bool:
    updated = MeterReport.objects.filter(pk=report.pk, claim_token=token).update(
        claim_token="", claimed_until=None, **fields
    )
    if not updated:  # pragma: no cover - only when a run overran its lease, which the budget prevents
        logger.warning("billing outbox: lost the claim on %s before recording its outcome", report.public_id)
    return bool(updated)


def meter_report_confirm(
    *, report: MeterReport, confirmation: str, claim_token: str | None = None, **fields
) -> bool:
    """Stripe has the report's event: confirm it and mark its usage records sent, all at once."""
    now = timezone.now()
    with transaction.atomic():
        reports = MeterReport.objects.filter(pk=report.pk).exclude(status=ReportStatus.SENT)
        if claim_token is not None:
            reports = reports.filter(claim_token=claim_token)
        if not reports.update(
            status=ReportStatus.SENT,
            confirmed_at=now,
            confirmation=confirmation,
            last_error="",
            claim_token="",
            claimed_until=None,
            **fields,
        ):
            return False
        UsageRecord.objects.filter(meter_report=report).update(
            report_status=Status.SENT, reported_at=now, last_error=""
        )
    return True


def _send(report: MeterReport, token: str, meters: dict[str, BillingMeter], result: OutboxRunResult) -> None:
    now = timezone.now()
    resend_window = timedelta(hours=settings.BILLING_OUTBOX_RESEND_WINDOW_HOURS)
    if report.in_doubt_since is not None and now - report.in_doubt_since >= resend_window:
        # Stripe may already count it and would no longer recognise the identifier: never resend blind.
        _finish(
            report,
            token,
            status=ReportStatus.RECONCILE,
            last_error=(
                "In doubt since "
                f"{report.in_doubt_since:%Y-%m-%d %H:%M} UTC, past Stripe's identifier dedupe window: "
                "reconciliation decides from Stripe's event summaries whether it was counted."
            ),
        )
        result.to_reconcile += 1
        return
    attempt = report.attempts + 1
    meter = meters.get(report.tier)
    sent_fields = (
        {
            "event_name": meter.event_name,
            "stripe_meter_id": meter.stripe_meter_id,
            "first_sent_at": Coalesce(F("first_sent_at"), now),
        }
        if meter is not None
        else {}
    )
    try:
        if meter is None:
            raise errors.PaymentProviderRejected(
                f"No Stripe meter for tier {report.tier!r}; run `manage.py stripe_sync`."
            )
        stripe_client.meter_event_create(
            event_name=meter.event_name,
            stripe_customer_id=report.stripe_customer_id,
            value=report.value,
            identifier=report.public_id,
            timestamp=int(report.bucket_start.timestamp()),
            idempotency_key=f"imagegate-meter-report-{report.public_id}-{attempt}",
        )
    except errors.DuplicateMeterEvent:
        # Stripe already holds this identifier: an earlier attempt got through and we missed the answer.
        if meter_report_confirm(report=report, confirmation="duplicate", claim_token=token, **sent_fields):
            result.already_recorded += 1
            result.images_confirmed += report.value
    except errors.PaymentProviderError as exc:
        if not exc.retryable:  # Stripe refused it: worth a look per report (transient ones are summed up)
            logger.error(
                "billing outbox: Stripe refused %s (attempt %d): %s", report.public_id, attempt, exc.message
            )
        result.first_error = result.first_error or exc.message
        fields = dict(
            attempts=attempt,
            next_attempt_at=timezone.now() + retry_delay(attempt=attempt),
            last_error=exc.message[:ERROR_TEXT_LIMIT],
            **sent_fields,
        )
        if exc.retryable and meter is not None:
            # Timeout, 5xx or connection error: Stripe may have counted it.
            fields["in_doubt_since"] = report.in_doubt_since or now
        if exc.stripe_code == "timestamp_too_far_in_past" and report.in_doubt_since is None:
            with transaction.atomic():
                if _finish(report, token, status=ReportStatus.FAILED, **fields):
                    _records_fail(report)
            result.expired += report.value
        else:
            _finish(report, token, **fields)
        result.failed_attempts += 1
    else:
        if meter_report_confirm(report=report, confirmation="accepted", claim_token=token, **sent_fields):
            result.sent += 1
            result.images_confirmed += report.value


def _send_due(
    *, result: OutboxRunResult, batch_size: int, lease: timedelta, started: float, budget: float
) -> int:
    token, reports = _claim(now=timezone.now(), batch_size=batch_size, lease=lease)
    result.claimed += len(reports)
    meters = {meter.tier: meter for meter in BillingMeter.objects.all()}
    for report in reports:
        if time.monotonic() - started >= budget:
            break  # the rest is released below and picked up by the next run
        _send(report, token, meters, result)
    result.released += MeterReport.objects.filter(claim_token=token, id__in=[r.id for r in reports]).update(
        claim_token="", claimed_until=None
    )
    return len(reports)


def usage_outbox_process(*, batch_size: int | None = None) -> OutboxRunResult:
    """One run: housekeeping and alerts, then aggregate and send until nothing is due or the time
    budget is spent."""
    if not stripe_client.is_configured():
        return OutboxRunResult(configured=False)
    started = time.monotonic()
    now = timezone.now()
    budget = float(settings.BILLING_OUTBOX_TIME_BUDGET_SECONDS)
    # A requests timeout bounds connect and read separately: one call ends within twice the timeout.
    lease = timedelta(seconds=budget + 2 * float(settings.STRIPE_TIMEOUT_SECONDS)) + LEASE_MARGIN
    result = OutboxRunResult()
    result.skipped = usage_mark_unreportable(now=now)
    result.expired, result.overdue, result.waiting = usage_expire_and_alert(now=now)
    batch_size = batch_size or settings.BILLING_OUTBOX_BATCH_SIZE
    aggregate_limit = settings.BILLING_OUTBOX_AGGREGATE_BATCH_SIZE
    while time.monotonic() - started < budget:
        records, reports = usage_aggregate(limit=aggregate_limit)
        result.aggregated += records
        result.reports_created += reports
        claimed = _send_due(result=result, batch_size=batch_size, lease=lease, started=started, budget=budget)
        # Go on only while a backlog is left (a full batch either way). Usage that arrived during this
        # pass waits for the next run, so a minute's images travel in one event, not in one per pass.
        if records < aggregate_limit and claimed < batch_size:
            break
    if result.failed_attempts:
        logger.warning(
            "billing outbox: %d of %d sends failed and will be retried with backoff; first error: %s",
            result.failed_attempts,
            result.claimed,
            result.first_error,
        )
    if result.claimed or result.skipped or result.expired or result.aggregated:
        logger.info("billing outbox: %s", result.as_dict())
    return result
