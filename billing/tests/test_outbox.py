import importlib
import logging
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.apps import apps
from django.db import connection
from django.utils import timezone

from billing.models import BillingAlert, BillingMeter, MeterReport, UsageRecord
from billing.outbox import usage_outbox_process
from billing.reconciliation import usage_reconcile
from billing.tasks import usage_outbox_task
from billing.tests.helpers import usage_record_create
from tenants import services as tenant_services
from tests.fake_stripe import activate_subscription

NOW = datetime(2026, 11, 20, 12, 0, 20, tzinfo=UTC)
MINUTE = NOW.replace(second=0)
Status = UsageRecord.ReportStatus
ReportStatus = MeterReport.Status


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


def test_usage_of_one_minute_goes_out_as_one_event_per_tier_with_the_report_as_identifier(
    alice, subscribed, stripe_catalog
):
    org = alice.organization
    delivered = NOW - timedelta(hours=3)
    same_minute = [
        usage_record_create(organization=org, api_key=alice.live_key, tier="standard", created_at=delivered)
        for _ in range(3)
    ]
    other_tier = usage_record_create(organization=org, tier="fast", created_at=delivered)
    next_minute = usage_record_create(
        organization=org, tier="standard", created_at=delivered + timedelta(minutes=1)
    )

    result = usage_outbox_task()

    assert (result["aggregated"], result["reports_created"], result["sent"]) == (5, 3, 3)
    assert result["images_confirmed"] == 5
    report = MeterReport.objects.get(tier="standard", bucket_start=delivered.replace(second=0))
    event = stripe_catalog.meter_events[report.public_id]
    assert event["event_name"] == "imagegate_images_standard"
    assert event["payload"] == {"stripe_customer_id": subscribed.stripe_customer_id, "value": "3"}
    assert event["timestamp"] == int(delivered.replace(second=0).timestamp())
    # The mapping from the event back to the images is stored, one report per record.
    assert set(report.usage_records.values_list("public_id", flat=True)) == {r.public_id for r in same_minute}
    assert (report.status, report.confirmation, report.value, report.amount) == (
        ReportStatus.SENT,
        "accepted",
        3,
        3 * org.plan.price_standard,
    )
    for record in [*same_minute, other_tier, next_minute]:
        record.refresh_from_db()
        assert (record.report_status, record.reported_at) == (Status.SENT, NOW)
    assert other_tier.meter_report_id != next_minute.meter_report_id != report.pk

    assert usage_outbox_task()["sent"] == 0
    assert len(meter_event_calls(stripe_catalog)) == 3


def test_a_late_record_of_a_reported_minute_goes_out_in_a_second_report(alice, subscribed, stripe_catalog):
    first = usage_record_create(organization=alice.organization, created_at=NOW)
    usage_outbox_process()
    late = usage_record_create(organization=alice.organization, created_at=NOW)  # committed after the run

    assert usage_outbox_process().sent == 1

    first.refresh_from_db()
    late.refresh_from_db()
    assert first.meter_report_id != late.meter_report_id
    assert stripe_catalog.usage_by_customer() == {
        (subscribed.stripe_customer_id, "imagegate_images_fast"): Decimal(2)
    }


def test_test_mode_and_zero_amounts_are_never_sent(alice, subscribed, stripe_catalog):
    org = alice.organization
    test_mode = usage_record_create(organization=org, api_key=alice.key, livemode=False)
    free = usage_record_create(organization=org, api_key=alice.live_key, unit_price=Decimal(0))

    result = usage_outbox_process()

    assert result.sent == 0 and result.skipped == 2
    assert meter_event_calls(stripe_catalog) == []
    for record, reason in ((test_mode, "Test mode"), (free, "Zero amount")):
        record.refresh_from_db()
        assert record.report_status == Status.SKIPPED
        assert reason in record.last_error


