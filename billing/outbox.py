"""The meter-event outbox: reports each billable `UsageRecord` to Stripe as one meter event.

Invariants:
- A record is sent only while one worker holds its claim (`claim_token` + `claimed_until` lease).
  Claims are taken with `SELECT … FOR UPDATE SKIP LOCKED` (PostgreSQL) and a conditional UPDATE that
  only succeeds on unclaimed rows (every database, SQLite included), so two runs never claim the
  same row. A run starts a send only inside its time budget, and every send ends within twice the
  Stripe timeout (connect + read), so a run's sends all finish before its lease expires: no other
  run can send the row.
- The meter event `identifier` is the record's `public_id`. If Stripe accepted an event and we never
  heard back (timeout, crash), the retry gets "identifier already exists", which we record as sent.
  Idempotency keys are per attempt: Stripe replays a key's first response for 24 h, 500s included.
- Test-mode usage, zero amounts and organizations without a billable subscription are marked
  `skipped` and never scanned again. Usage near Stripe's 35-day timestamp limit raises an ERROR alert;
  usage past it is marked `failed` for an operator.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from billing import errors, stripe_client
from billing.models import BillingAccount, BillingMeter, UsageRecord
from billing.selectors import usage_overdue

logger = logging.getLogger(__name__)

Status = UsageRecord.ReportStatus
# Stripe accepts meter event timestamps up to 35 days in the past; stop an hour short of it.
STRIPE_TIMESTAMP_LIMIT = timedelta(days=35)
EXPIRY_MARGIN = timedelta(hours=1)
# Extra lease beyond budget + timeout, for clock differences between workers.
LEASE_MARGIN = timedelta(seconds=30)
ERROR_TEXT_LIMIT = 1000


@dataclass
class OutboxRunResult:
    configured: bool = True
    skipped: int = 0
    expired: int = 0
    overdue: int = 0
    claimed: int = 0
    sent: int = 0
    already_recorded: int = 0
    failed_attempts: int = 0
    released: int = 0
    first_error: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


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


def usage_mark_unreportable(*, now: datetime) -> int:
    """Mark what must never be sent, so it is not scanned again. Only unclaimed rows are touched."""
    pending = _pending().filter(_unclaimed(now))
    count = pending.filter(livemode=False).update(
        report_status=Status.SKIPPED, last_error="Test mode: never billed."
    )
    count += pending.filter(livemode=True, amount__lte=0).update(
        report_status=Status.SKIPPED, last_error="Zero amount: nothing to bill."
    )
    settled = now - timedelta(seconds=settings.BILLING_UNSUBSCRIBED_SETTLE_SECONDS)
    count += (
        pending.filter(livemode=True, amount__gt=0, created_at__lt=settled)
        .exclude(organization_id__in=_billable_organization_ids())
        .update(
            report_status=Status.SKIPPED,
            last_error="The organization had no billable Stripe subscription when this was reported.",
        )
    )
    return count


def usage_expire_and_alert(*, now: datetime) -> tuple[int, int]:
    """Fail usage Stripe would refuse (too old) and alert on usage getting close. Returns both counts."""
    limit = now - STRIPE_TIMESTAMP_LIMIT + EXPIRY_MARGIN
    expired = (
        _billable_pending()
        .filter(_unclaimed(now), created_at__lt=limit)
        .update(
            report_status=Status.FAILED,
            last_error="Older than Stripe's 35-day meter event limit; bill it by hand (invoice item).",
        )
    )
    if expired:
        logger.error(
            "billing outbox: %d usage record(s) passed Stripe's 35-day limit unreported and were marked "
            "failed; they must be invoiced by hand (admin: Usage records, report status 'failed')",
            expired,
        )
    overdue = usage_overdue(now=now).count()
    if overdue:
        logger.error(
            "billing outbox: %d usage record(s) unreported for more than %d days; Stripe refuses them after "
            "35 days (admin: Usage records, filter 'Outbox: approaching Stripe's limit')",
            overdue,
            settings.BILLING_OUTBOX_ALERT_AGE_DAYS,
        )
    return expired, overdue


def _claim(*, now: datetime, batch_size: int, lease: timedelta) -> tuple[str, list[UsageRecord]]:
    token = uuid.uuid4().hex
    with transaction.atomic():
        candidates = (
            _billable_pending()
            .filter(_unclaimed(now))
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .filter(organization_id__in=_billable_organization_ids())
            .order_by("id")
        )
        # PostgreSQL: rows another run is claiming are skipped, not waited for. SQLite has no row
        # locks (Django drops FOR UPDATE there); its write transactions are serialized instead.
        ids = list(
            candidates.select_for_update(skip_locked=True, of=("self",)).values_list("id", flat=True)[
                :batch_size
            ]
        )
        if not ids:
            return token, []
        # The conditional UPDATE is what makes a claim exclusive on every database.
        _pending().filter(_unclaimed(now), id__in=ids).update(claim_token=token, claimed_until=now + lease)
    records = list(
        UsageRecord.objects.filter(id__in=ids, claim_token=token)
        .select_related("organization__billing_account")
        .order_by("id")
    )
    return token, records


def _finish(record: UsageRecord, token: str, **fields) -> bool:
    updated = UsageRecord.objects.filter(pk=record.pk, claim_token=token).update(
        claim_token="", claimed_until=None, **fields
    )
    if not updated:  # pragma: no cover - only when a run overran its lease, which the budget prevents
        logger.warning("billing outbox: lost the claim on %s before recording its outcome", record.public_id)
    return bool(updated)


def _send(record: UsageRecord, token: str, meters: dict[str, BillingMeter], result: OutboxRunResult) -> None:
    attempt = record.report_attempts + 1
    customer_id = record.organization.billing_account.stripe_customer_id
    meter = meters.get(record.billed_tier)
    try:
        if meter is None:
            raise errors.PaymentProviderError(
                f"No Stripe meter for tier {record.billed_tier!r}; run `manage.py stripe_sync`."
            )
        stripe_client.meter_event_create(
            event_name=meter.event_name,
            stripe_customer_id=customer_id,
            value=1,  # one record is one delivered image
            identifier=record.public_id,
            timestamp=int(record.created_at.timestamp()),
            idempotency_key=f"imagegate-meter-event-{record.public_id}-{attempt}",
        )
    except errors.DuplicateMeterEvent:
        # Stripe already holds this identifier: an earlier attempt got through and we missed the answer.
        _finish(record, token, report_status=Status.SENT, reported_at=timezone.now(), last_error="")
        result.already_recorded += 1
    except errors.PaymentProviderError as exc:
        if not exc.retryable:  # Stripe refused it: worth a look per record (transient ones are summed up)
            logger.error(
                "billing outbox: Stripe refused %s (attempt %d): %s", record.public_id, attempt, exc.message
            )
        result.first_error = result.first_error or exc.message
        _finish(
            record,
            token,
            report_attempts=attempt,
            next_attempt_at=timezone.now() + retry_delay(attempt=attempt),
            last_error=exc.message[:ERROR_TEXT_LIMIT],
        )
        result.failed_attempts += 1
    else:
        _finish(record, token, report_status=Status.SENT, reported_at=timezone.now(), last_error="")
        result.sent += 1


def usage_outbox_process(*, batch_size: int | None = None, now: datetime | None = None) -> OutboxRunResult:
    """One run: mark what is not reportable, alert on what is getting old, claim a batch, send it."""
    if not stripe_client.is_configured():
        return OutboxRunResult(configured=False)
    started = time.monotonic()
    now = now or timezone.now()
    budget = float(settings.BILLING_OUTBOX_TIME_BUDGET_SECONDS)
    # A requests timeout bounds connect and read separately: one call ends within twice the timeout.
    lease = timedelta(seconds=budget + 2 * float(settings.STRIPE_TIMEOUT_SECONDS)) + LEASE_MARGIN
    result = OutboxRunResult()
    result.skipped = usage_mark_unreportable(now=now)
    result.expired, result.overdue = usage_expire_and_alert(now=now)
    token, records = _claim(now=now, batch_size=batch_size or settings.BILLING_OUTBOX_BATCH_SIZE, lease=lease)
    result.claimed = len(records)
    meters = {meter.tier: meter for meter in BillingMeter.objects.all()}
    for record in records:
        if time.monotonic() - started >= budget:
            break  # the rest is released below and picked up by the next run
        _send(record, token, meters, result)
    result.released = UsageRecord.objects.filter(claim_token=token, id__in=[r.id for r in records]).update(
        claim_token="", claimed_until=None
    )
    if result.failed_attempts:
        logger.warning(
            "billing outbox: %d of %d sends failed and will be retried with backoff; first error: %s",
            result.failed_attempts,
            result.claimed,
            result.first_error,
        )
    if result.claimed or result.skipped or result.expired:
        logger.info("billing outbox: %s", result.as_dict())
    return result
