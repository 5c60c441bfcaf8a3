import logging
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from billing.models import BillingMeter, UsageRecord
from billing.outbox import usage_outbox_process
from billing.tasks import usage_outbox_task
from billing.tests.helpers import usage_record_create
from tenants import services as tenant_services
from tests.fake_stripe import activate_subscription

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
Status = UsageRecord.ReportStatus


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def subscribed(alice, stripe_catalog, clock):
    """alice's organization with a customer in the fake Stripe and an active Pro subscription."""
    return activate_subscription(alice.organization, alice.organization.plan)


def meter_event_calls(fake):
    return fake.received("POST", "/v1/billing/meter_events")


def test_billable_usage_is_sent_once_with_its_identifier_tier_and_delivery_time(
    alice, subscribed, stripe_catalog
):
    delivered = NOW - timedelta(hours=3)
    record = usage_record_create(
        organization=alice.organization, api_key=alice.live_key, tier="standard", created_at=delivered
    )

    result = usage_outbox_task()

    assert result["sent"] == 1
    event = stripe_catalog.meter_events[record.public_id]
    assert event["event_name"] == "imagegate_images_standard"
    assert event["payload"] == {"stripe_customer_id": subscribed.stripe_customer_id, "value": "1"}
    assert event["timestamp"] == int(delivered.timestamp())
    record.refresh_from_db()
    assert (record.report_status, record.reported_at, record.claim_token) == (Status.SENT, NOW, "")

    assert usage_outbox_task()["sent"] == 0
    assert len(meter_event_calls(stripe_catalog)) == 1


def test_test_mode_zero_amount_and_unsubscribed_usage_are_never_sent(
    alice, charlie, subscribed, stripe_catalog
):
    org = alice.organization
    test_mode = usage_record_create(organization=org, api_key=alice.key, livemode=False)
    free = usage_record_create(organization=org, api_key=alice.live_key, unit_price=Decimal(0))
    old = NOW - timedelta(hours=1)
    unsubscribed = usage_record_create(organization=charlie.organization, created_at=old)
    just_now = usage_record_create(organization=charlie.organization, created_at=NOW - timedelta(seconds=30))

    result = usage_outbox_process()

    assert result.sent == 0 and result.skipped == 3
    assert meter_event_calls(stripe_catalog) == []
    for record, reason in ((test_mode, "Test mode"), (free, "Zero amount"), (unsubscribed, "no billable")):
        record.refresh_from_db()
        assert record.report_status == Status.SKIPPED
        assert reason in record.last_error
    # Too young to decide: its organization's subscription webhook may still be on its way.
    just_now.refresh_from_db()
    assert just_now.report_status == Status.PENDING
    assert usage_outbox_process().skipped == 0


def test_usage_of_an_organization_whose_subscription_ended_is_not_sent(
    alice, subscribed, stripe_catalog, clock
):
    from billing import services
    from tests.fake_stripe import stripe_event, subscription_object

    services.stripe_event_process(
        event=stripe_event(
            "customer.subscription.deleted",
            subscription_object(
                customer=subscribed.stripe_customer_id,
                price_ids=[],
                status="canceled",
                subscription_id=subscribed.stripe_subscription_id,
            ),
        )
    )
    record = usage_record_create(organization=alice.organization, created_at=NOW - timedelta(hours=1))

    usage_outbox_process()

    record.refresh_from_db()
    assert record.report_status == Status.SKIPPED
    assert meter_event_calls(stripe_catalog) == []


def test_a_duplicate_identifier_at_stripe_counts_as_delivered(alice, subscribed, stripe_catalog):
    record = usage_record_create(organization=alice.organization)
    # Stripe already holds the event (an earlier attempt got through; its answer was lost).
    stripe_catalog.meter_events[record.public_id] = {
        "event_name": "imagegate_images_fast",
        "identifier": record.public_id,
        "payload": {"stripe_customer_id": subscribed.stripe_customer_id, "value": "1"},
        "timestamp": int(record.created_at.timestamp()),
    }

    result = usage_outbox_process()

    assert (result.sent, result.already_recorded) == (0, 1)
    assert meter_event_calls(stripe_catalog)[0].outcome == "duplicate"
    record.refresh_from_db()
    assert record.report_status == Status.SENT


def test_failures_back_off_and_each_attempt_uses_a_fresh_idempotency_key(
    alice, subscribed, stripe_catalog, clock
):
    """Stripe replays a key's saved 500 for 24 h, so a retry under the same key would never succeed."""
    record = usage_record_create(organization=alice.organization)
    stripe_catalog.meter_event_failure_rate = 1.0

    result = usage_outbox_process()

    assert result.failed_attempts == 1
    record.refresh_from_db()
    assert record.report_status == Status.PENDING and record.report_attempts == 1
    assert "Stripe" in record.last_error
    assert record.next_attempt_at is not None
    assert timedelta(seconds=24) <= record.next_attempt_at - NOW <= timedelta(seconds=36)
    assert usage_outbox_process().claimed == 0  # still backing off
    assert len(meter_event_calls(stripe_catalog)) == 1

    clock.move_to(record.next_attempt_at)
    usage_outbox_process()
    record.refresh_from_db()
    assert record.report_attempts == 2
    assert record.next_attempt_at is not None
    assert timedelta(seconds=48) <= record.next_attempt_at - timezone.now() <= timedelta(seconds=72)

    stripe_catalog.meter_event_failure_rate = 0.0
    clock.move_to(record.next_attempt_at)
    assert usage_outbox_process().sent == 1
    keys = [call.idempotency_key for call in meter_event_calls(stripe_catalog)]
    assert [call.outcome for call in meter_event_calls(stripe_catalog)] == [
        "injected_500",
        "injected_500",
        "accepted",
    ]
    assert len(set(keys)) == 3
    record.refresh_from_db()
    assert (record.report_status, record.last_error) == (Status.SENT, "")


