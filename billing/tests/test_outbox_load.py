"""1,000 delivered images across 3 tenants are counted by Stripe exactly once, through a Stripe that
fails or times out 30 % of meter-event calls and then has a 30-hour outage, so that sends in doubt
outlive Stripe's 24 h identifier dedupe window and only reconciliation can tell what Stripe counted."""

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db.models import Min
from django.utils import timezone

from billing.models import MeterReport, UsageRecord
from billing.reconciliation import usage_reconcile
from billing.selectors import organization_statement
from billing.tasks import usage_outbox_task
from billing.tests.helpers import usage_record_create
from tenants import services as tenant_services
from tests.fake_stripe import activate_subscription

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
IMAGES = 1_000
ReportStatus = MeterReport.Status


@pytest.mark.django_db
def test_1000_images_are_counted_exactly_once_despite_failures_timeouts_and_an_outage(
    alice, charlie, stripe_catalog, settings, record_property
):
    fake = stripe_catalog
    settings.STRIPE_TIMEOUT_SECONDS = 0.25
    fake.meter_event_failure_rate = 0.22
    fake.meter_event_timeout_rate = 0.08
    fake.timeout_sleep_seconds = 0.4
    rng = random.Random(7)

    with time_machine.travel(NOW, tick=False) as clock:
        third = tenant_services.organization_create(name="Initech", plan=alice.organization.plan)
        organizations = [alice.organization, charlie.organization, third]
        customers = {org.pk: activate_subscription(org, org.plan).stripe_customer_id for org in organizations}
        records = [
            usage_record_create(
                organization=rng.choice(organizations),
                tier=rng.choices(["fast", "standard", "ultra"], weights=[6, 3, 1])[0],
                created_at=NOW - timedelta(seconds=rng.randint(60, 5 * 3600)),
                save=False,
            )
            for _ in range(IMAGES)
        ]
        UsageRecord.objects.bulk_create(records)
        started, runs = time.monotonic(), 0
        reconciled: Counter[str] = Counter()

        def run_outbox_and_reconcile():
            nonlocal runs
            runs += 1
            usage_outbox_task()
            result = usage_reconcile()
            reconciled.update(confirmed=result.confirmed_reports, resent=result.resent_reports)
            assert result.mismatches == 0

        for _ in range(3):  # a few minutes of a flaky Stripe
            run_outbox_and_reconcile()
            clock.shift(timedelta(minutes=1))
        fake.meter_event_failure_rate, fake.meter_event_timeout_rate = 1.0, 0.0
        for _ in range(30):  # then an outage of 30 hours, the schedule still running
            run_outbox_and_reconcile()
            clock.shift(timedelta(hours=1))
        fake.meter_event_failure_rate, fake.meter_event_timeout_rate = 0.22, 0.08
        unfinished = MeterReport.objects.exclude(status=ReportStatus.SENT)
        while unfinished.exists() or UsageRecord.objects.filter(meter_report__isnull=True).exists():
            assert runs < 400, "the outbox does not drain"
            run_outbox_and_reconcile()
            next_due = unfinished.filter(status=ReportStatus.PENDING).aggregate(next=Min("next_attempt_at"))[
                "next"
            ]
            clock.move_to(max(timezone.now() + timedelta(minutes=1), next_due or timezone.now()))
            if not unfinished.filter(status=ReportStatus.PENDING).exists():
                clock.shift(timedelta(hours=1))  # only reconciliation is left: it runs hourly
        fake.wait_idle()
        simulated = timezone.now() - NOW
        duration = time.monotonic() - started

    calls = fake.received("POST", "/v1/billing/meter_events")
    outcomes = Counter(call.outcome for call in calls)
    figures = {
        "meter_event_calls": len(calls),
        **{f"outcome_{name}": count for name, count in sorted(outcomes.items())},
        "reports": MeterReport.objects.count(),
        "reconciled_counted": reconciled["confirmed"],
        "reconciled_resent": reconciled["resent"],
        "runs": runs,
        "simulated_hours": int(simulated.total_seconds() // 3600),
        "seconds": round(duration, 2),
    }
    for name, value in figures.items():
        record_property(name, value)
    print("\n1,000-image outbox drain:", figures)

    # Every report was counted by Stripe exactly once, and every record is in exactly one report.
    reports = {r.public_id: r for r in MeterReport.objects.all()}
    counted = Counter(event["identifier"] for event in fake.meter_event_log)
    assert set(counted) == set(reports)
    assert set(counted.values()) == {1}
    assert all(
        Decimal(event["payload"]["value"]) == reports[event["identifier"]].value
        for event in fake.meter_event_log
    )
    assert sum(r.value for r in reports.values()) == IMAGES
    assert UsageRecord.objects.filter(report_status=UsageRecord.ReportStatus.SENT).count() == IMAGES
    # The scenario really exercised what it is about.
    assert outcomes["injected_500"] > 0.2 * len(calls)
    assert outcomes["timeout_before"] + outcomes["timeout_after"] > 0
    assert reconciled["confirmed"] > 0 and reconciled["resent"] > 0

    # What Stripe aggregates per customer and meter equals the ledger, and so does the money.
    ledger = Counter((customers[r.organization_id], f"imagegate_images_{r.billed_tier}") for r in records)
    assert fake.usage_by_customer() == {key: Decimal(count) for key, count in ledger.items()}
    prices = {
        p["recurring"]["meter"]: p for p in fake.prices.values() if p["recurring"]["usage_type"] == "metered"
    }
    meters = {m["event_name"]: m["id"] for m in fake.meters.values()}
    for org in organizations:
        statement = organization_statement(
            organization=org, period_start=NOW - timedelta(days=30), period_end=NOW + timedelta(days=1)
        )
        for tier, line in statement.by_tier.items():
            quantity = fake.usage_by_customer().get(
                (customers[org.pk], f"imagegate_images_{tier}"), Decimal(0)
            )
            cents = Decimal(prices[meters[f"imagegate_images_{tier}"]]["unit_amount_decimal"])
            assert line.images == quantity
            assert line.amount == (quantity * cents / 100).quantize(Decimal("0.01"))
