"""1,000 delivered images across 3 tenants reach Stripe exactly once, through a Stripe that fails 30 %
of meter-event calls with 500 and holds some answers past the client timeout."""

import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db.models import Min
from django.utils import timezone

from billing.models import UsageRecord
from billing.selectors import organization_statement
from billing.tasks import usage_outbox_task
from billing.tests.helpers import usage_record_create
from tenants import services as tenant_services
from tests.fake_stripe import activate_subscription

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
IMAGES = 1_000
ACCEPTED = {"accepted", "timeout_before", "timeout_after"}


@pytest.mark.django_db
def test_1000_images_reach_stripe_exactly_once_despite_failures_and_timeouts(
    alice, charlie, stripe_catalog, settings, record_property
):
    fake = stripe_catalog
    settings.STRIPE_TIMEOUT_SECONDS = 0.25
    settings.BILLING_OUTBOX_BATCH_SIZE = 200
    fake.meter_event_failure_rate = 0.30
    fake.meter_event_timeout_rate = 0.02
    fake.timeout_sleep_seconds = 0.6
    rng = random.Random(7)

    with time_machine.travel(NOW, tick=False) as clock:
        third = tenant_services.organization_create(name="Initech", plan=alice.organization.plan)
        organizations = [alice.organization, charlie.organization, third]
        customers = {org.pk: activate_subscription(org, org.plan).stripe_customer_id for org in organizations}
        records = [
            usage_record_create(
                organization=rng.choice(organizations),
                tier=rng.choices(["fast", "standard", "ultra"], weights=[6, 3, 1])[0],
                created_at=NOW - timedelta(seconds=rng.randint(60, 3 * 86400)),
                save=False,
            )
            for _ in range(IMAGES)
        ]
        UsageRecord.objects.bulk_create(records)

        # The schedule runs the task once a minute; between runs the frozen clock moves a minute on,
        # or straight to the next retry when everything left is backing off.
        started, runs = time.monotonic(), 0
        pending = UsageRecord.objects.filter(report_status=UsageRecord.ReportStatus.PENDING)
        while pending.exists():
            runs += 1
            assert runs < 100, "the outbox does not drain"
            usage_outbox_task()
            next_due = pending.aggregate(next=Min("next_attempt_at"))["next"]
            clock.move_to(max(timezone.now() + timedelta(minutes=1), next_due or NOW))
        simulated = timezone.now() - NOW
        fake.wait_idle()
        duration = time.monotonic() - started

    calls = fake.received("POST", "/v1/billing/meter_events")
    outcomes = Counter(call.outcome for call in calls)
    accepted = Counter(call.params["identifier"] for call in calls if call.outcome in ACCEPTED)
    figures = {
        "meter_event_calls": len(calls),
        **{f"outcome_{name}": count for name, count in sorted(outcomes.items())},
        "outbox_runs": runs,
        "simulated_minutes": int(simulated.total_seconds() // 60),
        "seconds": round(duration, 2),
    }
    for name, value in figures.items():
        record_property(name, value)
    print("\n1,000-image outbox drain:", figures)

    # Exactly one accepted event per usage record, by identifier.
    assert set(accepted) == {r.public_id for r in records}
    assert set(accepted.values()) == {1}
    assert set(fake.meter_events) == {r.public_id for r in records}
    assert outcomes["injected_500"] > 0.2 * IMAGES
    assert outcomes["timeout_before"] + outcomes["timeout_after"] > 0
    assert UsageRecord.objects.filter(report_status=UsageRecord.ReportStatus.SENT).count() == IMAGES

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