def test_a_lost_answer_is_retried_and_recognized_as_delivered(
    alice, subscribed, stripe_catalog, clock, settings
):
    settings.STRIPE_TIMEOUT_SECONDS = 0.3
    stripe_catalog.meter_event_timeout_rate = 1.0
    stripe_catalog.timeout_mode = "after"  # Stripe records the event, the answer never arrives
    stripe_catalog.timeout_sleep_seconds = 1.0
    record = usage_record_create(organization=alice.organization)

    assert usage_outbox_process().failed_attempts == 1
    assert record.public_id in stripe_catalog.meter_events

    stripe_catalog.meter_event_timeout_rate = 0.0
    record.refresh_from_db()
    clock.move_to(record.next_attempt_at)
    result = usage_outbox_process()

    assert result.already_recorded == 1
    record.refresh_from_db()
    assert record.report_status == Status.SENT
    assert [c.outcome for c in meter_event_calls(stripe_catalog)] == ["timeout_after", "duplicate"]


def test_usage_near_stripes_35_day_limit_alerts_and_past_it_fails(alice, subscribed, stripe_catalog, caplog):
    stripe_catalog.meter_event_failure_rate = 1.0  # a long outage
    near = usage_record_create(organization=alice.organization, created_at=NOW - timedelta(days=31))
    past = usage_record_create(organization=alice.organization, created_at=NOW - timedelta(days=35))

    with caplog.at_level(logging.ERROR, logger="billing.outbox"):
        result = usage_outbox_process()

    assert (result.expired, result.overdue) == (1, 1)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("unreported for more than 30 days" in m for m in messages)
    assert any("passed Stripe's 35-day limit" in m for m in messages)
    past.refresh_from_db()
    near.refresh_from_db()
    assert past.report_status == Status.FAILED and "35-day" in past.last_error
    assert near.report_status == Status.PENDING
    assert {c.params["identifier"] for c in meter_event_calls(stripe_catalog)} == {near.public_id}


def test_a_tier_without_a_meter_waits_for_stripe_sync(alice, subscribed, stripe_catalog):
    BillingMeter.objects.filter(tier="ultra").delete()
    record = usage_record_create(organization=alice.organization, tier="ultra")

    assert usage_outbox_process().failed_attempts == 1

    record.refresh_from_db()
    assert record.report_status == Status.PENDING
    assert "stripe_sync" in record.last_error
    assert meter_event_calls(stripe_catalog) == []


def test_ledger_only_mode_sends_nothing(alice, settings, db):
    settings.STRIPE_SECRET_KEY = ""
    record = usage_record_create(organization=alice.organization)

    assert usage_outbox_task()["configured"] is False

    record.refresh_from_db()
    assert record.report_status == Status.PENDING


def test_a_run_stops_at_its_time_budget_and_releases_the_rest(alice, subscribed, stripe_catalog, settings):
    settings.BILLING_OUTBOX_TIME_BUDGET_SECONDS = 0.2
    stripe_catalog.meter_event_latency_seconds = 0.15
    for _ in range(5):
        usage_record_create(organization=alice.organization)

    result = usage_outbox_process()

    assert result.claimed == 5
    assert 1 <= result.sent < 5
    assert result.released == 5 - result.sent
    assert not UsageRecord.objects.exclude(claim_token="").exists()
    assert UsageRecord.objects.filter(report_status=Status.PENDING, claimed_until__isnull=True).count() == (
        5 - result.sent
    )


# Committed data (the threads have their own connections), so a transactional test.
@pytest.mark.django_db(transaction=True)
def test_two_workers_running_at_once_never_send_the_same_record(settings, pro_plan):
    """Two outbox runs in parallel threads (each with its own database connection) share the work."""
    from billing.catalog import stripe_catalog_sync
    from fakes.stripe_server import FakeStripe
    from tests.fake_stripe import SECRET_KEY

    fake = FakeStripe()
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_API_BASE = fake.start()
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    fake.meter_event_latency_seconds = 0.005  # keep both workers busy at the same time
    try:
        stripe_catalog_sync()
        organization = tenant_services.organization_create(name="Parallel", plan=pro_plan)
        activate_subscription(organization, pro_plan)
        records = [usage_record_create(organization=organization, save=False) for _ in range(240)]
        UsageRecord.objects.bulk_create(records)
        barrier = threading.Barrier(2)
        sent_by_worker, failures = {0: 0, 1: 0}, []

        def worker(number):
            try:
                barrier.wait()
                while True:
                    result = usage_outbox_process(batch_size=40)
                    sent_by_worker[number] += result.sent
                    if result.claimed == 0:
                        break
            except Exception as exc:  # pragma: no cover - surfaced below
                failures.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=worker, args=(number,)) for number in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        fake.stop()

    assert failures == []
    calls = fake.received("POST", "/v1/billing/meter_events")
    identifiers = [call.params["identifier"] for call in calls]
    assert len(identifiers) == len(set(identifiers)) == 240  # no record was sent twice, not even once more
    assert all(call.outcome == "accepted" for call in calls)
    assert sum(sent_by_worker.values()) == 240
    assert min(sent_by_worker.values()) > 0  # the work really was shared
    assert UsageRecord.objects.filter(report_status=Status.SENT).count() == 240