def test_usage_whose_subscription_becomes_active_two_hours_later_is_reported_once(
    charlie, stripe_catalog, clock
):
    """A checkout webhook delayed by an outage (or 3-D Secure) must not lose the first images."""
    org = charlie.organization
    records = [usage_record_create(organization=org, created_at=NOW) for _ in range(4)]

    for _ in range(12):  # two hours of outbox runs, every ten minutes
        assert usage_outbox_process().sent == 0
        clock.shift(timedelta(minutes=10))
    for record in records:
        record.refresh_from_db()
        assert (record.report_status, record.meter_report_id) == (Status.PENDING, None)
    assert meter_event_calls(stripe_catalog) == []

    account = activate_subscription(org, org.plan)
    assert usage_outbox_process().sent == 1
    assert usage_outbox_process().sent == 0

    (call,) = meter_event_calls(stripe_catalog)
    assert call.params["payload"] == {"stripe_customer_id": account.stripe_customer_id, "value": "4"}
    assert call.params["timestamp"] == str(int(MINUTE.timestamp()))  # when the images were made
    assert stripe_catalog.usage_by_customer() == {(account.stripe_customer_id, "imagegate_images_fast"): 4}
    assert UsageRecord.objects.filter(report_status=Status.SENT).count() == 4


def test_usage_after_a_subscription_ended_waits_instead_of_being_skipped(
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
    assert record.report_status == Status.PENDING
    assert meter_event_calls(stripe_catalog) == []


def test_waiting_usage_alerts_at_seven_days_and_past_35_days_is_unreportable_with_its_amount(
    charlie, stripe_catalog, clock
):
    org = charlie.organization
    price = org.plan.price_fast
    usage_record_create(organization=org, created_at=NOW - timedelta(days=8))
    usage_record_create(organization=org, created_at=NOW - timedelta(days=9))
    too_old = usage_record_create(organization=org, created_at=NOW - timedelta(days=35))
    fresh = usage_record_create(organization=org, created_at=NOW - timedelta(days=1))

    result = usage_outbox_process()

    assert (result.expired, result.waiting) == (1, 2)
    waiting = BillingAlert.objects.open().get(kind=BillingAlert.Kind.USAGE_WAITING)
    assert (waiting.organization_id, waiting.images, waiting.amount) == (org.pk, 2, 2 * price)
    lost = BillingAlert.objects.open().get(kind=BillingAlert.Kind.USAGE_UNREPORTABLE)
    assert (lost.organization_id, lost.images, lost.amount) == (org.pk, 1, price)
    too_old.refresh_from_db()
    fresh.refresh_from_db()
    assert too_old.report_status == Status.FAILED and "35-day" in too_old.last_error
    assert fresh.report_status == Status.PENDING

    usage_outbox_process()  # a second run neither duplicates nor grows the alerts
    assert BillingAlert.objects.open().count() == 2
    assert BillingAlert.objects.open().get(kind=BillingAlert.Kind.USAGE_UNREPORTABLE).images == 1

    activate_subscription(org, org.plan)
    assert usage_outbox_process().images_confirmed == 3
    assert not BillingAlert.objects.open().filter(kind=BillingAlert.Kind.USAGE_WAITING).exists()
    assert BillingAlert.objects.open().filter(kind=BillingAlert.Kind.USAGE_UNREPORTABLE).exists()


def test_a_duplicate_identifier_at_stripe_counts_as_delivered(alice, subscribed, stripe_catalog):
    from billing.outbox import usage_aggregate

    record = usage_record_create(organization=alice.organization)
    usage_aggregate(limit=100)
    report = MeterReport.objects.get()
    # Stripe already holds the event (an earlier attempt got through; its answer was lost).
    event = {
        "event_name": "imagegate_images_fast",
        "identifier": report.public_id,
        "payload": {"stripe_customer_id": subscribed.stripe_customer_id, "value": "1"},
        "timestamp": int(report.bucket_start.timestamp()),
        "created": int(NOW.timestamp()) - 60,
    }
    stripe_catalog.meter_events[report.public_id] = event
    stripe_catalog.meter_event_log.append(event)

    result = usage_outbox_process()

    assert (result.sent, result.already_recorded) == (0, 1)
    assert meter_event_calls(stripe_catalog)[0].outcome == "duplicate"
    record.refresh_from_db()
    report.refresh_from_db()
    assert (record.report_status, report.confirmation) == (Status.SENT, "duplicate")
    assert len(stripe_catalog.meter_event_log) == 1


def test_failures_back_off_and_each_attempt_uses_a_fresh_idempotency_key(
    alice, subscribed, stripe_catalog, clock
):
    """Stripe replays a key's saved 500 for 24 h, so a retry under the same key would never succeed."""
    record = usage_record_create(organization=alice.organization)
    stripe_catalog.meter_event_failure_rate = 1.0

    result = usage_outbox_process()

    assert result.failed_attempts == 1
    report = MeterReport.objects.get()
    assert report.status == ReportStatus.PENDING and report.attempts == 1
    assert "Stripe" in report.last_error
    assert report.in_doubt_since == NOW  # a 500: Stripe may or may not have it
    assert report.next_attempt_at is not None
    assert timedelta(seconds=24) <= report.next_attempt_at - NOW <= timedelta(seconds=36)
    assert usage_outbox_process().claimed == 0  # still backing off
    assert len(meter_event_calls(stripe_catalog)) == 1

    clock.move_to(report.next_attempt_at)
    usage_outbox_process()
    report.refresh_from_db()
    assert report.attempts == 2
    assert report.next_attempt_at is not None
    assert timedelta(seconds=48) <= report.next_attempt_at - timezone.now() <= timedelta(seconds=72)

    stripe_catalog.meter_event_failure_rate = 0.0
    clock.move_to(report.next_attempt_at)
    assert usage_outbox_process().sent == 1
    calls = meter_event_calls(stripe_catalog)
    assert [call.outcome for call in calls] == ["injected_500", "injected_500", "accepted"]
    assert len({call.idempotency_key for call in calls}) == 3
    assert {call.params["identifier"] for call in calls} == {report.public_id}
    record.refresh_from_db()
    assert (record.report_status, record.last_error) == (Status.SENT, "")


def test_a_lost_answer_is_retried_inside_the_dedupe_window_and_recognized_as_delivered(
    alice, subscribed, stripe_catalog, clock, settings
):
    settings.STRIPE_TIMEOUT_SECONDS = 0.3
    stripe_catalog.meter_event_timeout_rate = 1.0
    stripe_catalog.timeout_mode = "after"  # Stripe records the event, the answer never arrives
    stripe_catalog.timeout_sleep_seconds = 1.0
    usage_record_create(organization=alice.organization)

    assert usage_outbox_process().failed_attempts == 1
    report = MeterReport.objects.get()
    assert report.public_id in stripe_catalog.meter_events

    stripe_catalog.meter_event_timeout_rate = 0.0
    clock.move_to(report.next_attempt_at)
    result = usage_outbox_process()

    assert result.already_recorded == 1
    assert [c.outcome for c in meter_event_calls(stripe_catalog)] == ["timeout_after", "duplicate"]
    assert len(stripe_catalog.meter_event_log) == 1


def test_past_the_dedupe_window_an_in_doubt_report_is_reconciled_not_resent(
    alice, subscribed, stripe_catalog, clock, settings
):
    """Stripe forgets identifiers after 24 h: resending then would bill the images twice."""
    settings.STRIPE_TIMEOUT_SECONDS = 0.3
    stripe_catalog.meter_event_timeout_rate = 1.0
    stripe_catalog.timeout_mode = "after"
    stripe_catalog.timeout_sleep_seconds = 1.0
    records = [usage_record_create(organization=alice.organization) for _ in range(2)]
    usage_outbox_process()
    stripe_catalog.meter_event_timeout_rate = 0.0
    stripe_catalog.meter_event_failure_rate = 1.0  # then a long outage
    for _ in range(8):
        clock.shift(timedelta(hours=3))
        usage_outbox_process()

    report = MeterReport.objects.get()
    assert report.status == ReportStatus.RECONCILE
    sends = len(meter_event_calls(stripe_catalog))
    stripe_catalog.meter_event_failure_rate = 0.0
    clock.shift(timedelta(hours=2))
    usage_outbox_process()
    assert len(meter_event_calls(stripe_catalog)) == sends  # no blind resend

    result = usage_reconcile()

    assert result.confirmed_reports == 1 and result.mismatches == 0
    report.refresh_from_db()
    assert (report.status, report.confirmation) == (ReportStatus.SENT, "reconciled")
    for record in records:
        record.refresh_from_db()
        assert record.report_status == Status.SENT
    usage_outbox_process()
    assert len(meter_event_calls(stripe_catalog)) == sends
    assert stripe_catalog.usage_by_customer() == {(subscribed.stripe_customer_id, "imagegate_images_fast"): 2}


def test_an_in_doubt_report_stripe_never_counted_is_resent_once_after_reconciliation(
    alice, subscribed, stripe_catalog, clock
):
    usage_record_create(organization=alice.organization)
    stripe_catalog.meter_event_failure_rate = 1.0  # 500s: nothing lands
    for _ in range(10):
        usage_outbox_process()
        clock.shift(timedelta(hours=3))
    assert MeterReport.objects.get().status == ReportStatus.RECONCILE

    stripe_catalog.meter_event_failure_rate = 0.0
    assert usage_reconcile().resent_reports == 1
    assert usage_outbox_process().sent == 1

    assert stripe_catalog.usage_by_customer() == {(subscribed.stripe_customer_id, "imagegate_images_fast"): 1}
    assert MeterReport.objects.get().status == ReportStatus.SENT


def test_a_difference_between_ledger_and_stripe_raises_an_alert(alice, subscribed, stripe_catalog, clock):
    usage_record_create(organization=alice.organization, created_at=NOW - timedelta(hours=5))
    usage_outbox_process()
    # Someone else reported usage for this customer on our meter (a second deployment, a script).
    stripe_catalog.meter_event_log.append(
        {
            "event_name": "imagegate_images_fast",
            "identifier": "foreign",
            "payload": {"stripe_customer_id": subscribed.stripe_customer_id, "value": "7"},
            "timestamp": int((NOW - timedelta(hours=4)).timestamp()),
        }
    )
    clock.shift(timedelta(hours=2))

    result = usage_reconcile()

    assert result.mismatches == 1
    alert = BillingAlert.objects.open().get(kind=BillingAlert.Kind.RECONCILIATION_MISMATCH)
    assert (alert.organization_id, alert.tier, alert.ledger_value, alert.stripe_value) == (
        alice.organization.pk,
        "fast",
        1,
        8,
    )
    stripe_catalog.meter_event_log.pop()
    assert usage_reconcile().mismatches == 0
    assert not BillingAlert.objects.open().exists()


def test_a_tier_without_a_meter_waits_for_stripe_sync(alice, subscribed, stripe_catalog):
    BillingMeter.objects.filter(tier="ultra").delete()
    usage_record_create(organization=alice.organization, tier="ultra")

    assert usage_outbox_process().failed_attempts == 1

    report = MeterReport.objects.get()
    assert report.status == ReportStatus.PENDING and report.in_doubt_since is None
    assert "stripe_sync" in report.last_error
    assert meter_event_calls(stripe_catalog) == []


def test_ledger_only_mode_sends_nothing(alice, settings, db):
    settings.STRIPE_SECRET_KEY = ""
    record = usage_record_create(organization=alice.organization)

    assert usage_outbox_task()["configured"] is False

    record.refresh_from_db()
    assert record.report_status == Status.PENDING


def test_a_run_stops_at_its_time_budget_and_releases_the_rest(alice, subscribed, stripe_catalog, settings):
    # Generous figures: aggregation runs inside the budget too, and CI machines are slow.
    settings.BILLING_OUTBOX_TIME_BUDGET_SECONDS = 1.5
    stripe_catalog.meter_event_latency_seconds = 1.0
    for minutes in range(5):
        usage_record_create(
            organization=alice.organization, created_at=timezone.now() - timedelta(minutes=minutes)
        )

    result = usage_outbox_process()

    assert result.claimed == 5
    assert 1 <= result.sent < 5
    assert result.released == 5 - result.sent
    assert not MeterReport.objects.exclude(claim_token="").exists()
    assert MeterReport.objects.filter(status=ReportStatus.PENDING).count() == 5 - result.sent


def test_the_migration_reopens_skipped_usage_still_within_stripes_window(alice, db):
    reason = "The organization had no billable Stripe subscription when this was reported."
    recent = usage_record_create(
        organization=alice.organization, created_at=timezone.now() - timedelta(days=3)
    )
    old = usage_record_create(organization=alice.organization, created_at=timezone.now() - timedelta(days=40))
    UsageRecord.objects.filter(pk__in=[recent.pk, old.pk]).update(
        report_status=Status.SKIPPED, last_error=reason
    )
    migration = importlib.import_module("billing.migrations.0004_reopen_skipped_usage")

    migration.reopen(apps, None)

    recent.refresh_from_db()
    old.refresh_from_db()
    assert recent.report_status == Status.PENDING
    assert old.report_status == Status.FAILED
    alert = BillingAlert.objects.get(kind=BillingAlert.Kind.USAGE_UNREPORTABLE)
    assert (alert.images, alert.amount) == (1, old.amount)


# Committed data (the threads have their own connections), so a transactional test.
@pytest.mark.django_db(transaction=True)
def test_two_workers_running_at_once_count_every_record_exactly_once(settings, pro_plan):
    """Two outbox runs in parallel threads (each with its own database connection) share the work."""
    from billing.catalog import stripe_catalog_sync
    from fakes.stripe_server import FakeStripe
    from tests.fake_stripe import SECRET_KEY

    fake = FakeStripe()
    settings.STRIPE_SECRET_KEY = SECRET_KEY
    settings.STRIPE_API_BASE = fake.start()
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.BILLING_OUTBOX_AGGREGATE_BATCH_SIZE = 30
    fake.meter_event_latency_seconds = 0.005  # keep both workers busy at the same time
    try:
        stripe_catalog_sync()
        organizations = [
            tenant_services.organization_create(name=f"Parallel {n}", plan=pro_plan) for n in range(4)
        ]
        for organization in organizations:
            activate_subscription(organization, pro_plan)
        start = timezone.now() - timedelta(hours=1)
        records = [
            usage_record_create(
                organization=organizations[n % 4], created_at=start + timedelta(seconds=15 * n), save=False
            )
            for n in range(240)
        ]
        UsageRecord.objects.bulk_create(records)
        barrier = threading.Barrier(2)
        sent_by_worker, failures = {0: 0, 1: 0}, []

        def worker(number):
            try:
                barrier.wait()
                sent_by_worker[number] += usage_outbox_process(batch_size=5).images_confirmed
            except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
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
    assert len(identifiers) == len(set(identifiers))  # no report was sent twice
    assert all(call.outcome == "accepted" for call in calls)
    assert sum(Decimal(call.params["payload"]["value"]) for call in calls) == 240
    assert sum(sent_by_worker.values()) == 240
    assert UsageRecord.objects.filter(report_status=Status.SENT).count() == 240
    assert UsageRecord.objects.filter(meter_report__isnull=True).count() == 0


def test_logs_name_the_alerts(charlie, stripe_catalog, clock, caplog):
    usage_record_create(organization=charlie.organization, created_at=NOW - timedelta(days=35))
    with caplog.at_level(logging.ERROR, logger="billing.outbox"):
        usage_outbox_process()
    assert any("passed Stripe's 35-day limit" in r.getMessage() for r in caplog.records)
